//! Abuse at the HTTP edge: oversized and endless bodies, deeply nested JSON, and a client that
//! stops reading a long stream (header floods are in `faults.rs`,
//! `header_floods_get_a_status_not_silence`). Each gets a clean refusal (or the connection closed)
//! with nothing held or charged, and the server stays healthy; the stalled reader gets
//! backpressure all the way to the upstream, not buffering.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vectorway::simulate::FaultPlan;

use crate::harness::{Env, W1};

/// Writes `request` on a fresh connection while reading until the server closes it (or 10 s
/// pass). Returns what came back; write errors (the server hung up mid-request) are not failures.
pub(crate) async fn raw(env: &Env, request: impl Into<Vec<u8>>) -> String {
    let sock = tokio::net::TcpStream::connect(env.gw().addr).await.unwrap();
    let (mut rd, mut wr) = sock.into_split();
    let request = request.into();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&request).await;
        wr // keep the write half open until the answer is read
    });
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = [0u8; 16 << 10];
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    writer.abort();
    assert!(read.is_ok(), "the server neither answered nor closed");
    String::from_utf8_lossy(&buf).into_owned()
}

/// The status code of a raw HTTP/1.1 answer, if there was one.
pub(crate) fn status_of(answer: &str) -> Option<u16> {
    answer.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// The JSON body of a raw answer with a `content-length` body.
fn body_of(answer: &str) -> Value {
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or(Value::Null)
}

async fn healthy(env: &Env, key: &str) {
    assert_eq!(
        env.send(Method::GET, "/health", &[], "").await.status,
        StatusCode::OK
    );
    let res = env
        .chat(
            key,
            json!({"messages": [{"role": "user", "content": "still there?"}], "max_tokens": 8}),
        )
        .await;
    assert_eq!(
        res.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&res.body)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_before_any_hold() {
    // Media up to 256 KiB: the chat routes' limit (1 MiB + 4/3 of that) is under `big` too.
    let env = Env::with_knobs(crate::harness::fast_knobs(), |c| {
        c.media.max_item_bytes = 256 << 10;
        c.media.max_total_bytes = 256 << 10;
    })
    .await;
    assert!(env.gw().state.config.chat_body_limit() < 2 << 20);
    let key = env.funded_key(W1, 1_000_000).await;
    let secret = env.gw().state.admin_secret.clone();
    // A declared length over the limit, with the body sent anyway (as SDKs do): the body is not
    // buffered, and the client gets the 413 rather than a reset.
    let big = format!(r#"{{"input":"{}"}}"#, "a".repeat(2 << 20));
    for (path, auth) in [
        ("/v1/chat/completions", format!("x-api-key: {key}")),
        ("/v1/embeddings", format!("x-api-key: {key}")),
        ("/admin/grant", format!("x-admin-secret: {secret}")),
    ] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{big}",
            big.len()
        );
        let answer = raw(&env, request).await;
        assert_eq!(status_of(&answer), Some(413), "{path}: {answer:.300}");
        assert_eq!(
            body_of(&answer)["error"]["code"],
            "body_too_large",
            "{path}"
        );
    }
    for _ in 0..5 {
        let res = env
            .send(
                Method::POST,
                "/v1/chat/completions",
                &[("x-api-key", key.as_str())],
                big.clone(),
            )
            .await;
        assert_eq!(
            (res.status, res.code().as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
        );
    }
    // Declared far too large: refused at once, without waiting for a body.
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\ncontent-length: {}\r\n\r\n",
        1u64 << 40
    );
    let answer = raw(&env, head).await;
    assert_eq!(status_of(&answer), Some(413), "{answer:.300}");
    // No declared length: a chunked body that keeps coming is cut at the limit.
    let mut request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..64 {
        request.extend_from_slice(format!("10000\r\n{}\r\n", "a".repeat(0x10000)).as_bytes());
    }
    request.extend_from_slice(b"0\r\n\r\n"); // 4 MiB in all
    let answer = raw(&env, request).await;
    assert_eq!(status_of(&answer), Some(413), "{answer:.300}");
    assert_eq!(body_of(&answer)["error"]["code"], "body_too_large");
    // Nothing was held or charged: the ledger holds the grant alone.
    let b = env.balance(W1);
    assert_eq!((b.balance, b.held), (1_000_000, 0));
    assert_eq!(env.ledger(W1).await.len(), 1);
    assert_eq!(env.sim.generation_count(), 0);
    healthy(&env, &key).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_json_is_a_400_not_a_crash() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 1_000_000).await;
    let secret = env.gw().state.admin_secret.clone();
    let deep = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let depth = 400_000; // 800 kB: under the body limit
    let chat_bodies = [
        // An unknown field (ignored by the schema), a known one, and message content.
        format!(
            r#"{{"messages":[{{"role":"user","content":"hi"}}],"metadata":{}}}"#,
            deep(depth)
        ),
        format!(
            r#"{{"messages":[{{"role":"user","content":"hi"}}],"tools":{}}}"#,
            deep(depth)
        ),
        format!(
            r#"{{"messages":[{{"role":"user","content":{}}}]}}"#,
            deep(depth)
        ),
        format!(
            r#"{{"messages":[{{"role":"user","content":"hi"}}],"stop":{}}}"#,
            deep(depth)
        ),
    ];
    for body in chat_bodies {
        let res = env
            .send(
                Method::POST,
                "/v1/chat/completions",
                &[("x-api-key", key.as_str())],
                body.clone(),
            )
            .await;
        assert_eq!(
            res.status,
            StatusCode::BAD_REQUEST,
            "{:.80} {}",
            body,
            String::from_utf8_lossy(&res.body)
        );
        assert_eq!(res.code(), "invalid_json", "{:.80}", body);
    }
    // serde_json endpoints: past its recursion limit (128) where the schema takes any JSON; a
    // typed field refuses the first bracket as a shape error.
    for (path, auth, body, status, code) in [
        (
            "/v1/embeddings",
            ("x-api-key", key.clone()),
            format!(r#"{{"input":{}}}"#, deep(depth)),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "/admin/grant",
            ("x-admin-secret", secret.clone()),
            format!(r#"{{"wallet":"{W1}","credits":1,"note":{}}}"#, deep(depth)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
        ),
    ] {
        let res = env
            .send(Method::POST, path, &[(auth.0, auth.1.as_str())], body)
            .await;
        assert_eq!((res.status, res.code().as_str()), (status, code), "{path}");
    }
    // Nesting within the parser's limit is fine where the schema ignores it.
    let legal = format!(
        r#"{{"messages":[{{"role":"user","content":"hi"}}],"max_tokens":8,"extra_body_field":{}}}"#,
        deep(1_000)
    );
    let res = env
        .send(
            Method::POST,
            "/v1/chat/completions",
            &[("x-api-key", key.as_str())],
            legal,
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    let b = env.balance(W1);
    assert_eq!(
        (b.held, env.ledger(W1).await.len()),
        (0, 2),
        "one grant, one charge"
    );
    healthy(&env, &key).await;
    env.stop().await;
}

async fn post(
    base: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> crate::harness::Resp {
    let url = format!("{base}{path}");
    crate::harness::call(Method::POST, &url, headers, body.to_string())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_gets_backpressure_not_buffering() {
    // The real binary, so its resident memory can be read; the simulator runs here.
    let mut knobs = crate::harness::fast_knobs();
    knobs.tokens_per_sec = 10_000_000;
    knobs.reply_tokens = 4_000;
    let sim = vectorway::simulate::Simulator::start("127.0.0.1:0".parse().unwrap(), knobs, None)
        .await
        .unwrap();
    // 1000 events of 128 KiB: 128 MiB if the whole answer were pulled through.
    const EVENTS: u64 = 1_000;
    const PAD: u32 = 128 << 10;
    let dir = tempfile::tempdir().unwrap();
    let server = crate::harness::Binary::start(dir.path(), &sim.base_url(), &[]);
    let admin = [("x-admin-secret", server.secret.as_str())];
    let base = server.base.as_str();
    post(
        base,
        "/admin/grant",
        &admin,
        json!({"wallet": W1, "credits": 100_000_000}),
    )
    .await;
    let key = post(base, "/admin/keys", &admin, json!({"wallet": W1}))
        .await
        .json()["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    let ask = json!({"messages": [{"role": "user", "content": "a long one"}], "max_tokens": 4000,
                     "stream": true, "memory_read": false, "memory_write": false});
    // Warm up (pools, caches) before the baseline.
    let res = post(
        base,
        "/v1/chat/completions",
        &[("x-api-key", &key)],
        ask.clone(),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    let baseline = server.rss_kib().unwrap();
    sim.set_faults(FaultPlan {
        pad_event_bytes: Some(PAD),
        times: Some(1),
        ..Default::default()
    });
    let before = sim.stream_events();
    // A client with a small receive buffer reads the head and a few frames, then stops.
    let addr: std::net::SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 << 10).unwrap();
    let mut sock = socket.connect(addr).await.unwrap();
    let body = ask.to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(request.as_bytes()).await.unwrap();
    let mut seen = 0usize;
    let mut chunk = vec![0u8; 64 << 10];
    while seen < 1 << 20 {
        let n = sock.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the stream ended early");
        seen += n;
    }
    // Wait until the upstream stops advancing (every buffer on the way is full).
    let mut last = sim.stream_events();
    let mut still = 0;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = sim.stream_events();
        still = if now == last { still + 1 } else { 0 };
        last = now;
        if still >= 10 {
            break;
        }
    }
    let pulled = last - before;
    assert!(
        pulled < EVENTS,
        "the gateway kept pulling from the upstream while its client read nothing ({pulled} events)"
    );
    let grown = server.rss_kib().unwrap().saturating_sub(baseline);
    eprintln!("stalled reader: {pulled} of {EVENTS} events pulled, resident memory +{grown} KiB");
    assert!(
        grown < 64 << 10,
        "resident memory grew by {grown} KiB for a stalled {} MiB stream",
        (EVENTS * u64::from(PAD)) >> 20
    );
    // Reading again resumes the flow: backpressure, not a dead stream.
    let mut more = 0usize;
    while more < 16 << 20 {
        let n = sock.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the stream ended early");
        more += n;
    }
    assert!(
        sim.stream_events() > last,
        "the upstream moved on once the client read again"
    );
    // The client goes away: the hold ends, and the charge is for what was sent (< the worst case).
    drop(sock);
    let url = format!("{base}/admin/balance?wallet={W1}");
    let mut settled = Value::Null;
    for _ in 0..500 {
        settled = crate::harness::call(Method::GET, &url, &admin, "")
            .await
            .unwrap()
            .json();
        if settled["held"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(settled["held"], 0, "the hold ended when the client left");
    drop(server);
    sim.stop().await;
}
