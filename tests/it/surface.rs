//! The chat request surface end to end (issue 15 items 2, 4, 5): `n` billed for every choice and
//! held n times, structured outputs, logprobs, cached and reasoning tokens priced exactly, the
//! ignored `service_tier`, and the refusals (400s naming the param, nothing charged, nothing
//! sent upstream). Unary and streamed, API key and x402, memory on and off, through a fallback
//! list.

use http::{Method, StatusCode};
use serde_json::{Value, json};
use vectorway::config::known_network;
use vectorway::payments::sign::Signer;
use vectorway::payments::unix_now;
use vectorway::simulate::FaultPlan;

use crate::harness::{Env, Resp, W1, W2, fast_knobs, sse_data};

/// gemini-2.5-flash after the 1.2 markup, credits per 1M tokens: input, cache read, output.
const FLASH: (u128, u128, u128) = (360_000, 36_000, 3_000_000);
/// gemini-3.1-flash-lite: no cache price in the reference, so cached tokens cost input.
const LITE_31: (u128, u128, u128) = (300_000, 300_000, 1_800_000);

/// ceil(((prompt − cached)·in + cached·cache + completion·out) / 1e6), computed here.
fn credits(rates: (u128, u128, u128), prompt: u64, cached: u64, completion: u64) -> u64 {
    let (i, c, o) = rates;
    let micro =
        u128::from(prompt - cached) * i + u128::from(cached) * c + u128::from(completion) * o;
    u64::try_from(micro.div_ceil(1_000_000)).unwrap()
}

fn ok(res: &Resp) {
    assert_eq!(
        res.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&res.body)
    );
}

/// A stream's chunks (JSON), `[DONE]` and receipts excluded.
fn chunks(res: &Resp) -> Vec<Value> {
    sse_data(&res.body)
        .into_iter()
        .filter(|d| d != "[DONE]")
        .map(|d| serde_json::from_str(&d).unwrap())
        .filter(|v: &Value| {
            v["object"] == "chat.completion.chunk" && v.get("transaction").is_none()
        })
        .collect()
}

/// Per choice index: (streamed text, deltas carrying the role, finish reasons).
fn per_choice(chunks: &[Value]) -> Vec<(String, usize, Vec<String>)> {
    let mut out: Vec<(String, usize, Vec<String>)> = Vec::new();
    for c in chunks {
        for ch in c["choices"].as_array().unwrap() {
            let i = ch["index"].as_u64().unwrap() as usize;
            if out.len() <= i {
                out.resize(i + 1, (String::new(), 0, Vec::new()));
            }
            out[i]
                .0
                .push_str(ch["delta"]["content"].as_str().unwrap_or(""));
            out[i].1 += usize::from(ch["delta"]["role"] == "assistant");
            if let Some(f) = ch["finish_reason"].as_str() {
                out[i].2.push(f.to_string());
            }
        }
    }
    out
}

fn usage_chunk(chunks: &[Value]) -> Value {
    chunks.last().unwrap()["usage"].clone()
}

