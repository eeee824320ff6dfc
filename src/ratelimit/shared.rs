//! Per-wallet limits that hold across gateways: each gateway borrows tokens in batches from the
//! wallet's shared bucket (`storage::pg::buckets`, one per wallet and class) and spends them from
//! a local lease, so most requests touch no database.
//!
//! The tolerance, stated: every admitted request spent a token the shared bucket gave out, so
//! the gateways together never admit more than one bucket of `limit` refilling `limit` a minute
//! would (a token is spent at most `LEASE_TTL` after it left the bucket). They may admit fewer:
//! tokens a gateway borrowed and did not spend within `LEASE_TTL` are dropped, at most one batch
//! per gateway and wallet each time its traffic stops. A batch starts at 1, doubles while leases
//! are spent within their TTL, halves when one lapses, and is at most a tenth of the limit. One
//! borrow runs at a time per wallet and class (striped locks): requests that find the lease empty
//! meanwhile wait for it and spend what it brought. A borrow that finds the bucket empty marks
//! the lease dry until its next token, and requests are refused locally until then.
//! While the database is out of reach each gateway falls back to its own bucket (`check_local`),
//! so the limit is then per gateway.

use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use super::{Quota, RateClass, RateLimited, Table};
use crate::storage::pg::DbError;
use crate::storage::{Storage, StorageError};
use crate::wallet::Wallet;

/// Borrowed tokens not spent within this are dropped, never spent late.
pub const LEASE_TTL: Duration = Duration::from_secs(1);

/// One gateway's tokens for one wallet and class.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lease {
    tokens: u32,
    /// When the tokens were borrowed (`None`: never).
    at: Option<Instant>,
    /// How many the next borrow asks for.
    batch: u32,
    /// What the shared bucket had left at the last borrow (for the quota headers).
    shared_left: u32,
    /// The shared bucket had nothing at the last borrow, and will not until then.
    dry_until: Option<Instant>,
}

const FRESH: Lease = Lease {
    tokens: 0,
    at: None,
    batch: 1,
    shared_left: 0,
    dry_until: None,
};

/// Borrows in flight are serialized per wallet and class through one of this many locks.
const FLIGHTS: usize = 64;

/// The leases of this gateway and the store holding the shared buckets.
pub(super) struct Shared {
    store: Storage,
    leases: Table<(Wallet, RateClass), Lease>,
    /// One borrow at a time per stripe of (wallet, class) keys.
    flights: Box<[tokio::sync::Mutex<()>]>,
    hasher: RandomState,
}

fn class_name(class: RateClass) -> &'static str {
    match class {
        RateClass::None => "none",
        RateClass::Runtime => "runtime",
        RateClass::Control => "control",
    }
}

fn quota(limit: u32, remaining: u32) -> Quota {
    let remaining = remaining.min(limit);
    Quota {
        limit,
        remaining,
        reset_s: (u64::from(limit - remaining) * 60).div_ceil(u64::from(limit.max(1))),
    }
}

impl Shared {
    pub(super) fn new(store: Storage, max_tracked: usize) -> Self {
        Self {
            store,
            leases: Table::new(max_tracked, Duration::from_secs(60)),
            flights: (0..FLIGHTS).map(|_| tokio::sync::Mutex::new(())).collect(),
            hasher: RandomState::new(),
        }
    }

    /// A token from the live lease, or a refusal while the shared bucket is known to be dry;
    /// `None` when a borrow must decide.
    fn spend_lease(
        &self,
        key: (Wallet, RateClass),
        limit: u32,
    ) -> Option<Result<Quota, RateLimited>> {
        let now = Instant::now();
        self.leases.with(key, now, FRESH, |l| {
            if l.at
                .is_some_and(|t| now.saturating_duration_since(t) < LEASE_TTL)
                && l.tokens > 0
            {
                l.tokens -= 1;
                return Some(Ok(quota(limit, l.tokens.saturating_add(l.shared_left))));
            }
            let wait = l.dry_until?.checked_duration_since(now)?;
            Some(Err(RateLimited {
                limit,
                retry_after_s: wait.as_millis().div_ceil(1000).max(1) as u64,
            }))
        })
    }

    /// Takes one token for `wallet` in `class` (`limit` a minute): from the lease, or from a
    /// batch borrowed now.
    pub(super) async fn take(
        &self,
        wallet: Wallet,
        class: RateClass,
        limit: u32,
    ) -> Result<Result<Quota, RateLimited>, StorageError> {
        let key = (wallet, class);
        if let Some(verdict) = self.spend_lease(key, limit) {
            return Ok(verdict);
        }
        // One borrow at a time per wallet and class (per stripe): the requests that found the
        // lease empty meanwhile spend what it brought instead of each borrowing a batch.
        let stripe = (self.hasher.hash_one(key) % self.flights.len() as u64) as usize;
        let _flight = self.flights[stripe].lock().await;
        if let Some(verdict) = self.spend_lease(key, limit) {
            return Ok(verdict);
        }
        let now = Instant::now();
        let want = self.leases.with(key, now, FRESH, |l| {
            let age = l.at.map(|t| now.saturating_duration_since(t));
            l.batch = match age {
                None => l.batch,
                // Spent within its TTL: demand outruns the batch.
                Some(a) if a < LEASE_TTL => l.batch.saturating_mul(2),
                // Lapsed with tokens unspent: the batch was too big.
                Some(_) if l.tokens > 0 => l.batch / 2,
                Some(_) => l.batch,
            }
            .clamp(1, (limit / 10).max(1));
            l.tokens = 0;
            l.batch
        });
        let scope = wallet.to_string();
        // `Shared` exists only over a store that has shared buckets (`with_shared`).
        let got = self
            .store
            .borrow_rate_tokens(&scope, class_name(class), want, limit, limit)
            .await?
            .ok_or_else(|| {
                StorageError::Db(DbError::Statement("no shared rate-limit buckets".into()))
            })?;
        if got.granted == 0 {
            // Until the shared bucket has a token again, refuse here without asking.
            let dry = Instant::now() + Duration::from_millis(got.wait_ms);
            self.leases
                .with(key, now, FRESH, |l| l.dry_until = Some(dry));
            return Ok(Err(RateLimited {
                limit,
                retry_after_s: got.wait_ms.div_ceil(1000).max(1),
            }));
        }
        let now = Instant::now();
        let remaining = self.leases.with(key, now, FRESH, |l| {
            // What the lease had left is dropped if it lapsed meanwhile, else kept.
            if l.at
                .is_none_or(|t| now.saturating_duration_since(t) >= LEASE_TTL)
            {
                l.tokens = 0;
            }
            l.tokens = l.tokens.saturating_add(got.granted - 1);
            l.at = Some(now);
            l.dry_until = None;
            l.shared_left = got.left;
            l.tokens.saturating_add(l.shared_left)
        });
        Ok(Ok(quota(limit, remaining)))
    }
}
