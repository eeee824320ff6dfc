//! Prompt tokens of `inlineData` / `fileData` parts, by Gemini's published image rule.
//!
//! The reference (§1.6) names the `IMAGE` / `AUDIO` / `VIDEO` / `DOCUMENT` modalities of
//! `promptTokensDetails` but not the counts; the counts here follow Google's token guide for
//! Gemini 2.x: an image with both sides at most 384 px is 258 tokens; a larger one is cut into
//! 768×768 tiles of 258 tokens each (ceil(w/768) × ceil(h/768) tiles). The simulator reads the
//! size with the gateway's own header reader (`crate::media::probe::dimensions`: PNG, JPEG, WebP,
//! HEIC/HEIF, GIF) and counts it with the gateway's `crate::media::image_tokens`; an image it
//! cannot size (a `fileData` URI, corrupt data) counts as one 258-token tile.
//!
//! Audio counts 32 tokens per second (Google's token guide), the length read by the gateway's own
//! readers (`crate::media::probe`: the WAV `fmt `/`data` chunks, the MP3 frames), seconds rounded
//! up; a clip it cannot time counts a flat 258. A PDF counts 258 tokens per page (Google's
//! document guide, Gemini 2.x), at most `PDF_MAX_PAGES` pages and at least one, the pages counted
//! by a rough but deterministic rule: the occurrences of the name `/Type /Page` (whitespace
//! optional, `/Pages` excluded) in the raw bytes — a page object in a compressed object stream is
//! not seen, which only lowers the count below the gateway's bound. Video and a `fileData` URI
//! count a flat 258. The simulator does not model Gemini 3's `media_resolution` counts.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use super::field;
use crate::media::probe::{self, Sniffed};
use crate::media::{AUDIO_MAX_SECS, AUDIO_TOKENS_PER_SEC, PDF_MAX_PAGES, image_tokens};

/// Tokens of one image tile (and of a small image).
pub(super) const TILE_TOKENS: u64 = crate::media::TILE_TOKENS;

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
    if !inline {
        return Some((modality, TILE_TOKENS));
    }
    let data = || {
        let d = blob.get("data").and_then(Value::as_str).unwrap_or("");
        STANDARD.decode(d).unwrap_or_default()
    };
    match modality {
        "AUDIO" => return Some((modality, audio_tokens(&data()))),
        "DOCUMENT" => return Some((modality, pdf_pages(&data()) * TILE_TOKENS)),
        "IMAGE" => {}
        _ => return Some((modality, TILE_TOKENS)),
    }
    let size = blob
        .get("data")
        .and_then(Value::as_str)
        .and_then(|d| probe::dimensions(&head(d)));
    Some((
        "IMAGE",
        size.map_or(TILE_TOKENS, |(w, h)| image_tokens(w, h)),
    ))
}

/// 32 tokens per second of a WAV or MP3 clip (seconds rounded up); 258 for one it cannot time.
pub(super) fn audio_tokens(b: &[u8]) -> u64 {
    let micros = match probe::sniff(b) {
        Some(Sniffed::Wav) => probe::wav_micros(b),
        Some(Sniffed::Mp3) => Some(probe::mp3_micros(b)),
        _ => None,
    };
    micros.map_or(TILE_TOKENS, |m| {
        m.div_ceil(1_000_000)
            .min(AUDIO_MAX_SECS)
            .saturating_mul(AUDIO_TOKENS_PER_SEC)
    })
}

/// Pages of a PDF by the module's rule: `/Type /Page` names, 1 to `PDF_MAX_PAGES`.
pub(super) fn pdf_pages(b: &[u8]) -> u64 {
    let mut pages = 0u64;
    let mut rest = b;
    while let Some(at) = find(rest, b"/Type") {
        rest = &rest[at + 5..];
        let name = rest.trim_ascii_start();
        let is_name_char = |c: &u8| c.is_ascii_alphanumeric() || *c == b'_';
        if name.starts_with(b"/Page") && !name.get(5).is_some_and(is_name_char) {
            pages += 1;
        }
    }
    pages.clamp(1, PDF_MAX_PAGES)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The first bytes of base64 data (enough for any header we read).
fn head(data: &str) -> Vec<u8> {
    let cut = data.len().min(1 << 20) / 4 * 4;
    STANDARD
        .decode(data.get(..cut).unwrap_or(""))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A mono 16-bit WAV of `secs` seconds at 8 kHz.
    fn wav(secs: u32) -> Vec<u8> {
        let data = secs * 16_000;
        let mut b = b"RIFF".to_vec();
        b.extend_from_slice(&(36 + data).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&[1, 0, 1, 0]);
        b.extend_from_slice(&8_000u32.to_le_bytes());
        b.extend_from_slice(&16_000u32.to_le_bytes());
        b.extend_from_slice(&[2, 0, 16, 0]);
        b.extend_from_slice(b"data");
        b.extend_from_slice(&data.to_le_bytes());
        b.resize(b.len() + data as usize, 0);
        b
    }

    fn part(mime: &str, bytes: &[u8]) -> Value {
        json!({"inlineData": {"mimeType": mime, "data": STANDARD.encode(bytes)}})
    }

    #[test]
    fn audio_counts_32_tokens_a_second_and_an_untimed_clip_258() {
        assert_eq!(tokens(&part("audio/wav", &wav(5))), Some(("AUDIO", 160)));
        assert_eq!(tokens(&part("audio/wav", &wav(60))), Some(("AUDIO", 1920)));
        assert_eq!(
            tokens(&part("audio/wav", b"not audio")),
            Some(("AUDIO", 258))
        );
    }

    #[test]
    fn a_pdf_counts_258_tokens_per_page_object() {
        let pdf = b"%PDF-1.4\n1 0 obj <</Type /Pages /Count 3>> endobj\n\
            2 0 obj <</Type /Page>> endobj 3 0 obj <</Type/Page/Parent 1 0 R>> endobj\n\
            4 0 obj <</Type\n/Page >> endobj 5 0 obj <</Type /PageLabel>> endobj\n%%EOF";
        assert_eq!(pdf_pages(pdf), 3);
        assert_eq!(
            tokens(&part("application/pdf", pdf)),
            Some(("DOCUMENT", 3 * 258))
        );
        assert_eq!(pdf_pages(b"%PDF-1.7\n%%EOF"), 1, "at least one page");
        let many = b"<</Type /Page>>".repeat(1500);
        assert_eq!(pdf_pages(&many), PDF_MAX_PAGES);
    }
}