/// The newest debit of `wallet`, as a positive number of credits.
async fn last_debit(env: &Env, wallet: &str) -> u64 {
    let entry = env.ledger(wallet).await.into_iter().next().unwrap();
    assert_eq!(entry.kind, vectorway::storage::LedgerKind::Debit);
    entry.credits.unsigned_abs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_choices_are_billed_for_every_candidate_exactly() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 10_000_000).await;
    let ask = |n: u32, stream: bool| {
        json!({"model":"gemini-2.5-flash","memory_read":false,"memory_write":false,"n":n,"max_tokens":100,
            "stream":stream,"stream_options":{"include_usage":true},
            "messages":[{"role":"user","content":"tell me about vectors"}]})
    };
    let one = env.chat(&key, ask(1, false)).await;
    ok(&one);
    let one = one.json();
    assert_eq!(one["usage"]["completion_tokens"], 24, "one candidate");
    let before = env.balance(W1).balance;
    let res = env.chat(&key, ask(2, false)).await;
    ok(&res);
    let v = res.json();
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    assert_eq!(
        (&choices[0]["index"], &choices[1]["index"]),
        (&json!(0), &json!(1))
    );
    assert_ne!(
        choices[0]["message"]["content"],
        choices[1]["message"]["content"]
    );
    assert_eq!(
        choices[0]["message"]["content"],
        one["choices"][0]["message"]["content"]
    );
    let u = &v["usage"];
    let (prompt, completion) = (
        u["prompt_tokens"].as_u64().unwrap(),
        u["completion_tokens"].as_u64().unwrap(),
    );
    assert_eq!(completion, 48, "both candidates' output is billed");
    let cost = credits(FLASH, prompt, 0, completion);
    assert_eq!(u["credit_cost"], cost);
    assert_eq!(last_debit(&env, W1).await, cost);
    assert_eq!(before - env.balance(W1).balance, cost);
    // Streamed: each choice opens with the role, ends with its own finish, then the usage.
    let before = env.balance(W1).balance;
    let res = env.chat(&key, ask(2, true)).await;
    ok(&res);
    let cs = chunks(&res);
    let per = per_choice(&cs);
    assert_eq!(per.len(), 2);
    for (i, (text, roles, finishes)) in per.iter().enumerate() {
        assert_eq!(
            *text,
            choices[i]["message"]["content"].as_str().unwrap(),
            "choice {i}"
        );
        assert_eq!(
            (*roles, finishes.as_slice()),
            (1, &["stop".to_string()][..]),
            "choice {i}"
        );
    }
    let u = usage_chunk(&cs);
    assert_eq!(u["completion_tokens"], 48);
    let cost = credits(FLASH, u["prompt_tokens"].as_u64().unwrap(), 0, 48);
    assert_eq!(u["credit_cost"], cost);
    assert_eq!(last_debit(&env, W1).await, cost);
    assert_eq!(before - env.balance(W1).balance, cost);
    // Through a fallback list, memory on: the first model fails, the second answers n choices.
    env.sim.set_faults(FaultPlan {
        status: Some(503),
        times: Some(1),
        ..FaultPlan::default()
    });
    let mut body = ask(2, false);
    body["models"] = json!(["gemini-2.5-flash-lite", "gemini-2.5-flash"]);
    body["memory_read"] = json!(true);
    body.as_object_mut().unwrap().remove("model");
    let res = env.chat(&key, body).await;
    ok(&res);
    assert_eq!(res.headers["x-model-used"], "gemini-2.5-flash");
    let v = res.json();
    assert_eq!(v["choices"].as_array().unwrap().len(), 2);
    assert_eq!(env.last_generate()["generationConfig"]["candidateCount"], 2);
    assert_eq!(
        v["usage"]["credit_cost"],
        credits(FLASH, v["usage"]["prompt_tokens"].as_u64().unwrap(), 0, 48)
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hold_and_the_quote_cover_every_choice() {
    let env = Env::start().await;
    // 18 prompt tokens ("hi" + 16), 1000 completion tokens per choice: n = 1 holds
    // ceil(18·0.36 + 1000·3.0) = 3007 credits, n = 2 holds 6007.
    let ask = |n: u32| {
        json!({"model":"gemini-2.5-flash","memory_read":false,"memory_write":false,"n":n,"max_tokens":1000,
            "messages":[{"role":"user","content":"hi"}]})
    };
    for (n, quote) in [(1, 3007), (2, 6007)] {
        let res = env
            .send(
                Method::POST,
                "/v1/chat/completions",
                &[],
                ask(n).to_string(),
            )
            .await;
        assert_eq!(res.status, StatusCode::PAYMENT_REQUIRED);
        assert_eq!(
            res.json()["accepts"][0]["maxAmountRequired"],
            quote.to_string(),
            "n={n}"
        );
    }
    let key = env.funded_key(W2, 5_000).await;
    let sent = env.generate_requests();
    let res = env.chat(&key, ask(2)).await;
    assert_eq!(
        (res.status, res.code()),
        (StatusCode::PAYMENT_REQUIRED, "insufficient_credits".into())
    );
    assert_eq!(
        env.generate_requests(),
        sent,
        "refused before any upstream call"
    );
    assert_eq!(env.balance(W2).balance, 5_000);
    ok(&env.chat(&key, ask(1)).await);
    env.stop().await;
}

fn x_payment(s: &Signer, value: u64) -> String {
    let p = s
        .pay(
            &known_network("base-sepolia").unwrap(),
            "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
                .parse()
                .unwrap(),
            value,
            unix_now(),
            300,
        )
        .unwrap();
    p.x_payment().unwrap().to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_call_keeps_what_every_choice_cost() {
    // 400 words a candidate: two cost more than the $0.001 floor, so the floor hides nothing.
    let mut knobs = fast_knobs();
    knobs.reply_tokens = 400;
    let env = Env::with_knobs(knobs, |_| {}).await;
    for stream in [false, true] {
        let body = json!({"model":"gemini-2.5-flash","n":2,"max_tokens":1000,"stream":stream,
            "stream_options":{"include_usage":true},"messages":[{"role":"user","content":"pay for two"}]});
        let res = env
            .send(Method::POST, "/v1/chat/completions", &[], body.to_string())
            .await;
        let quote: u64 = res.json()["accepts"][0]["maxAmountRequired"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let payer = Signer::random().unwrap();
        let res = env
            .send(
                Method::POST,
                "/v1/chat/completions",
                &[("x-payment", x_payment(&payer, quote).as_str())],
                body.to_string(),
            )
            .await;
        ok(&res);
        let u = if stream {
            let cs = chunks(&res);
            assert_eq!(per_choice(&cs).len(), 2);
            usage_chunk(&cs)
        } else {
            let v = res.json();
            assert_eq!(v["choices"].as_array().unwrap().len(), 2);
            v["usage"].clone()
        };
        assert_eq!(u["completion_tokens"], 800, "stream={stream}");
        let cost = credits(FLASH, u["prompt_tokens"].as_u64().unwrap(), 0, 800);
        assert!(cost > 1_000 && cost < quote, "{cost} of {quote}");
        let kept = vectorway::billing::pricing::parse_usd_micros(u["usd_cost"].as_str().unwrap());
        assert_eq!(
            kept,
            Some(cost),
            "stream={stream}: kept exactly what both choices cost"
        );
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_prompt_tokens_are_charged_at_the_cache_rate() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 10_000_000).await;
    env.sim.set_faults(FaultPlan {
        cached_tokens: Some(1_000),
        ..FaultPlan::default()
    });
    // About 1200 prompt tokens, 1000 of them served from Gemini's cache.
    let long = "cache me ".repeat(530);
    for (model, rates) in [
        ("gemini-2.5-flash", FLASH),
        ("gemini-3.1-flash-lite", LITE_31),
    ] {
        for stream in [false, true] {
            let before = env.balance(W1).balance;
            let res = env
                .chat(
                    &key,
                    json!({"model":model,"memory_read":false,"memory_write":false,"stream":stream,
                        "stream_options":{"include_usage":true},"max_tokens":100,
                        "messages":[{"role":"user","content":long}]}),
                )
                .await;
            ok(&res);
            let u = if stream {
                usage_chunk(&chunks(&res))
            } else {
                res.json()["usage"].clone()
            };
            let case = format!("{model} stream={stream}");
            assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 1_000, "{case}");
            let (p, c) = (
                u["prompt_tokens"].as_u64().unwrap(),
                u["completion_tokens"].as_u64().unwrap(),
            );
            assert!(p > 1_000, "{case}: {p}");
            let cost = credits(rates, p, 1_000, c);
            assert_eq!(u["credit_cost"], cost, "{case}");
            assert_eq!(last_debit(&env, W1).await, cost, "{case}");
            assert_eq!(before - env.balance(W1).balance, cost, "{case}");
            let uncached = credits(rates, p, 0, c);
            if rates.1 < rates.0 {
                assert!(cost + 300 < uncached, "{case}: {cost} vs {uncached}");
            } else {
                assert_eq!(cost, uncached, "{case}: no cache price, input price");
            }
        }
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasoning_tokens_are_reported_and_priced_as_output() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 10_000_000).await;
    for stream in [false, true] {
        let res = env
            .chat(
                &key,
                json!({"model":"gemini-2.5-flash","memory_read":false,"memory_write":false,"stream":stream,
                    "stream_options":{"include_usage":true},"reasoning_effort":"low","max_tokens":200,
                    "messages":[{"role":"user","content":"think first"}]}),
            )
            .await;
        ok(&res);
        let u = if stream {
            usage_chunk(&chunks(&res))
        } else {
            res.json()["usage"].clone()
        };
        // The simulator thinks 24 tokens on a budget, then writes 24 words.
        assert_eq!(
            u["completion_tokens_details"]["reasoning_tokens"], 24,
            "stream={stream}"
        );
        assert_eq!(
            u["completion_tokens"], 48,
            "thinking is part of the completion"
        );
        let cost = credits(FLASH, u["prompt_tokens"].as_u64().unwrap(), 0, 48);
        assert_eq!(u["credit_cost"], cost);
        assert_eq!(last_debit(&env, W1).await, cost);
    }
    env.stop().await;
}

fn person() -> Value {
    json!({"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer","minimum":0},
        "tags":{"type":"array","items":{"type":"string"},"minItems":1}},
        "required":["name","age","tags"],"additionalProperties":false})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_outputs_reach_gemini_and_come_back_as_json() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 10_000_000).await;
    let mut sent_schema = person();
    sent_schema["title"] = json!("person");
    sent_schema["description"] = json!("Someone from the text.");
    for (stream, fallback, memory) in [
        (false, false, false),
        (true, false, true),
        (false, true, true),
        (true, true, false),
    ] {
        if fallback {
            env.sim.set_faults(FaultPlan {
                status: Some(503),
                times: Some(1),
                ..FaultPlan::default()
            });
        }
        let mut body = json!({"memory_read":memory,"memory_write":memory,"stream":stream,
            "messages":[{"role":"user","content":"Ada Lovelace wrote notes"}],
            "response_format":{"type":"json_schema","json_schema":{"name":"person",
                "description":"Someone from the text.","strict":true,"schema":person()}}});
        if fallback {
            body["models"] = json!(["gemini-2.5-pro", "gemini-2.5-flash"]);
        }
        let res = env.chat(&key, body).await;
        ok(&res);
        let case = format!("stream={stream} fallback={fallback} memory={memory}");
        let g = &env.last_generate()["generationConfig"];
        assert_eq!(g["responseMimeType"], "application/json", "{case}");
        assert_eq!(g["responseJsonSchema"], sent_schema, "{case}");
        let text = if stream {
            per_choice(&chunks(&res))[0].0.clone()
        } else {
            res.json()["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{case}: {e}: {text}"));
        assert!(
            v["name"].is_string() && v["age"].as_u64().is_some(),
            "{case}: {v}"
        );
        assert!(!v["tags"].as_array().unwrap().is_empty(), "{case}: {v}");
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_400s_naming_the_param_and_cost_nothing() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 1_000_000).await;
    let fmt = |js: Value| json!({"type":"json_schema","json_schema":js});
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (
            json!({"response_format":fmt(json!({"name":"p","schema":{"type":"object","properties":{"a":{"type":"text"}}}}))}),
            400,
            "invalid_schema",
            "response_format.json_schema.schema.properties.a.type",
        ),
        (
            json!({"response_format":fmt(json!({"name":"p","strict":true,"schema":{"type":"object","properties":{"a":{"type":"string","minLength":3}}}}))}),
            400,
            "invalid_schema",
            "response_format.json_schema.schema.properties.a.minLength",
        ),
        (
            json!({"response_format":fmt(json!({"name":"bad name!","schema":person()}))}),
            400,
            "invalid_schema",
            "response_format.json_schema.name",
        ),
        (
            json!({"prediction":{"type":"content","content":"x"}}),
            400,
            "unsupported_parameter",
            "prediction",
        ),
        (
            json!({"audio":{"voice":"alloy","format":"wav"},"modalities":["text","audio"]}),
            400,
            "unsupported_parameter",
            "audio",
        ),
        (
            json!({"modalities":["text","audio"]}),
            400,
            "unsupported_parameter",
            "modalities",
        ),
        (
            json!({"logit_bias":{"1234":5}}),
            400,
            "unsupported_parameter",
            "logit_bias",
        ),
        (
            json!({"web_search_options":{}}),
            400,
            "unsupported_parameter",
            "web_search_options",
        ),
        (
            json!({"model":"gemini-3.5-flash","n":2}),
            400,
            "unsupported_parameter",
            "n",
        ),
        (
            json!({"models":["gemini-2.5-flash","gemini-3.1-flash-lite"],"n":2}),
            400,
            "unsupported_parameter",
            "n",
        ),
        (json!({"n":9}), 422, "validation_error", "n"),
        (
            json!({"logprobs":true,"top_logprobs":21}),
            422,
            "validation_error",
            "top_logprobs",
        ),
        (
            json!({"top_logprobs":3}),
            422,
            "validation_error",
            "top_logprobs",
        ),
        (
            json!({"metadata":{"k":{"nested":true}}}),
            422,
            "validation_error",
            "metadata",
        ),
    ];
    let sent = env.generate_requests();
    for (extra, status, code, param) in cases {
        for stream in [false, true] {
            let mut body = json!({"messages":[{"role":"user","content":"hi"}],"stream":stream});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            let res = env.chat(&key, body).await;
            assert_eq!(res.status.as_u16(), status, "{extra}");
            let e = &res.json()["error"];
            assert_eq!(
                (e["code"].as_str(), e["param"].as_str()),
                (Some(code), Some(param)),
                "{extra}"
            );
            assert_eq!(e["type"], "invalid_request_error");
        }
    }
    assert_eq!(
        env.generate_requests(),
        sent,
        "nothing reached the upstream"
    );
    assert_eq!(env.balance(W1).balance, 1_000_000, "nothing was charged");
    // Unpaid, a refused request is refused before the price is asked.
    let res = env
        .send(
            Method::POST,
            "/v1/chat/completions",
            &[],
            json!({"messages":[{"role":"user","content":"hi"}],"logit_bias":{"1":1}}).to_string(),
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprobs_come_back_per_choice_unary_and_streamed() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 10_000_000).await;
    let ask = |stream: bool, logprobs: bool| {
        json!({"model":"gemini-2.5-flash","memory_read":false,"memory_write":false,"n":2,"stream":stream,
            "logprobs":logprobs,"top_logprobs":if logprobs { json!(2) } else { json!(null) },
            "messages":[{"role":"user","content":"tell me about tokens"}]})
    };
    let res = env.chat(&key, ask(false, true)).await;
    ok(&res);
    let v = res.json();
    let g = &env.last_generate()["generationConfig"];
    assert_eq!(
        (&g["responseLogprobs"], &g["logprobs"]),
        (&json!(true), &json!(2))
    );
    let mut unary = Vec::new();
    for ch in v["choices"].as_array().unwrap() {
        let content = ch["logprobs"]["content"].as_array().unwrap();
        let tokens: String = content
            .iter()
            .map(|t| t["token"].as_str().unwrap())
            .collect();
        assert_eq!(tokens, ch["message"]["content"].as_str().unwrap());
        for t in content {
            let bytes: Vec<u8> = t["bytes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_u64().unwrap() as u8)
                .collect();
            assert_eq!(bytes, t["token"].as_str().unwrap().as_bytes());
            let top = t["top_logprobs"].as_array().unwrap();
            assert_eq!(top.len(), 2);
            assert_eq!(top[0]["token"], t["token"]);
            assert!(t["logprob"].as_f64().unwrap() <= 0.0);
        }
        unary.push(content.clone());
    }
    // Streamed: the chunks' log probabilities add up to the unary ones, choice by choice.
    let res = env.chat(&key, ask(true, true)).await;
    ok(&res);
    let mut streamed = vec![Vec::new(), Vec::new()];
    let mut opened = [false, false];
    for c in chunks(&res) {
        for ch in c["choices"].as_array().unwrap() {
            let i = ch["index"].as_u64().unwrap() as usize;
            if !std::mem::replace(&mut opened[i], true) {
                // SDK stream helpers build a choice from its first chunk, then add that chunk's
                // log probabilities again: a choice opens with a bare role chunk, as OpenAI's do.
                assert_eq!(ch["delta"], json!({"role":"assistant","content":""}));
                assert!(ch["logprobs"].is_null());
            }
            if let Some(l) = ch["logprobs"]["content"].as_array() {
                assert!(
                    ch["delta"]["content"].is_string(),
                    "on the chunk of their text"
                );
                streamed[ch["index"].as_u64().unwrap() as usize].extend(l.iter().cloned());
            }
        }
    }
    assert_eq!(streamed, unary);
    // Not asked: null, and Gemini is not asked either.
    let res = env.chat(&key, ask(false, false)).await;
    assert!(res.json()["choices"][0]["logprobs"].is_null());
    assert!(
        env.last_generate()["generationConfig"]
            .get("responseLogprobs")
            .is_none()
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_tier_is_ignored_with_a_warning_and_metadata_stays_here() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 1_000_000).await;
    for stream in [false, true] {
        let res = env
            .chat(
                &key,
                json!({"messages":[{"role":"user","content":"hi"}],"stream":stream,"service_tier":"priority",
                    "user":"end-user-42","metadata":{"ticket":"T-981"},"store":false,"an_unknown_field":1}),
            )
            .await;
        ok(&res);
        assert_eq!(res.headers["x-vectorway-warning"], "ignored: service_tier");
        let sent = env.last_generate().to_string();
        assert!(
            !sent.contains("end-user-42") && !sent.contains("T-981"),
            "{sent}"
        );
    }
    let res = env
        .chat(&key, json!({"messages":[{"role":"user","content":"hi"}]}))
        .await;
    assert!(res.headers.get("x-vectorway-warning").is_none());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_choices_with_tools_keep_their_own_calls() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 10_000_000).await;
    let tool = json!({"type":"function","function":{"name":"get_weather",
        "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}});
    let ask = |stream: bool| {
        json!({"model":"gemini-2.5-flash","memory_read":false,"memory_write":false,"n":2,"stream":stream,
            "tools":[tool.clone()],"messages":[{"role":"user","content":"get_weather for Paris please"}]})
    };
    let res = env.chat(&key, ask(false)).await;
    ok(&res);
    let v = res.json();
    let mut ids = Vec::new();
    for ch in v["choices"].as_array().unwrap() {
        assert_eq!(ch["finish_reason"], "tool_calls");
        let call = &ch["message"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "get_weather");
        ids.push(call["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1], "call ids are distinct across choices");
    let res = env.chat(&key, ask(true)).await;
    ok(&res);
    let mut streamed: Vec<(u64, String)> = Vec::new();
    let mut finishes = Vec::new();
    for c in chunks(&res) {
        for ch in c["choices"].as_array().unwrap() {
            let i = ch["index"].as_u64().unwrap();
            if let Some(calls) = ch["delta"]["tool_calls"].as_array() {
                streamed.extend(
                    calls
                        .iter()
                        .map(|t| (i, t["id"].as_str().unwrap().to_string())),
                );
            }
            if let Some(f) = ch["finish_reason"].as_str() {
                finishes.push((i, f.to_string()));
            }
        }
    }
    assert_eq!(streamed.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 1]);
    assert_ne!(streamed[0].1, streamed[1].1);
    assert_eq!(
        finishes,
        [(0, "tool_calls".into()), (1, "tool_calls".into())]
    );
    env.stop().await;
}
