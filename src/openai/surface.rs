//! The top-level chat fields beyond messages and tools, pure and fuzzable: `n`, `logprobs` /
//! `top_logprobs`, `response_format` (structured outputs), `metadata`, `user`, `service_tier`,
//! and the fields the gateway refuses.
//!
//! Choices made here (see ARCHITECTURE.md, "The chat request surface"):
//! - `n` is 1 to 8 (Gemini 2.5's `candidateCount` range); Gemini 3 models answer one candidate
//!   only, so `chat::resolve` refuses `n > 1` for them. `n > 1` with tools is allowed (Google's
//!   OpenAI layer allows it): each choice carries its own calls.
//! - `logprobs: true` → `responseLogprobs`; `top_logprobs` (0 to 20, Gemini's range; only with
//!   `logprobs: true`, as OpenAI requires) → `logprobs`.
//! - `response_format: json_schema` → `responseMimeType: application/json` + `responseJsonSchema`
//!   (`schema::response_schema`); the name (OpenAI's rule, `^[a-zA-Z0-9_-]{1,64}$`) becomes the
//!   schema's `title` and the description its `description` when the schema has none, so the
//!   model reads them as Gemini reads any schema annotation.
//! - `metadata` is validated like OpenAI (at most 16 pairs of strings, keys ≤ 64 characters,
//!   values ≤ 512) and, like `user`, never sent upstream.
//! - `service_tier` is accepted and ignored (the price table has one tier); the answer carries
//!   `x-vectorway-warning: ignored: service_tier`.
//! - `prediction`, `audio`, `modalities` other than `["text"]`, a non-empty `logit_bias` and
//!   `web_search_options` are refused: 400 `unsupported_parameter` naming the field.
//! - Every other unknown field is ignored, as OpenAI-compatible gateways do (SDKs send
//!   `extra_body` fields there); the one rule for the whole request.

use serde::Deserialize;
use serde_json::Value;

use super::object::Obj;
use super::schema::{self, schema_err};
use crate::error::RequestError;

/// The most choices a request may ask for (Gemini's `candidateCount` limit).
pub const MAX_N: i64 = 8;
/// The most alternatives per token `top_logprobs` may ask for (Gemini's `logprobs` range).
pub const MAX_TOP_LOGPROBS: i64 = 20;

/// `{"type": "text" | "json_object" | "json_schema", "json_schema": {…}}`
#[derive(Debug, Deserialize)]
pub struct RawResponseFormat {
    r#type: String,
    /// Read only for `type: json_schema` (other types ignore it, whatever it holds).
    json_schema: Option<Value>,
}

super::object::named!(RawResponseFormat => "response_format",
                      RawJsonSchema => "response_format.json_schema");

#[derive(Debug, Deserialize)]
struct RawJsonSchema {
    name: Option<String>,
    description: Option<String>,
    schema: Option<Value>,
    strict: Option<bool>,
}

/// The fields of a chat request this module validates, as parsed.
#[derive(Debug, Default)]
pub struct RawSurface {
    pub n: Option<i64>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
    pub response_format: Option<RawResponseFormat>,
    pub metadata: Option<Value>,
    pub user: Option<String>,
    pub service_tier: Option<String>,
    pub prediction: Option<Value>,
    pub audio: Option<Value>,
    pub modalities: Option<Value>,
    pub logit_bias: Option<Value>,
    pub web_search_options: Option<Value>,
}

/// What the request asks of the answer's shape.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Surface {
    /// Choices asked for (1 to 8).
    pub n: u32,
    /// `Some(k)`: log probabilities of every output token, with `k` alternatives each.
    pub logprobs: Option<u32>,
    /// JSON output (`json_object` or `json_schema`).
    pub json: bool,
    /// The `responseJsonSchema` of a `json_schema` format.
    pub schema: Option<Value>,
    /// Bytes the format adds to the prompt (its schema) + 16: its share of the prompt bound.
    pub bound_bytes: u64,
    /// Fields accepted and ignored, named in `x-vectorway-warning`.
    pub ignored: Vec<&'static str>,
}

fn invalid(param: &'static str, msg: impl Into<String>) -> RequestError {
    RequestError::validation(param, msg)
}

fn unsupported(param: &'static str, msg: &str) -> RequestError {
    RequestError::Unsupported {
        param: param.into(),
        message: format!("{param} is not supported by this gateway: {msg}"),
    }
}

