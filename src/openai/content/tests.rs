//! Tests of content-part parsing through `parse_chat`: data URLs, roles, the errors' codes and
//! params, and what reaches the neutral call.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::*;
use crate::api::types::{ChatRequest, MessageRole, parse_chat};
use crate::error::Error;
use crate::upstream::{Blob, Part};

fn png(w: u32, h: u32) -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    b.extend_from_slice(&w.to_be_bytes());
    b.extend_from_slice(&h.to_be_bytes());
    b.extend_from_slice(&[8, 6, 0, 0, 0]);
    b
}

fn data_png(w: u32, h: u32) -> String {
    format!("data:image/png;base64,{}", STANDARD.encode(png(w, h)))
}

fn chat(content: Value) -> Result<ChatRequest, RequestError> {
    chat_as("user", content)
}

fn chat_as(role: &str, content: Value) -> Result<ChatRequest, RequestError> {
    let mut messages = vec![json!({"role": role, "content": content})];
    if role != "user" {
        messages.push(json!({"role": "user", "content": "hi"}));
    }
    parse_chat(json!({"messages": messages}).to_string().as_bytes())
}

/// The error's (code, param), as the client sees them.
fn refusal(r: Result<ChatRequest, RequestError>) -> (u16, String, String) {
    let e = Error::from(r.expect_err("must be refused"));
    (
        e.status().as_u16(),
        e.code().to_string(),
        e.param().unwrap_or_default().to_string(),
    )
}

#[test]
fn a_data_url_image_becomes_inline_data_in_order_with_the_text() {
    let r = chat(json!([
        {"type": "text", "text": "what is "},
        {"type": "image_url", "image_url": {"url": data_png(1000, 800), "detail": "high"}},
        {"type": "text", "text": "this?"}
    ]))
    .unwrap();
    let m = &r.messages[0];
    assert_eq!(
        m.text, "what is this?",
        "text only, for memory and the text bound"
    );
    assert_eq!(m.pieces.len(), 3);
    let Piece::Media(media) = &m.pieces[1] else {
        panic!("{:?}", m.pieces)
    };
    assert_eq!(
        (media.mime, media.kind),
        ("image/png", crate::media::Kind::Image(Some((1000, 800))))
    );
    // The bound: text bytes + 16, plus 4 tiles on 2.5 (and Gemini 3's floor on 3.x).
    assert_eq!(r.prompt_bound_for("gemini-2.5-flash"), 13 + 16 + 4 * 258);
    assert_eq!(r.prompt_bound_for("gemini-3.5-flash"), 13 + 16 + 1120);
    assert_eq!(r.prompt_token_bound(), 13 + 16 + 1120);
    let price = crate::config::RawConfig::default().validate().unwrap();
    let model = price.prices.get("gemini-2.5-flash").unwrap();
    let call = r.to_call(model, 64);
    let parts = &call.turns[0].parts;
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0], Part::Text("what is ".into()));
    assert_eq!(
        parts[1],
        Part::Media(Blob {
            mime: "image/png".into(),
            data: STANDARD.encode(png(1000, 800)).into()
        })
    );
    let body: Value =
        serde_json::from_slice(&crate::upstream::gemini::translate::encode_request(&call)).unwrap();
    assert_eq!(
        body["contents"][0]["parts"][1],
        json!({"inlineData": {"mimeType": "image/png", "data": STANDARD.encode(png(1000, 800))}})
    );
}

#[test]
fn text_only_parts_stay_a_plain_text_turn() {
    let r = chat(json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])).unwrap();
    assert!(r.messages[0].pieces.is_empty());
    assert_eq!(r.prompt_token_bound(), 2 + 16);
}

#[test]
fn data_urls_are_parsed_strictly() {
    assert_eq!(
        data_url("data:Image/PNG;name=x.png;base64,AAAA").unwrap(),
        ("image/png".to_string(), "AAAA")
    );
    for bad in [
        "data:image/png,%89PNG",
        "data:image/png;base64",
        "data:;base64,AAAA",
        "http://x/y.png",
    ] {
        assert!(data_url(bad).is_err(), "{bad}");
    }
    assert_eq!(decode_base64("aGk=").unwrap(), b"hi");
    assert_eq!(decode_base64("aGk").unwrap(), b"hi", "padding is optional");
    assert_eq!(
        decode_base64("aG\nk=").unwrap(),
        b"hi",
        "line breaks are ignored"
    );
    assert!(decode_base64("aGk*").is_err());
    assert!(
        decode_base64("aGl=").is_err(),
        "non-canonical trailing bits"
    );
    assert!(decode_base64("").is_err());
    assert!(
        decode_base64("aG-_").is_err(),
        "URL-safe alphabet is not base64 here"
    );
}

#[test]
fn non_canonical_base64_is_re_encoded() {
    let raw = STANDARD.encode(png(10, 10));
    let wrapped: String = raw
        .as_bytes()
        .chunks(16)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let r = chat(json!([{"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{wrapped}")}}]))
        .unwrap();
    let Piece::Media(m) = &r.messages[0].pieces[0] else {
        panic!()
    };
    assert_eq!(&*m.data, raw.as_str());
}

