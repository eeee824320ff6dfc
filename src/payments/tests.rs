//! The payments facade end to end: pipeline verification, settlement against the simulator, receipts, 402s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;

use super::*;
use crate::config::{SimulatorKnobs, known_network};
use crate::payments::header::{PAYMENT_RESPONSE, X_PAYMENT_RESPONSE, decode_base64_json};
use crate::payments::requirements::tests::cfg;
use crate::payments::sign::{DEV_KEY_0, SignedPayment, Signer};
use crate::payments::types::{PaymentRequiredV1, PaymentRequiredV2};
use crate::simulate::Simulator;
use crate::simulate::facilitator::FacilitatorFaults;
use crate::upstream::client::build;

const RESOURCE: &str = "http://127.0.0.1:8080/v1/chat/completions";

struct Rig {
    effects: crate::effects::Effects,
    _dir: tempfile::TempDir,
    sim: Simulator,
    payments: Arc<Payments>,
}

async fn rig(threads: usize) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::storage::Storage::embedded(Store::open(dir.path()).unwrap());
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let knobs = SimulatorKnobs {
        ttft: Duration::ZERO,
        tokens_per_sec: 1000,
        chunk_tokens: 4,
        reply_tokens: 8,
    };
    let sim = Simulator::start(addr, knobs, None).await.unwrap();
    let mut c = cfg();
    c.verifier_threads = threads;
    c.settle_timeout = Duration::from_millis(500);
    c.settle_retries = 2;
    c.settle_pending_wait = Duration::from_millis(1_500);
    let effects = crate::effects::Effects::new();
    let payments = Payments::new(
        &c,
        store,
        build(Duration::from_secs(2), 8),
        sim.facilitator_url(),
        effects.clone(),
    );
    Rig {
        effects,
        _dir: dir,
        sim,
        payments: Arc::new(payments),
    }
}

fn payer() -> Signer {
    Signer::from_hex(DEV_KEY_0).unwrap()
}

fn signed(value: u64) -> SignedPayment {
    payer()
        .pay(
            &known_network("base-sepolia").unwrap(),
            cfg().pay_to,
            value,
            unix_now(),
            300,
        )
        .unwrap()
}

fn headers(name: &str, value: http::HeaderValue) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
        value,
    );
    h
}

fn decoded_v2(p: &SignedPayment) -> DecodedPayment {
    Payments::decode(&headers(
        "payment-signature",
        p.payment_signature().unwrap(),
    ))
    .unwrap()
    .unwrap()
}

fn decoded_v1(p: &SignedPayment) -> DecodedPayment {
    Payments::decode(&headers("x-payment", p.x_payment().unwrap()))
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn v2_pays_settles_and_gets_a_receipt() {
    let r = rig(2).await;
    let before = r.sim.balance(&payer().address());
    let v = r
        .payments
        .verify(decoded_v2(&signed(3_000)), 2_500, RESOURCE)
        .await
        .unwrap();
    assert_eq!((v.amount, v.quote, v.version), (3_000, 2_500, Version::V2));
    assert_eq!(v.requirements["amount"], "3000");
    assert_eq!(v.network_name(), "eip155:84532");
    let outcome = r.payments.start_settlement(&v).await;
    let s = outcome.as_ref().unwrap();
    assert_eq!(
        (s.amount, s.payer, s.network.as_str()),
        (3_000, payer().address(), "eip155:84532")
    );
    assert_eq!(r.sim.balance(&payer().address()), before - 3_000);
    let (name, value) = v.receipt_header(&outcome).unwrap();
    assert_eq!(name, PAYMENT_RESPONSE);
    let receipt: SettleResponse = decode_base64_json(value.as_bytes()).unwrap();
    assert!(receipt.success);
    assert_eq!(receipt.transaction, s.transaction);
    assert_eq!(receipt.network, "eip155:84532");
}

#[tokio::test]
async fn v1_receipt_names_the_network_the_v1_way() {
    let r = rig(1).await;
    let v = r
        .payments
        .verify(decoded_v1(&signed(1_000)), 1_000, RESOURCE)
        .await
        .unwrap();
    assert_eq!(v.requirements["maxAmountRequired"], "1000");
    assert_eq!(v.requirements["resource"], RESOURCE);
    let outcome = r.payments.start_settlement(&v).await;
    let (name, value) = v.receipt_header(&outcome).unwrap();
    assert_eq!(name, X_PAYMENT_RESPONSE);
    let receipt: SettleResponse = decode_base64_json(value.as_bytes()).unwrap();
    assert!(receipt.success, "{receipt:?}");
    assert_eq!(receipt.network, "base-sepolia");
}

#[tokio::test]
async fn fifty_concurrent_replays_through_the_pipeline_pass_once() {
    let r = rig(4).await;
    let d = decoded_v2(&signed(1_000));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (p, d) = (r.payments.clone(), d.clone());
            async move { p.verify(d, 1_000, RESOURCE).await }
        })
        .collect();
    let results = futures_util::future::join_all(tasks).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!((e.status(), e.code()), (409, "x402_nonce_reused"));
    }
    // Verification never talks to the facilitator.
    assert_eq!(
        r.sim.facilitator_stats().verify + r.sim.facilitator_stats().settle,
        0
    );
}

