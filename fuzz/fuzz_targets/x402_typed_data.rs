//! Fuzz target: the EIP-712 typed-data path (digest + recovery + local checks) on arbitrary
//! authorizations never panics, and whatever the checks accept really satisfies the quote: paid
//! to our payTo, at least the quoted value, inside its time window, signed by its `from`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vectorway::config::{RawConfig, known_network};
use vectorway::payments::header::{HeaderKind, decode_json};
use vectorway::payments::verify::{check, transfer_digest};

const QUOTE: u64 = 1_000;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = decode_json(HeaderKind::XPayment, data) else { return };
    let Some(net) = known_network("base-sepolia") else { return };
    let _ = transfer_digest(&net, &p.authorization);
    let Ok(cfg) = RawConfig::default().validate() else { return };
    let now = u64::from(data.first().copied().unwrap_or(0)) * 10_000_000;
    if let Ok(c) = check(&cfg.x402, &p, QUOTE, now) {
        let a = &p.authorization;
        assert_eq!(a.to, cfg.x402.pay_to, "accepted a payment to someone else");
        assert!(c.amount >= QUOTE, "accepted {} below the quote", c.amount);
        assert!(a.valid_after.saturating_u64() <= now, "accepted before validAfter");
        assert!(now < c.valid_before, "accepted after validBefore");
        assert_eq!(c.payer, a.from);
        let digest = transfer_digest(&c.network, a);
        assert_eq!(
            vectorway::crypto::recover(&digest, &p.signature).ok(),
            Some(a.from),
            "accepted a signature that does not recover to from"
        );
    }
    let _ = vectorway::crypto::recover(&[0u8; 32], &p.signature);
});
