//! The facilitator simulator over HTTP: settlement, double spends, missing funds, forged signatures, controls.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use crate::config::{SimulatorKnobs, known_network};
use crate::payments::sign::{DEV_KEY_0, DEV_KEY_1, DEV_KEY_2, SignedPayment, Signer, high_s_twin};
use crate::simulate::Simulator;
use crate::upstream::client::{HttpClient, build};
use crate::wallet::Wallet;

fn knobs() -> SimulatorKnobs {
    SimulatorKnobs {
        ttft: Duration::ZERO,
        tokens_per_sec: 1000,
        chunk_tokens: 4,
        reply_tokens: 8,
    }
}

async fn sim() -> (Simulator, HttpClient) {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let sim = Simulator::start(addr, knobs(), None).await.unwrap();
    (sim, build(Duration::from_secs(2), 4))
}

async fn call(http: &HttpClient, method: Method, url: String, body: Option<Value>) -> (u16, Value) {
    let bytes = body
        .map(|b| serde_json::to_vec(&b).unwrap())
        .unwrap_or_default();
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .unwrap();
    let res = http.request(req).await.unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn pay_to() -> Wallet {
    Signer::from_hex(DEV_KEY_1).unwrap().address()
}

fn now() -> u64 {
    crate::payments::unix_now()
}

fn payment(signer: &Signer, value: u64) -> SignedPayment {
    signer
        .pay(
            &known_network("base-sepolia").unwrap(),
            pay_to(),
            value,
            now(),
            300,
        )
        .unwrap()
}

/// The v2 facilitator body for a payment: the payload and its exact requirements.
fn body_v2(p: &SignedPayment) -> Value {
    let req = p.matching_requirements();
    json!({
        "x402Version": 2,
        "paymentPayload": p.payload_v2(req.clone()),
        "paymentRequirements": req,
    })
}

/// The v1 facilitator body for a payment.
fn body_v1(p: &SignedPayment) -> Value {
    let r = p.matching_requirements();
    json!({
        "x402Version": 1,
        "paymentPayload": p.payload_v1(),
        "paymentRequirements": {
            "scheme": "exact", "network": "base-sepolia", "maxAmountRequired": r.amount,
            "resource": "http://localhost/v1/chat/completions", "description": "test",
            "mimeType": "application/json", "payTo": r.pay_to, "maxTimeoutSeconds": 300,
            "asset": r.asset, "extra": r.extra,
        },
    })
}

#[tokio::test]
async fn settles_and_moves_funds_then_refuses_the_double_spend() {
    let (sim, http) = sim().await;
    let url = sim.facilitator_url();
    let payer = Signer::from_hex(DEV_KEY_0).unwrap();
    sim.set_balance(&payer.address(), 50_000);
    let p = payment(&payer, 12_345);
    let (status, v) = call(
        &http,
        Method::POST,
        format!("{url}/verify"),
        Some(body_v2(&p)),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["isValid"], true, "{v}");
    assert_eq!(v["payer"], format!("{}", payer.address()));
    let before_to = sim.balance(&pay_to());
    let (status, v) = call(
        &http,
        Method::POST,
        format!("{url}/settle"),
        Some(body_v2(&p)),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(v["network"], "eip155:84532");
    let tx = v["transaction"].as_str().unwrap();
    assert!(tx.len() == 66 && tx.starts_with("0x") && hex::decode(&tx[2..]).is_ok());
    assert_eq!(sim.balance(&payer.address()), 50_000 - 12_345);
    assert_eq!(sim.balance(&pay_to()), before_to + 12_345);
    // The same authorization again: a double spend, refused the way real facilitators do.
    let (status, v) = call(
        &http,
        Method::POST,
        format!("{url}/settle"),
        Some(body_v2(&p)),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["success"], false);
    assert_eq!(v["transaction"], "");
    assert_eq!(v["errorReason"], "invalid_exact_evm_nonce_already_used");
    let (_, v) = call(
        &http,
        Method::POST,
        format!("{url}/verify"),
        Some(body_v2(&p)),
    )
    .await;
    assert_eq!(v["isValid"], false);
    assert_eq!(sim.balance(&payer.address()), 50_000 - 12_345);
    let stats = sim.facilitator_stats();
    assert_eq!(
        (stats.verify, stats.settle, stats.settled, stats.refused),
        (2, 2, 1, 1)
    );
}

#[tokio::test]
async fn refuses_a_payer_without_funds() {
    let (sim, http) = sim().await;
    let url = sim.facilitator_url();
    let broke = Signer::from_hex(DEV_KEY_2).unwrap();
    let (_, v) = call(
        &http,
        Method::POST,
        format!("{url}/_balance"),
        Some(json!({"address": broke.address().to_string(), "amount": 999})),
    )
    .await;
    assert_eq!(v["balance"], 999);
    let p = payment(&broke, 1_000);
    let (_, v) = call(
        &http,
        Method::POST,
        format!("{url}/verify"),
        Some(body_v1(&p)),
    )
    .await;
    assert_eq!(
        (v["isValid"].clone(), v["invalidReason"].clone()),
        (json!(false), json!("insufficient_funds"))
    );
    let (_, v) = call(
        &http,
        Method::POST,
        format!("{url}/settle"),
        Some(body_v1(&p)),
    )
    .await;
    assert_eq!(v["success"], false);
    assert_eq!(v["errorReason"], "insufficient_funds");
    assert_eq!(v["network"], "base-sepolia");
    assert_eq!(sim.balance(&broke.address()), 999);
    let (_, v) = call(&http, Method::GET, format!("{url}/_stats"), None).await;
    assert_eq!(v["settled"], 0);
    assert_eq!(v["refused"], 1);
    // Unseen addresses start with the default balance.
    assert_eq!(sim.balance(&Wallet([0x42; 20])), super::DEFAULT_BALANCE);
}

#[tokio::test]
async fn checks_signatures_for_real() {
    let (sim, http) = sim().await;
    let url = sim.facilitator_url();
    let payer = Signer::from_hex(DEV_KEY_0).unwrap();
    let p = payment(&payer, 2_000);
    // Signed by another key.
    let forged = Signer::from_hex(DEV_KEY_2)
        .unwrap()
        .sign(&p.network, p.authorization.clone())
        .unwrap();
    let (_, v) = call(
        &http,
        Method::POST,
        format!("{url}/settle"),
        Some(body_v2(&forged)),
    )
    .await;
    assert_eq!(v["errorReason"], "invalid_exact_evm_payload_signature");
    // High s.
    let twin = SignedPayment {
        signature: high_s_twin(&p.signature),
        ..p.clone()
    };
    let (_, v) = call(
        &http,
        Method::POST,
        format!("{url}/verify"),
        Some(body_v2(&twin)),
    )
    .await;
    assert_eq!(v["invalidReason"], "invalid_exact_evm_payload_signature");
    // The wrong domain name (Base's "USD Coin" on Base Sepolia).
    let mut body = body_v2(&p);
    body["paymentRequirements"]["extra"]["name"] = "USD Coin".into();
    let (_, v) = call(&http, Method::POST, format!("{url}/verify"), Some(body)).await;
    assert_eq!(v["invalidReason"], "invalid_exact_evm_payload_signature");
    // Requirements asking for a different amount than was signed.
    let mut body = body_v2(&p);
    body["paymentRequirements"]["amount"] = "2001".into();
    let (_, v) = call(&http, Method::POST, format!("{url}/verify"), Some(body)).await;
    assert_eq!(
        v["invalidReason"],
        "invalid_exact_evm_payload_authorization_value_mismatch"
    );
    // Garbage.
    let (status, v) = call(
        &http,
        Method::POST,
        format!("{url}/settle"),
        Some(json!({"x402Version": 2})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(v["success"], false);
    // And the honest one still goes through.
    let (_, v) = call(
        &http,
        Method::POST,
        format!("{url}/settle"),
        Some(body_v2(&p)),
    )
    .await;
    assert_eq!(v["success"], true, "{v}");
}

#[tokio::test]
async fn supported_and_faults() {
    let (sim, http) = sim().await;
    let url = sim.facilitator_url();
    let (status, v) = call(&http, Method::GET, format!("{url}/supported"), None).await;
    assert_eq!(status, 200);
    let kinds = v["kinds"].as_array().unwrap();
    assert_eq!(kinds.len(), 4);
    assert!(
        kinds.contains(&json!({"x402Version": 1, "scheme": "exact", "network": "base-sepolia"}))
    );
    assert!(
        kinds.contains(&json!({"x402Version": 2, "scheme": "exact", "network": "eip155:84532"}))
    );
    let (_, _) = call(
        &http,
        Method::POST,
        format!("{url}/_faults"),
        Some(json!({"endpoint": "settle", "status": 503, "times": 1})),
    )
    .await;
    let p = payment(&Signer::from_hex(DEV_KEY_0).unwrap(), 1_000);
    let (status, _) = call(
        &http,
        Method::POST,
        format!("{url}/settle"),
        Some(body_v2(&p)),
    )
    .await;
    assert_eq!(status, 503);
    let (status, v) = call(
        &http,
        Method::POST,
        format!("{url}/settle"),
        Some(body_v2(&p)),
    )
    .await;
    assert_eq!((status, v["success"].clone()), (200, json!(true)));
    let (_, v) = call(&http, Method::POST, format!("{url}/_reset"), None).await;
    assert_eq!(v["ok"], true);
    assert_eq!(sim.facilitator_stats().settle, 0);
}
