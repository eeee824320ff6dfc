//! Gateways sharing one PostgreSQL: memory, SIWE challenges, keys and x402 payments across replicas.
//!
//! The bounds asserted are the follow intervals (`app::MEMORY_FOLLOW_EVERY`,
//! `app::AUTH_FOLLOW_EVERY`: 500 ms plus a round trip) with room for a loaded machine; a delete
//! has no bound to allow: once the gateway that took it has answered, no gateway returns the
//! record again (each search reads its hits back from PostgreSQL).

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::{Value, json};
use vectorway::config::StoreBackend;
use vectorway::memory::{Memory, MemoryId};
use vectorway::storage::pg::PgStore;
use vectorway::wallet::Wallet;

use crate::account::Signer;
use crate::harness::{Env, Resp, W1, fast_knobs};
use crate::pg::{Postgres, pg_config};

/// What a write through one gateway may take to be searchable through another whose index of
/// that (wallet, namespace) is loaded: the follow interval, with room for a loaded machine.
const BOUND: Duration = Duration::from_secs(5);

fn w(s: &str) -> Wallet {
    s.parse().unwrap()
}

fn mem(e: &Env) -> &Memory {
    &e.gw().state.memory
}

/// `n` gateways on one fresh database, sharing what replicas behind one name must share.
async fn replicas(n: usize, tweak: impl Fn(&mut vectorway::config::Config)) -> (String, Vec<Env>) {
    let url = Postgres::shared().fresh_db().await;
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            Env::with_knobs(fast_knobs(), |c| {
                c.backend = StoreBackend::Postgres(pg_config(&url));
                c.auth.jwt_secret = Some("a-secret-all-replicas-share-0123456789".into());
                c.auth.siwe_domain = "api.example.com".into();
                c.public_base_url = Some("https://api.example.com".into());
                tweak(c);
            })
            .await,
        );
    }
    (url, out)
}

/// The ids `GET /v1/memory` returns for `q`.
async fn search(env: &Env, key: &str, q: &str) -> Vec<String> {
    search_in(env, key, q, "").await
}

/// The ids `GET /v1/memory` returns for `q` in a namespace (`""`: none).
async fn search_in(env: &Env, key: &str, q: &str, namespace: &str) -> Vec<String> {
    let q = q.replace(' ', "+");
    let path = format!("/v1/memory?q={q}&k=20&namespace={namespace}");
    let res = env
        .send(Method::GET, &path, &[("x-api-key", key)], "")
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.code());
    let matches: Vec<Value> = res.json()["matches"].as_array().unwrap().clone();
    matches
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

