//! Gemini function calling, pure: tool declarations and `toolConfig`, `functionCall` /
//! `functionResponse` parts with thought signatures (out), and `functionCall` parts (in).

use super::types::{
    CandidateContent, FunctionCallOut, FunctionCallingConfig, FunctionDeclOut, FunctionResponseOut,
    InlineDataOut, JsonSchemaOut, PartOut, ToolConfig, ToolOut,
};
use crate::upstream::{Part, Role, ToolCall, ToolMode, Tools, Turn};

/// The signature Gemini 3 accepts in place of a lost one ("skip_thought_signature_validator",
/// documented by Google for histories that did not come from Gemini); see ARCHITECTURE.md.
pub const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

/// True for the models that validate thought signatures on function calls (Gemini 3.x).
fn validates_signatures(model: &str) -> bool {
    crate::upstream::gemini3(model)
}

/// A turn's parts on the wire. On Gemini 3, a model turn whose calls all lost their signature
/// gets the skip value on its first call (only the first call of a step carries one).
pub(super) fn parts_out<'a>(turn: &'a Turn, model: &str) -> Vec<PartOut<'a>> {
    let unsigned = validates_signatures(model)
        && turn.role == Role::Model
        && !turn
            .parts
            .iter()
            .any(|p| matches!(p, Part::Call(c) if c.signature.is_some()));
    let mut first_call = true;
    turn.parts
        .iter()
        .map(|p| match p {
            Part::Text(t) => PartOut::text(t),
            Part::Call(c) => {
                let skip = unsigned && first_call;
                first_call = false;
                PartOut {
                    function_call: Some(FunctionCallOut {
                        name: &c.name,
                        args: &c.args,
                    }),
                    thought_signature: c.signature.as_deref().or(skip.then_some(SKIP_SIGNATURE)),
                    ..PartOut::default()
                }
            }
            Part::Result(r) => PartOut {
                function_response: Some(FunctionResponseOut {
                    name: &r.name,
                    response: &r.response,
                }),
                ..PartOut::default()
            },
            Part::Media(b) => PartOut {
                inline_data: Some(InlineDataOut {
                    mime_type: &b.mime,
                    data: &b.data,
                }),
                ..PartOut::default()
            },
        })
        .collect()
}

pub(super) fn tools_out(tools: &Tools) -> (Vec<ToolOut<'_>>, Option<ToolConfig<'_>>) {
    let decls = if tools.functions.is_empty() {
        Vec::new()
    } else {
        vec![ToolOut {
            function_declarations: tools
                .functions
                .iter()
                .map(|f| FunctionDeclOut {
                    name: &f.name,
                    description: f.description.as_deref(),
                    parameters_json_schema: f.parameters.as_ref().map(JsonSchemaOut),
                })
                .collect(),
        }]
    };
    let config = tools.mode.map(|m| ToolConfig {
        function_calling_config: FunctionCallingConfig {
            mode: match m {
                ToolMode::Auto => "AUTO",
                ToolMode::None => "NONE",
                ToolMode::Any => "ANY",
            },
            allowed_function_names: &tools.allowed,
        },
    });
    (decls, config)
}

