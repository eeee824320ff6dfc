//! Money under concurrency: holds never overdraw, and the ledger explains every credit.

use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use vectorway::storage::LedgerKind;

use crate::harness::{Env, W1, W2, fast_knobs, served_and_charged, spawn_chat};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests_against_twenty_worst_cases() {
    let mut knobs = fast_knobs();
    // Every request holds at the same time, even on a loaded machine where the 200 calls take
    // a while to start: a call that ended early would give its leftover back for more calls.
    knobs.ttft = Duration::from_secs(6);
    let env = Env::with_knobs(knobs, |_| {}).await;
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100});
    // Worst case: prompt 2 + 16 = 18 tokens, completion 100 → ceil((18·360000 + 100·3000000)/1e6) = 307.
    let model = env
        .gw()
        .state
        .config
        .prices
        .get("gemini-2.5-flash")
        .unwrap()
        .clone();
    let worst = model.cost(18, 100);
    assert_eq!(worst, 307);
    let key = env.funded_key(W1, 20 * worst).await;
    let mut calls = Vec::new();
    for _ in 0..200 {
        let url = env.url("/v1/chat/completions");
        calls.push(spawn_chat(&env.client, url, &key, &body));
    }
    let (served, charged) = served_and_charged(calls).await;
    assert!(served <= 20 && served > 0, "served {served}");
    let b = env.balance(W1);
    assert_eq!(b.held, 0);
    assert_eq!(
        b.balance,
        20 * worst - charged,
        "final balance = grants − recorded charges"
    );
    env.gw().state.billing.journal().sync().await;
    let ledger: i64 = env
        .gw()
        .state
        .store
        .ledger_of(&W1.parse().unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.credits)
        .sum();
    assert_eq!(ledger, b.balance as i64, "the ledger folds to the balance");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfunded_wallet_gets_402_before_any_upstream_call() {
    let env = Env::start().await;
    let key = env.funded_key(W2, 0).await;
    let res = env
        .chat(
            &key,
            json!({"messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(
        (res.status, res.code().as_str()),
        (StatusCode::PAYMENT_REQUIRED, "insufficient_credits")
    );
    assert_eq!(res.headers["x-should-retry"], "false");
    assert_eq!(env.sim.generation_count(), 0);
    // Money in is durable the moment it is acknowledged.
    let w = W2.parse().unwrap();
    env.gw()
        .state
        .billing
        .credit(w, 5, LedgerKind::Topup, None, None)
        .await
        .unwrap();
    let stored: i64 = env
        .gw()
        .state
        .store
        .ledger_of(&w)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.credits)
        .sum();
    assert_eq!(stored, 5);
    env.stop().await;
}
