//! Fuzz target: query-string decoding never panics and never grows its input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vectorway::http::{percent_decode, query_pairs};

fuzz_target!(|data: &[u8]| {
    let Ok(q) = std::str::from_utf8(data) else { return };
    for (k, v) in query_pairs(Some(q)) {
        assert!(k.len() + v.len() <= q.len() * 3);
    }
    let _ = percent_decode(q);
});
