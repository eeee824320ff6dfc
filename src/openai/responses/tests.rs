//! Unit tests of the Responses translators: requests to chat bodies (and chat errors back to
//! Responses paths), chat answers to Response objects, chat chunks to typed events.

use serde_json::{Value, json};

use super::*;
use crate::api::types::parse_chat;
use crate::error::RequestError;

fn tr(v: Value) -> Translated {
    translate(v.to_string().as_bytes()).unwrap()
}

fn chat_of(v: Value) -> Value {
    serde_json::from_slice(&tr(v).chat).unwrap()
}

fn err(v: Value) -> RequestError {
    translate(v.to_string().as_bytes()).unwrap_err()
}

/// The error the whole request path gives: translation, then the chat parser, renamed.
fn pipeline_err(v: Value) -> (String, String) {
    let e = match translate(v.to_string().as_bytes()) {
        Err(e) => e,
        Ok(t) => t.remap(parse_chat(&t.chat).unwrap_err()),
    };
    let param = crate::error::Error::from(e.clone())
        .param()
        .unwrap_or_default()
        .to_string();
    (param, e.to_string())
}

fn param_of(e: RequestError) -> String {
    crate::error::Error::from(e)
        .param()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_string_input_with_instructions_is_a_system_and_a_user_message() {
    let t = tr(
        json!({"model":"gemini-2.5-flash","instructions":"Be brief.","input":"hi",
                      "max_output_tokens":50,"reasoning":{"effort":"low"},"temperature":0.2,"k":3}),
    );
    let chat: Value = serde_json::from_slice(&t.chat).unwrap();
    assert_eq!(
        chat,
        json!({"model":"gemini-2.5-flash","messages":[{"role":"system","content":"Be brief."},
            {"role":"user","content":"hi"}],"max_completion_tokens":50,"reasoning_effort":"low",
            "temperature":0.2,"k":3,"stream":false})
    );
    let parsed = parse_chat(&t.chat).unwrap();
    assert_eq!(parsed.max_tokens, Some(50));
    assert_eq!(parsed.memory.k, 3);
    let r = Value::Object(t.echo.response("resp_x", 7, "m", "completed"));
    assert_eq!(r["store"], false, "stateless: nothing is stored");
    assert_eq!(r["instructions"], "Be brief.");
    assert_eq!(r["max_output_tokens"], 50);
    assert_eq!(r["reasoning"], json!({"effort":"low","summary":null}));
    assert_eq!(r["text"], json!({"format":{"type":"text"}}));
    assert_eq!(
        (&r["tool_choice"], &r["tools"], &r["truncation"]),
        (&json!("auto"), &json!([]), &json!("disabled"))
    );
    assert_eq!(
        (
            &r["parallel_tool_calls"],
            &r["metadata"],
            &r["previous_response_id"]
        ),
        (&json!(true), &json!({}), &Value::Null)
    );
}

#[test]
fn items_become_messages_calls_join_their_step_and_outputs_become_tool_messages() {
    let sig = json!({"google":{"thought_signature":"c2ln"}});
    let chat = chat_of(json!({"input":[
        {"role":"developer","content":"rules"},
        {"type":"message","role":"user","content":[
            {"type":"input_text","text":"look "},
            {"type":"input_image","image_url":"data:image/png;base64,AAAA","detail":"low"},
            {"type":"input_file","file_data":"data:application/pdf;base64,JVBE","filename":"a.pdf"}]},
        {"type":"reasoning","id":"rs_1","summary":[]},
        {"type":"message","role":"assistant","id":"msg_1","status":"completed",
         "content":[{"type":"output_text","text":"checking","annotations":[]}]},
        {"type":"function_call","id":"fc_1","call_id":"call_a","name":"get_weather",
         "arguments":"{\"city\":\"Paris\"}","status":"completed","extra_content":sig},
        {"type":"function_call","call_id":"call_b","name":"now","arguments":"{}"},
        {"type":"function_call_output","call_id":"call_a","output":"{\"temp\":21}"},
        {"type":"function_call_output","call_id":"call_b",
         "output":[{"type":"input_text","text":"noon"}]},
        {"role":"user","content":"thanks"}
    ]}));
    let m = chat["messages"].as_array().unwrap();
    assert_eq!(m.len(), 6, "{m:?}");
    assert_eq!(m[0], json!({"role":"developer","content":"rules"}));
    assert_eq!(
        m[1]["content"],
        json!([{"type":"text","text":"look "},
               {"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA","detail":"low"}},
               {"type":"file","file":{"file_data":"data:application/pdf;base64,JVBE","filename":"a.pdf"}}])
    );
    assert_eq!(m[2]["role"], "assistant");
    assert_eq!(m[2]["content"], json!([{"type":"text","text":"checking"}]));
    assert_eq!(
        m[2]["tool_calls"],
        json!([
            {"id":"call_a","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"},
             "extra_content":{"google":{"thought_signature":"c2ln"}}},
            {"id":"call_b","type":"function","function":{"name":"now","arguments":"{}"}}
        ]),
        "both calls of the step join the assistant message before them"
    );
    assert_eq!(
        m[3],
        json!({"role":"tool","tool_call_id":"call_a","content":"{\"temp\":21}"})
    );
    assert_eq!(
        m[4],
        json!({"role":"tool","tool_call_id":"call_b","content":"noon"})
    );
    assert_eq!(m[5], json!({"role":"user","content":"thanks"}));
}

