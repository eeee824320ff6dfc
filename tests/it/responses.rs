//! `POST /v1/responses` through the real server: the Response object and the typed stream events,
//! a function tool round trip (a Gemini 3 thought signature out and back), exact API-key
//! billing, x402 per call (unary and streamed, the 402 naming this route), and the 400s of a
//! stateless gateway without hosted tools, none of which reaches the model or costs anything.

use http::{Method, StatusCode};
use serde_json::{Value, json};
use vectorway::billing::pricing::parse_usd_micros;
use vectorway::config::known_network;
use vectorway::payments::sign::Signer;
use vectorway::payments::unix_now;
use vectorway::simulate::FaultPlan;
use vectorway::storage::LedgerKind;

use crate::harness::{Env, Resp, W1, W2, eventually};

const PAY_TO: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

async fn respond(env: &Env, key: &str, body: &Value) -> Resp {
    env.send(
        Method::POST,
        "/v1/responses",
        &[("x-api-key", key), ("content-type", "application/json")],
        body.to_string(),
    )
    .await
}

fn weather_tool() -> Value {
    json!({"type":"function","name":"get_weather","description":"Current weather in a city",
        "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]},"strict":true})
}

/// `(event, data)` of each SSE frame; `data` parsed when it is JSON.
fn events(body: &[u8]) -> Vec<(String, Value)> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|b| {
            let event = b
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("")
                .to_string();
            let data = b
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap_or("");
            (
                event,
                serde_json::from_str(data).unwrap_or_else(|_| json!(data)),
            )
        })
        .collect()
}

