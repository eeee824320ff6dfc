//! x402 when the facilitator is slow, down or failing: the client never gets an unpaid unary
//! answer (a stream ends with an error event instead of `[DONE]`), the payer's credits are not
//! touched, and the gateway keeps a payment's nonce only when money may have moved: a payment
//! the facilitator certainly did not settle can be sent again as it is.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use vectorway::config::{SimulatorKnobs, known_network};
use vectorway::payments::sign::Signer;
use vectorway::payments::unix_now;
use vectorway::simulate::Simulator;
use vectorway::simulate::facilitator::FacilitatorFaults;
use vectorway::storage::LedgerKind;
use vectorway::wallet::Wallet;

use crate::harness::{Env, Resp, eventually, fast_knobs, sse_data};

const PAY_TO: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

fn ask(stream: bool) -> Value {
    json!({"messages": [{"role": "user", "content": "pay per call"}], "max_tokens": 2000, "stream": stream,
           "stream_options": {"include_usage": true}})
}

async fn quote(env: &Env) -> u64 {
    let res = env
        .send(
            Method::POST,
            "/v1/chat/completions",
            &[],
            ask(false).to_string(),
        )
        .await;
    assert_eq!(res.status, StatusCode::PAYMENT_REQUIRED);
    res.json()["accepts"][0]["maxAmountRequired"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// A fresh `X-PAYMENT` for `value` atomic USDC.
fn payment(s: &Signer, value: u64) -> String {
    let net = known_network("base-sepolia").unwrap();
    let p = s
        .pay(&net, PAY_TO.parse().unwrap(), value, unix_now(), 300)
        .unwrap();
    p.x_payment().unwrap().to_str().unwrap().to_string()
}

async fn paid(env: &Env, header: &str, body: &Value) -> Resp {
    env.send(
        Method::POST,
        "/v1/chat/completions",
        &[("x-payment", header)],
        body.to_string(),
    )
    .await
}

/// The payer's credits were never touched: no ledger entry, nothing held.
async fn untouched(env: &Env, payer: &Wallet) {
    assert!(
        env.ledger(&payer.to_string()).await.is_empty(),
        "no credits moved"
    );
    let b = env.balance(&payer.to_string());
    assert_eq!((b.balance, b.held), (0, 0));
}

/// A unary answer that was withheld: the status and code, and no choices.
fn withheld(res: &Resp, status: StatusCode, code: &str) {
    assert_eq!(res.status, status, "{}", String::from_utf8_lossy(&res.body));
    let v = res.json();
    assert!(v.get("choices").is_none(), "no answer without payment");
    let got = v["error"]["code"].as_str().or(v["error"].as_str());
    assert_eq!(got, Some(code), "{v}");
}

/// A stream whose settlement failed: content flowed, then an error event and no `[DONE]`.
fn cut_with(res: &Resp, code: &str) {
    assert_eq!(res.status, StatusCode::OK);
    let events = sse_data(&res.body);
    assert!(events.iter().any(|e| e.contains("\"content\"")));
    assert!(
        !events.iter().any(|e| e == "[DONE]"),
        "no [DONE] without payment"
    );
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], code);
}