#[test]
fn a_function_round_trip_parses_as_chat_with_its_signature() {
    let t = tr(json!({"model":"gemini-3.5-flash","input":[
        {"role":"user","content":"Weather in Paris?"},
        {"type":"function_call","id":"fc_x_0","call_id":"call_x_0","name":"get_weather",
         "arguments":"{\"city\":\"Paris\"}","status":"completed",
         "extra_content":{"google":{"thought_signature":"c2lnLTE="}}},
        {"type":"function_call_output","call_id":"call_x_0","output":"sunny"}],
        "tools":[{"type":"function","name":"get_weather","description":"Weather",
                  "parameters":{"type":"object","properties":{"city":{"type":"string"}}},"strict":true}],
        "tool_choice":{"type":"function","name":"get_weather"},"parallel_tool_calls":false}));
    let chat = parse_chat(&t.chat).unwrap();
    assert_eq!(chat.messages.len(), 3);
    let call = &chat.messages[1].calls[0];
    assert_eq!(call.id, "call_x_0");
    assert_eq!(call.call.signature.as_deref(), Some("c2lnLTE="));
    assert_eq!(chat.messages[2].tool_name.as_deref(), Some("get_weather"));
    assert_eq!(chat.tools.tools.functions[0].name, "get_weather");
    assert_eq!(chat.tools.tools.allowed, ["get_weather"]);
    assert!(!chat.tools.parallel);
    let r = Value::Object(t.echo.response("resp_x", 1, "m", "completed"));
    assert_eq!(
        r["tools"][0]["name"], "get_weather",
        "tools are repeated as sent"
    );
    assert_eq!(r["parallel_tool_calls"], false);
}

