//! The PostgreSQL backend against a real cluster: migrations, each moved record kind, and gateways.

use std::time::Duration;

use http::{Method, StatusCode};
use vectorway::config::StoreBackend;
use vectorway::storage::pg::{ChangeFeed, DbError, PgStore, migrate};
use vectorway::storage::{IdemBegin, IdemRecord, KeyRecord, RefreshRecord, StorageError};
use vectorway::wallet::Wallet;

use crate::harness::{Env, W1, W2, call};
use crate::pg::{Postgres, pg_config, raw_client};

async fn store() -> (String, PgStore) {
    let url = Postgres::shared().fresh_db().await;
    let s = PgStore::open(&pg_config(&url)).await.unwrap();
    (url, s)
}

fn w(s: &str) -> Wallet {
    s.parse().unwrap()
}

#[tokio::test]
async fn replicas_starting_together_apply_each_migration_once() {
    let url = Postgres::shared().fresh_db().await;
    let opens = (0..4).map(|_| {
        let cfg = pg_config(&url);
        tokio::spawn(async move { PgStore::open(&cfg).await.map(drop) })
    });
    for r in futures_util::future::join_all(opens).await {
        r.unwrap().unwrap();
    }
    let c = raw_client(&url).await;
    let rows = c
        .query("SELECT version FROM schema_migrations", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), migrate::MIGRATIONS.len());
    let st = migrate::status(&c).await.unwrap();
    assert_eq!(st.applied.last().copied(), Some(migrate::latest()));
    assert!(st.pending.is_empty() && st.unknown.is_empty());
    // Opening again applies nothing.
    PgStore::open(&pg_config(&url)).await.unwrap();
    assert_eq!(
        c.query("SELECT version FROM schema_migrations", &[])
            .await
            .unwrap()
            .len(),
        migrate::MIGRATIONS.len()
    );
}

