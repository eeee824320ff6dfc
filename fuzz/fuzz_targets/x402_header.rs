//! Fuzz target: both x402 header decoders (v2 `PAYMENT-SIGNATURE`, v1 `X-PAYMENT`), from raw
//! header bytes and from the JSON inside, never panic; what decodes keeps its invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vectorway::payments::header::{HeaderKind, decode_json, decode_value};

fuzz_target!(|data: &[u8]| {
    for kind in [HeaderKind::PaymentSignature, HeaderKind::XPayment] {
        if let Ok(p) = decode_value(kind, data) {
            assert_eq!(p.header, kind);
        }
        if let Ok(p) = decode_json(kind, data) {
            // A decoded payment always has a full 65-byte signature and a 32-byte nonce.
            assert_eq!(p.signature.len(), 65);
            assert_eq!(p.authorization.nonce.len(), 32);
        }
    }
});
