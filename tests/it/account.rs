//! The account plane: sign-in with real signatures, wallet isolation on every route, rate limits,
//! and idempotency.

use http::{Method, StatusCode};
use k256::ecdsa::SigningKey;
use serde_json::{Value, json};
use vectorway::crypto;

use crate::harness::{Env, eventually, fast_knobs};

pub(crate) struct Signer {
    key: SigningKey,
    pub(crate) address: String,
}

impl Signer {
    pub(crate) fn new(seed: u8) -> Self {
        let key = SigningKey::from_slice(&[seed; 32]).unwrap();
        let address = crypto::to_checksum(&crypto::address_of(key.verifying_key()));
        Self { key, address }
    }

    pub(crate) fn sign(&self, msg: &str) -> String {
        let (sig, recid) = self
            .key
            .sign_prehash_recoverable(&crypto::eip191_hash(msg.as_bytes()))
            .unwrap();
        let mut out = sig.to_bytes().to_vec();
        out.push(27 + recid.to_byte());
        format!("0x{}", hex::encode(out))
    }
}

async fn post(
    env: &Env,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> crate::harness::Resp {
    env.send(Method::POST, path, headers, body.to_string())
        .await
}

/// Challenge → sign → verify; returns (access, refresh).
pub(crate) async fn sign_in(env: &Env, s: &Signer) -> (String, String) {
    let c = post(
        env,
        "/v1/auth/siwe/challenge",
        &[],
        json!({"wallet_address": s.address, "chain_id": 8453}),
    )
    .await
    .json();
    let msg = c["message"].as_str().unwrap();
    let v = post(
        env,
        "/v1/auth/siwe/verify",
        &[],
        json!({"wallet_address": s.address, "message": msg, "signature": s.sign(msg)}),
    )
    .await;
    assert_eq!(
        v.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&v.body)
    );
    let t = &v.json()["tokens"];
    (
        t["access_token"].as_str().unwrap().into(),
        t["refresh_token"].as_str().unwrap().into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_refresh_and_reuse_detection() {
    let env = Env::start().await;
    let alice = Signer::new(1);
    let c = post(
        &env,
        "/v1/auth/siwe/challenge",
        &[],
        json!({"wallet_address": alice.address}),
    )
    .await
    .json();
    assert_eq!(c["expires_in_seconds"], 300);
    assert!(c["nonce"].as_str().unwrap().len() >= 22);
    let msg = c["message"].as_str().unwrap();
    let first = post(
        &env,
        "/v1/auth/siwe/verify",
        &[],
        json!({"wallet_address": alice.address, "message": msg, "signature": alice.sign(msg)}),
    )
    .await
    .json();
    assert_eq!(first["created"], true);
    assert_eq!(first["wallet_address"], alice.address.as_str());
    let access = first["tokens"]["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let refresh = first["tokens"]["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let bearer = format!("Bearer {access}");
    let me = env
        .send(Method::GET, "/v1/me", &[("authorization", &bearer)], "")
        .await;
    assert_eq!(me.json()["wallet_address"], alice.address.as_str());
    let (_, again) = sign_in(&env, &alice).await;
    assert!(!again.is_empty());

    let next = post(
        &env,
        "/v1/auth/refresh",
        &[],
        json!({"refresh_token": refresh}),
    )
    .await
    .json();
    let next_access = format!("Bearer {}", next["access_token"].as_str().unwrap());
    assert_eq!(
        env.send(
            Method::GET,
            "/v1/me",
            &[("authorization", &next_access)],
            ""
        )
        .await
        .status,
        StatusCode::OK
    );
    let reused = post(
        &env,
        "/v1/auth/refresh",
        &[],
        json!({"refresh_token": refresh}),
    )
    .await;
    assert_eq!(
        (reused.status, reused.code().as_str()),
        (StatusCode::UNAUTHORIZED, "refresh_token_reused")
    );
    let dead = env
        .send(
            Method::GET,
            "/v1/me",
            &[("authorization", &next_access)],
            "",
        )
        .await;
    assert_eq!(
        (dead.status, dead.code().as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_token"),
        "the family is revoked"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_wallet_can_never_touch_another() {
    let env = Env::start().await;
    let (alice, bob) = (Signer::new(1), Signer::new(2));
    let (a_jwt, _) = sign_in(&env, &alice).await;
    let (b_jwt, _) = sign_in(&env, &bob).await;
    let a_auth = format!("Bearer {a_jwt}");
    let b_auth = format!("Bearer {b_jwt}");
    let a_key = post(
        &env,
        "/v1/api-keys",
        &[("authorization", &a_auth)],
        json!({"wallet_address": alice.address, "key_name": "a"}),
    )
    .await;
    assert_eq!(a_key.status, StatusCode::CREATED);
    let a_key = a_key.json();
    let a_key_id = a_key["metadata"]["key_id"].as_str().unwrap().to_string();
    let a_raw = a_key["api_key"].as_str().unwrap().to_string();
    let b_raw = post(
        &env,
        "/v1/api-keys",
        &[("authorization", &b_auth)],
        json!({"wallet_address": bob.address, "key_name": "b"}),
    )
    .await
    .json()["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    env.gw()
        .state
        .billing
        .credit(
            alice.address.parse().unwrap(),
            1_000_000,
            vectorway::storage::LedgerKind::Grant,
            Some("alice-grant".into()),
            None,
        )
        .await
        .unwrap();
    let chat = env
        .chat(
            &a_raw,
            json!({"messages": [{"role": "user", "content": "alice secret"}]}),
        )
        .await;
    let a_request = chat.headers["x-request-id"].to_str().unwrap().to_string();
    env.gw().state.billing.journal().sync().await;

    for bob_cred in [
        ("authorization", b_auth.as_str()),
        ("x-api-key", b_raw.as_str()),
    ] {
        // Reads are always the caller's own wallet.
        for path in [
            "/v1/me",
            "/v1/credits/me",
            "/v1/credits/ledger",
            "/v1/usage",
            "/v1/usage?filter=errors",
        ] {
            let res = env.send(Method::GET, path, &[bob_cred], "").await;
            assert_eq!(res.status, StatusCode::OK, "{path}");
            let text = String::from_utf8_lossy(&res.body).to_string();
            assert!(
                !text.contains(&a_request) && !text.contains("alice-grant"),
                "{path} leaked alice's data"
            );
            assert_ne!(
                res.json()["wallet_address"],
                alice.address.as_str(),
                "{path}"
            );
        }
        let res = env
            .send(
                Method::GET,
                &format!("/v1/usage/{}", alice.address),
                &[bob_cred],
                "",
            )
            .await;
        assert_eq!(
            (res.status, res.code().as_str()),
            (StatusCode::FORBIDDEN, "wallet_mismatch")
        );
    }
    // Keys: bob cannot list, create for, or revoke alice's.
    let listed = env
        .send(
            Method::GET,
            "/v1/api-keys",
            &[("authorization", &b_auth)],
            "",
        )
        .await
        .json();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["key_id"] != a_key_id.as_str())
    );
    let res = post(
        &env,
        "/v1/api-keys",
        &[("authorization", &b_auth)],
        json!({"wallet_address": alice.address, "key_name": "x"}),
    )
    .await;
    assert_eq!(
        (res.status, res.code().as_str()),
        (StatusCode::FORBIDDEN, "wallet_mismatch")
    );
    let res = env
        .send(
            Method::DELETE,
            &format!("/v1/api-keys/{a_key_id}"),
            &[("authorization", &b_auth)],
            "",
        )
        .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    // An API key is not a session: key management needs the JWT.
    let res = env
        .send(Method::GET, "/v1/api-keys", &[("x-api-key", &b_raw)], "")
        .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    // Alice's key still works; after she revokes it, it is refused at once.
    assert_eq!(
        env.send(Method::GET, "/v1/credits/me", &[("x-api-key", &a_raw)], "")
            .await
            .status,
        StatusCode::OK
    );
    let res = env
        .send(
            Method::DELETE,
            &format!("/v1/api-keys/{a_key_id}"),
            &[("authorization", &a_auth)],
            "",
        )
        .await;
    assert_eq!(res.json(), json!({"status": "revoked", "key_id": a_key_id}));
    let res = env
        .send(Method::GET, "/v1/credits/me", &[("x-api-key", &a_raw)], "")
        .await;
    assert_eq!(
        (res.status, res.code().as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_api_key")
    );
    // Alice's own history shows her call.
    let mine = env
        .send(
            Method::GET,
            "/v1/usage?filter=/v1/chat/completions",
            &[("authorization", &a_auth)],
            "",
        )
        .await
        .json();
    assert_eq!(mine["events"][0]["request_id"], a_request.as_str());
    assert!(mine["events"][0]["credits"].as_u64().unwrap() > 0);
    let ledger = env
        .send(
            Method::GET,
            "/v1/credits/ledger?kind=grant",
            &[("authorization", &a_auth)],
            "",
        )
        .await
        .json();
    assert_eq!(ledger["total"], 1);
    assert_eq!(ledger["events"][0]["credits"], 1_000_000);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_trip_at_the_configured_rate() {
    let env = Env::with_knobs(fast_knobs(), |c| {
        c.limits.control_per_min = 3;
        c.limits.runtime_per_min = 2;
    })
    .await;
    let key = env.funded_key(crate::harness::W1, 1_000_000).await;
    for i in 0..3 {
        let res = env
            .send(Method::GET, "/v1/credits/me", &[("x-api-key", &key)], "")
            .await;
        assert_eq!(res.status, StatusCode::OK);
        assert_eq!(res.headers["x-ratelimit-limit"], "3");
        assert_eq!(
            res.headers["x-ratelimit-remaining"],
            (2 - i).to_string().as_str()
        );
    }
    let res = env
        .send(Method::GET, "/v1/credits/me", &[("x-api-key", &key)], "")
        .await;
    assert_eq!(
        (res.status, res.code().as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert_eq!(
        res.headers["retry-after"], "20",
        "one request per 20 s at 3/min"
    );
    // The runtime bucket is separate.
    for _ in 0..2 {
        assert_eq!(
            env.chat(
                &key,
                json!({"messages": [{"role": "user", "content": "x"}]})
            )
            .await
            .status,
            StatusCode::OK
        );
    }
    let res = env
        .chat(
            &key,
            json!({"messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        env.sim.generation_count(),
        2,
        "a limited request never reaches the upstream"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_replay_or_conflict() {
    let env = Env::start().await;
    let alice = Signer::new(3);
    let (jwt, _) = sign_in(&env, &alice).await;
    let auth = format!("Bearer {jwt}");
    let h = [
        ("authorization", auth.as_str()),
        ("idempotency-key", "create-1"),
    ];
    let body = json!({"wallet_address": alice.address, "key_name": "agent"});
    let first = post(&env, "/v1/api-keys", &h, body.clone()).await;
    let second = post(&env, "/v1/api-keys", &h, body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(second.status, first.status);
    let (a, b) = (first.json(), second.json());
    assert_eq!(
        a["metadata"], b["metadata"],
        "the same answer, not a second key"
    );
    // The raw key was shown once: the replay says it is redacted.
    assert!(a["api_key"].as_str().unwrap().starts_with("vw_"));
    assert_eq!(b["api_key"], Value::Null);
    assert_eq!(b["redacted"], json!(["api_key"]));
    assert_eq!(second.headers["idempotent-replayed"], "true");
    assert_eq!(second.headers["idempotent-redacted"], "api_key");
    let other = post(
        &env,
        "/v1/api-keys",
        &h,
        json!({"wallet_address": alice.address, "key_name": "other"}),
    )
    .await;
    assert_eq!(
        (other.status, other.code().as_str()),
        (StatusCode::CONFLICT, "idempotency_conflict")
    );
    let keys = env
        .send(Method::GET, "/v1/api-keys", &[("authorization", &auth)], "")
        .await
        .json();
    assert_eq!(keys.as_array().unwrap().len(), 1);
    // Money: an operator grant retried with its key lands once.
    let secret = env.gw().state.admin_secret.clone();
    let grant = json!({"wallet": alice.address, "credits": 500});
    for _ in 0..3 {
        let res = post(
            &env,
            "/admin/grant",
            &[("x-admin-secret", &secret), ("idempotency-key", "grant-7")],
            grant.clone(),
        )
        .await;
        assert_eq!(res.status, StatusCode::OK);
    }
    assert!(
        eventually(std::time::Duration::from_secs(1), || env
            .balance(&alice.address)
            .balance
            == 500)
        .await
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_usage_totals_each_key_from_its_chats() {
    let env = Env::start().await;
    let key = env.funded_key(crate::harness::W1, 1_000_000).await;
    let other = env.funded_key(crate::harness::W1, 0).await;
    let mut want = (0u64, 0u64, 0u64);
    for _ in 0..3 {
        let res = env
            .chat(&key, json!({"messages": [{"role": "user", "content": "hi"}], "memory_read": false, "memory_write": false}))
            .await;
        assert_eq!(res.status, StatusCode::OK);
        let u = &res.json()["usage"];
        want.0 += u["prompt_tokens"].as_u64().unwrap();
        want.1 += u["completion_tokens"].as_u64().unwrap();
        want.2 += u["credit_cost"].as_u64().unwrap();
    }
    // The events are group-committed; the totals follow them.
    let path = format!("/v1/usage/{}", crate::harness::W1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (mut last, mut counted) = (Value::Null, false);
    while !counted && std::time::Instant::now() < deadline {
        last = env
            .send(Method::GET, &path, &[("x-api-key", &key)], "")
            .await
            .json();
        counted = last["keys"]
            .as_array()
            .is_some_and(|ks| ks.iter().any(|k| k["request_count"] == 3));
        if !counted {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    assert!(counted, "{last}");
    let keys = last["keys"].as_array().unwrap();
    let id_of = |raw: &str| raw.split('_').nth(1).unwrap().to_string();
    let mine = keys
        .iter()
        .find(|k| k["api_key_id"] == id_of(&key).as_str())
        .unwrap();
    assert_eq!(
        (
            mine["total_prompt_tokens"].as_u64(),
            mine["total_completion_tokens"].as_u64(),
            mine["total_charged_usdc"].as_u64()
        ),
        (Some(want.0), Some(want.1), Some(want.2))
    );
    let idle = keys
        .iter()
        .find(|k| k["api_key_id"] == id_of(&other).as_str())
        .unwrap();
    assert_eq!(idle["request_count"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_sign_in_messages_are_bound_to_their_deployment() {
    const SECRET: &str = "one-jwt-secret-shared-by-three-deployments";
    let shared = |c: &mut vectorway::config::Config| c.auth.jwt_secret = Some(SECRET.into());
    let a = Env::with_knobs(fast_knobs(), shared).await;
    let domain_a = a.gw().state.config.auth.siwe_domain.clone();
    // Another port: another SIWE domain (`aud`) and base URL (`iss`).
    let b = Env::with_knobs(fast_knobs(), shared).await;
    // A's domain, another base URL: the same `aud`, another `iss` and SIWE origin.
    let c = Env::with_knobs(fast_knobs(), |cfg| {
        shared(cfg);
        cfg.auth.siwe_domain = domain_a.clone();
        cfg.public_base_url = Some("https://c.example".into());
    })
    .await;
    let alice = Signer::new(11);
    let (access, refresh) = sign_in(&a, &alice).await;
    async fn me(env: &Env, token: &str) -> crate::harness::Resp {
        let bearer = format!("Bearer {token}");
        env.send(Method::GET, "/v1/me", &[("authorization", &bearer)], "")
            .await
    }
    assert_eq!(me(&a, &access).await.status, StatusCode::OK);
    for other in [&b, &c] {
        let res = me(other, &access).await;
        assert_eq!(
            (res.status, res.code().as_str()),
            (StatusCode::UNAUTHORIZED, "invalid_token"),
            "a token minted elsewhere with the same secret"
        );
        let res = post(
            other,
            "/v1/auth/refresh",
            &[],
            json!({"refresh_token": refresh}),
        )
        .await;
        assert_eq!(
            (res.status, res.code().as_str()),
            (StatusCode::UNAUTHORIZED, "invalid_token")
        );
    }

    // C's challenges name C's origin; a message whose URI names A's is refused there, though
    // its domain is C's too.
    let challenge = || async {
        post(
            &c,
            "/v1/auth/siwe/challenge",
            &[],
            json!({"wallet_address": alice.address}),
        )
        .await
        .json()["message"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let msg = challenge().await;
    assert!(msg.contains("\nURI: https://c.example\n"), "{msg}");
    let verify = |msg: String| {
        let sig = alice.sign(&msg);
        post(
            &c,
            "/v1/auth/siwe/verify",
            &[],
            json!({"wallet_address": alice.address, "message": msg, "signature": sig}),
        )
    };
    let foreign = msg.replace("URI: https://c.example", &format!("URI: http://{domain_a}"));
    let res = verify(foreign).await;
    assert_eq!(
        (res.status, res.code().as_str()),
        (StatusCode::UNAUTHORIZED, "siwe_domain_mismatch"),
        "{}",
        String::from_utf8_lossy(&res.body)
    );
    // The nonce was not spent by the refusal; the same origin with a path and the default port
    // is accepted.
    let same = msg.replace("URI: https://c.example", "URI: https://C.example:443/login");
    let res = verify(same).await;
    assert_eq!(
        res.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&res.body)
    );
    let access_c = res.json()["tokens"]["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(me(&c, &access_c).await.status, StatusCode::OK);
    for env in [a, b, c] {
        env.stop().await;
    }
}
