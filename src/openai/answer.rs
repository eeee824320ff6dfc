//! Function calls → OpenAI `message.tool_calls[]` and streamed `delta.tool_calls[]` (pure).
//!
//! Ids are `call_<completion id without "chatcmpl-">_<index>`: stable for an answer, distinct
//! across answers. A Gemini 3 thought signature rides in `extra_content.google.thought_signature`
//! as Google's own OpenAI-compatible layer carries it (reference §3); SDKs keep the field when
//! they send the message back. A stream sends each call whole in one delta (id, type, name and
//! arguments), as Google's layer does and as SDK accumulators accept.

use serde::Serialize;

use crate::upstream::ToolCall;

#[derive(Debug, Serialize)]
pub struct ToolCallOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    id: String,
    r#type: &'static str,
    function: FunctionOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    extra_content: Option<Extra<'a>>,
}

#[derive(Debug, Serialize)]
struct FunctionOut<'a> {
    name: &'a str,
    arguments: String,
}

#[derive(Debug, Serialize)]
struct Extra<'a> {
    google: Google<'a>,
}

#[derive(Debug, Serialize)]
struct Google<'a> {
    thought_signature: &'a str,
}

/// The id of call `index` of the answer whose completion id is `completion_id`.
pub fn call_id(completion_id: &str, index: usize) -> String {
    let base = completion_id
        .strip_prefix("chatcmpl-")
        .unwrap_or(completion_id);
    format!("call_{base}_{index}")
}

fn out<'a>(completion_id: &str, index: usize, c: &'a ToolCall, stream: bool) -> ToolCallOut<'a> {
    ToolCallOut {
        index: stream.then_some(index),
        id: call_id(completion_id, index),
        r#type: "function",
        function: FunctionOut {
            name: &c.name,
            arguments: c.args.to_string(),
        },
        extra_content: c.signature.as_deref().map(|s| Extra {
            google: Google {
                thought_signature: s,
            },
        }),
    }
}

/// `message.tool_calls` of a unary answer.
pub fn tool_calls<'a>(completion_id: &str, calls: &'a [ToolCall]) -> Vec<ToolCallOut<'a>> {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| out(completion_id, i, c, false))
        .collect()
}

/// The `delta` object of a stream chunk carrying call `index` whole; `first` adds the role
/// (the first delta of the answer).
pub fn stream_delta(completion_id: &str, index: usize, call: &ToolCall, first: bool) -> String {
    #[derive(Serialize)]
    struct Delta<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        role: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<Option<()>>,
        tool_calls: [ToolCallOut<'a>; 1],
    }
    let d = Delta {
        role: first.then_some("assistant"),
        content: first.then_some(None),
        tool_calls: [out(completion_id, index, call, true)],
    };
    // Plain strings and a JSON value: serializing cannot fail.
    serde_json::to_string(&d).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn call(name: &str, args: Value, sig: Option<&str>) -> ToolCall {
        ToolCall {
            name: name.into(),
            args,
            signature: sig.map(str::to_string),
        }
    }

    #[test]
    fn unary_calls_have_ids_json_arguments_and_signatures() {
        let calls = [
            call("get_weather", json!({"city":"Paris"}), Some("c2ln")),
            call("now", json!({}), None),
        ];
        let v = serde_json::to_value(tool_calls("chatcmpl-abc", &calls)).unwrap();
        assert_eq!(
            v,
            json!([
                {"id":"call_abc_0","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"},
                 "extra_content":{"google":{"thought_signature":"c2ln"}}},
                {"id":"call_abc_1","type":"function","function":{"name":"now","arguments":"{}"}}
            ])
        );
    }

    #[test]
    fn stream_deltas_carry_index_id_name_and_arguments() {
        let c = call("get_weather", json!({"city":"Paris"}), None);
        let first: Value = serde_json::from_str(&stream_delta("chatcmpl-x", 0, &c, true)).unwrap();
        assert_eq!(
            first,
            json!({"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_x_0","type":"function",
                "function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]})
        );
        let second: Value =
            serde_json::from_str(&stream_delta("chatcmpl-x", 1, &c, false)).unwrap();
        assert!(second.get("role").is_none() && second.get("content").is_none());
        assert_eq!(second["tool_calls"][0]["index"], 1);
        assert_eq!(second["tool_calls"][0]["id"], "call_x_1");
    }
}
