//! Settlement intents on one PostgreSQL: a replica killed with a payment in flight leaves an
//! intent that a surviving replica claims and resolves (the nonce reconciler), exactly once, even
//! with several survivors racing for it; and an owner whose intent was claimed is fenced out.
//!
//! The bound a survivor has: the dead replica's intent lease (`INTENT_TTL_MS`, 10 s, renewed by
//! every heartbeat until the kill) plus one reconcile interval (`app::RECONCILE_EVERY`, 2 s);
//! `BOUND` allows a loaded machine three times that.

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::json;
use vectorway::config::StoreBackend;
use vectorway::payments::sign::Signer;
use vectorway::payments::unix_now;
use vectorway::simulate::facilitator::FacilitatorFaults;
use vectorway::storage::intents::{INTENT_TTL_MS, IntentPurpose, IntentRecord, IntentState};
use vectorway::storage::pg::PgStore;
use vectorway::storage::{LedgerEntry, LedgerKind, now_ms};
use vectorway::wallet::Wallet;

use crate::harness::{Binary, Env, call, eventually, fast_knobs};
use crate::pg::{Postgres, pg_config, raw_client};
use crate::pg_leases::books;
use crate::settle::x_payment;

const BOUND: Duration = Duration::from_secs(36);
/// What the simulator's facilitator funds every payer with.
const FUNDED: u64 = 1_000_000_000;

/// The facilitator moves the money on the next `/settle`, then does not answer for a minute.
fn transfer_then_silence() -> FacilitatorFaults {
    FacilitatorFaults {
        endpoint: Some("settle".into()),
        after_ms: Some(60_000),
        times: Some(1),
        ..FacilitatorFaults::default()
    }
}

/// A gateway on the database at `url`, whose upstream and facilitator are `upstream`'s (all
/// replicas must settle through one facilitator) or its own simulator's.
async fn replica(url: &str, upstream: Option<&str>) -> Env {
    let tweak = |c: &mut vectorway::config::Config| {
        c.backend = StoreBackend::Postgres(pg_config(url));
    };
    match upstream {
        Some(u) => Env::against(u, tweak).await,
        None => Env::with_knobs(fast_knobs(), tweak).await,
    }
}

/// The binary on the database at `url`, settling through `sim_base`, patient with the
/// facilitator so that only the kill ends its wait.
fn doomed(dir: &std::path::Path, sim_base: &str, url: &str) -> Binary {
    Binary::start(
        dir,
        sim_base,
        &[
            ("VECTORWAY_STORE__BACKEND", "postgres"),
            ("VECTORWAY_STORE__POSTGRES_URL", url),
            ("VECTORWAY_X402__SETTLE_TIMEOUT_MS", "120000"),
        ],
    )
}

/// The credits of `w`'s ledger entries of `kind` in the shared database, newest first.
async fn of_kind(env: &Env, w: &Wallet, kind: LedgerKind) -> Vec<i64> {
    let all = env.gw().state.store.ledger_of(w).await.unwrap();
    all.into_iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.credits)
        .collect()
}

