//! Agent registry tests: derived ids, the unfunded cap, and the sweep against pins, intents and credits.

use std::time::Duration;

use super::*;
use crate::memory::{Embedder, IndexParams, LocalEmbedder};
use crate::storage::LedgerKind;
use crate::storage::intents::{IntentPurpose, IntentRecord, IntentState};
use crate::storage::journal::Journal;
use crate::storage::pages::UsageFilter;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Storage,
    keys: ApiKeys,
    memory: Memory,
    billing: Arc<Billing>,
    agents: Arc<Agents>,
}

fn config(deadline: Duration, max_unfunded: usize) -> AgentsConfig {
    AgentsConfig {
        deposit_deadline: deadline,
        sweep_interval: Duration::from_secs(1),
        max_unfunded,
        register_per_min: 5,
    }
}

async fn fixture(deadline: Duration, max_unfunded: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Storage::embedded(crate::storage::Store::open(dir.path()).unwrap());
    let (journal, run) = Journal::new(store.clone(), Duration::from_millis(1));
    #[expect(clippy::disallowed_methods, reason = "the test owns its journal task")]
    tokio::spawn(run);
    let keys = ApiKeys::load(store.clone(), journal.clone()).await.unwrap();
    let billing = Arc::new(
        Billing::recover(
            store.clone(),
            journal,
            Duration::from_secs(60),
            crate::effects::Effects::new(),
        )
        .await
        .unwrap(),
    );
    let memory = Memory::new(
        crate::storage::Store::clone(&store),
        Embedder::Local(LocalEmbedder::new(64)),
        IndexParams::default(),
    );
    let agents = Arc::new(
        Agents::new(store.clone(), config(deadline, max_unfunded))
            .await
            .unwrap(),
    );
    Fixture {
        _dir: dir,
        store,
        keys,
        memory,
        billing,
        agents,
    }
}

impl Fixture {
    async fn sweep(&self) -> Swept {
        self.agents
            .sweep(&self.keys, &self.memory, &self.billing)
            .await
            .unwrap()
    }
}

#[test]
fn ids_are_derived_from_the_uuid_under_a_domain_tag() {
    let u = uuid::Uuid::parse_str("a1b2c3d4-e5f6-4789-8abc-def012345678").unwrap();
    let a = account_of(&u);
    assert_eq!(a, account_of(&u), "deterministic");
    // Not the bare hash of the UUID: the domain tag separates it from every other use.
    let bare = crate::crypto::keccak256(u.as_bytes());
    assert_ne!(a.as_bytes()[..], bare[12..]);
    assert_eq!(parse_ref(&u.to_string()), Some(a));
    assert_eq!(parse_ref(&u.to_string().to_uppercase()), Some(a));
    assert_eq!(
        parse_ref(&a.to_string()),
        Some(a),
        "the account id names it too"
    );
    assert_eq!(parse_ref("not-an-agent"), None);
}

#[tokio::test]
async fn register_stores_the_agent_and_a_working_key_and_caps_the_unfunded() {
    let f = fixture(Duration::from_secs(900), 2).await;
    let r = f.agents.register("bot one", &f.keys).await.unwrap();
    assert_eq!(
        r.agent.account,
        account_of(&uuid::Uuid::parse_str(&r.agent.uuid).unwrap())
    );
    assert_eq!(r.agent.deadline_ms - r.agent.created_ms, 900_000);
    assert_eq!(
        f.keys.authenticate(&r.api_key).unwrap().wallet,
        r.agent.account
    );
    assert_eq!(r.key.key_name, "bot one");
    assert_eq!(
        f.store.agent(&r.agent.account).await.unwrap(),
        Some(r.agent.clone())
    );
    f.agents.register("bot two", &f.keys).await.unwrap();
    assert_eq!(f.agents.unfunded(), 2);
    let full = f.agents.register("bot three", &f.keys).await.err().unwrap();
    assert!(
        matches!(full, AgentError::CapacityReached { max: 2, .. }),
        "{full}"
    );
    assert_eq!(full.status(), 503);
    // A first credit frees a place.
    f.agents.note_funded(&r.agent.account).await.unwrap();
    f.agents.note_funded(&r.agent.account).await.unwrap();
    assert_eq!(f.agents.unfunded(), 1, "counted once");
    f.agents.register("bot three", &f.keys).await.unwrap();
    // The count survives a restart.
    assert_eq!(
        Agents::new(f.store.clone(), config(Duration::ZERO, 9))
            .await
            .unwrap()
            .unfunded(),
        2
    );
}

