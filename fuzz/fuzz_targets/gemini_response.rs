//! Fuzz target: Gemini unary answers and error bodies decode or fail cleanly, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vectorway::upstream::gemini::translate::{decode_error, decode_response};

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = decode_response(data) {
        assert!(c.usage.total() >= c.usage.completion);
    }
    let status = 400 + u16::from(data.first().copied().unwrap_or(0)) % 200;
    let _ = decode_error(status, data, "gemini-2.5-flash");
});
