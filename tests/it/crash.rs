//! Crash safety of the real binary: SIGKILL at a random moment under a mixed load (chat, admin
//! grants, x402 top-ups, API key creation, memory writes), 20 times. After every crash the store
//! holds everything that was acknowledged, and the restarted server agrees with its ledger.
//!
//! What "acknowledged" means per kind: a grant or top-up answered 200, a key answered 201, a
//! memory record returned by a search (a chat's memory write happens after its answer, so the
//! answer does not acknowledge it; a record is acknowledged once a search can see it).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use vectorway::config::{SimulatorKnobs, known_network};
use vectorway::memory::MemoryId;
use vectorway::payments::sign::{DEV_KEY_2, Signer};
use vectorway::payments::unix_now;
use vectorway::simulate::Simulator;
use vectorway::storage::{LedgerKind, Store};
use vectorway::wallet::Wallet;

use crate::harness::{Binary, call};

const ROUNDS: u64 = 20;
const PAY_TO: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

/// What the server acknowledged in one round.
#[derive(Default)]
struct Acks {
    /// (request id, credits): the ledger entry's reference is the request id.
    grants: Vec<(String, i64)>,
    /// (transaction, credits): the ledger entry's reference is the settlement's transaction.
    topups: Vec<(String, i64)>,
    /// (key id, raw key).
    keys: Vec<(String, String)>,
    /// (namespace, memory id, text).
    memories: Vec<(String, String, String)>,
    chats: u64,
}

type Shared = Arc<Mutex<Acks>>;

fn acks(a: &Shared) -> std::sync::MutexGuard<'_, Acks> {
    a.lock().unwrap_or_else(|p| p.into_inner())
}

/// xorshift64*: reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn json_headers<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(extra);
    h
}

