//! Prompt tokens of `inlineData` / `fileData` parts, by Gemini's published image rule.
//!
//! The reference (§1.6) names the `IMAGE` / `AUDIO` / `VIDEO` / `DOCUMENT` modalities of
//! `promptTokensDetails` but not the counts; the counts here follow Google's token guide for
//! Gemini 2.x: an image with both sides at most 384 px is 258 tokens; a larger one is cut into
//! 768×768 tiles of 258 tokens each (ceil(w/768) × ceil(h/768) tiles). The simulator reads the
//! size from PNG, GIF and JPEG headers; an image it cannot size (WebP, a `fileData` URI, corrupt
//! data) counts as one 258-token tile. Any other media part (audio, video, PDF) counts a flat 258
//! under its modality: the simulator does not decode durations or pages.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use super::field;

/// Tokens of one image tile (and of a small image).
pub(super) const TILE_TOKENS: u64 = 258;

/// The modality and prompt tokens of a media part, or `None` for any other part.
pub(super) fn tokens(part: &Value) -> Option<(&'static str, u64)> {
    let (blob, inline) = match field(part, "inlineData", "inline_data") {
        Some(b) => (b, true),
        None => (field(part, "fileData", "file_data")?, false),
    };
    let mime = field(blob, "mimeType", "mime_type")
        .and_then(Value::as_str)
        .unwrap_or("");
    let modality = match mime.split('/').next().unwrap_or("") {
        "image" => "IMAGE",
        "audio" => "AUDIO",
        "video" => "VIDEO",
        _ if mime == "application/pdf" => "DOCUMENT",
        _ => "TEXT",
    };
    if modality != "IMAGE" || !inline {
        return Some((modality, TILE_TOKENS));
    }
    let size = blob
        .get("data")
        .and_then(Value::as_str)
        .and_then(|d| dimensions(&head(d)));
    Some((
        "IMAGE",
        size.map_or(TILE_TOKENS, |(w, h)| image_tokens(w, h)),
    ))
}

/// Gemini's image rule: ≤384 px both sides → 258, else 258 per 768×768 tile.
pub(super) fn image_tokens(w: u32, h: u32) -> u64 {
    if w <= 384 && h <= 384 {
        return TILE_TOKENS;
    }
    u64::from(w.div_ceil(768)) * u64::from(h.div_ceil(768)) * TILE_TOKENS
}

/// The first bytes of base64 data (enough for any header we read).
fn head(data: &str) -> Vec<u8> {
    let cut = data.len().min(1 << 20) / 4 * 4;
    STANDARD
        .decode(data.get(..cut).unwrap_or(""))
        .unwrap_or_default()
}

fn be16(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from(u16::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
    ])))
}

/// Width and height from a PNG, GIF or JPEG header.
fn dimensions(b: &[u8]) -> Option<(u32, u32)> {
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        let w = u32::from_be_bytes(b.get(16..20)?.try_into().ok()?);
        let h = u32::from_be_bytes(b.get(20..24)?.try_into().ok()?);
        return Some((w, h));
    }
    if b.starts_with(b"GIF8") {
        let w = u32::from(u16::from_le_bytes([*b.get(6)?, *b.get(7)?]));
        let h = u32::from(u16::from_le_bytes([*b.get(8)?, *b.get(9)?]));
        return Some((w, h));
    }
    if b.starts_with(&[0xff, 0xd8]) {
        let mut i = 2;
        while i + 9 < b.len() {
            if b[i] != 0xff {
                return None;
            }
            let marker = b[i + 1];
            if (0xc0..=0xcf).contains(&marker) && !matches!(marker, 0xc4 | 0xc8 | 0xcc) {
                return Some((be16(b, i + 7)?, be16(b, i + 5)?));
            }
            i += 2 + be16(b, i + 2)? as usize;
        }
    }
    None
}