#[tokio::test]
async fn a_refused_settlement_is_a_402_with_a_failed_receipt() {
    let r = rig(1).await;
    r.sim.set_balance(&payer().address(), 10);
    let v = r
        .payments
        .verify(decoded_v2(&signed(1_000)), 1_000, RESOURCE)
        .await
        .unwrap();
    let outcome = r.payments.start_settlement(&v).await;
    let e = outcome.as_ref().unwrap_err();
    assert_eq!((e.status(), e.code()), (402, "x402_settlement_failed"));
    assert_eq!(e.invalid_reason(), Some("insufficient_funds"));
    let (_, value) = v.receipt_header(&outcome).unwrap();
    let receipt: SettleResponse = decode_base64_json(value.as_bytes()).unwrap();
    assert!(!receipt.success);
    assert_eq!(receipt.transaction, "");
    assert_eq!(receipt.error_reason.as_deref(), Some("insufficient_funds"));
    assert_eq!(r.sim.facilitator_stats().settled, 0);
}

#[tokio::test]
async fn only_certain_failures_say_nothing_was_settled() {
    let r = rig(1).await;
    let v = r
        .payments
        .verify(decoded_v2(&signed(1_000)), 1_000, RESOURCE)
        .await
        .unwrap();
    // A facilitator nobody listens for: no attempt connects, so the payment never arrived.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let down = FacilitatorClient::new(
        build(Duration::from_secs(2), 8),
        &format!("http://{dead}"),
        4,
        Duration::from_millis(500),
        1,
    );
    let e = down.settle(&v.facilitator_request()).await.unwrap_err();
    assert!(matches!(e, PaymentError::FacilitatorUnreachable(_)), "{e}");
    assert!(e.nothing_settled());
    assert_eq!((e.status(), e.code()), (502, "x402_facilitator_error"));
    // An answer that is not a payment (here a 503, every attempt, and to every `/settle` the
    // lookup sends again) may follow a transfer: pending, never "not paid".
    r.sim.set_facilitator_faults(FacilitatorFaults {
        endpoint: Some("settle".into()),
        status: Some(503),
        body: None,
        delay_ms: None,
        after_ms: None,
        times: None,
    });
    let e = r.payments.start_settlement(&v).await.unwrap_err();
    assert!(
        matches!(e, PaymentError::SettlementUnknown { .. }) && !e.nothing_settled(),
        "{e}"
    );
    assert_eq!((e.status(), e.code()), (504, "x402_settlement_pending"));
    r.sim.set_facilitator_faults(FacilitatorFaults::default());
    for (reason, certain) in [
        ("insufficient_funds", true),
        ("transaction_failed", true),
        ("invalid_exact_evm_payload_signature", true),
        ("invalid_exact_evm_insufficient_balance", true),
        ("invalid_exact_evm_nonce_already_used", false),
        ("invalid_transaction_state", false),
        ("settlement_pending", false),
        ("unexpected_settle_error", false),
    ] {
        let e = PaymentError::SettlementRefused {
            reason: reason.into(),
            message: None,
        };
        assert_eq!(e.nothing_settled(), certain, "{reason}");
    }
}

#[tokio::test]
async fn settlement_survives_a_dropped_handle() {
    let r = rig(1).await;
    let v = r
        .payments
        .verify(decoded_v2(&signed(1_000)), 1_000, RESOURCE)
        .await
        .unwrap();
    drop(r.payments.start_settlement(&v));
    assert_eq!(r.effects.drain(Duration::from_secs(5)).await, 0);
    assert_eq!(r.sim.facilitator_stats().settled, 1);
}

