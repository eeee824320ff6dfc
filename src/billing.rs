//! Credits: integer money, reserve before the call, commit or release exactly once after it.
//!
//! The flow for every paid call on the API-key path:
//! 1. Price the worst case (`pricing`): prompt ≤ UTF-8 bytes + 16 per message, completion ≤
//!    `max_tokens`.
//! 2. `Billing::reserve` moves that much from `available` to `held` with one CAS, or fails with
//!    `insufficient_credits` before anything is sent upstream. A cost learned before the upstream
//!    call (the memories recall adds to the prompt) grows the hold with `Hold::grow`, which can
//!    fail the same way.
//! 3. The call runs. Its `Hold` guard ends in exactly one of: `commit(actual)` (charge
//!    `min(actual, held)`, return the rest), `release()` (charge nothing), or `Drop` (release:
//!    client gone before an answer, upstream failure, panic). A sweeper releases holds that outlive
//!    `hold_max_age` (a leaked guard); a guard that finishes after being swept charges what is
//!    still available, never more.
//! 4. A commit journals a `debit` ledger entry (group commit); money in (`credit`) is fsynced
//!    before it is acknowledged. Recovery folds the ledger back into the table.

pub mod pricing;
pub mod table;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::storage::journal::{Journal, JournalOp};
use crate::storage::{LedgerEntry, LedgerKind, Storage, StorageError, now_ms};
use crate::wallet::Wallet;
pub use table::Balance;
use table::{CreditTable, Slot};

#[derive(Debug, Clone, thiserror::Error)]
pub enum BillingError {
    #[error(
        "insufficient credits: this request needs up to {needed} credits and {available} are available"
    )]
    InsufficientCredits { needed: u64, available: u64 },
    #[error("{0}")]
    InvalidAmount(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The largest balance a wallet may hold (2^62 credits), so sums never overflow.
pub const MAX_BALANCE: u64 = 1 << 62;

const ACTIVE: u8 = 0;
const DONE: u8 = 1;
const SWEPT: u8 = 2;

#[derive(Debug)]
struct HoldInfo {
    wallet: Wallet,
    amount: u64,
    since: Instant,
    state: Arc<AtomicU8>,
    slot: Arc<Slot>,
}

/// The credit table, its durable ledger, and the registry of open holds.
pub struct Billing {
    table: CreditTable,
    holds: DashMap<u64, HoldInfo>,
    next_hold: AtomicU64,
    store: Storage,
    journal: Journal,
    hold_max_age: Duration,
}

impl std::fmt::Debug for Billing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Billing")
            .field("open_holds", &self.holds.len())
            .finish()
    }
}

impl Billing {
    /// Rebuilds the table from the ledger. Nothing is held after a restart.
    pub fn recover(
        store: Storage,
        journal: Journal,
        hold_max_age: Duration,
    ) -> Result<Self, StorageError> {
        let table = CreditTable::default();
        for (wallet, sum) in store.balances()? {
            if sum < 0 {
                tracing::error!(%wallet, sum, "ledger sums below zero; treating the balance as 0");
            }
            table.restore(wallet, u64::try_from(sum.max(0)).unwrap_or(u64::MAX));
        }
        Ok(Self {
            table,
            holds: DashMap::new(),
            next_hold: AtomicU64::new(1),
            store,
            journal,
            hold_max_age,
        })
    }

    pub fn balance(&self, wallet: &Wallet) -> Balance {
        self.table.read(wallet)
    }

    pub fn total_held(&self) -> u64 {
        self.table.total_held()
    }

    /// Forgets the counters of an account that holds nothing (a swept agent account).
    pub fn forget_if_empty(&self, wallet: &Wallet) -> bool {
        self.table.forget_empty(wallet)
    }

