//! A remote facilitator's `/supported` at start: a configured network it lacks stops the start
//! (the binary exits non-zero naming it); a facilitator that cannot be read starts the gateway
//! not ready (`/readyz` 503 naming why).

use std::time::Duration;

use http::{Method, StatusCode};
use vectorway::app;
use vectorway::config::{Config, known_network};
use vectorway::simulate::Simulator;

use crate::harness::{Env, fast_knobs};

/// The facilitator simulator settles Base and Base Sepolia only; this is a chain it does not.
fn anvil() -> vectorway::config::Network {
    let mut n = known_network("base-sepolia").unwrap();
    n.name = "anvil".into();
    n.caip2 = "eip155:31337".into();
    n.chain_id = 31337;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_networks_are_checked_against_supported_and_the_gateway_is_ready() {
    let env = Env::start().await;
    assert!(
        env.sim.facilitator_stats().supported >= 1,
        "/supported was read"
    );
    let res = env.send(Method::GET, "/readyz", &[], "").await;
    assert_eq!(res.status, StatusCode::OK, "{:?}", res.body);
    assert_eq!(res.json()["facilitator"], "ok");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_the_facilitator_does_not_support_stops_the_start() {
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), fast_knobs(), None)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_tests(dir.path(), &sim.base_url());
    config.x402.networks.push(anvil());
    let err = match app::start(config).await {
        Ok(_) => panic!("started with a network the facilitator does not settle"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("does not support network anvil (eip155:31337)"),
        "{err}"
    );
    assert!(
        !err.contains("base-sepolia"),
        "only the missing one is named: {err}"
    );
    assert!(!dir.path().join("server.json").exists());
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_facilitator_starts_the_gateway_not_ready() {
    // A port nothing listens on: every connection is refused.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // The URL's path carries a token, as some hosted facilitators' do: never shown.
    let url = format!("http://{}/tok-9f8e7d", dead.local_addr().unwrap());
    drop(dead);
    let env = Env::with_knobs(fast_knobs(), |c| {
        c.x402.facilitator_url = Some(url.clone());
        c.x402.settle_retries = 0;
    })
    .await;
    let res = env.send(Method::GET, "/readyz", &[], "").await;
    assert_eq!(
        res.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        res.body
    );
    let body = res.json();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["upstream"], "ok");
    let why = body["facilitator"].as_str().unwrap();
    assert!(why.contains("/supported unreadable"), "{why}");
    assert!(why.contains("could not connect"), "{why}");
    assert!(!why.contains("tok-9f8e7d"), "{why}");
    // Alive, and it says why it is not ready.
    let live = env.send(Method::GET, "/healthz", &[], "").await;
    assert_eq!(live.status, StatusCode::OK);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_non_zero_naming_the_unsupported_network() {
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), fast_knobs(), None)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let upstream = sim.base_url();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_vectorway"))
        .arg("serve")
        .env_clear()
        .env("VECTORWAY_SERVER__LISTEN", "127.0.0.1:0")
        .env("VECTORWAY_STORE__DATA_DIR", dir.path())
        .env("VECTORWAY_UPSTREAM__BASE_URL", &upstream)
        .env(
            "VECTORWAY_X402__FACILITATOR_URL",
            format!("{upstream}/facilitator"),
        )
        .env(
            "VECTORWAY_X402__PAY_TO",
            "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
        )
        .env("VECTORWAY_X402__NETWORKS__ANVIL__CHAIN_ID", "31337")
        .env(
            "VECTORWAY_X402__NETWORKS__ANVIL__ASSET",
            "0x5FbDB2315678afecb367f032d93F642f64180aa3",
        )
        .env("VECTORWAY_X402__NETWORKS__ANVIL__EIP712_NAME", "USD Coin")
        .env("VECTORWAY_X402__NETWORKS__ANVIL__EIP712_VERSION", "2")
        .env("GEMINI_API_KEY", "test")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .expect("the binary did not exit")
    .unwrap()
    .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("does not support network anvil (eip155:31337)"),
        "{text}"
    );
    assert!(sim.facilitator_stats().supported >= 1);
    // Nothing is listening: no server.json was written.
    assert!(!dir.path().join("server.json").exists());
    sim.stop().await;
}
