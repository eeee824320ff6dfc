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
//!
//! On a shared store (PostgreSQL) a wallet's slot is this replica's lease instead (`lease`): a
//! reservation the lease covers stays in memory, one it does not leases more first.

pub mod lease;
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
    /// This replica's credit leases, on a shared store.
    leases: Option<lease::Leases>,
}

impl std::fmt::Debug for Billing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Billing")
            .field("open_holds", &self.holds.len())
            .finish()
    }
}

impl Billing {
    /// Rebuilds the table from the ledger. Nothing is held after a restart. On a shared store
    /// the table starts empty (no leases) and the replica registers for its leases.
    pub async fn recover(
        store: Storage,
        journal: Journal,
        hold_max_age: Duration,
        effects: crate::effects::Effects,
    ) -> Result<Self, StorageError> {
        let table = CreditTable::default();
        let leases = match store.is_shared() {
            true => Some(lease::Leases::start(store.clone(), effects).await?),
            false => None,
        };
        let sums = match leases {
            Some(_) => Default::default(),
            None => store.balances().await?,
        };
        for (wallet, sum) in sums {
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
            leases,
        })
    }

    /// A wallet's balance as this gateway knows it: the credit table; on a shared store, the
    /// database's `granted − committed` as last read, less debits still on their way, with this
    /// replica's open holds (`balance_now` reads the database first).
    pub fn balance(&self, wallet: &Wallet) -> Balance {
        let local = self.table.read(wallet);
        match self.store.known_balance(wallet) {
            None => local,
            Some(balance) => Balance {
                balance,
                held: local.held,
                available: balance.saturating_sub(local.held),
            },
        }
    }

    /// `balance`, after reading the wallet's totals from a shared store.
    pub async fn balance_now(&self, wallet: &Wallet) -> Result<Balance, BillingError> {
        self.store.refresh_balance(wallet).await?;
        Ok(self.balance(wallet))
    }

    /// The lease upkeep (`lease::Leases::tick`); nothing on the embedded backend.
    pub async fn tick_leases(&self) {
        if let Some(l) = &self.leases {
            l.tick(&self.table).await;
        }
    }

    /// Gives this replica's leases back (shutdown, after the journal's last sync).
    pub async fn release_leases(&self) {
        if let Some(l) = &self.leases {
            match l.release_all(&self.table).await {
                Ok(n) => tracing::info!(credits = n, "credit leases returned"),
                Err(e) => tracing::warn!(%e, "returning credit leases failed; they expire"),
            }
        }
    }

    /// Takes `amount` from the wallet's slot (leasing more on a shared store); `worst` sizes a
    /// lease chunk. Fails with what is available when the wallet cannot cover it.
    async fn take(
        &self,
        wallet: &Wallet,
        slot: &Arc<Slot>,
        amount: u64,
        worst: u64,
    ) -> Result<(), BillingError> {
        let available = match slot.try_hold(amount) {
            Ok(()) => return Ok(()),
            Err(available) => available,
        };
        let Some(l) = &self.leases else {
            return Err(BillingError::InsufficientCredits {
                needed: amount,
                available,
            });
        };
        if l.take(wallet, slot, amount, worst).await? {
            return Ok(());
        }
        Err(BillingError::InsufficientCredits {
            needed: amount,
            available: self.balance(wallet).available.min(amount.saturating_sub(1)),
        })
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
    pub async fn reserve(
        self: &Arc<Self>,
        wallet: Wallet,
        amount: u64,
    ) -> Result<Hold, BillingError> {
        let slot = self.table.slot(&wallet);
        if let Some(l) = &self.leases {
            l.check_fence()?;
        }
        self.take(&wallet, &slot, amount, amount).await?;
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
        let done = self
            .credit_closing(wallet, credits, kind, reference, note, None)
            .await?;
        Ok(done.unwrap_or_else(|| self.balance(&wallet).balance))
    }

    /// `credit`, finishing the settlement intent `closes` with it (`Storage::append_closing`):
    /// `None`, with nothing credited, when another replica owns that intent now.
    pub async fn credit_closing(
        &self,
        wallet: Wallet,
        credits: u64,
        kind: LedgerKind,
        reference: Option<String>,
        note: Option<String>,
        closes: Option<&str>,
    ) -> Result<Option<u64>, BillingError> {
        let slot = self.table.slot(&wallet);
        if credits == 0 || self.balance(&wallet).balance.saturating_add(credits) > MAX_BALANCE {
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
        match closes {
            None => self.store.append_durable(&entry).await?,
            Some(id) => {
                if !self.store.append_closing(&entry, id).await? {
                    return Ok(None);
                }
            }
        }
        if self.leases.is_none() {
            slot.credit(credits);
        }
        Ok(Some(self.balance(&wallet).balance))
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
        self.store.note_pending(&wallet, charged);
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
    pub async fn grow(&mut self, extra: u64) -> Result<(), BillingError> {
        if extra == 0 {
            return Ok(());
        }
        let needed = self.amount.saturating_add(extra);
        self.billing
            .take(&self.wallet, &self.slot, extra, needed)
            .await
            .map_err(|e| match e {
                BillingError::InsufficientCredits { available, .. } => {
                    BillingError::InsufficientCredits {
                        needed,
                        available: available.saturating_add(self.amount),
                    }
                }
                other => other,
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
mod tests;
