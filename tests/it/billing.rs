//! What a chat call is charged: the hold (or x402 quote) covers the final charge whatever memory
//! recall injects, and answers cut short are billed for what reached the model, never 0 and
//! never past the hold.

use std::time::Duration;

use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use vectorway::billing::pricing::{ModelPrice, parse_usd_micros};
use vectorway::config::known_network;
use vectorway::payments::sign::Signer;
use vectorway::payments::unix_now;
use vectorway::simulate::FaultPlan;
use vectorway::storage::{LedgerEntry, LedgerKind, UsageEvent};
use vectorway::wallet::Wallet;

use crate::harness::{Env, W1, W2, eventually, fast_knobs, sse_data};

const PAY_TO: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

fn price(env: &Env, model: &str) -> ModelPrice {
    env.gw().state.config.prices.get(model).unwrap().clone()
}

/// A 30 KB memory record (under the 32 KiB record cap).
fn big_memory(i: usize) -> String {
    let line = format!("memory {i}: the fleet simulation wallet gateway answer budget plan. ");
    line.repeat(30_000 / line.len())
}

/// Writes three 30 KB memories for `wallet`, as earlier conversations would have.
async fn remember_big(env: &Env, wallet: &str) {
    let w: Wallet = wallet.parse().unwrap();
    for i in 0..3 {
        env.gw()
            .state
            .memory
            .write(w, None, &big_memory(i))
            .await
            .unwrap();
    }
}

/// A call that reads up to `k` memories into a tiny request.
fn recalling(stream: bool, k: u32, max_tokens: u32) -> Value {
    json!({"messages": [{"role": "user", "content": "what did the fleet simulation plan?"}],
           "max_tokens": max_tokens, "k": k, "memory_write": false, "stream": stream,
           "stream_options": {"include_usage": true}})
}

