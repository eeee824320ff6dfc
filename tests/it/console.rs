//! The web console's server side: the spend summary (rollup = a walk of the usage history, and
//! wallet-scoped), the operator's stats, top wallets and redacted config, and the embedded app.

use std::time::Duration;

use http::{Method, StatusCode};
use k256::ecdsa::SigningKey;
use serde_json::{Value, json};
use vectorway::crypto;

use crate::harness::{Env, Resp, eventually, fast_knobs};

const ADMIN: &str = "test-admin-secret-0123456789";
const A: &str = "0x00000000000000000000000000000000000000a1";
const B: &str = "0x00000000000000000000000000000000000000b2";

async fn get(env: &Env, path: &str, headers: &[(&str, &str)]) -> Resp {
    env.send(Method::GET, path, headers, "").await
}

fn hi(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 16})
}

/// A SIWE session for a fresh wallet: (checksummed address, access token).
pub(crate) async fn sign_in(env: &Env, seed: u8) -> (String, String) {
    let key = SigningKey::from_slice(&[seed; 32]).unwrap();
    let address = crypto::to_checksum(&crypto::address_of(key.verifying_key()));
    let c = env
        .send(
            Method::POST,
            "/v1/auth/siwe/challenge",
            &[],
            json!({"wallet_address": address, "chain_id": 8453}).to_string(),
        )
        .await
        .json();
    let msg = c["message"].as_str().unwrap();
    let (sig, recid) = key
        .sign_prehash_recoverable(&crypto::eip191_hash(msg.as_bytes()))
        .unwrap();
    let mut raw = sig.to_bytes().to_vec();
    raw.push(27 + recid.to_byte());
    let v = env
        .send(
            Method::POST,
            "/v1/auth/siwe/verify",
            &[],
            json!({"wallet_address": address, "message": msg, "signature": format!("0x{}", hex::encode(raw))})
                .to_string(),
        )
        .await;
    assert_eq!(v.status, StatusCode::OK);
    let token = v.json()["tokens"]["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    (address, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_equals_the_usage_history_and_is_the_callers_own() {
    let env = Env::start().await;
    let ka = env.funded_key(A, 50_000_000).await;
    let ka2 = env.funded_key(A, 0).await;
    let kb = env.funded_key(B, 50_000_000).await;
    for (key, model) in [
        (&ka, "gemini-2.5-flash"),
        (&ka, "gemini-2.5-flash"),
        (&ka2, "gemini-2.5-pro"),
        (&kb, "gemini-2.5-flash"),
    ] {
        assert_eq!(env.chat(key, hi(model)).await.status, StatusCode::OK);
    }
    // The walk the rollup replaces: every metered usage event of A.
    let events: Vec<_> = env
        .usage(A)
        .await
        .into_iter()
        .filter(|e| e.model.is_some())
        .collect();
    assert_eq!(events.len(), 3);
    let credits: u64 = events.iter().map(|e| e.credits).sum();
    assert!(credits > 0);
    let prompt: u64 = events.iter().map(|e| e.prompt_tokens).sum();

    for bucket in ["hour", "day"] {
        let r = get(
            &env,
            &format!("/v1/usage/summary?bucket={bucket}"),
            &[("x-api-key", &ka)],
        )
        .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        let s = r.json();
        assert_eq!(
            s["wallet_address"],
            crypto::to_checksum(&A.parse().unwrap())
        );
        assert_eq!(s["total"]["calls"], 3, "{s}");
        assert_eq!(s["total"]["credits"], credits);
        assert_eq!(s["total"]["prompt_tokens"], prompt);
        let starts = s["starts"].as_array().unwrap();
        assert_eq!(starts.len(), if bucket == "hour" { 24 } else { 30 });
        // The current bucket is the last one, and it holds every call.
        assert_eq!(s["buckets"].as_array().unwrap().last().unwrap()["calls"], 3);
        let by_model: Vec<(String, u64)> = s["by_model"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["model"].as_str().unwrap().to_string(),
                    m["total"]["calls"].as_u64().unwrap(),
                )
            })
            .collect();
        assert!(
            by_model.contains(&("gemini-2.5-flash".into(), 2)),
            "{by_model:?}"
        );
        assert!(
            by_model.contains(&("gemini-2.5-pro".into(), 1)),
            "{by_model:?}"
        );
        let key_calls = |key: &str| {
            let id = key.split('_').nth(1).unwrap();
            s["by_key"]
                .as_array()
                .unwrap()
                .iter()
                .find(|k| k["key_id"] == id)
                .map(|k| (k["total"]["calls"].as_u64().unwrap(), k["key_name"].clone()))
        };
        assert_eq!(key_calls(&ka), Some((2, json!("test"))));
        assert_eq!(key_calls(&ka2).map(|k| k.0), Some(1));
        assert_eq!(key_calls(&kb), None, "B's key is not in A's summary");
    }

    // B sees only its own call; naming A is 403; no credentials is 401; bad input is 422.
    let b = get(&env, "/v1/usage/summary", &[("x-api-key", &kb)])
        .await
        .json();
    assert_eq!(b["total"]["calls"], 1);
    let r = get(
        &env,
        &format!("/v1/usage/summary?wallet={A}"),
        &[("x-api-key", &kb)],
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "wallet_mismatch".into())
    );
    let r = get(&env, "/v1/usage/summary", &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    for bad in ["bucket=week", "buckets=0", "buckets=801", "to=-5", "to=x"] {
        let r = get(
            &env,
            &format!("/v1/usage/summary?{bad}"),
            &[("x-api-key", &ka)],
        )
        .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "validation_error".into()),
            "{bad}"
        );
    }
    // A range that ends before the calls has none of them.
    let r = get(
        &env,
        "/v1/usage/summary?bucket=day&buckets=3&to=86400",
        &[("x-api-key", &ka)],
    )
    .await;
    assert_eq!(r.json()["total"]["calls"], 0);
    assert_eq!(
        r.json()["starts"],
        json!([0, 86400]),
        "clipped at the epoch"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_reads_its_own_summary_and_operators_see_the_top_spenders() {
    let env = Env::start().await;
    let (addr, jwt) = sign_in(&env, 7).await;
    let bearer = format!("Bearer {jwt}");
    let ka = env.funded_key(&addr, 50_000_000).await;
    let kb = env.funded_key(B, 50_000_000).await;
    for _ in 0..3 {
        assert_eq!(
            env.chat(&ka, hi("gemini-2.5-pro")).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        env.chat(&kb, hi("gemini-2.5-flash")).await.status,
        StatusCode::OK
    );
    env.gw().state.billing.journal().sync().await;
    let s = get(&env, "/v1/usage/summary", &[("authorization", &bearer)]).await;
    assert_eq!(s.status, StatusCode::OK);
    assert_eq!(s.json()["total"]["calls"], 3);
    let r = get(
        &env,
        &format!("/v1/usage/summary?wallet={B}"),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let spent = async |w: &str| {
        env.gw()
            .state
            .store
            .usage_of(&w.parse().unwrap())
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.credits)
            .sum::<u64>()
    };
    let top = get(
        &env,
        "/admin/top-wallets?limit=2",
        &[("x-admin-secret", ADMIN)],
    )
    .await;
    assert_eq!(top.status, StatusCode::OK);
    let top = top.json();
    let rows = top["wallets"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["wallet"], addr, "the bigger spender first: {top}");
    assert_eq!(rows[0]["spent"], spent(&addr).await);
    assert_eq!(rows[0]["calls"], 3);
    assert_eq!(rows[0]["granted"], 50_000_000);
    assert_eq!(rows[0]["credits"], 50_000_000 - spent(&addr).await);
    assert_eq!(rows[1]["spent"], spent(B).await);
    let one = get(
        &env,
        "/admin/top-wallets?limit=1",
        &[("x-admin-secret", ADMIN)],
    )
    .await
    .json();
    assert_eq!(one["wallets"].as_array().unwrap().len(), 1);

    // Not an operator: a wallet's key, its session, a wrong secret or none.
    for path in ["/admin/top-wallets", "/admin/stats", "/admin/config"] {
        for h in [
            vec![("x-api-key", ka.as_str())],
            vec![("authorization", bearer.as_str())],
            vec![("x-admin-secret", "wrong")],
            vec![],
        ] {
            let r = get(&env, path, &h).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path} {h:?}");
            assert!(!String::from_utf8_lossy(&r.body).contains(&addr));
        }
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_stats_count_requests_and_streams_in_flight() {
    let slow = vectorway::config::SimulatorKnobs {
        ttft: Duration::from_millis(5),
        tokens_per_sec: 40,
        reply_tokens: 400,
        ..fast_knobs()
    };
    let env = Env::with_knobs(slow, |_| {}).await;
    let key = env.funded_key(A, 50_000_000).await;
    let stats = || async {
        get(&env, "/admin/stats", &[("x-admin-secret", ADMIN)])
            .await
            .json()
    };
    let before = stats().await;
    assert!(before["uptime_seconds"].is_u64());
    for _ in 0..3 {
        get(&env, "/v1/me", &[("x-api-key", &key)]).await;
    }
    let after = stats().await;
    // Other tests share the process's recorder, so counts only grow by at least ours; the
    // panel's own polls are not counted.
    let total = |v: &Value| v["requests"]["total"].as_u64().unwrap();
    assert!(total(&after) >= total(&before) + 3, "{before} → {after}");
    assert!(after["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    assert!(
        after["latency_ms"]["p99"].as_f64().unwrap()
            >= after["latency_ms"]["p50"].as_f64().unwrap()
    );

    // A stream that is still running is in flight.
    let mut body = hi("gemini-2.5-flash");
    body["stream"] = json!(true);
    body["max_tokens"] = json!(400);
    let res = env
        .open(
            Method::POST,
            "/v1/chat/completions",
            &[("x-api-key", &key), ("content-type", "application/json")],
            body.to_string(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut seen = false;
    for _ in 0..50 {
        if stats().await["streams_in_flight"].as_u64().unwrap() >= 1 {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen, "an open stream is counted");
    drop(res);
    assert!(
        eventually(Duration::from_secs(5), || {
            env.gw().state.billing.open_holds() == 0
        })
        .await
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_view_redacts_every_secret() {
    let secrets = [
        "gem-UPSTREAM-KEY-93jd8",
        "jwt-SIGNING-SECRET-0f9a8b7c6d5e4f3a2b1c",
        "rpcTOKEN77",
    ];
    let env = Env::with_knobs(fast_knobs(), |c| {
        c.upstream.api_key = Some(secrets[0].into());
        c.auth.jwt_secret = Some(secrets[1].into());
        for n in &mut c.x402.networks {
            n.rpc_url = Some(format!("https://rpc.example/v2/{}", secrets[2]).into());
        }
    })
    .await;
    let r = get(&env, "/admin/config", &[("x-admin-secret", ADMIN)]).await;
    assert_eq!(r.status, StatusCode::OK);
    let text = String::from_utf8_lossy(&r.body).to_string();
    for s in secrets.iter().chain([&ADMIN]) {
        assert!(!text.contains(s), "{s} leaked: {text}");
    }
    let v = r.json();
    assert_eq!(v["upstream"]["api_key"], "[redacted]");
    assert_eq!(v["auth"]["jwt_secret"], "[redacted]");
    assert_eq!(v["server"]["admin_secret"], "[redacted]");
    assert_eq!(v["x402"]["networks"][0]["rpc_url"], "[redacted]");
    assert_eq!(
        v["limits"]["control_per_min"],
        env.gw().state.config.limits.control_per_min
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_embedded_with_a_strict_csp() {
    let env = Env::start().await;
    let page = get(&env, "/console", &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    for want in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(want), "{csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("http"),
        "{csp}"
    );
    let html = String::from_utf8_lossy(&page.body).to_string();
    // Every script and style is a versioned file of this origin: no inline code, no style
    // attributes, no CDN.
    assert!(!html.contains("style=") && !html.contains("<style") && !html.contains("//cdn"));
    let links: Vec<&str> = html
        .split(['"'])
        .filter(|s| s.starts_with("/assets/"))
        .collect();
    assert_eq!(links.len(), 4, "{links:?}");
    assert_eq!(html.matches("<script").count(), 2);
    assert!(!html.contains("{{"), "every template link is filled in");
    for link in links {
        assert!(link.contains("?v="), "{link}");
        let r = get(&env, link, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{link}");
        let ty = r.headers["content-type"].to_str().unwrap();
        assert!(
            ty.starts_with("text/javascript") || ty.starts_with("text/css"),
            "{link}: {ty}"
        );
        assert!(r.headers.contains_key("content-security-policy"));
    }
    // The modules the entry imports are served too.
    for name in ["console-lib.js", "console-views.js", "console-ops.js"] {
        let r = get(&env, &format!("/assets/{name}"), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{name}");
    }
    let tag = page.headers["etag"].to_str().unwrap().to_string();
    let again = get(&env, "/console", &[("if-none-match", &tag)]).await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    let r = get(&env, "/console/app.js", &[]).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    env.stop().await;
}