/// Writes through A are found through B (index loaded there: the feed; not loaded: the load),
/// and a delete answered by B is never returned by A afterwards, round after round, although
/// A's index still holds the record until its feed catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_written_on_a_is_found_on_b_and_deleted_on_b_is_never_returned_by_a() {
    let (_url, envs) = replicas(2, |_| {}).await;
    let (a, b) = (&envs[0], &envs[1]);
    // Each gateway bills the search's embedding from its own ledger (not shared yet).
    let (ka, kb) = (
        a.funded_key(W1, 10_000_000).await,
        b.funded_key(W1, 10_000_000).await,
    );
    let wallet = w(W1);

    // Not loaded on B: its first search loads the record from PostgreSQL.
    let first = mem(a).write(wallet, None, "the first note").await.unwrap();
    assert_eq!(
        search(b, &kb, "the first note").await,
        vec![first.to_string()]
    );

    // Loaded on B now: a later write reaches B's index through the feed, within the bound.
    let second = mem(a).write(wallet, None, "a second note").await.unwrap();
    let started = Instant::now();
    loop {
        if search(b, &kb, "a second note")
            .await
            .contains(&second.to_string())
        {
            break;
        }
        assert!(
            started.elapsed() < BOUND,
            "a write on A searchable on B within {BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    for round in 0..10 {
        let text = format!("round {round} of deletes");
        let id = mem(a).write(wallet, None, &text).await.unwrap().to_string();
        // Both indexes hold it: A wrote it, B read it from the feed.
        assert!(search(a, &ka, &text).await.contains(&id));
        let started = Instant::now();
        while !search(b, &kb, &text).await.contains(&id) {
            assert!(
                started.elapsed() < BOUND,
                "round {round}: not on B within {BOUND:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let del = b
            .send(
                Method::DELETE,
                &format!("/v1/memory/{id}"),
                &[("x-api-key", &kb)],
                "",
            )
            .await;
        assert_eq!(del.status, StatusCode::OK, "{}", del.code());
        // At once, before A's feed can have told its index: A never returns it.
        for _ in 0..5 {
            assert!(
                !search(a, &ka, &text).await.contains(&id),
                "round {round}: a record deleted on B came back on A"
            );
        }
        let again = a
            .send(
                Method::DELETE,
                &format!("/v1/memory/{id}"),
                &[("x-api-key", &ka)],
                "",
            )
            .await;
        assert_eq!(
            again.status,
            StatusCode::NOT_FOUND,
            "deleted once, everywhere"
        );
    }
    for e in envs {
        e.stop().await;
    }
}

/// The per-namespace cap holds across replicas writing at once: PostgreSQL keeps the newest
/// `max_records` of the (wallet, namespace), and every gateway's searches agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_holds_across_replicas_writing_at_once() {
    let (url, envs) = replicas(2, |c| c.memory.max_records = 3).await;
    let wallet = w(W1);
    let texts: Vec<String> = (0..12).map(|i| format!("capped note {i}")).collect();
    let writes = texts
        .iter()
        .enumerate()
        .map(|(i, t)| mem(&envs[i % 2]).write(wallet, Some("ns"), t));
    for id in futures_util::future::join_all(writes).await {
        id.unwrap();
    }
    let pg = PgStore::open(&pg_config(&url)).await.unwrap();
    let live = pg
        .memories_of(&wallet, &vectorway::storage::MemoryScan::All)
        .await
        .unwrap();
    assert_eq!(live.len(), 3, "exactly the cap is kept");
    let newest: Vec<[u8; 16]> = live.iter().map(|(id, _)| *id).collect();
    for e in &envs {
        let key = e.funded_key(W1, 10_000_000).await;
        let found = search_in(e, &key, "capped note", "ns").await;
        assert_eq!(found.len(), 3, "{found:?}");
        let found: Vec<[u8; 16]> = found
            .iter()
            .map(|id| *id.parse::<MemoryId>().unwrap().as_bytes())
            .collect();
        for id in &newest {
            assert!(found.contains(id), "{id:?} missing from {found:?}");
        }
    }
    for e in envs {
        e.stop().await;
    }
}

/// A challenge issued by A is accepted once, by exactly one of A, B and C, when the signed
/// message is sent to all three at once; a second sign-in through B with B's own challenge
/// works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_siwe_challenge_is_spent_once_across_three_replicas() {
    let (_url, envs) = replicas(3, |_| {}).await;
    let s = Signer::new(7);
    for round in 0..3 {
        let issuer = &envs[round % 3];
        let c = issuer
            .send(
                Method::POST,
                "/v1/auth/siwe/challenge",
                &[],
                json!({"wallet_address": s.address, "chain_id": 8453}).to_string(),
            )
            .await;
        assert_eq!(c.status, StatusCode::OK, "{}", c.code());
        let msg = c.json()["message"].as_str().unwrap().to_string();
        let body = json!({"wallet_address": s.address, "message": msg, "signature": s.sign(&msg)})
            .to_string();
        let mut tries = Vec::new();
        for e in &envs {
            for _ in 0..4 {
                tries.push(e.send(Method::POST, "/v1/auth/siwe/verify", &[], body.clone()));
            }
        }
        let answers = futures_util::future::join_all(tries).await;
        let ok = answers
            .iter()
            .filter(|r| r.status == StatusCode::OK)
            .count();
        assert_eq!(ok, 1, "round {round}: one sign-in per challenge");
        for r in answers.iter().filter(|r| r.status != StatusCode::OK) {
            assert_eq!(r.status, StatusCode::UNAUTHORIZED);
            assert_eq!(
                r.code(),
                "siwe_nonce_invalid",
                "{}",
                String::from_utf8_lossy(&r.body)
            );
        }
    }
    for e in envs {
        e.stop().await;
    }
}

