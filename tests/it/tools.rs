//! Tool calling through the real server: what reaches the upstream (`tools`, `toolConfig`,
//! `functionCall` / `functionResponse` parts, thought signatures), the 400s, the hold, and
//! function calls coming back (unary and streamed) from a canned upstream.

use std::sync::{Arc, Mutex};

use http::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::harness::{Env, W1, sse_data};

fn weather_tool() -> Value {
    json!({"type":"function","function":{"name":"get_weather","description":"Current weather in a city",
        "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]},"strict":true}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_tools_and_tool_choice_reach_gemini() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 1_000_000).await;
    for (choice, config) in [
        (
            json!("required"),
            json!({"functionCallingConfig":{"mode":"ANY"}}),
        ),
        (
            json!({"type":"function","function":{"name":"get_weather"}}),
            json!({"functionCallingConfig":{"mode":"ANY","allowedFunctionNames":["get_weather"]}}),
        ),
        (
            json!("none"),
            json!({"functionCallingConfig":{"mode":"NONE"}}),
        ),
    ] {
        for stream in [false, true] {
            let res = env
                .chat(
                    &key,
                    json!({"model":"gemini-2.5-flash","memory_read":false,"memory_write":false,"stream":stream,
                        "messages":[{"role":"user","content":"Weather in Paris?"}],
                        "tools":[weather_tool()],"tool_choice":choice,"parallel_tool_calls":true}),
                )
                .await;
            assert_eq!(
                res.status,
                StatusCode::OK,
                "{}",
                String::from_utf8_lossy(&res.body)
            );
            if stream {
                assert_eq!(
                    sse_data(&res.body).last().map(String::as_str),
                    Some("[DONE]")
                );
            }
            let sent = env.last_generate();
            assert_eq!(
                sent["tools"],
                json!([{"functionDeclarations":[{"name":"get_weather","description":"Current weather in a city",
                    "parametersJsonSchema":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}]}])
            );
            assert_eq!(sent["toolConfig"], config, "{choice}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_round_trip_becomes_function_parts_with_signatures() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 1_000_000).await;
    let history = |signature: Option<&str>| {
        let mut first = json!({"id":"call_1","type":"function",
            "function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}});
        if let Some(s) = signature {
            first["extra_content"] = json!({"google":{"thought_signature":s}});
        }
        json!({"model":"gemini-3.5-flash","memory_read":false,"memory_write":false,
            "tools":[weather_tool()],
            "messages":[
                {"role":"system","content":"Use tools."},
                {"role":"user","content":"Weather in Paris and Rome?"},
                {"role":"assistant","content":null,"tool_calls":[first,
                    {"id":"call_2","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Rome\"}"}}]},
                {"role":"tool","tool_call_id":"call_2","content":"{\"temp\":18}"},
                {"role":"tool","tool_call_id":"call_1","content":"sunny"},
                {"role":"user","content":"Thanks. Which is warmer?"}]})
    };
    let res = env.chat(&key, history(Some("c2lnbmF0dXJl"))).await;
    assert_eq!(
        res.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&res.body)
    );
    let sent = env.last_generate();
    assert_eq!(sent["systemInstruction"]["parts"][0]["text"], "Use tools.");
    let contents = sent["contents"].as_array().unwrap();
    assert_eq!(
        contents.len(),
        4,
        "user, model calls, one user turn of results, user"
    );
    assert_eq!(
        contents[1],
        json!({"role":"model","parts":[
            {"functionCall":{"name":"get_weather","args":{"city":"Paris"}},"thoughtSignature":"c2lnbmF0dXJl"},
            {"functionCall":{"name":"get_weather","args":{"city":"Rome"}}}]})
    );
    assert_eq!(
        contents[2],
        json!({"role":"user","parts":[
            {"functionResponse":{"name":"get_weather","response":{"result":{"temp":18}}}},
            {"functionResponse":{"name":"get_weather","response":{"result":"sunny"}}}]})
    );
    assert_eq!(contents[3]["parts"][0]["text"], "Thanks. Which is warmer?");

    // The client dropped the signature: Gemini 3 gets the documented skip value on the first call.
    let res = env.chat(&key, history(None)).await;
    assert_eq!(
        res.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&res.body)
    );
    let sent = env.last_generate();
    assert_eq!(
        sent["contents"][1]["parts"][0]["thoughtSignature"],
        "skip_thought_signature_validator"
    );
    assert!(
        sent["contents"][1]["parts"][1]
            .get("thoughtSignature")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tool_requests_are_400s_naming_the_path_and_cost_nothing() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 1_000_000).await;
    let user = json!({"role":"user","content":"hi"});
    for (body, code, param) in [
        (
            json!({"messages":[user, {"role":"tool","tool_call_id":"call_nope","content":"x"}]}),
            "invalid_tool",
            "messages[1].tool_call_id",
        ),
        (
            json!({"messages":[user, {"role":"assistant","tool_calls":[{"id":"c","type":"function",
                "function":{"name":"f","arguments":"{not json"}}]}]}),
            "invalid_tool",
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            json!({"messages":[user],"tools":[{"type":"function","function":{"name":"f",
                "parameters":{"type":"object","properties":{"when":{"type":"datetime"}}}}}]}),
            "invalid_schema",
            "tools[0].function.parameters.properties.when.type",
        ),
        (
            json!({"messages":[user],"tools":[{"type":"function","function":{"name":"f",
                "parameters":{"type":"string"}}}]}),
            "invalid_schema",
            "tools[0].function.parameters.type",
        ),
        (
            json!({"messages":[user],"tools":[weather_tool()],
                "tool_choice":{"type":"function","function":{"name":"other"}}}),
            "invalid_tool",
            "tool_choice.function.name",
        ),
        (
            json!({"messages":[user],"tools":[{"type":"web_search"}]}),
            "invalid_tool",
            "tools[0].type",
        ),
    ] {
        let res = env.chat(&key, body.clone()).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{body}");
        let v = res.json();
        assert_eq!(v["error"]["code"], code, "{body}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], param, "{body}");
    }
    assert_eq!(env.generate_requests(), 0, "nothing reached the upstream");
    let b = env.balance(W1);
    assert_eq!(
        (b.balance, b.held),
        (1_000_000, 0),
        "nothing charged or held"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_declarations_and_results_count_in_the_hold() {
    let env = Env::start().await;
    // Enough for a short plain call (64 completion tokens), not for 100 kB of declarations.
    let key = env.funded_key(W1, 5_000).await;
    let base = json!({"model":"gemini-2.5-flash","max_tokens":64,"memory_read":false,"memory_write":false,
        "messages":[{"role":"user","content":"hi"}]});
    let res = env.chat(&key, base.clone()).await;
    assert_eq!(
        res.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&res.body)
    );
    let calls = env.generate_requests();
    let mut big_tool = weather_tool();
    big_tool["function"]["description"] = json!("x".repeat(100_000));
    let mut with_tools = base.clone();
    with_tools["tools"] = json!([big_tool]);
    let res = env.chat(&key, with_tools).await;
    assert_eq!(
        (res.status, res.code().as_str()),
        (StatusCode::PAYMENT_REQUIRED, "insufficient_credits")
    );
    // The same bytes as a tool result count too.
    let mut with_result = base;
    with_result["messages"] = json!([
        {"role":"user","content":"hi"},
        {"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
        {"role":"tool","tool_call_id":"c1","content":"y".repeat(100_000)}]);
    let res = env.chat(&key, with_result).await;
    assert_eq!(
        (res.status, res.code().as_str()),
        (StatusCode::PAYMENT_REQUIRED, "insufficient_credits")
    );
    assert_eq!(
        env.generate_requests(),
        calls,
        "refused before any upstream call"
    );
}

/// Gemini answers the fake upstream gives: a unary body and SSE events.
#[derive(Clone, Default)]
struct Canned {
    unary: String,
    events: Vec<String>,
    /// Request lines received, in order.
    seen: Vec<String>,
}

/// A raw upstream that answers every generate call with what `canned` holds: exact Gemini
/// bodies (mixed text and calls, a signature on the first call only) the simulator's rules do
/// not produce.
async fn canned_upstream(canned: Arc<Mutex<Canned>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let canned = canned.clone();
            tokio::spawn(async move {
                let Some(head) = crate::harness::read_request(&mut sock).await else {
                    return;
                };
                let c = {
                    let mut c = canned.lock().unwrap();
                    c.seen
                        .push(head.lines().next().unwrap_or_default().to_string());
                    c.clone()
                };
                let (kind, body) = if head.contains("streamgeneratecontent") {
                    let sse: String = c
                        .events
                        .iter()
                        .map(|e| format!("data: {e}\r\n\r\n"))
                        .collect();
                    ("text/event-stream", sse)
                } else {
                    ("application/json", c.unary)
                };
                let res = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(res.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

const CALLS: &str = r#"{"candidates":[{"content":{"role":"model","parts":[
    {"text":"Let me check."},
    {"functionCall":{"name":"get_weather","args":{"city":"Paris"}},"thoughtSignature":"c2lnLTE="},
    {"functionCall":{"name":"get_weather","args":{"city":"Rome"}}}]},"finishReason":"STOP"}],
    "usageMetadata":{"promptTokenCount":40,"candidatesTokenCount":20,"totalTokenCount":60},"responseId":"resp42"}"#;

fn ask(stream: bool, parallel: bool) -> Value {
    json!({"model":"gemini-3.5-flash","memory_read":false,"memory_write":false,"stream":stream,
        "stream_options":{"include_usage":true},"parallel_tool_calls":parallel,
        "messages":[{"role":"user","content":"Weather in Paris and Rome?"}],"tools":[weather_tool()]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_calls_come_back_as_tool_calls_unary() {
    let canned = Arc::new(Mutex::new(Canned {
        unary: CALLS.replace('\n', ""),
        ..Canned::default()
    }));
    let env = Env::against(&canned_upstream(canned.clone()).await, |_| {}).await;
    let key = env.funded_key(W1, 1_000_000).await;
    let res = env.chat(&key, ask(false, true)).await;
    assert_eq!(
        res.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&res.body)
    );
    let v = res.json();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(
        choice["message"]["content"], "Let me check.",
        "text and calls both kept"
    );
    assert_eq!(
        choice["message"]["tool_calls"],
        json!([
            {"id":"call_resp42_0","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"},
             "extra_content":{"google":{"thought_signature":"c2lnLTE="}}},
            {"id":"call_resp42_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Rome\"}"}}
        ])
    );
    assert!(choice.get("native_finish_reason").is_none());
    assert_eq!(v["usage"]["prompt_tokens"], 40);

    // Calls only: `content` is null. `parallel_tool_calls: false` keeps the first call.
    canned.lock().unwrap().unary = CALLS
        .replace('\n', "")
        .replace(r#"{"text":"Let me check."},"#, "");
    let v = env.chat(&key, ask(false, false)).await.json();
    let msg = &v["choices"][0]["message"];
    assert!(msg["content"].is_null(), "{msg}");
    assert_eq!(msg["tool_calls"].as_array().unwrap().len(), 1);
    assert_eq!(msg["tool_calls"][0]["id"], "call_resp42_0");

    // A failed function call is an answer with Gemini's reason beside `stop`.
    canned.lock().unwrap().unary = r#"{"candidates":[{"content":{"role":"model"},"finishReason":"MALFORMED_FUNCTION_CALL"}],"usageMetadata":{"promptTokenCount":40,"totalTokenCount":40}}"#.into();
    let v = env.chat(&key, ask(false, true)).await.json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["choices"][0]["native_finish_reason"],
        "MALFORMED_FUNCTION_CALL"
    );
    assert_eq!(v["choices"][0]["message"]["content"], "");
}

fn stream_events() -> Vec<String> {
    vec![
        r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Checking."}]}}],"usageMetadata":{"promptTokenCount":40,"totalTokenCount":40},"responseId":"r9"}"#.into(),
        r#"{"candidates":[{"content":{"role":"model","parts":[{"functionCall":{"name":"get_weather","args":{"city":"Paris"}},"thoughtSignature":"c2ln"}]}}],"usageMetadata":{"promptTokenCount":40,"totalTokenCount":40},"responseId":"r9"}"#.into(),
        r#"{"candidates":[{"content":{"role":"model","parts":[{"functionCall":{"name":"get_weather","args":{"city":"Rome"}}}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":40,"candidatesTokenCount":20,"totalTokenCount":60},"responseId":"r9"}"#.into(),
    ]
}

async fn stream_chunks(env: &Env, key: &str, body: Value) -> Vec<Value> {
    let res = env.chat(key, body).await;
    assert_eq!(
        res.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&res.body)
    );
    let events = sse_data(&res.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_calls_stream_as_tool_call_deltas() {
    let canned = Arc::new(Mutex::new(Canned {
        events: stream_events(),
        ..Canned::default()
    }));
    let env = Env::against(&canned_upstream(canned.clone()).await, |_| {}).await;
    let key = env.funded_key(W1, 1_000_000).await;
    let chunks = stream_chunks(&env, &key, ask(true, true)).await;
    let id = chunks[0]["id"]
        .as_str()
        .unwrap()
        .trim_start_matches("chatcmpl-")
        .to_string();
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(calls.len(), 2, "{chunks:?}");
    for (i, (c, city)) in calls.iter().zip(["Paris", "Rome"]).enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["id"], format!("call_{id}_{i}"));
        assert_eq!(c["type"], "function");
        assert_eq!(c["function"]["name"], "get_weather");
        assert_eq!(
            c["function"]["arguments"],
            format!("{{\"city\":\"{city}\"}}")
        );
    }
    assert_eq!(
        calls[0]["extra_content"]["google"]["thought_signature"],
        "c2ln"
    );
    assert!(calls[1].get("extra_content").is_none());
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "Checking.");
    let n = chunks.len();
    assert_eq!(chunks[n - 2]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(chunks[n - 1]["choices"], json!([]), "usage chunk last");
    assert_eq!(chunks[n - 1]["usage"]["completion_tokens"], 20);

    // parallel_tool_calls: false keeps the first call only.
    let chunks = stream_chunks(&env, &key, ask(true, false)).await;
    let calls = chunks
        .iter()
        .filter(|c| c["choices"][0]["delta"].get("tool_calls").is_some())
        .count();
    assert_eq!(calls, 1);

    // A failed function call ends the stream with `stop` and Gemini's reason.
    canned.lock().unwrap().events = vec![
        r#"{"candidates":[{"content":{"role":"model"},"finishReason":"TOO_MANY_TOOL_CALLS"}],"usageMetadata":{"promptTokenCount":40,"totalTokenCount":40}}"#.into(),
    ];
    let chunks = stream_chunks(&env, &key, ask(true, true)).await;
    let fin = &chunks[chunks.len() - 2]["choices"][0];
    assert_eq!(
        (&fin["finish_reason"], &fin["native_finish_reason"]),
        (&json!("stop"), &json!("TOO_MANY_TOOL_CALLS"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_ends_in_function_calls_is_not_remembered() {
    let canned = Arc::new(Mutex::new(Canned {
        unary: CALLS.replace('\n', ""),
        events: stream_events(),
        ..Canned::default()
    }));
    let env = Env::against(&canned_upstream(canned.clone()).await, |_| {}).await;
    let key = env.funded_key(W1, 1_000_000).await;
    let embeds = || {
        canned
            .lock()
            .unwrap()
            .seen
            .iter()
            .filter(|l| l.contains("embedcontents"))
            .count()
    };
    for stream in [false, true] {
        let mut body = ask(stream, true);
        body["memory_write"] = json!(true);
        let res = env.chat(&key, body).await;
        assert_eq!(res.status, StatusCode::OK);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(embeds(), 0, "no memory write for a tool-call step");
    // The control: a plain answer is remembered (its embedding call reaches the upstream).
    canned.lock().unwrap().unary = r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Warm."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":2}}"#.into();
    let mut body = ask(false, true);
    body["memory_write"] = json!(true);
    assert_eq!(env.chat(&key, body).await.status, StatusCode::OK);
    assert!(
        crate::harness::eventually(std::time::Duration::from_secs(5), || embeds() > 0).await,
        "the final answer is remembered"
    );
}

/// One agent loop against the simulator, which calls a declared tool the user names and answers
/// a tool result with text: the tool call comes back, its result goes up, the loop ends. On a
/// Gemini 3 model the call's thought signature travels to the client and back; a client that
/// drops it still gets its answer (the gateway sends Google's skip value).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_loop_runs_to_its_answer_against_the_simulator() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 5_000_000).await;
    for (model, stream, keep_signature) in [
        ("gemini-2.5-flash", false, true),
        ("gemini-2.5-flash", true, true),
        ("gemini-3.5-flash", false, true),
        ("gemini-3.5-flash", true, true),
        ("gemini-3.5-flash", false, false),
    ] {
        let case = format!("{model} stream={stream} signature={keep_signature}");
        let user = json!({"role":"user","content":"Please call get_weather for Paris."});
        let first = json!({"model": model, "stream": stream, "memory_read": false,
            "memory_write": false, "tools": [weather_tool()], "messages": [user.clone()]});
        let call = if stream {
            let chunks = stream_chunks(&env, &key, first).await;
            let finish: Vec<_> = chunks
                .iter()
                .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
                .collect();
            assert_eq!(finish, ["tool_calls"], "{case}");
            chunks
                .iter()
                .find_map(|c| {
                    c["choices"][0]["delta"]["tool_calls"][0]
                        .as_object()
                        .cloned()
                })
                .map(Value::Object)
                .unwrap()
        } else {
            let res = env.chat(&key, first).await;
            assert_eq!(res.status, StatusCode::OK, "{case}: {:?}", res.body);
            let v = res.json();
            assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{case}");
            assert_eq!(v["choices"][0]["message"]["content"], Value::Null, "{case}");
            v["choices"][0]["message"]["tool_calls"][0].clone()
        };
        assert_eq!(call["function"]["name"], "get_weather", "{case}");
        assert!(call["id"].as_str().unwrap().starts_with("call_"), "{case}");
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert!(
            args["city"].is_string(),
            "{case}: the schema's required city: {args}"
        );
        let signature = &call["extra_content"]["google"]["thought_signature"];
        assert_eq!(
            signature.is_string(),
            model.starts_with("gemini-3"),
            "{case}: 3.x calls carry a signature"
        );
        let mut back = json!({"id": call["id"], "type": "function", "function": call["function"]});
        if keep_signature && signature.is_string() {
            back["extra_content"] = call["extra_content"].clone();
        }
        let second = json!({"model": model, "memory_read": false, "memory_write": false,
            "tools": [weather_tool()], "messages": [user,
                {"role":"assistant","content":null,"tool_calls":[back]},
                {"role":"tool","tool_call_id": call["id"],"content":"{\"temp_c\":21}"}]});
        let res = env.chat(&key, second).await;
        assert_eq!(res.status, StatusCode::OK, "{case}: {:?}", res.body);
        let v = res.json();
        assert_eq!(v["choices"][0]["finish_reason"], "stop", "{case}");
        let text = v["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(
            text.contains("get_weather") && text.contains("21"),
            "{case}: the answer uses the tool result: {text}"
        );
    }
    env.stop().await;
}
