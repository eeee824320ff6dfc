//! The Gemini simulator over HTTP: tool calls, tool results, thought signatures, structured output, n, media.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use super::*;
use crate::config::SimulatorKnobs;
use crate::simulate::Simulator;
use crate::upstream::client::{HttpClient, build};

fn knobs(reply_tokens: u32) -> SimulatorKnobs {
    SimulatorKnobs {
        ttft: Duration::ZERO,
        tokens_per_sec: 1_000_000,
        chunk_tokens: 3,
        reply_tokens,
    }
}

async fn sim() -> (Simulator, HttpClient) {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let sim = Simulator::start(addr, knobs(8), None).await.unwrap();
    (sim, build(Duration::from_secs(5), 4))
}

async fn post(http: &HttpClient, url: String, body: &Value) -> (u16, Bytes) {
    let req = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header("content-type", "application/json")
        .header("x-goog-api-key", "k")
        .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())))
        .unwrap();
    let res = http.request(req).await.unwrap();
    let status = res.status().as_u16();
    (status, res.into_body().collect().await.unwrap().to_bytes())
}

/// A unary `generateContent` call: status and body.
async fn unary(s: &(Simulator, HttpClient), model: &str, body: &Value) -> (u16, Value) {
    let url = format!("{}/v1beta/models/{model}:generateContent", s.0.base_url());
    let (status, bytes) = post(&s.1, url, body).await;
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// A streamed call: every SSE event's JSON.
async fn streamed(s: &(Simulator, HttpClient), model: &str, body: &Value) -> Vec<Value> {
    let url = format!(
        "{}/v1beta/models/{model}:streamGenerateContent?alt=sse",
        s.0.base_url()
    );
    let (status, bytes) = post(&s.1, url, body).await;
    assert_eq!(status, 200);
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(text.ends_with("\r\n\r\n"));
    text.split("\r\n\r\n")
        .filter(|e| !e.is_empty())
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect()
}

fn user(text: &str) -> Value {
    json!({"role": "user", "parts": [{"text": text}]})
}

fn weather_tools() -> Value {
    json!([{"functionDeclarations": [
        {"name": "get_weather", "description": "Weather for a city",
         "parametersJsonSchema": {"type": "object", "properties": {
             "city": {"type": "string"},
             "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
             "days": {"type": "integer", "minimum": 3, "maximum": 5}},
             "required": ["city", "unit"]}},
        {"name": "get_time", "parameters": {"type": "OBJECT", "properties": {
             "zone": {"type": "STRING"}, "exact": {"type": "BOOLEAN"}}, "required": ["zone"]}}
    ]}])
}

fn request(prompt: &str, extra: Value) -> Value {
    let mut body = json!({"contents": [user(prompt)], "tools": weather_tools()});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn model_parts(resp: &Value, candidate: usize) -> Vec<Value> {
    resp["candidates"][candidate]["content"]["parts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn call_names(parts: &[Value]) -> Vec<String> {
    parts
        .iter()
        .filter_map(|p| p["functionCall"]["name"].as_str().map(str::to_string))
        .collect()
}

/// A small validator for the JSON Schema / OpenAPI subset the generator claims to satisfy.
fn validate(schema: &Value, root: &Value, v: &Value, path: &str) -> Result<(), String> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let target = r
            .trim_start_matches("#/")
            .split('/')
            .fold(root, |at, seg| &at[seg]);
        return validate(target, root, v, path);
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        return Err(format!("{path}: {v} not in enum"));
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        if any.iter().any(|s| validate(s, root, v, path).is_ok()) {
            return Ok(());
        }
        return Err(format!("{path}: no anyOf branch"));
    }
    let types: Vec<String> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.to_lowercase()],
        Some(Value::Array(ts)) => ts
            .iter()
            .map(|t| t.as_str().unwrap().to_lowercase())
            .collect(),
        _ => Vec::new(),
    };
    let ok = types.is_empty()
        || types.iter().any(|t| match t.as_str() {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            _ => false,
        });
    if !ok {
        return Err(format!("{path}: {v} is not {types:?}"));
    }
    let num = |k: &str| schema.get(k).and_then(Value::as_f64);
    if let Some(x) = v.as_f64()
        && (num("minimum").is_some_and(|m| x < m) || num("maximum").is_some_and(|m| x > m))
    {
        return Err(format!("{path}: {x} out of range"));
    }
    if let Some(s) = v.as_str() {
        let n = s.chars().count() as f64;
        if num("minLength").is_some_and(|m| n < m) || num("maxLength").is_some_and(|m| n > m) {
            return Err(format!("{path}: length {n}"));
        }
    }
    if let Some(items) = v.as_array() {
        let n = items.len() as f64;
        if num("minItems").is_some_and(|m| n < m) || num("maxItems").is_some_and(|m| n > m) {
            return Err(format!("{path}: {n} items"));
        }
        for (i, item) in items.iter().enumerate() {
            validate(&schema["items"], root, item, &format!("{path}[{i}]"))?;
        }
    }
    if let Some(obj) = v.as_object() {
        for req in schema["required"].as_array().into_iter().flatten() {
            if !obj.contains_key(req.as_str().unwrap()) {
                return Err(format!("{path}: missing {req}"));
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, item) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => validate(s, root, item, &format!("{path}.{k}"))?,
                None if schema.get("additionalProperties") == Some(&json!(false)) => {
                    return Err(format!("{path}: extra {k}"));
                }
                None => {}
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_named_tool_is_called_with_arguments_that_satisfy_its_schema() {
    let s = sim().await;
    let body = request("What does get_weather say for Paris today?", json!({}));
    let (status, resp) = unary(&s, "gemini-2.5-flash", &body).await;
    assert_eq!(status, 200, "{resp}");
    let parts = model_parts(&resp, 0);
    assert_eq!(call_names(&parts), ["get_weather"]);
    let args = &parts[0]["functionCall"]["args"];
    let schema = &weather_tools()[0]["functionDeclarations"][0]["parametersJsonSchema"];
    validate(schema, schema, args, "$").unwrap();
    assert_eq!(args["days"], 3, "minimum honoured");
    let prompt_words = ["What", "does", "say", "for", "Paris", "today"];
    assert!(prompt_words.contains(&args["city"].as_str().unwrap()));
    assert!(
        parts[0].get("thoughtSignature").is_none(),
        "2.5 does not sign"
    );
    assert_eq!(resp["candidates"][0]["finishReason"], "STOP");
    // Output tokens are the call's; the declarations count in the prompt.
    let call_tokens = count_tokens(&schema::canonical(&parts[0]["functionCall"]));
    assert_eq!(resp["usageMetadata"]["candidatesTokenCount"], call_tokens);
    let mut bare = body.clone();
    bare.as_object_mut().unwrap().remove("tools");
    let (_, plain) = unary(&s, "gemini-2.5-flash", &bare).await;
    let tools_tokens = count_tokens(&schema::canonical(&weather_tools()));
    assert_eq!(
        resp["usageMetadata"]["promptTokenCount"].as_u64().unwrap(),
        plain["usageMetadata"]["promptTokenCount"].as_u64().unwrap() + tools_tokens
    );
    // Deterministic: the same request, the same call.
    let (_, again) = unary(&s, "gemini-2.5-flash", &body).await;
    assert_eq!(again["candidates"], resp["candidates"]);
}

#[tokio::test]
async fn a_streamed_call_arrives_whole_in_one_event_with_running_usage() {
    let s = sim().await;
    let body = request("please run get_time for Tokyo", json!({}));
    let events = streamed(&s, "gemini-2.5-flash", &body).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let parts = model_parts(&events[0], 0);
    assert_eq!(call_names(&parts), ["get_time"]);
    let args = &parts[0]["functionCall"]["args"];
    assert!(args["zone"].is_string() && args["exact"] == json!(true));
    assert_eq!(events[0]["candidates"][0]["finishReason"], "STOP");
    let (_, unary_resp) = unary(&s, "gemini-2.5-flash", &body).await;
    assert_eq!(events[0]["usageMetadata"], unary_resp["usageMetadata"]);
}

#[tokio::test]
async fn every_mentioned_tool_is_called_in_declaration_order() {
    let s = sim().await;
    let body = request("GET_TIME in Lima, then Get_Weather there", json!({}));
    let (_, resp) = unary(&s, "gemini-2.5-flash", &body).await;
    assert_eq!(
        call_names(&model_parts(&resp, 0)),
        ["get_weather", "get_time"]
    );
    let events = streamed(&s, "gemini-2.5-flash", &body).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        call_names(&model_parts(&events[0], 0)),
        ["get_weather", "get_time"]
    );
}

#[tokio::test]
async fn calling_modes_and_allowed_names_decide_what_is_called() {
    let s = sim().await;
    let cfg = |mode: &str, allowed: Option<Value>| {
        let mut c = json!({"functionCallingConfig": {"mode": mode}});
        if let Some(a) = allowed {
            c["functionCallingConfig"]["allowedFunctionNames"] = a;
        }
        json!({ "toolConfig": c })
    };
    let calls = |resp: &Value| call_names(&model_parts(resp, 0));
    // NONE: a mention is not enough.
    let (_, r) = unary(
        &s,
        "gemini-2.5-flash",
        &request("use get_weather", cfg("NONE", None)),
    )
    .await;
    assert!(calls(&r).is_empty() && r["candidates"][0]["content"]["parts"][0]["text"].is_string());
    // AUTO without a mention: text.
    let (_, r) = unary(
        &s,
        "gemini-2.5-flash",
        &request("hello there", cfg("AUTO", None)),
    )
    .await;
    assert!(calls(&r).is_empty());
    // ANY without a mention: the first declared.
    let (_, r) = unary(
        &s,
        "gemini-2.5-flash",
        &request("hello there", cfg("ANY", None)),
    )
    .await;
    assert_eq!(calls(&r), ["get_weather"]);
    // ANY restricted: the first allowed.
    let only_time = Some(json!(["get_time"]));
    let (_, r) = unary(
        &s,
        "gemini-2.5-flash",
        &request("hello", cfg("ANY", only_time.clone())),
    )
    .await;
    assert_eq!(calls(&r), ["get_time"]);
    // AUTO restricted: a mentioned but disallowed tool is not called.
    let (_, r) = unary(
        &s,
        "gemini-2.5-flash",
        &request("get_weather please", cfg("AUTO", only_time)),
    )
    .await;
    assert!(calls(&r).is_empty());
}

fn round_trip(call: Value, signature: Option<&str>, response: Value) -> Vec<Value> {
    let mut part = json!({ "functionCall": call });
    if let Some(sig) = signature {
        part["thoughtSignature"] = json!(sig);
    }
    vec![
        user("what does get_weather say for Oslo"),
        json!({"role": "model", "parts": [part]}),
        json!({"role": "user", "parts": [{"functionResponse": {"name": call["name"], "response": response}}]}),
    ]
}

#[tokio::test]
async fn a_tool_result_turn_is_answered_with_text_from_the_result() {
    let s = sim().await;
    let call = json!({"name": "get_weather", "args": {"city": "Oslo", "unit": "celsius"}});
    let contents = round_trip(call, None, json!({"temp": 21, "sky": "clear"}));
    let body = json!({"contents": contents, "tools": weather_tools()});
    let (status, resp) = unary(&s, "gemini-2.5-flash", &body).await;
    assert_eq!(status, 200, "{resp}");
    let parts = model_parts(&resp, 0);
    assert!(call_names(&parts).is_empty());
    assert_eq!(
        parts[0]["text"],
        r#"The tool get_weather returned {"sky":"clear","temp":21}."#
    );
    // Streamed: the same text over several events.
    let events = streamed(&s, "gemini-2.5-flash", &body).await;
    assert!(events.len() > 1);
    let text: String = events
        .iter()
        .map(|e| model_parts(e, 0)[0]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, parts[0]["text"].as_str().unwrap());
    assert_eq!(
        events.last().unwrap()["usageMetadata"],
        resp["usageMetadata"]
    );
    // ANY keeps calling, as Gemini's forced mode does.
    let mut forced = body.clone();
    forced["toolConfig"] = json!({"functionCallingConfig": {"mode": "ANY"}});
    let (_, resp) = unary(&s, "gemini-2.5-flash", &forced).await;
    assert_eq!(call_names(&model_parts(&resp, 0)), ["get_weather"]);
}

async fn assert_400(s: &(Simulator, HttpClient), model: &str, body: &Value, needle: &str) {
    let (status, resp) = unary(s, model, body).await;
    assert_eq!(status, 400, "{resp}");
    assert_eq!(resp["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(resp["error"]["code"], 400);
    let message = resp["error"]["message"].as_str().unwrap();
    assert!(message.contains(needle), "{message}");
}

#[tokio::test]
async fn requests_gemini_refuses_get_its_400() {
    let s = sim().await;
    let m = "gemini-2.5-flash";
    let fr = |name: &str| json!({"functionResponse": {"name": name, "response": {"ok": true}}});
    let call = json!({"functionCall": {"name": "get_time", "args": {"zone": "UTC"}}});
    // A response with no call before it.
    let body = json!({"contents": [user("hi"), {"role": "user", "parts": [fr("get_time")]}]});
    assert_400(
        &s,
        m,
        &body,
        "function response turn comes immediately after a function call turn",
    )
    .await;
    // More responses than calls.
    let body = json!({"contents": [user("hi"), {"role": "model", "parts": [call.clone()]},
                                   {"role": "user", "parts": [fr("get_time"), fr("get_time")]}]});
    assert_400(
        &s,
        m,
        &body,
        "number of function response parts is equal to the number of function call parts",
    )
    .await;
    // A response naming no call of the turn.
    let body = json!({"contents": [user("hi"), {"role": "model", "parts": [call.clone()]},
                                   {"role": "user", "parts": [fr("get_weather")]}]});
    assert_400(&s, m, &body, "`get_weather` names no function call").await;
    // A call turn opening the conversation.
    let body = json!({"contents": [{"role": "model", "parts": [call]}, user("hi")]});
    assert_400(
        &s,
        m,
        &body,
        "function call turn comes immediately after a user turn",
    )
    .await;
    // Declarations without a name or with a bad one.
    let body = json!({"contents": [user("hi")], "tools": [{"functionDeclarations": [
        {"description": "nameless"}, {"name": "ok_name"}, {"name": "bad name"}]}]});
    let (status, resp) = unary(&s, m, &body).await;
    assert_eq!(status, 400);
    let message = resp["error"]["message"].as_str().unwrap();
    assert!(message.contains("tools[0].function_declarations[0].name: Invalid function name"));
    assert!(message.contains("tools[0].function_declarations[2].name: Invalid function name"));
    assert!(!message.contains("function_declarations[1]"));
    // A root `$schema` in the OpenAPI-subset `parameters` is a payload 400, as from Gemini; in
    // `parametersJsonSchema` it is JSON Schema and accepted.
    let zod = json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                     "properties": {"city": {"type": "string"}}});
    let body = json!({"contents": [user("hi")], "tools": [{"functionDeclarations": [
        {"name": "a", "parametersJsonSchema": zod}, {"name": "b", "parameters": zod}]}]});
    assert_400(
        &s,
        m,
        &body,
        "Invalid JSON payload received. Unknown name \"$schema\" at 'tools[0].function_declarations[1].parameters': Cannot find field.",
    )
    .await;
    let body = json!({"contents": [user("hi")], "tools": [{"functionDeclarations": [
        {"name": "a", "parametersJsonSchema": zod}]}]});
    assert_eq!(unary(&s, m, &body).await.0, 200);
}

#[tokio::test]
async fn gemini_3_signs_its_calls_and_refuses_a_history_without_them() {
    let s = sim().await;
    let m = "gemini-3-flash-preview";
    // Parallel calls: only the first part is signed (Google's rule).
    let (_, resp) = unary(
        &s,
        m,
        &request("get_weather and get_time for Rome", json!({})),
    )
    .await;
    let parts = model_parts(&resp, 0);
    assert_eq!(call_names(&parts), ["get_weather", "get_time"]);
    let sig = parts[0]["thoughtSignature"].as_str().unwrap().to_string();
    assert!(STANDARD.decode(&sig).is_ok());
    assert!(parts[1].get("thoughtSignature").is_none());
    // Streamed: the signed part arrives in the one event.
    let events = streamed(&s, m, &request("get_weather for Rome", json!({}))).await;
    assert!(model_parts(&events[0], 0)[0]["thoughtSignature"].is_string());
    // The one-call answer, sent back with and without its signature.
    let (_, resp) = unary(
        &s,
        m,
        &request("what does get_weather say for Oslo", json!({})),
    )
    .await;
    let part = model_parts(&resp, 0)[0].clone();
    let call = part["functionCall"].clone();
    let sig = part["thoughtSignature"].as_str().unwrap();
    let body = |sig: Option<&str>| json!({"contents": round_trip(call.clone(), sig, json!({"temp": 3})), "tools": weather_tools()});
    let (status, ok) = unary(&s, m, &body(Some(sig))).await;
    assert_eq!(status, 200, "{ok}");
    assert!(
        model_parts(&ok, 0)[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("The tool get_weather returned")
    );
    assert_400(&s, m, &body(None), "Function call is missing a thought_signature in functionCall parts. This is required for tools to work correctly, and missing thought_signature may lead to degraded model performance. Additional data, function call `default_api:get_weather` , position 2. Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details.").await;
    // Google's documented dummy passes; a signature from elsewhere does not.
    let (status, _) = unary(&s, m, &body(Some("skip_thought_signature_validator"))).await;
    assert_eq!(status, 200);
    assert_400(
        &s,
        m,
        &body(Some("c29tZXRoaW5nIGVsc2U=")),
        "Corrupted thought signature.",
    )
    .await;
    // 2.5 models do not check.
    let (status, _) = unary(&s, "gemini-2.5-flash", &body(None)).await;
    assert_eq!(status, 200);
    // Only the current turn is validated: after a new user text, the old call is history.
    let mut contents = round_trip(call.clone(), None, json!({"temp": 3}));
    contents.push(json!({"role": "model", "parts": [{"text": "It is 3 degrees."}]}));
    contents.push(user("thanks, and tomorrow?"));
    let (status, resp) = unary(&s, m, &json!({"contents": contents})).await;
    assert_eq!(status, 200, "{resp}");
}

#[tokio::test]
async fn json_answers_validate_against_the_requested_schema() {
    let s = sim().await;
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 12},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "minItems": 2},
            "score": {"type": "number", "minimum": 10, "maximum": 20},
            "rank": {"type": ["integer", "null"], "exclusiveMinimum": 4},
            "kind": {"enum": ["alpha", "beta"]},
            "ok": {"type": "boolean"},
            "owner": {"$ref": "#/$defs/person"},
            "when": {"type": "string", "format": "date-time"},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "integer"}]}
        },
        "required": ["name", "tags", "owner"],
        "additionalProperties": false,
        "$defs": {"person": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}}
    });
    let body = json!({"contents": [user("describe the fleet budget")],
                      "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": schema}});
    let (_, resp) = unary(&s, "gemini-2.5-flash", &body).await;
    let text = model_parts(&resp, 0)[0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    let value: Value = serde_json::from_str(&text).unwrap();
    validate(&schema, &schema, &value, "$").unwrap();
    assert!(value["rank"].as_i64().unwrap() > 4);
    assert_eq!(
        resp["usageMetadata"]["candidatesTokenCount"],
        count_tokens(&text)
    );
    // Streamed in pieces that join to the same JSON, with the same usage at the end.
    let events = streamed(&s, "gemini-2.5-flash", &body).await;
    assert!(events.len() > 1);
    let joined: String = events
        .iter()
        .map(|e| model_parts(e, 0)[0]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(joined, text);
    assert_eq!(
        events.last().unwrap()["usageMetadata"],
        resp["usageMetadata"]
    );
    // The OpenAPI subset with upper-case types, snake_case keys.
    let openapi = json!({"type": "OBJECT", "properties": {
        "city": {"type": "STRING"}, "count": {"type": "INTEGER"},
        "list": {"type": "ARRAY", "items": {"type": "NUMBER"}}, "mood": {"type": "STRING", "enum": ["calm"]}},
        "required": ["city", "count"]});
    let body = json!({"contents": [user("weather please")],
                      "generation_config": {"response_mime_type": "application/json", "response_schema": openapi}});
    let (_, resp) = unary(&s, "gemini-2.5-flash", &body).await;
    let value: Value =
        serde_json::from_str(model_parts(&resp, 0)[0]["text"].as_str().unwrap()).unwrap();
    validate(&openapi, &openapi, &value, "$").unwrap();
    assert_eq!(value["mood"], "calm");
    // application/json without a schema: a JSON object.
    let body = json!({"contents": [user("hi")], "generationConfig": {"responseMimeType": "application/json"}});
    let (_, resp) = unary(&s, "gemini-2.5-flash", &body).await;
    let value: Value =
        serde_json::from_str(model_parts(&resp, 0)[0]["text"].as_str().unwrap()).unwrap();
    assert!(value.is_object());
}

#[tokio::test]
async fn candidate_count_gives_distinct_indexed_candidates_counted_together() {
    let s = sim().await;
    let body = json!({"contents": [user("tell me about vectors")], "generationConfig": {"candidateCount": 3}});
    let (_, resp) = unary(&s, "gemini-2.5-flash", &body).await;
    let cands = resp["candidates"].as_array().unwrap();
    assert_eq!(cands.len(), 3);
    let texts: Vec<&str> = cands
        .iter()
        .map(|c| c["content"]["parts"][0]["text"].as_str().unwrap())
        .collect();
    for (i, c) in cands.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["finishReason"], "STOP");
    }
    assert!(texts[0] != texts[1] && texts[1] != texts[2] && texts[0] != texts[2]);
    // Candidate 0 is what a one-candidate request gets.
    let one = json!({"contents": [user("tell me about vectors")]});
    let (_, single) = unary(&s, "gemini-2.5-flash", &one).await;
    assert_eq!(
        single["candidates"][0]["content"]["parts"][0]["text"],
        texts[0]
    );
    // Every candidate's 8 one-token words are counted.
    assert_eq!(resp["usageMetadata"]["candidatesTokenCount"], 24);
    assert_eq!(
        resp["usageMetadata"]["totalTokenCount"].as_u64().unwrap(),
        resp["usageMetadata"]["promptTokenCount"].as_u64().unwrap() + 24
    );
    // Streamed: events carry the candidates by index; the texts and final usage agree.
    let events = streamed(&s, "gemini-2.5-flash", &body).await;
    let mut joined = vec![String::new(); 3];
    for e in &events {
        for c in e["candidates"].as_array().unwrap() {
            let i = c["index"].as_u64().unwrap() as usize;
            joined[i].push_str(c["content"]["parts"][0]["text"].as_str().unwrap());
        }
    }
    assert_eq!(joined, texts);
    assert_eq!(
        events.last().unwrap()["usageMetadata"],
        resp["usageMetadata"]
    );
    // With a tool mentioned, each candidate calls it.
    let body = request(
        "get_time now",
        json!({"generationConfig": {"candidateCount": 2}}),
    );
    let (_, resp) = unary(&s, "gemini-2.5-flash", &body).await;
    assert_eq!(call_names(&model_parts(&resp, 0)), ["get_time"]);
    assert_eq!(call_names(&model_parts(&resp, 1)), ["get_time"]);
    assert_eq!(resp["candidates"][1]["index"], 1);
}

