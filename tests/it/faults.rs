//! Upstream faults, client disconnects and header floods: what the client sees, that holds never
//! leak, and that every call is charged once or not at all.

use std::time::Duration;

use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use vectorway::simulate::FaultPlan;

use crate::harness::{Env, W1, eventually, fast_knobs, sse_data};

fn ask(stream: bool) -> Value {
    json!({"messages": [{"role": "user", "content": "tell me about the fleet"}], "max_tokens": 200, "stream": stream,
           "stream_options": {"include_usage": true}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_before_the_first_frame_are_mapped_and_free() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 1_000_000).await;
    for (status, retry, want_status, want_code) in [
        (
            429,
            Some(3.2),
            StatusCode::TOO_MANY_REQUESTS,
            "upstream_rate_limited",
        ),
        (500, None, StatusCode::BAD_GATEWAY, "upstream_error"),
        (503, None, StatusCode::BAD_GATEWAY, "upstream_error"),
        (504, None, StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
    ] {
        for stream in [false, true] {
            env.sim.set_faults(FaultPlan {
                status: Some(status),
                retry_delay_s: retry,
                times: Some(1),
                ..Default::default()
            });
            let res = env.chat(&key, ask(stream)).await;
            assert_eq!(
                (res.status, res.code().as_str()),
                (want_status, want_code),
                "{status} stream={stream}"
            );
            if status == 429 {
                assert_eq!(
                    res.headers["retry-after"], "4",
                    "RetryInfo 3.2s rounds up to whole seconds"
                );
            }
        }
    }
    let b = env.balance(W1);
    assert_eq!(
        (b.balance, b.held),
        (1_000_000, 0),
        "nothing charged, nothing held"
    );
    env.stop().await;
}

/// Unary and streaming calls that fail before the upstream answered: the mapped status and code,
/// and nothing charged, debited or held (the usage history records the error at 0 credits).
async fn fails_before_headers_for_free(env: &Env, key: &str, want: (StatusCode, &str)) {
    for stream in [false, true] {
        let entries = env.ledger(W1).await.len();
        let res = env.chat(key, ask(stream)).await;
        assert_eq!(
            (res.status, res.code().as_str()),
            want,
            "stream={stream}: {}",
            String::from_utf8_lossy(&res.body)
        );
        assert!(
            eventually(Duration::from_secs(5), || env.balance(W1).held == 0).await,
            "stream={stream}: hold leaked"
        );
        assert_eq!(
            env.balance(W1),
            vectorway::billing::Balance {
                balance: 1_000_000,
                held: 0,
                available: 1_000_000
            },
            "stream={stream}: balance unchanged"
        );
        assert!(
            new_debits(env, entries).await.is_empty(),
            "stream={stream}: no debit"
        );
        assert_eq!(env.gw().state.billing.open_holds(), 0, "stream={stream}");
        let event = &env.usage(W1).await[0];
        assert_eq!(
            (event.status, event.credits),
            (want.0.as_u16(), 0),
            "stream={stream}: the error is in the usage history, free"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_and_header_stall_map_to_502_and_504() {
    // A port with nothing listening.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let env = Env::against(&format!("http://{dead}"), |_| {}).await;
    let key = env.funded_key(W1, 1_000_000).await;
    fails_before_headers_for_free(&env, &key, (StatusCode::BAD_GATEWAY, "upstream_error")).await;
    env.stop().await;

    let env = Env::with_knobs(fast_knobs(), |c| {
        c.upstream.first_byte_timeout = Duration::from_millis(200)
    })
    .await;
    let key = env.funded_key(W1, 1_000_000).await;
    env.sim.set_faults(FaultPlan {
        stall_before_headers_ms: Some(2_000),
        times: None, // both calls stall
        ..Default::default()
    });
    fails_before_headers_for_free(
        &env,
        &key,
        (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
    )
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mid_stream_failures_end_with_an_error_event_and_charge_what_was_sent() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 1_000_000).await;
    for plan in [
        FaultPlan {
            cut_after_chunks: Some(2),
            times: Some(1),
            ..Default::default()
        },
        FaultPlan {
            error_after_chunks: Some(2),
            times: Some(1),
            ..Default::default()
        },
    ] {
        let before = env.balance(W1).balance;
        let entries = env.ledger(W1).await.len();
        env.sim.set_faults(plan.clone());
        let res = env.chat(&key, ask(true)).await;
        assert_eq!(res.status, StatusCode::OK, "headers were already sent");
        let events = sse_data(&res.body);
        assert!(
            !events.contains(&"[DONE]".to_string()),
            "{plan:?}: a broken stream does not claim success"
        );
        let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
        assert_eq!(last["error"]["code"], "upstream_error", "{plan:?}");
        assert!(
            events
                .iter()
                .all(|e| !e.contains("\"finish_reason\":\"stop\"")),
            "no fake stop"
        );
        let content_frames = events.iter().filter(|e| e.contains("\"content\"")).count();
        // An abrupt cut may also lose what was still in the upstream's send buffer.
        assert!(
            (1..=2).contains(&content_frames),
            "{plan:?}: {content_frames}"
        );
        // Usage seen so far: the prompt and 8 words (2 chunks of 4) at the running totals.
        let charged = before - env.balance(W1).balance;
        assert!(charged > 0 && charged < 200, "{plan:?}: charged {charged}");
        assert_eq!(env.balance(W1).held, 0);
        // One debit, for exactly what this call's usage event says it cost.
        let event = &env.usage(W1).await[0];
        assert_eq!(
            event.request_id,
            res.headers["x-request-id"].to_str().unwrap(),
            "{plan:?}"
        );
        assert_eq!(event.credits, charged, "{plan:?}: the usage event's charge");
        assert_eq!(
            new_debits(&env, entries).await,
            [charged as i64],
            "{plan:?}: exactly one debit, of the usage's charge"
        );
        assert_eq!(
            new_debit_references(&env, entries).await,
            [Some(event.request_id.clone())],
            "{plan:?}: the debit names the call"
        );
    }
    assert_eq!(env.gw().state.billing.open_holds(), 0);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_mid_stream_settles_the_hold() {
    let mut knobs = fast_knobs();
    knobs.tokens_per_sec = 40; // 4 words every 100 ms: the stream lasts seconds
    let env = Env::with_knobs(knobs, |_| {}).await;
    let key = env.funded_key(W1, 1_000_000).await;
    let entries = env.ledger(W1).await.len();
    let res = env
        .open(
            Method::POST,
            "/v1/chat/completions",
            &[("x-api-key", key.as_str())],
            ask(true).to_string(),
        )
        .await;
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("\"role\":\"assistant\""));
    assert!(env.balance(W1).held > 0, "the hold is open while streaming");
    drop(body); // the client goes away
    assert!(
        eventually(Duration::from_secs(3), || env.balance(W1).held == 0).await,
        "hold leaked"
    );
    let b = env.balance(W1);
    assert!(
        b.balance < 1_000_000,
        "a frame reached the client, so the usage seen is charged"
    );
    assert_eq!(env.gw().state.billing.open_holds(), 0);
    // Charged once: one debit, equal to the balance's drop and to the 499's usage event.
    let charged = 1_000_000 - b.balance;
    assert_eq!(
        new_debits(&env, entries).await,
        [charged as i64],
        "no double charge"
    );
    let event = &env.usage(W1).await[0];
    assert_eq!((event.status, event.credits), (499, charged));
    assert_eq!(
        new_debit_references(&env, entries).await,
        [Some(event.request_id.clone())],
        "the debit of a stream the client left names the call"
    );

    // Disconnect before the first frame: nothing charged.
    let before = env.balance(W1).balance;
    env.sim.set_faults(FaultPlan {
        stall_before_headers_ms: Some(500),
        times: Some(1),
        ..Default::default()
    });
    let client = env.client.clone();
    let url = env.url("/v1/chat/completions");
    let k = key.clone();
    let call = tokio::spawn(async move {
        let req = http::Request::post(url)
            .header("x-api-key", k)
            .body(http_body_util::Full::new(bytes::Bytes::from(
                ask(true).to_string(),
            )))
            .unwrap();
        let _ = client.request(req).await;
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(env.balance(W1).held > 0);
    call.abort();
    assert!(
        eventually(Duration::from_secs(3), || env.balance(W1).held == 0).await,
        "hold leaked"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        env.balance(W1).balance,
        before,
        "no frame reached the client: no charge"
    );
    assert_eq!(
        env.balance(W1).held,
        0,
        "nothing held once the stall is over"
    );
    assert_eq!(
        new_debits(&env, entries).await,
        [charged as i64],
        "still the first call's one debit: none for the second, none twice for the first"
    );
    env.stop().await;
}

/// The prompt of `ask` in simulator tokens: one per content block, one per 4 bytes.
const ASK_PROMPT_TOKENS: u64 = 1 + 23_u64.div_ceil(4);

/// What `tokens` completion tokens of `ask` cost on the model a response names.
fn cost_of(env: &Env, res_model: &str, completion: u64) -> u64 {
    env.gw()
        .state
        .config
        .prices
        .get(res_model)
        .unwrap()
        .cost(ASK_PROMPT_TOKENS, completion)
}

/// Debits written since `before` (ledger entries newest first).
async fn new_debits(env: &Env, before: usize) -> Vec<i64> {
    let ledger = env.ledger(W1).await;
    ledger[..ledger.len() - before]
        .iter()
        .filter(|e| e.kind == vectorway::storage::LedgerKind::Debit)
        .map(|e| -e.credits)
        .collect()
}

/// The references (request ids) of the debits written since `before`.
async fn new_debit_references(env: &Env, before: usize) -> Vec<Option<String>> {
    let ledger = env.ledger(W1).await;
    ledger[..ledger.len() - before]
        .iter()
        .filter(|e| e.kind == vectorway::storage::LedgerKind::Debit)
        .map(|e| e.reference.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_stall_mid_stream_times_out_and_charges_what_was_sent() {
    let env = Env::with_knobs(fast_knobs(), |c| {
        c.upstream.idle_read_timeout = Duration::from_millis(300)
    })
    .await;
    let key = env.funded_key(W1, 1_000_000).await;
    let entries = env.ledger(W1).await.len();
    env.sim.set_faults(FaultPlan {
        stall_after_chunks: Some(2),
        stall_ms: Some(30_000),
        times: Some(1),
        ..Default::default()
    });
    let res = env.chat(&key, ask(true)).await;
    assert_eq!(res.status, StatusCode::OK, "headers were already sent");
    let events = sse_data(&res.body);
    assert!(!events.contains(&"[DONE]".to_string()), "no fake success");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_timeout");
    let content = events.iter().filter(|e| e.contains("\"content\"")).count();
    assert_eq!(
        content, 2,
        "the two events before the stall reached the client"
    );
    // Charged once, for the usage of what was sent: the prompt and 2 chunks of 4 words.
    let model = res.headers["x-model-used"].to_str().unwrap().to_string();
    assert!(eventually(Duration::from_secs(5), || env.balance(W1).held == 0).await);
    assert_eq!(
        new_debits(&env, entries).await,
        [cost_of(&env, &model, 8) as i64]
    );
    assert_eq!(
        env.balance(W1).balance,
        1_000_000 - cost_of(&env, &model, 8)
    );
    assert_eq!(env.usage(W1).await[0].status, 504);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_after_the_first_frame_end_with_an_error_event() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 1_000_000).await;
    for (status, code, recorded) in [
        (429, "upstream_rate_limited", 429),
        (500, "upstream_error", 502),
        (503, "upstream_error", 502),
    ] {
        let entries = env.ledger(W1).await.len();
        let before = env.balance(W1).balance;
        env.sim.set_faults(FaultPlan {
            error_after_chunks: Some(2),
            error_status: Some(status),
            times: Some(1),
            ..Default::default()
        });
        let res = env.chat(&key, ask(true)).await;
        assert_eq!(
            res.status,
            StatusCode::OK,
            "{status}: headers were already sent"
        );
        let events = sse_data(&res.body);
        assert!(!events.contains(&"[DONE]".to_string()), "{status}");
        assert!(
            events
                .iter()
                .all(|e| !e.contains("\"finish_reason\":\"stop\"")),
            "{status}: no fake stop"
        );
        let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
        assert_eq!(last["error"]["code"], code, "{status}");
        let content = events.iter().filter(|e| e.contains("\"content\"")).count();
        assert_eq!(content, 2, "{status}");
        let model = res.headers["x-model-used"].to_str().unwrap().to_string();
        let want = cost_of(&env, &model, 8);
        assert!(eventually(Duration::from_secs(5), || env.balance(W1).held == 0).await);
        assert_eq!(
            new_debits(&env, entries).await,
            [want as i64],
            "{status}: one charge"
        );
        assert_eq!(before - env.balance(W1).balance, want, "{status}");
        assert_eq!(env.usage(W1).await[0].status, recorded, "{status}");
    }
    assert_eq!(env.gw().state.billing.open_holds(), 0);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnects_before_headers_and_after_the_last_frame() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 1_000_000).await;
    // Before headers, unary: the client gives up while the upstream is still thinking.
    env.sim.set_faults(FaultPlan {
        stall_before_headers_ms: Some(1_000),
        times: Some(1),
        ..Default::default()
    });
    let entries = env.ledger(W1).await.len();
    let (client, url, k) = (
        env.client.clone(),
        env.url("/v1/chat/completions"),
        key.clone(),
    );
    let call = tokio::spawn(async move {
        let req = http::Request::post(url)
            .header("x-api-key", k)
            .body(http_body_util::Full::new(bytes::Bytes::from(
                ask(false).to_string(),
            )))
            .unwrap();
        let _ = client.request(req).await;
    });
    assert!(eventually(Duration::from_secs(5), || env.balance(W1).held > 0).await);
    call.abort();
    assert!(
        eventually(Duration::from_secs(5), || env.balance(W1).held == 0).await,
        "hold leaked"
    );
    // Past the stall: a gateway still waiting on the upstream would charge now.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert_eq!(
        env.balance(W1).balance,
        1_000_000,
        "no answer reached the client: no charge"
    );
    assert!(new_debits(&env, entries).await.is_empty());
    assert_eq!(env.usage(W1).await[0].status, 499);

    // After the last frame: the client reads to `[DONE]` and drops the connection at once.
    let res = env
        .open(
            Method::POST,
            "/v1/chat/completions",
            &[("x-api-key", key.as_str())],
            ask(true).to_string(),
        )
        .await;
    let mut body = res.into_body();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("data: [DONE]") {
        let frame = body.frame().await.unwrap().unwrap();
        seen.extend_from_slice(frame.data_ref().unwrap());
    }
    drop(body);
    let usage: Value = serde_json::from_str(&sse_data(&seen)[sse_data(&seen).len() - 2]).unwrap();
    let cost = usage["usage"]["credit_cost"].as_u64().unwrap();
    assert!(cost > 0);
    assert!(eventually(Duration::from_secs(5), || env.balance(W1).held == 0).await);
    assert_eq!(
        new_debits(&env, entries).await,
        [cost as i64],
        "charged once, what the usage chunk said"
    );
    assert_eq!(env.balance(W1).balance, 1_000_000 - cost);
    assert_eq!(
        env.usage(W1).await[0].status,
        200,
        "a complete answer, not a 499"
    );
    env.stop().await;
}

/// Header floods and broken heads get a status, never silence: hyper refuses more than 100
/// headers or a head past its ~400 KiB read buffer with 431, and a malformed header line with
/// 400, and writes that answer before it closes; a bare close fails the test. (A single header of
/// a few hundred KiB under that buffer is served normally.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_floods_get_a_status_not_silence() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 1_000_000).await;
    let head = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n";
    let many: String = (0..500).map(|i| format!("x-flood-{i}: y\r\n")).collect();
    for (what, request, want) in [
        ("500 headers", format!("{head}{many}\r\n"), 431),
        (
            "a 1 MiB header",
            format!("{head}x-big: {}\r\n\r\n", "a".repeat(1 << 20)),
            431,
        ),
        (
            "a head that never ends",
            format!("{head}{}", "x-more: y\r\n".repeat(100_000)),
            431,
        ),
        (
            "a header line without a colon",
            format!("{head}x-bad\r\n\r\n"),
            400,
        ),
        (
            "a space in a header name",
            format!("{head}x bad: y\r\n\r\n"),
            400,
        ),
    ] {
        let answer = crate::edge::raw(&env, request).await;
        assert_eq!(
            crate::edge::status_of(&answer),
            Some(want),
            "{what}: the server must answer, not just close: {answer:.200}"
        );
    }
    // The control: a well-formed head of the same shape is served.
    let answer = crate::edge::raw(&env, format!("{head}\r\n")).await;
    assert_eq!(crate::edge::status_of(&answer), Some(200));

    // h2: a header list just over the 16 KiB limit gets 431 on its stream; one far over it is
    // refused for the whole connection (GOAWAY, ENHANCE_YOUR_CALM): an error, never a hang.
    let h2 = || {
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http::<http_body_util::Full<bytes::Bytes>>()
    };
    let get = |size: usize| {
        http::Request::get(env.url("/health"))
            .header("x-big", "a".repeat(size))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap()
    };
    let res = tokio::time::timeout(Duration::from_secs(10), h2().request(get(17 << 10)))
        .await
        .expect("h2: no answer to a 17 KiB header list")
        .unwrap();
    assert_eq!(res.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let far = tokio::time::timeout(Duration::from_secs(10), h2().request(get(256 << 10)))
        .await
        .expect("h2: no answer to a 256 KiB header list");
    if let Ok(res) = far {
        assert_eq!(res.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
    let res = h2().request(get(0)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "h2 still serves");

    let res = env
        .chat(
            &key,
            json!({"messages": [{"role": "user", "content": "still there?"}], "max_tokens": 8}),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(env.balance(W1).held, 0);
    env.stop().await;
}
