//! A unary `chat.completion` → a Responses `response` object (pure).
//!
//! Ids follow the chat answer's: `chatcmpl-X` answers as `resp_X` with a `msg_X` message item and
//! `fc_X_<i>` function call items (their `call_id` is the chat tool call id). The message comes
//! first when the answer has text, or when it has nothing else; then the calls, each with its
//! `extra_content` (thought signature). `finish_reason` `length` or `content_filter` makes the
//! response `incomplete` with `incomplete_details.reason` `max_output_tokens` or
//! `content_filter`; anything else is `completed`.

use serde_json::{Value, json};

use super::{
    Call, Echo, call_item, call_item_id, id_base, message_id, message_item, output_text,
    response_id, terminal, usage,
};

/// The Response object for the chat answer `chat` (its JSON bytes), with the request's echo.
/// Bytes that are not a chat completion (never produced by the pipeline) give a `failed`
/// Response that says so.
pub fn response(chat: &[u8], echo: &Echo, now_s: u64) -> Vec<u8> {
    let v: Value = serde_json::from_slice(chat).unwrap_or(Value::Null);
    let base = id_base(v["id"].as_str().unwrap_or("")).to_string();
    let created = v["created"].as_u64().unwrap_or(now_s);
    let model = v["model"].as_str().unwrap_or("");
    let choice = &v["choices"][0];
    if !choice.is_object() {
        let mut r = echo.response(&response_id(&base), created, model, "failed");
        r.insert(
            "error".into(),
            json!({"code": "server_error", "message": "the answer could not be read"}),
        );
        return serde_json::to_vec(&r).unwrap_or_default();
    }
    let finish = choice["finish_reason"].as_str();
    let (status, incomplete) = terminal(finish);
    let item_status = if status == "completed" {
        "completed"
    } else {
        "incomplete"
    };
    let message = &choice["message"];
    let text = message["content"].as_str().unwrap_or("");
    let calls: Vec<(u64, Call)> = message["tool_calls"]
        .as_array()
        .map(|calls| {
            calls
                .iter()
                .enumerate()
                .map(|(i, c)| (i as u64, read_call(c)))
                .collect()
        })
        .unwrap_or_default();
    let mut output = Vec::with_capacity(calls.len() + 1);
    if !text.is_empty() || calls.is_empty() {
        output.push(message_item(&message_id(&base, 0), text, item_status));
    }
    for (i, c) in &calls {
        output.push(call_item(&call_item_id(&base, *i), c, "completed"));
    }
    let mut r = echo.response(&response_id(&base), created, model, status);
    r.insert("incomplete_details".into(), incomplete);
    if status == "completed" {
        r.insert("completed_at".into(), json!(now_s));
    }
    r.insert("output_text".into(), json!(output_text(&output)));
    r.insert("output".into(), Value::Array(output));
    r.insert("usage".into(), usage(&v["usage"]));
    serde_json::to_vec(&r).unwrap_or_default()
}

/// A chat tool call (`message.tool_calls[i]` or a stream delta's) as a `Call`.
pub(super) fn read_call(c: &Value) -> Call {
    Call {
        call_id: c["id"].as_str().unwrap_or("").to_string(),
        name: c["function"]["name"].as_str().unwrap_or("").to_string(),
        arguments: c["function"]["arguments"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        extra: c.get("extra_content").filter(|v| !v.is_null()).cloned(),
    }
}
