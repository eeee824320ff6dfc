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
