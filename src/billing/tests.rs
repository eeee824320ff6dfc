//! Billing under test: holds end once, never overdraw, and the ledger agrees, also under threads.

use proptest::prelude::*;

use super::*;

async fn billing(dir: &std::path::Path, max_age: Duration) -> Arc<Billing> {
    let store = Storage::embedded(crate::storage::Store::open_when_free(dir).unwrap());
    let (journal, run) = Journal::new(store.clone(), Duration::from_millis(1));
    #[expect(clippy::disallowed_methods, reason = "the test owns its journal task")]
    tokio::spawn(run);
    Arc::new(
        Billing::recover(store, journal, max_age, crate::effects::Effects::new())
            .await
            .unwrap(),
    )
}

fn w() -> Wallet {
    "0x1111111111111111111111111111111111111111"
        .parse()
        .unwrap()
}

#[tokio::test]
async fn commit_release_drop_each_end_the_hold_once() {
    let dir = tempfile::tempdir().unwrap();
    let b = billing(dir.path(), Duration::from_secs(60)).await;
    b.credit(w(), 1000, LedgerKind::Grant, None, None)
        .await
        .unwrap();
    let h = b.reserve(w(), 600).await.unwrap();
    assert!(matches!(
        b.reserve(w(), 401).await,
        Err(BillingError::InsufficientCredits {
            needed: 401,
            available: 400
        })
    ));
    assert_eq!(h.commit(250, None), 250);
    assert_eq!(
        b.balance(&w()),
        Balance {
            balance: 750,
            held: 0,
            available: 750
        }
    );
    b.reserve(w(), 700).await.unwrap().release();
    drop(b.reserve(w(), 700).await.unwrap());
    assert_eq!(b.balance(&w()).available, 750);
    assert_eq!(
        b.reserve(w(), 10).await.unwrap().commit(11, None),
        10,
        "never charges past the hold"
    );
    assert_eq!(b.open_holds(), 0);
    b.journal().sync().await;
    assert_eq!(
        b.store.balances().await.unwrap()[&w()],
        740,
        "ledger agrees with the table"
    );
}

#[tokio::test]
async fn sweeper_returns_leaked_holds_and_late_commit_cannot_overdraw() {
    let dir = tempfile::tempdir().unwrap();
    let b = billing(dir.path(), Duration::from_millis(0)).await;
    b.credit(w(), 100, LedgerKind::Grant, None, None)
        .await
        .unwrap();
    let h = b.reserve(w(), 100).await.unwrap();
    std::thread::sleep(Duration::from_millis(2));
    assert_eq!(b.sweep(), 1);
    assert_eq!(b.balance(&w()).available, 100);
    let other = b.reserve(w(), 80).await.unwrap();
    assert_eq!(h.commit(50, None), 20, "only what is still available");
    other.release();
    assert_eq!(
        b.balance(&w()),
        Balance {
            balance: 80,
            held: 0,
            available: 80
        }
    );
}

#[tokio::test]
async fn a_hold_grows_only_with_available_credits_and_sweeps_whole() {
    let dir = tempfile::tempdir().unwrap();
    let b = billing(dir.path(), Duration::from_secs(60)).await;
    b.credit(w(), 1000, LedgerKind::Grant, None, None)
        .await
        .unwrap();
    let mut h = b.reserve(w(), 300).await.unwrap();
    h.grow(500).await.unwrap();
    assert_eq!(h.amount(), 800);
    assert_eq!(b.balance(&w()).held, 800);
    // Too much: refused, and the hold is as it was.
    assert!(matches!(
        h.grow(201).await,
        Err(BillingError::InsufficientCredits {
            needed: 1001,
            available: 1000
        })
    ));
    assert_eq!((h.amount(), b.balance(&w()).held), (800, 800));
    // The grown hold covers a charge the first hold could not.
    assert_eq!(h.commit(700, None), 700);
    assert_eq!(
        b.balance(&w()),
        Balance {
            balance: 300,
            held: 0,
            available: 300
        }
    );

    // The sweeper releases the grown amount, and a swept hold cannot grow.
    let dir = tempfile::tempdir().unwrap();
    let b = billing(dir.path(), Duration::from_millis(0)).await;
    b.credit(w(), 300, LedgerKind::Grant, None, None)
        .await
        .unwrap();
    let mut h = b.reserve(w(), 100).await.unwrap();
    h.grow(100).await.unwrap();
    std::thread::sleep(Duration::from_millis(2));
    assert_eq!(b.sweep(), 1);
    assert_eq!(b.balance(&w()).held, 0);
    assert!(h.grow(50).await.is_err());
    assert_eq!(b.balance(&w()).available, 300, "the refused growth is back");
}