/// A candidate's function calls, with their signatures, in order.
pub(super) fn candidate_calls(content: &CandidateContent<'_>, out: &mut Vec<ToolCall>) {
    for part in &content.parts {
        if let Some(call) = &part.function_call {
            out.push(ToolCall {
                name: call.name.clone(),
                args: call
                    .args
                    .clone()
                    .unwrap_or_else(|| serde_json::Value::Object(Default::default())),
                signature: part.thought_signature.as_deref().map(str::to_string),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::gemini::translate::{
        decode_chunk, decode_response, encode_request, map_finish,
    };
    use crate::upstream::{ChatCall, Finish, GenParams, StreamEvent, ToolFailure};

    fn call(name: &str, args: serde_json::Value, sig: Option<&str>) -> ToolCall {
        ToolCall {
            name: name.into(),
            args,
            signature: sig.map(str::to_string),
        }
    }

    fn tool_call(model: &str, turns: Vec<Turn>, tools: Tools) -> serde_json::Value {
        let call = ChatCall {
            model: model.into(),
            system: None,
            turns,
            params: GenParams::default(),
            tools,
        };
        serde_json::from_slice(&encode_request(&call)).unwrap()
    }

    #[test]
    fn tools_and_tool_config_on_the_wire() {
        use crate::upstream::FunctionDecl;
        let schema = serde_json::json!({"type":"object","properties":{"city":{"type":"string"}}});
        let tools = Tools {
            functions: vec![
                FunctionDecl {
                    name: "get_weather".into(),
                    description: Some("Weather".into()),
                    parameters: Some(schema.clone()),
                },
                FunctionDecl {
                    name: "now".into(),
                    description: None,
                    parameters: None,
                },
            ],
            mode: Some(ToolMode::Any),
            allowed: vec!["get_weather".into()],
        };
        let v = tool_call(
            "gemini-2.5-flash",
            vec![Turn::text(Role::User, "hi")],
            tools,
        );
        assert_eq!(
            v["tools"],
            serde_json::json!([{"functionDeclarations":[
                {"name":"get_weather","description":"Weather","parametersJsonSchema":schema},
                {"name":"now"}]}])
        );
        assert_eq!(
            v["toolConfig"],
            serde_json::json!({"functionCallingConfig":{"mode":"ANY","allowedFunctionNames":["get_weather"]}})
        );
        for (mode, word) in [(ToolMode::Auto, "AUTO"), (ToolMode::None, "NONE")] {
            let t = Tools {
                mode: Some(mode),
                ..Tools::default()
            };
            let v = tool_call("gemini-2.5-flash", vec![Turn::text(Role::User, "hi")], t);
            assert_eq!(
                v["toolConfig"],
                serde_json::json!({"functionCallingConfig":{"mode":word}})
            );
        }
        let plain = tool_call(
            "gemini-2.5-flash",
            vec![Turn::text(Role::User, "hi")],
            Tools::default(),
        );
        assert!(plain.get("tools").is_none() && plain.get("toolConfig").is_none());
    }

    /// zod / the Vercel AI SDK put the dialect URI at the root; Gemini refuses `$schema`, so it is
    /// left out of both JSON Schema fields, and nothing else is touched (`$id`, `$defs`, `$ref`,
    /// a property that happens to be named `$schema`).
    #[test]
    fn the_root_dollar_schema_is_left_out_of_both_json_schema_fields() {
        use crate::upstream::FunctionDecl;
        let sent = serde_json::json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "urn:t",
            "type": "object", "properties": {"$schema": {"type": "string"}, "at": {"$ref": "#/$defs/at"}},
            "$defs": {"at": {"type": "string"}}, "required": ["at"]});
        let mut want = sent.clone();
        want.as_object_mut().unwrap().remove("$schema");
        let tools = Tools {
            functions: vec![FunctionDecl {
                name: "f".into(),
                description: None,
                parameters: Some(sent.clone()),
            }],
            ..Tools::default()
        };
        let call = ChatCall {
            model: "gemini-2.5-flash".into(),
            system: None,
            turns: vec![Turn::text(Role::User, "hi")],
            params: GenParams {
                response_schema: Some(sent.clone()),
                ..GenParams::default()
            },
            tools,
        };
        let v: serde_json::Value = serde_json::from_slice(&encode_request(&call)).unwrap();
        let params = &v["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"];
        assert_eq!(params, &want);
        assert_eq!(v["generationConfig"]["responseJsonSchema"], want);
        // A schema without it, or not an object, goes as is.
        for same in [want.clone(), serde_json::json!(true)] {
            assert_eq!(serde_json::to_value(JsonSchemaOut(&same)).unwrap(), same);
        }
    }

    #[test]
    fn calls_and_results_become_parts_with_signatures() {
        use crate::upstream::ToolResult;
        let turns = vec![
            Turn::text(Role::User, "weather in Paris and Rome?"),
            Turn {
                role: Role::Model,
                parts: vec![
                    Part::Text("checking".into()),
                    Part::Call(call(
                        "get_weather",
                        serde_json::json!({"city":"Paris"}),
                        Some("c2ln"),
                    )),
                    Part::Call(call(
                        "get_weather",
                        serde_json::json!({"city":"Rome"}),
                        None,
                    )),
                ],
            },
            Turn {
                role: Role::User,
                parts: vec![
                    Part::Result(ToolResult {
                        name: "get_weather".into(),
                        response: serde_json::json!({"result":{"temp":21}}),
                    }),
                    Part::Result(ToolResult {
                        name: "get_weather".into(),
                        response: serde_json::json!({"result":"rain"}),
                    }),
                ],
            },
        ];
        let v = tool_call("gemini-3-flash-preview", turns, Tools::default());
        assert_eq!(
            v["contents"][1],
            serde_json::json!({"role":"model","parts":[
                {"text":"checking"},
                {"functionCall":{"name":"get_weather","args":{"city":"Paris"}},"thoughtSignature":"c2ln"},
                {"functionCall":{"name":"get_weather","args":{"city":"Rome"}}}]})
        );
        assert_eq!(
            v["contents"][2],
            serde_json::json!({"role":"user","parts":[
                {"functionResponse":{"name":"get_weather","response":{"result":{"temp":21}}}},
                {"functionResponse":{"name":"get_weather","response":{"result":"rain"}}}]})
        );
    }

    #[test]
    fn lost_signatures_get_the_skip_value_on_gemini_3_only() {
        let turns = || {
            vec![
                Turn::text(Role::User, "go"),
                Turn {
                    role: Role::Model,
                    parts: vec![
                        Part::Call(call("a", serde_json::json!({}), None)),
                        Part::Call(call("b", serde_json::json!({}), None)),
                    ],
                },
            ]
        };
        let v = tool_call("gemini-3.5-flash", turns(), Tools::default());
        let parts = &v["contents"][1]["parts"];
        assert_eq!(parts[0]["thoughtSignature"], SKIP_SIGNATURE);
        assert!(
            parts[1].get("thoughtSignature").is_none(),
            "only the first call of a step carries one"
        );
        let v = tool_call("gemini-2.5-flash", turns(), Tools::default());
        assert!(
            v["contents"][1]["parts"][0]
                .get("thoughtSignature")
                .is_none()
        );
    }

    #[test]
    fn function_calls_in_answers() {
        let body = br#"{"candidates":[{"content":{"role":"model","parts":[
            {"text":"Let me check."},
            {"functionCall":{"name":"get_weather","args":{"city":"Paris"}},"thoughtSignature":"c2ln"},
            {"functionCall":{"name":"now"}}]},"finishReason":"STOP"}],
            "usageMetadata":{"promptTokenCount":30,"candidatesTokenCount":12},"responseId":"r1"}"#;
        let c = decode_response(body).unwrap();
        assert_eq!(c.text, "Let me check.");
        assert_eq!(c.finish, Finish::ToolCalls);
        assert_eq!(
            c.tool_calls,
            vec![
                call(
                    "get_weather",
                    serde_json::json!({"city":"Paris"}),
                    Some("c2ln")
                ),
                call("now", serde_json::json!({}), None),
            ]
        );
        let mut out = Vec::new();
        decode_chunk(br#"{"candidates":[{"content":{"role":"model","parts":[
            {"functionCall":{"name":"now","args":{}},"thoughtSignature":"c2ln"}]},"finishReason":"STOP"}]}"#, &mut out).unwrap();
        assert_eq!(
            out,
            vec![
                StreamEvent::ToolCall(call("now", serde_json::json!({}), Some("c2ln"))),
                StreamEvent::Finish(Finish::Stop),
            ],
            "a stream's finish turns into tool_calls where the calls were counted"
        );
    }

    #[test]
    fn function_calling_finish_reasons() {
        for (raw, failure) in [
            ("MALFORMED_FUNCTION_CALL", ToolFailure::Malformed),
            ("UNEXPECTED_TOOL_CALL", ToolFailure::Unexpected),
            ("TOO_MANY_TOOL_CALLS", ToolFailure::TooMany),
            ("MISSING_THOUGHT_SIGNATURE", ToolFailure::MissingSignature),
        ] {
            let f = map_finish(raw);
            assert_eq!(f, Finish::ToolFailure(failure));
            assert_eq!((f.as_openai(), f.native()), ("stop", Some(raw)));
            assert_eq!(f.with_calls(2), f, "a failure stays a failure");
        }
        assert_eq!(Finish::Length.with_calls(1), Finish::Length);
        assert_eq!(Finish::Stop.with_calls(0), Finish::Stop);
    }
}