/// The typed events of a stream, checked: `event:` is `data.type`, sequence numbers count from
/// 0, the first two are `response.created` and `response.in_progress`.
fn typed(body: &[u8]) -> Vec<(String, Value)> {
    let all = events(body);
    let typed: Vec<_> = all
        .into_iter()
        .take_while(|(e, d)| e != "x402-receipt" && d != "[DONE]")
        .collect();
    for (i, (event, data)) in typed.iter().enumerate() {
        assert_eq!(data["type"], event.as_str(), "{data}");
        assert_eq!(data["sequence_number"], i, "{data}");
    }
    assert_eq!(typed[0].0, "response.created");
    assert_eq!(typed[1].0, "response.in_progress");
    typed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_response_is_billed_exactly_like_the_chat_it_runs() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 1_000_000).await;
    let body = json!({"model":"gemini-2.5-flash","instructions":"You are terse.","input":"Summarize our last run",
        "max_output_tokens":64,"memory_read":false,"memory_write":false,"store":true});
    let res = respond(&env, &key, &body).await;
    assert_eq!(
        res.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&res.body)
    );
    assert_eq!(res.headers["x-model-used"], "gemini-2.5-flash");
    let v = res.json();
    assert_eq!(v["object"], "response");
    assert!(v["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(v["status"], "completed");
    assert_eq!(v["store"], false, "nothing is stored");
    assert_eq!(v["instructions"], "You are terse.");
    assert_eq!(v["max_output_tokens"], 64);
    let item = &v["output"][0];
    assert_eq!(
        (&item["type"], &item["role"]),
        (&json!("message"), &json!("assistant"))
    );
    assert!(item["id"].as_str().unwrap().starts_with("msg_"));
    let text = item["content"][0]["text"].as_str().unwrap();
    assert!(!text.is_empty());
    assert_eq!(v["output_text"], text);
    // The request reached Gemini as the chat it stands for.
    let sent = env.last_generate();
    assert_eq!(
        sent["systemInstruction"]["parts"][0]["text"],
        "You are terse."
    );
    assert_eq!(sent["generationConfig"]["maxOutputTokens"], 64);
    // Billed at the model's price of the usage it reports, to the credit.
    let u = &v["usage"];
    let (p, c) = (
        u["input_tokens"].as_u64().unwrap(),
        u["output_tokens"].as_u64().unwrap(),
    );
    assert!(p > 0 && c > 0);
    assert_eq!(u["total_tokens"].as_u64().unwrap(), p + c);
    let price = env
        .gw()
        .state
        .config
        .prices
        .get("gemini-2.5-flash")
        .unwrap()
        .clone();
    let cost = u["credit_cost"].as_u64().unwrap();
    assert_eq!(cost, price.cost(p, c));
    let b = env.balance(W1);
    assert_eq!((b.balance, b.held), (1_000_000 - cost, 0));
    let request_id = res.headers["x-request-id"].to_str().unwrap();
    let debits: Vec<_> = env
        .ledger(W1)
        .await
        .into_iter()
        .filter(|e| e.kind == LedgerKind::Debit)
        .collect();
    assert_eq!(debits.len(), 1);
    assert_eq!(debits[0].reference.as_deref(), Some(request_id));
    assert_eq!(debits[0].credits, -(cost as i64));
    let ev = env.usage(W1).await;
    let ev = ev.iter().find(|e| e.request_id == request_id).unwrap();
    assert_eq!(
        (ev.path.as_str(), ev.status, ev.credits),
        ("/v1/responses", 200, cost)
    );
    assert_eq!((ev.prompt_tokens, ev.completion_tokens), (p, c));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_response_is_the_typed_event_sequence() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 1_000_000).await;
    let body = json!({"input":[{"role":"user","content":[{"type":"input_text","text":"Tell me a story"}]}],
        "stream":true,"memory_read":false,"memory_write":false});
    let res = respond(&env, &key, &body).await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(
        res.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let ev = typed(&res.body);
    let kinds: Vec<&str> = ev.iter().map(|(e, _)| e.as_str()).collect();
    let deltas: Vec<&str> = ev
        .iter()
        .filter(|(e, _)| e == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    assert!(deltas.len() > 1, "the text streams in pieces: {kinds:?}");
    let n = kinds.len();
    assert_eq!(
        kinds[2..4],
        ["response.output_item.added", "response.content_part.added"]
    );
    assert_eq!(
        kinds[n - 4..],
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ],
        "the stream ends with the completed response, and nothing after it"
    );
    let r = &ev[n - 1].1["response"];
    let text: String = deltas.concat();
    assert_eq!(r["output_text"], text.as_str());
    assert_eq!(ev[n - 4].1["text"], text.as_str());
    assert_eq!(r["status"], "completed");
    let cost = r["usage"]["credit_cost"].as_u64().unwrap();
    assert!(cost > 0 && r["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(env.balance(W1).balance, 1_000_000 - cost);
    env.stop().await;
}

/// The agent loop of the Responses API: the model calls a declared tool (the simulator calls a
/// tool the user names), the client runs it and sends the call and its output back as items.
/// On Gemini 3 the call carries a thought signature that must reach Gemini again unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_tool_round_trip_carries_the_thought_signature_back() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 5_000_000).await;
    for (model, stream, keep) in [
        ("gemini-2.5-flash", false, true),
        ("gemini-3.5-flash", false, true),
        ("gemini-3.5-flash", true, true),
        ("gemini-3.5-flash", false, false),
    ] {
        let case = format!("{model} stream={stream} keep={keep}");
        let user = json!({"role":"user","content":"Please call get_weather for Paris."});
        let first = json!({"model":model,"input":[user.clone()],"tools":[weather_tool()],
            "stream":stream,"memory_read":false,"memory_write":false});
        let res = respond(&env, &key, &first).await;
        assert_eq!(res.status, StatusCode::OK, "{case}");
        let response = if stream {
            let ev = typed(&res.body);
            let added = ev
                .iter()
                .find(|(e, d)| {
                    e == "response.output_item.added" && d["item"]["type"] == "function_call"
                })
                .unwrap();
            assert_eq!(added.1["item"]["arguments"], "", "{case}");
            let (kind, last) = ev.last().unwrap();
            assert_eq!(kind, "response.completed", "{case}");
            last["response"].clone()
        } else {
            res.json()
        };
        let call = response["output"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["type"] == "function_call")
            .unwrap_or_else(|| panic!("{case}: {response}"))
            .clone();
        assert_eq!(call["name"], "get_weather", "{case}");
        assert!(call["id"].as_str().unwrap().starts_with("fc_"), "{case}");
        assert!(
            call["call_id"].as_str().unwrap().starts_with("call_"),
            "{case}"
        );
        let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
        assert!(args["city"].is_string(), "{case}: {args}");
        let signature = call["extra_content"]["google"]["thought_signature"].clone();
        assert_eq!(
            signature.is_string(),
            model.starts_with("gemini-3"),
            "{case}"
        );
        // The item goes back as the SDKs send it: whole (or, dropping the signature, without it).
        let mut back = call.clone();
        if !keep {
            back.as_object_mut().unwrap().remove("extra_content");
        }
        let second = json!({"model":model,"tools":[weather_tool()],"memory_read":false,"memory_write":false,
            "input":[user, back, {"type":"function_call_output","call_id":call["call_id"],"output":"{\"temp_c\":21}"}]});
        let res = respond(&env, &key, &second).await;
        assert_eq!(
            res.status,
            StatusCode::OK,
            "{case}: {}",
            String::from_utf8_lossy(&res.body)
        );
        let sent = env.last_generate();
        let part = &sent["contents"][1]["parts"][0];
        assert_eq!(
            part["functionCall"]["name"], "get_weather",
            "{case}: {sent}"
        );
        assert_eq!(
            sent["contents"][2]["parts"][0]["functionResponse"]["response"],
            json!({"result":{"temp_c":21}}),
            "{case}"
        );
        match (signature.as_str(), keep) {
            (Some(s), true) => {
                assert_eq!(part["thoughtSignature"], s, "{case}: signature unchanged")
            }
            (Some(_), false) => assert_eq!(
                part["thoughtSignature"], "skip_thought_signature_validator",
                "{case}: chat's fallback"
            ),
            (None, _) => assert!(part.get("thoughtSignature").is_none(), "{case}"),
        }
        let v = res.json();
        assert_eq!(v["status"], "completed", "{case}");
        let text = v["output_text"].as_str().unwrap();
        assert!(
            text.contains("get_weather") && text.contains("21"),
            "{case}: the answer uses the tool result: {text}"
        );
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_format_json_schema_answers_json_that_fits_the_schema() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 1_000_000).await;
    let schema = json!({"type":"object","properties":{"city":{"type":"string"},"temp_c":{"type":"integer"}},
        "required":["city","temp_c"],"additionalProperties":false});
    let body = json!({"input":"Weather in Paris as JSON","memory_read":false,"memory_write":false,
        "text":{"format":{"type":"json_schema","name":"weather","schema":schema,"strict":true}}});
    let res = respond(&env, &key, &body).await;
    assert_eq!(
        res.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&res.body)
    );
    let sent = env.last_generate();
    assert_eq!(
        sent["generationConfig"]["responseMimeType"],
        "application/json"
    );
    let v = res.json();
    assert_eq!(v["text"]["format"]["name"], "weather");
    let answer: Value = serde_json::from_str(v["output_text"].as_str().unwrap()).unwrap();
    assert!(
        answer["city"].is_string() && answer["temp_c"].is_i64(),
        "{answer}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_stateless_gateway_cannot_do_is_a_400_that_costs_nothing() {
    let env = Env::start().await;
    let key = env.funded_key(W2, 1_000_000).await;
    let before = env.generate_requests();
    for (body, code, param) in [
        (
            json!({"input":"hi","tools":[{"type":"web_search"}]}),
            "invalid_tool",
            "tools[0].type",
        ),
        (
            json!({"input":"hi","tools":[weather_tool(),{"type":"file_search","vector_store_ids":["vs_1"]}]}),
            "invalid_tool",
            "tools[1].type",
        ),
        (
            json!({"input":"hi","previous_response_id":"resp_123"}),
            "unsupported_parameter",
            "previous_response_id",
        ),
        (
            json!({"input":[{"type":"item_reference","id":"msg_1"}]}),
            "unsupported_parameter",
            "input[0].type",
        ),
        (
            json!({"input":[{"role":"user","content":"x"},{"type":"function_call_output","call_id":"nobody","output":"1"}]}),
            "invalid_tool",
            "input[1].call_id",
        ),
    ] {
        for stream in [false, true] {
            let mut body = body.clone();
            body["stream"] = json!(stream);
            let res = respond(&env, &key, &body).await;
            assert_eq!(res.status, StatusCode::BAD_REQUEST, "{body}");
            let e = &res.json()["error"];
            assert_eq!(
                (e["code"].as_str(), e["param"].as_str()),
                (Some(code), Some(param)),
                "{body}"
            );
            assert!(!e["message"].as_str().unwrap().is_empty());
        }
    }
    // A Responses path also in 422s: the chat field a value went to is not named.
    let res = respond(&env, &key, &json!({"input":"hi","max_output_tokens":0})).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(res.json()["error"]["param"], "max_output_tokens");
    assert_eq!(env.generate_requests(), before, "nothing reached the model");
    let b = env.balance(W2);
    assert_eq!((b.balance, b.held), (1_000_000, 0), "nothing charged");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_failure_mid_stream_is_a_failed_response_billed_for_what_ran() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 1_000_000).await;
    env.sim.set_faults(FaultPlan {
        error_after_chunks: Some(2),
        times: Some(1),
        ..FaultPlan::default()
    });
    let body =
        json!({"input":"Tell me a story","stream":true,"memory_read":false,"memory_write":false});
    let res = respond(&env, &key, &body).await;
    assert_eq!(res.status, StatusCode::OK);
    let ev = typed(&res.body);
    let n = ev.len();
    assert_eq!(ev[n - 2].0, "error", "{ev:?}");
    assert!(!ev[n - 2].1["code"].as_str().unwrap().is_empty());
    let r = &ev[n - 1].1["response"];
    assert_eq!(
        (ev[n - 1].0.as_str(), &r["status"]),
        ("response.failed", &json!("failed"))
    );
    assert_eq!(r["error"]["code"], ev[n - 2].1["code"]);
    // The model ran, so the call is billed (as chat bills a cut stream), once.
    let request_id = res.headers["x-request-id"].to_str().unwrap().to_string();
    assert!(
        eventually(std::time::Duration::from_secs(2), || env.balance(W1).held
            == 0)
        .await
    );
    let charged = 1_000_000 - env.balance(W1).balance;
    assert!(charged > 0);
    let debits: Vec<_> = env
        .ledger(W1)
        .await
        .into_iter()
        .filter(|e| e.reference.as_deref() == Some(request_id.as_str()))
        .collect();
    assert_eq!(debits.len(), 1);
    assert_eq!(debits[0].credits, -(charged as i64));
    env.stop().await;
}

fn x_payment(s: &Signer, value: u64) -> String {
    let net = known_network("base-sepolia").unwrap();
    let p = s
        .pay(&net, PAY_TO.parse().unwrap(), value, unix_now(), 300)
        .unwrap();
    p.x_payment().unwrap().to_str().unwrap().to_string()
}

/// x402 per call: the 402 names `/v1/responses`; a paid unary answer carries the receipt header
/// and `usd_cost`; a paid stream ends with the completed response, `[DONE]` and the receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x402_pays_per_response_unary_and_streamed() {
    let env = Env::start().await;
    for stream in [false, true] {
        let body = json!({"input":"pay per call","max_output_tokens":2000,"stream":stream});
        let challenge = env
            .send(Method::POST, "/v1/responses", &[], body.to_string())
            .await;
        assert_eq!(challenge.status, StatusCode::PAYMENT_REQUIRED);
        let accepts = &challenge.json()["accepts"][0];
        assert!(
            accepts["resource"]
                .as_str()
                .unwrap()
                .ends_with("/v1/responses"),
            "{accepts}"
        );
        assert!(
            accepts["description"]
                .as_str()
                .unwrap()
                .contains("Responses")
        );
        let quote: u64 = accepts["maxAmountRequired"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let s = Signer::random().unwrap();
        let before = env.sim.balance(&s.address());
        let res = env
            .send(
                Method::POST,
                "/v1/responses",
                &[("x-payment", x_payment(&s, quote).as_str())],
                body.to_string(),
            )
            .await;
        assert_eq!(
            res.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&res.body)
        );
        assert_eq!(res.headers["x-payment-method"], "x402");
        let response = if stream {
            let text = String::from_utf8_lossy(&res.body).to_string();
            let completed = text.find("event: response.completed").unwrap();
            let done = text.find("data: [DONE]").expect("[DONE]");
            let receipt_at = text.find("event: x402-receipt").expect("the receipt");
            assert!(completed < done && done < receipt_at, "{text}");
            let all = events(&res.body);
            let receipt = &all.last().unwrap().1;
            assert_eq!(receipt["type"], "x402.receipt");
            assert_eq!(receipt["amount"], quote.to_string());
            assert_eq!(
                receipt["payer"].as_str().unwrap().to_lowercase(),
                s.address().to_string()
            );
            assert!(receipt["transaction"].as_str().unwrap().starts_with("0x"));
            typed(&res.body).last().unwrap().1["response"].clone()
        } else {
            assert!(res.headers.contains_key("x-payment-response"));
            res.json()
        };
        assert_eq!(response["status"], "completed");
        let usage = &response["usage"];
        assert!(usage["credit_cost"].is_null());
        let kept = parse_usd_micros(usage["usd_cost"].as_str().unwrap()).unwrap();
        assert!(kept >= 1_000 && kept < quote, "kept {kept} of {quote}");
        assert_eq!(
            before - env.sim.balance(&s.address()),
            quote,
            "the quote settled"
        );
        // The change comes back as credits.
        assert!(
            eventually(std::time::Duration::from_secs(3), || env
                .gw()
                .state
                .billing
                .balance(&s.address())
                .balance
                == quote - kept)
            .await,
            "change credited"
        );
        let events = env.usage(&s.address().to_string()).await;
        assert!(
            events
                .iter()
                .any(|e| e.path == "/v1/responses" && e.status == 200 && e.credits == kept),
            "{events:?}"
        );
    }
    env.stop().await;
}

