//! A message's `content`: a string, or an array of parts (`text`, `refusal`, `image_url`,
//! `input_audio`, `file`) → its text and, when it carries media, its pieces in order (pure).
//!
//! Which parts each role takes follows OpenAI's message schemas: system, developer and tool
//! messages take text parts, assistant messages text and refusal parts, user messages every
//! kind. A media part elsewhere is a 400 `invalid_content_part` naming it.
//!
//! - `image_url` `{url, detail}` (or the bare URL string some clients send): a `data:` URL
//!   (base64) is decoded here; an `https://` URL becomes `Piece::Remote`, fetched by the gateway
//!   (`api::media`) before the call is priced. `detail` (auto|low|high) is checked and not
//!   forwarded: Gemini has no per-image detail on `generateContent` v1beta.
//! - `input_audio` `{data, format: wav|mp3}` → `audio/wav` / `audio/mp3`.
//! - `file` `{file_data, filename}` → `application/pdf` (`file_data` a PDF `data:` URL or bare
//!   base64); a `file_id` is refused: there is no Files API here.
//!
//! Bytes must be what they claim (`media::Media::new` sniffs them), so the token bound reads the
//! right header.

use std::sync::Arc;

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use serde::Deserialize;

use super::object;
use crate::error::{MediaFault, RequestError};
use crate::media::{self as media_mod, Declared, IMAGE_MIMES, Media};
use crate::upstream::{Blob, Part};

/// A message's `content` as sent.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawContent {
    Text(String),
    Parts(#[serde(deserialize_with = "object::vec")] Vec<RawPart>),
}

object::named!(RawPart => "messages[].content[]", RawImageObject => "messages[].content[].image_url",
               RawAudio => "messages[].content[].input_audio", RawFile => "messages[].content[].file");

#[derive(Debug, Deserialize)]
pub struct RawPart {
    r#type: String,
    text: Option<String>,
    refusal: Option<String>,
    image_url: Option<RawImageUrl>,
    #[serde(default, deserialize_with = "object::opt")]
    input_audio: Option<RawAudio>,
    #[serde(default, deserialize_with = "object::opt")]
    file: Option<RawFile>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawImageUrl {
    Object(#[serde(deserialize_with = "object::one")] RawImageObject),
    Url(String),
}

#[derive(Debug, Deserialize)]
struct RawImageObject {
    url: String,
    detail: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawAudio {
    data: String,
    format: String,
}

#[derive(Debug, Deserialize)]
struct RawFile {
    file_data: Option<String>,
    file_id: Option<String>,
    #[expect(
        dead_code,
        reason = "accepted as OpenAI sends it; Gemini's inlineData has no name"
    )]
    filename: Option<String>,
}

/// Which parts a role's content takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepts {
    /// System, developer and tool messages.
    Text,
    /// Assistant messages: text and refusal parts.
    Answer,
    /// User messages: text and media.
    Everything,
}

/// One piece of a message with media, in the client's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Media(Arc<Media>),
    /// An image URL the gateway fetches before the call is priced; `param` names it.
    Remote {
        url: String,
        param: String,
    },
}

/// A parsed `content`: all its text (what memory stores and what text bounds count), and its
/// pieces when it carries media (empty for text-only content).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Content {
    pub text: String,
    pub pieces: Vec<Piece>,
}

/// The prompt tokens `pieces` can cost on `model` (`None`: on any model, the larger rule).
pub fn media_tokens<'a>(pieces: impl Iterator<Item = &'a Piece>, model: Option<&str>) -> u64 {
    pieces
        .map(|p| match (p, model) {
            (Piece::Media(m), Some(model)) => m.prompt_tokens(model),
            (Piece::Media(m), None) => m.prompt_tokens_any(),
            // Not fetched yet (`api::media` fetches before pricing): an image of unknown size.
            (Piece::Remote { .. }, _) => {
                media_mod::image_tokens(media_mod::UNKNOWN_SIDE, media_mod::UNKNOWN_SIDE)
                    .max(media_mod::GEMINI3_IMAGE_TOKENS)
            }
            (Piece::Text(_), _) => 0,
        })
        // A header may claim any size: saturate rather than wrap (such a bound never fits).
        .fold(0u64, u64::saturating_add)
}