#[tokio::test]
async fn facilitator_faults_are_retried_or_not_paid() {
    let r = rig(1).await;
    let fault = |status: u16, body: &str, times: u32| FacilitatorFaults {
        endpoint: Some("settle".into()),
        status: Some(status),
        body: Some(body.into()),
        delay_ms: None,
        after_ms: None,
        times: Some(times),
    };
    // Two 503s, then success: retried (settle_retries = 2).
    r.sim.set_facilitator_faults(fault(503, "{}", 2));
    let v = r
        .payments
        .verify(decoded_v2(&signed(1_000)), 1_000, RESOURCE)
        .await
        .unwrap();
    r.payments.start_settlement(&v).await.unwrap();
    // A 503 carrying a success body is never taken for a payment: on every attempt (and every
    // `/settle` the lookup sends again) it stays pending, and nothing moved.
    r.sim.set_facilitator_faults(FacilitatorFaults {
        times: None,
        ..fault(
            503,
            r#"{"success":true,"transaction":"0x01","network":"base-sepolia"}"#,
            1,
        )
    });
    let settled = r.sim.facilitator_stats().settled;
    let v = r
        .payments
        .verify(decoded_v2(&signed(1_000)), 1_000, RESOURCE)
        .await
        .unwrap();
    let e = r.payments.start_settlement(&v).await.unwrap_err();
    assert_eq!((e.status(), e.code()), (504, "x402_settlement_pending"));
    assert_eq!(r.sim.facilitator_stats().settled, settled, "never paid");
    // HTML, success without a transaction, truncated JSON: not a payment, and not proof of
    // none either. The lookup asks `/verify` (the authorization is unused) and settles it
    // again: paid once, by a readable answer.
    for body in [
        "<html>bad gateway</html>",
        r#"{"success":true,"transaction":""}"#,
        r#"{"success":tr"#,
    ] {
        r.sim.set_facilitator_faults(fault(200, body, 1));
        let settled = r.sim.facilitator_stats().settled;
        let v = r
            .payments
            .verify(decoded_v2(&signed(1_000)), 1_000, RESOURCE)
            .await
            .unwrap();
        let s = r.payments.start_settlement(&v).await.unwrap();
        assert!(s.transaction.starts_with("0x"), "{body}: {s:?}");
        assert_eq!(r.sim.facilitator_stats().settled, settled + 1, "{body}");
    }
    // A retry told "nonce already used" may be seeing its own earlier attempt: the outcome is
    // looked up, and the facilitator's `/verify` says the authorization is spent: settled.
    let v = r
        .payments
        .verify(decoded_v2(&signed(1_000)), 1_000, RESOURCE)
        .await
        .unwrap();
    r.payments
        .facilitator()
        .settle(&v.facilitator_request())
        .await
        .unwrap();
    let verifies = r.sim.facilitator_stats().verify;
    r.sim.set_facilitator_faults(fault(503, "{}", 1));
    let s = r.payments.start_settlement(&v).await.unwrap();
    assert!(s.transaction.starts_with("x402:"), "{s:?}");
    assert_eq!(r.sim.facilitator_stats().verify, verifies + 1);
    // Without a retry in between, the same answer is a plain refusal.
    let e = r.payments.start_settlement(&v).await.unwrap_err();
    assert_eq!(
        e.invalid_reason(),
        Some("invalid_exact_evm_nonce_already_used")
    );
    // Every answer slower than the per-attempt timeout, and the first attempt did settle: no
    // answer says so, but `/verify` (the nonce is spent) does.
    r.sim.set_facilitator_faults(FacilitatorFaults {
        endpoint: Some("settle".into()),
        status: None,
        body: None,
        delay_ms: None,
        after_ms: Some(800),
        times: Some(3),
    });
    let settled = r.sim.facilitator_stats().settled;
    let v = r
        .payments
        .verify(decoded_v2(&signed(1_000)), 1_000, RESOURCE)
        .await
        .unwrap();
    let s = r.payments.start_settlement(&v).await.unwrap();
    assert!(s.transaction.starts_with("x402:"), "{s:?}");
    assert_eq!(r.sim.facilitator_stats().settled, settled + 1, "paid once");
}

