//! `parse_chat` refuses an array (or any non-object) where the chat schema has an object: serde
//! alone would read a struct from an array of its fields.

use serde_json::{Value, json};

use super::*;

fn parse(v: Value) -> Result<ChatRequest, RequestError> {
    parse_chat(v.to_string().as_bytes())
}

fn base() -> Value {
    json!({"messages": [{"role": "user", "content": "hi"}]})
}

/// `(field, request)`: the request with an array where `field` wants an object.
fn cases() -> Vec<(&'static str, Value)> {
    let call =
        json!({"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}});
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = base();
        f(&mut v);
        v
    };
    let assistant = |c: Value| {
        with(&|v| {
            v["messages"] = json!([{"role": "user", "content": "hi"},
                                   {"role": "assistant", "content": null, "tool_calls": [c.clone()]}]);
        })
    };
    vec![
        (
            "stream_options",
            with(&|v| v["stream_options"] = json!([true])),
        ),
        ("messages[]", json!({"messages": [["user", "hi"]]})),
        (
            "response_format",
            with(&|v| v["response_format"] = json!(["json_object"])),
        ),
        (
            "response_format.json_schema",
            with(&|v| {
                v["response_format"] =
                    json!({"type": "json_schema", "json_schema": ["n", null, {}]})
            }),
        ),
        (
            "tools[]",
            with(&|v| v["tools"] = json!([["function", {"name": "f"}]])),
        ),
        (
            "tools[].function",
            with(&|v| v["tools"] = json!([{"type": "function", "function": ["f"]}])),
        ),
        (
            "messages[].tool_calls[]",
            assistant(json!(["call_1", "function", {"name": "f"}])),
        ),
        (
            "messages[].tool_calls[].function",
            assistant(json!({"id": "call_1", "type": "function", "function": ["f", "{}"]})),
        ),
        (
            "messages[].tool_calls[].extra_content",
            assistant({
                let mut c = call.clone();
                c["extra_content"] = json!([{"thought_signature": "x"}]);
                c
            }),
        ),
    ]
}

#[test]
fn an_array_where_an_object_belongs_is_a_422_naming_the_field() {
    for (field, body) in cases() {
        match parse(body.clone()) {
            Err(RequestError::Validation { param, message }) => {
                assert_eq!(param, Some(field), "{body}: {message}");
                assert!(message.contains(field), "{message}");
            }
            // The format's schema object is checked with the schema (400 `invalid_schema`).
            Err(RequestError::Schema { param, message }) => {
                assert_eq!(param, field, "{body}: {message}");
                assert!(message.contains("to be a JSON object"), "{message}");
            }
            other => panic!("{field}: {body} gave {other:?}"),
        }
    }
}

/// Inside untagged unions (a content part list and its parts, an image_url object, a named
/// tool_choice) the refusal is the union's, without the field's name — still a 422, never a
/// silent accept.
#[test]
fn arrays_inside_unions_are_refused_too() {
    let bodies = [
        json!({"messages": [{"role": "user", "content": [["text", "hi"]]}]}),
        json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": [ "data:image/png;base64,AAAA", "auto"]}]}]}),
        json!({"messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": ["AAAA", "wav"]}]}]}),
        json!({"messages": [{"role": "user", "content": [
            {"type": "file", "file": ["data:application/pdf;base64,AAAA"]}]}]}),
        json!({"messages": [{"role": "user", "content": "hi"}],
               "tools": [{"type": "function", "function": {"name": "f"}}],
               "tool_choice": ["function", {"name": "f"}]}),
        json!({"messages": [{"role": "user", "content": "hi"}],
               "tools": [{"type": "function", "function": {"name": "f"}}],
               "tool_choice": {"type": "function", "function": ["f"]}}),
    ];
    for body in bodies {
        assert!(
            matches!(parse(body.clone()), Err(RequestError::Validation { .. })),
            "{body}"
        );
    }
}

/// The same fields as objects still parse (the wrapper changes nothing else).
#[test]
fn the_object_forms_still_parse() {
    let body = json!({"messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "f", "arguments": "{}"},
                "extra_content": {"google": {"thought_signature": "c2ln"}}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
            {"role": "user", "content": "and?"}],
        "stream_options": {"include_usage": true},
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}}});
    let r = parse(body).unwrap();
    assert!(r.include_usage);
    assert_eq!(r.messages.len(), 4);
    assert_eq!(r.messages[1].calls.len(), 1);
}