#[test]
fn text_format_reasoning_and_stream_map_to_chat_fields() {
    let schema = json!({"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]});
    let chat = chat_of(
        json!({"input":"x","stream":true,"text":{"format":{"type":"json_schema",
        "name":"answer","schema":schema,"strict":true},"verbosity":"low"}}),
    );
    assert_eq!(
        chat["response_format"],
        json!({"type":"json_schema","json_schema":{"name":"answer","schema":schema,"strict":true}})
    );
    assert_eq!(chat["stream"], true);
    assert_eq!(chat["stream_options"], json!({"include_usage": true}));
    assert_eq!(
        chat_of(json!({"input":"x","text":{"format":{"type":"json_object"}}}))["response_format"],
        json!({"type":"json_object"})
    );
    let t = tr(json!({"input":"x","text":{"format":{"type":"json_object"},"verbosity":"low"}}));
    let r = Value::Object(t.echo.response("resp_x", 1, "m", "completed"));
    assert_eq!(
        r["text"],
        json!({"format":{"type":"json_object"},"verbosity":"low"})
    );
    assert!(parse_chat(&t.chat).unwrap().surface.json);
}

#[test]
fn what_needs_stored_state_or_hosted_tools_is_a_400_naming_the_path() {
    for (body, param, code) in [
        (
            json!({"input":"x","previous_response_id":"resp_1"}),
            "previous_response_id",
            "unsupported_parameter",
        ),
        (
            json!({"input":"x","conversation":"conv_1"}),
            "conversation",
            "unsupported_parameter",
        ),
        (
            json!({"input":"x","prompt":{"id":"pmpt_1"}}),
            "prompt",
            "unsupported_parameter",
        ),
        (
            json!({"input":"x","background":true}),
            "background",
            "unsupported_parameter",
        ),
        (
            json!({"input":"x","top_logprobs":3}),
            "top_logprobs",
            "unsupported_parameter",
        ),
        (
            json!({"input":[{"role":"user","content":"x"},{"type":"item_reference","id":"msg_1"}]}),
            "input[1].type",
            "unsupported_parameter",
        ),
        (
            json!({"input":[{"type":"computer_call_output","call_id":"c"}]}),
            "input[0].type",
            "unsupported_parameter",
        ),
        (
            json!({"input":[{"role":"user","content":[{"type":"input_image","file_id":"file_1"}]}]}),
            "input[0].content[0].file_id",
            "unsupported_parameter",
        ),
        (
            json!({"input":[{"role":"user","content":[{"type":"input_file","file_url":"https://x/a.pdf"}]}]}),
            "input[0].content[0].file_url",
            "unsupported_parameter",
        ),
        (
            json!({"input":"x","tools":[{"type":"function","name":"f"},{"type":"web_search"}]}),
            "tools[1].type",
            "invalid_tool",
        ),
        (
            json!({"input":"x","tools":[{"type":"function","name":"f"}],"tool_choice":{"type":"file_search"}}),
            "tool_choice.type",
            "invalid_tool",
        ),
        (
            json!({"input":"x","tools":[{"type":"function","name":"f"}],
                   "tool_choice":{"type":"allowed_tools","mode":"auto","tools":[]}}),
            "tool_choice.type",
            "unsupported_parameter",
        ),
    ] {
        let e = crate::error::Error::from(err(body.clone()));
        assert_eq!(e.status(), http::StatusCode::BAD_REQUEST, "{body}");
        assert_eq!((e.param(), e.code()), (Some(param), code), "{body}");
    }
    // Stored state that is not asked for is fine: `store` and `include` are accepted.
    tr(
        json!({"input":"x","store":true,"include":["reasoning.encrypted_content"],
              "previous_response_id":null,"background":false,"top_logprobs":0}),
    );
}

#[test]
fn chat_errors_name_the_responses_paths() {
    for (body, param) in [
        (json!({"instructions":"only rules"}), "input"),
        (
            json!({"input":[{"role":"system","content":"no user"}]}),
            "input",
        ),
        (
            json!({"input":"x","max_output_tokens":0}),
            "max_output_tokens",
        ),
        (
            json!({"input":"x","reasoning":{"effort":"max"}}),
            "reasoning.effort",
        ),
        (
            json!({"input":"x","text":{"format":{"type":"yaml"}}}),
            "text.format",
        ),
        (
            json!({"input":"x","tools":[{"type":"function","name":"bad name"}]}),
            "tools[0].name",
        ),
        (
            json!({"input":"x","tools":[{"type":"function","name":"f","parameters":{"type":"array"}}]}),
            "tools[0].parameters.type",
        ),
        (
            json!({"input":"x","tools":[{"type":"function","name":"f"}],"tool_choice":{"type":"function","name":"g"}}),
            "tool_choice.name",
        ),
        (
            json!({"input":[{"role":"user","content":"x"},
                {"type":"function_call","call_id":"a","name":"f","arguments":"{}"},
                {"type":"function_call","call_id":"b","name":"f","arguments":"{nope"}]}),
            "input[2].arguments",
        ),
        (
            json!({"input":[{"role":"user","content":"x"},
                {"type":"function_call","name":"f","arguments":"{}"}]}),
            "input[1].call_id",
        ),
        (
            json!({"input":[{"role":"user","content":"x"},
                {"type":"function_call_output","call_id":"nobody","output":"1"}]}),
            "input[1].call_id",
        ),
        (json!({"input":[{"role":"tool","content":"x"}]}), "input"),
    ] {
        let (got, message) = pipeline_err(body.clone());
        assert_eq!(got, param, "{body}: {message}");
        assert!(
            !message.contains("messages[") && !message.contains("max_completion_tokens"),
            "{body}: {message}"
        );
    }
}

#[test]
fn bad_json_is_invalid_json_and_bad_shapes_are_422s() {
    assert!(matches!(err(json!(null)), RequestError::Validation { .. }));
    assert!(matches!(
        translate(b"{nope"),
        Err(RequestError::InvalidJson(_))
    ));
    for body in [
        json!({"input": 5}),
        json!({"input": [5]}),
        json!({"input": [{"role": "user", "content": 5}]}),
        json!({"input": "x", "truncation": "sometimes"}),
        json!({"input": "x", "stream": "yes"}),
        json!({"input": "x", "user": {}}),
        json!({"input": "x", "text": [null]}),
        json!({"input": "x", "text": {"format": "json"}}),
        json!({"input": "x", "reasoning": [null]}),
        json!({"input": "x", "reasoning": {"effort": 1}}),
        json!({"input": "x", "metadata": {"a": 1}}),
        json!({"input": "x", "metadata": {"k".repeat(65): "v"}}),
    ] {
        let e = err(body.clone());
        assert!(
            matches!(e, RequestError::Validation { .. }),
            "{body}: {e:?}"
        );
    }
    assert_eq!(
        param_of(err(json!({"input": "x", "truncation": "x"}))),
        "truncation"
    );
}

// === output ===

fn completion(message: Value, finish: &str) -> Vec<u8> {
    json!({"id":"chatcmpl-abc","object":"chat.completion","created":1700,"model":"gemini-3.5-flash",
        "choices":[{"index":0,"message":message,"logprobs":null,"finish_reason":finish}],
        "usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,
            "prompt_tokens_details":{"cached_tokens":2},"completion_tokens_details":{"reasoning_tokens":3},
            "memories_used":1,"memory_read":true,"memory_write":false,"model":"gemini-3.5-flash",
            "summarize_prompt_tokens":0,"summarize_completion_tokens":0,"credit_cost":42,"usd_cost":null},
        "output_text":""})
    .to_string()
    .into_bytes()
}

fn echo() -> Echo {
    tr(json!({"input":"x"})).echo
}

fn unary(message: Value, finish: &str) -> Value {
    serde_json::from_slice(&response(&completion(message, finish), &echo(), 1800)).unwrap()
}

#[test]
fn a_text_answer_is_a_completed_response_with_one_message() {
    let r = unary(json!({"role":"assistant","content":"Hello."}), "stop");
    assert_eq!(
        (&r["id"], &r["object"], &r["status"], &r["created_at"]),
        (
            &json!("resp_abc"),
            &json!("response"),
            &json!("completed"),
            &json!(1700)
        )
    );
    assert_eq!(r["completed_at"], 1800);
    assert_eq!(
        r["output"],
        json!([{"type":"message","id":"msg_abc","status":"completed","role":"assistant",
                "content":[{"type":"output_text","text":"Hello.","annotations":[],"logprobs":[]}]}])
    );
    assert_eq!(r["output_text"], "Hello.");
    assert_eq!(
        r["usage"],
        json!({"input_tokens":10,"input_tokens_details":{"cached_tokens":2,"cache_write_tokens":0},
            "output_tokens":5,"output_tokens_details":{"reasoning_tokens":3},"total_tokens":15,
            "memories_used":1,"memory_read":true,"memory_write":false,"model":"gemini-3.5-flash",
            "summarize_prompt_tokens":0,"summarize_completion_tokens":0,"credit_cost":42,"usd_cost":null})
    );
    assert_eq!(
        (&r["error"], &r["incomplete_details"], &r["store"]),
        (&Value::Null, &Value::Null, &json!(false))
    );
}

#[test]
fn tool_calls_are_function_call_items_with_their_signatures() {
    let r = unary(
        json!({"role":"assistant","content":null,"tool_calls":[
            {"id":"call_abc_0","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"},
             "extra_content":{"google":{"thought_signature":"c2ln"}}},
            {"id":"call_abc_1","type":"function","function":{"name":"now","arguments":"{}"}}]}),
        "tool_calls",
    );
    assert_eq!(r["status"], "completed");
    assert_eq!(
        r["output"],
        json!([
            {"type":"function_call","id":"fc_abc_0","call_id":"call_abc_0","name":"get_weather",
             "arguments":"{\"city\":\"Paris\"}","status":"completed",
             "extra_content":{"google":{"thought_signature":"c2ln"}}},
            {"type":"function_call","id":"fc_abc_1","call_id":"call_abc_1","name":"now",
             "arguments":"{}","status":"completed"}
        ]),
        "no empty message beside calls"
    );
    assert_eq!(r["output_text"], "");
    // Text and calls in one answer: the message first.
    let both = unary(
        json!({"role":"assistant","content":"Let me check.","tool_calls":[
            {"id":"call_abc_0","type":"function","function":{"name":"now","arguments":"{}"}}]}),
        "tool_calls",
    );
    assert_eq!(both["output"][0]["type"], "message");
    assert_eq!(both["output"][1]["type"], "function_call");
}

