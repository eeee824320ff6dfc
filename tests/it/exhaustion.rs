//! Unauthenticated exhaustion: per-IP limits on requests without a caller, a bounded SIWE nonce
//! table, and request bodies that must arrive in time (a trickle or a stall is a 408 and the
//! connection is closed).

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{Env, W1, fast_knobs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_caller_are_limited_per_ip_with_retry_after() {
    let env = Env::with_knobs(fast_knobs(), |c| {
        c.limits.ip_per_min = 60;
        c.limits.ip_burst = 3;
    })
    .await;
    let key = env.funded_key(W1, 1_000_000).await;
    // Health, models and sign-in share the client's bucket: three at once, then 429.
    for (method, path) in [
        (Method::GET, "/healthz"),
        (Method::GET, "/v1/models"),
        (Method::GET, "/llms.txt"),
    ] {
        let res = env.send(method, path, &[], "").await;
        assert_eq!(res.status, StatusCode::OK, "{path}");
    }
    for (method, path, body) in [
        (Method::GET, "/healthz", String::new()),
        (
            Method::POST,
            "/v1/auth/siwe/challenge",
            json!({"wallet_address": W1}).to_string(),
        ),
        // The x402 price (a chat without a payer) and the MCP handshake.
        (
            Method::POST,
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}]}).to_string(),
        ),
        (
            Method::POST,
            "/mcp",
            json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string(),
        ),
    ] {
        let res = env
            .send(method, path, &[("content-type", "application/json")], body)
            .await;
        assert_eq!(
            (res.status, res.code().as_str()),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            "{path}"
        );
        assert_eq!(res.headers["retry-after"], "1", "one request a second");
    }
    // A caller with a key is limited per wallet instead, and the operator not at all.
    let res = env
        .send(Method::GET, "/v1/credits/me", &[("x-api-key", &key)], "")
        .await;
    assert_eq!(res.status, StatusCode::OK);
    let secret = env.gw().state.admin_secret.clone();
    let res = env
        .send(
            Method::GET,
            &format!("/admin/balance?wallet={W1}"),
            &[("x-admin-secret", &secret)],
            "",
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    // The bucket refills.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        env.send(Method::GET, "/healthz", &[], "").await.status,
        StatusCode::OK
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_nonce_table_refuses_new_challenges_with_retry_after() {
    let env = Env::with_knobs(fast_knobs(), |c| c.auth.max_nonces = 3).await;
    let challenge = |i: u8| {
        let wallet = format!("0x{}", hex::encode([i; 20]));
        env.send(
            Method::POST,
            "/v1/auth/siwe/challenge",
            &[("content-type", "application/json")],
            json!({"wallet_address": wallet}).to_string(),
        )
    };
    for i in 1..=3 {
        assert_eq!(challenge(i).await.status, StatusCode::OK);
    }
    // Every wallet an attacker names takes a slot; at the cap the table refuses, it does not grow.
    let res = challenge(4).await;
    assert_eq!(
        (res.status, res.code().as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "siwe_challenges_exhausted")
    );
    let wait: u64 = res.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (295..=300).contains(&wait),
        "until the oldest expires: {wait}"
    );
    assert_eq!(env.gw().state.siwe.nonces().len(), (3, 3));
    env.stop().await;
}

/// Sends a request head announcing a 100-byte body, then a byte every `gap` (forever when
/// `gap` is `None`: nothing at all), until the server answers and closes. Returns the answer and
/// how long after the head the connection was closed (`None`: still open after 20 s).
async fn slow_body(env: &Env, gap: Option<Duration>) -> (String, Option<Duration>) {
    let mut sock = tokio::net::TcpStream::connect(env.gw().addr).await.unwrap();
    // Before the write: the server's clock for the body starts once it has the head, so this
    // one never reads less than the server waited.
    let started = Instant::now();
    sock.write_all(
        b"POST /v1/auth/siwe/challenge HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    let closed = loop {
        if started.elapsed() > Duration::from_secs(20) {
            break None;
        }
        let wait = gap.unwrap_or(Duration::from_secs(1));
        match tokio::time::timeout(wait, sock.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => break Some(started.elapsed()),
            Ok(Ok(n)) => answer.extend_from_slice(&chunk[..n]),
            Err(_) if gap.is_some() => {
                // The server may already have hung up; a failed write is not a failure here.
                let _ = sock.write_all(b" ").await;
            }
            Err(_) => {}
        }
    };
    (String::from_utf8_lossy(&answer).into_owned(), closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_or_stalled_body_gets_408_and_the_connection_closed() {
    let env = Env::with_knobs(fast_knobs(), |c| {
        c.body_read_timeout = Duration::from_secs(3);
        c.body_idle_timeout = Duration::from_secs(1);
    })
    .await;
    // A byte every 300 ms is never idle for 1 s, but the body is not whole after 3 s.
    let (trickle, stalled) = tokio::join!(
        slow_body(&env, Some(Duration::from_millis(300))),
        slow_body(&env, None)
    );
    for ((answer, closed), (least, why)) in [
        (trickle, (Duration::from_secs(3), "the deadline")),
        (stalled, (Duration::from_secs(1), "the idle time-out")),
    ] {
        let closed = closed.unwrap_or_else(|| panic!("still open after 20 s ({why})"));
        assert!(
            closed >= least && closed < least + Duration::from_secs(5),
            "closed after {closed:?}, want {why}"
        );
        assert!(answer.starts_with("HTTP/1.1 408 "), "{why}: {answer}");
        assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
    }
    // The server is fine; a prompt body is not affected.
    let res = env
        .send(
            Method::POST,
            "/v1/auth/siwe/challenge",
            &[("content-type", "application/json")],
            json!({"wallet_address": W1}).to_string(),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    env.stop().await;
}