#[tokio::test]
async fn a_schema_newer_than_the_binary_is_refused() {
    let (url, _s) = store().await;
    let c = raw_client(&url).await;
    c.execute(
        "INSERT INTO schema_migrations (version, name) VALUES (9999, 'from the future')",
        &[],
    )
    .await
    .unwrap();
    match PgStore::open(&pg_config(&url)).await {
        Err(StorageError::Db(DbError::Schema(m))) => assert!(m.contains("9999"), "{m}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
    // The gateway refuses to start on it, with the same message.
    let mut config = vectorway::config::Config::for_tests(
        tempfile::tempdir().unwrap().path(),
        "http://127.0.0.1:9",
    );
    config.backend = StoreBackend::Postgres(pg_config(&url));
    let err = vectorway::app::start(config).await.err().unwrap();
    assert!(
        err.to_string().contains("newer than this gateway knows"),
        "{err}"
    );
}

#[tokio::test]
async fn accounts_and_keys() {
    let (_url, s) = store().await;
    let (a, created) = s.ensure_account(&w(W1), 100).await.unwrap();
    assert!(created && a.created_at == 100);
    let (a, created) = s.ensure_account(&w(W1), 200).await.unwrap();
    assert!(!created && a.created_at == 100, "the first creation stays");
    assert!(s.account(&w(W2)).await.unwrap().is_none());

    let key = KeyRecord {
        key_id: "abcdefghij12".into(),
        wallet: w(W1),
        secret_sha256: "00".repeat(32),
        key_name: "k".into(),
        created_at: 5,
        last_used_at: Some(10),
        revoked_at: None,
    };
    s.put_key(&key).await.unwrap();
    // An older snapshot does not move last_used_at back; a revocation stays.
    s.put_key(&KeyRecord {
        revoked_at: Some(20),
        ..key.clone()
    })
    .await
    .unwrap();
    s.touch_key(&KeyRecord {
        last_used_at: Some(7),
        ..key.clone()
    })
    .await
    .unwrap();
    let keys = s.all_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(
        (keys[0].last_used_at, keys[0].revoked_at),
        (Some(10), Some(20))
    );
    s.touch_key(&KeyRecord {
        last_used_at: Some(30),
        ..key.clone()
    })
    .await
    .unwrap();
    assert_eq!(s.all_keys().await.unwrap()[0].last_used_at, Some(30));
    // A deleted key stays deleted when an old touch arrives.
    s.remove_key(&key.key_id).await.unwrap();
    s.touch_key(&key).await.unwrap();
    assert!(s.all_keys().await.unwrap().is_empty());
    s.remove_account(&w(W1)).await.unwrap();
    assert!(s.account(&w(W1)).await.unwrap().is_none());
}

#[tokio::test]
async fn an_x402_nonce_sent_to_three_replicas_is_claimed_once() {
    let (url, _s) = store().await;
    let replicas: Vec<PgStore> = (0..3)
        .map(|_| PgStore::connect(&pg_config(&url)).unwrap())
        .collect();
    let key = [7u8; 80];
    let tries = (0..24).map(|i| {
        let r = replicas[i % 3].clone();
        tokio::spawn(async move { r.claim_x402_nonce(&key, 1_000).await.unwrap() })
    });
    let won = futures_util::future::join_all(tries)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(won, 1, "exactly one claim wins");
    // Released (nothing moved), it can be claimed again; pruning forgets expired ones.
    assert!(replicas[1].release_x402_nonce(&key).await.unwrap());
    assert!(!replicas[1].release_x402_nonce(&key).await.unwrap());
    assert!(replicas[2].claim_x402_nonce(&key, 1_000).await.unwrap());
    assert!(
        replicas[0]
            .claim_x402_nonce(&[8u8; 80], 5_000)
            .await
            .unwrap()
    );
    assert_eq!(replicas[0].prune_x402_nonces(2_000).await.unwrap(), 1);
    assert!(
        !replicas[0]
            .claim_x402_nonce(&[8u8; 80], 5_000)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_refresh_token_spent_on_two_replicas_at_once_is_reuse_on_one() {
    let (url, a) = store().await;
    let b = PgStore::connect(&pg_config(&url)).unwrap();
    let rec = RefreshRecord {
        family: "fam".into(),
        wallet: w(W1),
        expires_at: 99,
        used: false,
    };
    a.put_refresh("jti", &rec).await.unwrap();
    let (x, y) = tokio::join!(a.spend_refresh("jti"), b.spend_refresh("jti"));
    let (x, y) = (x.unwrap().unwrap(), y.unwrap().unwrap());
    assert!(
        x.used != y.used,
        "one spend is first, the other sees it used"
    );
    assert_eq!((x.family.as_str(), x.wallet), ("fam", w(W1)));
    assert!(a.spend_refresh("nope").await.unwrap().is_none());
    b.revoke_family("fam", 5).await.unwrap();
    b.revoke_family("fam", 6).await.unwrap();
    assert_eq!(a.revoked_families().await.unwrap(), vec!["fam".to_string()]);
}

#[tokio::test]
async fn idempotency_claims_replays_and_conflicts() {
    let (_url, s) = store().await;
    let k = b"slot-1".as_slice();
    let fresh = |r: IdemBegin| matches!(r, IdemBegin::Fresh);
    assert!(fresh(s.idem_begin(k, "h1", 100, 0, 0).await.unwrap()));
    assert!(matches!(
        s.idem_begin(k, "h1", 101, 0, 0).await.unwrap(),
        IdemBegin::InProgress
    ));
    assert!(matches!(
        s.idem_begin(k, "h2", 101, 0, 0).await.unwrap(),
        IdemBegin::Conflict
    ));
    // A claim older than `claims_before` is abandoned: taken over.
    assert!(fresh(s.idem_begin(k, "h1", 102, 0, 101).await.unwrap()));
    let answer = IdemRecord {
        body_sha256: "h1".into(),
        status: 201,
        body: "{\"ok\":true}".into(),
        created_at: 103,
    };
    s.idem_finish(k, Some(&answer)).await.unwrap();
    match s.idem_begin(k, "h1", 104, 0, 0).await.unwrap() {
        IdemBegin::Replay(r) => assert_eq!((r.status, r.body.as_str()), (201, "{\"ok\":true}")),
        other => panic!("expected a replay, got {other:?}"),
    }
    // An answer older than `expire_before` is gone.
    assert!(fresh(s.idem_begin(k, "h3", 105, 104, 0).await.unwrap()));
    s.idem_finish(k, None).await.unwrap();
    assert!(fresh(s.idem_begin(k, "h4", 106, 0, 0).await.unwrap()));
    assert!(fresh(s.idem_begin(b"slot-2", "h", 1, 0, 0).await.unwrap()));
    assert_eq!(
        s.idem_sweep(0, 50).await.unwrap(),
        1,
        "only slot-2's claim is stale"
    );
}

#[tokio::test]
async fn an_unreachable_database_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = pg_config(&format!("postgres://vw@127.0.0.1:{port}/x"));
    cfg.connect_timeout = Duration::from_millis(500);
    let s = PgStore::connect(&cfg).unwrap();
    assert!(matches!(
        s.check().await,
        Err(StorageError::Db(DbError::Unavailable(_)))
    ));
    assert!(matches!(
        PgStore::open(&cfg).await,
        Err(StorageError::Db(DbError::Unavailable(_)))
    ));
}

/// A gateway on PostgreSQL: a key created through one gateway authenticates on a second one
/// started on the same database (with a data directory of its own), and `/readyz` follows the
/// database down and back up without a restart.
#[tokio::test]
async fn gateways_share_keys_and_readiness_follows_the_database() {
    let mut pg = Postgres::start();
    let url = pg.url("postgres");
    let on_pg = |c: &mut vectorway::config::Config| {
        c.backend = StoreBackend::Postgres(pg_config(&url));
    };
    let a = Env::with_knobs(crate::harness::fast_knobs(), on_pg).await;
    let key = a.funded_key(W1, 0).await;
    let b = Env::with_knobs(crate::harness::fast_knobs(), on_pg).await;
    // Known to B: the answer is about money (B's ledger has none of A's grant yet), not the key.
    let res = b
        .chat(&key, serde_json::json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(res.status, StatusCode::PAYMENT_REQUIRED, "{}", res.code());
    let wrong = format!("{}x", &key[..key.len() - 1]);
    let res = b
        .chat(&wrong, serde_json::json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);

    let ready = |env: &Env| {
        let u = env.url("/readyz");
        async move { call(Method::GET, &u, &[], "").await.unwrap() }
    };
    assert_eq!(ready(&a).await.status, StatusCode::OK);
    let pair = a.gw().state.sessions.issue(&w(W2)).await.unwrap();
    pg.stop();
    let down = ready(&a).await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        down.json()["store"]
            .as_str()
            .unwrap()
            .contains("unavailable")
    );
    // A request that needs the database is a clean 503 with a stable code, whichever layer's
    // error carries it (here the session layer's), never a 500.
    let refresh = a
        .send(
            Method::POST,
            "/v1/auth/refresh",
            &[("content-type", "application/json")],
            serde_json::json!({"refresh_token": pair.refresh_token}).to_string(),
        )
        .await;
    assert_eq!(
        (refresh.status, refresh.code()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable".to_string()
        ),
        "{:?}",
        refresh.body
    );
    pg.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while ready(&a).await.status != StatusCode::OK {
        assert!(
            std::time::Instant::now() < deadline,
            "ready again once the database is back, without a restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.stop().await;
    b.stop().await;
}

/// Polls `f` every 50 ms until it is true or `within` passes.
async fn within<F: std::future::Future<Output = bool>>(
    within: Duration,
    mut f: impl FnMut() -> F,
) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two running gateways on one database: a key created on A works on B, a key revoked on A is
/// refused on B, and a session family revoked on B is refused on A, each within the follow
/// interval (`app::AUTH_FOLLOW_EVERY`, 500 ms; 5 s allowed here for a loaded machine).
#[tokio::test]
async fn keys_and_revocations_reach_the_other_gateway_without_a_restart() {
    let url = Postgres::shared().fresh_db().await;
    // Replicas share the session signing secret (each would make its own in its data dir) and
    // the public name sessions are bound to (`aud`, `iss`), as a deployment behind one name does.
    let on_pg = |c: &mut vectorway::config::Config| {
        c.backend = StoreBackend::Postgres(pg_config(&url));
        c.auth.jwt_secret = Some("a-secret-all-replicas-share-0123456789".into());
        c.auth.siwe_domain = "api.example.com".into();
        c.public_base_url = Some("https://api.example.com".into());
    };
    let a = Env::with_knobs(crate::harness::fast_knobs(), on_pg).await;
    let b = Env::with_knobs(crate::harness::fast_knobs(), on_pg).await;
    let hello = serde_json::json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]});
    // Created on A after B started: B learns it from the feed (402: known key, no credits).
    let key = a.funded_key(W1, 0).await;
    let bound = Duration::from_secs(5);
    assert!(
        within(bound, || async {
            b.chat(&key, hello.clone()).await.status == StatusCode::PAYMENT_REQUIRED
        })
        .await,
        "a key created on A works on B"
    );
    let key_id = &key[3..15];
    assert!(a.gw().state.keys.revoke(&w(W1), key_id).await.unwrap());
    assert!(
        within(bound, || async {
            b.chat(&key, hello.clone()).await.status == StatusCode::UNAUTHORIZED
        })
        .await,
        "a key revoked on A is refused on B"
    );

    let pair = a.gw().state.sessions.issue(&w(W2)).await.unwrap();
    assert!(
        a.gw()
            .state
            .sessions
            .authenticate(&pair.access_token)
            .is_ok()
    );
    b.gw()
        .state
        .sessions
        .revoke(&pair.refresh_token)
        .await
        .unwrap();
    assert!(
        within(bound, || async {
            a.gw()
                .state
                .sessions
                .authenticate(&pair.access_token)
                .is_err()
        })
        .await,
        "a family revoked on B is refused on A"
    );
    a.stop().await;
    b.stop().await;
}

/// Memory rows: the feed reports writes (values only for the wallets asked about) and
/// deletes (of every wallet), a deleted record is never read back or resurrected by a
/// rewrite, tombstones are pruned only past their age, and a SIWE challenge is spent once,
/// never after it expired.
#[tokio::test]
async fn memory_rows_the_feed_tombstones_and_siwe_challenges() {
    let (_, s) = store().await;
    let (a, b) = (w(W1), w(W2));
    let mut feed = ChangeFeed::new(s.memory_cursor().await.unwrap(), Duration::ZERO);
    assert!(
        s.put_memory(&a, &[1; 16], None, b"one", 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.put_memory(&b, &[2; 16], Some("ns"), b"two", 0)
            .await
            .unwrap()
            .is_empty()
    );
    let ch = s.memory_changes(&mut feed, &[a]).await.unwrap();
    assert_eq!(ch.len(), 1, "B's write is not asked about: {ch:?}");
    assert_eq!(
        (ch[0].wallet, ch[0].id, ch[0].value.as_deref()),
        (a, [1; 16], Some(&b"one"[..]))
    );
    assert!(s.memory_changes(&mut feed, &[a]).await.unwrap().is_empty());

    assert!(s.delete_memory(&b, &[2; 16]).await.unwrap());
    assert!(
        !s.delete_memory(&b, &[2; 16]).await.unwrap(),
        "deleted once"
    );
    assert!(
        !s.delete_memory(&a, &[2; 16]).await.unwrap(),
        "not A's record"
    );
    assert!(!s.replace_memory(&b, &[2; 16], b"back").await.unwrap());
    assert_eq!(s.get_memory(&b, &[2; 16]).await.unwrap(), None);
    let ch = s.memory_changes(&mut feed, &[a]).await.unwrap();
    assert_eq!(ch.len(), 1);
    assert_eq!(
        (
            ch[0].wallet,
            ch[0].namespace.as_deref(),
            ch[0].value.is_none()
        ),
        (b, Some("ns"), true)
    );

    // A tombstone outlives a prune of older ones, and goes with a prune past it.
    let now = vectorway::storage::now_ms();
    assert_eq!(s.prune_memory_tombstones(now - 60_000).await.unwrap(), 0);
    assert_eq!(s.prune_memory_tombstones(now + 60_000).await.unwrap(), 1);
    assert_eq!(
        s.get_memories(&a, &[[1; 16], [2; 16]]).await.unwrap().len(),
        1
    );

    s.put_siwe_nonce("n1", &a, 100, 400).await.unwrap();
    s.put_siwe_nonce("n2", &a, 100, 400).await.unwrap();
    let takes = (0..6).map(|_| s.take_siwe_nonce("n1", 200));
    let taken = futures_util::future::join_all(takes).await;
    assert_eq!(
        taken
            .iter()
            .filter(|t| t.as_ref().unwrap() == &Some(a))
            .count(),
        1
    );
    assert_eq!(s.take_siwe_nonce("n2", 400).await.unwrap(), None, "expired");
    assert_eq!(
        s.take_siwe_nonce("n2", 200).await.unwrap(),
        None,
        "spent by the expired try"
    );
}