#[test]
fn a_cut_answer_is_incomplete_with_its_reason() {
    for (finish, reason) in [
        ("length", "max_output_tokens"),
        ("content_filter", "content_filter"),
    ] {
        let r = unary(json!({"role":"assistant","content":"Hel"}), finish);
        assert_eq!(r["status"], "incomplete");
        assert_eq!(r["incomplete_details"], json!({ "reason": reason }));
        assert_eq!(r["output"][0]["status"], "incomplete");
        assert!(r.get("completed_at").is_none());
    }
    let empty = unary(json!({"role":"assistant","content":""}), "stop");
    assert_eq!(
        empty["output"][0]["content"][0]["text"], "",
        "an empty answer keeps its message"
    );
    let garbage: Value = serde_json::from_slice(&response(b"nope", &echo(), 1)).unwrap();
    assert_eq!(garbage["status"], "failed");
    assert_eq!(garbage["error"]["code"], "server_error");
}

// === events ===

/// `(event, data)` of each frame.
fn frames(out: &[u8]) -> Vec<(String, Value)> {
    String::from_utf8(out.to_vec())
        .unwrap()
        .split("\n\n")
        .filter(|b| !b.is_empty())
        .map(|b| {
            let event = b
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("")
                .to_string();
            let data = b.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            let data = serde_json::from_str(data).unwrap_or_else(|_| json!(data));
            (event, data)
        })
        .collect()
}