fn settle_fault(
    status: Option<u16>,
    body: Option<&str>,
    delay_ms: Option<u64>,
) -> FacilitatorFaults {
    FacilitatorFaults {
        endpoint: Some("settle".into()),
        status,
        body: body.map(str::to_string),
        delay_ms,
        after_ms: None,
        times: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_facilitator_delays_the_answer_and_settles_once() {
    let env = Env::start().await;
    let q = quote(&env).await;
    let s = Signer::random().unwrap();
    let usdc = env.sim.balance(&s.address());
    env.sim
        .set_facilitator_faults(settle_fault(None, None, Some(400)));
    let res = paid(&env, &payment(&s, q), &ask(false)).await;
    assert_eq!(
        res.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&res.body)
    );
    assert!(res.headers.contains_key("x-payment-response"));
    let res = paid(&env, &payment(&s, q), &ask(true)).await;
    let events = sse_data(&res.body);
    assert!(events.iter().any(|e| e == "[DONE]"));
    let stats = env.sim.facilitator_stats();
    assert_eq!(
        (stats.settle, stats.settled),
        (2, 2),
        "one settlement per call"
    );
    assert_eq!(usdc - env.sim.balance(&s.address()), 2 * q);
    let payer = s.address().to_string();
    // The stream's change is credited in the background: wait for it (a balance above 0 may
    // be the unary call's change alone), then check that nothing is credited twice.
    let refunds = || async {
        env.ledger(&payer)
            .await
            .into_iter()
            .filter(|e| e.kind == LedgerKind::Refund)
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while refunds().await < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(refunds().await, 2, "change credited once per call");
    env.stop().await;
}

/// Issue 14 (10): a unary x402 call whose client leaves while the settlement runs keeps its
/// payment; its usage event must say so (499 with what was kept), as the ledger's refund does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_during_settlement_is_recorded_with_what_was_kept() {
    let env = Env::start().await;
    let q = quote(&env).await;
    let s = Signer::random().unwrap();
    env.sim
        .set_facilitator_faults(settle_fault(None, None, Some(1_000)));
    let (client, url, header) = (
        env.client.clone(),
        env.url("/v1/chat/completions"),
        payment(&s, q),
    );
    let call = tokio::spawn(async move {
        let req = http::Request::post(url)
            .header("x-payment", header)
            .body(http_body_util::Full::new(bytes::Bytes::from(
                ask(false).to_string(),
            )))
            .unwrap();
        let _ = client.request(req).await;
    });
    // The answer takes milliseconds, the settlement a second: the client leaves in between.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.sim.generation_count(), 1, "the answer was generated");
    call.abort();
    let payer = s.address().to_string();
    assert!(
        eventually(Duration::from_secs(5), || env.balance(&payer).balance > 0).await,
        "the settlement finished and the change was credited"
    );
    let refund: i64 = env
        .ledger(&payer)
        .await
        .iter()
        .filter(|e| e.kind == LedgerKind::Refund)
        .map(|e| e.credits)
        .sum();
    let kept = q - u64::try_from(refund).unwrap();
    assert!(kept >= 1_000, "kept {kept} of {q}");
    let mut events = Vec::new();
    for _ in 0..100 {
        events = env.usage(&payer).await;
        if !events.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(events.len(), 1, "one usage event: {events:?}");
    let e = &events[0];
    assert_eq!(
        (e.status, e.credits),
        (499, kept),
        "usage agrees with the ledger"
    );
    let usd = e.usd_cost.as_deref().unwrap();
    assert_eq!(
        vectorway::billing::pricing::parse_usd_micros(usd).unwrap(),
        kept
    );
    assert!(e.prompt_tokens > 0 && e.completion_tokens > 0);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_facilitator_past_its_timeout_withholds_the_answer_and_keeps_the_nonce() {
    let env = Env::with_knobs(fast_knobs(), |c| {
        c.x402.settle_timeout = Duration::from_millis(200);
        c.x402.settle_retries = 1;
        c.x402.settle_pending_wait = Duration::from_millis(300);
    })
    .await;
    let q = quote(&env).await;
    let s = Signer::random().unwrap();
    let usdc = env.sim.balance(&s.address());
    // Every attempt outlives the timeout (and then fails, so no money moves behind our back).
    env.sim
        .set_facilitator_faults(settle_fault(Some(503), None, Some(1_000)));
    let header = payment(&s, q);
    let res = paid(&env, &header, &ask(false)).await;
    // The gateway cannot know whether the payment went through (the facilitator was asked
    // again, and its answers came too late too): pending, not "failed", and the nonce stays
    // spent.
    withheld(&res, StatusCode::GATEWAY_TIMEOUT, "x402_settlement_pending");
    let res = paid(&env, &header, &ask(false)).await;
    withheld(&res, StatusCode::CONFLICT, "x402_nonce_reused");
    let res = paid(&env, &payment(&s, q), &ask(true)).await;
    cut_with(&res, "x402_settlement_pending");
    tokio::time::sleep(Duration::from_millis(1_200)).await; // the simulator's delayed answers
    assert_eq!(env.sim.facilitator_stats().settled, 0);
    assert_eq!(env.sim.balance(&s.address()), usdc, "no USDC moved");
    untouched(&env, &s.address()).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_facilitator_that_is_down_withholds_the_answer_and_burns_no_nonce() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let env = Env::with_knobs(fast_knobs(), |c| {
        c.x402.facilitator_url = Some(format!("http://{dead}/facilitator"));
    })
    .await;
    let q = quote(&env).await;
    let s = Signer::random().unwrap();
    let header = payment(&s, q);
    let res = paid(&env, &header, &ask(false)).await;
    withheld(&res, StatusCode::BAD_GATEWAY, "x402_facilitator_error");
    // Nothing reached the facilitator: the same signed payment is still good.
    let res = paid(&env, &header, &ask(false)).await;
    withheld(&res, StatusCode::BAD_GATEWAY, "x402_facilitator_error");
    // A stream is not served at all while the facilitator cannot vouch for the payment.
    let streamed = payment(&s, q);
    let res = paid(&env, &streamed, &ask(true)).await;
    assert_eq!(res.status, StatusCode::BAD_GATEWAY);
    assert!(sse_data(&res.body).is_empty(), "not one frame");
    assert_eq!(res.code(), "x402_facilitator_error");
    untouched(&env, &s.address()).await;
    // The facilitator comes back (on the same address): the first payment goes through, once.
    let knobs = SimulatorKnobs {
        ttft: Duration::ZERO,
        tokens_per_sec: 1_000,
        chunk_tokens: 4,
        reply_tokens: 8,
    };
    let back = Simulator::start(dead, knobs, None)
        .await
        .expect("the facilitator's port was taken meanwhile");
    let res = paid(&env, &header, &ask(false)).await;
    assert_eq!(
        res.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&res.body)
    );
    assert_eq!(
        paid(&env, &header, &ask(false)).await.status,
        StatusCode::CONFLICT
    );
    // The refused stream's payment was given back: it pays for a call now.
    let res = paid(&env, &streamed, &ask(false)).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(back.facilitator_stats().settled, 2);
    back.stop().await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_settlement_withholds_the_answer_and_keeps_nothing() {
    let env = Env::with_knobs(fast_knobs(), |c| {
        c.x402.settle_pending_wait = Duration::from_millis(300);
    })
    .await;
    let q = quote(&env).await;
    let s = Signer::random().unwrap();
    let usdc = env.sim.balance(&s.address());
    // 500 on every attempt: the outcome is unknown (pending, not failed), so the nonce stays
    // spent.
    env.sim
        .set_facilitator_faults(settle_fault(Some(500), None, None));
    let header = payment(&s, q);
    withheld(
        &paid(&env, &header, &ask(false)).await,
        StatusCode::GATEWAY_TIMEOUT,
        "x402_settlement_pending",
    );
    withheld(
        &paid(&env, &header, &ask(false)).await,
        StatusCode::CONFLICT,
        "x402_nonce_reused",
    );
    cut_with(
        &paid(&env, &payment(&s, q), &ask(true)).await,
        "x402_settlement_pending",
    );
    // An explicit refusal that rules a transfer out: a fresh 402, and the payment stays usable.
    let failed = r#"{"success":false,"errorReason":"transaction_failed","transaction":"","network":"base-sepolia"}"#;
    env.sim
        .set_facilitator_faults(settle_fault(Some(200), Some(failed), None));
    let header = payment(&s, q);
    let res = paid(&env, &header, &ask(false)).await;
    withheld(&res, StatusCode::PAYMENT_REQUIRED, "transaction_failed");
    assert!(
        res.headers.contains_key("payment-required"),
        "fresh requirements"
    );
    // `s`'s settlement was refused above: `s` streams nothing more until a payment settles.
    let blocked = paid(&env, &payment(&s, q), &ask(true)).await;
    assert_eq!(blocked.status, StatusCode::PAYMENT_REQUIRED);
    assert!(sse_data(&blocked.body).is_empty());
    let s2 = Signer::random().unwrap();
    cut_with(
        &paid(&env, &payment(&s2, q), &ask(true)).await,
        "x402_settlement_failed",
    );
    assert_eq!(env.sim.facilitator_stats().settled, 0);
    assert_eq!(env.sim.balance(&s.address()), usdc);
    untouched(&env, &s.address()).await;
    // Once the facilitator settles again, the refused payment is served, and paid once.
    env.sim.set_facilitator_faults(FacilitatorFaults::default());
    let res = paid(&env, &header, &ask(false)).await;
    assert_eq!(
        res.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&res.body)
    );
    assert_eq!(env.sim.facilitator_stats().settled, 1);
    assert_eq!(usdc - env.sim.balance(&s.address()), q);
    // Insufficient funds on a top-up: refused, then the same payment works once funded.
    let t = Signer::random().unwrap();
    env.sim.set_balance(&t.address(), 0);
    let topup = payment(&t, 1_000_000);
    let body = json!({"amount": 1}).to_string();
    let headers = [("x-payment", topup.as_str())];
    let send = || env.send(Method::POST, "/v1/topup", &headers, body.clone());
    let res = send().await;
    assert_eq!(res.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(res.json()["error"], "insufficient_funds");
    untouched(&env, &t.address()).await;
    env.sim.set_balance(&t.address(), 5_000_000);
    let res = send().await;
    assert_eq!(
        res.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&res.body)
    );
    assert_eq!(res.json()["credited_usdc"], 1_000_000);
    assert_eq!(
        send().await.status,
        StatusCode::CONFLICT,
        "paid once, served once"
    );
    env.stop().await;
}

async fn topup(env: &Env, header: &str) -> Resp {
    let body = json!({"amount": 1}).to_string();
    env.send(Method::POST, "/v1/topup", &[("x-payment", header)], body)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_payment_is_refused_before_settling_and_not_burned() {
    let env = Env::with_knobs(fast_knobs(), |c| {
        c.limits.runtime_per_min = 1;
        c.limits.control_per_min = 1;
    })
    .await;
    let q = quote(&env).await;
    let s = Signer::random().unwrap();
    let res = paid(&env, &payment(&s, q), &ask(false)).await;
    assert_eq!(
        res.status,
        StatusCode::OK,
        "the first call takes the minute's one token"
    );
    assert_eq!(
        topup(&env, &payment(&s, 1_000_000)).await.status,
        StatusCode::OK
    );
    let settled = env.sim.facilitator_stats().settle;
    // Over the limit: refused before settlement, and the same payment stays good for later.
    let header = payment(&s, q);
    for _ in 0..2 {
        let res = paid(&env, &header, &ask(false)).await;
        assert_eq!(
            res.status,
            StatusCode::TOO_MANY_REQUESTS,
            "not 409: the nonce was given back"
        );
    }
    let header = payment(&s, 1_000_000);
    for _ in 0..2 {
        assert_eq!(
            topup(&env, &header).await.status,
            StatusCode::TOO_MANY_REQUESTS
        );
    }
    assert_eq!(
        env.sim.facilitator_stats().settle,
        settled,
        "nothing was settled"
    );
    env.stop().await;
}
