//! Per-wallet rate limits: a token bucket per (wallet, class), refilled continuously.
//!
//! Each class (runtime: chat, memory, embeddings; control: account, keys, history) allows `n`
//! requests per minute with bursts up to `n`. A refused request learns how many whole seconds to
//! wait (`Retry-After`); an allowed one learns the limit, what remains and when the bucket is full.

use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::wallet::Wallet;

/// Which bucket a route draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateClass {
    /// Not limited per wallet (public and operator routes).
    None,
    Runtime,
    Control,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("rate limit of {limit} requests per minute exceeded; retry in {retry_after_s} s")]
pub struct RateLimited {
    pub limit: u32,
    pub retry_after_s: u64,
}

/// What an allowed request is told in its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_s: u64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// All buckets.
#[derive(Debug)]
pub struct RateLimiter {
    runtime: u32,
    control: u32,
    buckets: DashMap<(Wallet, RateClass), Bucket>,
}

/// Buckets kept before idle (full) ones are dropped.
const PRUNE_ABOVE: usize = 100_000;

impl RateLimiter {
    pub fn new(runtime_per_min: u32, control_per_min: u32) -> Self {
        Self {
            runtime: runtime_per_min,
            control: control_per_min,
            buckets: DashMap::new(),
        }
    }

    fn limit(&self, class: RateClass) -> Option<u32> {
        match class {
            RateClass::None => None,
            RateClass::Runtime => Some(self.runtime),
            RateClass::Control => Some(self.control),
        }
    }

    /// Takes one token for `wallet` in `class` at time `now`.
    pub fn check_at(
        &self,
        wallet: Wallet,
        class: RateClass,
        now: Instant,
    ) -> Result<Option<Quota>, RateLimited> {
        let Some(limit) = self.limit(class) else {
            return Ok(None);
        };
        if self.buckets.len() > PRUNE_ABOVE {
            self.prune(now);
        }
        let per_sec = f64::from(limit) / 60.0;
        let mut b = self.buckets.entry((wallet, class)).or_insert(Bucket {
            tokens: f64::from(limit),
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * per_sec).min(f64::from(limit));
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            let missing = f64::from(limit) - b.tokens;
            Ok(Some(Quota {
                limit,
                remaining: b.tokens as u32,
                reset_s: (missing / per_sec).ceil() as u64,
            }))
        } else {
            let wait = ((1.0 - b.tokens) / per_sec).ceil().max(1.0) as u64;
            Err(RateLimited {
                limit,
                retry_after_s: wait,
            })
        }
    }

    pub fn check(&self, wallet: Wallet, class: RateClass) -> Result<Option<Quota>, RateLimited> {
        self.check_at(wallet, class, Instant::now())
    }

    fn prune(&self, now: Instant) {
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.at) < Duration::from_secs(60));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_at_the_configured_rate_and_refills() {
        let rl = RateLimiter::new(6, 2);
        let w: Wallet = "0x1111111111111111111111111111111111111111"
            .parse()
            .unwrap();
        let other: Wallet = "0x2222222222222222222222222222222222222222"
            .parse()
            .unwrap();
        let t0 = Instant::now();
        for i in 0..6 {
            let q = rl.check_at(w, RateClass::Runtime, t0).unwrap().unwrap();
            assert_eq!(q.remaining, 5 - i);
        }
        let e = rl.check_at(w, RateClass::Runtime, t0).unwrap_err();
        assert_eq!(e.retry_after_s, 10, "one token per 10 s at 6/min");
        assert!(
            rl.check_at(other, RateClass::Runtime, t0).is_ok(),
            "wallets are independent"
        );
        assert!(
            rl.check_at(w, RateClass::Control, t0).is_ok(),
            "classes are independent"
        );
        assert!(
            rl.check_at(w, RateClass::Runtime, t0 + Duration::from_secs(10))
                .is_ok(),
            "refilled"
        );
        assert_eq!(rl.check_at(w, RateClass::None, t0).unwrap(), None);
    }
}