/// The call's usage event, once the journal has it (x402 events wait for the settlement).
async fn event_of(env: &Env, wallet: &str, request_id: &str) -> UsageEvent {
    for _ in 0..300 {
        if let Some(e) = env
            .usage(wallet)
            .await
            .into_iter()
            .find(|e| e.request_id == request_id)
        {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no usage event for {request_id}");
}

/// The call's debits.
async fn debits_of(env: &Env, wallet: &str, request_id: &str) -> Vec<LedgerEntry> {
    env.ledger(wallet)
        .await
        .into_iter()
        .filter(|e| e.kind == LedgerKind::Debit && e.reference.as_deref() == Some(request_id))
        .collect()
}

fn request_id(headers: &http::HeaderMap) -> String {
    headers["x-request-id"].to_str().unwrap().to_string()
}

fn x_payment(s: &Signer, value: u64) -> String {
    let net = known_network("base-sepolia").unwrap();
    let p = s
        .pay(&net, PAY_TO.parse().unwrap(), value, unix_now(), 300)
        .unwrap();
    p.x_payment().unwrap().to_str().unwrap().to_string()
}

async fn x402_quote(env: &Env, body: &Value) -> u64 {
    let res = env
        .send(Method::POST, "/v1/chat/completions", &[], body.to_string())
        .await;
    assert_eq!(res.status, StatusCode::PAYMENT_REQUIRED);
    res.json()["accepts"][0]["maxAmountRequired"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// The invariant of issue 14 (4): for every request, the hold (API key) or the quote (x402)
/// covers the final charge. A capped charge would show as a debit (or a kept amount) below the
/// price of the tokens the usage event reports, so each call is checked against that price.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hold_and_the_quote_cover_the_charge_whatever_recall_injects() {
    // Every memory is recalled, whatever its score.
    let env = Env::with_knobs(fast_knobs(), |c| c.memory.score_floor = -1.0).await;
    let flash = price(&env, "gemini-2.5-flash");
    let key = env.funded_key(W1, 100_000_000).await;
    remember_big(&env, W1).await;
    let s = Signer::random().unwrap();
    let payer = s.address().to_string();
    remember_big(&env, &payer).await;
    let min_quote = env.gw().state.config.x402.min_quote;
    for stream in [false, true] {
        for (k, max_tokens) in [(50, 1), (2, 1), (50, 64), (1, 200)] {
            let label = format!("stream={stream} k={k} max_tokens={max_tokens}");
            let body = recalling(stream, k, max_tokens);
            let used: u32 = k.min(3);

            // API key: one debit, at the full price of the reported tokens, under the request id.
            let res = env.chat(&key, body.clone()).await;
            assert_eq!(res.status, StatusCode::OK, "{label}");
            let id = request_id(&res.headers);
            let e = event_of(&env, W1, &id).await;
            assert_eq!((e.status, e.memories_used), (200, used), "{label}");
            assert!(
                e.prompt_tokens > 7_000 * u64::from(used),
                "{label}: the memories went upstream ({} prompt tokens)",
                e.prompt_tokens
            );
            let cost = flash.cost(e.prompt_tokens, e.completion_tokens);
            assert_eq!(e.credits, cost, "{label}: charged the whole cost");
            let debits: Vec<i64> = debits_of(&env, W1, &id)
                .await
                .iter()
                .map(|d| -d.credits)
                .collect();
            assert_eq!(debits, [cost as i64], "{label}");

            // x402: the quote covers the cost, and what is kept is the cost (floored).
            let q = x402_quote(&env, &body).await;
            let res = env
                .send(
                    Method::POST,
                    "/v1/chat/completions",
                    &[("x-payment", &x_payment(&s, q))],
                    body.to_string(),
                )
                .await;
            assert_eq!(res.status, StatusCode::OK, "{label}");
            let e = event_of(&env, &payer, &request_id(&res.headers)).await;
            assert_eq!((e.status, e.memories_used), (200, used), "{label}");
            let cost = flash.cost(e.prompt_tokens, e.completion_tokens);
            assert!(cost <= q, "{label}: cost {cost} above the quote {q}");
            assert_eq!(e.credits, cost.max(min_quote), "{label}: kept");
            let kept = parse_usd_micros(e.usd_cost.as_deref().unwrap()).unwrap();
            assert_eq!(kept, e.credits, "{label}");
        }
    }
    assert_eq!(env.gw().state.billing.open_holds(), 0);
    assert_eq!(env.balance(W1).held, 0);
    env.stop().await;
}

/// A wallet that can pay for the bare request but not for the memories it would recall is
/// refused before any model call, and charged nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_that_cannot_pay_for_its_memories_is_refused_before_the_upstream() {
    let env = Env::with_knobs(fast_knobs(), |c| c.memory.score_floor = -1.0).await;
    let key = env.funded_key(W2, 2_000).await;
    remember_big(&env, W2).await;
    let generations = env.sim.generation_count();
    let res = env.chat(&key, recalling(false, 50, 1)).await;
    assert_eq!(
        (res.status, res.code().as_str()),
        (StatusCode::PAYMENT_REQUIRED, "insufficient_credits"),
        "{}",
        String::from_utf8_lossy(&res.body)
    );
    assert_eq!(env.sim.generation_count(), generations, "no model call");
    let b = env.balance(W2);
    assert_eq!((b.balance, b.held), (2_000, 0));
    // Without memories the same request fits.
    let mut body = recalling(false, 50, 1);
    body["memory_read"] = json!(false);
    assert_eq!(env.chat(&key, body).await.status, StatusCode::OK);
    env.stop().await;
}

/// A short prompt without memory, so its bound is exact: UTF-8 bytes + 16.
fn plain(stream: bool, extra: Value) -> Value {
    let mut b = json!({"messages": [{"role": "user", "content": "tell me about the fleet"}],
                       "max_tokens": 200, "stream": stream, "memory_read": false,
                       "memory_write": false, "stream_options": {"include_usage": true}});
    if let (Some(o), Some(e)) = (b.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    b
}
const PLAIN_BOUND: u64 = 23 + 16;
const PLAIN_SIM_PROMPT: u64 = 1 + 23_u64.div_ceil(4);

/// Checks that a call was charged `want` once: the usage event, the one debit (under the
/// request id) and the balance agree.
async fn charged_once(env: &Env, id: &str, before: u64, want: u64, status: u16) {
    assert!(
        eventually(Duration::from_secs(5), || env.balance(W1).held == 0).await,
        "hold leaked"
    );
    let e = event_of(env, W1, id).await;
    assert_eq!((e.status, e.credits), (status, want), "usage event");
    let debits: Vec<i64> = debits_of(env, W1, id)
        .await
        .iter()
        .map(|d| -d.credits)
        .collect();
    assert_eq!(debits, [want as i64], "one debit under the request id");
    assert_eq!(env.balance(W1).balance, before - want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_only_thought_before_it_broke_pays_the_thinking() {
    let env = Env::with_knobs(fast_knobs(), |c| {
        c.upstream.idle_read_timeout = Duration::from_millis(300)
    })
    .await;
    let flash = price(&env, "gemini-2.5-flash");
    let key = env.funded_key(W1, 1_000_000).await;
    // Two thought-summary events (24 thinking tokens in all, the simulator's most), then a stall:
    // the client saw no text at all.
    env.sim.set_faults(FaultPlan {
        thought_events: Some(2),
        stall_after_chunks: Some(2),
        stall_ms: Some(30_000),
        times: Some(1),
        ..Default::default()
    });
    let before = env.balance(W1).balance;
    let res = env
        .chat(&key, plain(true, json!({"reasoning_effort": "low"})))
        .await;
    assert_eq!(res.status, StatusCode::OK);
    let events = sse_data(&res.body);
    assert!(!events.iter().any(|e| e.contains("\"content\"")), "no text");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_timeout");
    let id = request_id(&res.headers);
    let want = flash.cost(PLAIN_SIM_PROMPT, 24);
    charged_once(&env, &id, before, want, 504).await;
    let e = event_of(&env, W1, &id).await;
    assert_eq!(
        (e.prompt_tokens, e.completion_tokens),
        (PLAIN_SIM_PROMPT, 24)
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_without_usage_metadata_are_billed_at_the_bound_and_the_text() {
    let env = Env::start().await;
    let flash = price(&env, "gemini-2.5-flash");
    let key = env.funded_key(W1, 1_000_000).await;
    for stream in [false, true] {
        env.sim.set_faults(FaultPlan {
            omit_usage: true,
            times: Some(1),
            ..Default::default()
        });
        let before = env.balance(W1).balance;
        let res = env.chat(&key, plain(stream, json!({}))).await;
        assert_eq!(res.status, StatusCode::OK, "stream={stream}");
        let (text, usage) = if stream {
            let events = sse_data(&res.body);
            assert!(events.iter().any(|e| e == "[DONE]"), "a clean end");
            let text: String = events
                .iter()
                .filter_map(|e| serde_json::from_str::<Value>(e).ok())
                .filter_map(|v| {
                    v["choices"][0]["delta"]["content"]
                        .as_str()
                        .map(String::from)
                })
                .collect();
            let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
            (text, usage["usage"].clone())
        } else {
            let v = res.json();
            let text = v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string();
            (text, v["usage"].clone())
        };
        assert!(!text.is_empty());
        let completion = (text.len() as u64).div_ceil(4);
        let want = flash.cost(PLAIN_BOUND, completion);
        assert_eq!(
            (
                usage["prompt_tokens"].as_u64(),
                usage["completion_tokens"].as_u64(),
                usage["credit_cost"].as_u64()
            ),
            (Some(PLAIN_BOUND), Some(completion), Some(want)),
            "stream={stream}: the usage shown is the usage billed"
        );
        charged_once(&env, &request_id(&res.headers), before, want, 200).await;
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_prompt_stream_closed_after_its_headers_pays_the_prompt() {
    let env = Env::start().await;
    let flash = price(&env, "gemini-2.5-flash");
    let key = env.funded_key(W1, 10_000_000).await;
    // About 110k prompt tokens by Gemini's count (the simulator's: one per 4 bytes).
    let prompt = "fleet ".repeat(440_000 / 6);
    env.sim.set_faults(FaultPlan {
        cut_after_chunks: Some(0),
        times: Some(1),
        ..Default::default()
    });
    let before = env.balance(W1).balance;
    let body = json!({"messages": [{"role": "user", "content": prompt}], "max_tokens": 200,
                      "stream": true, "memory_read": false, "memory_write": false});
    let res = env.chat(&key, body).await;
    assert_eq!(res.status, StatusCode::OK);
    let events = sse_data(&res.body);
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_error");
    // No usage was seen: the prompt at the bound the hold was priced at, nothing generated.
    let want = flash.cost(prompt.len() as u64 + 16, 0);
    charged_once(&env, &request_id(&res.headers), before, want, 502).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_before_the_first_frame_pays_the_prompt() {
    let mut knobs = fast_knobs();
    knobs.ttft = Duration::from_secs(2); // the model "thinks" after its headers
    let env = Env::with_knobs(knobs, |_| {}).await;
    let flash = price(&env, "gemini-2.5-flash");
    let key = env.funded_key(W1, 1_000_000).await;
    let before = env.balance(W1).balance;
    let res = env
        .open(
            Method::POST,
            "/v1/chat/completions",
            &[("x-api-key", key.as_str())],
            plain(true, json!({})).to_string(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let id = request_id(res.headers());
    let mut body = res.into_body();
    // Nothing arrives within the first 300 ms; the client gives up.
    let first = tokio::time::timeout(Duration::from_millis(300), body.frame()).await;
    assert!(first.is_err(), "no frame before the first token");
    drop(body);
    let want = flash.cost(PLAIN_BOUND, 0);
    charged_once(&env, &id, before, want, 499).await;
    env.stop().await;
}
