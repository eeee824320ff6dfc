//! Crash safety of the real binary: SIGKILL under load, restart, and the books still balance.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::{Value, json};
use vectorway::config::SimulatorKnobs;
use vectorway::simulate::Simulator;
use vectorway::storage::{LedgerKind, Store};

use crate::harness::client;

struct Server {
    child: Child,
    base: String,
    secret: String,
}

fn spawn(dir: &std::path::Path, upstream: &str) -> Server {
    let _ = std::fs::remove_file(dir.join("server.json"));
    let child = Command::new(env!("CARGO_BIN_EXE_vectorway"))
        .arg("serve")
        .env_clear()
        .env("VECTORWAY_SERVER__LISTEN", "127.0.0.1:0")
        .env("VECTORWAY_STORE__DATA_DIR", dir)
        .env("VECTORWAY_UPSTREAM__BASE_URL", upstream)
        .env("GEMINI_API_KEY", "test")
        .env("VECTORWAY_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = std::fs::read_to_string(dir.join("server.json"))
            && let Ok(v) = serde_json::from_str::<Value>(&s)
        {
            let secret = std::fs::read_to_string(dir.join("admin.secret")).unwrap();
            return Server {
                child,
                base: format!("http://{}", v["addr"].as_str().unwrap()),
                secret: secret.trim().into(),
            };
        }
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn post(
    base: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> Option<(StatusCode, Value)> {
    let mut req = http::Request::post(format!("{base}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = client()
        .request(
            req.body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_string(),
            )))
            .ok()?,
        )
        .await
        .ok()?;
    let status = res.status();
    let bytes = http_body_util::BodyExt::collect(res.into_body())
        .await
        .ok()?
        .to_bytes();
    Some((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

const ROUNDS: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_money() {
    let knobs = SimulatorKnobs {
        ttft: Duration::from_millis(2),
        tokens_per_sec: 50_000,
        chunk_tokens: 4,
        reply_tokens: 16,
    };
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), knobs, None)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wallet = "0x5555555555555555555555555555555555555555";
    let mut acknowledged: u64 = 0;
    let mut key: Option<String> = None;
    for round in 0..ROUNDS {
        let mut server = spawn(dir.path(), &sim.base_url());
        let admin = [("x-admin-secret", server.secret.as_str())];
        if key.is_none() {
            let (_, v) = post(
                &server.base,
                "/admin/keys",
                &admin,
                json!({"wallet": wallet}),
            )
            .await
            .unwrap();
            key = Some(v["api_key"].as_str().unwrap().to_string());
        }
        let key = key.clone().unwrap();
        // Load: grants and chats interleaved from several tasks; SIGKILL lands in the middle.
        let base = server.base.clone();
        let secret = server.secret.clone();
        let load = tokio::spawn(async move {
            let mut acks = 0u64;
            let mut tasks = Vec::new();
            for i in 0..4 {
                let (base, key) = (base.clone(), key.clone());
                tasks.push(tokio::spawn(async move {
                    for _ in 0..1000 {
                        let _ = post(&base, "/v1/chat/completions", &[("x-api-key", &key)], json!({"messages": [{"role": "user", "content": format!("load {i}")}], "max_tokens": 20})).await;
                    }
                }));
            }
            for n in 0..1000u64 {
                match post(
                    &base,
                    "/admin/grant",
                    &[("x-admin-secret", &secret)],
                    json!({"wallet": wallet, "credits": 1000 + n}),
                )
                .await
                {
                    Some((StatusCode::OK, _)) => acks += 1000 + n,
                    _ => break,
                }
            }
            for t in tasks {
                t.abort();
            }
            acks
        });
        tokio::time::sleep(Duration::from_millis(150 + 37 * round)).await;
        server.child.kill().unwrap(); // SIGKILL
        let _ = server.child.wait();
        acknowledged += load.await.unwrap();
    }
    // After the last crash, read the books straight from the store.
    let store = Store::open(dir.path()).unwrap();
    let w = wallet.parse().unwrap();
    let entries: Vec<_> = store.ledger_of(&w).map(|e| e.unwrap()).collect();
    let granted: i64 = entries
        .iter()
        .filter(|e| e.kind == LedgerKind::Grant)
        .map(|e| e.credits)
        .sum();
    let debited: i64 = entries
        .iter()
        .filter(|e| e.kind == LedgerKind::Debit)
        .map(|e| -e.credits)
        .sum();
    assert!(
        acknowledged > 0 && debited > 0,
        "the load ran: {acknowledged} granted, {debited} debited"
    );
    assert!(
        granted as u64 >= acknowledged,
        "every acknowledged grant survived: {granted} < {acknowledged}"
    );
    // Each round has at most one grant in flight when the kill lands (written but unacknowledged).
    assert!(
        granted as u64 <= acknowledged + ROUNDS * 2000,
        "only in-flight grants are extra"
    );
    assert!(debited >= 0 && debited <= granted, "never below zero");
    drop(store);
    // A restarted server agrees with the ledger and holds nothing.
    let mut server = spawn(dir.path(), &sim.base_url());
    let res = client()
        .request(
            http::Request::get(format!("{}/admin/balance?wallet={wallet}", server.base))
                .header("x-admin-secret", &server.secret)
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let bytes = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        v["credits"].as_i64().unwrap(),
        granted - debited,
        "balance = grants − recorded charges"
    );
    assert_eq!(v["held"], 0, "no hold survives a restart");
    server.child.kill().unwrap();
    let _ = server.child.wait();
    sim.stop().await;
}
