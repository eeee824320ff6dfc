//! Fuzz target: the EIP-712 typed-data path (digest + recovery + local checks) on arbitrary
//! authorizations never panics, and a refused payment never claims a nonce.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vectorway::config::{RawConfig, known_network};
use vectorway::payments::header::{HeaderKind, decode_json};
use vectorway::payments::verify::{check, transfer_digest};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = decode_json(HeaderKind::XPayment, data) else { return };
    let Some(net) = known_network("base-sepolia") else { return };
    let _ = transfer_digest(&net, &p.authorization);
    let Ok(cfg) = RawConfig::default().validate() else { return };
    let now = u64::from(data.first().copied().unwrap_or(0)) * 10_000_000;
    let _ = check(&cfg.x402, &p, 1_000, now);
    let _ = vectorway::crypto::recover(&[0u8; 32], &p.signature);
});
