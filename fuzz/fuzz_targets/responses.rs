//! Fuzz target: the Responses API translators never panic. The first byte picks one: a request
//! (what translates is a JSON chat body, and a chat error on it renames to a Responses path), a
//! chat answer (always a JSON Response), or a chat stream given as newline-separated payloads
//! (every frame is a typed event whose `event:` is its `type`, numbered from 0 in order, or the
//! x402 tail).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use vectorway::api::types::parse_chat;
use vectorway::openai::responses::{EventStream, response, translate};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 3 {
        0 => {
            if let Ok(t) = translate(rest) {
                let chat: Value = serde_json::from_slice(&t.chat).expect("the chat body is JSON");
                assert!(chat["messages"].is_array());
                if let Err(e) = parse_chat(&t.chat) {
                    let _ = t.remap(e);
                }
                let _ = t.echo.response("resp_x", 0, "m", "completed");
            }
        }
        1 => {
            let echo = translate(br#"{"input":"x"}"#).expect("a minimal request").echo;
            let out = response(rest, &echo, 0);
            let v: Value = serde_json::from_slice(&out).expect("a JSON Response");
            assert_eq!(v["object"], "response");
        }
        _ => {
            let echo = translate(br#"{"input":"x","stream":true}"#).expect("a minimal request").echo;
            let mut s = EventStream::new("f", "m", 0, &echo);
            let mut out = Vec::new();
            s.start(&mut out);
            for payload in rest.split(|&b| b == b'\n') {
                s.feed(payload, &mut out);
            }
            s.finish(&mut out);
            let text = std::str::from_utf8(&out).expect("UTF-8 frames");
            let mut seq = 0u64;
            let mut tail = false;
            for frame in text.split("\n\n").filter(|f| !f.is_empty()) {
                if frame == "data: [DONE]" || frame.starts_with("event: x402-receipt\n") {
                    tail = true;
                    continue;
                }
                assert!(!tail, "nothing typed follows the x402 tail");
                let (event, data) = frame
                    .strip_prefix("event: ")
                    .and_then(|f| f.split_once("\ndata: "))
                    .expect("event and data lines");
                let v: Value = serde_json::from_str(data).expect("JSON data");
                assert_eq!(v["type"], event);
                assert_eq!(v["sequence_number"], seq);
                seq += 1;
            }
            assert!(seq >= 3, "created, in_progress and a terminal event");
        }
    }
});
