//! Body limits for media: the chat routes take a photo-sized `data:` URL (their limit follows
//! `media.max_total_bytes`), refuse a body past it before anything is priced, and every other
//! route keeps `server.body_limit_bytes`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{Env, Resp, W1};

/// A PNG whose header says `w`×`h`, padded to `len` bytes (a photo's size; only the header is read).
fn big_png(w: u32, h: u32, len: usize) -> String {
    let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    b.extend_from_slice(&w.to_be_bytes());
    b.extend_from_slice(&h.to_be_bytes());
    b.extend_from_slice(&[8, 6, 0, 0, 0, 0x1f, 0x15, 0xc4, 0x89]);
    b.resize(len, 0x5a);
    format!("data:image/png;base64,{}", STANDARD.encode(b))
}

fn chat_body(url: &str) -> Value {
    json!({"model": "gemini-2.5-flash", "memory_read": false, "memory_write": false,
           "max_tokens": 16, "messages": [{"role": "user", "content": [
               {"type": "text", "text": "What is in this picture?"},
               {"type": "image_url", "image_url": {"url": url}}]}]})
}

fn responses_body(url: &str) -> Value {
    json!({"model": "gemini-2.5-flash", "memory_read": false, "memory_write": false,
           "max_output_tokens": 16, "input": [{"role": "user", "content": [
               {"type": "input_text", "text": "What is in this picture?"},
               {"type": "input_image", "image_url": url}]}]})
}

async fn post(env: &Env, path: &str, key: &str, body: impl Into<bytes::Bytes>) -> Resp {
    env.send(
        Method::POST,
        path,
        &[("x-api-key", key), ("content-type", "application/json")],
        body,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_sized_data_url_is_accepted_on_chat_and_responses_and_billed_by_its_tiles() {
    let env = Env::start().await;
    assert_eq!(env.gw().state.config.body_limit, 1 << 20);
    let key = env.funded_key(W1, 10_000_000).await;
    let photo = big_png(2000, 1600, 3_000_000);
    let small = big_png(300, 200, 64);
    assert!(photo.len() > 4_000_000, "the body is far past 1 MiB");
    let chat = post(
        &env,
        "/v1/chat/completions",
        &key,
        chat_body(&photo).to_string(),
    )
    .await;
    assert_eq!(
        chat.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&chat.body)
    );
    let base = post(
        &env,
        "/v1/chat/completions",
        &key,
        chat_body(&small).to_string(),
    )
    .await;
    let tokens = |r: &Resp, field: &str| r.json()["usage"][field].as_u64().unwrap();
    // 2000×1600 is 3×3 tiles of 258 tokens; 300×200 is one image of 258.
    assert_eq!(
        tokens(&chat, "prompt_tokens") - tokens(&base, "prompt_tokens"),
        8 * 258
    );
    let res = post(
        &env,
        "/v1/responses",
        &key,
        responses_body(&photo).to_string(),
    )
    .await;
    assert_eq!(
        res.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&res.body)
    );
    let base = post(
        &env,
        "/v1/responses",
        &key,
        responses_body(&small).to_string(),
    )
    .await;
    assert_eq!(
        tokens(&res, "input_tokens") - tokens(&base, "input_tokens"),
        8 * 258
    );
    // The MCP chat tool re-enters chat with the same arguments, so it takes the photo too.
    let call = |url: &str| {
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
               "params": {"name": "chat", "arguments": chat_body(url)}})
    };
    let mcp = |body: Value| {
        let key = key.clone();
        let env = &env;
        async move {
            let res = env
                .send(
                    Method::POST,
                    "/mcp",
                    &[
                        ("x-api-key", key.as_str()),
                        ("content-type", "application/json"),
                        ("accept", "application/json, text/event-stream"),
                    ],
                    body.to_string(),
                )
                .await;
            assert_eq!(
                res.status,
                StatusCode::OK,
                "{}",
                String::from_utf8_lossy(&res.body)
            );
            let v = res.json();
            assert!(v.get("error").is_none(), "{v}");
            v["result"]["structuredContent"]["usage"]["prompt_tokens"]
                .as_u64()
                .unwrap()
        }
    };
    assert_eq!(mcp(call(&photo)).await - mcp(call(&small)).await, 8 * 258);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_past_the_media_limit_is_413_and_costs_nothing_and_other_routes_keep_1_mib() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 10_000_000).await;
    let limit = env.gw().state.config.chat_body_limit();
    assert!((27 << 20..29 << 20).contains(&limit), "{limit}");
    // Other routes keep 1 MiB.
    let two_mib = json!({"model": "text-embedding-004", "input": "a".repeat(2 << 20)}).to_string();
    let res = post(&env, "/v1/embeddings", &key, two_mib).await;
    assert_eq!(
        (res.status, res.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large".into())
    );
    let before = env.balance(W1);
    let calls = env.sim.generation_count();
    let huge = chat_body(&big_png(2000, 1600, 30_000_000)).to_string();
    assert!(huge.len() > 40_000_000);
    for path in ["/v1/chat/completions", "/v1/responses"] {
        let res = post(&env, path, &key, huge.clone()).await;
        assert_eq!(
            (res.status, res.code()),
            (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large".into()),
            "{path}"
        );
    }
    // One byte past the limit is refused too.
    let over = "a".repeat(limit + 1);
    let res = post(&env, "/v1/chat/completions", &key, over).await;
    assert_eq!(res.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(env.sim.generation_count(), calls, "no model call");
    let after = env.balance(W1);
    assert_eq!((after.balance, after.held), (before.balance, 0));
    env.stop().await;
}
