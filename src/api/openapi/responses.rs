//! `POST /v1/responses` in the OpenAPI document: the request body (what is always accepted), the
//! Response object, its usage and the typed stream events.
//!
//! As for chat, the body schema describes the requests that always succeed: a string `input` or
//! message items with text parts, one of them from the user, and one flat function tool with
//! `tool_choice` and `parallel_tool_calls`. More tools (distinct names), a named `tool_choice`,
//! `function_call` / `function_call_output` items, images and `text.format: json_schema` are
//! accepted too and described in words (see the README); what needs stored state is refused with 400
//! `unsupported_parameter`.

use serde_json::{Value, json};

use super::shapes::{
    all, boolean, fallback_models, flat_function_tool, int, model_and_max_output, num, object, opt,
    r, string, uint,
};
use crate::config::Config;

/// Every event type a Responses stream can carry (`event:` and `data.type`).
pub const EVENT_TYPES: &[&str] = &[
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.completed",
    "response.incomplete",
    "response.failed",
    "error",
];

pub(super) fn body(c: &Config) -> Value {
    let (model, max_out) = model_and_max_output(c);
    let part = object(
        &["type", "text"],
        json!({"type": {"enum": ["input_text", "output_text"]}, "text": string()}),
    );
    let message = object(
        &["role", "content"],
        json!({
            "type": opt(json!({"const": "message"})),
            "role": {"enum": ["system", "developer", "user", "assistant"]},
            "content": {"anyOf": [string(), {"type": "array", "items": part}]},
        }),
    );
    let user =
        json!({"type": "object", "required": ["role"], "properties": {"role": {"const": "user"}}});
    let items = json!({"type": "array", "minItems": 1, "items": message, "contains": user});
    let mut body = object(
        &["input"],
        json!({
            "input": {"anyOf": [string(), items], "description": "A string (one user message) or items: `message` items (at least one from the user), `function_call` and `function_call_output` items (tool calling, see the README; a call's `extra_content` carries a Gemini thought signature back) and `reasoning` items (accepted, dropped). `item_reference` is refused: nothing is stored."},
            "instructions": opt(string()),
            "model": opt(model.clone()),
            "models": opt(fallback_models(c)),
            "stream": opt(json!({"type": "boolean"})),
            "max_output_tokens": opt(int(1, i128::from(max_out))),
            "temperature": opt(num(0.0, 2.0)),
            "top_p": opt(num(0.0, 1.0)),
            "tools": opt(json!({"type": "array", "items": flat_function_tool(), "maxItems": 1, "description": "Flat function tools. Several are accepted when their names are distinct, which JSON Schema cannot say, so this document describes lists of one; other tool types are a 400 `invalid_tool` (no hosted tools)."})),
            "tool_choice": opt(json!({"enum": ["auto", "none", "required"], "description": "`auto`, `none`, `required` (needs `tools`), or `{\"type\": \"function\", \"name\": …}` naming a declared tool (accepted; not described here, as a schema cannot tie the name to `tools`)."})),
            "parallel_tool_calls": opt(json!({"type": "boolean"})),
            "text": opt(json!({"type": "object", "properties": {
                "format": opt(object(&["type"], json!({"type": {"enum": ["text", "json_object"]}}))),
            }, "description": "`format: {type: json_schema, name, schema, strict}` becomes chat's `response_format` json_schema."})),
            "reasoning": opt(json!({"type": "object", "properties": {
                "effort": opt(json!({"enum": ["none", "minimal", "low", "medium", "high"]})),
            }})),
            "store": opt(json!({"type": "boolean", "description": "Accepted; nothing is stored (the Response says `store: false`)."})),
            "include": opt(json!({"type": "array", "items": string(), "description": "Accepted; nothing extra is included."})),
            "metadata": opt(json!({"type": "object", "maxProperties": 16, "propertyNames": {"maxLength": 64},
                                   "additionalProperties": {"type": "string", "maxLength": 512}})),
            "user": opt(string()),
            "truncation": opt(json!({"enum": ["auto", "disabled"]})),
            "memory_read": opt(json!({"type": "boolean", "default": true})),
            "memory_write": opt(json!({"type": "boolean", "default": true})),
            "memory_write_mode": opt(json!({"enum": ["auto", "raw", "summary"], "default": "auto"})),
            "memory_max_chars": opt(int(1, 100_000)),
            "k": opt(int(1, 50)),
            "memory_namespace": opt(json!({"type": "string", "pattern": format!("^[A-Za-z0-9_.-]{{0,{}}}$", crate::memory::MAX_NAMESPACE_LEN)})),
        }),
    );
    body["description"] = json!(
        "The OpenAI Responses API, stateless. `previous_response_id`, `conversation`, `prompt` and `background: true` are refused with 400 `unsupported_parameter`; send the whole conversation in `input`."
    );
    // `model` and `models` exclude each other (a null one is absent).
    body["not"] = json!({"required": ["model", "models"],
        "properties": {"model": {"type": "string"}, "models": {"type": "array"}}});
    // `tool_choice: required` needs a tool to call.
    body["if"] =
        json!({"required": ["tool_choice"], "properties": {"tool_choice": {"const": "required"}}});
    body["then"] =
        json!({"required": ["tools"], "properties": {"tools": {"type": "array", "minItems": 1}}});
    body
}

