//! Credit leases on a shared store: this gateway's slice of each wallet's balance.
//!
//! With PostgreSQL, a wallet's `Slot` holds this replica's lease: `available` is leased and not
//! reserved, `held` is reserved by open calls. A reservation the slot covers touches no database
//! (the hot path). When it does not, `top_up` leases more with one conditional statement
//! (`Storage::lease`): a chunk of `mult` worst cases, doubling (up to `MAX_MULT`) while the lease
//! runs out within `GROW_WITHIN`, or, when that much is not free (the wallet is down to a few
//! worst cases), exactly what this call lacks: one database reservation per request. One top-up
//! per wallet runs at a time, and it runs as an effect, so a client that goes away cannot leave
//! credits leased in the database but missing from the slot. `tick` (every `TICK`) renews the
//! replica's heartbeat and lease expiry, recovers dead replicas' leases, and gives back the
//! unreserved part of every idle lease. A replica that could not renew for `FENCE` stops
//! spending its leases (503) before `TTL` lets another replica recover them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::BillingError;
use super::table::{CreditTable, Slot};
use crate::effects::Effects;
use crate::storage::pg::DbError;
use crate::storage::{Storage, StorageError, now_ms};
use crate::wallet::Wallet;

/// How long a lease lives without its replica's heartbeat.
pub const TTL: Duration = Duration::from_secs(10);
/// How often a replica beats, recovers expired leases and returns idle ones.
pub const TICK: Duration = Duration::from_secs(1);
/// A replica that has not renewed for this long stops spending its leases.
pub const FENCE: Duration = Duration::from_secs(5);
/// A lease that ran out within this long of its last top-up doubles its next chunk.
const GROW_WITHIN: Duration = Duration::from_secs(1);
/// A chunk is `mult` worst cases: from `MIN_MULT`, doubling up to `MAX_MULT`.
const MIN_MULT: u64 = 4;
const MAX_MULT: u64 = 64;

/// Per wallet: one top-up at a time, and how the lease has been growing.
#[derive(Debug)]
struct Grower {
    lock: tokio::sync::Mutex<()>,
    mult: AtomicU64,
    last_ms: AtomicU64,
}

/// This replica's leases.
pub struct Leases {
    store: Storage,
    effects: Effects,
    growers: DashMap<Wallet, Arc<Grower>>,
    /// When the last heartbeat succeeded.
    renewed: std::sync::Mutex<Instant>,
}

fn unavailable(why: &str) -> BillingError {
    BillingError::Storage(StorageError::Db(DbError::Unavailable(why.into())))
}

impl Leases {
    /// Registers the replica (its first heartbeat).
    pub async fn start(store: Storage, effects: Effects) -> Result<Self, StorageError> {
        store.heartbeat(ttl_from_now()).await?;
        Ok(Self {
            store,
            effects,
            growers: DashMap::new(),
            renewed: std::sync::Mutex::new(Instant::now()),
        })
    }

    fn grower(&self, wallet: &Wallet) -> Arc<Grower> {
        self.growers
            .entry(*wallet)
            .or_insert_with(|| {
                Arc::new(Grower {
                    lock: tokio::sync::Mutex::new(()),
                    mult: AtomicU64::new(MIN_MULT),
                    last_ms: AtomicU64::new(0),
                })
            })
            .clone()
    }

    /// Refuses to spend leases once the heartbeat has failed for `FENCE`.
    pub fn check_fence(&self) -> Result<(), BillingError> {
        let renewed = *self.renewed.lock().unwrap_or_else(|p| p.into_inner());
        if renewed.elapsed() > FENCE {
            return Err(unavailable("this replica cannot renew its credit leases"));
        }
        Ok(())
    }

    /// Takes `amount` from the slot, leasing more first when it lacks some; `Ok(false)` when the
    /// wallet does not have that much free.
    pub async fn take(
        &self,
        wallet: &Wallet,
        slot: &Arc<Slot>,
        amount: u64,
        worst: u64,
    ) -> Result<bool, BillingError> {
        self.check_fence()?;
        let g = self.grower(wallet);
        let _turn = g.lock.lock().await;
        for _ in 0..4 {
            let short = match slot.try_hold(amount) {
                Ok(()) => return Ok(true),
                Err(available) => amount - available,
            };
            let now = now_ms();
            let mut mult = g.mult.load(Ordering::Acquire);
            if now.saturating_sub(g.last_ms.load(Ordering::Acquire))
                < GROW_WITHIN.as_millis() as u64
            {
                mult = (mult * 2).min(MAX_MULT);
            }
            let chunk = worst.saturating_mul(mult).max(short);
            let got = self.lease_into(wallet, slot, chunk).await?;
            let got = if got || chunk == short {
                got
            } else {
                self.lease_into(wallet, slot, short).await?
            };
            if !got {
                return Ok(false);
            }
            g.mult.store(mult, Ordering::Release);
            g.last_ms.store(now, Ordering::Release);
        }
        Ok(slot.try_hold(amount).is_ok())
    }

    /// Leases `n` into the slot, as an effect: the slot gets what the database gave even if the
    /// caller goes away meanwhile.
    async fn lease_into(
        &self,
        wallet: &Wallet,
        slot: &Arc<Slot>,
        n: u64,
    ) -> Result<bool, BillingError> {
        let (store, slot, wallet) = (self.store.clone(), slot.clone(), *wallet);
        let done = self.effects.spawn("credit lease", async move {
            let got = store.lease(&wallet, n, ttl_from_now()).await?;
            if got {
                slot.credit(n);
                metrics::counter!("vectorway_lease_takes_total").increment(1);
            }
            Ok::<_, StorageError>(got)
        });
        match done.await {
            Ok(r) => Ok(r?),
            Err(e) => Err(unavailable(&e.to_string())),
        }
    }

    /// The periodic upkeep: heartbeat, recovery of dead replicas' leases, idle leases returned.
    pub async fn tick(&self, table: &CreditTable) {
        match self.store.heartbeat(ttl_from_now()).await {
            Ok(_) => *self.renewed.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now(),
            Err(e) => tracing::warn!(%e, "credit lease heartbeat failed"),
        }
        match self.store.recover_expired_leases(now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(credits = n, "recovered expired credit leases"),
            Err(e) => tracing::warn!(%e, "recovering expired credit leases failed"),
        }
        for (wallet, slot) in table.idle() {
            let n = slot.take_available(u64::MAX);
            if n == 0 {
                continue;
            }
            match self.store.unlease(&wallet, n).await {
                Ok(true) => {
                    if let Some(g) = self.growers.get(&wallet) {
                        g.mult.store(MIN_MULT, Ordering::Release);
                    }
                }
                // Recovered by another replica meanwhile: the credits are free already.
                Ok(false) => {}
                Err(e) => {
                    slot.credit(n);
                    tracing::warn!(%e, %wallet, "returning an idle credit lease failed");
                }
            }
        }
    }

    /// Gives every lease of this replica back (a clean shutdown, after the journal's last sync).
    pub async fn release_all(&self, table: &CreditTable) -> Result<u64, StorageError> {
        for (_, slot) in table.idle() {
            slot.take_available(u64::MAX);
        }
        self.store.release_leases().await
    }
}

/// The expiry of a lease renewed now.
fn ttl_from_now() -> u64 {
    now_ms() + TTL.as_millis() as u64
}