/// OpenAI's rule for a response format's name.
pub fn valid_format_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Validates the surface fields of a chat request.
pub fn parse(raw: RawSurface) -> Result<Surface, RequestError> {
    refuse(&raw)?;
    let n = match raw.n {
        None => 1,
        Some(n) if (1..=MAX_N).contains(&n) => u32::try_from(n).unwrap_or(1),
        Some(_) => return Err(invalid("n", format!("n must be between 1 and {MAX_N}"))),
    };
    let top = match raw.top_logprobs {
        None => None,
        Some(k) if (0..=MAX_TOP_LOGPROBS).contains(&k) => u32::try_from(k).ok(),
        Some(_) => {
            return Err(invalid(
                "top_logprobs",
                format!("top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}"),
            ));
        }
    };
    let logprobs = match (raw.logprobs.unwrap_or(false), top) {
        (true, k) => Some(k.unwrap_or(0)),
        (false, None) => None,
        (false, Some(_)) => {
            return Err(invalid("top_logprobs", "top_logprobs needs logprobs: true"));
        }
    };
    check_metadata(raw.metadata.as_ref())?;
    // `user` identifies the end user to OpenAI's abuse monitoring; Gemini has no such field.
    let _ = raw.user;
    let mut ignored = Vec::new();
    if raw.service_tier.is_some() {
        ignored.push("service_tier");
    }
    let (json, schema) = format(raw.response_format)?;
    Ok(Surface {
        n,
        logprobs,
        json,
        bound_bytes: schema
            .as_ref()
            .map_or(0, |s| s.to_string().len() as u64 + 16),
        schema,
        ignored,
    })
}

/// The fields nothing upstream can honour: refused, never silently dropped.
fn refuse(raw: &RawSurface) -> Result<(), RequestError> {
    if raw.prediction.is_some() {
        return Err(unsupported("prediction", "Gemini has no predicted outputs"));
    }
    if raw.audio.is_some() {
        return Err(unsupported("audio", "answers are text only"));
    }
    if let Some(m) = &raw.modalities {
        let text_only = m
            .as_array()
            .is_some_and(|list| list.iter().all(|v| v.as_str() == Some("text")));
        if !text_only {
            return Err(unsupported("modalities", "answers are text only"));
        }
    }
    if raw
        .logit_bias
        .as_ref()
        .is_some_and(|b| b.as_object().is_none_or(|o| !o.is_empty()))
    {
        return Err(unsupported("logit_bias", "Gemini takes no token biases"));
    }
    if raw.web_search_options.is_some() {
        return Err(unsupported(
            "web_search_options",
            "web search is not offered",
        ));
    }
    Ok(())
}

/// OpenAI's `metadata` rule: at most 16 pairs, keys of at most 64 characters, string values of
/// at most 512.
fn check_metadata(m: Option<&Value>) -> Result<(), RequestError> {
    let Some(m) = m else { return Ok(()) };
    let Some(map) = m.as_object() else {
        return Err(invalid("metadata", "metadata must be an object of strings"));
    };
    if map.len() > 16 {
        return Err(invalid("metadata", "metadata holds at most 16 pairs"));
    }
    for (k, v) in map {
        if k.chars().count() > 64 {
            return Err(invalid(
                "metadata",
                format!("metadata key '{k}' is longer than 64 characters"),
            ));
        }
        match v.as_str() {
            Some(s) if s.chars().count() <= 512 => {}
            Some(_) => {
                return Err(invalid(
                    "metadata",
                    format!("metadata value of '{k}' is longer than 512 characters"),
                ));
            }
            None => {
                return Err(invalid(
                    "metadata",
                    format!("metadata value of '{k}' must be a string"),
                ));
            }
        }
    }
    Ok(())
}

const AT: &str = "response_format.json_schema";

/// `response_format` → (JSON output, `responseJsonSchema`).
fn format(f: Option<RawResponseFormat>) -> Result<(bool, Option<Value>), RequestError> {
    let Some(f) = f else { return Ok((false, None)) };
    match f.r#type.as_str() {
        "text" => Ok((false, None)),
        "json_object" => Ok((true, None)),
        "json_schema" => {
            let js = f
                .json_schema
                .ok_or_else(|| schema_err(AT, "a json_schema format needs json_schema"))?;
            let js: RawJsonSchema =
                serde_json::from_value(js)
                    .map(|o: Obj<_>| o.0)
                    .map_err(|e| {
                        schema_err(
                            AT,
                            format!("want {{name, description?, schema?, strict?}}: {e}"),
                        )
                    })?;
            let name = js.name.unwrap_or_default();
            if !valid_format_name(&name) {
                return Err(schema_err(
                    &format!("{AT}.name"),
                    "name must be 1-64 letters, digits, '_' or '-'",
                ));
            }
            let Some(raw) = js.schema else {
                // No schema: JSON of any shape, as `json_object`.
                return Ok((true, None));
            };
            let mut s =
                schema::response_schema(&raw, &format!("{AT}.schema"), js.strict.unwrap_or(false))?;
            if let Value::Object(map) = &mut s {
                map.entry("title").or_insert(Value::String(name));
                if let Some(d) = js.description {
                    map.entry("description").or_insert(Value::String(d));
                }
            }
            Ok((true, Some(s)))
        }
        other => Err(invalid(
            "response_format",
            format!("response_format '{other}': want text|json_object|json_schema"),
        )),
    }
}

#[cfg(test)]
mod tests;