fn png(w: u32, h: u32) -> String {
    let mut b = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    b.extend_from_slice(&w.to_be_bytes());
    b.extend_from_slice(&h.to_be_bytes());
    b.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
    STANDARD.encode(b)
}

fn jpeg(w: u16, h: u16) -> String {
    let mut b = vec![0xff, 0xd8, 0xff, 0xe0, 0x00, 0x04, 0x4a, 0x46];
    b.extend_from_slice(&[0xff, 0xc0, 0x00, 0x11, 0x08]);
    b.extend_from_slice(&h.to_be_bytes());
    b.extend_from_slice(&w.to_be_bytes());
    b.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
    STANDARD.encode(b)
}

#[tokio::test]
async fn inline_images_count_as_prompt_tokens_by_gemini_tile_rule() {
    let s = sim().await;
    let with = |data: String, mime: &str| {
        json!({"contents": [{"role": "user", "parts": [{"text": "what is this"},
                  {"inlineData": {"mimeType": mime, "data": data}}]}]})
    };
    let (_, text_only) = unary(
        &s,
        "gemini-2.5-flash",
        &json!({"contents": [user("what is this")]}),
    )
    .await;
    let base = text_only["usageMetadata"]["promptTokenCount"]
        .as_u64()
        .unwrap();
    for (body, image) in [
        (with(png(300, 200), "image/png"), 258),
        (with(png(1000, 800), "image/png"), 4 * 258),
        (with(jpeg(2000, 700), "image/jpeg"), 3 * 258),
        (
            with(STANDARD.encode(b"RIFF0000WEBPVP8 "), "image/webp"),
            258,
        ),
    ] {
        let (status, resp) = unary(&s, "gemini-2.5-flash", &body).await;
        assert_eq!(status, 200);
        let usage = &resp["usageMetadata"];
        assert_eq!(usage["promptTokenCount"], base + image, "{usage}");
        assert_eq!(
            usage["promptTokensDetails"],
            json!([{"modality": "TEXT", "tokenCount": base}, {"modality": "IMAGE", "tokenCount": image}])
        );
    }
    assert_eq!(crate::media::image_tokens(384, 384), 258);
    assert_eq!(crate::media::image_tokens(385, 10), 258);
    assert_eq!(crate::media::image_tokens(769, 1537), 2 * 3 * 258);
}