fn response() -> Value {
    let text_part = all(json!({
        "type": {"const": "output_text"}, "text": string(),
        "annotations": {"type": "array", "maxItems": 0}, "logprobs": {"type": "array", "maxItems": 0},
    }));
    let status = json!({"enum": ["in_progress", "completed", "incomplete"]});
    let message = all(json!({
        "type": {"const": "message"}, "id": string(), "status": status, "role": {"const": "assistant"},
        "content": {"type": "array", "items": text_part},
    }));
    let call = object(
        &["type", "id", "call_id", "name", "arguments", "status"],
        json!({
            "type": {"const": "function_call"}, "id": string(), "call_id": string(), "name": string(),
            "arguments": {"type": "string", "description": "A JSON object, as a string."}, "status": status,
            "extra_content": {"type": "object", "description": "`google.thought_signature` (Gemini 3): send the item back unchanged."},
        }),
    );
    let mut r = object(
        &[
            "id",
            "object",
            "created_at",
            "status",
            "error",
            "incomplete_details",
            "model",
            "output",
            "parallel_tool_calls",
            "store",
            "tool_choice",
            "tools",
            "usage",
        ],
        json!({
            "id": {"type": "string", "pattern": "^resp_"}, "object": {"const": "response"},
            "created_at": uint(), "completed_at": uint(),
            "status": {"enum": ["in_progress", "completed", "incomplete", "failed"]},
            "background": {"const": false},
            "error": opt(all(json!({"code": string(), "message": string()}))),
            "incomplete_details": opt(all(json!({"reason": {"enum": ["max_output_tokens", "content_filter"]}}))),
            "instructions": opt(string()), "max_output_tokens": opt(uint()), "metadata": {"type": "object"},
            "model": string(), "output": {"type": "array", "items": {"anyOf": [message, call]}},
            "output_text": string(), "parallel_tool_calls": opt(boolean()),
            "previous_response_id": {"type": "null"},
            "reasoning": {"type": "object"}, "store": {"const": false},
            "temperature": opt(json!({"type": "number"})), "top_p": opt(json!({"type": "number"})),
            "text": {"type": "object"}, "tool_choice": {}, "tools": {"type": "array"},
            "truncation": {"enum": ["auto", "disabled"]}, "usage": opt(r("ResponseUsage")),
            "user": opt(string()),
        }),
    );
    r["description"] = json!(
        "A Response. `store` is always false: nothing is kept, so nothing can be retrieved or continued by id."
    );
    r
}

fn usage() -> Value {
    all(json!({
        "input_tokens": uint(), "output_tokens": uint(), "total_tokens": uint(),
        "input_tokens_details": all(json!({"cached_tokens": uint(), "cache_write_tokens": uint()})),
        "output_tokens_details": all(json!({"reasoning_tokens": uint()})),
        "memories_used": uint(), "memory_read": boolean(), "memory_write": boolean(), "model": string(),
        "summarize_prompt_tokens": uint(), "summarize_completion_tokens": uint(),
        "credit_cost": opt(uint()), "usd_cost": opt(string()),
    }))
}

/// One server-sent event of a streamed Response.
fn event() -> Value {
    let mut types: Vec<&str> = EVENT_TYPES.to_vec();
    types.push("x402-receipt");
    let typed = object(
        &["type", "sequence_number"],
        json!({"type": {"enum": EVENT_TYPES}, "sequence_number": uint(), "response": r("Response")}),
    );
    let receipt = object(
        &["type", "transaction", "payer", "amount", "kept"],
        json!({"type": {"const": "x402.receipt"}, "transaction": string(), "network": string(),
               "payer": string(), "amount": string(), "kept": string()}),
    );
    let mut data = string();
    data["if"] = json!({"const": "[DONE]"});
    data["else"] = json!({"contentMediaType": "application/json",
        "contentSchema": {"anyOf": [typed, receipt]}});
    let mut e = object(&["data"], json!({"event": {"enum": types}, "data": data}));
    e["description"] = json!(
        "A typed event (`event:` equals `data.type`; `sequence_number` counts from 0). On x402 the stream ends with `data: [DONE]` and `event: x402-receipt` after the terminal event."
    );
    e
}

/// The component schemas this route adds.
pub(super) fn schemas() -> Vec<(&'static str, Value)> {
    vec![
        ("Response", response()),
        ("ResponseUsage", usage()),
        ("ResponseStreamEvent", event()),
    ]
}
