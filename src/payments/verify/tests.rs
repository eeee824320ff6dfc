//! Local verification: the reference vector end to end, and every attack refused without burning the nonce.

use std::sync::{Arc, Barrier};

use serde_json::Value;

use super::*;
use crate::config::known_network;
use crate::payments::header::{HeaderKind, decode_value, encode_json};
use crate::payments::requirements::tests::cfg;
use crate::payments::sign::{DEV_KEY_0, DEV_KEY_2, SignedPayment, Signer, high_s_twin};
use crate::payments::types::Uint256;

/// The reference §2.1 times: valid from 1740672089 to 1740672154.
const REF_NOW: u64 = 1_740_672_100;
const NOW: u64 = 1_800_000_000;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

fn sepolia() -> Network {
    known_network("base-sepolia").unwrap()
}

fn payer() -> Signer {
    Signer::from_hex(DEV_KEY_0).unwrap()
}

/// An honest authorization of `value` to our payTo, valid around `NOW`.
fn honest(net: &Network, value: u64) -> SignedPayment {
    payer().pay(net, cfg().pay_to, value, NOW, 300).unwrap()
}

fn decode(kind: HeaderKind, json: &Value) -> DecodedPayment {
    decode_value(kind, encode_json(json).unwrap().as_bytes()).unwrap()
}

fn v1(p: &SignedPayment) -> Value {
    serde_json::to_value(p.payload_v1()).unwrap()
}

fn v2(p: &SignedPayment) -> Value {
    serde_json::to_value(p.payload_v2(p.matching_requirements())).unwrap()
}

fn unsatisfied(r: Result<Checked, PaymentError>) -> Reason {
    match r {
        Err(PaymentError::Unsatisfied { reason, .. }) => reason,
        other => panic!("expected Unsatisfied, got {other:?}"),
    }
}

/// The honest payment still verifies, so the failed attempt did not claim its nonce.
fn nonce_is_free(store: &Store, p: &SignedPayment) {
    let d = decode(HeaderKind::XPayment, &v1(p));
    verify(&cfg(), store, &d, 1_000, NOW).expect("the nonce must still be free");
}

#[test]
fn reference_vector_end_to_end() {
    let json = serde_json::json!({
        "x402Version": 1,
        "scheme": "exact",
        "network": "base-sepolia",
        "payload": {
            "signature": "0x4bd9d9bb605c1eb130b7cdab465fa994fec42e67b0b3bd68e97ebafbbbf2b8f109b4c9677c8bacd7efe49698c49a5a513cce3636dd72b36cbde03174fb8f92f21b",
            "authorization": {
                "from": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
                "to": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
                "value": "10000",
                "validAfter": "1740672089",
                "validBefore": "1740672154",
                "nonce": format!("0x{}", "11".repeat(32)),
            }
        }
    });
    let d = decode(HeaderKind::XPayment, &json);
    assert_eq!(
        hex::encode(transfer_digest(&sepolia(), &d.authorization)),
        "9d9ecbadd505c2057bca5aac00eae7d1058f0e82307819d1ff726631d7d9bc5d"
    );
    let (_dir, store) = store();
    let ok = verify(&cfg(), &store, &d, 10_000, REF_NOW).unwrap();
    assert_eq!(
        ok.payer,
        "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
            .parse()
            .unwrap()
    );
    assert_eq!(ok.amount, 10_000);
    assert_eq!(ok.network.chain_id, 84532);
    assert_eq!(ok.valid_before, 1_740_672_154);
    // The same header again is a replay.
    let again = verify(&cfg(), &store, &d, 10_000, REF_NOW).unwrap_err();
    assert!(matches!(again, PaymentError::NonceReused));
    assert_eq!((again.status(), again.code()), (409, "x402_nonce_reused"));
}

#[test]
fn v2_payments_verify_and_overpayment_is_kept() {
    let (_dir, store) = store();
    let p = honest(&sepolia(), 5_000);
    let d = decode(HeaderKind::PaymentSignature, &v2(&p));
    let ok = verify(&cfg(), &store, &d, 1_234, NOW).unwrap();
    assert_eq!(ok.amount, 5_000);
    // Exactly the quote is enough.
    let p = honest(&sepolia(), 1_234);
    let d = decode(HeaderKind::PaymentSignature, &v2(&p));
    assert_eq!(
        verify(&cfg(), &store, &d, 1_234, NOW).unwrap().amount,
        1_234
    );
}

#[test]
fn concurrent_replays_verify_exactly_once() {
    let (_dir, store) = store();
    let d = Arc::new(decode(
        HeaderKind::XPayment,
        &v1(&honest(&sepolia(), 2_000)),
    ));
    let barrier = Arc::new(Barrier::new(50));
    let threads: Vec<_> = (0..50)
        .map(|_| {
            let (d, store, barrier) = (d.clone(), store.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                verify(&cfg(), &store, &d, 1_000, NOW)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, PaymentError::NonceReused))
    );
}

