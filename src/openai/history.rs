//! Tool-call history: assistant `tool_calls` and `tool` messages → neutral parts (pure, fuzzable).
//!
//! An assistant call becomes a `functionCall` (arguments parsed from their JSON string; an empty
//! string is `{}`), with the thought signature the client sent back in
//! `extra_content.google.thought_signature`. A `tool` message becomes a `functionResponse` named
//! after the earlier call with its `tool_call_id` (none: 400 naming the path), whose response is
//! `{"result": <content parsed as JSON, or the string>}`.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

use super::object;
use crate::error::RequestError;
use crate::upstream::{Part, ToolCall, ToolResult};

#[derive(Debug, Deserialize)]
pub struct RawToolCall {
    id: Option<String>,
    r#type: Option<String>,
    #[serde(default, deserialize_with = "object::opt")]
    function: Option<RawCallFunction>,
    #[serde(default, deserialize_with = "object::opt")]
    extra_content: Option<RawExtra>,
}

object::named!(RawToolCall => "messages[].tool_calls[]",
               RawCallFunction => "messages[].tool_calls[].function",
               RawExtra => "messages[].tool_calls[].extra_content",
               RawGoogle => "messages[].tool_calls[].extra_content.google");

#[derive(Debug, Deserialize)]
struct RawCallFunction {
    name: Option<String>,
    arguments: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawExtra {
    #[serde(default, deserialize_with = "object::opt")]
    google: Option<RawGoogle>,
}

#[derive(Debug, Deserialize)]
struct RawGoogle {
    thought_signature: Option<String>,
}

/// A call an assistant message carries, checked: its id and the neutral call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallIn {
    pub id: String,
    pub call: ToolCall,
}

impl CallIn {
    /// Its share of the prompt bound: name, arguments and signature bytes.
    pub fn bound_bytes(&self) -> u64 {
        (self.call.name.len()
            + self.call.args.to_string().len()
            + self.call.signature.as_ref().map_or(0, String::len)) as u64
    }
}

fn tool_err(param: String, message: impl Into<String>) -> RequestError {
    RequestError::Tool {
        param,
        message: message.into(),
    }
}

/// The calls seen so far in a conversation, by id, to name the tool results that follow.
#[derive(Debug, Default)]
pub struct CallIndex {
    names: HashMap<String, String>,
}

impl CallIndex {
    /// Checks the `tool_calls` of `messages[i]` and remembers their ids.
    pub fn assistant(
        &mut self,
        i: usize,
        raw: Vec<RawToolCall>,
    ) -> Result<Vec<CallIn>, RequestError> {
        let mut out = Vec::with_capacity(raw.len());
        for (j, c) in raw.into_iter().enumerate() {
            let at = format!("messages[{i}].tool_calls[{j}]");
            if c.r#type.as_deref().is_some_and(|t| t != "function") {
                return Err(tool_err(
                    format!("{at}.type"),
                    "tool call type must be 'function'",
                ));
            }
            let id =
                c.id.filter(|id| !id.is_empty())
                    .ok_or_else(|| tool_err(format!("{at}.id"), "a tool call needs an id"))?;
            let f = c
                .function
                .ok_or_else(|| tool_err(format!("{at}.function"), "a tool call needs function"))?;
            let name = f.name.filter(|n| !n.is_empty()).ok_or_else(|| {
                tool_err(format!("{at}.function.name"), "a tool call needs a name")
            })?;
            let arguments = f.arguments.unwrap_or_default();
            let args = if arguments.trim().is_empty() {
                Value::Object(Default::default())
            } else {
                match serde_json::from_str::<Value>(&arguments) {
                    Ok(v @ Value::Object(_)) => v,
                    Ok(_) => {
                        return Err(tool_err(
                            format!("{at}.function.arguments"),
                            "arguments must be a JSON object",
                        ));
                    }
                    Err(e) => {
                        return Err(tool_err(
                            format!("{at}.function.arguments"),
                            format!("arguments are not valid JSON: {e}"),
                        ));
                    }
                }
            };
            let signature = c
                .extra_content
                .and_then(|e| e.google)
                .and_then(|g| g.thought_signature)
                .filter(|s| !s.is_empty());
            self.names.insert(id.clone(), name.clone());
            out.push(CallIn {
                id,
                call: ToolCall {
                    name,
                    args,
                    signature,
                },
            });
        }
        Ok(out)
    }

    /// The function name `messages[i]` (a `tool` message) answers.
    pub fn tool(&self, i: usize, id: Option<&str>) -> Result<String, RequestError> {
        let param = format!("messages[{i}].tool_call_id");
        let id = id.ok_or_else(|| tool_err(param.clone(), "a tool message needs tool_call_id"))?;
        self.names.get(id).cloned().ok_or_else(|| {
            tool_err(
                param,
                format!("tool_call_id '{id}' matches no tool call of an earlier assistant message"),
            )
        })
    }
}

