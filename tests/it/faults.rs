//! Upstream faults and client disconnects: what the client sees, and that holds never leak.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_and_header_stall_map_to_502_and_504() {
    // A port with nothing listening.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gw = vectorway::app::start(vectorway::config::Config::for_tests(
        dir.path(),
        &format!("http://{dead}"),
    ))
    .await
    .unwrap();
    let w = W1.parse().unwrap();
    gw.state
        .billing
        .credit(
            w,
            1_000_000,
            vectorway::storage::LedgerKind::Grant,
            None,
            None,
        )
        .await
        .unwrap();
    let key = gw.state.keys.create(w, "t").await.unwrap().0;
    let res = crate::harness::client()
        .request(
            http::Request::post(format!("{}/v1/chat/completions", gw.base_url()))
                .header("x-api-key", &key)
                .body(http_body_util::Full::new(bytes::Bytes::from(
                    ask(false).to_string(),
                )))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(gw.state.billing.balance(&w).held, 0);
    gw.shutdown().await;

    let env = Env::with_knobs(fast_knobs(), |c| {
        c.upstream.first_byte_timeout = Duration::from_millis(200)
    })
    .await;
    let key = env.funded_key(W1, 1_000_000).await;
    env.sim.set_faults(FaultPlan {
        stall_before_headers_ms: Some(2_000),
        times: Some(1),
        ..Default::default()
    });
    let res = env.chat(&key, ask(false)).await;
    assert_eq!(
        (res.status, res.code().as_str()),
        (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout")
    );
    assert_eq!(
        env.balance(W1),
        vectorway::billing::Balance {
            balance: 1_000_000,
            held: 0,
            available: 1_000_000
        }
    );
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
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_mid_stream_settles_the_hold() {
    let mut knobs = fast_knobs();
    knobs.tokens_per_sec = 40; // 4 words every 100 ms: the stream lasts seconds
    let env = Env::with_knobs(knobs, |_| {}).await;
    let key = env.funded_key(W1, 1_000_000).await;
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
