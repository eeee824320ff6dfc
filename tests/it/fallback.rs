//! Model fallback lists (`models: [..]`): priced at the dearest, tried in order on retryable
//! upstream failures before the first byte, charged at the model that answered.

use http::StatusCode;
use serde_json::{Value, json};
use vectorway::simulate::FaultPlan;

use crate::harness::{Env, W1, sse_data};

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