    pub fn open_holds(&self) -> usize {
        self.holds.len()
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Holds `amount` credits of `wallet` for one call.
    pub fn reserve(self: &Arc<Self>, wallet: Wallet, amount: u64) -> Result<Hold, BillingError> {
        let slot = self.table.slot(&wallet);
        slot.try_hold(amount)
            .map_err(|available| BillingError::InsufficientCredits {
                needed: amount,
                available,
            })?;
        let id = self.next_hold.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(AtomicU8::new(ACTIVE));
        self.holds.insert(
            id,
            HoldInfo {
                wallet,
                amount,
                since: Instant::now(),
                state: state.clone(),
                slot: slot.clone(),
            },
        );
        metrics::gauge!("vectorway_credits_held").increment(amount as f64);
        Ok(Hold {
            billing: self.clone(),
            id,
            wallet,
            amount,
            slot,
            state,
            finished: false,
        })
    }

    /// Money in: appends the entry, waits for the fsync, then makes the credits spendable.
    /// Returns the new balance.
    pub async fn credit(
        &self,
        wallet: Wallet,
        credits: u64,
        kind: LedgerKind,
        reference: Option<String>,
        note: Option<String>,
    ) -> Result<u64, BillingError> {
        let slot = self.table.slot(&wallet);
        if credits == 0 || slot.read().balance.saturating_add(credits) > MAX_BALANCE {
            return Err(BillingError::InvalidAmount(format!(
                "credits must be positive and keep the balance ≤ {MAX_BALANCE}"
            )));
        }
        let entry = LedgerEntry {
            seq: self.store.next_seq()?,
            ts_ms: now_ms(),
            wallet,
            kind,
            credits: i64::try_from(credits)
                .map_err(|_| StorageError::Codec("credit too large".into()))?,
            reference,
            note,
        };
        self.store
            .ensure_account(&wallet, entry.ts_ms / 1000)
            .await?;
        self.store.append_durable(&entry).await?;
        slot.credit(credits);
        Ok(slot.read().balance)
    }

    /// Releases holds older than the maximum age; returns how many.
    pub fn sweep(&self) -> usize {
        let stale: Vec<u64> = self
            .holds
            .iter()
            .filter(|h| h.since.elapsed() > self.hold_max_age)
            .map(|h| *h.key())
            .collect();
        let mut swept = 0;
        for id in stale {
            if let Some((_, h)) = self.holds.remove(&id)
                && h.state
                    .compare_exchange(ACTIVE, SWEPT, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                h.slot.settle(h.amount, 0);
                metrics::gauge!("vectorway_credits_held").decrement(h.amount as f64);
                tracing::warn!(wallet = %h.wallet, amount = h.amount, "swept a stale hold");
                swept += 1;
            }
        }
        swept
    }

    fn debit_entry(&self, wallet: Wallet, charged: u64, reference: Option<String>) {
        if charged == 0 {
            return;
        }
        let seq = match self.store.next_seq() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(%e, "no sequence number for a debit; it will be missing from the ledger");
                return;
            }
        };
        self.journal.push(JournalOp::Ledger(LedgerEntry {
            seq,
            ts_ms: now_ms(),
            wallet,
            kind: LedgerKind::Debit,
            credits: -i64::try_from(charged).unwrap_or(i64::MAX),
            reference,
            note: None,
        }));
    }
}

/// An open reservation. Ends exactly once: `commit`, `release`, or `Drop` (= release).
#[derive(Debug)]
pub struct Hold {
    billing: Arc<Billing>,
    id: u64,
    wallet: Wallet,
    amount: u64,
    slot: Arc<Slot>,
    state: Arc<AtomicU8>,
    finished: bool,
}

impl Hold {
    pub fn amount(&self) -> u64 {
        self.amount
    }

    pub fn wallet(&self) -> Wallet {
        self.wallet
    }

    /// Holds `extra` more credits for the same call (a cost learned after the hold was taken,
    /// such as the memories recalled into the prompt), or fails with `insufficient_credits`
    /// and leaves the hold as it was. A hold the sweeper already released cannot grow.
    pub fn grow(&mut self, extra: u64) -> Result<(), BillingError> {
        if extra == 0 {
            return Ok(());
        }
        let needed = self.amount.saturating_add(extra);
        self.slot
            .try_hold(extra)
            .map_err(|available| BillingError::InsufficientCredits {
                needed,
                available: available.saturating_add(self.amount),
            })?;
        // The registry's amount grows under its entry lock: the sweeper removes the entry before
        // it releases a hold, so a present entry is still active and will release all of it.
        match self.billing.holds.get_mut(&self.id) {
            Some(mut info) => {
                info.amount = needed;
                drop(info);
                self.amount = needed;
                metrics::gauge!("vectorway_credits_held").increment(extra as f64);
                Ok(())
            }
            None => {
                self.slot.settle(extra, 0);
                tracing::warn!(wallet = %self.wallet, "a swept hold cannot grow");
                Err(BillingError::InsufficientCredits {
                    needed,
                    available: self.slot.read().available,
                })
            }
        }
    }