async fn post(
    base: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> Option<crate::harness::Resp> {
    call(
        Method::POST,
        &format!("{base}{path}"),
        &json_headers(headers),
        body.to_string(),
    )
    .await
}

async fn get(base: &str, path: &str, headers: &[(&str, &str)]) -> Option<crate::harness::Resp> {
    call(Method::GET, &format!("{base}{path}"), headers, "").await
}

/// The id of the memory in `namespace` that a search for `text` returns first, if any.
async fn find_memory(base: &str, key: &str, namespace: &str, text: &str) -> Option<String> {
    let q: String = text
        .chars()
        .map(|c| if c == ' ' { '+' } else { c })
        .collect();
    let path = format!("/v1/memory?q={q}&k=1&namespace={namespace}");
    let res = get(base, &path, &[("x-api-key", key)]).await?;
    if res.status != StatusCode::OK {
        return None;
    }
    let v: Value = serde_json::from_slice(&res.body).ok()?;
    let m = v["matches"].as_array()?.first()?.clone();
    (m["text"].as_str()?.contains(text)).then(|| m["id"].as_str().map(str::to_string))?
}

/// Starts the mixed load on `base`; every task records what was acknowledged.
fn load(
    base: &str,
    secret: &str,
    key: &str,
    wallet: Wallet,
    signer: &Arc<Signer>,
    round: u64,
    acked: &Shared,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let backoff = || tokio::time::sleep(Duration::from_millis(5));
    for t in 0..2u64 {
        let (base, key, acked) = (base.to_string(), key.to_string(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0u64.. {
                let body = json!({"messages": [{"role": "user", "content": format!("load {round} {t} {i}")}],
                                  "max_tokens": 20, "stream": i % 2 == 0,
                                  "memory_read": false, "memory_write": false});
                match post(&base, "/v1/chat/completions", &[("x-api-key", &key)], body).await {
                    Some(r) if r.status == StatusCode::OK => acks(&acked).chats += 1,
                    _ => backoff().await,
                }
            }
        }));
    }
    {
        let (base, secret, acked) = (base.to_string(), secret.to_string(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0i64.. {
                let credits = 1_000 + n;
                let body = json!({"wallet": wallet.to_string(), "credits": credits});
                match post(&base, "/admin/grant", &[("x-admin-secret", &secret)], body).await {
                    Some(r) if r.status == StatusCode::OK => {
                        let id = r.headers["x-request-id"].to_str().unwrap().to_string();
                        acks(&acked).grants.push((id, credits));
                    }
                    _ => backoff().await,
                }
            }
        }));
    }
    {
        let (base, signer, acked) = (base.to_string(), signer.clone(), acked.clone());
        let net = known_network("base-sepolia").unwrap();
        tasks.push(tokio::spawn(async move {
            loop {
                let p = signer
                    .pay(&net, PAY_TO.parse().unwrap(), 1_000_000, unix_now(), 300)
                    .unwrap();
                let header = p.x_payment().unwrap().to_str().unwrap().to_string();
                let res = post(
                    &base,
                    "/v1/topup",
                    &[("x-payment", &header)],
                    json!({"amount": 1}),
                )
                .await;
                match res {
                    Some(r) if r.status == StatusCode::OK => {
                        let receipt: Value = serde_json::from_slice(
                            &base64::engine::general_purpose::STANDARD
                                .decode(r.headers["x-payment-response"].to_str().unwrap())
                                .unwrap(),
                        )
                        .unwrap();
                        let tx = receipt["transaction"].as_str().unwrap().to_string();
                        acks(&acked).topups.push((tx, 1_000_000));
                    }
                    _ => backoff().await,
                }
            }
        }));
    }
    {
        let (base, secret, acked) = (base.to_string(), secret.to_string(), acked.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let body = json!({"wallet": wallet.to_string(), "name": "crash"});
                match post(&base, "/admin/keys", &[("x-admin-secret", &secret)], body).await {
                    Some(r) if r.status == StatusCode::CREATED => {
                        let v: Value = serde_json::from_slice(&r.body).unwrap();
                        let id = v["key_id"].as_str().unwrap().to_string();
                        let raw = v["api_key"].as_str().unwrap().to_string();
                        acks(&acked).keys.push((id, raw));
                    }
                    _ => backoff().await,
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    {
        let (base, key, acked) = (base.to_string(), key.to_string(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for j in 0u64.. {
                let ns = format!("r{round}m{j}");
                let text = format!("crash round {round} memory {j} keeps the marker q{round}x{j}");
                let body = json!({"messages": [{"role": "user", "content": text}], "max_tokens": 8,
                                  "memory_read": false, "memory_write": true,
                                  "memory_write_mode": "raw", "memory_namespace": ns});
                match post(&base, "/v1/chat/completions", &[("x-api-key", &key)], body).await {
                    Some(r) if r.status == StatusCode::OK => {}
                    _ => {
                        backoff().await;
                        continue;
                    }
                }
                // The write runs after the answer: the record is acknowledged once a search sees it.
                for _ in 0..200 {
                    if let Some(id) = find_memory(&base, &key, &ns, &text).await {
                        acks(&acked).memories.push((ns.clone(), id, text.clone()));
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }));
    }
    tasks
}

/// With the server dead: everything acknowledged is in the store. Returns the ledger's sum and
/// whether it holds a debit.
fn check_store(
    dir: &std::path::Path,
    wallet: &Wallet,
    all: &Acks,
    round: u64,
) -> (i128, bool, i128) {
    let store = Store::open(dir).unwrap();
    let entries: Vec<_> = store.ledger_of(wallet).map(|e| e.unwrap()).collect();
    let present = |kind: LedgerKind, reference: &str, credits: i64| {
        entries.iter().any(|e| {
            e.kind == kind && e.reference.as_deref() == Some(reference) && e.credits == credits
        })
    };
    for (id, credits) in &all.grants {
        assert!(
            present(LedgerKind::Grant, id, *credits),
            "round {round}: acknowledged grant {id} lost"
        );
    }
    for (tx, credits) in &all.topups {
        assert!(
            present(LedgerKind::Topup, tx, *credits),
            "round {round}: acknowledged top-up {tx} lost"
        );
    }
    // Extra money in is only what was in flight at a kill: one request per kind and round.
    let acked: HashSet<&str> = all
        .grants
        .iter()
        .map(|g| g.0.as_str())
        .chain(all.topups.iter().map(|t| t.0.as_str()))
        .collect();
    let unacked = entries
        .iter()
        .filter(|e| matches!(e.kind, LedgerKind::Grant | LedgerKind::Topup))
        .filter(|e| !e.reference.as_deref().is_some_and(|r| acked.contains(r)))
        .count() as u64;
    assert!(
        unacked <= 2 * (round + 1),
        "round {round}: {unacked} unacknowledged credits"
    );
    let stored: HashSet<String> = store
        .all_keys()
        .unwrap()
        .into_iter()
        .map(|k| k.key_id)
        .collect();
    for (id, _) in &all.keys {
        assert!(
            stored.contains(id),
            "round {round}: acknowledged key {id} lost"
        );
    }
    for (ns, id, _) in &all.memories {
        let id: MemoryId = id.parse().unwrap();
        assert!(
            store.get_memory(wallet, id.as_bytes()).unwrap().is_some(),
            "round {round}: acknowledged memory {id:?} in {ns} lost"
        );
    }
    let books: i128 = entries.iter().map(|e| i128::from(e.credits)).sum();
    assert!(
        books >= 0,
        "round {round}: the ledger never goes below zero"
    );
    let topups = entries
        .iter()
        .filter(|e| e.kind == LedgerKind::Topup)
        .map(|e| i128::from(e.credits))
        .sum();
    (
        books,
        entries.iter().any(|e| e.kind == LedgerKind::Debit),
        topups,
    )
}

/// On the restarted server: the balance is the ledger's, nothing is held, the last round's keys
/// authenticate and its memories are searchable.
/// `books` is the ledger's sum before the restart; `pending` the USDC the facilitator moved for
/// top-ups the ledger did not have yet (killed between transfer and credit), which start-up
/// credits from their intents: the balance reaches `books + pending` and never passes it.
async fn check_server(
    server: &Binary,
    wallet: &Wallet,
    (books, pending): (i128, i128),
    last: &Acks,
    key: &str,
) {
    let path = format!("/admin/balance?wallet={wallet}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let v = loop {
        let v: Value = get(&server.base, &path, &[("x-admin-secret", &server.secret)])
            .await
            .unwrap()
            .json();
        let credits = i128::from(v["credits"].as_i64().unwrap());
        assert!(
            credits <= books + pending,
            "never more than money in − charges + recovered top-ups"
        );
        if credits == books + pending || std::time::Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        i128::from(v["credits"].as_i64().unwrap()),
        books + pending,
        "balance = money in − recorded charges + top-ups recovered from their intents"
    );
    assert_eq!(v["held"], 0, "no hold survives a restart");
    for (id, raw) in &last.keys {
        let res = get(&server.base, "/v1/credits/me", &[("x-api-key", raw)])
            .await
            .unwrap();
        assert_eq!(
            res.status,
            StatusCode::OK,
            "acknowledged key {id} authenticates"
        );
    }
    for (ns, id, text) in &last.memories {
        let found = find_memory(&server.base, key, ns, text).await;
        assert_eq!(
            found.as_deref(),
            Some(id.as_str()),
            "acknowledged memory in {ns} is searchable"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_mixed_load_loses_nothing_acknowledged() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| (u64::from(std::process::id()) << 20) | (unix_now() & 0xfffff))
        | 1;
    eprintln!("crash test seed: CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let knobs = SimulatorKnobs {
        ttft: Duration::from_millis(2),
        tokens_per_sec: 50_000,
        chunk_tokens: 4,
        reply_tokens: 16,
    };
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), knobs, None)
        .await
        .unwrap();
    let signer = Arc::new(Signer::from_hex(DEV_KEY_2).unwrap());
    let wallet = signer.address();
    const FUNDS: u64 = 1_000_000_000_000_000;
    sim.set_balance(&wallet, FUNDS);
    let dir = tempfile::tempdir().unwrap();
    let mut all = Acks::default();
    let mut last = Acks::default();
    let mut books: i128 = 0;
    let mut pending: i128 = 0;
    let mut key = String::new();
    let mut debited = false;
    for round in 0..=ROUNDS {
        // Odd rounds widen the group-commit window to its 1 s maximum: whatever is acknowledged
        // must be on disk by its own fsync, not by a neighbour's.
        let interval = if round % 2 == 1 { "1000" } else { "5" };
        let mut server = Binary::start(
            dir.path(),
            &sim.base_url(),
            &[
                ("VECTORWAY_STORE__JOURNAL_INTERVAL_MS", interval),
                ("VECTORWAY_LIMITS__RUNTIME_PER_MIN", "1000000"),
                ("VECTORWAY_LIMITS__CONTROL_PER_MIN", "1000000"),
            ],
        );
        if round == 0 {
            let admin = [("x-admin-secret", server.secret.as_str())];
            let v = post(
                &server.base,
                "/admin/keys",
                &admin,
                json!({"wallet": wallet.to_string()}),
            )
            .await
            .unwrap()
            .json();
            key = v["api_key"].as_str().unwrap().to_string();
        }
        check_server(&server, &wallet, (books, pending), &last, &key).await;
        if round == ROUNDS {
            break;
        }
        let acked: Shared = Arc::default();
        let tasks = load(
            &server.base,
            &server.secret,
            &key,
            wallet,
            &signer,
            round,
            &acked,
        );
        // The kill lands at a random moment once the load is flowing.
        for _ in 0..2_000 {
            if !acks(&acked).grants.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(20 + rng.below(400))).await;
        server.kill();
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        last = std::mem::take(&mut *acks(&acked));
        all.grants.extend(last.grants.iter().cloned());
        all.topups.extend(last.topups.iter().cloned());
        all.keys.extend(last.keys.iter().cloned());
        all.memories.extend(last.memories.iter().cloned());
        all.chats += last.chats;
        let (sum, any_debit, topups) = check_store(dir.path(), &wallet, &all, round);
        books = sum;
        // Every transfer the facilitator made is credited: now, or by the next start.
        let moved = i128::from(FUNDS - sim.balance(&wallet));
        assert!(
            moved >= topups,
            "round {round}: credits for money that never moved"
        );
        pending = moved - topups;
        debited |= any_debit;
    }
    eprintln!(
        "acknowledged over {ROUNDS} crashes: {} grants, {} top-ups, {} keys, {} memories, {} chats",
        all.grants.len(),
        all.topups.len(),
        all.keys.len(),
        all.memories.len(),
        all.chats
    );
    assert!(
        !all.grants.is_empty()
            && !all.topups.is_empty()
            && !all.keys.is_empty()
            && !all.memories.is_empty()
            && all.chats > 0
            && debited,
        "every kind of load ran"
    );
    sim.stop().await;
}