fn chunk(delta: Value, finish: Option<&str>) -> Vec<u8> {
    json!({"id":"chatcmpl-s","object":"chat.completion.chunk","created":1,"model":"gemini-2.5-flash",
           "choices":[{"index":0,"delta":delta,"logprobs":null,"finish_reason":finish}],"usage":null})
    .to_string()
    .into_bytes()
}

fn usage_chunk() -> Vec<u8> {
    json!({"id":"chatcmpl-s","object":"chat.completion.chunk","created":1,"model":"gemini-2.5-flash",
           "choices":[],"usage":{"prompt_tokens":4,"completion_tokens":6,"total_tokens":10,
           "prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0},
           "credit_cost":9,"usd_cost":null}})
    .to_string()
    .into_bytes()
}

/// Runs a chat stream through the translator; returns the frames.
fn run(payloads: &[Vec<u8>], end: bool) -> Vec<(String, Value)> {
    let mut s = EventStream::new("s", "gemini-2.5-flash", 1, &echo());
    let mut out = Vec::new();
    s.start(&mut out);
    for p in payloads {
        s.feed(p, &mut out);
    }
    if end {
        s.finish(&mut out);
        assert!(s.is_closed());
    }
    let f = frames(&out);
    for (i, (event, data)) in f.iter().enumerate() {
        if event == "x402-receipt" || data == "[DONE]" {
            continue;
        }
        assert_eq!(data["type"], event.as_str(), "event: names the type");
        assert_eq!(data["sequence_number"], i, "sequence numbers count from 0");
    }
    f
}