/// A user turn's parts: its text, or its pieces in order with media inline.
pub fn user_parts(text: &str, pieces: &[Piece]) -> Vec<Part> {
    if pieces.is_empty() {
        return vec![Part::Text(text.to_string())];
    }
    pieces
        .iter()
        .filter_map(|p| match p {
            Piece::Text(t) => Some(Part::Text(t.clone())),
            Piece::Media(m) => Some(Part::Media(Blob {
                mime: m.mime.to_string(),
                data: m.data.clone(),
            })),
            // `api::media` replaces every URL with what it served before a call is built.
            Piece::Remote { .. } => None,
        })
        .collect()
}

fn invalid(param: String, message: impl Into<String>) -> RequestError {
    RequestError::media(MediaFault::Invalid, param, message)
}

/// Parses message `i`'s content for a role that `accepts` these parts.
pub fn parse(i: usize, accepts: Accepts, raw: Option<RawContent>) -> Result<Content, RequestError> {
    let parts = match raw {
        None => return Ok(Content::default()),
        Some(RawContent::Text(text)) => {
            return Ok(Content {
                text,
                pieces: Vec::new(),
            });
        }
        Some(RawContent::Parts(p)) => p,
    };
    let mut out = Content::default();
    let mut media = false;
    for (j, p) in parts.into_iter().enumerate() {
        let at = |field: &str| format!("messages[{i}].content[{j}].{field}");
        let piece = match p.r#type.as_str() {
            "text" => {
                Piece::Text(p.text.ok_or_else(|| {
                    RequestError::validation("messages", "a text part needs text")
                })?)
            }
            "refusal" if accepts == Accepts::Answer => Piece::Text(p.refusal.ok_or_else(|| {
                RequestError::validation("messages", "a refusal part needs refusal")
            })?),
            kind @ ("image_url" | "input_audio" | "file") if accepts != Accepts::Everything => {
                return Err(invalid(
                    at("type"),
                    format!("{kind} parts are only accepted in user messages"),
                ));
            }
            "image_url" => {
                let (url, detail) = match p.image_url {
                    Some(RawImageUrl::Object(RawImageObject { url, detail })) => (url, detail),
                    Some(RawImageUrl::Url(url)) => (url, None),
                    None => {
                        return Err(invalid(
                            at("image_url"),
                            "an image_url part needs image_url",
                        ));
                    }
                };
                if let Some(d) = detail.filter(|d| !matches!(d.as_str(), "auto" | "low" | "high")) {
                    return Err(invalid(
                        at("image_url.detail"),
                        format!("detail '{d}': want auto, low or high"),
                    ));
                }
                image(url, at("image_url.url"))?
            }
            "input_audio" => {
                let a = p.input_audio.ok_or_else(|| {
                    invalid(at("input_audio"), "an input_audio part needs input_audio")
                })?;
                let declared = match a.format.as_str() {
                    "wav" => Declared::Wav,
                    "mp3" => Declared::Mp3,
                    other => {
                        return Err(RequestError::media(
                            MediaFault::UnsupportedType,
                            at("input_audio.format"),
                            format!("audio format '{other}': want wav or mp3"),
                        ));
                    }
                };
                let param = at("input_audio.data");
                let bytes = decode_base64(&a.data).map_err(|m| invalid(param.clone(), m))?;
                Piece::Media(media_of(declared, &bytes, &a.data, param)?)
            }
            "file" => {
                let f = p
                    .file
                    .ok_or_else(|| invalid(at("file"), "a file part needs file"))?;
                if f.file_id.is_some() {
                    return Err(invalid(
                        at("file.file_id"),
                        "file_id is not supported: this gateway has no Files API; send the PDF \
                         inline as file_data (a data:application/pdf;base64,… URL)",
                    ));
                }
                let param = at("file.file_data");
                let data = f
                    .file_data
                    .ok_or_else(|| invalid(param.clone(), "a file part needs file_data"))?;
                file(&data, param)?
            }
            other => {
                return Err(RequestError::validation(
                    "messages",
                    format!("content part type '{other}' is not supported"),
                ));
            }
        };
        match &piece {
            Piece::Text(t) => out.text.push_str(t),
            Piece::Media(_) | Piece::Remote { .. } => media = true,
        }
        out.pieces.push(piece);
    }
    if !media {
        out.pieces.clear();
    }
    Ok(out)
}

