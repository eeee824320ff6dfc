//! Fuzz target: media content parts and header readers. Arbitrary bytes go through the magic
//! and header readers, through `Media::new` as each declared kind, as a base64 `data:` URL image
//! part of a chat request (`parse_chat` → `to_call` → the Gemini body), and as the text of a
//! `content` array. Nothing panics; accepted media has a token bound of at least one tile that
//! covers Gemini's tile rule for the size read; the Gemini body carries the bytes unchanged.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use libfuzzer_sys::fuzz_target;
use vectorway::api::types::parse_chat;
use vectorway::billing::pricing::ModelPrice;
use vectorway::media::{probe, Declared, Kind, Media, image_tokens};
use vectorway::openai::content::{data_url, decode_base64};

fuzz_target!(|data: &[u8]| {
    let _ = (probe::sniff(data), probe::wav_micros(data), probe::mp3_micros(data));
    let dims = probe::dimensions(data);
    for declared in [Declared::Image, Declared::Wav, Declared::Mp3, Declared::Pdf] {
        if let Ok(m) = Media::new(declared, data, None) {
            for model in ["gemini-2.5-flash", "gemini-3.5-flash"] {
                let t = m.prompt_tokens(model);
                assert!(t >= 258 && t <= m.prompt_tokens_any());
                if let (Kind::Image(_), Some((w, h))) = (m.kind, dims) {
                    assert!(t >= image_tokens(w, h));
                }
            }
            assert_eq!(STANDARD.decode(&*m.data).ok().as_deref(), Some(data));
        }
    }
    let text = String::from_utf8_lossy(data);
    if let Ok((_, encoded)) = data_url(&text) {
        let _ = decode_base64(encoded);
    }
    let model = ModelPrice::new("m".into(), "gemini-2.5-flash".into(), vec![], 300_000, 2_500_000, None, 1_200_000, 1, 65_536);
    let url = format!("data:image/png;base64,{}", STANDARD.encode(data));
    let body = serde_json::json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": url}}]}]});
    if let Ok(req) = parse_chat(body.to_string().as_bytes()) {
        assert!(req.prompt_token_bound() >= 258 + 13 + 16);
        let gemini = vectorway::upstream::gemini::translate::encode_request(&req.to_call(&model, 64));
        let v: serde_json::Value = serde_json::from_slice(&gemini).unwrap();
        let sent = v["contents"][0]["parts"][1]["inlineData"]["data"].as_str().unwrap();
        assert_eq!(STANDARD.decode(sent).unwrap(), data);
    }
    // The bytes as a content array (any JSON shape must be refused cleanly or accepted).
    let body = format!(r#"{{"messages":[{{"role":"user","content":{text}}}]}}"#);
    if let Ok(req) = parse_chat(body.as_bytes()) {
        let _ = req.to_call(&model, 64);
    }
});
