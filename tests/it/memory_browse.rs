//! The console's memory view over HTTP: a wallet's namespaces and a namespace's records, and
//! search, list and delete with a SIWE session as with an API key, never across wallets.

use http::{Method, StatusCode};
use serde_json::{Value, json};
use vectorway::wallet::Wallet;

use crate::console::sign_in;
use crate::harness::{Env, Resp};

async fn get(env: &Env, path: &str, auth: &[(&str, &str)]) -> Resp {
    env.send(Method::GET, path, auth, "").await
}

async fn ok(env: &Env, path: &str, auth: &[(&str, &str)]) -> Value {
    let res = get(env, path, auth).await;
    assert_eq!(
        res.status,
        StatusCode::OK,
        "{path}: {}",
        String::from_utf8_lossy(&res.body)
    );
    res.json()
}

/// `(namespace, records)` of a namespaces answer, in its order.
fn counts(v: &Value) -> Vec<(Value, u64)> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["namespace"].clone(), n["records"].as_u64().unwrap()))
        .collect()
}

fn texts(v: &Value) -> Vec<String> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["text"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_browses_searches_and_deletes_its_own_memories_only() {
    let env = Env::start().await;
    let (a, jwt_a) = sign_in(&env, 0x3a).await;
    let (b, jwt_b) = sign_in(&env, 0x3b).await;
    let key_a = env.funded_key(&a, 10_000_000).await;
    env.funded_key(&b, 10_000_000).await;
    let wallet_a: Wallet = a.parse().unwrap();
    let memory = &env.gw().state.memory;
    for (ns, text) in [
        (Some("notes"), "the pelican nests by the old lighthouse"),
        (None, "the default namespace holds this one"),
        (Some("notes"), "the heron fishes at dawn"),
        (Some("notes"), "the cormorant dries its wings"),
    ] {
        memory.write(wallet_a, ns, text).await.unwrap();
    }
    let bearer_a = format!("Bearer {jwt_a}");
    let bearer_b = format!("Bearer {jwt_b}");
    let (sa, sb, ka) = (
        [("authorization", bearer_a.as_str())],
        [("authorization", bearer_b.as_str())],
        [("x-api-key", key_a.as_str())],
    );

    // Namespaces: the default first, with counts and the newest record's time; the same for
    // the wallet's session and its key; another wallet has none.
    let ns = ok(&env, "/v1/memory/namespaces", &sa).await;
    assert_eq!(counts(&ns), [(Value::Null, 1), (json!("notes"), 3)]);
    assert!(ns["data"][1]["newest_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(ok(&env, "/v1/memory/namespaces", &ka).await, ns);
    assert_eq!(
        ok(&env, "/v1/memory/namespaces", &sb).await,
        json!({"object": "list", "data": []})
    );

    // A namespace's records, newest first, paged by `before`.
    let page = ok(&env, "/v1/memory/records?namespace=notes&limit=2", &sa).await;
    assert_eq!(
        texts(&page),
        ["the cormorant dries its wings", "the heron fishes at dawn"]
    );
    assert_eq!(page["has_more"], true);
    let before = page["next_before"].as_str().unwrap();
    assert_eq!(before, page["data"][1]["id"]);
    let rest = ok(
        &env,
        &format!("/v1/memory/records?namespace=notes&limit=2&before={before}"),
        &sa,
    )
    .await;
    assert_eq!(texts(&rest), ["the pelican nests by the old lighthouse"]);
    assert_eq!(
        (rest["has_more"].clone(), rest["next_before"].clone()),
        (json!(false), Value::Null)
    );
    let default = ok(&env, "/v1/memory/records", &sa).await;
    assert_eq!(texts(&default), ["the default namespace holds this one"]);
    assert_eq!(default["data"][0]["namespace"], Value::Null);
    for path in ["/v1/memory/records?namespace=notes", "/v1/memory/records"] {
        let other = ok(&env, path, &sb).await;
        assert_eq!(other["data"], json!([]), "{path} for another wallet");
    }

    // Search with the session (billed to the wallet like a key's search); the other wallet's
    // session finds nothing of A's.
    let found = ok(
        &env,
        "/v1/memory?q=pelican+lighthouse&namespace=notes&k=1",
        &sa,
    )
    .await;
    let pelican = found["matches"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        found["matches"][0]["text"],
        "the pelican nests by the old lighthouse"
    );
    let usage = env.usage(&a).await;
    assert!(
        usage
            .iter()
            .any(|e| e.path == "/v1/memory" && e.auth_mode == "jwt" && e.credits > 0),
        "the session's search is metered: {usage:?}"
    );
    let theirs = ok(&env, "/v1/memory?q=pelican+lighthouse&namespace=notes", &sb).await;
    assert_eq!(theirs["matches"], json!([]));

    // Delete: B's session cannot, A's can; the list and the counts follow at once.
    let path = format!("/v1/memory/{pelican}");
    let res = env.send(Method::DELETE, &path, &sb, "").await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    let res = env.send(Method::DELETE, &path, &sa, "").await;
    assert_eq!(
        res.json(),
        json!({"status": "deleted", "memory_id": pelican})
    );
    let notes = ok(&env, "/v1/memory/records?namespace=notes", &ka).await;
    assert_eq!(
        texts(&notes),
        ["the cormorant dries its wings", "the heron fishes at dawn"]
    );
    let ns = ok(&env, "/v1/memory/namespaces", &sa).await;
    assert_eq!(counts(&ns), [(Value::Null, 1), (json!("notes"), 2)]);

    // Credentials and input.
    for path in [
        "/v1/memory/namespaces",
        "/v1/memory/records",
        "/v1/memory?q=x",
    ] {
        assert_eq!(
            get(&env, path, &[]).await.status,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        let bad = [("authorization", "Bearer not-a-token")];
        assert_eq!(
            get(&env, path, &bad).await.status,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
    for bad in [
        "/v1/memory/records?limit=0",
        "/v1/memory/records?limit=101",
        "/v1/memory/records?before=nope",
        "/v1/memory/records?before=",
        "/v1/memory/records?namespace=no+spaces",
    ] {
        let res = get(&env, bad, &sa).await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    // The literal paths are not memory ids: no delete there, and `Allow` names only GET.
    let res = env
        .send(Method::DELETE, "/v1/memory/namespaces", &sa, "")
        .await;
    assert_eq!(res.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers["allow"], "GET");
    env.stop().await;
}