/// An `image_url` part's URL: a `data:` URL decoded now, an http(s) URL left to the fetch.
fn image(url: String, param: String) -> Result<Piece, RequestError> {
    if starts_with_ignore_case(&url, "data:") {
        let (mime, encoded) = data_url(&url).map_err(|m| invalid(param.clone(), m))?;
        let mime = if mime == "image/jpg" {
            "image/jpeg"
        } else {
            mime.as_str()
        };
        if !IMAGE_MIMES.contains(&mime) {
            return Err(RequestError::media(
                MediaFault::UnsupportedType,
                param,
                format!(
                    "image type '{mime}' is not accepted; send {}",
                    IMAGE_MIMES.join(", ")
                ),
            ));
        }
        let bytes = decode_base64(encoded).map_err(|m| invalid(param.clone(), m))?;
        return Ok(Piece::Media(media_of(
            Declared::Image,
            &bytes,
            encoded,
            param,
        )?));
    }
    if starts_with_ignore_case(&url, "https://") || starts_with_ignore_case(&url, "http://") {
        return Ok(Piece::Remote { url, param });
    }
    Err(invalid(
        param,
        "an image URL must be https:// or a data: URL",
    ))
}

/// A `file` part's `file_data`: a PDF `data:` URL, or bare base64 of a PDF.
fn file(data: &str, param: String) -> Result<Piece, RequestError> {
    let encoded = if starts_with_ignore_case(data, "data:") {
        let (mime, encoded) = data_url(data).map_err(|m| invalid(param.clone(), m))?;
        if mime != "application/pdf" {
            return Err(RequestError::media(
                MediaFault::UnsupportedType,
                param,
                format!("file type '{mime}' is not accepted; send application/pdf"),
            ));
        }
        encoded
    } else {
        data
    };
    let bytes = decode_base64(encoded).map_err(|m| invalid(param.clone(), m))?;
    Ok(Piece::Media(media_of(
        Declared::Pdf,
        &bytes,
        encoded,
        param,
    )?))
}

fn media_of(
    declared: Declared,
    bytes: &[u8],
    encoded: &str,
    param: String,
) -> Result<Arc<Media>, RequestError> {
    // The client's base64 is sent on as is when it is already canonical (padded, no spaces).
    let canonical =
        encoded.len().is_multiple_of(4) && !encoded.bytes().any(|b| b.is_ascii_whitespace());
    Media::new(declared, bytes, canonical.then_some(encoded))
        .map(Arc::new)
        .map_err(|u| RequestError::media(MediaFault::UnsupportedType, param, u.0))
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// Splits a base64 `data:` URL (RFC 2397) into its lower-case MIME type (without parameters)
/// and its base64 text.
pub fn data_url(url: &str) -> Result<(String, &str), String> {
    if !starts_with_ignore_case(url, "data:") {
        return Err("not a data: URL".into());
    }
    let (meta, data) = url[5..]
        .split_once(',')
        .ok_or("a data: URL needs a ',' before its data")?;
    let mut params = meta.split(';');
    let mime = params.next().unwrap_or("").trim().to_ascii_lowercase();
    if !params.any(|p| p.trim().eq_ignore_ascii_case("base64")) {
        return Err("only base64 data: URLs are accepted (data:<type>;base64,<data>)".into());
    }
    if mime.is_empty() {
        return Err("the data: URL names no media type".into());
    }
    Ok((mime, data))
}

/// Standard-alphabet base64, padded or not, line breaks and spaces ignored.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let decoded = if text.bytes().any(|b| b.is_ascii_whitespace()) {
        let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        LENIENT.decode(compact)
    } else {
        LENIENT.decode(text)
    };
    let bytes = decoded.map_err(|e| format!("the data is not valid base64: {e}"))?;
    if bytes.is_empty() {
        return Err("the data is empty".into());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests;