#[test]
fn expiry_and_not_yet_valid() {
    let (_dir, store) = store();
    let signer = payer();
    let mk = |after: u64, before: u64| {
        signer
            .sign(
                &sepolia(),
                Authorization {
                    from: signer.address(),
                    to: cfg().pay_to,
                    value: Uint256::from_u64(1_000),
                    valid_after: Uint256::from_u64(after),
                    valid_before: Uint256::from_u64(before),
                    nonce: crate::payments::sign::random_nonce(),
                },
            )
            .unwrap()
    };
    // validBefore must be more than 6 s away.
    let edge = mk(NOW - 600, NOW + 6);
    let e = verify(
        &cfg(),
        &store,
        &decode(HeaderKind::XPayment, &v1(&edge)),
        1_000,
        NOW,
    )
    .unwrap_err();
    assert!(matches!(e, PaymentError::Expired { .. }));
    assert_eq!((e.status(), e.code()), (400, "x402_authorization_expired"));
    let old = mk(NOW - 900, NOW - 100);
    assert!(matches!(
        verify(
            &cfg(),
            &store,
            &decode(HeaderKind::XPayment, &v1(&old)),
            1_000,
            NOW
        ),
        Err(PaymentError::Expired { .. })
    ));
    let just = mk(NOW - 600, NOW + 7);
    verify(
        &cfg(),
        &store,
        &decode(HeaderKind::XPayment, &v1(&just)),
        1_000,
        NOW,
    )
    .unwrap();
    // validAfter in the future.
    let early = mk(NOW + 1, NOW + 300);
    let e = verify(
        &cfg(),
        &store,
        &decode(HeaderKind::XPayment, &v1(&early)),
        1_000,
        NOW,
    )
    .unwrap_err();
    assert!(matches!(e, PaymentError::NotYetValid { .. }));
    assert_eq!(e.status(), 402);
    assert_eq!(
        e.invalid_reason(),
        Some("invalid_exact_evm_payload_authorization_valid_after")
    );
    // validAfter == now is fine.
    let now_ok = mk(NOW, NOW + 300);
    verify(
        &cfg(),
        &store,
        &decode(HeaderKind::XPayment, &v1(&now_ok)),
        1_000,
        NOW,
    )
    .unwrap();
}

#[test]
fn the_edge_payment_was_not_claimed() {
    // Expired first, then honest at an earlier time with the same nonce: still verifiable.
    let (_dir, store) = store();
    let p = honest(&sepolia(), 1_000);
    let d = decode(HeaderKind::XPayment, &v1(&p));
    assert!(matches!(
        verify(&cfg(), &store, &d, 1_000, NOW + 10_000),
        Err(PaymentError::Expired { .. })
    ));
    verify(&cfg(), &store, &d, 1_000, NOW).unwrap();
}

#[test]
fn wrong_chain() {
    let (_dir, store) = store();
    // Only Base Sepolia is offered; a Base payment names a network we do not offer.
    let mut only_sepolia = cfg();
    only_sepolia.networks.truncate(1);
    let base = known_network("base").unwrap();
    let p = honest(&base, 1_000);
    let d = decode(HeaderKind::XPayment, &v1(&p));
    assert_eq!(
        unsatisfied(verify(&only_sepolia, &store, &d, 1_000, NOW)),
        Reason::InvalidNetwork
    );
    // A v1 payload naming the network the v2 way, and vice versa.
    let mut j = v1(&p);
    j["network"] = "eip155:8453".into();
    assert_eq!(
        unsatisfied(check(&cfg(), &decode(HeaderKind::XPayment, &j), 1_000, NOW)),
        Reason::InvalidNetwork
    );
    // Signed for Base Sepolia's domain but presented as Base: the domain is ours, so the
    // signature does not recover to the payer.
    let p = honest(&sepolia(), 1_000);
    let mut j = v1(&p);
    j["network"] = "base".into();
    let e = verify(
        &cfg(),
        &store,
        &decode(HeaderKind::XPayment, &j),
        1_000,
        NOW,
    )
    .unwrap_err();
    assert_eq!(unsatisfied(Err(e.clone())), Reason::Signature);
    assert_eq!(e.status(), 402);
    assert_eq!(
        e.invalid_reason(),
        Some("invalid_exact_evm_payload_signature")
    );
    nonce_is_free(&store, &p);
}

#[test]
fn wrong_asset_and_wrong_pay_to() {
    let (_dir, store) = store();
    let p = honest(&sepolia(), 1_000);
    let mut j = v2(&p);
    j["accepted"]["asset"] = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913".into();
    let e = verify(
        &cfg(),
        &store,
        &decode(HeaderKind::PaymentSignature, &j),
        1_000,
        NOW,
    )
    .unwrap_err();
    assert_eq!(e.invalid_reason(), Some("invalid_payment_requirements"));
    let mut j = v2(&p);
    j["accepted"]["payTo"] = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC".into();
    assert_eq!(
        unsatisfied(verify(
            &cfg(),
            &store,
            &decode(HeaderKind::PaymentSignature, &j),
            1_000,
            NOW
        )),
        Reason::RecipientMismatch
    );
    nonce_is_free(&store, &p);
    // An authorization that pays someone else, honestly signed.
    let elsewhere = payer()
        .pay(
            &sepolia(),
            "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
                .parse()
                .unwrap(),
            1_000,
            NOW,
            300,
        )
        .unwrap();
    let e = verify(
        &cfg(),
        &store,
        &decode(HeaderKind::XPayment, &v1(&elsewhere)),
        1_000,
        NOW,
    )
    .unwrap_err();
    assert_eq!(
        e.invalid_reason(),
        Some("invalid_exact_evm_payload_recipient_mismatch")
    );
}

