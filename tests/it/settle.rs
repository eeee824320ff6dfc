//! Money in and paid streams against clients that leave, gateways that die and payers with no
//! money: an idempotent answer is replayed only to the holder of the payment and never with its
//! secrets; a settlement whose client left is credited all the same; a kill -9 after the transfer
//! is completed at the next start, exactly once; an unfunded payer gets no free stream.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use vectorway::config::known_network;
use vectorway::payments::sign::Signer;
use vectorway::payments::unix_now;
use vectorway::simulate::Simulator;
use vectorway::simulate::facilitator::FacilitatorFaults;
use vectorway::storage::intents::{IntentPurpose, IntentRecord, IntentState};
use vectorway::storage::{LedgerKind, Store};
use vectorway::wallet::Wallet;

use crate::harness::{Binary, Env, call, eventually, fast_knobs, sse_data};

const PAY_TO: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

pub(crate) fn x_payment(s: &Signer, value: u64) -> String {
    let net = known_network("base-sepolia").unwrap();
    let p = s
        .pay(&net, PAY_TO.parse().unwrap(), value, unix_now(), 300)
        .unwrap();
    p.x_payment().unwrap().to_str().unwrap().to_string()
}

fn settle_fault(delay_ms: Option<u64>, after_ms: Option<u64>) -> FacilitatorFaults {
    FacilitatorFaults {
        endpoint: Some("settle".into()),
        delay_ms,
        after_ms,
        times: Some(1),
        ..FacilitatorFaults::default()
    }
}

/// The top-ups in a running gateway's ledger (either backend).
async fn topups_live(store: &vectorway::storage::Storage, w: &Wallet) -> Vec<i64> {
    store
        .ledger_of(w)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == LedgerKind::Topup)
        .map(|e| e.credits)
        .collect()
}