#[tokio::test]
async fn a_sweep_deletes_the_unfunded_and_keeps_the_funded_pinned_and_owed() {
    let f = fixture(Duration::ZERO, 100).await;
    let doomed = f.agents.register("doomed", &f.keys).await.unwrap();
    let funded = f.agents.register("funded", &f.keys).await.unwrap();
    let pinned = f.agents.register("pinned", &f.keys).await.unwrap();
    let owed = f.agents.register("owed", &f.keys).await.unwrap();
    let (d, fu, p, o) = (
        doomed.agent.account,
        funded.agent.account,
        pinned.agent.account,
        owed.agent.account,
    );
    // The doomed agent has usage history (its 402s) that must go with it.
    f.store
        .append(&[], &[(d, crate::storage::UsageEvent::default())])
        .await
        .unwrap();
    let usage_of = |w| f.store.usage_page(w, UsageFilter::All, 0, 10);
    assert_eq!(usage_of(&d).await.unwrap().total, 1);
    f.billing
        .credit(fu, 1, LedgerKind::Topup, None, None)
        .await
        .unwrap();
    let pin = f.agents.pin(p).await.unwrap();
    f.store
        .put_intent_durable(&IntentRecord {
            id: "i1".into(),
            payer: Wallet([9; 20]),
            paid: 5,
            valid_before: 0,
            request: serde_json::Value::Null,
            network: "base-sepolia".into(),
            purpose: IntentPurpose::Credit {
                kind: LedgerKind::Topup,
                note: String::new(),
                to: Some(o),
            },
            state: IntentState::Pending,
            created_ms: 0,
        })
        .await
        .unwrap();
    let s = f.sweep().await;
    assert_eq!(
        s,
        Swept {
            deleted: 1,
            funded: 1,
            kept: 2
        }
    );
    assert!(
        f.keys.authenticate(&doomed.api_key).is_err(),
        "its key is gone"
    );
    assert!(f.store.agent(&d).await.unwrap().is_none());
    assert!(f.store.account(&d).await.unwrap().is_none());
    assert_eq!(
        usage_of(&d).await.unwrap().total,
        0,
        "its history is forgotten"
    );
    assert!(
        f.store
            .all_keys()
            .await
            .unwrap()
            .iter()
            .all(|k| k.wallet != d)
    );
    assert!(
        f.store
            .agent(&fu)
            .await
            .unwrap()
            .unwrap()
            .funded_ms
            .is_some()
    );
    assert!(f.keys.authenticate(&funded.api_key).is_ok());
    // Unpinned and no longer owed, the other two go at the next sweep.
    drop(pin);
    f.store.remove_intent("i1").await.unwrap();
    assert_eq!(f.sweep().await.deleted, 2);
    assert!(
        f.agents.pin(p).await.is_err(),
        "a swept agent cannot be pinned"
    );
    assert!(f.agents.pin_if_agent(p).await.unwrap().is_none());
    assert_eq!(f.agents.unfunded(), 0);
    // The funded one is permanent.
    assert_eq!(f.sweep().await, Swept::default());
    assert!(f.store.agent(&fu).await.unwrap().is_some());
}

/// Pinning and sweeping race from two tasks many times: an agent that was pinned is never
/// deleted while the pin is held, and an agent that was deleted is never pinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_and_sweeps_racing_never_lose_a_pinned_agent() {
    let f = Arc::new(fixture(Duration::ZERO, 1000).await);
    let (mut pinned, mut refused) = (0, 0);
    for _ in 0..100 {
        let r = f.agents.register("racer", &f.keys).await.unwrap();
        let account = r.agent.account;
        let sweeper = {
            let f = Arc::clone(&f);
            #[expect(clippy::disallowed_methods, reason = "the race needs a second task")]
            tokio::spawn(async move { f.sweep().await })
        };
        let pin = f.agents.pin(account).await;
        let swept = sweeper.await.unwrap();
        match pin {
            Ok(pin) => {
                pinned += 1;
                assert!(
                    f.store.agent(&account).await.unwrap().is_some(),
                    "pinned, then swept"
                );
                assert!(f.keys.authenticate(&r.api_key).is_ok());
                assert_eq!(swept.deleted, 0);
                drop(pin);
                f.sweep().await;
            }
            Err(AgentError::NotFound(_)) => {
                refused += 1;
                assert_eq!(swept.deleted, 1);
            }
            Err(e) => panic!("{e}"),
        }
        assert!(f.store.agent(&account).await.unwrap().is_none());
    }
    assert_eq!(pinned + refused, 100);
}
