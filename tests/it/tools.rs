//! Tool calling through the real server: what reaches the upstream (`tools`, `toolConfig`,
//! `functionCall` / `functionResponse` parts, thought signatures), the 400s, and the hold.

use http::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Env, W1, sse_data};

fn weather_tool() -> Value {
    json!({"type":"function","function":{"name":"get_weather","description":"Current weather in a city",
        "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]},"strict":true}})
}

fn last_generate(env: &Env) -> Value {
    env.sim
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path.contains("enerateContent"))
        .map(|r| r.body)
        .unwrap()
}

fn generate_calls(env: &Env) -> usize {
    env.sim
        .requests()
        .iter()
        .filter(|r| r.path.contains("enerateContent"))
        .count()
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
            let sent = last_generate(&env);
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
    let sent = last_generate(&env);
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
    let sent = last_generate(&env);
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
    assert_eq!(generate_calls(&env), 0, "nothing reached the upstream");
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
    let calls = generate_calls(&env);
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
        generate_calls(&env),
        calls,
        "refused before any upstream call"
    );
}
