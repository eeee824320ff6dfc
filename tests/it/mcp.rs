//! `POST /mcp`: the JSON-RPC handshake and its faults, every tool with an API key (charged as on
//! REST), and x402 over MCP (payment in `_meta`, receipt in `_meta`, replay, failed settlement).

use http::{Method, StatusCode};
use serde_json::{Value, json};
use vectorway::config::known_network;
use vectorway::payments::sign::Signer;
use vectorway::payments::types::RequirementsV2;
use vectorway::payments::unix_now;

use crate::harness::{Env, Resp, W1, W2, eventually};

async fn rpc(env: &Env, headers: &[(&str, &str)], body: &Value) -> Resp {
    let mut h = vec![
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    h.extend_from_slice(headers);
    env.send(Method::POST, "/mcp", &h, body.to_string()).await
}

/// Calls a tool; returns the JSON-RPC `result` (the test fails on a protocol error).
async fn call(env: &Env, key: Option<&str>, name: &str, args: Value, meta: Option<Value>) -> Value {
    let mut params = json!({"name": name, "arguments": args});
    if let Some(m) = meta {
        params["_meta"] = m;
    }
    let headers: Vec<(&str, &str)> = key.map(|k| ("x-api-key", k)).into_iter().collect();
    let res = rpc(
        env,
        &headers,
        &json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params}),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    let v = res.json();
    assert_eq!(v["id"], 7);
    assert!(v.get("error").is_none(), "protocol error: {v}");
    v["result"].clone()
}

