//! Chat completions end to end: shapes, streaming, errors, and byte-split upstream streams.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use vectorway::app;
use vectorway::config::Config;
use vectorway::storage::LedgerKind;

use crate::harness::{Env, W1, eventually, sse_data};

fn hello(extra: Value) -> Value {
    let mut body = json!({"model": "gemini-2.5-flash", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Summarize our last run"}], "max_tokens": 64});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_chat_returns_openai_shape_and_charges_exactly() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 1_000_000).await;
    let res = env.chat(&key, hello(json!({}))).await;
    assert_eq!(
        res.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&res.body)
    );
    assert!(res.headers.contains_key("x-request-id"));
    assert_eq!(res.headers["x-model-used"], "gemini-2.5-flash");
    let v = res.json();
    assert_eq!(v["object"], "chat.completion");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!text.is_empty());
    assert_eq!(v["output_text"], text);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let u = &v["usage"];
    let (p, c) = (
        u["prompt_tokens"].as_u64().unwrap(),
        u["completion_tokens"].as_u64().unwrap(),
    );
    assert!(p > 0 && c > 0);
    assert_eq!(u["total_tokens"].as_u64().unwrap(), p + c);
    assert_eq!(u["model"], "gemini-2.5-flash");
    assert!(u["usd_cost"].is_null());
    // Price: ceil((p·360000 + c·3000000) / 1e6) at the default 1.2 markup.
    let expected = (p * 360_000 + c * 3_000_000).div_ceil(1_000_000);
    assert_eq!(u["credit_cost"].as_u64().unwrap(), expected);
    let b = env.balance(W1);
    assert_eq!((b.balance, b.held), (1_000_000 - expected, 0));
    // The system prompt became Gemini's systemInstruction.
    let sent = env
        .sim
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path.ends_with(":generateContent"))
        .unwrap();
    assert_eq!(
        sent.body["systemInstruction"]["parts"][0]["text"],
        "You are terse."
    );
    assert_eq!(sent.body["generationConfig"]["maxOutputTokens"], 64);
    env.gw().state.billing.journal().sync().await;
    let debits: i64 = env
        .gw()
        .state
        .store
        .ledger_of(&W1.parse().unwrap())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == LedgerKind::Debit)
        .map(|e| e.credits)
        .sum();
    assert_eq!(debits, -(expected as i64), "the ledger records the debit");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_relays_chunks_usage_and_done() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 1_000_000).await;
    let res = env
        .chat(
            &key,
            hello(json!({"stream": true, "stream_options": {"include_usage": true}})),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(
        res.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = sse_data(&res.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(
        chunks
            .iter()
            .all(|c| c["id"] == id && c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        text.split(' ').count(),
        24,
        "the simulator's 24 words arrive whole"
    );
    let usage_chunks: Vec<&Value> = chunks.iter().filter(|c| !c["usage"].is_null()).collect();
    assert_eq!(usage_chunks.len(), 1);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "stop"
    );
    let cost = last["usage"]["credit_cost"].as_u64().unwrap();
    assert!(cost > 0);
    assert!(
        eventually(Duration::from_secs(1), || env.balance(W1).balance
            == 1_000_000 - cost)
        .await
    );
    // Without include_usage no chunk carries usage.
    let res = env.chat(&key, hello(json!({"stream": true}))).await;
    let events = sse_data(&res.body);
    assert!(events.iter().filter(|e| *e != "[DONE]").all(|e| {
        serde_json::from_str::<Value>(e)
            .unwrap()
            .get("usage")
            .is_none()
    }));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_list_and_aliases() {
    let env = Env::start().await;
    let res = env.send(Method::GET, "/v1/models", &[], "").await;
    let v = res.json();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for id in [
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
        "gemini-2.5-pro",
        "gemini-3.1-flash-lite",
        "gemini-3.5-flash",
    ] {
        assert!(ids.contains(&id), "{id}");
    }
    let flash = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "gemini-2.5-flash")
        .unwrap();
    assert_eq!(flash["pricing"]["input_credits_per_1m"], 360_000);
    let key = env.funded_key(W1, 100_000).await;
    let res = env
        .chat(&key, hello(json!({"model": "gemini/gemini-2.5-flash"})))
        .await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.json()["model"], "gemini-2.5-flash");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_fail_before_any_upstream_call() {
    // Media up to 256 KiB: the chat body limit is then 1 MiB + 4/3 of that.
    let env = Env::with_knobs(crate::harness::fast_knobs(), |c| {
        c.media.max_item_bytes = 256 << 10;
        c.media.max_total_bytes = 256 << 10;
    })
    .await;
    let limit = env.gw().state.config.chat_body_limit();
    let key = env.funded_key(W1, 100_000).await;
    let h = [("x-api-key", key.as_str())];
    let cases: Vec<(Vec<u8>, StatusCode, &str)> = vec![
        (
            hello(json!({"model": "gpt-9"})).to_string().into_bytes(),
            StatusCode::NOT_FOUND,
            "model_not_found",
        ),
        (
            b"{\"messages\": [".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            b"{\"messages\": 5}".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
        ),
        (
            hello(json!({"max_tokens": 100_000}))
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
        ),
        (
            vec![b' '; limit + 1],
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
    ];
    for (body, status, code) in cases {
        let res = env
            .send(Method::POST, "/v1/chat/completions", &h, body)
            .await;
        assert_eq!((res.status, res.code().as_str()), (status, code));
        let e = &res.json()["error"];
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()) && e["type"].is_string());
    }
    let res = env
        .send(
            Method::POST,
            "/v1/chat/completions",
            &[],
            hello(json!({})).to_string(),
        )
        .await;
    // No payer at all: the x402 price (v1 body, v2 header), not a 401.
    assert_eq!(res.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(res.json()["x402Version"], 1);
    assert!(res.headers.contains_key("payment-required"));
    let bad = format!("vw_aaaaaaaaaaaa_{}", "b".repeat(43));
    let res = env.chat(&bad, hello(json!({}))).await;
    assert_eq!(
        (res.status, res.code().as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_api_key")
    );
    let res = env.send(Method::GET, "/v1/nowhere", &[], "").await;
    assert_eq!(
        (res.status, res.code().as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let res = env.send(Method::GET, "/v1/chat/completions", &[], "").await;
    assert_eq!(res.status, StatusCode::METHOD_NOT_ALLOWED);
    let res = env
        .send(
            Method::POST,
            "/admin/grant",
            &[("x-admin-secret", "wrong")],
            "{}",
        )
        .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        env.sim.generation_count(),
        0,
        "no request reached the upstream"
    );
    assert_eq!(env.balance(W1).balance, 100_000);
    env.stop().await;
}

/// A recorded two-event Gemini stream (reference §1.7), CRLF-framed.
const RECORDED: &[u8] = b"data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Paris\"}],\"role\": \"model\"}}],\"usageMetadata\": {\"promptTokenCount\": 11,\"totalTokenCount\": 11,\"promptTokensDetails\": [{\"modality\": \"TEXT\",\"tokenCount\": 11}]},\"modelVersion\": \"gemini-2.0-flash\",\"responseId\": \"wzCjaPa4As7shMIP2Mei0AI\"}\r\n\r\ndata: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"\\n\"}],\"role\": \"model\"},\"finishReason\": \"STOP\"}],\"usageMetadata\": {\"promptTokenCount\": 10,\"candidatesTokenCount\": 2,\"totalTokenCount\": 12,\"promptTokensDetails\": [{\"modality\": \"TEXT\",\"tokenCount\": 10}],\"candidatesTokensDetails\": [{\"modality\": \"TEXT\",\"tokenCount\": 2}]},\"modelVersion\": \"gemini-2.0-flash\",\"responseId\": \"wzCjaPa4As7shMIP2Mei0AI\"}\r\n\r\n";

/// A raw upstream that writes `RECORDED` in two TCP writes split at a chosen offset.
async fn split_upstream(split: Arc<AtomicUsize>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let at = split.load(Ordering::SeqCst).min(RECORDED.len());
            tokio::spawn(async move {
                if crate::harness::read_request(&mut sock).await.is_none() {
                    return;
                }
                let _ = sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n").await;
                let _ = sock.write_all(&RECORDED[..at]).await;
                let _ = sock.flush().await;
                tokio::time::sleep(Duration::from_millis(2)).await;
                let _ = sock.write_all(&RECORDED[at..]).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_split_at_every_byte_offset_gives_the_same_answer() {
    let split = Arc::new(AtomicUsize::new(0));
    let base = split_upstream(split.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_tests(dir.path(), &base);
    config.limits.runtime_per_min = 1_000_000; // ~860 calls from one wallet
    let gw = app::start(config).await.unwrap();
    let w = W1.parse().unwrap();
    gw.state
        .billing
        .credit(w, 100_000_000, LedgerKind::Grant, None, None)
        .await
        .unwrap();
    let key = gw.state.keys.create(w, "t").await.unwrap().0;
    let client = crate::harness::client();
    let mut reference: Option<(String, u64)> = None;
    for at in 0..=RECORDED.len() {
        split.store(at, Ordering::SeqCst);
        let req = http::Request::post(format!("{}/v1/chat/completions", gw.base_url()))
            .header("x-api-key", &key)
            .body(http_body_util::Full::new(bytes::Bytes::from(
                json!({"messages": [{"role": "user", "content": "capital of France?"}], "stream": true, "stream_options": {"include_usage": true}}).to_string(),
            )))
            .unwrap();
        let res = client.request(req).await.unwrap();
        let body = http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes();
        let events = sse_data(&body);
        assert_eq!(
            events.last().map(String::as_str),
            Some("[DONE]"),
            "split at {at}: {events:?}"
        );
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        let usage = chunks.last().unwrap()["usage"].clone();
        assert_eq!(
            (
                usage["prompt_tokens"].as_u64(),
                usage["completion_tokens"].as_u64()
            ),
            (Some(10), Some(2)),
            "last usageMetadata wins"
        );
        let got = (text, usage["credit_cost"].as_u64().unwrap());
        match &reference {
            None => reference = Some(got),
            Some(r) => assert_eq!(&got, r, "split at {at}"),
        }
    }
    assert_eq!(reference.unwrap().0, "Paris\n");
    gw.shutdown().await;
}