#[test]
fn embeddings_keep_similar_texts_close() {
    let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let a = embed_text("the last simulation run finished", 3072);
    let b = embed_text("when did the last simulation run finish", 3072);
    let c = embed_text("buy more USDC on base", 3072);
    assert!((cos(&a, &a) - 1.0).abs() < 1e-5);
    assert!(cos(&a, &b) > cos(&a, &c) + 0.2);
    assert_eq!(embed_text("x", 768).len(), 768);
}

#[test]
fn plan_respects_max_output_and_thinking() {
    let words = |p: &plan::Plan| p.cands[0].segments.iter().map(|s| s.tokens).sum::<u64>();
    let body = json!({"contents":[{"role":"user","parts":[{"text":"hello there"}]}],
                      "generationConfig":{"maxOutputTokens":10,"thinkingConfig":{"thinkingBudget":1024}}});
    let p = plan::plan("gemini-2.5-flash", &body, &knobs(48)).unwrap();
    assert_eq!(
        (p.thoughts, words(&p), p.cands[0].finish),
        (10, 0, "MAX_TOKENS")
    );
    let body = json!({"contents":[{"role":"user","parts":[{"text":"hello there"}]}]});
    let p = plan::plan("gemini-2.5-flash", &body, &knobs(5)).unwrap();
    assert_eq!((p.prompt, words(&p), p.cands[0].finish), (1 + 3, 5, "STOP"));
    // A JSON answer is cut at the room left, with MAX_TOKENS.
    let body = json!({"contents":[{"role":"user","parts":[{"text":"hello there"}]}],
                      "generationConfig":{"maxOutputTokens":3,"responseMimeType":"application/json",
                      "responseJsonSchema":{"type":"object","properties":{"a":{"type":"string","minLength":40}}}}});
    let p = plan::plan("gemini-2.5-flash", &body, &knobs(5)).unwrap();
    assert_eq!((words(&p), p.cands[0].finish), (3, "MAX_TOKENS"));
}
