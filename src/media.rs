//! Media a chat turn carries to Gemini (images, audio, PDF): what is accepted, and the most
//! prompt tokens each can cost, by Gemini's published rules.
//!
//! - `probe`: pure header readers (magic bytes, image size, audio length), fuzzed.
//! - `ssrf`: which addresses an image URL may reach (pure).
//! - `fetch`: the gateway's own HTTP fetch of `https://` image URLs (DNS checked, then connected
//!   to the checked address; size cap, time-outs, content-type allow-list, re-checked redirects).
//!
//! Token rules (each a bound the hold is sized on; it must never be below what Gemini, or the
//! simulator that counts like it, reports):
//! - Image, Gemini 2.x: 258 tokens when both sides are at most 384 px, else 258 per 768×768
//!   tile (Google's token guide). Gemini 3.x gives an image at most 1120 tokens by default
//!   (`media_resolution` high); the bound there is the larger of that and the tile rule. An
//!   image whose size cannot be read counts as `UNKNOWN_SIDE` × `UNKNOWN_SIDE`.
//! - Audio: 32 tokens per second, the length read from the WAV header or by walking the MP3
//!   frames (`probe`), at least 258 (what the simulator counts for a clip it cannot time) and
//!   at most Gemini's 9.5 hours per prompt.
//! - PDF: 258 tokens per page on 2.x, 560 on 3.x (`media_resolution` medium). Page counts are not
//!   trusted (a page tree can hide pages in compressed object streams, name escapes, or leaves
//!   without `/Type`), so a PDF is bounded at Gemini's limit of `PDF_MAX_PAGES` pages.

pub mod fetch;
pub mod probe;
pub mod ssrf;

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use probe::Sniffed;

/// Tokens of one image tile (and of a small image) on Gemini 2.x.
pub const TILE_TOKENS: u64 = 258;
/// Gemini 3.x's default (`media_resolution` high) tokens per image.
pub const GEMINI3_IMAGE_TOKENS: u64 = 1120;
/// Gemini 3.x's default (`media_resolution` medium) tokens per PDF page.
pub const GEMINI3_PAGE_TOKENS: u64 = 560;
/// Pages Gemini reads of one PDF at most.
pub const PDF_MAX_PAGES: u64 = 1000;
/// Audio tokens per second.
pub const AUDIO_TOKENS_PER_SEC: u64 = 32;
/// Audio Gemini takes in one prompt at most: 9.5 hours.
pub const AUDIO_MAX_SECS: u64 = 34_200;
/// The side assumed for an image whose header cannot be read.
pub const UNKNOWN_SIDE: u32 = 16_384;

/// The image types Gemini accepts (its image-understanding guide lists exactly these; GIF and
/// AVIF are not among them).
pub const IMAGE_MIMES: [&str; 5] = [
    "image/png",
    "image/jpeg",
    "image/webp",
    "image/heic",
    "image/heif",
];

/// Gemini's image tile rule.
pub fn image_tokens(w: u32, h: u32) -> u64 {
    if w <= 384 && h <= 384 {
        return TILE_TOKENS;
    }
    u64::from(w.div_ceil(768)) * u64::from(h.div_ceil(768)) * TILE_TOKENS
}

/// What a piece of media is, with what its token bound needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Width and height when the header could be read.
    Image(Option<(u32, u32)>),
    /// Length in microseconds, when it could be measured.
    Audio(Option<u64>),
    Pdf,
}

/// One accepted piece of media: its type, its data as standard base64 (what Gemini's
/// `inlineData.data` takes), its decoded size and its kind.
#[derive(Clone, PartialEq, Eq)]
pub struct Media {
    pub mime: &'static str,
    pub data: Arc<str>,
    pub bytes: usize,
    pub kind: Kind,
}

impl std::fmt::Debug for Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Media")
            .field("mime", &self.mime)
            .field("bytes", &self.bytes)
            .field("kind", &self.kind)
            .finish()
    }
}

/// What the client said the media is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    /// An image part (any of `IMAGE_MIMES`; the bytes decide which).
    Image,
    /// `input_audio` with `format` wav or mp3.
    Wav,
    Mp3,
    /// A `file` part: PDF only.
    Pdf,
}

/// Why bytes were not accepted as the declared media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

impl Media {
    /// Checks `bytes` against what was declared by their magic numbers and reads what the token
    /// bound needs. `encoded` is the client's base64 when it is already canonical (reused as is).
    pub fn new(
        declared: Declared,
        bytes: &[u8],
        encoded: Option<&str>,
    ) -> Result<Self, Unsupported> {
        let sniffed = probe::sniff(bytes);
        let kind = match (declared, sniffed) {
            (
                Declared::Image,
                Some(Sniffed::Png | Sniffed::Jpeg | Sniffed::Webp | Sniffed::Heic | Sniffed::Heif),
            ) => Kind::Image(probe::dimensions(bytes)),
            (Declared::Image, Some(s @ (Sniffed::Gif | Sniffed::Avif))) => {
                return Err(Unsupported(format!(
                    "{} images are not accepted by Gemini; send PNG, JPEG, WebP, HEIC or HEIF",
                    s.mime()
                )));
            }
            (Declared::Image, _) => {
                return Err(Unsupported(
                    "the data is not a PNG, JPEG, WebP, HEIC or HEIF image".into(),
                ));
            }
            (Declared::Wav, Some(Sniffed::Wav)) => Kind::Audio(probe::wav_micros(bytes)),
            (Declared::Mp3, Some(Sniffed::Mp3)) => Kind::Audio(Some(probe::mp3_micros(bytes))),
            (Declared::Wav, _) => {
                return Err(Unsupported("the data is not a WAV file".into()));
            }
            (Declared::Mp3, _) => {
                return Err(Unsupported("the data is not an MP3 file".into()));
            }
            (Declared::Pdf, Some(Sniffed::Pdf)) => Kind::Pdf,
            (Declared::Pdf, _) => {
                return Err(Unsupported("the data is not a PDF file".into()));
            }
        };
        let mime = match sniffed {
            Some(s) => s.mime(),
            None => return Err(Unsupported("unrecognized data".into())),
        };
        let data: Arc<str> = match encoded {
            Some(e) => e.into(),
            None => STANDARD.encode(bytes).into(),
        };
        Ok(Self {
            mime,
            data,
            bytes: bytes.len(),
            kind,
        })
    }

