//! x402 end to end: pay per call (unary and streaming), money in, and the attack suite. Every
//! refused payment must leave the simulator without a generation and without a settlement.

use base64::Engine;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use vectorway::config::known_network;
use vectorway::payments::sign::{DEV_KEY_1, Signer, high_s_twin, random_nonce};
use vectorway::payments::types::Uint256;
use vectorway::payments::unix_now;
use vectorway::storage::LedgerKind;
use vectorway::wallet::Wallet;

use crate::harness::{Env, Resp, eventually, sse_data};

const PAY_TO: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

pub(crate) fn ask(stream: bool) -> Value {
    // A worst case (2000 completion tokens) well above the $0.001 floor, so calls get change back.
    json!({"messages": [{"role": "user", "content": "pay per call"}], "max_tokens": 2000, "stream": stream,
           "stream_options": {"include_usage": true}})
}

/// The quote the server asks for this request (from its 402).
pub(crate) async fn quote(env: &Env, body: &Value) -> (u64, Resp) {
    let res = env
        .send(Method::POST, "/v1/chat/completions", &[], body.to_string())
        .await;
    assert_eq!(res.status, StatusCode::PAYMENT_REQUIRED);
    let v = res.json();
    assert_eq!(v["x402Version"], 1);
    let q = v["accepts"][0]["maxAmountRequired"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    (q, res)
}

fn sepolia() -> vectorway::config::Network {
    known_network("base-sepolia").unwrap()
}

pub(crate) fn payer() -> Signer {
    Signer::random().unwrap()
}

pub(crate) async fn paid(env: &Env, header: (&str, String), body: &Value) -> Resp {
    env.send(
        Method::POST,
        "/v1/chat/completions",
        &[(header.0, header.1.as_str())],
        body.to_string(),
    )
    .await
}

pub(crate) fn x_payment(s: &Signer, value: u64) -> (&'static str, String) {
    let p = s
        .pay(&sepolia(), PAY_TO.parse().unwrap(), value, unix_now(), 300)
        .unwrap();
    (
        "x-payment",
        p.x_payment().unwrap().to_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_pay_per_call_settles_and_credits_the_change() {
    let env = Env::start().await;
    let body = ask(false);
    let (q, challenge) = quote(&env, &body).await;
    assert!(q >= 1_000, "floored at $0.001");
    let required = challenge.headers["payment-required"].to_str().unwrap();
    let v2: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(required)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(v2["x402Version"], 2);
    assert_eq!(v2["accepts"][0]["network"], "eip155:84532");
    assert_eq!(v2["accepts"][0]["extra"]["name"], "USDC");
    let s = payer();
    for (i, header) in [x_payment(&s, q), {
        let p = s
            .pay(&sepolia(), PAY_TO.parse().unwrap(), q, unix_now(), 300)
            .unwrap();
        (
            "payment-signature",
            p.payment_signature().unwrap().to_str().unwrap().to_string(),
        )
    }]
    .into_iter()
    .enumerate()
    {
        let before = env.sim.balance(&s.address());
        let res = paid(&env, header.clone(), &body).await;
        assert_eq!(
            res.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&res.body)
        );
        let receipt_name = if header.0 == "x-payment" {
            "x-payment-response"
        } else {
            "payment-response"
        };
        let receipt: Value = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(res.headers[receipt_name].to_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(receipt["success"], true);
        // The call's usage event names the transaction its payment settled in.
        let payer_address = s.address().to_string();
        let newest = env.usage(&payer_address).await.remove(0);
        assert_eq!(
            newest.transaction.as_deref(),
            receipt["transaction"].as_str(),
            "{newest:?}"
        );
        assert_eq!(
            receipt["network"],
            if i == 0 {
                "base-sepolia"
            } else {
                "eip155:84532"
            }
        );
        assert_eq!(res.headers["x-payment-method"], "x402");
        assert_eq!(
            res.headers["x-payer-address"]
                .to_str()
                .unwrap()
                .to_lowercase(),
            s.address().to_string()
        );
        let u = &res.json()["usage"];
        assert!(u["credit_cost"].is_null());
        let usd = u["usd_cost"].as_str().unwrap();
        let kept = vectorway::billing::pricing::parse_usd_micros(usd).unwrap();
        assert!(kept >= 1_000 && kept < q, "kept {kept} of {q}");
        assert_eq!(
            before - env.sim.balance(&s.address()),
            q,
            "the full quote settled"
        );
        // The change comes back as credits on the payer's wallet.
        let change = q - kept;
        let credits = env.gw().state.billing.balance(&s.address()).balance;
        assert!(
            eventually(std::time::Duration::from_secs(2), || env
                .gw()
                .state
                .billing
                .balance(&s.address())
                .balance
                >= credits)
            .await
        );
        if i == 0 {
            assert_eq!(credits, change);
        }
    }
    let refunds: Vec<_> = env
        .gw()
        .state
        .store
        .ledger_of(&s.address())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == LedgerKind::Refund)
        .collect();
    assert_eq!(refunds.len(), 2);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_pay_per_call_ends_with_a_receipt_after_done() {
    let env = Env::start().await;
    let body = ask(true);
    let (q, _) = quote(&env, &body).await;
    let s = payer();
    let res = paid(&env, x_payment(&s, q), &body).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.headers["x-payment-method"], "x402");
    let text = String::from_utf8_lossy(&res.body).to_string();
    let done = text.find("data: [DONE]").expect("[DONE]");
    let receipt_at = text.find("event: x402-receipt").expect("receipt event");
    assert!(receipt_at > done, "the receipt follows [DONE]");
    let events = sse_data(&res.body);
    let receipt: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(
        receipt["payer"].as_str().unwrap().to_lowercase(),
        s.address().to_string()
    );
    assert_eq!(receipt["amount"], q.to_string());
    assert!(receipt["transaction"].as_str().unwrap().starts_with("0x"));
    let usage: Value = serde_json::from_str(&events[events.len() - 3]).unwrap();
    assert!(usage["usage"]["usd_cost"].is_string() && usage["usage"]["credit_cost"].is_null());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_settlement_withholds_the_answer() {
    let env = Env::start().await;
    let body = ask(false);
    let (q, _) = quote(&env, &body).await;
    let s = payer();
    env.sim.set_balance(&s.address(), 0);
    let res = paid(&env, x_payment(&s, q), &body).await;
    assert_eq!(res.status, StatusCode::PAYMENT_REQUIRED);
    let v = res.json();
    assert_eq!(v["error"], "insufficient_funds");
    assert!(v.get("choices").is_none(), "no answer without payment");
    assert_eq!(env.sim.facilitator_stats().settled, 0);
    // The facilitator's /verify refused it before the model ran: nothing generated, nothing
    // sent to /settle.
    assert_eq!(env.sim.generation_count(), 0, "the model was never called");
    // Streaming: the facilitator's /verify refuses the unfunded payer before the first byte.
    let res = paid(&env, x_payment(&s, q), &ask(true)).await;
    assert_eq!(res.status, StatusCode::PAYMENT_REQUIRED);
    assert!(sse_data(&res.body).is_empty(), "no frame flows unpaid");
    assert_eq!(res.json()["error"], "insufficient_funds");
    assert_eq!(env.sim.facilitator_stats().settle, 0, "nothing to settle");
    env.stop().await;
}

/// Sends a tampered payment and checks the answer and that nothing reached the upstream or the
/// facilitator.
async fn refused(env: &Env, header: (&str, String), status: StatusCode, code: &str) {
    let (gen_before, fac_before) = (env.sim.generation_count(), env.sim.facilitator_stats());
    let res = paid(env, header, &ask(false)).await;
    assert_eq!(
        res.status,
        status,
        "{code}: {}",
        String::from_utf8_lossy(&res.body)
    );
    let v = res.json();
    if status == StatusCode::PAYMENT_REQUIRED {
        assert_eq!(v["error"], code, "402 bodies carry the x402 reason");
        assert!(
            res.headers.contains_key("payment-required"),
            "fresh requirements"
        );
    } else {
        assert_eq!(v["error"]["code"], code);
    }
    assert_eq!(
        env.sim.generation_count(),
        gen_before,
        "{code}: no generation"
    );
    let fac = env.sim.facilitator_stats();
    assert_eq!(
        (fac.verify, fac.settle),
        (fac_before.verify, fac_before.settle),
        "{code}: no facilitator call"
    );
}

fn signed(
    s: &Signer,
    net: &vectorway::config::Network,
    to: &str,
    value: u64,
    after: u64,
    before: u64,
) -> vectorway::payments::sign::SignedPayment {
    s.sign(
        net,
        vectorway::payments::header::Authorization {
            from: s.address(),
            to: to.parse().unwrap(),
            value: Uint256::from_u64(value),
            valid_after: Uint256::from_u64(after),
            valid_before: Uint256::from_u64(before),
            nonce: random_nonce(),
        },
    )
    .unwrap()
}

fn header_of(p: &vectorway::payments::sign::SignedPayment) -> (&'static str, String) {
    (
        "x-payment",
        p.x_payment().unwrap().to_str().unwrap().to_string(),
    )
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(v.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attack_suite() {
    let env = Env::start().await;
    let (q, _) = quote(&env, &ask(false)).await;
    let s = payer();
    let now = unix_now();
    let net = sepolia();
    // Replay: the first use works, the second is 409 before any upstream or facilitator call.
    let p = signed(&s, &net, PAY_TO, q, now - 600, now + 300);
    assert_eq!(
        paid(&env, header_of(&p), &ask(false)).await.status,
        StatusCode::OK
    );
    refused(
        &env,
        header_of(&p),
        StatusCode::CONFLICT,
        "x402_nonce_reused",
    )
    .await;
    // Time window.
    refused(
        &env,
        header_of(&signed(&s, &net, PAY_TO, q, now - 600, now - 1)),
        StatusCode::BAD_REQUEST,
        "x402_authorization_expired",
    )
    .await;
    refused(
        &env,
        header_of(&signed(&s, &net, PAY_TO, q, now + 3600, now + 7200)),
        StatusCode::PAYMENT_REQUIRED,
        "invalid_exact_evm_payload_authorization_valid_after",
    )
    .await;
    // Wrong chain (mainnet is not offered), wrong payTo, value below the quote.
    let base = known_network("base").unwrap();
    refused(
        &env,
        header_of(&signed(&s, &base, PAY_TO, q, now - 600, now + 300)),
        StatusCode::PAYMENT_REQUIRED,
        "invalid_network",
    )
    .await;
    refused(
        &env,
        header_of(&signed(
            &s,
            &net,
            "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
            q,
            now - 600,
            now + 300,
        )),
        StatusCode::PAYMENT_REQUIRED,
        "invalid_exact_evm_payload_recipient_mismatch",
    )
    .await;
    refused(
        &env,
        header_of(&signed(&s, &net, PAY_TO, q - 1, now - 600, now + 300)),
        StatusCode::PAYMENT_REQUIRED,
        "invalid_exact_evm_payload_authorization_value_mismatch",
    )
    .await;
    // Wrong asset: a v1 payload naming another token on the right network.
    let mut wrong_asset = net.clone();
    wrong_asset.asset = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
        .parse()
        .unwrap();
    let p = signed(&s, &wrong_asset, PAY_TO, q, now - 600, now + 300);
    let mut v2 = p.payload_v2(p.matching_requirements());
    v2.accepted.network = "eip155:84532".into();
    refused(
        &env,
        (
            "payment-signature",
            b64(&serde_json::to_value(&v2).unwrap()),
        ),
        StatusCode::PAYMENT_REQUIRED,
        "invalid_payment_requirements",
    )
    .await;
    // A signature by another key, and the high-s twin of a valid one.
    let mut forged = signed(&s, &net, PAY_TO, q, now - 600, now + 300);
    forged.authorization.from = Signer::from_hex(DEV_KEY_1).unwrap().address();
    refused(
        &env,
        header_of(&forged),
        StatusCode::PAYMENT_REQUIRED,
        "invalid_exact_evm_payload_signature",
    )
    .await;
    let mut malleable = signed(&s, &net, PAY_TO, q, now - 600, now + 300);
    malleable.signature = high_s_twin(&malleable.signature);
    refused(
        &env,
        header_of(&malleable),
        StatusCode::PAYMENT_REQUIRED,
        "invalid_exact_evm_payload_signature",
    )
    .await;
    // Malformed headers: truncated, not base64, oversized, unknown version, unknown scheme.
    let good = header_of(&signed(&s, &net, PAY_TO, q, now - 600, now + 300)).1;
    refused(
        &env,
        ("x-payment", good[..good.len() / 2].to_string()),
        StatusCode::BAD_REQUEST,
        "invalid_payment_header",
    )
    .await;
    refused(
        &env,
        ("x-payment", "not base64 at all!".into()),
        StatusCode::BAD_REQUEST,
        "invalid_payment_header",
    )
    .await;
    refused(
        &env,
        ("x-payment", "A".repeat(20_000)),
        StatusCode::BAD_REQUEST,
        "invalid_payment_header",
    )
    .await;
    let mut unknown =
        serde_json::to_value(signed(&s, &net, PAY_TO, q, now - 600, now + 300).payload_v1())
            .unwrap();
    unknown["x402Version"] = json!(7);
    refused(
        &env,
        ("x-payment", b64(&unknown)),
        StatusCode::BAD_REQUEST,
        "invalid_payment_header",
    )
    .await;
    let mut scheme =
        serde_json::to_value(signed(&s, &net, PAY_TO, q, now - 600, now + 300).payload_v1())
            .unwrap();
    scheme["scheme"] = json!("upto");
    refused(
        &env,
        ("x-payment", b64(&scheme)),
        StatusCode::PAYMENT_REQUIRED,
        "unsupported_scheme",
    )
    .await;
    // x402 and an API key together.
    let key = env.funded_key(crate::harness::W1, 1_000_000).await;
    let res = env
        .send(
            Method::POST,
            "/v1/chat/completions",
            &[("x-api-key", &key), ("x-payment", &good)],
            ask(false).to_string(),
        )
        .await;
    assert_eq!(
        (res.status, res.code().as_str()),
        (StatusCode::BAD_REQUEST, "ambiguous_payment")
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_replays_exactly_one_wins() {
    let env = Env::start().await;
    let (q, _) = quote(&env, &ask(false)).await;
    let s = payer();
    let header = x_payment(&s, q).1;
    let mut calls = Vec::new();
    for _ in 0..50 {
        let (client, url, header) = (
            env.client.clone(),
            env.url("/v1/chat/completions"),
            header.clone(),
        );
        calls.push(tokio::spawn(async move {
            let req = http::Request::post(url)
                .header("x-payment", header)
                .body(http_body_util::Full::new(bytes::Bytes::from(
                    ask(false).to_string(),
                )))
                .unwrap();
            client.request(req).await.unwrap().status()
        }));
    }
    let mut ok = 0;
    for c in calls {
        match c.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(env.sim.facilitator_stats().settle, 1);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_in_onboard_purchase_and_topup() {
    let env = Env::start().await;
    let s = payer();
    let me = vectorway::crypto::to_checksum(&s.address());
    // Unpaid: 402 priced at the credits asked for.
    let body = json!({"wallet_address": me, "credits": 5_000_000, "key_name": "agent-prod"});
    let res = env
        .send(
            Method::POST,
            "/v1/auth/agent-onboard",
            &[],
            body.to_string(),
        )
        .await;
    assert_eq!(res.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(res.json()["accepts"][0]["maxAmountRequired"], "5000000");
    // Out of range: 422 before any payment.
    let res = env
        .send(
            Method::POST,
            "/v1/auth/agent-onboard",
            &[],
            json!({"wallet_address": me, "credits": 10}).to_string(),
        )
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    let h = x_payment(&s, 5_000_000).1;
    let res = env
        .send(
            Method::POST,
            "/v1/auth/agent-onboard",
            &[("x-payment", &h)],
            body.to_string(),
        )
        .await;
    assert_eq!(
        res.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&res.body)
    );
    let v = res.json();
    assert_eq!(
        (
            v["credits"].as_u64(),
            v["created"].as_bool(),
            v["agent_only"].as_bool()
        ),
        (Some(5_000_000), Some(true), Some(true))
    );
    let key = v["api_key"].as_str().unwrap().to_string();
    let jwt = format!("Bearer {}", v["tokens"]["access_token"].as_str().unwrap());
    assert!(res.headers.contains_key("x-payment-response"));
    // The key and the session work at once; the credits are durable (in the ledger).
    assert_eq!(
        env.send(Method::GET, "/v1/credits/me", &[("x-api-key", &key)], "")
            .await
            .json()["credits"],
        5_000_000
    );
    assert_eq!(
        env.send(Method::GET, "/v1/me", &[("authorization", &jwt)], "")
            .await
            .status,
        StatusCode::OK
    );
    let topups: i64 = env
        .gw()
        .state
        .store
        .ledger_of(&s.address())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == LedgerKind::Topup)
        .map(|e| e.credits)
        .sum();
    assert_eq!(topups, 5_000_000);
    // Purchase: the body's wallet must be the payer's.
    let other = vectorway::crypto::to_checksum(&Signer::from_hex(DEV_KEY_1).unwrap().address());
    let mismatch = json!({"wallet_address": other, "credits": 500_000});
    let res = env
        .send(
            Method::POST,
            "/v1/credits/purchase",
            &[("x-payment", &x_payment(&s, 500_000).1)],
            mismatch.to_string(),
        )
        .await;
    assert!(
        res.status == StatusCode::FORBIDDEN || res.status == StatusCode::NOT_FOUND,
        "{}",
        res.status
    );
    let res = env
        .send(
            Method::POST,
            "/v1/credits/purchase",
            &[("x-payment", &x_payment(&s, 500_000).1)],
            json!({"wallet_address": me, "credits": 500_000}).to_string(),
        )
        .await;
    assert_eq!(res.json()["credits"], 5_500_000);
    // Top-up, two steps.
    let res = env
        .send(
            Method::POST,
            "/v1/topup",
            &[],
            json!({"amount": 2}).to_string(),
        )
        .await;
    assert_eq!(res.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(res.json()["accepts"][0]["maxAmountRequired"], "2000000");
    let res = env
        .send(
            Method::POST,
            "/v1/topup",
            &[("x-payment", &x_payment(&s, 2_000_000).1)],
            json!({"amount": 2}).to_string(),
        )
        .await;
    assert_eq!(res.json()["credited_usdc"], 2_000_000);
    assert_eq!(res.json()["balance_usdc"], 7_500_000);
    let w: Wallet = s.address();
    assert_eq!(env.balance(&w.to_string()).balance, 7_500_000);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unpaid_402_is_not_replayed_to_the_paid_retry_with_the_same_key() {
    // Found by schemathesis: the 402 challenge was stored under the Idempotency-Key, so the
    // paid retry (same key, same body, as x402 clients send it) got the 402 back forever.
    let env = Env::start().await;
    let s = payer();
    let body = json!({"amount": 2}).to_string();
    let key = ("idempotency-key", "topup-1");
    let unpaid = env
        .send(Method::POST, "/v1/topup", &[key], body.clone())
        .await;
    assert_eq!(unpaid.status, StatusCode::PAYMENT_REQUIRED);
    assert!(unpaid.headers.contains_key("payment-required"));
    let again = env
        .send(Method::POST, "/v1/topup", &[key], body.clone())
        .await;
    assert_eq!(again.status, StatusCode::PAYMENT_REQUIRED);
    assert!(
        again.headers.contains_key("payment-required")
            && !again.headers.contains_key("idempotent-replayed"),
        "a fresh challenge, not a replay"
    );
    let pay = x_payment(&s, 2_000_000).1;
    let paid = env
        .send(
            Method::POST,
            "/v1/topup",
            &[key, ("x-payment", &pay)],
            body.clone(),
        )
        .await;
    assert_eq!(paid.status, StatusCode::OK, "{:?}", paid.body);
    assert_eq!(paid.json()["credited_usdc"], 2_000_000);
    // Now the success is what the key replays: credited once.
    let replay = env
        .send(Method::POST, "/v1/topup", &[key, ("x-payment", &pay)], body)
        .await;
    assert_eq!(replay.status, StatusCode::OK);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(env.balance(&s.address().to_string()).balance, 2_000_000);
    env.stop().await;
}