fn topups(store: &Store, w: &Wallet) -> Vec<i64> {
    store
        .ledger_of(w)
        .map(|e| e.unwrap())
        .filter(|e| e.kind == LedgerKind::Topup)
        .map(|e| e.credits)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_onboarding_replay_needs_the_payment_and_never_carries_secrets() {
    let env = Env::start().await;
    let s = Signer::random().unwrap();
    let me = vectorway::crypto::to_checksum(&s.address());
    let body = json!({"wallet_address": me, "credits": 1_000_000}).to_string();
    let key = ("idempotency-key", "onboard-1");
    let pay = x_payment(&s, 1_000_000);
    let first = env
        .send(
            Method::POST,
            "/v1/auth/agent-onboard",
            &[key, ("x-payment", &pay)],
            body.clone(),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    let raw_key = first.json()["api_key"].as_str().unwrap().to_string();
    assert!(raw_key.starts_with("vw_"));
    // The attack: the same key and body with no payment and no credentials. It must not replay.
    let stranger = env
        .send(Method::POST, "/v1/auth/agent-onboard", &[key], body.clone())
        .await;
    assert_eq!(stranger.status, StatusCode::PAYMENT_REQUIRED);
    assert!(!stranger.headers.contains_key("idempotent-replayed"));
    assert!(!String::from_utf8_lossy(&stranger.body).contains(&raw_key));
    // Another payer's payment with the same key and body is a different scope: no replay either.
    let other = Signer::random().unwrap();
    let theirs = env
        .send(
            Method::POST,
            "/v1/auth/agent-onboard",
            &[key, ("x-payment", &x_payment(&other, 1_000_000))],
            body.clone(),
        )
        .await;
    assert!(!theirs.headers.contains_key("idempotent-replayed"));
    assert!(!String::from_utf8_lossy(&theirs.body).contains(&raw_key));
    // The payer's own retry replays the answer, secrets redacted and said to be.
    let replay = env
        .send(
            Method::POST,
            "/v1/auth/agent-onboard",
            &[key, ("x-payment", &pay)],
            body,
        )
        .await;
    assert_eq!(replay.status, StatusCode::OK);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(replay.headers["idempotent-redacted"], "tokens, api_key");
    let v = replay.json();
    assert_eq!(
        (v["api_key"].clone(), v["tokens"].clone()),
        (Value::Null, Value::Null)
    );
    assert_eq!(v["redacted"], json!(["tokens", "api_key"]));
    assert_eq!(v["credits"], 1_000_000);
    assert!(!String::from_utf8_lossy(&replay.body).contains(&raw_key));
    // The payment was credited once, whatever the replays.
    assert_eq!(
        topups_live(&env.gw().state.store, &s.address()).await,
        vec![1_000_000]
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_key_is_never_replayed() {
    let env = Env::start().await;
    let secret = env.gw().state.admin_secret.clone();
    let headers = [
        ("x-admin-secret", secret.as_str()),
        ("idempotency-key", "k1"),
    ];
    let create = || {
        env.send(
            Method::POST,
            "/admin/keys",
            &headers,
            json!({"wallet": crate::harness::W1}).to_string(),
        )
    };
    let res = create().await;
    assert_eq!(res.status, StatusCode::CREATED);
    let raw = res.json()["api_key"].as_str().unwrap().to_string();
    let again = create().await;
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.json()["api_key"], Value::Null);
    assert!(!String::from_utf8_lossy(&again.body).contains(&raw));
    env.stop().await;
}

/// Sends a purchase and drops the connection after `leave_after`.
async fn purchase_and_leave(env: &Env, pay: &str, body: &str, key: &str, leave_after: Duration) {
    let (url, pay, body, key) = (
        env.url("/v1/topup"),
        pay.to_string(),
        body.to_string(),
        key.to_string(),
    );
    let task = tokio::spawn(async move {
        call(
            Method::POST,
            &url,
            &[
                ("x-payment", &pay),
                ("idempotency-key", &key),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await
    });
    tokio::time::sleep(leave_after).await;
    task.abort(); // the client goes away: hyper drops the request future
    let _ = task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_in_whose_client_leaves_at_any_point_is_settled_and_credited_exactly_once() {
    let env = Env::start().await;
    let body = json!({"amount": 1}).to_string();
    // The settlement takes 300 ms; clients leave before, during and after it.
    for (i, leave_ms) in [0u64, 1, 3, 10, 30, 100, 250, 320, 600]
        .into_iter()
        .enumerate()
    {
        let s = Signer::random().unwrap();
        let w = s.address();
        env.sim
            .set_facilitator_faults(settle_fault(Some(300), None));
        let pay = x_payment(&s, 1_000_000);
        let key = format!("leave-{i}");
        purchase_and_leave(&env, &pay, &body, &key, Duration::from_millis(leave_ms)).await;
        // Whatever instant the client left at: money moved ⇔ credits granted, once. (A request
        // the client sent before leaving may still be on its way in: give it time to arrive.)
        let state = env.gw().state.clone();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            eventually(Duration::from_secs(10), || state.effects.running() == 0).await,
            "effects finish"
        );
        env.sim.set_facilitator_faults(FacilitatorFaults::default());
        let moved = 1_000_000_000 - env.sim.balance(&w);
        let credited: i64 = topups_live(&state.store, &w).await.iter().sum();
        assert_eq!(moved, credited as u64, "leave after {leave_ms} ms");
        assert!(
            state.store.intents().await.unwrap().is_empty(),
            "no intent left"
        );
        // The key is not stuck: a retry is answered (a replay, or the payment runs now); "still
        // in progress" may only last while the first request is running (it may have arrived
        // late, and may wait out its settlement: up to the settle time-out and pending wait).
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut idle = 0;
        let retry = loop {
            let r = env
                .send(
                    Method::POST,
                    "/v1/topup",
                    &[("x-payment", &pay), ("idempotency-key", &key)],
                    body.clone(),
                )
                .await;
            if r.code() != "idempotency_conflict" {
                break r;
            }
            // A claim with no request behind it (nothing running) answers 409 until it expires:
            // that is the bug this guards against. (The first request may end between the
            // answer and this look, hence more than one idle answer in a row.)
            idle = if state.effects.running() == 0 {
                idle + 1
            } else {
                0
            };
            assert!(
                idle < 3 && std::time::Instant::now() < deadline,
                "leave after {leave_ms} ms: the key stays claimed: {:?}",
                String::from_utf8_lossy(&r.body)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            retry.status == StatusCode::OK || retry.status == StatusCode::CONFLICT,
            "leave after {leave_ms} ms: {} {:?}",
            retry.status,
            retry.body
        );
        if retry.status == StatusCode::CONFLICT {
            // Only a spent nonce may refuse it, never an abandoned claim.
            assert_eq!(
                retry.code(),
                "x402_nonce_reused",
                "{leave_ms} ms: {:?}",
                String::from_utf8_lossy(&retry.body)
            );
        }
        let credited: i64 = topups_live(&state.store, &w).await.iter().sum();
        assert_eq!(
            credited, 1_000_000,
            "leave after {leave_ms} ms: credited once"
        );
        assert_eq!(1_000_000_000 - env.sim.balance(&w), 1_000_000);
    }
    env.stop().await;
}

/// A top-up whose facilitator moves the money and never answers in time, cut off by a SIGKILL
/// of the gateway between the transfer and the credit: returns the payer (owed 2,000,000).
async fn topup_killed_after_the_transfer(sim: &Simulator, dir: &std::path::Path) -> Wallet {
    // The gateway waits long for the facilitator: only the kill may end the wait.
    let patient = [("VECTORWAY_X402__SETTLE_TIMEOUT_MS", "120000")];
    let mut gw = Binary::start(dir, &sim.base_url(), &patient);
    let s = Signer::random().unwrap();
    // The facilitator moves the money, then its answer never comes back in time.
    sim.set_facilitator_faults(settle_fault(None, Some(60_000)));
    let url = format!("{}/v1/topup", gw.base);
    let pay = x_payment(&s, 2_000_000);
    let waiting = tokio::spawn(async move {
        call(
            Method::POST,
            &url,
            &[("x-payment", &pay)],
            json!({"amount": 2}).to_string(),
        )
        .await
    });
    assert!(
        eventually(Duration::from_secs(10), || sim.facilitator_stats().settled
            == 1)
        .await,
        "the transfer happened"
    );
    gw.kill(); // SIGKILL between the transfer and the credit
    assert!(waiting.await.unwrap().is_none(), "the client got no answer");
    s.address()
}

/// Waits (up to `within`) until the operator's view of `w`'s credits is `credits`.
async fn wait_credits(gw: &Binary, w: Wallet, credits: u64, within: Duration, what: &str) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let now = call(
            Method::GET,
            &format!("{}/admin/balance?wallet={w}", gw.base),
            &[("x-admin-secret", &gw.secret)],
            "",
        )
        .await
        .map(|r| r.json()["credits"].as_u64().unwrap_or(0));
        if now == Some(credits) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {now:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_the_transfer_is_credited_at_the_next_start_exactly_once() {
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), fast_knobs(), None)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let w = topup_killed_after_the_transfer(&sim, dir.path()).await;
    {
        let store = Store::open(dir.path()).unwrap();
        assert!(
            topups(&store, &w).is_empty(),
            "not credited before the crash"
        );
        let open = store.intents().unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].state, IntentState::Pending);
        assert_eq!(open[0].payer, w);
    }
    sim.set_facilitator_faults(FacilitatorFaults::default());
    let mut gw = Binary::start(dir.path(), &sim.base_url(), &[]);
    wait_credits(
        &gw,
        w,
        2_000_000,
        Duration::from_secs(15),
        "credited after restart",
    )
    .await;
    assert_eq!(sim.facilitator_stats().settled, 1, "no second transfer");
    let status = call(Method::GET, &format!("{}/status", gw.base), &[], "")
        .await
        .unwrap()
        .json();
    assert_eq!(status["x402"]["settlements"]["open_intents"], 0);
    // Another crash and start: nothing is credited twice.
    gw.kill();
    let gw = Binary::start(dir.path(), &sim.base_url(), &[]);
    // Recovery has nothing left to do; give a double credit the time to show if it would.
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_credits(&gw, w, 2_000_000, Duration::ZERO, "not credited twice").await;
    drop(gw);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(topups(&store, &w), vec![2_000_000]);
    assert!(store.intents().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_intent_whose_credit_was_written_is_not_credited_again() {
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), fast_knobs(), None)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = Signer::random().unwrap();
    let w = s.address();
    let mut gw = Binary::start(dir.path(), &sim.base_url(), &[]);
    let res = call(
        Method::POST,
        &format!("{}/v1/topup", gw.base),
        &[("x-payment", &x_payment(&s, 1_000_000))],
        json!({"amount": 1}).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(res.status, StatusCode::OK);
    gw.kill();
    // The crash came after the credit and before the intent was forgotten.
    let (tx, left) = {
        let store = Store::open(dir.path()).unwrap();
        // The top-up's own intent is still there when the kill came before its removal
        // reached the disk: recovery finishes it too.
        let left = store.intents().unwrap().len() as u64;
        let entry = store.ledger_of(&w).next().unwrap().unwrap();
        let tx = entry.reference.clone().unwrap();
        store
            .put_intent_durable(&IntentRecord {
                id: "ab".repeat(40),
                payer: w,
                paid: 1_000_000,
                valid_before: unix_now() + 300,
                request: Value::Null,
                network: "base-sepolia".into(),
                purpose: IntentPurpose::Credit {
                    kind: LedgerKind::Topup,
                    note: "x402 topup".into(),
                    to: None,
                },
                state: IntentState::Settled {
                    transaction: tx.clone(),
                },
                created_ms: entry.ts_ms - 5,
            })
            .await
            .unwrap();
        (tx, left)
    };
    let gw = Binary::start(dir.path(), &sim.base_url(), &[]);
    let dir_path = dir.path().to_path_buf();
    gw.wait_counter("vectorway_x402_intents_recovered_total", 1 + left)
        .await;
    drop(gw);
    let store = Store::open(&dir_path).unwrap();
    assert!(
        store.intents().unwrap().is_empty(),
        "the intent is finished"
    );
    let all: Vec<_> = store.ledger_of(&w).map(|e| e.unwrap()).collect();
    assert_eq!(
        topups(&store, &w),
        vec![1_000_000],
        "credited once ({tx}): {all:?}"
    );
}

fn stream_ask() -> Value {
    json!({"messages": [{"role": "user", "content": "stream for free?"}], "max_tokens": 200,
           "stream": true})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfunded_payer_gets_no_stream() {
    let env = Env::start().await;
    let quote: u64 = env
        .send(
            Method::POST,
            "/v1/chat/completions",
            &[],
            stream_ask().to_string(),
        )
        .await
        .json()["accepts"][0]["maxAmountRequired"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let s = Signer::random().unwrap();
    env.sim.set_balance(&s.address(), 0);
    let res = env
        .send(
            Method::POST,
            "/v1/chat/completions",
            &[("x-payment", &x_payment(&s, quote))],
            stream_ask().to_string(),
        )
        .await;
    assert_eq!(res.status, StatusCode::PAYMENT_REQUIRED, "{:?}", res.body);
    assert!(sse_data(&res.body).is_empty(), "not one frame");
    assert_eq!(res.json()["error"], "insufficient_funds");
    assert_eq!(env.sim.facilitator_stats().settle, 0, "nothing to settle");
    assert_eq!(env.sim.generation_count(), 0, "the model was never called");
    // Funded later, the same signed payment streams (its nonce was given back).
    env.sim.set_balance(&s.address(), quote);
    let pay = x_payment(&s, quote);
    let res = env
        .send(
            Method::POST,
            "/v1/chat/completions",
            &[("x-payment", &pay)],
            stream_ask().to_string(),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(sse_data(&res.body).iter().any(|e| e == "[DONE]"));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payer_whose_stream_failed_to_settle_streams_nothing_until_a_payment_settles() {
    let env = Env::start().await;
    let s = Signer::random().unwrap();
    let quote = 1_000_000;
    // `/verify` passes, then the settlement is refused (the payer moved the money away).
    env.sim.set_facilitator_faults(FacilitatorFaults {
        endpoint: Some("settle".into()),
        status: Some(200),
        body: Some(r#"{"success":false,"errorReason":"insufficient_funds","transaction":"","network":"base-sepolia"}"#.into()),
        times: Some(1),
        ..FacilitatorFaults::default()
    });
    let res = env
        .send(
            Method::POST,
            "/v1/chat/completions",
            &[("x-payment", &x_payment(&s, quote))],
            stream_ask().to_string(),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(!sse_data(&res.body).iter().any(|e| e == "[DONE]"));
    let status = env.send(Method::GET, "/status", &[], "").await.json();
    assert_eq!(status["x402"]["settlements"]["blocked_payers"], 1);
    // The next stream is refused before its first byte.
    let res = env
        .send(
            Method::POST,
            "/v1/chat/completions",
            &[("x-payment", &x_payment(&s, quote))],
            stream_ask().to_string(),
        )
        .await;
    assert_eq!(res.status, StatusCode::PAYMENT_REQUIRED, "{:?}", res.body);
    assert!(sse_data(&res.body).is_empty());
    // A unary call settles: the payer may stream again.
    let mut unary = stream_ask();
    unary["stream"] = json!(false);
    let res = env
        .send(
            Method::POST,
            "/v1/chat/completions",
            &[("x-payment", &x_payment(&s, quote))],
            unary.to_string(),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{:?}", res.body);
    let res = env
        .send(
            Method::POST,
            "/v1/chat/completions",
            &[("x-payment", &x_payment(&s, quote))],
            stream_ask().to_string(),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(sse_data(&res.body).iter().any(|e| e == "[DONE]"));
    env.stop().await;
}

/// A paid call that kept all it was paid, killed right after its answer: whatever the crash left
/// of its intent says so, and the restart refunds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_kept_everything_is_not_refunded_after_a_crash() {
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), fast_knobs(), None)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Binary::start(dir.path(), &sim.base_url(), &[]);
    let s = Signer::random().unwrap();
    let w = s.address();
    let ask = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8,
        "memory_read": false, "memory_write": false});
    // The quote is the 1,000-credit floor: the call keeps all of it, the change is 0.
    let res = call(
        Method::POST,
        &format!("{}/v1/chat/completions", gw.base),
        &[("x-payment", &x_payment(&s, 1_000))],
        ask.to_string(),
    )
    .await
    .unwrap();
    assert_eq!(res.status, StatusCode::OK, "{:?}", res.body);
    assert_eq!(res.json()["usage"]["usd_cost"], "0.001000");
    gw.kill();
    let left = {
        let store = Store::open(dir.path()).unwrap();
        let intents = store.intents().unwrap();
        for i in &intents {
            // Whatever is left must be the settled call with what it kept, never the bare
            // "pending, kept unknown" record that recovery would refund in full.
            assert!(matches!(i.state, IntentState::Settled { .. }), "{i:?}");
            assert!(
                matches!(
                    i.purpose,
                    IntentPurpose::Call {
                        kept: Some(1_000),
                        ..
                    }
                ),
                "{i:?}"
            );
        }
        intents.len() as u64
    };
    let gw = Binary::start(dir.path(), &sim.base_url(), &[]);
    gw.wait_counter("vectorway_x402_intents_recovered_total", left)
        .await;
    drop(gw);
    let store = Store::open(dir.path()).unwrap();
    let refunds: Vec<_> = store
        .ledger_of(&w)
        .map(|e| e.unwrap())
        .filter(|e| e.kind == LedgerKind::Refund)
        .collect();
    assert!(refunds.is_empty(), "nothing to refund: {refunds:?}");
    assert!(store.intents().unwrap().is_empty());
    assert_eq!(sim.facilitator_stats().settled, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intent_recovery_cannot_resolve_at_start_is_resolved_later_in_the_same_run() {
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), fast_knobs(), None)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let w = topup_killed_after_the_transfer(&sim, dir.path()).await;
    // At the next start the facilitator fails every call: start-up recovery cannot tell.
    sim.set_facilitator_faults(FacilitatorFaults {
        status: Some(500),
        ..FacilitatorFaults::default()
    });
    let asked = sim.facilitator_stats().verify;
    let gw = Binary::start(dir.path(), &sim.base_url(), &[]);
    let open = |base: String| async move {
        call(Method::GET, &format!("{base}/status"), &[], "")
            .await
            .map(|r| r.json()["x402"]["settlements"]["open_intents"].clone())
    };
    assert!(
        eventually(Duration::from_secs(10), || sim.facilitator_stats().verify
            > asked)
        .await,
        "start-up recovery asked the facilitator"
    );
    // Start-up recovery has finished with the intent kept (its outcome counted on /metrics).
    gw.wait_counter(
        "vectorway_x402_intents_recovered_total{outcome=\"kept\"}",
        1,
    )
    .await;
    assert_eq!(
        open(gw.base.clone()).await,
        Some(json!(1)),
        "kept, not lost"
    );
    // The facilitator recovers. No restart: the kept intent is looked up again in the
    // background of this run and credited, once.
    sim.set_facilitator_faults(FacilitatorFaults::default());
    wait_credits(
        &gw,
        w,
        2_000_000,
        Duration::from_secs(30),
        "credited in the background, without a restart",
    )
    .await;
    assert_eq!(sim.facilitator_stats().settled, 1, "no second transfer");
    assert_eq!(open(gw.base.clone()).await, Some(json!(0)));
    drop(gw);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(topups(&store, &w), vec![2_000_000]);
}

async fn metrics_of(gw: &Binary) -> String {
    call(
        Method::GET,
        &format!("{}/metrics", gw.base),
        &[("authorization", &format!("Bearer {}", gw.secret))],
        "",
    )
    .await
    .map(|r| String::from_utf8_lossy(&r.body).into_owned())
    .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_settlement_is_refused_blocks_its_payer_once() {
    // Its own process: the metrics below are this payment's alone.
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), fast_knobs(), None)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gw = Binary::start(dir.path(), &sim.base_url(), &[]);
    let s = Signer::random().unwrap();
    sim.set_facilitator_faults(FacilitatorFaults {
        endpoint: Some("settle".into()),
        status: Some(200),
        body: Some(r#"{"success":false,"errorReason":"insufficient_funds","transaction":"","network":"base-sepolia"}"#.into()),
        times: Some(1),
        ..FacilitatorFaults::default()
    });
    let res = call(
        Method::POST,
        &format!("{}/v1/chat/completions", gw.base),
        &[("x-payment", &x_payment(&s, 1_000_000))],
        stream_ask().to_string(),
    )
    .await
    .unwrap();
    assert_eq!(res.status, StatusCode::OK);
    assert!(!sse_data(&res.body).iter().any(|e| e == "[DONE]"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = metrics_of(&gw).await;
        if text.contains("vectorway_x402_unpaid_streams_total 1") {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "the loss is counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The intent is ended (its effect ran) and the refusal was noted once: one block.
    let line = text
        .lines()
        .find(|l| l.starts_with("vectorway_x402_payers_blocked_total"))
        .unwrap_or_default()
        .to_string();
    assert_eq!(line, "vectorway_x402_payers_blocked_total 1", "{text}");
}
