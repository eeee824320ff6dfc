//! Operations: TLS with ALPN, h2 prior knowledge, health and metrics, timeouts, graceful shutdown
//! (in-process and by SIGTERM to the binary), start-up refusal on bad config, and the admin CLI
//! without a server.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vectorway::app;
use vectorway::config::{Config, SimulatorKnobs};
use vectorway::simulate::{FaultPlan, Simulator};
use vectorway::storage::{LedgerKind, Store};

use crate::harness::{Binary, Env, W1, call, fast_knobs, localhost_cert, sse_data};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_h2_and_http1_by_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, cert_path, key_path) = localhost_cert(dir.path());
    let mut config = Config::for_tests(&dir.path().join("data"), "http://127.0.0.1:9");
    config.tls = Some((cert_path, key_path));
    let gw = app::start(config).await.unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    for (h2, want) in [
        (true, http::Version::HTTP_2),
        (false, http::Version::HTTP_11),
    ] {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only();
        let https = if h2 {
            builder.enable_http2().build()
        } else {
            builder.enable_http1().build()
        };
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
            .http2_only(h2)
            .build(https);
        let url = format!("https://localhost:{}/health", gw.addr.port());
        let res = client
            .request(
                http::Request::get(url)
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!((res.status(), res.version()), (StatusCode::OK, want));
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleartext_h2_prior_knowledge_streams_chat() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 1_000_000).await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = http::Request::post(env.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(Bytes::from(
            json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}).to_string(),
        )))
        .unwrap();
    let res = client.request(req).await.unwrap();
    assert_eq!(
        (res.status(), res.version()),
        (StatusCode::OK, http::Version::HTTP_2)
    );
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(sse_data(&body).last().map(String::as_str), Some("[DONE]"));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_status_and_metrics() {
    let env = Env::start().await;
    for path in ["/health", "/healthz", "/readyz"] {
        let res = env.send(Method::GET, path, &[], "").await;
        assert_eq!(res.status, StatusCode::OK, "{path}");
    }
    let status = env.send(Method::GET, "/status", &[], "").await.json();
    assert_eq!(status["store"]["ok"], true);
    assert_eq!(status["upstream"]["simulated"], false);
    // The facilitator is named by host only; the tests' is the simulator's `/facilitator`.
    let facilitator = &status["x402"]["facilitator"];
    assert_eq!(facilitator["simulated"], false, "{status}");
    assert_eq!(
        facilitator["host"],
        env.sim.base_url().trim_start_matches("http://"),
        "{status}"
    );
    assert_eq!(facilitator["free_credits_buy_real_calls"], false);
    assert_eq!(
        facilitator["allow_simulated_facilitator_with_real_upstream"],
        false
    );
    let key = env.funded_key(W1, 1_000_000).await;
    env.chat(
        &key,
        json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(
        env.send(Method::GET, "/metrics", &[], "").await.status,
        StatusCode::UNAUTHORIZED,
        "operator only"
    );
    let secret = env.gw().state.admin_secret.clone();
    let res = env
        .send(
            Method::GET,
            "/metrics",
            &[("authorization", &format!("Bearer {secret}"))],
            "",
        )
        .await;
    let metrics = String::from_utf8(res.body.to_vec()).unwrap();
    for name in [
        "vectorway_http_requests_total",
        "vectorway_http_request_duration_seconds",
        "vectorway_upstream_duration_seconds",
        "vectorway_tokens_total",
        "vectorway_credits_committed_total",
        "vectorway_credits_held",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_clients_are_disconnected() {
    let env = Env::with_knobs(fast_knobs(), |c| {
        c.header_read_timeout = Duration::from_millis(300)
    })
    .await;
    let mut sock = tokio::net::TcpStream::connect(env.gw().addr).await.unwrap();
    sock.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap(); // never finishes the head
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the server closed the connection after the header timeout"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_open_streams_finish_and_refuses_new_connections() {
    let mut knobs = fast_knobs();
    knobs.tokens_per_sec = 60; // ~24 words over ~400 ms
    let env = Env::with_knobs(knobs, |_| {}).await;
    let key = env.funded_key(W1, 1_000_000).await;
    let res = env
        .open(
            Method::POST,
            "/v1/chat/completions",
            &[("x-api-key", key.as_str())],
            json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}).to_string(),
        )
        .await;
    let addr = env.gw().addr;
    let mut env = env;
    let gw = env.gw.take().unwrap();
    let stopping = tokio::spawn(gw.shutdown());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "new connections are refused while draining"
    );
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        sse_data(&body).last().map(String::as_str),
        Some("[DONE]"),
        "the open stream ran to its end"
    );
    stopping.await.unwrap();
}