fn chat_args(text: &str) -> Value {
    json!({"messages": [{"role": "user", "content": text}], "max_tokens": 2000, "memory_read": false})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_listing_and_protocol_faults() {
    let env = Env::start().await;
    let init = rpc(&env, &[], &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}))
    .await;
    assert_eq!(init.status, StatusCode::OK);
    assert_eq!(init.headers["content-type"], "application/json");
    assert!(!init.headers.contains_key("mcp-session-id"), "stateless");
    let r = &init.json()["result"];
    assert_eq!(r["protocolVersion"], "2025-06-18");
    assert_eq!(r["serverInfo"]["name"], "vectorway");
    assert!(r["capabilities"]["tools"].is_object());
    // An unknown revision is answered with ours.
    let init = rpc(&env, &[], &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "1999-01-01"}})).await;
    assert_eq!(init.json()["result"]["protocolVersion"], "2025-11-25");
    // Notifications and client responses: 202, no body.
    let n = rpc(
        &env,
        &[],
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!((n.status, n.body.len()), (StatusCode::ACCEPTED, 0));
    let list = rpc(
        &env,
        &[("mcp-protocol-version", "2025-06-18")],
        &json!({"jsonrpc": "2.0", "id": "a", "method": "tools/list"}),
    )
    .await;
    let tools = list.json()["result"]["tools"].clone();
    let names: Vec<&str> = tools
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "chat",
            "memory_search",
            "memory_delete",
            "credits_balance",
            "usage_recent"
        ]
    );
    for t in tools.as_array().unwrap() {
        assert_eq!(t["inputSchema"]["type"], "object", "{}", t["name"]);
    }
    // The chat tool lists the configured models and their prices.
    let chat = &tools[0];
    assert!(
        chat["description"]
            .as_str()
            .unwrap()
            .contains("gemini-2.5-flash")
    );
    assert_eq!(
        rpc(
            &env,
            &[],
            &json!({"jsonrpc": "2.0", "id": 2, "method": "ping"})
        )
        .await
        .json()["result"],
        json!({})
    );
    // Faults.
    let e = rpc(
        &env,
        &[],
        &json!({"jsonrpc": "2.0", "id": 3, "method": "server/discover"}),
    )
    .await;
    assert_eq!(
        e.json()["error"]["code"],
        -32601,
        "unknown methods; the mcp SDK then falls back to initialize"
    );
    let e = env.send(Method::POST, "/mcp", &[], "{not json").await;
    assert_eq!(
        (e.status, e.json()["error"]["code"].as_i64()),
        (StatusCode::BAD_REQUEST, Some(-32700))
    );
    let e = rpc(
        &env,
        &[],
        &json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]),
    )
    .await;
    assert_eq!(
        (e.status, e.json()["error"]["code"].as_i64()),
        (StatusCode::BAD_REQUEST, Some(-32600))
    );
    let e = rpc(
        &env,
        &[],
        &json!({"jsonrpc": "1.0", "id": 1, "method": "ping"}),
    )
    .await;
    assert_eq!(e.json()["error"]["code"], -32600);
    let e = rpc(
        &env,
        &[],
        &json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "rm_rf"}}),
    )
    .await;
    assert_eq!(e.json()["error"]["code"], -32602);
    let e = rpc(
        &env,
        &[("mcp-protocol-version", "2020-01-01")],
        &json!({"jsonrpc": "2.0", "id": 5, "method": "ping"}),
    )
    .await;
    assert_eq!(
        (e.status, e.code()),
        (
            StatusCode::BAD_REQUEST,
            "unsupported_protocol_version".into()
        )
    );
    let e = rpc(
        &env,
        &[("origin", "https://evil.example")],
        &json!({"jsonrpc": "2.0", "id": 6, "method": "ping"}),
    )
    .await;
    assert_eq!(
        (e.status, e.code()),
        (StatusCode::FORBIDDEN, "origin_not_allowed".into())
    );
    let ok = rpc(
        &env,
        &[("origin", "http://localhost:3000")],
        &json!({"jsonrpc": "2.0", "id": 6, "method": "ping"}),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    // Stateless: no server-initiated stream, no session to end.
    for m in [Method::GET, Method::DELETE] {
        assert_eq!(
            env.send(m, "/mcp", &[], "").await.status,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tool_with_an_api_key_is_charged_as_on_rest() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 10_000_000).await;
    let other = env.funded_key(W2, 10_000_000).await;
    let before = env.balance(W1).balance;
    let r = call(&env, Some(&key), "chat", json!({"messages": [{"role": "user", "content": "remember the blue heron"}], "memory_write": true}), None).await;
    assert_eq!(r["isError"], false, "{r}");
    let text = r["content"][0]["text"].as_str().unwrap();
    assert!(!text.is_empty());
    assert_eq!(r["structuredContent"]["text"], text);
    let cost = r["structuredContent"]["usage"]["credit_cost"]
        .as_u64()
        .unwrap();
    assert!(cost > 0);
    let bal = env.balance(W1);
    assert_eq!(
        (bal.balance, bal.held),
        (before - cost, 0),
        "charged exactly the reported cost, no hold left"
    );
    // Memory written by the chat tool is searchable through the memory tool, by its owner only.
    // The write runs after the answer (embed, fsync, index): wait for it, bounded generously.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let found = loop {
        let r = call(
            &env,
            Some(&key),
            "memory_search",
            json!({"q": "blue heron", "k": 3}),
            None,
        )
        .await;
        if r["structuredContent"]["matches"]
            .as_array()
            .is_some_and(|m| !m.is_empty())
        {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the chat's memory never appeared: {r}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let id = found["structuredContent"]["matches"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let theirs = call(
        &env,
        Some(&other),
        "memory_search",
        json!({"q": "blue heron"}),
        None,
    )
    .await;
    assert_eq!(
        theirs["structuredContent"]["matches"],
        json!([]),
        "another wallet sees nothing"
    );
    let denied = call(&env, Some(&other), "memory_delete", json!({"id": id}), None).await;
    assert_eq!(denied["isError"], true);
    let del = call(&env, Some(&key), "memory_delete", json!({"id": id}), None).await;
    assert_eq!(del["isError"], false, "{del}");
    let again = call(
        &env,
        Some(&key),
        "memory_search",
        json!({"q": "blue heron"}),
        None,
    )
    .await;
    assert!(
        again["structuredContent"]["matches"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["id"] != id.as_str())
    );
    let credits = call(&env, Some(&key), "credits_balance", json!({}), None).await;
    assert_eq!(credits["isError"], false);
    assert_eq!(
        credits["structuredContent"]["credits"].as_u64(),
        Some(env.balance(W1).balance),
        "{credits}"
    );
    // Usage events are group-committed: poll until the chat's event is visible.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let usage = call(&env, Some(&key), "usage_recent", json!({"limit": 50}), None).await;
        let events = usage["structuredContent"]["events"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if events
            .iter()
            .any(|e| e["path"] == "/v1/chat/completions" && e["status"] == 200)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no chat in the usage history: {usage}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Free tools need an API key; bad arguments are tool errors the model can read.
    let anon = call(&env, None, "credits_balance", json!({}), None).await;
    assert_eq!(
        (
            anon["isError"].as_bool(),
            anon["structuredContent"]["error"]["code"].as_str()
        ),
        (Some(true), Some("missing_credentials"))
    );
    let bad = call(
        &env,
        Some(&key),
        "chat",
        json!({"messages": [], "stream": true}),
        None,
    )
    .await;
    assert_eq!(
        (
            bad["isError"].as_bool(),
            bad["structuredContent"]["error"]["code"].as_str()
        ),
        (Some(true), Some("validation_error"))
    );
    let bad = call(&env, Some(&key), "chat", json!({"messages": []}), None).await;
    assert_eq!(bad["isError"], true, "the REST validation applies");
    assert_eq!(env.balance(W1).held, 0);
    env.stop().await;
}

fn pay_for(s: &Signer, required: &Value) -> Value {
    let accepted: RequirementsV2 = serde_json::from_value(required["accepts"][0].clone()).unwrap();
    let amount: u64 = accepted.amount.parse().unwrap();
    let net = known_network("base-sepolia").unwrap();
    let p = s
        .pay(
            &net,
            accepted.pay_to.parse().unwrap(),
            amount,
            unix_now(),
            300,
        )
        .unwrap();
    serde_json::to_value(p.payload_v2(accepted)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x402_over_mcp_pays_replays_and_withholds() {
    let env = Env::start().await;
    let unpaid = call(&env, None, "chat", chat_args("pay per tool call"), None).await;
    assert_eq!(unpaid["isError"], true);
    let required = unpaid["structuredContent"].clone();
    assert_eq!(required["x402Version"], 2);
    assert_eq!(required["resource"]["url"], "mcp://tool/chat");
    assert_eq!(required["accepts"][0]["network"], "eip155:84532");
    let text: Value = serde_json::from_str(unpaid["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(text, required, "the same object as text");
    assert_eq!(env.sim.generation_count(), 0, "the tool did not run");

    let s = Signer::random().unwrap();
    let quote: u64 = required["accepts"][0]["amount"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let funds = env.sim.balance(&s.address());
    let payment = pay_for(&s, &required);
    let meta = json!({"x402/payment": payment});
    let paid = call(
        &env,
        None,
        "chat",
        chat_args("pay per tool call"),
        Some(meta.clone()),
    )
    .await;
    assert_eq!(paid["isError"], false, "{paid}");
    assert!(!paid["content"][0]["text"].as_str().unwrap().is_empty());
    let receipt = &paid["_meta"]["x402/payment-response"];
    assert_eq!(receipt["success"], true, "{paid}");
    assert_eq!(receipt["network"], "eip155:84532");
    assert_eq!(
        receipt["payer"].as_str().unwrap().to_lowercase(),
        s.address().to_string()
    );
    assert_eq!(
        funds - env.sim.balance(&s.address()),
        quote,
        "the quote settled"
    );
    let kept = vectorway::billing::pricing::parse_usd_micros(
        paid["structuredContent"]["usage"]["usd_cost"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(
        eventually(std::time::Duration::from_secs(30), || env
            .balance(&s.address().to_string())
            .balance
            == quote - kept)
        .await,
        "the change came back as credits"
    );
    let generations = env.sim.generation_count();

    // The same payment again: refused, nothing generated, nothing settled.
    let settled = env.sim.facilitator_stats().settled;
    let replay = call(
        &env,
        None,
        "chat",
        chat_args("pay per tool call"),
        Some(meta),
    )
    .await;
    assert_eq!(replay["isError"], true);
    assert_eq!(
        replay["structuredContent"]["error"]["code"], "x402_nonce_reused",
        "{replay}"
    );
    assert_eq!(env.sim.generation_count(), generations);
    assert_eq!(env.sim.facilitator_stats().settled, settled);

    // A payer without funds: settlement fails and the answer is withheld, with fresh requirements.
    let poor = Signer::random().unwrap();
    env.sim.set_balance(&poor.address(), 0);
    let refused = call(
        &env,
        None,
        "chat",
        chat_args("pay per tool call"),
        Some(json!({"x402/payment": pay_for(&poor, &required)})),
    )
    .await;
    assert_eq!(refused["isError"], true);
    assert_eq!(
        refused["structuredContent"]["error"], "insufficient_funds",
        "{refused}"
    );
    assert!(
        refused["structuredContent"]["accepts"].is_array(),
        "fresh requirements"
    );
    assert!(
        refused["structuredContent"].get("text").is_none(),
        "no answer"
    );
    assert_eq!(env.sim.facilitator_stats().settled, settled);
    // A key and a payment at once are ambiguous, as on REST.
    let key = env.funded_key(W1, 1_000_000).await;
    let both = call(
        &env,
        Some(&key),
        "chat",
        chat_args("x"),
        Some(json!({"x402/payment": pay_for(&s, &required)})),
    )
    .await;
    assert_eq!(
        both["structuredContent"]["error"]["code"],
        "ambiguous_payment"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_tool_carries_function_tools_through_a_round_trip() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 10_000_000).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let first = json!({"role": "user", "content": "Use get_weather for Paris"});
    let r = call(
        &env,
        Some(&key),
        "chat",
        json!({"messages": [first], "tools": tools, "tool_choice": "required", "memory_read": false, "memory_write": false}),
        None,
    )
    .await;
    assert_eq!(r["isError"], false, "{r}");
    let s = &r["structuredContent"];
    assert_eq!(s["finish_reason"], "tool_calls", "{r}");
    let calls = s["tool_calls"].as_array().expect("tool calls returned");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string(), "schema-valid arguments: {args}");
    // The text content lists the calls for clients that read only `content`.
    let listed: Value = serde_json::from_str(r["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(listed, s["tool_calls"]);
    // Second turn: the assistant's calls and the tool's result go back; the model answers.
    let id = calls[0]["id"].as_str().unwrap();
    let r = call(
        &env,
        Some(&key),
        "chat",
        json!({"messages": [first, {"role": "assistant", "content": null, "tool_calls": s["tool_calls"]},
            {"role": "tool", "tool_call_id": id, "content": "{\"temp_c\":21}"}],
            "tools": tools, "memory_read": false, "memory_write": false}),
        None,
    )
    .await;
    assert_eq!(r["isError"], false, "{r}");
    assert_eq!(r["structuredContent"]["finish_reason"], "stop");
    assert!(r["structuredContent"].get("tool_calls").is_none());
    let text = r["structuredContent"]["text"].as_str().unwrap();
    assert!(
        text.contains("get_weather") && text.contains("21"),
        "{text}"
    );
    // A tool message answering no call is the REST route's 400, as a tool error.
    let r = call(
        &env,
        Some(&key),
        "chat",
        json!({"messages": [first, {"role": "tool", "tool_call_id": "call_nope", "content": "x"}], "tools": tools}),
        None,
    )
    .await;
    assert_eq!(r["isError"], true, "{r}");
}
