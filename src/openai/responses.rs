//! The OpenAI Responses API as an adapter over Chat Completions: pure, fuzzable translators,
//! so `POST /v1/responses` runs the one chat pipeline (price, pay, recall, Gemini, settle).
//!
//! - `request`: a Responses request → a Chat Completions request body, plus the request fields
//!   the Response object repeats (`Echo`) and a map that renames chat error paths back to the
//!   Responses request (`messages[3]` → `input[2]`).
//! - `output`: a `chat.completion` → a `response` object.
//! - `events`: the `chat.completion.chunk` SSE payloads of a streamed answer → the typed
//!   `response.*` events, each with `event:` and `sequence_number`.
//!
//! Stateless: nothing is stored, so a Response says `store: false` whatever was asked, and what
//! needs stored state (`previous_response_id`, `conversation`, `prompt`, `item_reference`, file
//! ids) is a 400 `unsupported_parameter`. A Gemini 3 thought signature rides on a `function_call`
//! item as `extra_content.google.thought_signature`, the field chat tool calls carry it in: the
//! OpenAI SDKs keep unknown item fields when they send an item back (the Agents SDK replays
//! `model_dump(exclude_unset=True)`, which includes them; it strips only `provider_data`). A
//! client that drops it gets chat's fallback (Google's skip value).

pub mod events;
pub mod output;
pub mod request;

use serde_json::{Map, Value, json};

pub use events::EventStream;
pub use output::response;
pub use request::{Translated, translate};

/// The request fields a Response object repeats, validated, with their defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Echo {
    /// The request asked for a stream.
    pub stream: bool,
    fields: Map<String, Value>,
}

impl Echo {
    /// A Response object without its output: `id`, `object`, `created_at`, `status`, `model`,
    /// the repeated request fields and the fields a stateless gateway always sends the same.
    pub fn response(
        &self,
        id: &str,
        created_at: u64,
        model: &str,
        status: &str,
    ) -> Map<String, Value> {
        let mut r = self.fields.clone();
        for (k, v) in [
            ("id", json!(id)),
            ("object", json!("response")),
            ("created_at", json!(created_at)),
            ("status", json!(status)),
            ("model", json!(model)),
            ("background", json!(false)),
            ("error", Value::Null),
            ("incomplete_details", Value::Null),
            ("previous_response_id", Value::Null),
            ("store", json!(false)),
            ("output", json!([])),
            ("usage", Value::Null),
        ] {
            r.insert(k.to_string(), v);
        }
        r
    }
}

/// The id base of an answer: its chat completion id without `chatcmpl-`.
pub fn id_base(chat_id: &str) -> &str {
    chat_id.strip_prefix("chatcmpl-").unwrap_or(chat_id)
}

/// The Response id of an answer whose id base is `base`.
pub fn response_id(base: &str) -> String {
    format!("resp_{base}")
}

/// The id of the `n`th message item of an answer.
fn message_id(base: &str, n: usize) -> String {
    match n {
        0 => format!("msg_{base}"),
        n => format!("msg_{base}_{n}"),
    }
}

/// The id of the `function_call` item for chat tool call `index`.
fn call_item_id(base: &str, index: u64) -> String {
    format!("fc_{base}_{index}")
}

/// An `output_text` content part.
fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// A `message` output item.
fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant",
           "content": [text_part(text)]})
}

/// A function call as the answer gave it.
#[derive(Debug, Clone, Default, PartialEq)]
struct Call {
    call_id: String,
    name: String,
    arguments: String,
    /// `extra_content` (the thought signature), carried unchanged.
    extra: Option<Value>,
}

/// A `function_call` output item.
fn call_item(id: &str, c: &Call, status: &str) -> Value {
    let mut item = json!({"type": "function_call", "id": id, "call_id": c.call_id,
        "name": c.name, "arguments": c.arguments, "status": status});
    if let Some(extra) = &c.extra {
        item["extra_content"] = extra.clone();
    }
    item
}

/// A Response's status and `incomplete_details` for a chat `finish_reason`.
fn terminal(finish: Option<&str>) -> (&'static str, Value) {
    match finish {
        Some("length") => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some("content_filter") => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

/// Chat `usage` → Responses `usage`: OpenAI's token fields under their Responses names, then
/// every Vectorway field (memory, model, cost) unchanged.
fn usage(chat: &Value) -> Value {
    let Some(u) = chat.as_object() else {
        return Value::Null;
    };
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let mut out = Map::new();
    out.insert("input_tokens".into(), json!(n(u.get("prompt_tokens"))));
    out.insert(
        "input_tokens_details".into(),
        json!({"cached_tokens": n(u.get("prompt_tokens_details").and_then(|d| d.get("cached_tokens"))),
               "cache_write_tokens": 0}),
    );
    out.insert("output_tokens".into(), json!(n(u.get("completion_tokens"))));
    out.insert(
        "output_tokens_details".into(),
        json!({"reasoning_tokens": n(u.get("completion_tokens_details").and_then(|d| d.get("reasoning_tokens")))}),
    );
    out.insert("total_tokens".into(), json!(n(u.get("total_tokens"))));
    for (k, v) in u {
        if !matches!(
            k.as_str(),
            "prompt_tokens"
                | "completion_tokens"
                | "total_tokens"
                | "prompt_tokens_details"
                | "completion_tokens_details"
        ) {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

/// `output_text`: the text of every message item, joined.
fn output_text(output: &[Value]) -> String {
    output
        .iter()
        .filter(|i| i["type"] == "message")
        .flat_map(|i| i["content"].as_array().into_iter().flatten())
        .filter_map(|p| p["text"].as_str())
        .collect()
}

#[cfg(test)]
mod tests;
