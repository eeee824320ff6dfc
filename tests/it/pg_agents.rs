//! Agent accounts on one PostgreSQL: an agent registered through one gateway is funded through
//! another and kept by both, an unfunded one is swept once, and a pin taken through one gateway
//! holds off every other gateway's sweep (the `pinned_until` / `doomed` protocol).

use std::time::{Duration, Instant};

use http::StatusCode;
use vectorway::config::StoreBackend;
use vectorway::payments::sign::Signer;
use vectorway::storage::agents::AgentRecord;
use vectorway::storage::pg::PgStore;
use vectorway::storage::pg::agents::PIN_TTL_MS;
use vectorway::storage::{LedgerKind, now_ms};
use vectorway::wallet::Wallet;

use crate::agents::{account, payment, register, topup};
use crate::harness::{Env, fast_knobs};
use crate::pg::{Postgres, pg_config};

/// A gateway on `url` whose agents are due 2 s after registering, swept every 20 ms, settling
/// through `upstream` (one facilitator for all) or its own simulator.
async fn replica(url: &str, upstream: Option<&str>) -> Env {
    let tweak = |c: &mut vectorway::config::Config| {
        c.backend = StoreBackend::Postgres(pg_config(url));
        c.agents.deposit_deadline = Duration::from_secs(2);
        c.agents.sweep_interval = Duration::from_millis(20);
    };
    match upstream {
        Some(u) => Env::against(u, tweak).await,
        None => Env::with_knobs(fast_knobs(), tweak).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_registered_on_a_is_funded_through_b_and_the_unfunded_one_is_swept_once() {
    let url = Postgres::shared().fresh_db().await;
    let a = replica(&url, None).await;
    let b = replica(&url, Some(&a.sim.base_url())).await;
    let funded = register(&a, "funded").await;
    let unfunded = register(&a, "unfunded").await;
    let (f, u) = (account(&funded), account(&unfunded));
    let res = topup(
        &b,
        funded["uuid"].as_str().unwrap(),
        1,
        &payment(&Signer::random().unwrap(), 1_000_000),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{:?}", res.body);
    // Funded through B, permanent for A at once: it is one row.
    let seen_by_a = a.gw().state.agents.get(&f).await.unwrap().unwrap();
    assert!(seen_by_a.funded_ms.is_some());
    // Past the deadline both sweepers run; the unfunded agent goes, the funded one stays.
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.gw().state.agents.get(&u).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "swept");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(b.gw().state.agents.get(&u).await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(200)).await;
    for env in [&a, &b] {
        assert!(env.gw().state.agents.get(&f).await.unwrap().is_some());
    }
    let ledger = a.gw().state.store.ledger_of(&f).await.unwrap();
    assert_eq!(
        ledger
            .iter()
            .map(|e| (e.kind, e.credits))
            .collect::<Vec<_>>(),
        [(LedgerKind::Topup, 1_000_000)]
    );
    let swept = a.gw().state.agents.passes() + b.gw().state.agents.passes();
    assert!(swept > 2, "both sweepers ran: {swept}");
}

fn agent(n: u8, deadline_ms: u64) -> AgentRecord {
    AgentRecord {
        uuid: format!("u{n}"),
        name: format!("agent {n}"),
        account: Wallet([n; 20]),
        created_ms: 1,
        deadline_ms,
        funded_ms: None,
    }
}

/// The statements: a pin through B keeps A's sweep off; a doom through A keeps B's pin and
/// funding off; a sweep that died after dooming is finished by the next; funding is once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_on_one_replica_holds_off_the_sweep_on_another() {
    let url = Postgres::shared().fresh_db().await;
    let cfg = pg_config(&url);
    let a = PgStore::open(&cfg).await.unwrap();
    let b = PgStore::open(&cfg).await.unwrap();
    let (x, y, z) = (agent(1, 10), agent(2, 20), agent(3, u64::MAX / 4));
    for r in [&x, &y, &z] {
        assert!(a.insert_agent(r).await.unwrap());
    }
    assert!(!b.insert_agent(&x).await.unwrap(), "one record per account");
    assert_eq!(b.unfunded_agents().await.unwrap(), 3);
    let now = now_ms();
    assert_eq!(b.agents_due(now).await.unwrap(), [x.account, y.account]);
    // B pins X (money on its way): A's sweep cannot doom it until the pin lapses.
    assert!(b.pin_agent(&x.account, now + PIN_TTL_MS).await.unwrap());
    assert!(!a.doom_agent(&x.account, now).await.unwrap());
    assert!(
        a.doom_agent(&x.account, now + PIN_TTL_MS + 1)
            .await
            .unwrap()
    );
    // A dooms Y: B can neither pin nor fund it (its record stays until the sweep removes it).
    assert!(a.doom_agent(&y.account, now).await.unwrap());
    assert!(!b.pin_agent(&y.account, now + PIN_TTL_MS).await.unwrap());
    assert!(!b.mark_agent_funded(&y.account, now).await.unwrap());
    assert_eq!(b.agent(&y.account).await.unwrap(), Some(y.clone()));
    // A sweep that died after dooming is finished by the next pass (the row is still due).
    assert!(b.agents_due(now).await.unwrap().contains(&y.account));
    assert!(b.doom_agent(&y.account, now).await.unwrap());
    assert_eq!(b.remove_agent(&y.account).await.unwrap(), Some(y.clone()));
    assert_eq!(a.remove_agent(&y.account).await.unwrap(), None);
    // Z is funded once; a funded agent is never doomed and is no longer due.
    assert!(b.mark_agent_funded(&z.account, 5).await.unwrap());
    assert!(!a.mark_agent_funded(&z.account, 6).await.unwrap());
    assert_eq!(
        a.agent(&z.account).await.unwrap().unwrap().funded_ms,
        Some(5)
    );
    assert!(!a.doom_agent(&z.account, u64::MAX / 2).await.unwrap());
    assert_eq!(a.agents_due(u64::MAX / 2).await.unwrap(), [x.account]);
    assert_eq!(a.unfunded_agents().await.unwrap(), 1);
}
