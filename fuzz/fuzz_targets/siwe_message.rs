//! Fuzz target: the EIP-4361 parser and the RFC 3339 parser never panic; whatever parses
//! re-verifies without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vectorway::auth::siwe::{Siwe, format_rfc3339, parse, parse_rfc3339};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(t) = parse_rfc3339(text) {
        // Whatever parses formats back to something that parses to the same instant.
        assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
    }
    if let Ok(m) = parse(text) {
        assert!(m.nonce.len() >= 8);
        let siwe = Siwe::new(m.domain.clone(), vec![m.chain_id], std::time::Duration::from_secs(300));
        let _ = siwe.verify(text, "0x00", m.issued_at);
    }
});
