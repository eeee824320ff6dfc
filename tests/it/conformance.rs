//! Regressions found by fuzzing the gateway against its own `/openapi.json` (schemathesis, in
//! tests/py/test_schemathesis.py): each test pins one gateway bug so it cannot come back.

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{Env, W1};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeclared_methods_get_405_with_the_allow_header() {
    let env = Env::start().await;
    for (method, path, allow) in [
        (Method::PUT, "/v1/models", "GET"),
        (Method::TRACE, "/v1/embeddings", "POST"),
        (Method::PATCH, "/v1/api-keys", "POST, GET"),
        (Method::POST, "/v1/api-keys/abc", "DELETE"),
        (Method::DELETE, "/v1/auth/keys", "POST, GET"),
    ] {
        let res = env.send(method.clone(), path, &[], "").await;
        assert_eq!(
            res.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_eq!(res.code(), "method_not_allowed");
        assert_eq!(res.headers["allow"], allow, "{method} {path}");
    }
    let res = env.send(Method::GET, "/v1/nope", &[], "").await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert!(!res.headers.contains_key("allow"));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_floats_are_integers_and_long_integers_are_json() {
    let env = Env::start().await;
    let secret = env.gw().state.admin_secret.clone();
    // `6251.0` is the integer 6251 (JSON Schema), not a 422.
    let res = env
        .send(
            Method::POST,
            "/admin/grant",
            &[("x-admin-secret", &secret)],
            json!({"wallet": W1, "credits": 6251.0}).to_string(),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{:?}", res.body);
    assert_eq!(res.json()["granted"], 6251);
    let key = env.funded_key(W1, 1_000_000).await;
    // A number beyond 64 bits is valid JSON: ignored where unknown (was a 400 `invalid_json`).
    let body = r#"{"messages": [{"role": "user", "content": "hi", "meta": {"n": -120330217546217521152}}],
                   "max_tokens": 8.0}"#;
    let res = env
        .send(
            Method::POST,
            "/v1/chat/completions",
            &[("x-api-key", &key)],
            body,
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{:?}", res.body);
    // A fractional count is still refused, naming the body.
    let res = env
        .chat(
            &key,
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8.5}),
        )
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_max_tokens_is_refused_even_beside_max_completion_tokens() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 1_000_000).await;
    for (body, param) in [
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 5, "max_tokens": 0}),
            "max_tokens",
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 5, "max_tokens": 70_000}),
            "max_tokens",
        ),
    ] {
        let res = env.chat(&key, body).await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
        let v: Value = res.json();
        assert_eq!(v["error"]["param"], param, "{v}");
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_names_are_limited_in_characters_not_bytes() {
    let env = Env::start().await;
    // 128 three-byte characters: within `maxLength: 128` of the spec.
    let label = "€".repeat(128);
    let res = env
        .send(
            Method::POST,
            "/v1/auth/agent-onboard",
            &[],
            json!({"wallet_address": W1, "credits": 500_000, "key_name": label}).to_string(),
        )
        .await;
    assert_eq!(res.status, StatusCode::PAYMENT_REQUIRED, "valid, so priced");
    let res = env
        .send(
            Method::POST,
            "/v1/auth/agent-onboard",
            &[],
            json!({"wallet_address": W1, "credits": 500_000, "key_name": "€".repeat(129)})
                .to_string(),
        )
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    env.stop().await;
}