/// An SSE body read frame by frame: the `data:` payloads of small events, and a count of the big
/// (padded) ones, which are not kept.
#[derive(Default)]
struct Events {
    pending: Vec<u8>,
    /// How much of `pending` is known to hold no event boundary.
    scanned: usize,
    small: Vec<String>,
    big: usize,
}

impl Events {
    fn feed(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        loop {
            let from = self.scanned.saturating_sub(1);
            let Some(at) = self.pending[from..]
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| from + i)
            else {
                self.scanned = self.pending.len();
                return;
            };
            let event: Vec<u8> = self.pending.drain(..at + 2).collect();
            self.scanned = 0;
            if event.len() > 4 << 10 {
                self.big += 1;
            } else {
                self.small.extend(sse_data(&event));
            }
        }
    }
}

/// SIGTERM on the real binary with a stream open: the process stops taking connections, lets the
/// stream run to `[DONE]`, exits 0, and the restarted server shows one debit for the stream and
/// nothing held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_open_stream_and_exits_0() {
    // 200 events of 512 KiB, paced over about 2 s: far more than all the socket buffers between
    // the simulator and this client hold, so the stream cannot end (nor the process exit) while
    // the test is not reading it.
    const EVENTS: u32 = 200;
    let knobs = SimulatorKnobs {
        ttft: Duration::from_millis(5),
        tokens_per_sec: 400,
        chunk_tokens: 4,
        reply_tokens: 4 * EVENTS,
    };
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), knobs, None)
        .await
        .unwrap();
    sim.set_faults(FaultPlan {
        pad_event_bytes: Some(512 << 10),
        times: Some(1),
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let grace = [("VECTORWAY_SERVER__SHUTDOWN_GRACE_MS", "120000")];
    let mut server = Binary::start(dir.path(), &sim.base_url(), &grace);
    let admin = [
        ("x-admin-secret", server.secret.as_str()),
        ("content-type", "application/json"),
    ];
    let grant = json!({"wallet": W1, "credits": 10_000_000}).to_string();
    let res = call(
        Method::POST,
        &format!("{}/admin/grant", server.base),
        &admin,
        grant,
    )
    .await;
    assert_eq!(res.unwrap().status, StatusCode::OK);
    let keys = json!({"wallet": W1}).to_string();
    let key = call(
        Method::POST,
        &format!("{}/admin/keys", server.base),
        &admin,
        keys,
    )
    .await
    .unwrap()
    .json()["api_key"]
        .as_str()
        .unwrap()
        .to_string();

    let ask = json!({"messages": [{"role": "user", "content": "a long one"}], "max_tokens": 1000,
                     "stream": true, "stream_options": {"include_usage": true},
                     "memory_read": false, "memory_write": false});
    let req = http::Request::post(format!("{}/v1/chat/completions", server.base))
        .header("x-api-key", &key)
        .body(Full::new(Bytes::from(ask.to_string())))
        .unwrap();
    let res = crate::harness::client().request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let request_id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let mut body = res.into_body();
    let mut events = Events::default();
    while events.big == 0 {
        let frame = body.frame().await.unwrap().unwrap();
        events.feed(frame.data_ref().unwrap());
    }

    let pid = server.child.id().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    // Until the signal is handled the server may still answer; after it, a new connection is
    // refused (the listener is closed) or dropped unanswered.
    let health = format!("{}/health", server.base);
    let mut refused = false;
    for _ in 0..1_000 {
        match tokio::time::timeout(Duration::from_secs(5), call(Method::GET, &health, &[], ""))
            .await
        {
            Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
            Ok(None) | Err(_) => {
                refused = true;
                break;
            }
        }
    }
    assert!(refused, "new connections are still served after SIGTERM");
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the refusal comes from a server draining its open stream, not from a dead one"
    );

    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.unwrap().data_ref() {
            events.feed(data);
        }
    }
    assert_eq!(
        events.small.last().map(String::as_str),
        Some("[DONE]"),
        "the open stream ran to its end"
    );
    assert_eq!(events.big, EVENTS as usize, "every content event arrived");
    let usage: serde_json::Value =
        serde_json::from_str(&events.small[events.small.len() - 2]).unwrap();
    let cost = usage["usage"]["credit_cost"].as_u64().unwrap();
    assert!(cost > 0);

    let mut exited = None;
    for _ in 0..1_200 {
        exited = server.child.try_wait().unwrap();
        if exited.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = exited.expect("the process did not exit within 60 s of its stream ending");
    assert_eq!(status.code(), Some(0), "a clean exit");
    drop(server);

    // On disk: exactly one debit, for this stream, of what its usage chunk said.
    let wallet: vectorway::wallet::Wallet = W1.parse().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let debits: Vec<_> = store
            .ledger_of(&wallet)
            .map(|e| e.unwrap())
            .filter(|e| e.kind == LedgerKind::Debit)
            .collect();
        assert_eq!(debits.len(), 1, "one debit: {debits:?}");
        assert_eq!(debits[0].credits, -(cost as i64));
        assert_eq!(debits[0].reference.as_deref(), Some(request_id.as_str()));
        let event = store.usage_of(&wallet).next().unwrap().unwrap();
        assert_eq!(
            (event.status, event.credits, event.request_id.as_str()),
            (200, cost, request_id.as_str())
        );
    }

    // Restarted on the same directory: the balance is the ledger's, nothing is held.
    let server = Binary::start(dir.path(), &sim.base_url(), &[]);
    let admin = [("x-admin-secret", server.secret.as_str())];
    let balance = call(
        Method::GET,
        &format!("{}/admin/balance?wallet={W1}", server.base),
        &admin,
        "",
    )
    .await
    .unwrap()
    .json();
    assert_eq!(balance["credits"], 10_000_000 - cost);
    assert_eq!(balance["held"], 0, "no credits held after the restart");
    let ledger = call(
        Method::GET,
        &format!("{}/v1/credits/ledger?kind=debit", server.base),
        &[("x-api-key", key.as_str())],
        "",
    )
    .await
    .unwrap()
    .json();
    let debits = ledger["events"].as_array().unwrap();
    assert_eq!(debits.len(), 1, "{ledger}");
    assert_eq!(debits[0]["credits"], -(cost as i64));
    drop(server);
    sim.stop().await;
}