#[tokio::test]
async fn recovery_rebuilds_balances_exactly() {
    let dir = tempfile::tempdir().unwrap();
    {
        let b = billing(dir.path(), Duration::from_secs(60)).await;
        b.credit(w(), 5000, LedgerKind::Topup, None, None)
            .await
            .unwrap();
        b.reserve(w(), 900)
            .await
            .unwrap()
            .commit(123, Some("req".into()));
        let _open = b.reserve(w(), 1000).await.unwrap();
        b.journal().sync().await;
    }
    // Let the journal task see its channel close and drop its store handle.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let b = billing(dir.path(), Duration::from_secs(60)).await;
    assert_eq!(
        b.balance(&w()),
        Balance {
            balance: 4877,
            held: 0,
            available: 4877
        }
    );
}

// === interleavings under threads ===

/// Most wallets a case uses.
const WALLETS: usize = 3;

/// One step of one thread. Wallet and hold indices are taken modulo what exists.
#[derive(Debug, Clone)]
enum Step {
    Reserve(usize, u64),
    /// Reserves all that is available (what the wallet read a moment ago: it may race).
    ReserveAll(usize),
    /// Commits an open hold for `percent` % of its amount: above 100 the usage overran it.
    Commit(usize, u64),
    Release(usize),
    /// The guard goes out of scope (a client gone, a panic).
    Drop(usize),
    Grant(usize, u64),
    Sweep,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..WALLETS, 0u64..3_000).prop_map(|(w, a)| Step::Reserve(w, a)),
        1 => (0..WALLETS).prop_map(Step::ReserveAll),
        3 => (0usize..8, 0u64..=300).prop_map(|(h, p)| Step::Commit(h, p)),
        1 => (0usize..8).prop_map(Step::Release),
        1 => (0usize..8).prop_map(Step::Drop),
        2 => (0..WALLETS, 1u64..5_000).prop_map(|(w, c)| Step::Grant(w, c)),
        2 => Just(Step::Sweep),
    ]
}

fn wallet(i: usize) -> Wallet {
    format!("0x{}", format!("{:02x}", 0x11 * (i + 1)).repeat(20))
        .parse()
        .unwrap()
}

/// What one thread did to each wallet, counted by the test, not read from `Billing`.
#[derive(Debug, Default)]
struct Tally {
    granted: [u64; WALLETS],
    charged: [u64; WALLETS],
    /// Commits that charged something: each must be one debit in the ledger.
    debits: [usize; WALLETS],
}

/// Checks one reading on i128, where a counter that wrapped below zero cannot hide:
/// `available = balance − held ≥ 0`, and neither counter above all the money ever offered.
fn check_reading(b: Balance, offered: u64, at: &str) {
    let (balance, held, available) = (
        i128::from(b.balance),
        i128::from(b.held),
        i128::from(b.available),
    );
    assert!(balance - held >= 0, "{at}: balance − held < 0 in {b:?}");
    assert_eq!(balance - held, available, "{at}: {b:?}");
    let offered = i128::from(offered);
    assert!(
        available <= offered && held <= offered,
        "{at}: a counter wrapped past the {offered} credits ever granted: {b:?}"
    );
}