/// A key created on B works on A, and revoked on B it is refused on A within the follow bound
/// (the other direction is `pg_store::keys_and_revocations_reach_the_other_gateway…`).
#[tokio::test]
async fn a_key_revoked_on_b_is_refused_on_a() {
    let (_url, envs) = replicas(2, |_| {}).await;
    let (a, b) = (&envs[0], &envs[1]);
    let key = b.funded_key(W1, 0).await;
    let hello =
        json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]});
    let started = Instant::now();
    // Known on A (402: A's ledger has no credits for it), then refused once revoked on B.
    while a.chat(&key, hello.clone()).await.status != StatusCode::PAYMENT_REQUIRED {
        assert!(started.elapsed() < BOUND, "a key created on B works on A");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(b.gw().state.keys.revoke(&w(W1), &key[3..15]).await.unwrap());
    let started = Instant::now();
    while a.chat(&key, hello.clone()).await.status != StatusCode::UNAUTHORIZED {
        assert!(
            started.elapsed() < BOUND,
            "a key revoked on B is refused on A"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for e in envs {
        e.stop().await;
    }
}

/// With the database away, memory searches and deletes and SIWE challenges answer 503
/// `store_unavailable` (not a 500, not stale results), and work again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_sign_in_answer_503_while_the_database_is_away() {
    let mut pg = Postgres::start();
    let url = pg.url("postgres");
    let env = Env::with_knobs(fast_knobs(), |c| {
        c.backend = StoreBackend::Postgres(pg_config(&url));
    })
    .await;
    let key = env.funded_key(W1, 10_000_000).await;
    let id = mem(&env)
        .write(w(W1), None, "kept through an outage")
        .await
        .unwrap();
    assert_eq!(
        search(&env, &key, "kept through an outage").await,
        vec![id.to_string()]
    );
    let challenge = json!({"wallet_address": Signer::new(9).address, "chain_id": 8453}).to_string();

    let delete_one = format!("/v1/memory/{id}");
    let calls = [
        (Method::GET, "/v1/memory?q=kept+through&k=5", String::new()),
        (Method::DELETE, delete_one.as_str(), String::new()),
        (Method::POST, "/v1/auth/siwe/challenge", challenge),
    ];
    async fn send(env: &Env, key: &str, call: &(Method, &str, String)) -> Resp {
        let (method, path, body) = call;
        env.send(method.clone(), path, &[("x-api-key", key)], body.clone())
            .await
    }

    pg.stop();
    for call in &calls {
        let res = send(&env, &key, call).await;
        assert_eq!(
            (res.status, res.code().as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            "{} {}",
            call.0,
            call.1
        );
    }

    pg.restart();
    let started = Instant::now();
    while send(&env, &key, &calls[0]).await.status != StatusCode::OK {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "back without a restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(send(&env, &key, &calls[2]).await.status, StatusCode::OK);
    assert_eq!(
        send(&env, &key, &calls[1]).await.status,
        StatusCode::OK,
        "deleted once it is back"
    );
    env.stop().await;
}

/// One x402 payment sent to three gateways at once, eight times to each: one answer and one
/// settlement, whichever gateway wins. Each gateway has its own facilitator here, so only the
/// nonce's claim in PostgreSQL stands between the payment and a second settlement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_payment_sent_to_three_gateways_eight_times_each_settles_once() {
    let (_, gws) = replicas(3, |c| c.limits.runtime_per_min = 1_000_000).await;
    let body = crate::x402::ask(false);
    for round in 0..3 {
        let (q, _) = crate::x402::quote(&gws[0], &body).await;
        let (name, header) = crate::x402::x_payment(&crate::x402::payer(), q);
        let calls = (0..24).map(|i| crate::x402::paid(&gws[i % 3], (name, header.clone()), &body));
        let answers = futures_util::future::join_all(calls).await;
        let mut ok = 0;
        for r in &answers {
            match r.status {
                StatusCode::OK => ok += 1,
                _ => assert_eq!(r.code(), "x402_nonce_reused", "round {round}: {:?}", r.body),
            }
        }
        assert_eq!(ok, 1, "round {round}: exactly one answer");
        let settled: u64 = gws.iter().map(|g| g.sim.facilitator_stats().settle).sum();
        assert_eq!(settled, round + 1, "round {round}: exactly one settlement");
    }
    for g in gws {
        g.stop().await;
    }
}

/// Every replica's console counts the calls made through every other: three calls through A
/// and two through B show up on both, with the same spend, the same grant and the same
/// calls, within the follow interval (`app::HISTORY_FOLLOW_EVERY`), and nothing is counted
/// twice (each gateway folds its own appends in at once and reads only the others').
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_of_every_replica_counts_the_calls_of_all() {
    let (_, gws) = replicas(2, |_| {}).await;
    let key = gws[0].funded_key(W1, 50_000_000).await;
    let hi = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 20});
    for (i, n) in [(0, 3), (1, 2)] {
        let mut done = 0;
        let deadline = Instant::now() + BOUND;
        while done < n {
            let r = gws[i].chat(&key, hi.clone()).await;
            // The key reaches B through the auth feed; a refused call is not charged.
            if r.status == StatusCode::UNAUTHORIZED && i == 1 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
            done += 1;
        }
    }
    for env in &gws {
        env.gw().state.billing.journal().sync().await;
    }
    let spent: u64 = gws[0].usage(W1).await.iter().map(|e| e.credits).sum();
    assert!(spent > 0);
    let row = async |env: &Env| {
        let secret = env.gw().state.admin_secret.clone();
        let r = env
            .send(
                Method::GET,
                "/admin/top-wallets?limit=5",
                &[("x-admin-secret", &secret)],
                "",
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        r.json()["wallets"][0].clone()
    };
    for env in &gws {
        let deadline = Instant::now() + BOUND;
        loop {
            let r = row(env).await;
            if r["calls"] == 5 {
                assert_eq!(r["spent"], spent, "{r}");
                assert_eq!(r["granted"], 50_000_000, "{r}");
                break;
            }
            assert!(r["calls"].as_u64().unwrap_or(0) < 5, "counted twice: {r}");
            assert!(Instant::now() < deadline, "not seen within {BOUND:?}: {r}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // A later follow adds nothing: what was read is not read again.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    for env in &gws {
        let r = row(env).await;
        assert_eq!(
            (r["calls"].as_u64(), r["spent"].as_u64()),
            (Some(5), Some(spent)),
            "{r}"
        );
    }
    for g in gws {
        g.stop().await;
    }
}
