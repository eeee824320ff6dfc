//! Model fallback lists (`models: [..]`): priced at the dearest, tried in order on retryable
//! upstream failures before the first byte, charged at the model that answered.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vectorway::simulate::FaultPlan;

use crate::harness::{Env, Resp, W1, fast_knobs, sse_data};

fn ask(models: Value, stream: bool) -> Value {
    json!({"models": models, "messages": [{"role": "user", "content": "fallback please"}], "max_tokens": 50, "stream": stream,
           "stream_options": {"include_usage": true}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_on_retryable_errors_and_charges_the_answering_model() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 10_000_000).await;
    let prices = env.gw().state.config.prices.clone();
    let pro = prices.get("gemini-2.5-pro").unwrap().clone();
    for (status, stream) in [(429, false), (503, true), (500, false)] {
        env.sim.set_faults(FaultPlan {
            status: Some(status),
            times: Some(1),
            ..Default::default()
        });
        let before = env.balance(W1).balance;
        let res = env
            .chat(
                &key,
                ask(json!(["gemini-2.5-flash", "gemini-2.5-pro"]), stream),
            )
            .await;
        assert_eq!(res.status, StatusCode::OK, "{status}");
        assert_eq!(res.headers["x-model-used"], "gemini-2.5-pro");
        let usage = if stream {
            let events = sse_data(&res.body);
            serde_json::from_str::<Value>(&events[events.len() - 2]).unwrap()["usage"].clone()
        } else {
            res.json()["usage"].clone()
        };
        assert_eq!(usage["model"], "gemini-2.5-pro");
        let (p, c) = (
            usage["prompt_tokens"].as_u64().unwrap(),
            usage["completion_tokens"].as_u64().unwrap(),
        );
        assert_eq!(
            usage["credit_cost"].as_u64().unwrap(),
            pro.cost(p, c),
            "charged at the answering model's price"
        );
        assert_eq!(before - env.balance(W1).balance, pro.cost(p, c));
    }
    let sent: Vec<String> = env.sim.requests().iter().map(|r| r.path.clone()).collect();
    assert!(
        sent.iter()
            .filter(|p| p.contains("gemini-2.5-flash:"))
            .count()
            >= 3
    );
    // Not retryable: a 400 from the upstream ends the call on the first model.
    env.sim.set_faults(FaultPlan {
        status: Some(400),
        times: Some(1),
        ..Default::default()
    });
    let n = env.sim.generation_count();
    let res = env
        .chat(
            &key,
            ask(json!(["gemini-2.5-flash", "gemini-2.5-pro"]), false),
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert_eq!(env.sim.generation_count(), n + 1);
    // Single-model answers carry X-Model-Used too.
    let res = env.chat(&key, json!({"model": "gemini/gemini-2.5-flash-lite", "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(res.headers["x-model-used"], "gemini-2.5-flash-lite");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hold_is_priced_at_the_dearest_model_and_lists_are_validated() {
    let env = Env::start().await;
    let prices = env.gw().state.config.prices.clone();
    let (flash, pro) = (
        prices.get("gemini-2.5-flash").unwrap(),
        prices.get("gemini-2.5-pro").unwrap(),
    );
    // "fallback please" is 15 bytes + 16 → 31 prompt tokens at most; 50 completion tokens.
    let (w_flash, w_pro) = (flash.cost(31, 50), pro.cost(31, 50));
    assert!(w_pro > w_flash);
    let key = env.funded_key(W1, w_pro - 1).await;
    let res = env
        .chat(
            &key,
            ask(json!(["gemini-2.5-flash", "gemini-2.5-pro"]), false),
        )
        .await;
    assert_eq!(
        (res.status, res.code().as_str()),
        (StatusCode::PAYMENT_REQUIRED, "insufficient_credits")
    );
    let res = env
        .chat(
            &key,
            ask(json!(["gemini-2.5-flash", "gemini-2.5-flash-lite"]), false),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "a cheaper list fits");
    for bad in [
        json!({"model": "gemini-2.5-flash", "models": ["gemini-2.5-flash", "gemini-2.5-pro"], "messages": [{"role": "user", "content": "x"}]}),
        ask(json!(["gemini-2.5-flash", "gemini-2.5-flash"]), false),
        // An alias names the same model: duplicates are found after resolving it.
        ask(
            json!(["gemini-2.5-flash", "gemini/gemini-2.5-flash"]),
            false,
        ),
        ask(
            json!([
                "gemini/gemini-2.5-pro",
                "gemini-2.5-flash",
                "gemini-2.5-pro"
            ]),
            false,
        ),
        ask(
            json!([
                "gemini-2.5-flash",
                "gemini-2.5-pro",
                "gemini-2.5-flash-lite",
                "gemini-3.5-flash"
            ]),
            false,
        ),
        ask(json!(["gemini-2.5-flash"]), false),
        ask(json!(["gemini-2.5-flash", "gpt-9"]), false),
    ] {
        let res = env.chat(&key, bad.clone()).await;
        assert_eq!(
            (res.status, res.code().as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, "validation_error"),
            "{bad}"
        );
        assert_eq!(res.json()["error"]["param"], "models");
    }
    env.stop().await;
}

/// `ask` without memory, so the simulator's log holds only the fallback's own calls.
fn ask_plain(models: Value, stream: bool) -> Value {
    let mut body = ask(models, stream);
    body["memory_read"] = json!(false);
    body["memory_write"] = json!(false);
    body
}

/// Arms `fault` (if any) for the next upstream call, then asks `[flash, pro]` without memory.
async fn flash_then_pro(env: &Env, key: &str, fault: Option<FaultPlan>, stream: bool) -> Resp {
    if let Some(f) = fault {
        env.sim.set_faults(f);
    }
    env.chat(
        key,
        ask_plain(json!(["gemini-2.5-flash", "gemini-2.5-pro"]), stream),
    )
    .await
}

/// The generation requests the simulator received, as `model:action` paths, oldest first.
fn generations(env: &Env) -> Vec<String> {
    env.sim
        .requests()
        .iter()
        .map(|r| r.path.clone())
        .filter(|p| p.contains(":generateContent") || p.contains(":streamGenerateContent"))
        .collect()
}

fn calls_to(paths: &[String], model: &str) -> usize {
    let needle = format!("models/{model}:");
    paths.iter().filter(|p| p.contains(&needle)).count()
}

/// A TCP front for the simulator that closes, unanswered, every connection whose request line
/// contains `refused` (to the gateway this is a refused or reset connection, for that model only)
/// and relays every other connection. Returns its base URL and how many connections it closed.
fn refusing_front(sim: &str, refused: &'static str) -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let sim = sim
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let closed = Arc::new(AtomicUsize::new(0));
    let count = closed.clone();
    tokio::spawn(async move {
        while let Ok((mut down, _)) = listener.accept().await {
            let (sim, count) = (sim.clone(), count.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                let line = loop {
                    if let Some(end) = head.windows(2).position(|w| w == b"\r\n") {
                        break String::from_utf8_lossy(&head[..end]).to_string();
                    }
                    match down.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                };
                if line.contains(refused) {
                    count.fetch_add(1, Ordering::SeqCst);
                    return; // dropping `down` closes the connection without an answer
                }
                let Ok(mut up) = tokio::net::TcpStream::connect(&sim).await else {
                    return;
                };
                if up.write_all(&head).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                }
            });
        }
    });
    (format!("http://{addr}"), closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_when_the_first_upstream_refuses_the_connection() {
    let mut closed = None;
    let env = Env::with_knobs(fast_knobs(), |c| {
        let sim = c.upstream.base_url.clone().unwrap();
        let (front, count) = refusing_front(&sim, "models/gemini-2.5-flash:");
        c.upstream.base_url = Some(front);
        // A fresh connection per call, so no relayed connection is reused for the refused model.
        c.upstream.pool_max_idle_per_host = 0;
        closed = Some(count);
    })
    .await;
    let closed = closed.unwrap();
    let key = env.funded_key(W1, 10_000_000).await;
    for stream in [false, true] {
        let refused = closed.load(Ordering::SeqCst);
        let res = flash_then_pro(&env, &key, None, stream).await;
        assert_eq!(res.status, StatusCode::OK, "stream {stream}");
        assert_eq!(res.headers["x-model-used"], "gemini-2.5-pro");
        assert!(
            closed.load(Ordering::SeqCst) > refused,
            "stream {stream}: the first model was tried"
        );
        if stream {
            let events = sse_data(&res.body);
            assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        }
    }
    let sent = generations(&env);
    assert_eq!(calls_to(&sent, "gemini-2.5-flash"), 0, "{sent:?}");
    assert_eq!(calls_to(&sent, "gemini-2.5-pro"), 2, "{sent:?}");
    assert_eq!(env.balance(W1).held, 0);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_when_the_first_upstream_stalls_before_headers() {
    let env = Env::with_knobs(fast_knobs(), |c| {
        c.upstream.first_byte_timeout = Duration::from_millis(200);
    })
    .await;
    let key = env.funded_key(W1, 10_000_000).await;
    for stream in [false, true] {
        let before = generations(&env).len();
        let res = flash_then_pro(
            &env,
            &key,
            Some(FaultPlan {
                stall_before_headers_ms: Some(5_000),
                times: Some(1),
                ..Default::default()
            }),
            stream,
        )
        .await;
        assert_eq!(res.status, StatusCode::OK, "stream {stream}");
        assert_eq!(res.headers["x-model-used"], "gemini-2.5-pro");
        let sent = generations(&env)[before..].to_vec();
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert!(sent[0].contains("models/gemini-2.5-flash:"), "{sent:?}");
        assert!(sent[1].contains("models/gemini-2.5-pro:"), "{sent:?}");
    }
    assert_eq!(env.balance(W1).held, 0);
    env.stop().await;
}

/// The usage event of `request_id`, read through `GET /v1/usage` once the journal has written it.
async fn usage_event(env: &Env, key: &str, request_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let res = env
            .send(
                Method::GET,
                "/v1/usage?filter=/v1/chat/completions",
                &[("x-api-key", key)],
                "",
            )
            .await;
        if res.status == StatusCode::OK
            && let Some(ev) = res.json()["events"]
                .as_array()
                .and_then(|e| e.iter().find(|e| e["request_id"] == request_id))
        {
            return ev.clone();
        }
        assert!(Instant::now() < deadline, "no usage event for {request_id}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_usage_event_names_the_model_that_answered() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 10_000_000).await;
    for stream in [false, true] {
        let res = flash_then_pro(
            &env,
            &key,
            Some(FaultPlan {
                status: Some(503),
                times: Some(1),
                ..Default::default()
            }),
            stream,
        )
        .await;
        assert_eq!(res.status, StatusCode::OK, "stream {stream}");
        assert_eq!(res.headers["x-model-used"], "gemini-2.5-pro");
        let usage = if stream {
            let events = sse_data(&res.body);
            serde_json::from_str::<Value>(&events[events.len() - 2]).unwrap()["usage"].clone()
        } else {
            res.json()["usage"].clone()
        };
        let request_id = res.headers["x-request-id"].to_str().unwrap();
        let event = usage_event(&env, &key, request_id).await;
        assert_eq!(event["model"], "gemini-2.5-pro", "stream {stream}: {event}");
        assert_eq!(event["status"], 200, "stream {stream}");
        assert_eq!(event["credits"], usage["credit_cost"], "stream {stream}");
        assert_eq!(event["completion_tokens"], usage["completion_tokens"]);
    }
    env.stop().await;
}

/// The x402 quote of an unpaid chat: the v1 body's `maxAmountRequired` and the v2 header's
/// `amount`, which must agree.
async fn x402_quote(env: &Env, body: &Value) -> u64 {
    let res = env
        .send(
            Method::POST,
            "/v1/chat/completions",
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await;
    assert_eq!(res.status, StatusCode::PAYMENT_REQUIRED, "{body}");
    let v1: u64 = res.json()["accepts"][0]["maxAmountRequired"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let header = res.headers["payment-required"].to_str().unwrap();
    let v2: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        v2["accepts"][0]["amount"],
        v1.to_string(),
        "v1 and v2 agree"
    );
    v1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_x402_quote_is_priced_at_the_dearest_model() {
    let env = Env::start().await;
    let prices = env.gw().state.config.prices.clone();
    let (flash, pro) = (
        prices.get("gemini-2.5-flash").unwrap(),
        prices.get("gemini-2.5-pro").unwrap(),
    );
    // "fallback please" is 15 bytes + 16 → 31 prompt tokens at most; 2000 completion tokens
    // puts both models well above the $0.001 floor.
    let with = |models: Value| {
        let mut body = ask_plain(models, false);
        body["max_tokens"] = json!(2000);
        body
    };
    let single = |model: &str| {
        let mut body = with(Value::Null);
        body.as_object_mut().unwrap().remove("models");
        body["model"] = json!(model);
        body
    };
    let (w_flash, w_pro) = (flash.cost(31, 2000), pro.cost(31, 2000));
    let floor = env.gw().state.config.x402.min_quote;
    assert!(w_pro > w_flash && w_flash > floor);
    assert_eq!(x402_quote(&env, &single("gemini-2.5-flash")).await, w_flash);
    assert_eq!(x402_quote(&env, &single("gemini-2.5-pro")).await, w_pro);
    for list in [
        json!(["gemini-2.5-flash", "gemini-2.5-pro"]),
        json!(["gemini-2.5-pro", "gemini-2.5-flash"]),
        json!([
            "gemini-2.5-flash-lite",
            "gemini-2.5-flash",
            "gemini/gemini-2.5-pro"
        ]),
    ] {
        assert_eq!(x402_quote(&env, &with(list.clone())).await, w_pro, "{list}");
    }
    assert_eq!(
        x402_quote(
            &env,
            &with(json!(["gemini-2.5-flash", "gemini-2.5-flash-lite"]))
        )
        .await,
        w_flash,
        "a list without a dearer model is quoted at its dearest, flash"
    );
    // Quoting never calls the upstream.
    assert_eq!(env.sim.generation_count(), 0);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_fallback_once_a_stream_has_sent_a_frame() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 10_000_000).await;
    // Both are retryable before the first byte (the fallback test above falls back on them).
    for (status, code) in [(503, "upstream_error"), (429, "upstream_rate_limited")] {
        let before = generations(&env).len();
        let res = flash_then_pro(
            &env,
            &key,
            Some(FaultPlan {
                error_after_chunks: Some(2),
                error_status: Some(status),
                times: Some(1),
                ..Default::default()
            }),
            true,
        )
        .await;
        assert_eq!(res.status, StatusCode::OK, "{status}: headers were sent");
        assert_eq!(res.headers["x-model-used"], "gemini-2.5-flash");
        let events = sse_data(&res.body);
        assert!(!events.contains(&"[DONE]".to_string()), "{status}");
        let content = events.iter().filter(|e| e.contains("\"content\"")).count();
        assert_eq!(content, 2, "{status}: the frames sent before the error");
        let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
        assert_eq!(
            last["error"]["code"], code,
            "{status}: ends with an error event"
        );
        let sent = generations(&env)[before..].to_vec();
        assert_eq!(sent.len(), 1, "{status}: one upstream call: {sent:?}");
        assert!(sent[0].contains("models/gemini-2.5-flash:"), "{sent:?}");
    }
    assert_eq!(calls_to(&generations(&env), "gemini-2.5-pro"), 0);
    env.stop().await;
}