#[test]
fn bad_config_exits_64_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(f, "[server]\nlisten = \"127.0.0.1:0\"\ntypo_key = 1").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vectorway"))
        .args(["--config", path.to_str().unwrap(), "serve"])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("typo_key"),
        "the message names the bad key: {err}"
    );
}

const SIM_FACILITATOR_OPT_IN: &str =
    "VECTORWAY_X402__ALLOW_SIMULATED_FACILITATOR_WITH_REAL_UPSTREAM";

/// A Gemini key without a facilitator would sell real calls for the facilitator simulator's free
/// $1,000 per address: `serve` refuses it as a bad config (64) and names the opt-in.
#[test]
fn a_real_key_with_the_simulated_facilitator_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vectorway"))
        .arg("serve")
        .env_clear()
        .env("VECTORWAY_SERVER__LISTEN", "127.0.0.1:0")
        .env("VECTORWAY_STORE__DATA_DIR", dir.path())
        .env("GEMINI_API_KEY", "a-real-looking-key")
        .env("VECTORWAY_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve started with a real key and the simulated facilitator");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(64), "{err}");
    assert!(
        err.contains("x402.facilitator_url")
            && err.contains("allow_simulated_facilitator_with_real_upstream"),
        "the message names the setting and the opt-in: {err}"
    );
    assert!(!dir.path().join("server.json").exists(), "it never bound");
}

/// With the opt-in, the same combination starts, and `/status` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opt_in_starts_and_status_says_the_facilitator_is_simulated() {
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), fast_knobs(), None)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // `Binary::start` sets a Gemini key; an empty facilitator URL means the built-in simulator.
    let server = Binary::start(
        dir.path(),
        &sim.base_url(),
        &[
            ("VECTORWAY_X402__FACILITATOR_URL", ""),
            (SIM_FACILITATOR_OPT_IN, "true"),
        ],
    );
    let status = call(Method::GET, &format!("{}/status", server.base), &[], "")
        .await
        .unwrap();
    assert_eq!(status.status, StatusCode::OK);
    let status = status.json();
    assert_eq!(status["upstream"]["simulated"], false, "{status}");
    let facilitator = &status["x402"]["facilitator"];
    assert_eq!(facilitator["simulated"], true, "{status}");
    assert_eq!(facilitator["host"], Value::Null, "{status}");
    assert_eq!(facilitator["free_credits_buy_real_calls"], true, "{status}");
    assert_eq!(
        facilitator["allow_simulated_facilitator_with_real_upstream"], true,
        "{status}"
    );
    drop(server);
    sim.stop().await;
}

#[test]
fn admin_cli_works_on_the_store_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vectorway"))
            .arg("admin")
            .args(["--data-dir", dir.path().to_str().unwrap()])
            .args(args)
            .env_clear()
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    assert_eq!(
        run(&["grant", "--wallet", W1, "--credits", "700"])["credits"],
        700
    );
    assert_eq!(
        run(&["grant", "--wallet", W1, "--credits", "300"])["credits"],
        1000
    );
    let key = run(&["create-key", "--wallet", W1, "--name", "cli"]);
    let raw = key["api_key"].as_str().unwrap();
    assert!(raw.starts_with(&format!("vw_{}_", key["key_id"].as_str().unwrap())));
    assert_eq!(run(&["balance", "--wallet", W1])["credits"], 1000);
}