#[test]
fn value_below_the_quote() {
    let (_dir, store) = store();
    let p = honest(&sepolia(), 999);
    let e = verify(
        &cfg(),
        &store,
        &decode(HeaderKind::XPayment, &v1(&p)),
        1_000,
        NOW,
    )
    .unwrap_err();
    assert_eq!(
        e.invalid_reason(),
        Some("invalid_exact_evm_payload_authorization_value_mismatch")
    );
    assert_eq!((e.status(), e.code()), (402, "x402_payment_invalid"));
    // The same nonce with a sufficient quote still works: nothing was claimed.
    verify(
        &cfg(),
        &store,
        &decode(HeaderKind::XPayment, &v1(&p)),
        999,
        NOW,
    )
    .unwrap();
    // Absurd values are refused, not wrapped.
    let mut j = v1(&honest(&sepolia(), 1_000));
    j["payload"]["authorization"]["value"] = "18446744073709551616".into();
    assert_eq!(
        unsatisfied(check(&cfg(), &decode(HeaderKind::XPayment, &j), 1_000, NOW)),
        Reason::ValueMismatch
    );
}

#[test]
fn tampered_fields_break_the_signature() {
    let (_dir, store) = store();
    let p = honest(&sepolia(), 1_000);
    // Raise the value after signing.
    let mut j = v1(&p);
    j["payload"]["authorization"]["value"] = "2000".into();
    assert_eq!(
        unsatisfied(verify(
            &cfg(),
            &store,
            &decode(HeaderKind::XPayment, &j),
            1_000,
            NOW
        )),
        Reason::Signature
    );
    // Extend validBefore after signing.
    let mut j = v1(&p);
    j["payload"]["authorization"]["validBefore"] = (NOW + 10_000).to_string().into();
    assert_eq!(
        unsatisfied(verify(
            &cfg(),
            &store,
            &decode(HeaderKind::XPayment, &j),
            1_000,
            NOW
        )),
        Reason::Signature
    );
    nonce_is_free(&store, &p);
}

#[test]
fn signature_by_another_key_and_high_s() {
    let (_dir, store) = store();
    let p = honest(&sepolia(), 1_000);
    // Another key signs an authorization that claims to be from the payer.
    let mallory = Signer::from_hex(DEV_KEY_2).unwrap();
    let forged = mallory.sign(&sepolia(), p.authorization.clone()).unwrap();
    let e = verify(
        &cfg(),
        &store,
        &decode(HeaderKind::XPayment, &v1(&forged)),
        1_000,
        NOW,
    )
    .unwrap_err();
    assert_eq!(unsatisfied(Err(e)), Reason::Signature);
    // The malleable twin of a good signature recovers the same key but is refused.
    let twin = SignedPayment {
        signature: high_s_twin(&p.signature),
        ..p.clone()
    };
    let e = verify(
        &cfg(),
        &store,
        &decode(HeaderKind::XPayment, &v1(&twin)),
        1_000,
        NOW,
    )
    .unwrap_err();
    assert_eq!(unsatisfied(Err(e)), Reason::Signature);
    // A bad recovery byte.
    let mut bad_v = p.clone();
    bad_v.signature[64] = 29;
    assert_eq!(
        unsatisfied(check(
            &cfg(),
            &decode(HeaderKind::XPayment, &v1(&bad_v)),
            1_000,
            NOW
        )),
        Reason::Signature
    );
    nonce_is_free(&store, &p);
}

#[test]
fn unsupported_scheme() {
    let (_dir, store) = store();
    let p = honest(&sepolia(), 1_000);
    let mut j = v1(&p);
    j["scheme"] = "upto".into();
    let e = verify(
        &cfg(),
        &store,
        &decode(HeaderKind::XPayment, &j),
        1_000,
        NOW,
    )
    .unwrap_err();
    assert_eq!(e.invalid_reason(), Some("unsupported_scheme"));
    let mut j = v2(&p);
    j["accepted"]["scheme"] = "upto".into();
    assert_eq!(
        unsatisfied(check(
            &cfg(),
            &decode(HeaderKind::PaymentSignature, &j),
            1_000,
            NOW
        )),
        Reason::UnsupportedScheme
    );
    nonce_is_free(&store, &p);
}

#[test]
fn a_replay_key_reads_back_into_its_parts() {
    let net = sepolia();
    let from = payer().address();
    let nonce = [0xabu8; 32];
    let key = replay_key(&net, &from, &nonce);
    assert_eq!(
        split_replay_key(&key),
        (net.chain_id, *net.asset.as_bytes(), nonce)
    );
}