#[test]
fn bad_parts_are_400s_naming_the_part() {
    let cases = [
        (
            json!([{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]),
            "invalid_content_part",
            "messages[0].content[1].image_url.url",
        ),
        (
            json!([{"type": "image_url", "image_url": {"url": "data:image/gif;base64,R0lGODlhAQABAAAAACw="}}]),
            "unsupported_media_type",
            "messages[0].content[0].image_url.url",
        ),
        (
            json!([{"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", STANDARD.encode(b"GIF89a\x01\0\x01\0"))}}]),
            "unsupported_media_type",
            "messages[0].content[0].image_url.url",
        ),
        (
            json!([{"type": "image_url", "image_url": {"url": "ftp://example.com/a.png"}}]),
            "invalid_content_part",
            "messages[0].content[0].image_url.url",
        ),
        (
            json!([{"type": "image_url", "image_url": {"url": data_png(1, 1), "detail": "max"}}]),
            "invalid_content_part",
            "messages[0].content[0].image_url.detail",
        ),
        (
            json!([{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "flac"}}]),
            "unsupported_media_type",
            "messages[0].content[0].input_audio.format",
        ),
        (
            json!([{"type": "input_audio", "input_audio": {"data": STANDARD.encode(png(1, 1)), "format": "wav"}}]),
            "unsupported_media_type",
            "messages[0].content[0].input_audio.data",
        ),
        (
            json!([{"type": "file", "file": {"file_id": "file-abc"}}]),
            "invalid_content_part",
            "messages[0].content[0].file.file_id",
        ),
        (
            json!([{"type": "file", "file": {"file_data": format!("data:text/plain;base64,{}", STANDARD.encode("hi"))}}]),
            "unsupported_media_type",
            "messages[0].content[0].file.file_data",
        ),
    ];
    for (content, code, param) in cases {
        assert_eq!(
            refusal(chat(content.clone())),
            (400, code.to_string(), param.to_string()),
            "{content}"
        );
    }
}

#[test]
fn media_is_only_for_user_messages() {
    for role in ["system", "developer", "assistant"] {
        let content = json!([{"type": "image_url", "image_url": {"url": data_png(1, 1)}}]);
        assert_eq!(
            refusal(chat_as(role, content)),
            (
                400,
                "invalid_content_part".into(),
                "messages[0].content[0].type".into()
            ),
            "{role}"
        );
    }
    // An assistant's refusal part is its text; elsewhere it is an unknown part.
    let r = chat_as("assistant", json!([{"type": "refusal", "refusal": "no"}])).unwrap();
    assert_eq!(
        (r.messages[0].role, r.messages[0].text.as_str()),
        (MessageRole::Assistant, "no")
    );
    assert_eq!(
        refusal(chat(json!([{"type": "refusal", "refusal": "no"}]))).0,
        422
    );
    assert_eq!(
        refusal(chat(json!([{"type": "video_url", "video_url": {}}]))).0,
        422
    );
}

#[test]
fn audio_and_pdf_parts() {
    let mut wav =
        b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0\x80\x3e\0\0\0\x7d\0\0\x02\0\x10\0data"
            .to_vec();
    wav.extend_from_slice(&64_000u32.to_le_bytes());
    wav.extend_from_slice(&vec![0; 64_000]);
    let pdf = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\n%%EOF";
    let r = chat(json!([
        {"type": "input_audio", "input_audio": {"data": STANDARD.encode(&wav), "format": "wav"}},
        {"type": "file", "file": {"file_data": format!("data:application/pdf;base64,{}", STANDARD.encode(pdf)), "filename": "a.pdf"}},
        {"type": "file", "file": {"file_data": STANDARD.encode(pdf)}},
        {"type": "image_url", "image_url": "https://example.com/cat.png"}
    ]))
    .unwrap();
    let p = &r.messages[0].pieces;
    let mimes: Vec<&str> = p
        .iter()
        .filter_map(|x| match x {
            Piece::Media(m) => Some(m.mime),
            _ => None,
        })
        .collect();
    assert_eq!(mimes, ["audio/wav", "application/pdf", "application/pdf"]);
    assert!(matches!(&p[3], Piece::Remote { url, param }
        if url == "https://example.com/cat.png" && param == "messages[0].content[3].image_url.url"));
    // 2 s of 16 kHz 16-bit audio = 64 tokens, floored at 258; two PDFs at 1000 pages; the URL
    // at the unknown-size bound until it is fetched.
    let unknown = crate::media::image_tokens(16_384, 16_384);
    assert_eq!(
        r.prompt_bound_for("gemini-2.5-flash"),
        16 + 258 + 2 * 258_000 + unknown
    );
}

#[test]
fn giant_claimed_sizes_saturate_the_bound_instead_of_wrapping() {
    let part = json!({"type": "image_url", "image_url": {"url": data_png(u32::MAX, u32::MAX)}});
    let r = chat(Value::Array(vec![part; 3000])).unwrap();
    assert_eq!(r.prompt_bound_for("gemini-2.5-flash"), u64::MAX);
    assert_eq!(r.prompt_token_bound(), u64::MAX);
    let config = crate::config::RawConfig::default().validate().unwrap();
    let flash = config.prices.get("gemini-2.5-flash").unwrap();
    assert!(
        r.cost_bound(flash, 64, 0) > 1 << 60,
        "priced out, not wrapped to a small hold"
    );
}