/// The route is in every self-description: the OpenAPI operation (body, Response schema, the
/// 400 codes), the full reference with its notes, the skill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documents_describe_the_responses_api() {
    let env = Env::start().await;
    let spec: Value = env.send(Method::GET, "/openapi.json", &[], "").await.json();
    let op = &spec["paths"]["/v1/responses"]["post"];
    let body = &op["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(body["required"], json!(["input"]));
    assert!(body["properties"]["max_output_tokens"].is_object());
    let codes = op["responses"]["400"]["content"]["application/json"]["schema"]["allOf"][1]
        ["properties"]["error"]["properties"]["code"]["enum"]
        .to_string();
    assert!(
        codes.contains("unsupported_parameter") && codes.contains("invalid_tool"),
        "{codes}"
    );
    let schemas = &spec["components"]["schemas"];
    assert_eq!(
        schemas["Response"]["properties"]["object"]["const"],
        "response"
    );
    assert!(
        schemas["ResponseStreamEvent"]
            .to_string()
            .contains("response.output_text.delta")
    );
    let full = String::from_utf8(
        env.send(Method::GET, "/llms-full.txt", &[], "")
            .await
            .body
            .to_vec(),
    )
    .unwrap();
    let section = &full[full.find("### `POST /v1/responses`").expect("its section")..];
    for words in [
        "Stateless",
        "previous_response_id",
        "extra_content.google.thought_signature",
        "response.completed",
        "x402-receipt",
    ] {
        assert!(section.contains(words), "{words}");
    }
    let skill = String::from_utf8(
        env.send(Method::GET, "/skill.md", &[], "")
            .await
            .body
            .to_vec(),
    )
    .unwrap();
    assert!(skill.contains("/v1/responses"));
    env.stop().await;
}