    /// Charges `actual` (capped at the hold), returns the rest, journals the debit; returns the
    /// credits charged. `reference` names the call in the ledger (the request id).
    pub fn commit(mut self, actual: u64, reference: Option<String>) -> u64 {
        self.finished = true;
        let charged = self.finish(actual);
        self.billing.debit_entry(self.wallet, charged, reference);
        metrics::counter!("vectorway_credits_committed_total").increment(charged);
        charged
    }

    /// Ends the hold without charging.
    pub fn release(mut self) {
        self.finished = true;
        self.finish(0);
    }

    fn finish(&self, actual: u64) -> u64 {
        self.billing.holds.remove(&self.id);
        if self
            .state
            .compare_exchange(ACTIVE, DONE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let charged = actual.min(self.amount);
            if actual > self.amount {
                metrics::counter!("vectorway_hold_overrun_total").increment(1);
                tracing::warn!(wallet = %self.wallet, actual, held = self.amount, "usage exceeded the hold; charged the hold");
            }
            self.slot.settle(self.amount, charged);
            metrics::gauge!("vectorway_credits_held").decrement(self.amount as f64);
            charged
        } else {
            // The sweeper already returned the hold; charge only what is still there.
            self.slot.take_available(actual.min(self.amount))
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.finished {
            self.finished = true;
            self.finish(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    async fn billing(dir: &std::path::Path, max_age: Duration) -> Arc<Billing> {
        let store = Storage::embedded(crate::storage::Store::open_when_free(dir).unwrap());
        let (journal, run) = Journal::new(store.clone(), Duration::from_millis(1));
        #[expect(clippy::disallowed_methods, reason = "the test owns its journal task")]
        tokio::spawn(run);
        Arc::new(Billing::recover(store, journal, max_age).unwrap())
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
        let h = b.reserve(w(), 600).unwrap();
        assert!(matches!(
            b.reserve(w(), 401),
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
        b.reserve(w(), 700).unwrap().release();
        drop(b.reserve(w(), 700).unwrap());
        assert_eq!(b.balance(&w()).available, 750);
        assert_eq!(
            b.reserve(w(), 10).unwrap().commit(11, None),
            10,
            "never charges past the hold"
        );
        assert_eq!(b.open_holds(), 0);
        b.journal().sync().await;
        assert_eq!(
            b.store.balances().unwrap()[&w()],
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
        let h = b.reserve(w(), 100).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(b.sweep(), 1);
        assert_eq!(b.balance(&w()).available, 100);
        let other = b.reserve(w(), 80).unwrap();
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
        let mut h = b.reserve(w(), 300).unwrap();
        h.grow(500).unwrap();
        assert_eq!(h.amount(), 800);
        assert_eq!(b.balance(&w()).held, 800);
        // Too much: refused, and the hold is as it was.
        assert!(matches!(
            h.grow(201),
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
        let mut h = b.reserve(w(), 100).unwrap();
        h.grow(100).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(b.sweep(), 1);
        assert_eq!(b.balance(&w()).held, 0);
        assert!(h.grow(50).is_err());
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
            b.reserve(w(), 900).unwrap().commit(123, Some("req".into()));
            let _open = b.reserve(w(), 1000).unwrap();
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
                    match b.reserve(wallet(w), amount) {
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
                Step::Release(i) if !open.is_empty() => {
                    open.swap_remove(i % open.len()).1.release()
                }
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
            let b = Arc::new(Billing::recover(store, journal, max_age).unwrap());
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
                let entries: Vec<LedgerEntry> =
                    b.store.ledger_of(&wallet(w)).map(|e| e.unwrap()).collect();
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
            let recovered = Billing::recover(store, journal, max_age).unwrap();
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
}
