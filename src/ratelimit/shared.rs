//! Per-wallet limits that hold across gateways: each gateway borrows tokens in batches from the
//! wallet's shared bucket (`storage::pg::buckets`, one per wallet and class) and spends them from
//! a local lease, so most requests touch no database.
//!
//! The tolerance, stated: every admitted request spent a token the shared bucket gave out, so
//! the gateways together never admit more than one bucket of `limit` refilling `limit` a minute
//! would (a token is spent at most `LEASE_TTL` after it left the bucket). They may admit fewer:
//! tokens a gateway borrowed and did not spend within `LEASE_TTL` are dropped, at most one batch
//! per gateway and wallet each time its traffic stops. A batch starts at 1, doubles while leases
//! are spent within their TTL, halves when one lapses, and is at most a tenth of the limit.
//! While the database is out of reach each gateway falls back to its own bucket (`check_local`),
//! so the limit is then per gateway.

use std::time::{Duration, Instant};

use super::{Quota, RateClass, RateLimited, Table};
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
}

const FRESH: Lease = Lease {
    tokens: 0,
    at: None,
    batch: 1,
    shared_left: 0,
};

/// The leases of this gateway and the store holding the shared buckets.
pub(super) struct Shared {
    store: Storage,
    leases: Table<(Wallet, RateClass), Lease>,
}

enum Step {
    Spent(u32),
    Borrow(u32),
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
        }
    }

    /// Takes one token for `wallet` in `class` (`limit` a minute): from the lease, or from a
    /// batch borrowed now. `None` when the store has no shared buckets.
    pub(super) async fn take(
        &self,
        wallet: Wallet,
        class: RateClass,
        limit: u32,
    ) -> Result<Option<Result<Quota, RateLimited>>, StorageError> {
        let key = (wallet, class);
        let now = Instant::now();
        let step = self.leases.with(key, now, FRESH, |l| {
            let age = l.at.map(|t| now.saturating_duration_since(t));
            let live = age.is_some_and(|a| a < LEASE_TTL);
            if live && l.tokens > 0 {
                l.tokens -= 1;
                return Step::Spent(l.tokens.saturating_add(l.shared_left));
            }
            l.batch = match age {
                None => l.batch,
                // Spent within its TTL: demand outruns the batch.
                Some(_) if live => l.batch.saturating_mul(2),
                // Lapsed with tokens unspent: the batch was too big.
                Some(_) if l.tokens > 0 => l.batch / 2,
                Some(_) => l.batch,
            }
            .clamp(1, (limit / 10).max(1));
            l.tokens = 0;
            Step::Borrow(l.batch)
        });
        let want = match step {
            Step::Spent(remaining) => return Ok(Some(Ok(quota(limit, remaining)))),
            Step::Borrow(want) => want,
        };
        let scope = wallet.to_string();
        let Some(got) = self
            .store
            .borrow_rate_tokens(&scope, class_name(class), want, limit, limit)
            .await?
        else {
            return Ok(None);
        };
        if got.granted == 0 {
            return Ok(Some(Err(RateLimited {
                limit,
                retry_after_s: got.wait_ms.div_ceil(1000).max(1),
            })));
        }
        let now = Instant::now();
        let remaining = self.leases.with(key, now, FRESH, |l| {
            // Another request of this gateway may have borrowed meanwhile: its tokens stay.
            if l.at
                .is_none_or(|t| now.saturating_duration_since(t) >= LEASE_TTL)
            {
                l.tokens = 0;
            }
            l.tokens = l.tokens.saturating_add(got.granted - 1);
            l.at = Some(now);
            l.shared_left = got.left;
            l.tokens.saturating_add(l.shared_left)
        });
        Ok(Some(Ok(quota(limit, remaining))))
    }
}
