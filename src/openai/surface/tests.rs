//! The request surface through `parse_chat`: what is accepted, translated, refused, and the
//! error each refusal gets (status class, code and `param`).

use serde_json::{Value, json};

use crate::api::types::{ChatRequest, parse_chat};
use crate::billing::pricing::ModelPrice;
use crate::error::{Error, RequestError};

fn parse(extra: Value) -> Result<ChatRequest, RequestError> {
    let mut body = json!({"messages":[{"role":"user","content":"hi"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    parse_chat(body.to_string().as_bytes())
}

/// (status, code, param) of a refusal.
fn refusal(extra: Value) -> (u16, &'static str, String) {
    let e = Error::from(parse(extra.clone()).expect_err(&extra.to_string()));
    (
        e.status().as_u16(),
        e.code(),
        e.param().unwrap_or_default().to_string(),
    )
}

fn flash() -> ModelPrice {
    ModelPrice::new(
        "m".into(),
        "gemini-2.5-flash".into(),
        vec![],
        300_000,
        2_500_000,
        None,
        1_200_000,
        1,
        65_536,
    )
}

fn person() -> Value {
    json!({"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},
        "required":["name","age"],"additionalProperties":false})
}

#[test]
fn json_schema_reaches_the_call_with_name_and_description() {
    let r = parse(
        json!({"response_format":{"type":"json_schema","json_schema":{
        "name":"person","description":"A person.","schema":person(),"strict":true}}}),
    )
    .unwrap();
    let call = r.to_call(&flash(), 1024);
    let mut want = person();
    want["title"] = json!("person");
    want["description"] = json!("A person.");
    assert_eq!(call.params.response_schema.as_ref(), Some(&want));
    assert!(call.params.json_mode);
    let v: Value =
        serde_json::from_slice(&crate::upstream::gemini::translate::encode_request(&call)).unwrap();
    assert_eq!(
        v["generationConfig"]["responseMimeType"],
        "application/json"
    );
    assert_eq!(v["generationConfig"]["responseJsonSchema"], want);
    // The schema counts in the prompt bound: its bytes + 16.
    let plain = parse(json!({})).unwrap();
    assert_eq!(
        r.prompt_token_bound(),
        plain.prompt_token_bound() + want.to_string().len() as u64 + 16
    );
    // json_object stays as it was: JSON, no schema.
    let o = parse(json!({"response_format":{"type":"json_object"}})).unwrap();
    let call = o.to_call(&flash(), 1024);
    assert!(call.params.json_mode && call.params.response_schema.is_none());
}

#[test]
fn schema_and_name_errors_are_400s_naming_the_path() {
    let fmt = |js: Value| json!({"response_format":{"type":"json_schema","json_schema":js}});
    for (extra, param) in [
        (
            json!({"response_format":{"type":"json_schema"}}),
            "response_format.json_schema",
        ),
        (
            fmt(json!({"schema":person()})),
            "response_format.json_schema.name",
        ),
        (
            fmt(json!({"name":"has space","schema":person()})),
            "response_format.json_schema.name",
        ),
        (
            fmt(json!({"name":"a".repeat(65),"schema":person()})),
            "response_format.json_schema.name",
        ),
        (
            fmt(json!({"name":"p","schema":{"type":"object","properties":{"x":{"type":"text"}}}})),
            "response_format.json_schema.schema.properties.x.type",
        ),
        (
            fmt(
                json!({"name":"p","strict":true,"schema":{"type":"object","properties":{"x":{"type":"string","pattern":"^a"}}}}),
            ),
            "response_format.json_schema.schema.properties.x.pattern",
        ),
        (
            fmt(json!({"name":"p","schema":"nope"})),
            "response_format.json_schema.schema",
        ),
    ] {
        assert_eq!(
            refusal(extra.clone()),
            (400, "invalid_schema", param.to_string()),
            "{extra}"
        );
    }
    assert_eq!(
        refusal(json!({"response_format":{"type":"xml"}})),
        (422, "validation_error", "response_format".into())
    );
}

#[test]
fn n_and_logprobs_reach_the_call() {
    let r = parse(json!({"n":3,"logprobs":true,"top_logprobs":5})).unwrap();
    let call = r.to_call(&flash(), 100);
    assert_eq!((call.params.candidates, call.params.logprobs), (3, Some(5)));
    let v: Value =
        serde_json::from_slice(&crate::upstream::gemini::translate::encode_request(&call)).unwrap();
    let g = &v["generationConfig"];
    assert_eq!(
        (&g["candidateCount"], &g["responseLogprobs"], &g["logprobs"]),
        (&json!(3), &json!(true), &json!(5))
    );
    // The hold covers every choice: the completion cap times n.
    assert_eq!(r.completion_bound(100), 300);
    let one = parse(json!({})).unwrap();
    assert_eq!(
        r.cost_bound(&flash(), 100, 0),
        flash().cost(one.prompt_token_bound(), 300)
    );
    // n = 1 and no logprobs send nothing new.
    let v: Value = serde_json::from_slice(&crate::upstream::gemini::translate::encode_request(
        &one.to_call(&flash(), 100),
    ))
    .unwrap();
    for k in [
        "candidateCount",
        "responseLogprobs",
        "logprobs",
        "responseJsonSchema",
    ] {
        assert!(v["generationConfig"].get(k).is_none(), "{k}");
    }
    // logprobs without top_logprobs: responseLogprobs alone.
    let l = parse(json!({"logprobs":true}))
        .unwrap()
        .to_call(&flash(), 100);
    assert_eq!(l.params.logprobs, Some(0));
}

#[test]
fn range_errors_are_422s_naming_the_field() {
    for (extra, param) in [
        (json!({"n":9}), "n"),
        (json!({"n":0}), "n"),
        (json!({"logprobs":true,"top_logprobs":21}), "top_logprobs"),
        (json!({"logprobs":true,"top_logprobs":-1}), "top_logprobs"),
        (json!({"top_logprobs":2}), "top_logprobs"),
        (json!({"logprobs":false,"top_logprobs":2}), "top_logprobs"),
        (json!({"metadata":"x"}), "metadata"),
        (json!({"metadata":{"k":1}}), "metadata"),
        (json!({"metadata":{"k":"v".repeat(513)}}), "metadata"),
        (
            json!({ "metadata": serde_json::Map::from_iter([("k".repeat(65), json!("v"))]) }),
            "metadata",
        ),
    ] {
        assert_eq!(
            refusal(extra.clone()),
            (422, "validation_error", param.to_string()),
            "{extra}"
        );
    }
    let many: serde_json::Map<String, Value> =
        (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    assert_eq!(
        refusal(json!({ "metadata": many })).2,
        "metadata".to_string()
    );
}

#[test]
fn accepted_fields_and_the_ignored_tier() {
    let sixteen: serde_json::Map<String, Value> = (0..16)
        .map(|i| (format!("{i}{}", "k".repeat(62)), json!("é".repeat(512))))
        .collect();
    let r = parse(
        json!({"metadata":sixteen,"user":"u-1","service_tier":"flex","modalities":["text"],
        "logit_bias":{},"prediction":null,"audio":null,"stream_options":{"include_usage":true},
        "store":false,"some_future_field":{"x":[1]}}),
    )
    .unwrap();
    assert_eq!(r.surface.ignored, ["service_tier"]);
    // Neither metadata nor user goes upstream.
    let v: Value = serde_json::from_slice(&crate::upstream::gemini::translate::encode_request(
        &r.to_call(&flash(), 10),
    ))
    .unwrap();
    let text = v.to_string();
    assert!(!text.contains("u-1") && !text.contains("kkkk"), "{text}");
    assert!(parse(json!({})).unwrap().surface.ignored.is_empty());
}

#[test]
fn unsupported_fields_are_refused_by_name() {
    for (extra, param) in [
        (
            json!({"prediction":{"type":"content","content":"x"}}),
            "prediction",
        ),
        (json!({"audio":{"voice":"alloy","format":"mp3"}}), "audio"),
        (json!({"modalities":["text","audio"]}), "modalities"),
        (json!({"modalities":"text"}), "modalities"),
        (json!({"logit_bias":{"50256":-100}}), "logit_bias"),
        (json!({"web_search_options":{}}), "web_search_options"),
    ] {
        assert_eq!(
            refusal(extra.clone()),
            (400, "unsupported_parameter", param.to_string()),
            "{extra}"
        );
    }
}

#[test]
fn json_schema_is_read_only_for_its_own_type() {
    let r = parse(json!({"response_format":{"type":"json_object","json_schema":5}})).unwrap();
    assert!(r.surface.json && r.surface.schema.is_none());
    assert_eq!(
        refusal(json!({"response_format":{"type":"json_schema","json_schema":{"name":5}}})),
        (400, "invalid_schema", "response_format.json_schema".into())
    );
    // No schema: JSON of any shape.
    let r = parse(json!({"response_format":{"type":"json_schema","json_schema":{"name":"any"}}}))
        .unwrap();
    assert!(r.surface.json && r.surface.schema.is_none());
}
