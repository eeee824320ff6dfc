//! Fuzz target: the incremental SSE decoder and the Gemini chunk decoder never panic, and any
//! split of the same bytes yields the same events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vectorway::upstream::gemini::sse::decode_all;
use vectorway::upstream::gemini::translate::{decode_chunk, decode_stream_tail};

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else { return };
    let at = usize::from(split) % (bytes.len() + 1);
    let whole = decode_all(&[bytes]);
    let halves = decode_all(&[&bytes[..at], &bytes[at..]]);
    assert_eq!(whole, halves, "split at {at}");
    if let Ok(items) = whole {
        let mut out = Vec::new();
        for item in items {
            match item {
                vectorway::upstream::gemini::sse::SseItem::Data(d) => {
                    let _ = decode_chunk(&d, &mut out);
                }
                vectorway::upstream::gemini::sse::SseItem::Raw(r) => {
                    let _ = decode_stream_tail(&r);
                }
            }
        }
    }
});