/// Waits (up to `BOUND`) until `w`'s ledger in the shared database has an entry of `kind`.
async fn wait_ledger(env: &Env, w: &Wallet, kind: LedgerKind) -> Vec<i64> {
    let deadline = Instant::now() + BOUND;
    loop {
        let found = of_kind(env, w, kind).await;
        if !found.is_empty() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no {kind:?} for {w} within {BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `path` with `pay` to the doomed binary and waits until the facilitator has moved the
/// money (its answer held back); kills the binary there and checks the client got nothing.
async fn pay_and_kill(gw: &mut Binary, env: &Env, path: &str, pay: &str, body: serde_json::Value) {
    let url = format!("{}{path}", gw.base);
    let pay = pay.to_string();
    let waiting = tokio::spawn(async move {
        call(Method::POST, &url, &[("x-payment", &pay)], body.to_string()).await
    });
    assert!(
        eventually(Duration::from_secs(20), || env
            .sim
            .facilitator_stats()
            .settled
            == 1)
        .await,
        "the transfer happened"
    );
    gw.kill(); // SIGKILL between the transfer and the credit
    assert!(waiting.await.unwrap().is_none(), "the client got no answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_top_up_whose_replica_died_mid_settlement_is_credited_once_by_another() {
    let url = Postgres::shared().fresh_db().await;
    let b = replica(&url, None).await;
    let dir = tempfile::tempdir().unwrap();
    let mut a = doomed(dir.path(), &b.sim.base_url(), &url);
    let s = Signer::random().unwrap();
    let w = s.address();
    let pay = x_payment(&s, 2_000_000);
    b.sim.set_facilitator_faults(transfer_then_silence());
    pay_and_kill(&mut a, &b, "/v1/topup", &pay, json!({"amount": 2})).await;
    // The intent is in the shared database, pending: written by A before it settled.
    let open = b.gw().state.store.intents().await.unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!((open[0].payer, &open[0].state), (w, &IntentState::Pending));
    b.sim.set_facilitator_faults(FacilitatorFaults::default());
    // B claims it once A's lease runs out, learns the money moved, and credits it.
    assert_eq!(
        wait_ledger(&b, &w, LedgerKind::Topup).await,
        vec![2_000_000]
    );
    assert!(
        b.gw().state.store.intents().await.unwrap().is_empty(),
        "the intent is finished"
    );
    assert_eq!(b.sim.facilitator_stats().settled, 1, "no second transfer");
    assert_eq!(FUNDED - b.sim.balance(&w), 2_000_000, "the payer paid once");
    // The nonce stays spent: the same payment through B is refused and moves nothing.
    let again = b
        .send(
            Method::POST,
            "/v1/topup",
            &[("x-payment", &pay)],
            json!({"amount": 2}).to_string(),
        )
        .await;
    assert_eq!(
        (again.status, again.code().as_str()),
        (StatusCode::CONFLICT, "x402_nonce_reused")
    );
    assert_eq!(b.sim.facilitator_stats().settled, 1);
    // Given every chance to credit it twice, nobody does.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let c = raw_client(&url).await;
    let (granted, committed, _) = books(&c, &w).await;
    assert_eq!((granted, committed), (2_000_000, 0));
}

/// A paid call whose replica died during its settlement: its answer was withheld, so all of
/// the payment comes back as a refund, once, although two survivors look for orphans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_call_whose_replica_died_is_refunded_once_while_two_survivors_race() {
    let url = Postgres::shared().fresh_db().await;
    let b = replica(&url, None).await;
    let c = replica(&url, Some(&b.sim.base_url())).await;
    let dir = tempfile::tempdir().unwrap();
    let mut a = doomed(dir.path(), &b.sim.base_url(), &url);
    let s = Signer::random().unwrap();
    let w = s.address();
    let ask = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8,
        "memory_read": false, "memory_write": false});
    b.sim.set_facilitator_faults(transfer_then_silence());
    let pay = x_payment(&s, 1_000);
    pay_and_kill(&mut a, &b, "/v1/chat/completions", &pay, ask).await;
    let open = c.gw().state.store.intents().await.unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    assert!(
        matches!(open[0].purpose, IntentPurpose::Call { kept: None, .. }),
        "{open:?}"
    );
    b.sim.set_facilitator_faults(FacilitatorFaults::default());
    assert_eq!(wait_ledger(&c, &w, LedgerKind::Refund).await, vec![1_000]);
    // Both survivors keep reconciling for a few more passes: still one refund, one transfer.
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let refunds = of_kind(&b, &w, LedgerKind::Refund).await;
    assert_eq!(refunds, vec![1_000], "one refund");
    assert!(c.gw().state.store.intents().await.unwrap().is_empty());
    assert_eq!(b.sim.facilitator_stats().settled, 1);
    assert_eq!(FUNDED - b.sim.balance(&w), 1_000);
    let db = raw_client(&url).await;
    assert_eq!(books(&db, &w).await.0, 1_000);
}

fn intent(id: &str, payer: Wallet) -> IntentRecord {
    IntentRecord {
        id: id.into(),
        payer,
        paid: 7,
        valid_before: unix_now() + 300,
        request: serde_json::Value::Null,
        network: "base-sepolia".into(),
        purpose: IntentPurpose::Credit {
            kind: LedgerKind::Topup,
            note: "x402 topup".into(),
            to: None,
        },
        state: IntentState::Settled {
            transaction: "0xfeed".into(),
        },
        created_ms: now_ms(),
    }
}

fn credit(payer: Wallet, seq: u64) -> LedgerEntry {
    LedgerEntry {
        seq,
        ts_ms: now_ms(),
        wallet: payer,
        kind: LedgerKind::Topup,
        credits: 7,
        reference: Some("0xfeed".into()),
        note: None,
    }
}

/// What one reconcile pass of `s` claims now: the ids.
async fn claims(s: &PgStore) -> Vec<String> {
    let now = now_ms();
    let got = s.claim_orphans(now, now + INTENT_TTL_MS, 64).await.unwrap();
    got.into_iter().map(|r| r.id).collect()
}

/// How many ledger rows `w` has.
async fn rows(db: &tokio_postgres::Client, w: &Wallet) -> i64 {
    db.query_one(
        "SELECT count(*) FROM ledger WHERE wallet = $1",
        &[&w.as_bytes().as_slice()],
    )
    .await
    .unwrap()
    .get(0)
}

/// The statements: an orphan goes to exactly one of many concurrent claims; a live owner's
/// intent is not claimable, one that shut down is at once; the old owner can no longer rewrite,
/// remove or credit what was claimed; the new owner's closing credit lands once; an unresolved
/// intent waits for the operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_goes_to_one_of_many_racing_claims_and_its_old_owner_is_fenced() {
    let url = Postgres::shared().fresh_db().await;
    let cfg = pg_config(&url);
    let a = PgStore::open(&cfg).await.unwrap();
    let b = PgStore::open(&cfg).await.unwrap();
    let c = PgStore::open(&cfg).await.unwrap();
    let payer = Wallet([7; 20]);
    // A live owner's intent (its lease runs) is not taken; an expired one is, by exactly one.
    assert!(
        a.put_intent(&intent("live", payer), now_ms() + INTENT_TTL_MS)
            .await
            .unwrap()
    );
    assert!(
        a.put_intent(&intent("orphan", payer), now_ms() - 1)
            .await
            .unwrap()
    );
    let mut racers = Vec::new();
    for i in 0..16 {
        let s = if i % 2 == 0 { b.clone() } else { c.clone() };
        racers.push(tokio::spawn(async move {
            (s.replica().to_string(), claims(&s).await)
        }));
    }
    let mut winners = Vec::new();
    for r in racers {
        let (who, got) = r.await.unwrap();
        winners.extend(got.into_iter().map(|id| (who.clone(), id)));
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(winners[0].1, "orphan");
    let (winner, loser) = if winners[0].0 == b.replica() {
        (&b, &c)
    } else {
        (&c, &b)
    };
    // The old owner is fenced out of the claimed intent: it no longer holds it, and cannot
    // rewrite, remove or credit it.
    assert!(a.intent("orphan").await.unwrap().is_none());
    assert!(winner.intent("orphan").await.unwrap().is_some());
    assert!(
        !a.put_intent(&intent("orphan", payer), now_ms() + 5_000)
            .await
            .unwrap()
    );
    assert!(!a.remove_intent("orphan").await.unwrap());
    assert!(!a.append_closing(&credit(payer, 1), "orphan").await.unwrap());
    assert!(
        !loser
            .append_closing(&credit(payer, 2), "orphan")
            .await
            .unwrap()
    );
    let db = raw_client(&url).await;
    assert_eq!(rows(&db, &payer).await, 0, "a fenced credit writes nothing");
    // The owner's closing credit lands with the intent's removal, once.
    assert!(
        winner
            .append_closing(&credit(payer, 3), "orphan")
            .await
            .unwrap()
    );
    assert!(
        !winner
            .append_closing(&credit(payer, 4), "orphan")
            .await
            .unwrap()
    );
    assert_eq!(rows(&db, &payer).await, 1);
    assert!(winner.intent("orphan").await.unwrap().is_none());
    assert_eq!(books(&db, &payer).await.0, 7);
    // A replica that shuts down lets its intents go at once.
    assert!(claims(&b).await.is_empty());
    a.release_replica(a.replica()).await.unwrap();
    assert_eq!(claims(&b).await, ["live"]);
    // B's heartbeat keeps it: C cannot take it while B beats.
    b.heartbeat(b.replica(), now_ms(), now_ms() + INTENT_TTL_MS)
        .await
        .unwrap();
    assert!(claims(&c).await.is_empty());
    // An unresolved intent waits for the operator: never claimed, however old its lease.
    let mut stuck = intent("stuck", payer);
    stuck.state = IntentState::Unresolved {
        reason: "expired".into(),
    };
    assert!(a.put_intent(&stuck, 0).await.unwrap());
    assert!(claims(&c).await.is_empty());
    assert_eq!(c.intents().await.unwrap().len(), 2);
}