/// A tool result part: `{"result": <content as JSON if it parses, else the string>}`.
pub fn result_part(name: &str, content: &str) -> Part {
    let result =
        serde_json::from_str::<Value>(content).unwrap_or_else(|_| Value::String(content.into()));
    Part::Result(ToolResult {
        name: name.to_string(),
        response: serde_json::json!({ "result": result }),
    })
}

/// The parts of an assistant message: its text (when there is any, or when there is nothing
/// else), then its calls.
pub fn model_parts(text: &str, calls: &[CallIn]) -> Vec<Part> {
    let mut parts = Vec::with_capacity(calls.len() + 1);
    if !text.is_empty() || calls.is_empty() {
        parts.push(Part::Text(text.to_string()));
    }
    parts.extend(calls.iter().map(|c| Part::Call(c.call.clone())));
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn calls(v: Value) -> Vec<RawToolCall> {
        serde_json::from_value(v).unwrap()
    }

    fn param(e: RequestError) -> String {
        match e {
            RequestError::Tool { param, .. } => param,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn calls_parse_and_name_results() {
        let mut idx = CallIndex::default();
        let got = idx
            .assistant(
                1,
                calls(json!([
                    {"id":"call_a","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"},
                     "extra_content":{"google":{"thought_signature":"c2lnbg=="}}},
                    {"id":"call_b","type":"function","function":{"name":"now","arguments":""}}
                ])),
            )
            .unwrap();
        assert_eq!(got[0].call.args, json!({"city":"Paris"}));
        assert_eq!(got[0].call.signature.as_deref(), Some("c2lnbg=="));
        assert_eq!(got[1].call.args, json!({}), "empty arguments are {{}}");
        assert_eq!(got[1].call.signature, None);
        assert_eq!(idx.tool(2, Some("call_b")).unwrap(), "now");
        assert_eq!(
            param(idx.tool(3, Some("call_zz")).unwrap_err()),
            "messages[3].tool_call_id"
        );
        assert_eq!(
            param(idx.tool(3, None).unwrap_err()),
            "messages[3].tool_call_id"
        );
        assert_eq!(
            got[0].bound_bytes(),
            ("get_weather".len() + r#"{"city":"Paris"}"#.len() + "c2lnbg==".len()) as u64
        );
    }

    #[test]
    fn bad_calls_name_the_path() {
        let mut idx = CallIndex::default();
        for (v, want) in [
            (
                json!([{"id":"c","type":"function","function":{"name":"f","arguments":"{nope"}}]),
                "messages[4].tool_calls[0].function.arguments",
            ),
            (
                json!([{"id":"c","type":"function","function":{"name":"f","arguments":"[1]"}}]),
                "messages[4].tool_calls[0].function.arguments",
            ),
            (
                json!([{"id":"c","function":{"name":"f"}},{"type":"function","function":{"name":"f"}}]),
                "messages[4].tool_calls[1].id",
            ),
            (
                json!([{"id":"c","type":"function","function":{"arguments":"{}"}}]),
                "messages[4].tool_calls[0].function.name",
            ),
        ] {
            assert_eq!(
                param(idx.assistant(4, calls(v.clone())).unwrap_err()),
                want,
                "{v}"
            );
        }
    }

    #[test]
    fn results_are_wrapped_json_or_string() {
        let Part::Result(r) = result_part("f", r#"{"temp":21}"#) else {
            panic!()
        };
        assert_eq!(
            (r.name.as_str(), &r.response),
            ("f", &json!({"result":{"temp":21}}))
        );
        let Part::Result(r) = result_part("f", "sunny, 21 C") else {
            panic!()
        };
        assert_eq!(r.response, json!({"result":"sunny, 21 C"}));
    }

    #[test]
    fn model_parts_keep_text_then_calls() {
        let c = CallIn {
            id: "x".into(),
            call: ToolCall {
                name: "f".into(),
                args: json!({}),
                signature: None,
            },
        };
        assert_eq!(model_parts("", std::slice::from_ref(&c)).len(), 1);
        let both = model_parts("let me check", &[c]);
        assert!(matches!(&both[0], Part::Text(t) if t == "let me check"));
        assert!(matches!(&both[1], Part::Call(_)));
        assert_eq!(model_parts("", &[]), vec![Part::Text(String::new())]);
    }
}