/// Runs one thread's steps on its own open holds; checks every wallet after every step.
fn run_steps(
    b: &Arc<Billing>,
    rt: &tokio::runtime::Handle,
    wallets: usize,
    offered: &[AtomicU64; WALLETS],
    steps: Vec<Step>,
) -> Tally {
    let mut tally = Tally::default();
    let mut open: Vec<(usize, Hold)> = Vec::new();
    for (n, s) in steps.into_iter().enumerate() {
        let s = match s {
            Step::ReserveAll(w) => Step::Reserve(w, b.balance(&wallet(w % wallets)).available),
            other => other,
        };
        match s {
            Step::Reserve(w, amount) => {
                let w = w % wallets;
                match rt.block_on(b.reserve(wallet(w), amount)) {
                    Ok(h) => open.push((w, h)),
                    Err(BillingError::InsufficientCredits { needed, available }) => {
                        assert_eq!(needed, amount);
                        assert!(available < amount, "refused with enough available");
                    }
                    Err(e) => panic!("reserve: {e}"),
                }
            }
            Step::Commit(i, percent) if !open.is_empty() => {
                let (w, h) = open.swap_remove(i % open.len());
                let held = h.amount();
                let actual = held * percent / 100;
                let charged = h.commit(actual, Some(format!("step {n}")));
                assert!(
                    charged <= actual.min(held),
                    "charged {charged} for a use of {actual} on a hold of {held}"
                );
                tally.charged[w] += charged;
                tally.debits[w] += usize::from(charged > 0);
            }
            Step::Release(i) if !open.is_empty() => open.swap_remove(i % open.len()).1.release(),
            Step::Drop(i) if !open.is_empty() => drop(open.swap_remove(i % open.len())),
            Step::Grant(w, credits) => {
                let w = w % wallets;
                // Counted before the credit lands, so it bounds every concurrent reading.
                offered[w].fetch_add(credits, Ordering::AcqRel);
                rt.block_on(b.credit(wallet(w), credits, LedgerKind::Grant, None, None))
                    .unwrap();
                tally.granted[w] += credits;
            }
            Step::Sweep => {
                b.sweep();
            }
            Step::ReserveAll(_) | Step::Commit(..) | Step::Release(_) | Step::Drop(_) => {}
        }
        for (w, offered) in offered.iter().enumerate().take(wallets) {
            let reading = b.balance(&wallet(w));
            check_reading(reading, offered.load(Ordering::Acquire), "while running");
        }
    }
    // Whatever is still open ends here, half released and half dropped.
    for (i, (_, h)) in open.into_iter().enumerate() {
        if i % 2 == 0 { h.release() } else { drop(h) }
    }
    tally
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Threads racing reserve, commit (under and over the hold), release, drop, grant and the
    /// sweeper never overdraw a wallet, and the books close: per wallet, balance = grants −
    /// charges, nothing is held once every hold has ended, the ledger has exactly those
    /// grants and debits, and recovery from the store gives the same balances.
    #[test]
    fn interleavings_keep_the_books(
        wallets in 2..=WALLETS,
        max_age_ms in prop_oneof![Just(0u64), Just(1), Just(3_600_000)],
        threads in proptest::collection::vec(proptest::collection::vec(step(), 0..60), 2..=3),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Storage::embedded(crate::storage::Store::open(dir.path()).unwrap());
        let (journal, run) = Journal::new(store.clone(), Duration::from_millis(1));
        let journal_task = rt.spawn(run);
        let max_age = Duration::from_millis(max_age_ms);
        let b = Arc::new(rt.block_on(Billing::recover(store, journal, max_age, crate::effects::Effects::new())).unwrap());
        let offered: [AtomicU64; WALLETS] = Default::default();

        // The threads start together, so their steps overlap.
        let start = std::sync::Barrier::new(threads.len());
        let tallies: Vec<Tally> = std::thread::scope(|scope| {
            let handles: Vec<_> = threads
                .into_iter()
                .map(|steps| {
                    let (b, rt, offered, start) = (&b, rt.handle(), &offered, &start);
                    scope.spawn(move || {
                        start.wait();
                        run_steps(b, rt, wallets, offered, steps)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });

        prop_assert_eq!(b.open_holds(), 0);
        prop_assert_eq!(b.total_held(), 0);
        let mut want = Vec::new();
        for w in 0..wallets {
            let granted: u64 = tallies.iter().map(|t| t.granted[w]).sum();
            let charged: u64 = tallies.iter().map(|t| t.charged[w]).sum();
            let debits: usize = tallies.iter().map(|t| t.debits[w]).sum();
            let reading = b.balance(&wallet(w));
            check_reading(reading, granted, "at rest");
            prop_assert_eq!(reading.held, 0, "wallet {}: every hold has ended", w);
            prop_assert_eq!(
                i128::from(reading.balance),
                i128::from(granted) - i128::from(charged),
                "wallet {}: balance = grants − charges",
                w
            );
            // The ledger agrees entry by entry once the journal has written the debits.
            rt.block_on(b.journal().sync());
            let entries: Vec<LedgerEntry> = rt
                .block_on(b.store.ledger_page(&wallet(w), None, 0, usize::MAX))
                .unwrap()
                .items;
            let of = |kind: LedgerKind| entries.iter().filter(move |e| e.kind == kind);
            let granted_in: i128 = of(LedgerKind::Grant).map(|e| i128::from(e.credits)).sum();
            let debited: i128 = of(LedgerKind::Debit).map(|e| -i128::from(e.credits)).sum();
            prop_assert_eq!(granted_in, i128::from(granted), "wallet {}: grants", w);
            prop_assert_eq!(debited, i128::from(charged), "wallet {}: debits", w);
            prop_assert_eq!(
                of(LedgerKind::Debit).count(),
                debits,
                "wallet {}: one debit per charge",
                w
            );
            want.push(reading.balance);
        }

        // Recovery on the same directory, once this instance has let go of the store.
        drop(b);
        rt.block_on(journal_task).unwrap();
        let store = Storage::embedded(crate::storage::Store::open_when_free(dir.path()).unwrap());
        let (journal, run) = Journal::new(store.clone(), Duration::from_millis(1));
        let journal_task = rt.spawn(run);
        let recovered = rt.block_on(Billing::recover(store, journal, max_age, crate::effects::Effects::new())).unwrap();
        for (w, balance) in want.into_iter().enumerate() {
            prop_assert_eq!(
                recovered.balance(&wallet(w)),
                Balance { balance, held: 0, available: balance },
                "wallet {}: recovered from the ledger",
                w
            );
        }
        drop(recovered);
        rt.block_on(journal_task).unwrap();
    }
}