fn kinds(f: &[(String, Value)]) -> Vec<&str> {
    f.iter().map(|(e, _)| e.as_str()).collect()
}

#[test]
fn a_text_stream_becomes_the_message_events_and_completes() {
    let f = run(
        &[
            chunk(json!({"role":"assistant","content":"Hel"}), None),
            chunk(json!({"content":"lo"}), None),
            chunk(json!({}), Some("stop")),
            usage_chunk(),
            b"[DONE]".to_vec(),
        ],
        true,
    );
    assert_eq!(
        kinds(&f),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let created = &f[0].1["response"];
    assert_eq!(
        (&created["id"], &created["status"], &created["output"]),
        (&json!("resp_s"), &json!("in_progress"), &json!([]))
    );
    assert_eq!(f[4].1["delta"], "Hel");
    assert_eq!(f[4].1["item_id"], "msg_s");
    assert_eq!(f[6].1["text"], "Hello");
    let done = &f[9].1["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output_text"], "Hello");
    assert_eq!(done["output"][0]["content"][0]["text"], "Hello");
    assert_eq!(done["usage"]["input_tokens"], 4);
    assert_eq!(done["usage"]["credit_cost"], 9);
}

#[test]
fn streamed_calls_become_function_call_items_after_the_text() {
    let call = |i: u64, name: &str, sig: Option<&str>| {
        let mut c = json!({"index":i,"id":format!("call_s_{i}"),"type":"function",
            "function":{"name":name,"arguments":"{\"city\":\"Paris\"}"}});
        if let Some(s) = sig {
            c["extra_content"] = json!({"google":{"thought_signature":s}});
        }
        c
    };
    let f = run(
        &[
            chunk(json!({"role":"assistant","content":"Checking."}), None),
            chunk(
                json!({"tool_calls":[call(0, "get_weather", Some("c2ln"))]}),
                None,
            ),
            chunk(json!({"tool_calls":[call(1, "get_time", None)]}), None),
            chunk(json!({}), Some("tool_calls")),
            usage_chunk(),
            b"[DONE]".to_vec(),
        ],
        true,
    );
    assert_eq!(
        kinds(&f)[2..],
        [
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let added = &f[8].1;
    assert_eq!(added["output_index"], 1);
    assert_eq!(added["item"]["arguments"], "", "arguments arrive as deltas");
    assert_eq!(added["item"]["call_id"], "call_s_0");
    assert_eq!(added["item"]["id"], "fc_s_0");
    assert_eq!(f[9].1["delta"], "{\"city\":\"Paris\"}");
    assert_eq!(f[10].1["name"], "get_weather");
    let out = &f[16].1["response"]["output"];
    assert_eq!(out.as_array().unwrap().len(), 3);
    assert_eq!(
        out[1],
        json!({"type":"function_call","id":"fc_s_0","call_id":"call_s_0","name":"get_weather",
               "arguments":"{\"city\":\"Paris\"}","status":"completed",
               "extra_content":{"google":{"thought_signature":"c2ln"}}})
    );
    assert_eq!(out[2]["call_id"], "call_s_1");
    assert_eq!(f[16].1["response"]["output_text"], "Checking.");
}

#[test]
fn split_arguments_accumulate_and_a_cut_answer_is_incomplete() {
    let f = run(
        &[
            chunk(
                json!({"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_s_0",
                "type":"function","function":{"name":"f","arguments":"{\"a\":"}}]}),
                None,
            ),
            chunk(
                json!({"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]}),
                None,
            ),
            chunk(json!({}), Some("length")),
            b"[DONE]".to_vec(),
        ],
        true,
    );
    let last = &f.last().unwrap();
    assert_eq!(last.0, "response.incomplete");
    assert_eq!(
        last.1["response"]["incomplete_details"],
        json!({"reason":"max_output_tokens"})
    );
    assert_eq!(last.1["response"]["output"][0]["arguments"], "{\"a\":1}");
    let done = f
        .iter()
        .find(|(e, _)| e == "response.function_call_arguments.done")
        .unwrap();
    assert_eq!(done.1["arguments"], "{\"a\":1}");
}

#[test]
fn an_error_mid_stream_is_an_error_event_and_a_failed_response() {
    let f = run(
        &[
            chunk(json!({"role":"assistant","content":"Hel"}), None),
            json!({"error":{"message":"upstream went away","type":"server_error","param":null,"code":"upstream_error"}})
                .to_string()
                .into_bytes(),
        ],
        true,
    );
    let n = f.len();
    assert_eq!(kinds(&f)[n - 2..], ["error", "response.failed"]);
    assert_eq!(f[n - 2].1["code"], "upstream_error");
    assert_eq!(f[n - 2].1["message"], "upstream went away");
    let r = &f[n - 1].1["response"];
    assert_eq!(r["status"], "failed");
    assert_eq!(r["error"]["code"], "upstream_error");
    assert_eq!(
        r["output"][0]["status"], "incomplete",
        "what streamed is kept"
    );
    assert_eq!(r["output_text"], "Hel");
    // A chat stream that just stops is failed too.
    let f = run(&[chunk(json!({"content":"x"}), None)], true);
    assert_eq!(f.last().unwrap().0, "response.failed");
    assert_eq!(
        f[f.len() - 2].1["code"],
        "stream_interrupted",
        "the error event says why"
    );
}

#[test]
fn an_empty_answer_has_an_empty_message_and_the_x402_receipt_follows_done() {
    let receipt = json!({"object":"chat.completion.chunk","choices":[],"transaction":"0xabc",
        "network":"base-sepolia","amount":"5000","payer":"0xP","kept":"1000"});
    let f = run(
        &[
            chunk(json!({"role":"assistant","content":""}), None),
            chunk(json!({}), Some("stop")),
            usage_chunk(),
            b"[DONE]".to_vec(),
            receipt.to_string().into_bytes(),
        ],
        true,
    );
    let n = f.len();
    assert_eq!(f[n - 3].0, "response.completed");
    assert_eq!(
        f[n - 3].1["response"]["output"][0]["content"][0]["text"],
        ""
    );
    assert_eq!(f[n - 2].1, "[DONE]", "OpenAI SDKs stop reading here");
    assert_eq!(f[n - 1].0, "x402-receipt");
    assert_eq!(
        f[n - 1].1,
        json!({"type":"x402.receipt","transaction":"0xabc","network":"base-sepolia",
               "amount":"5000","payer":"0xP","kept":"1000"})
    );
}

#[test]
fn the_translator_survives_any_payload() {
    let mut s = EventStream::new("s", "m", 1, &echo());
    let mut out = Vec::new();
    s.start(&mut out);
    for p in [
        &b"{}"[..],
        b"[]",
        b"{\"choices\":[{\"delta\":{\"tool_calls\":[{}]}}]}",
        b"{\"choices\":[{\"delta\":{\"tool_calls\":[5]},\"finish_reason\":7}]}",
        b"{\"usage\":5}",
        b"\xff",
    ] {
        s.feed(p, &mut out);
    }
    s.finish(&mut out);
    assert_eq!(frames(&out).last().unwrap().0, "response.failed");
}