    /// The most prompt tokens this media can cost on `upstream_model` (see the module rules).
    pub fn prompt_tokens(&self, upstream_model: &str) -> u64 {
        let g3 = crate::upstream::gemini3(upstream_model);
        match self.kind {
            Kind::Image(dims) => {
                let (w, h) = dims.unwrap_or((UNKNOWN_SIDE, UNKNOWN_SIDE));
                let tiles = image_tokens(w, h);
                if g3 {
                    tiles.max(GEMINI3_IMAGE_TOKENS)
                } else {
                    tiles
                }
            }
            Kind::Audio(micros) => {
                let secs = micros.map_or(AUDIO_MAX_SECS, |m| m.div_ceil(1_000_000));
                (secs.min(AUDIO_MAX_SECS) * AUDIO_TOKENS_PER_SEC).max(TILE_TOKENS)
            }
            Kind::Pdf => PDF_MAX_PAGES * if g3 { GEMINI3_PAGE_TOKENS } else { TILE_TOKENS },
        }
    }

    /// The bound on any model: the larger of the two families' rules.
    pub fn prompt_tokens_any(&self) -> u64 {
        self.prompt_tokens("gemini-2")
            .max(self.prompt_tokens("gemini-3"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        b.extend_from_slice(&w.to_be_bytes());
        b.extend_from_slice(&h.to_be_bytes());
        b.extend_from_slice(&[8, 6, 0, 0, 0]);
        b
    }

    #[test]
    fn the_tile_rule_and_the_gemini3_floor() {
        assert_eq!(image_tokens(384, 384), 258);
        assert_eq!(image_tokens(385, 10), 258);
        assert_eq!(image_tokens(1000, 800), 4 * 258);
        assert_eq!(image_tokens(769, 1537), 6 * 258);
        let small = Media::new(Declared::Image, &png(300, 200), None).unwrap();
        assert_eq!(small.mime, "image/png");
        assert_eq!(small.prompt_tokens("gemini-2.5-flash"), 258);
        assert_eq!(small.prompt_tokens("gemini-3.5-flash"), 1120);
        let big = Media::new(Declared::Image, &png(4000, 3000), None).unwrap();
        assert_eq!(big.prompt_tokens("gemini-2.5-flash"), 6 * 4 * 258);
        assert_eq!(big.prompt_tokens("gemini-3.1-flash-lite"), 6 * 4 * 258);
        assert_eq!(big.prompt_tokens_any(), 6 * 4 * 258);
    }

    #[test]
    fn an_image_of_unknown_size_is_bounded_by_the_largest_side() {
        // A PNG signature with its header cut off: accepted (Gemini may decode it) at the worst.
        let m = Media::new(Declared::Image, b"\x89PNG\r\n\x1a\n\0\0", None).unwrap();
        assert_eq!(m.kind, Kind::Image(None));
        assert_eq!(m.prompt_tokens("gemini-2.5-flash"), 22 * 22 * 258);
    }

    #[test]
    fn declared_and_sniffed_types_must_agree() {
        assert!(Media::new(Declared::Image, b"GIF89a\x01\0\x01\0", None).is_err());
        assert!(Media::new(Declared::Image, b"not an image at all", None).is_err());
        assert!(Media::new(Declared::Wav, &png(1, 1), None).is_err());
        assert!(Media::new(Declared::Pdf, b"%PDF-1.7\n", None).is_ok());
        assert!(Media::new(Declared::Pdf, &png(1, 1), None).is_err());
        // The bytes name the type: a JPEG sent as image/png goes up as image/jpeg.
        let jpeg = [0xff, 0xd8, 0xff, 0xd9];
        assert_eq!(
            Media::new(Declared::Image, &jpeg, None).unwrap().mime,
            "image/jpeg"
        );
    }

    #[test]
    fn pdf_and_audio_bounds() {
        let pdf = Media::new(Declared::Pdf, b"%PDF-1.4 tiny", None).unwrap();
        assert_eq!(pdf.prompt_tokens("gemini-2.5-pro"), 258_000);
        assert_eq!(pdf.prompt_tokens("gemini-3.5-flash"), 560_000);
        let audio = |micros| Media {
            mime: "audio/wav",
            data: "".into(),
            bytes: 0,
            kind: Kind::Audio(micros),
        };
        assert_eq!(audio(Some(1)).prompt_tokens("m"), 258, "the floor");
        assert_eq!(audio(Some(60_000_001)).prompt_tokens("m"), 61 * 32);
        assert_eq!(audio(None).prompt_tokens("m"), 34_200 * 32);
        assert_eq!(audio(Some(u64::MAX)).prompt_tokens("m"), 34_200 * 32);
    }

    #[test]
    fn debug_never_prints_the_data() {
        let m = Media::new(Declared::Image, &png(1, 1), None).unwrap();
        assert!(!format!("{m:?}").contains(&*m.data));
    }
}
