//! Wallet memory end to end: chat writes and reads it, search and delete, isolation between
//! wallets, persistence across a restart, and the embeddings endpoint.

use std::time::Duration;

use base64::Engine;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use vectorway::app;
use vectorway::config::Config;
use vectorway::storage::LedgerKind;

use crate::harness::{Env, W1, W2, fast_knobs};

pub(crate) async fn search(env: &Env, key: &str, q: &str) -> Vec<Value> {
    let path = format!("/v1/memory?q={}&k=5", q.replace(' ', "+"));
    let res = env
        .send(Method::GET, &path, &[("x-api-key", key)], "")
        .await;
    assert_eq!(
        res.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&res.body)
    );
    res.json()["matches"].as_array().unwrap().clone()
}

/// Polls a search until it returns something (writes happen after the answer, in the background).
async fn search_eventually(env: &Env, key: &str, q: &str) -> Vec<Value> {
    for _ in 0..100 {
        let m = search(env, key, q).await;
        if !m.is_empty() {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Vec::new()
}

fn turn(text: &str, extra: Value) -> Value {
    let mut b = json!({"messages": [{"role": "user", "content": text}], "max_tokens": 32});
    if let (Some(o), Some(e)) = (b.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_writes_memory_and_later_chats_read_it() {
    // The simulator's hashed embeddings score related texts lower than Gemini does; the floor is
    // configuration.
    let env = Env::with_knobs(fast_knobs(), |c| c.memory.score_floor = 0.1).await;
    let key = env.funded_key(W1, 10_000_000).await;
    let res = env
        .chat(
            &key,
            turn(
                "the orbital simulation run 42 finished with a stable orbit",
                json!({"memory_read": false}),
            ),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    let u = &res.json()["usage"];
    assert_eq!(
        (
            u["memory_read"].as_bool(),
            u["memory_write"].as_bool(),
            u["memories_used"].as_u64()
        ),
        (Some(false), Some(true), Some(0))
    );
    let found = search_eventually(&env, &key, "orbital simulation run").await;
    assert_eq!(found.len(), 1);
    assert!(
        found[0]["text"]
            .as_str()
            .unwrap()
            .contains("orbital simulation run 42")
    );
    assert!(found[0]["score"].as_f64().unwrap() > 0.3);
    // A streamed turn is remembered too.
    let res = env
        .chat(
            &key,
            turn(
                "the budget for the fleet is 300 credits",
                json!({"stream": true, "memory_read": false}),
            ),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    // The streamed turn is remembered too (wait for its own record, not any match).
    let mut streamed = false;
    for _ in 0..100 {
        let m = search(&env, &key, "fleet budget credits").await;
        if m.iter()
            .any(|m| m["text"].as_str().unwrap().contains("300 credits"))
        {
            streamed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(streamed, "the streamed turn was written to memory");
    // Reading: the memory is injected into the upstream call as a system block.
    let res = env
        .chat(
            &key,
            turn(
                "what happened in the orbital simulation run?",
                json!({"memory_write": false}),
            ),
        )
        .await;
    let u = &res.json()["usage"];
    assert!(u["memories_used"].as_u64().unwrap() >= 1, "{u}");
    let sent = env
        .sim
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path.ends_with(":generateContent"))
        .unwrap();
    let system = sent.body["systemInstruction"]["parts"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(system.contains("orbital simulation run 42"), "{system}");
    // memory_max_chars bounds what is stored.
    env.chat(
        &key,
        turn(
            &"zebra ".repeat(400),
            json!({"memory_read": false, "memory_write_mode": "raw", "memory_max_chars": 50}),
        ),
    )
    .await;
    // Other memories already match any query (no floor on search): wait for the zebra record.
    let mut z = Vec::new();
    for _ in 0..100 {
        z = search(&env, &key, "zebra zebra").await;
        if z.iter()
            .any(|m| m["text"].as_str().unwrap().contains("zebra"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        z.iter()
            .any(|m| m["text"].as_str().unwrap().chars().count() <= 50
                && m["text"].as_str().unwrap().contains("zebra"))
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_are_immediate_and_wallets_are_isolated() {
    let env = Env::start().await;
    let (k1, k2) = (
        env.funded_key(W1, 10_000_000).await,
        env.funded_key(W2, 10_000_000).await,
    );
    let same = "the launch codes are kept in the blue folder";
    for k in [&k1, &k2] {
        env.chat(k, turn(same, json!({"memory_read": false}))).await;
    }
    let m1 = search_eventually(&env, &k1, "launch codes blue folder").await;
    let m2 = search_eventually(&env, &k2, "launch codes blue folder").await;
    assert_eq!(
        (m1.len(), m2.len()),
        (1, 1),
        "identical texts, one record each"
    );
    assert_ne!(m1[0]["id"], m2[0]["id"]);
    let id1 = m1[0]["id"].as_str().unwrap().to_string();
    // Wallet 2 cannot delete wallet 1's memory; wallet 1 can, and it is gone at once.
    let res = env
        .send(
            Method::DELETE,
            &format!("/v1/memory/{id1}"),
            &[("x-api-key", &k2)],
            "",
        )
        .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    let res = env
        .send(
            Method::DELETE,
            &format!("/v1/memory/{id1}"),
            &[("x-api-key", &k1)],
            "",
        )
        .await;
    assert_eq!(res.json(), json!({"status": "deleted", "memory_id": id1}));
    assert!(
        search(&env, &k1, "launch codes blue folder")
            .await
            .is_empty()
    );
    assert_eq!(
        search(&env, &k2, "launch codes blue folder").await.len(),
        1,
        "wallet 2 keeps its own"
    );
    let res = env.send(Method::GET, "/v1/memory?q=x", &[], "").await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memories_survive_a_restart() {
    let sim =
        vectorway::simulate::Simulator::start("127.0.0.1:0".parse().unwrap(), fast_knobs(), None)
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let w = W1.parse().unwrap();
    let key = {
        let gw = app::start(Config::for_tests(dir.path(), &sim.base_url()))
            .await
            .unwrap();
        gw.state
            .billing
            .credit(w, 1_000_000, LedgerKind::Grant, None, None)
            .await
            .unwrap();
        let key = gw.state.keys.create(w, "t").await.unwrap().0;
        gw.state
            .memory
            .write(w, None, "the reactor maintenance is scheduled for friday")
            .await
            .unwrap();
        gw.shutdown().await;
        key
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let gw = app::start(Config::for_tests(dir.path(), &sim.base_url()))
        .await
        .unwrap();
    let found = gw
        .state
        .memory
        .search(w, None, "when is the reactor maintenance", 3)
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert!(found[0].text.contains("friday"));
    drop(key);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_float_and_base64_are_billed() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 1_000_000).await;
    let h = [("x-api-key", key.as_str())];
    let res = env
        .send(
            Method::POST,
            "/v1/embeddings",
            &h,
            json!({"model": "gemini-embedding-001", "input": ["hello world", "hello there"]})
                .to_string(),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    let v = res.json();
    let a: Vec<f64> = v["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(a.len(), 768);
    assert!(
        (a.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-3,
        "unit length"
    );
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let res = env
        .send(
            Method::POST,
            "/v1/embeddings",
            &h,
            json!({"input": "hello world", "encoding_format": "base64", "dimensions": 256})
                .to_string(),
        )
        .await;
    let b64 = res.json()["data"][0]["embedding"]
        .as_str()
        .unwrap()
        .to_string();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(bytes.len(), 256 * 4);
    let floats: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert!((floats.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-3);
    assert!(env.balance(W1).balance < 1_000_000, "embeddings are billed");
    // One usage event per call: two billed successes with their tokens, one 422 below.
    let res = env
        .send(
            Method::POST,
            "/v1/embeddings",
            &h,
            json!({"input": [1, 2, 3]}).to_string(),
        )
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    env.gw().state.billing.journal().sync().await;
    let events: Vec<_> = env
        .gw()
        .state
        .store
        .usage_of(&W1.parse().unwrap())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.path == "/v1/embeddings")
        .collect();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(
        events
            .iter()
            .filter(|e| e.status == 200 && e.prompt_tokens > 0 && e.credits > 0)
            .count(),
        2
    );
    assert_eq!(events[0].status, 422, "newest first: the refused call");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_separate_agents_of_one_wallet() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 10_000_000).await;
    let res = env
        .chat(
            &key,
            turn(
                "agent a keeps the telescope schedule",
                json!({"memory_read": false, "memory_namespace": "agent-a"}),
            ),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    let mut found = Vec::new();
    for _ in 0..100 {
        let res = env
            .send(
                Method::GET,
                "/v1/memory?q=telescope+schedule&namespace=agent-a",
                &[("x-api-key", &key)],
                "",
            )
            .await;
        found = res.json()["matches"].as_array().unwrap().clone();
        if !found.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(found.len(), 1);
    let other = env
        .send(
            Method::GET,
            "/v1/memory?q=telescope+schedule&namespace=agent-b",
            &[("x-api-key", &key)],
            "",
        )
        .await;
    assert!(other.json()["matches"].as_array().unwrap().is_empty());
    assert!(
        search(&env, &key, "telescope schedule").await.is_empty(),
        "the default namespace is separate"
    );
    let bad = env
        .chat(
            &key,
            turn("x", json!({"memory_namespace": "no spaces allowed"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    env.stop().await;
}

/// Embedding requests the simulator received so far.
fn embed_calls(env: &Env) -> usize {
    env.sim
        .requests()
        .iter()
        .filter(|r| r.path.contains("embed"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_pays_for_its_query_embedding() {
    let env = Env::start().await;
    // A wallet with credits: the query's tokens are charged and recorded like an embedding.
    let key = env.funded_key(W1, 1_000_000).await;
    let q = "where did the orbital simulation end ".repeat(100);
    let res = env
        .send(
            Method::GET,
            &format!("/v1/memory?q={}", q.replace(' ', "+")),
            &[("x-api-key", key.as_str())],
            "",
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    let id = res.headers["x-request-id"].to_str().unwrap().to_string();
    let tokens = (q.len() as u64).div_ceil(4);
    let cost = env.gw().state.embedding_price().cost(tokens, 0);
    assert!(cost > 0);
    assert_eq!(env.balance(W1).balance, 1_000_000 - cost);
    let events: Vec<_> = env
        .usage(W1)
        .await
        .into_iter()
        .filter(|e| e.request_id == id)
        .collect();
    assert_eq!(events.len(), 1, "one usage event per call");
    let event = &events[0];
    assert_eq!(
        (
            event.method.as_str(),
            event.path.as_str(),
            event.status,
            event.prompt_tokens,
            event.credits
        ),
        ("GET", "/v1/memory", 200, tokens, cost)
    );
    let debits: Vec<_> = env
        .ledger(W1)
        .await
        .into_iter()
        .filter(|e| e.kind == LedgerKind::Debit)
        .map(|e| (e.credits, e.reference))
        .collect();
    assert_eq!(debits, [(-(cost as i64), Some(id))]);

    // A wallet with nothing: 402 before any embedding call, and nothing held.
    let broke = env.funded_key(W2, 0).await;
    let calls = embed_calls(&env);
    let res = env
        .send(
            Method::GET,
            "/v1/memory?q=anything+at+all",
            &[("x-api-key", broke.as_str())],
            "",
        )
        .await;
    assert_eq!(
        (res.status, res.code().as_str()),
        (StatusCode::PAYMENT_REQUIRED, "insufficient_credits")
    );
    assert_eq!(embed_calls(&env), calls, "no upstream call for free");
    assert_eq!(env.balance(W2).held, 0);

    // A query past the cap is refused before anything else, naming `q`.
    let long = "a".repeat(30_000);
    let res = env
        .send(
            Method::GET,
            &format!("/v1/memory?q={long}"),
            &[("x-api-key", key.as_str())],
            "",
        )
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(res.json()["error"]["param"], "q");
    assert_eq!(embed_calls(&env), calls);
    env.stop().await;
}
