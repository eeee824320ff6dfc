//! Operations: TLS with ALPN, h2 prior knowledge, health and metrics, timeouts, graceful shutdown,
//! start-up refusal on bad config, and the admin CLI without a server.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vectorway::app;
use vectorway::config::Config;

use crate::harness::{Env, W1, fast_knobs, sse_data};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_h2_and_http1_by_alpn() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
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