#[tokio::test]
async fn challenge_carries_both_versions() {
    let r = rig(1).await;
    let c = r
        .payments
        .challenge(
            r.payments.quote(10),
            Resource {
                url: RESOURCE,
                description: "chat",
            },
            None,
        )
        .unwrap();
    let v2: PaymentRequiredV2 = decode_base64_json(c.header.as_bytes()).unwrap();
    assert_eq!(v2.x402_version, 2);
    assert_eq!(v2.accepts.len(), 2);
    assert_eq!(v2.accepts[0].amount, "1000");
    assert_eq!(
        v2.error.as_deref(),
        Some("PAYMENT-SIGNATURE header is required")
    );
    let v1: PaymentRequiredV1 = serde_json::from_slice(&c.body).unwrap();
    assert_eq!(v1.x402_version, 1);
    assert_eq!(v1.accepts[1].network, "base");
    // After a refused payment the reason is the error.
    let refused = PaymentError::Unsatisfied {
        reason: Reason::ValueMismatch,
        detail: String::new(),
    };
    let c = r
        .payments
        .challenge(
            2_000,
            Resource {
                url: RESOURCE,
                description: "chat",
            },
            Some(&refused),
        )
        .unwrap();
    let v1: PaymentRequiredV1 = serde_json::from_slice(&c.body).unwrap();
    assert_eq!(
        v1.error,
        "invalid_exact_evm_payload_authorization_value_mismatch"
    );
}

#[tokio::test]
async fn the_facilitator_client_reads_supported_and_verify() {
    let r = rig(1).await;
    let kinds = r.payments.facilitator().supported().await.unwrap().kinds;
    assert_eq!(kinds.len(), 4);
    let v = r
        .payments
        .verify(decoded_v1(&signed(1_000)), 1_000, RESOURCE)
        .await
        .unwrap();
    let answer = r
        .payments
        .facilitator()
        .verify(&v.facilitator_request())
        .await
        .unwrap();
    assert!(answer.is_valid, "{answer:?}");
}

#[tokio::test]
async fn a_pending_settlement_is_looked_up_and_a_retry_refusal_is_not_a_proof() {
    let r = rig(1).await;
    let fault = |status: u16, body: &str| FacilitatorFaults {
        endpoint: Some("settle".into()),
        status: Some(status),
        body: Some(body.into()),
        delay_ms: None,
        after_ms: None,
        times: Some(1),
    };
    let signed_v = || async {
        r.payments
            .verify(decoded_v2(&signed(1_000)), 1_000, RESOURCE)
            .await
            .unwrap()
    };
    // `settlement_pending` once: the client learns it as an unknown outcome with its hash…
    let pending = r#"{"success":false,"errorReason":"settlement_pending","transaction":"0xabc","network":"eip155:84532"}"#;
    let v = signed_v().await;
    r.sim.set_facilitator_faults(fault(200, pending));
    let e = r
        .payments
        .facilitator()
        .settle(&v.facilitator_request())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, PaymentError::SettlementUnknown { transaction: Some(t), .. } if t == "0xabc"),
        "{e:?}"
    );
    assert_eq!((e.status(), e.code()), (504, "x402_settlement_pending"));
    assert!(!e.nothing_settled());
    // … and a settlement that meets it looks again (no chain here: `/verify`, then `/settle`,
    // which now goes through): paid, once.
    let v = signed_v().await;
    r.sim.set_facilitator_faults(fault(200, pending));
    let settled_before = r.sim.facilitator_stats().settled;
    let s = r.payments.start_settlement(&v).await.unwrap();
    assert!(
        s.transaction.starts_with("0x") && s.transaction != "0xabc",
        "{s:?}"
    );
    assert_eq!(r.sim.facilitator_stats().settled, settled_before + 1);
    // A retry refused with `transaction_failed` after a 503: unknown, never "nothing settled".
    let v = signed_v().await;
    let failed = r#"{"success":false,"errorReason":"transaction_failed","transaction":"","network":"eip155:84532"}"#;
    r.sim.set_facilitator_faults(FacilitatorFaults {
        times: Some(1),
        ..fault(503, "{}")
    });
    let client = r.payments.facilitator();
    let request = v.facilitator_request();
    let first = client.settle(&request);
    // The 503 is retried after 100 ms; the retry meets the refusal.
    let set_refusal = async {
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        r.sim.set_facilitator_faults(fault(200, failed));
    };
    let (e, ()) = tokio::join!(first, set_refusal);
    let e = e.unwrap_err();
    assert!(matches!(e, PaymentError::SettlementUnknown { .. }), "{e:?}");
    assert!(!e.nothing_settled());
    // The same refusal on a first (only) attempt is a plain refusal.
    r.sim.set_facilitator_faults(fault(200, failed));
    let e = client.settle(&request).await.unwrap_err();
    assert_eq!(e.invalid_reason(), Some("transaction_failed"));
    assert!(e.nothing_settled());
}
