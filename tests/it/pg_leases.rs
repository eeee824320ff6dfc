//! Credit leases on one PostgreSQL: the statements keep the books, and three gateways sharing a
//! wallet never serve more than its balance covers.

use std::time::Duration;

use serde_json::json;
use vectorway::config::StoreBackend;
use vectorway::storage::pg::PgStore;
use vectorway::storage::{LedgerEntry, LedgerKind};
use vectorway::wallet::Wallet;

use crate::harness::{Binary, Env, W1, call, fast_knobs, served_and_charged, spawn_chat};
use crate::pg::{Postgres, pg_config, raw_client};

/// One wallet's books as the database has them, checked against both invariants:
/// `leased + committed ≤ granted`, `leased = Σ (amount − used)` over its leases, and the ledger
/// sum rule `Σ ledger = granted − committed`. Returns `(granted, committed, leased)`.
pub(crate) async fn books(c: &tokio_postgres::Client, wallet: &Wallet) -> (i64, i64, i64) {
    let w = wallet.as_bytes().as_slice();
    let r = c
        .query_one(
            "SELECT b.granted, b.committed, b.leased,
                    (SELECT coalesce(sum(amount - used), 0)::bigint FROM credit_leases WHERE wallet = $1),
                    (SELECT coalesce(sum(credits), 0)::bigint FROM ledger WHERE wallet = $1)
             FROM balances b WHERE b.wallet = $1",
            &[&w],
        )
        .await
        .unwrap();
    let (granted, committed, leased, lent, ledger): (i64, i64, i64, i64, i64) =
        (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
    assert!(
        leased + committed <= granted,
        "no overdraft: {granted} {committed} {leased}"
    );
    assert_eq!(leased, lent, "leased = Σ (amount − used)");
    assert_eq!(ledger, granted - committed, "the ledger sum rule");
    (granted, committed, leased)
}

fn entry(seq: u64, credits: i64, reference: &str) -> LedgerEntry {
    LedgerEntry {
        seq,
        ts_ms: 1,
        wallet: W1.parse().unwrap(),
        kind: if credits > 0 {
            LedgerKind::Grant
        } else {
            LedgerKind::Debit
        },
        credits,
        reference: Some(reference.into()),
        note: None,
    }
}

/// Two replicas lease from one wallet: a lease is taken only when that much is free, a debit
/// batch moves credits from the lease to `committed` once however often it is retried, a late
/// debit whose lease was recovered is charged to the free balance (never past it), an expired
/// lease comes back as `amount − used`, and a replica's shutdown returns the rest.
#[tokio::test]
async fn lease_statements_keep_the_books() {
    let url = Postgres::shared().fresh_db().await;
    let a = PgStore::open(&pg_config(&url)).await.unwrap();
    let b = PgStore::open(&pg_config(&url)).await.unwrap();
    let c = raw_client(&url).await;
    let w: Wallet = W1.parse().unwrap();
    a.append_history(&[entry(1, 1000, "grant")], &[])
        .await
        .unwrap();
    assert_eq!(books(&c, &w).await, (1000, 0, 0));
    let far = u64::MAX / 4;
    assert!(
        a.lease(&w, a.replica(), 400, 1, far)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        b.lease(&w, b.replica(), 400, 1, 5_000)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        a.lease(&w, a.replica(), 201, 1, far)
            .await
            .unwrap()
            .is_none(),
        "only 200 are free"
    );
    assert!(
        a.lease(&w, a.replica(), 200, 1, far)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(books(&c, &w).await, (1000, 0, 1000));

    // A's debits come out of A's lease; the same batch again changes nothing.
    let batch = [entry(10, -150, "req_a1"), entry(11, -50, "req_a2")];
    a.note_pending(&w, 200);
    assert_eq!(a.known_balance(&w), 800, "charged in memory, on its way");
    a.append_history(&batch, &[]).await.unwrap();
    a.append_history(&batch, &[]).await.unwrap();
    assert_eq!(books(&c, &w).await, (1000, 200, 800));
    assert_eq!(
        a.known_balance(&w),
        800,
        "landed once: committed, no longer pending"
    );
    // A gives back 100 it did not use; it cannot give back more than it has unused.
    assert!(a.unlease(&w, a.replica(), 100).await.unwrap().is_some());
    assert!(a.unlease(&w, a.replica(), 401).await.unwrap().is_none());
    assert_eq!(books(&c, &w).await, (1000, 200, 700));

    // B stopped beating: its lease expires and comes back whole (it used none of it).
    assert_eq!(a.recover_expired(6_000).await.unwrap(), 400);
    assert_eq!(books(&c, &w).await, (1000, 200, 300));
    // A late debit from B finds no lease: it is charged to the free balance (500 free)...
    b.append_history(&[entry(20, -120, "req_b1")], &[])
        .await
        .unwrap();
    assert_eq!(books(&c, &w).await, (1000, 320, 300));
    // ...and a window asking more than is free (380) is cut to what is free, never more: in
    // window order, the first debit whole, the second to what is left, and the ledger rows
    // say what was charged. The same window again changes nothing.
    let late = [entry(21, -250, "req_b2"), entry(22, -900, "req_b3")];
    b.append_history(&late, &[]).await.unwrap();
    b.append_history(&late, &[]).await.unwrap();
    assert_eq!(books(&c, &w).await, (1000, 700, 300));
    let rows: Vec<(String, i64)> = c
        .query(
            "SELECT reference, credits FROM ledger WHERE reference LIKE 'req_b%' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let want = [("req_b1", -120), ("req_b2", -250), ("req_b3", -130)];
    assert_eq!(rows, want.map(|(r, c)| (r.to_string(), c)));
    // A's shutdown returns the 300 it leased and did not use.
    assert_eq!(a.release_replica(a.replica()).await.unwrap(), 300);
    assert_eq!(books(&c, &w).await, (1000, 700, 0));
    let n: i64 = c
        .query_one("SELECT count(*) FROM credit_leases", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

/// Three gateways on one database, one wallet granted 10.5 worst cases, 300 concurrent chats
/// spread across them (each answer takes 6 s, so every hold is open at once even on a loaded
/// machine; a hold that ends early gives its leftover back for more calls): at most 10 are
/// served, the rest are 402 `insufficient_credits`, the simulators saw exactly the served calls,
/// and the books are exact, with every lease returned once the gateways stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_never_serve_more_than_the_balance() {
    let url = Postgres::shared().fresh_db().await;
    let on_pg = |c: &mut vectorway::config::Config| {
        c.backend = StoreBackend::Postgres(pg_config(&url));
        // 300 calls at once from one wallet: the (shared) rate limit is not under test here.
        c.limits.runtime_per_min = 1_000_000;
    };
    let mut knobs = fast_knobs();
    knobs.ttft = Duration::from_secs(6);
    let envs = [
        Env::with_knobs(knobs, on_pg).await,
        Env::with_knobs(knobs, on_pg).await,
        Env::with_knobs(knobs, on_pg).await,
    ];
    let worst = 307; // money.rs: 18 prompt tokens and 100 completion tokens of gemini-2.5-flash
    let grant = worst * 21 / 2;
    let key = envs[0].funded_key(W1, grant).await;
    // The key reaches the other gateways through the auth feed (about a second).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while envs
        .iter()
        .any(|e| e.gw().state.keys.authenticate(&key).is_err())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the key reached every gateway"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100});
    let mut calls = Vec::new();
    for i in 0..300 {
        let env = &envs[i % 3];
        let url = env.url("/v1/chat/completions");
        calls.push(spawn_chat(&env.client, url, &key, &body));
    }
    let (served, charged) = served_and_charged(calls).await;
    assert!((1..=10).contains(&served), "served {served}");
    assert!(charged <= grant, "charged {charged} of {grant}");
    let upstream: u64 = envs.iter().map(|e| e.sim.generation_count()).sum();
    assert_eq!(upstream, served, "one upstream call per served request");

    let c = raw_client(&url).await;
    let w: Wallet = W1.parse().unwrap();
    for e in &envs {
        e.gw().state.billing.journal().sync().await;
    }
    let (granted, committed, _) = books(&c, &w).await;
    assert_eq!((granted, committed), (grant as i64, charged as i64));
    let b = envs[1].gw().state.billing.balance_now(&w).await.unwrap();
    assert_eq!(
        b.balance,
        grant - charged,
        "every gateway reads the same balance"
    );
    for e in envs {
        e.stop().await;
    }
    let (_, _, leased) = books(&c, &w).await;
    assert_eq!(leased, 0, "every lease was returned at shutdown");
}

/// Starts `n` chats on `base` at once; each ends as `Some((status, body))` or, when the
/// connection broke (the gateway was killed), `None`.
fn chats(
    base: &str,
    key: &str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Option<(u16, serde_json::Value)>>> {
    let body =
        json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}).to_string();
    (0..n)
        .map(|_| {
            let (url, key, body) = (
                format!("{base}/v1/chat/completions"),
                key.to_string(),
                body.clone(),
            );
            tokio::spawn(async move {
                let r = call(http::Method::POST, &url, &[("x-api-key", &key)], body).await?;
                Some((r.status.as_u16(), r.json()))
            })
        })
        .collect()
}

/// Rounds of a replica killed under load in the test below.
const ROUNDS: usize = 10;

/// `ROUNDS` times, a replica (the real binary, a fresh one each round) is killed with SIGKILL
/// while chats are in flight: money in is not lost, no call is charged twice or past what was
/// acknowledged, the books hold after every round, and the leases come back (`amount − used`)
/// once they expire, recovered by the surviving gateway's upkeep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replicas_lease_is_recovered_and_nothing_is_charged_twice() {
    let url = Postgres::shared().fresh_db().await;
    let on_pg = |c: &mut vectorway::config::Config| {
        c.backend = StoreBackend::Postgres(pg_config(&url));
    };
    let mut knobs = fast_knobs();
    knobs.ttft = Duration::from_millis(400);
    let survivor = Env::with_knobs(knobs, on_pg).await;
    // Enough for every round's chats and for the leases the killed replicas leave out until
    // they expire (a lease grows up to 64 worst cases of 307).
    let grant = 307 * 2000;
    let key = survivor.funded_key(W1, grant).await;
    let c = raw_client(&url).await;
    let w: Wallet = W1.parse().unwrap();
    let mut acknowledged = 0u64;
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let mut doomed = Binary::start(
            dir.path(),
            &survivor.sim.base_url(),
            &[
                ("VECTORWAY_STORE__BACKEND", "postgres"),
                ("VECTORWAY_STORE__POSTGRES_URL", &url),
                // Twenty-five chats at once from one wallet: the rate limit is not under test.
                ("VECTORWAY_LIMITS__RUNTIME_PER_MIN", "1000000"),
                ("VECTORWAY_LIMITS__CONTROL_PER_MIN", "1000000"),
            ],
        );
        // The key reaches the binary through the auth feed.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let r = call(
                http::Method::GET,
                &format!("{}/v1/credits/me", doomed.base),
                &[("x-api-key", &key)],
                "",
            )
            .await;
            if r.is_some_and(|r| r.status == 200) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: the key reached the binary"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut tally = |ends: Vec<Option<(u16, serde_json::Value)>>| {
            for (status, v) in ends.into_iter().flatten() {
                assert_eq!(status, 200, "round {round}: {v}");
                acknowledged += v["usage"]["credit_cost"].as_u64().unwrap();
            }
        };
        let first = futures_util::future::join_all(chats(&doomed.base, &key, 5)).await;
        tally(first.into_iter().map(Result::unwrap).collect());
        // Under load: kill it while the next chats are with the model.
        let before = survivor.sim.generation_count();
        let flying = chats(&doomed.base, &key, 20);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while survivor.sim.generation_count() < before + 10 {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: chats reached the model"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        doomed.kill();
        tally(
            futures_util::future::join_all(flying)
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect(),
        );
        // `books` checks no overdraft, leased = Σ (amount − used) and the ledger sum rule.
        let (granted, committed, _) = books(&c, &w).await;
        assert_eq!(
            granted, grant as i64,
            "round {round}: money in is never lost"
        );
        assert!(
            committed as u64 <= acknowledged,
            "round {round}: charged {committed}, more than the {acknowledged} acknowledged"
        );
    }
    let (_, committed, _) = books(&c, &w).await;
    let twice: i64 = c
        .query_one(
            "SELECT count(*) FROM (SELECT reference FROM ledger WHERE kind = 'debit'
                                   GROUP BY reference HAVING count(*) > 1) d",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(twice, 0, "no call is charged twice");
    // The survivor's upkeep recovers the lease once it expires (10 s without a heartbeat).
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let (_, after, leased) = books(&c, &w).await;
        assert_eq!(after, committed, "nothing is charged after the kill");
        if leased == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lease was recovered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // All that was not charged is spendable again, through the survivor.
    let b = survivor.gw().state.billing.balance_now(&w).await.unwrap();
    assert_eq!(b.balance, grant - committed as u64);
    let res = survivor
        .chat(
            &key,
            json!({"messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(res.status, 200);
    survivor.stop().await;
}

/// PostgreSQL stopped and restarted under load: calls a lease covers go on being served, the
/// rest (and all of them once the replica cannot renew its leases) are clean 503
/// `store_unavailable`, never another error; once the database is back the gateway serves
/// again without a restart, and every acknowledged call is charged exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_under_load_is_503s_then_recovery_with_exact_books() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let mut pg = Postgres::start();
    let url = pg.url("postgres");
    let on_pg = |c: &mut vectorway::config::Config| {
        c.backend = StoreBackend::Postgres(pg_config(&url));
        c.limits.runtime_per_min = 1_000_000;
    };
    let env = Env::with_knobs(fast_knobs(), on_pg).await;
    let grant = 307 * 5000;
    let key = env.funded_key(W1, grant).await;
    let answers: Arc<Mutex<Vec<(u16, String, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (answers, stop, key) = (answers.clone(), stop.clone(), key.clone());
            let chat_url = env.url("/v1/chat/completions");
            tokio::spawn(async move {
                let body =
                    json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100})
                        .to_string();
                while !stop.load(Ordering::Relaxed) {
                    let Some(r) = call(
                        http::Method::POST,
                        &chat_url,
                        &[("x-api-key", &key)],
                        body.clone(),
                    )
                    .await
                    else {
                        continue;
                    };
                    let v = r.json();
                    let cost = v["usage"]["credit_cost"].as_u64().unwrap_or(0);
                    answers
                        .lock()
                        .unwrap()
                        .push((r.status.as_u16(), r.code(), cost));
                    if r.status != 200 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();
    let count = |status: u16| {
        let a = answers.lock().unwrap();
        a.iter().filter(|x| x.0 == status).count()
    };
    wait_until("calls are served", 30, || count(200) >= 20).await;
    pg.stop();
    wait_until("the outage is answered 503", 60, || count(503) >= 1).await;
    let served_before = count(200);
    pg.restart();
    wait_until("served again once the database is back", 60, || {
        count(200) > served_before + 5
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let answers = answers.lock().unwrap().clone();
    for (status, code, _) in &answers {
        assert!(
            *status == 200 || (*status == 503 && code == "store_unavailable"),
            "{status} {code}: an outage is a clean 503"
        );
    }
    let acknowledged: u64 = answers.iter().map(|a| a.2).sum();
    eprintln!(
        "{} served, {} refused with 503 across the restart",
        answers.iter().filter(|a| a.0 == 200).count(),
        answers.iter().filter(|a| a.0 == 503).count()
    );
    // The journal retries its windows until they are on disk: every acknowledged call is
    // charged, once, when the database is back.
    let c = raw_client(&url).await;
    let w: Wallet = W1.parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (granted, committed, _) = books(&c, &w).await;
        assert_eq!(granted, grant as i64, "money in is never lost");
        assert!(
            committed as u64 <= acknowledged,
            "charged {committed}, more than the {acknowledged} acknowledged"
        );
        if committed as u64 == acknowledged {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "charged {committed} of the {acknowledged} acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.stop().await;
}

/// Waits until `cond` holds, failing with `what` after `within_s` seconds.
async fn wait_until(what: &str, within_s: u64, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(within_s);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
