//! Rate limits: a token bucket per (wallet, class) and one per client IP, in tables of bounded size.
//!
//! Each wallet class (runtime: chat, memory, embeddings; control: account, keys, history) allows
//! `n` requests per minute with bursts up to `n`. Requests that reach the router without a caller
//! (public routes, sign-in, x402, MCP) draw from their client IP's bucket (`limits.ip_per_min`,
//! bursts up to `limits.ip_burst`; IPv6 clients are grouped by /64). A refused request learns how
//! many whole seconds to wait (`Retry-After`); an allowed wallet request learns the limit, what
//! remains and when the bucket is full.
//!
//! Agent registrations (`POST /api/v1/agents/register`) draw from a third table, one bucket per
//! client IP (`agents.register_per_min`, default 5 a minute).
//!
//! Memory is bounded whatever keys a client names: each table keeps at most `limits.max_tracked`
//! buckets, in two generations per shard (`Table`). A lookup is O(1); a bucket idle for a full
//! refill is dropped (a new one would be full too, so that changes nothing); when a generation
//! fills before that, the older generation is dropped, and a client whose bucket went with it
//! starts again from a full bucket. So a flood of new keys can only hand out extra bursts to keys
//! it evicts, never grow the table.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::LimitsConfig;
use crate::locks::lock;
use crate::storage::Storage;
use crate::wallet::Wallet;

mod shared;

/// Agent registrations per client IP per minute unless configured (the LLM-for-Agents figure).
const REGISTER_PER_MIN: u32 = 5;

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

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A bucket's shape: how many tokens it holds and how fast it refills.
#[derive(Debug, Clone, Copy)]
struct Rate {
    capacity: f64,
    per_sec: f64,
}

impl Rate {
    fn new(per_min: u32, burst: u32) -> Self {
        Self {
            capacity: f64::from(burst.max(1)),
            per_sec: f64::from(per_min.max(1)) / 60.0,
        }
    }

    /// How long an empty bucket takes to fill.
    fn refill(&self) -> Duration {
        Duration::from_secs_f64((self.capacity / self.per_sec).min(86_400.0))
    }

    fn full(&self, now: Instant) -> Bucket {
        Bucket {
            tokens: self.capacity,
            at: now,
        }
    }

    /// Refills `b` up to `now` and takes one token: the tokens left, or the seconds to wait.
    fn take(&self, b: &mut Bucket, now: Instant) -> Result<f64, u64> {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_sec).min(self.capacity);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(b.tokens)
        } else {
            Err(((1.0 - b.tokens) / self.per_sec).ceil().max(1.0) as u64)
        }
    }
}

/// One shard: the current generation and the one before it.
struct Shard<K, V> {
    cur: HashMap<K, V>,
    old: HashMap<K, V>,
    /// When `cur` was started.
    since: Instant,
}

impl<K, V> Shard<K, V> {
    fn rotate(&mut self, now: Instant) {
        std::mem::swap(&mut self.cur, &mut self.old);
        self.cur.clear();
        self.since = now;
    }
}

/// Buckets by key: at most `cap` of them, each lookup O(1) under one shard's lock.
///
/// Every access first ages its shard: once `period` (the longest refill) has passed since the
/// current generation started, it becomes the old one and the old one is dropped. A bucket is in
/// the current generation if it was used since then, so a bucket dropped this way was idle for at
/// least `period`, i.e. full. A new key that finds the current generation at its share of `cap`
/// ages the shard early, dropping the old generation whatever its age.
struct Table<K, V = Bucket> {
    shards: Box<[Mutex<Shard<K, V>>]>,
    hasher: RandomState,
    /// Buckets one generation of one shard may hold.
    per_generation: usize,
    period: Duration,
}

impl<K: Hash + Eq + Copy, V> Table<K, V> {
    fn new(cap: usize, period: Duration) -> Self {
        let n = if cap >= 1024 { 16 } else { 1 };
        let now = Instant::now();
        Self {
            shards: (0..n)
                .map(|_| {
                    Mutex::new(Shard {
                        cur: HashMap::new(),
                        old: HashMap::new(),
                        since: now,
                    })
                })
                .collect(),
            hasher: RandomState::new(),
            per_generation: (cap / (2 * n)).max(1),
            period,
        }
    }

    /// Runs `f` on `key`'s bucket (a fresh `init` one when it has none).
    fn with<R>(&self, key: K, now: Instant, init: V, f: impl FnOnce(&mut V) -> R) -> R {
        let i = (self.hasher.hash_one(key) % self.shards.len() as u64) as usize;
        let mut s = lock(&self.shards[i]);
        let age = now.saturating_duration_since(s.since);
        if age >= self.period {
            s.rotate(now);
            if age >= 2 * self.period {
                s.rotate(now);
            }
        }
        if let Some(b) = s.cur.get_mut(&key) {
            return f(b);
        }
        let mut b = s.old.remove(&key).unwrap_or(init);
        if s.cur.len() >= self.per_generation {
            s.rotate(now);
        }
        let r = f(&mut b);
        s.cur.insert(key, b);
        r
    }

    /// Buckets held (both generations of every shard).
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = lock(s);
                s.cur.len() + s.old.len()
            })
            .sum()
    }
}

/// The key of a client address: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its /64 (one
/// subscriber's allocation).
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// All buckets.
pub struct RateLimiter {
    runtime: u32,
    control: u32,
    wallets: Table<(Wallet, RateClass)>,
    ip_limit: u32,
    ip_rate: Rate,
    ips: Table<IpAddr>,
    /// Agent registrations per client IP (`with_registrations`), apart from `ips`.
    register_limit: u32,
    register_rate: Rate,
    registers: Table<IpAddr>,
    max_tracked: usize,
    /// With a store that gateways share: the wallet buckets are the shared ones (`shared`).
    shared: Option<shared::Shared>,
}

impl RateLimiter {
    pub fn new(limits: LimitsConfig) -> Self {
        let ip_rate = Rate::new(limits.ip_per_min, limits.ip_burst);
        Self {
            runtime: limits.runtime_per_min,
            control: limits.control_per_min,
            // A wallet bucket holds a minute's worth and refills in a minute.
            wallets: Table::new(limits.max_tracked, Duration::from_secs(60)),
            ip_limit: limits.ip_per_min,
            ip_rate,
            ips: Table::new(limits.max_tracked, ip_rate.refill()),
            register_limit: REGISTER_PER_MIN,
            register_rate: Rate::new(REGISTER_PER_MIN, REGISTER_PER_MIN),
            registers: Table::new(limits.max_tracked, Duration::from_secs(60)),
            max_tracked: limits.max_tracked,
            shared: None,
        }
    }

    /// Draws wallet tokens from buckets shared by every gateway on `store` when it has them
    /// (PostgreSQL; `shared` states the tolerance). Client-IP buckets stay per gateway.
    pub fn with_shared(mut self, store: Storage) -> Self {
        if store.is_shared() {
            self.shared = Some(shared::Shared::new(store, self.max_tracked));
        }
        self
    }

    /// Allows `per_min` agent registrations per client IP per minute, in bursts of as many.
    pub fn with_registrations(mut self, per_min: u32) -> Self {
        self.register_limit = per_min.max(1);
        self.register_rate = Rate::new(per_min, per_min);
        self
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
        let rate = Rate::new(limit, limit);
        let taken = self
            .wallets
            .with((wallet, class), now, rate.full(now), |b| rate.take(b, now));
        match taken {
            Ok(left) => Ok(Some(Quota {
                limit,
                remaining: left as u32,
                reset_s: ((rate.capacity - left) / rate.per_sec).ceil() as u64,
            })),
            Err(wait) => Err(RateLimited {
                limit,
                retry_after_s: wait,
            }),
        }
    }

    /// Takes one token for `wallet` in `class`: from the buckets every gateway shares when the
    /// store has them, else (or while the database is out of reach) from this gateway's own.
    pub async fn check(
        &self,
        wallet: Wallet,
        class: RateClass,
    ) -> Result<Option<Quota>, RateLimited> {
        let Some(limit) = self.limit(class) else {
            return Ok(None);
        };
        if let Some(shared) = &self.shared {
            match shared.take(wallet, class, limit).await {
                Ok(verdict) => return verdict.map(Some),
                Err(e) => {
                    metrics::counter!("vectorway_rate_limit_local_fallbacks_total").increment(1);
                    tracing::warn!(%e, "shared rate limit unavailable; this gateway's bucket applies");
                }
            }
        }
        self.check_local(wallet, class)
    }

    /// Takes one token from this gateway's own bucket for `wallet` in `class`.
    pub fn check_local(
        &self,
        wallet: Wallet,
        class: RateClass,
    ) -> Result<Option<Quota>, RateLimited> {
        self.check_at(wallet, class, Instant::now())
    }

    /// Takes one token from the bucket of the client at `ip` at time `now`.
    pub fn check_ip_at(&self, ip: IpAddr, now: Instant) -> Result<(), RateLimited> {
        let rate = self.ip_rate;
        self.ips
            .with(ip_key(ip), now, rate.full(now), |b| rate.take(b, now))
            .map(|_| ())
            .map_err(|wait| RateLimited {
                limit: self.ip_limit,
                retry_after_s: wait,
            })
    }

    pub fn check_ip(&self, ip: IpAddr) -> Result<(), RateLimited> {
        self.check_ip_at(ip, Instant::now())
    }

    /// Takes one agent registration from the bucket of the client at `ip` at time `now`.
    pub fn check_register_at(&self, ip: IpAddr, now: Instant) -> Result<(), RateLimited> {
        let rate = self.register_rate;
        self.registers
            .with(ip_key(ip), now, rate.full(now), |b| rate.take(b, now))
            .map(|_| ())
            .map_err(|wait| RateLimited {
                limit: self.register_limit,
                retry_after_s: wait,
            })
    }

    pub fn check_register(&self, ip: IpAddr) -> Result<(), RateLimited> {
        self.check_register_at(ip, Instant::now())
    }

    /// Buckets held: (wallet buckets, IP buckets).
    pub fn tracked(&self) -> (usize, usize) {
        (self.wallets.len(), self.ips.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(runtime: u32, control: u32) -> LimitsConfig {
        LimitsConfig {
            runtime_per_min: runtime,
            control_per_min: control,
            ip_per_min: 60,
            ip_burst: 3,
            max_tracked: 1000,
        }
    }

    fn wallet(n: u64) -> Wallet {
        let mut w = [0u8; 20];
        w[12..].copy_from_slice(&n.to_be_bytes());
        Wallet(w)
    }

    #[test]
    fn trips_at_the_configured_rate_and_refills() {
        let rl = RateLimiter::new(limits(6, 2));
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

    #[test]
    fn a_million_named_wallets_keep_the_table_bounded_and_live_buckets_limited() {
        let rl = RateLimiter::new(LimitsConfig {
            max_tracked: 10_000,
            ..limits(6, 2)
        });
        let t0 = Instant::now();
        let victim = wallet(u64::MAX);
        for _ in 0..2 {
            rl.check_at(victim, RateClass::Control, t0).unwrap();
        }
        assert!(rl.check_at(victim, RateClass::Control, t0).is_err());
        // An attacker names a million wallets within one refill period.
        for i in 0..1_000_000 {
            let t = t0 + Duration::from_micros(i);
            rl.check_at(wallet(i), RateClass::Control, t).unwrap();
            if i % 1000 == 0 {
                assert!(rl.tracked().0 <= 10_000, "the table grew past its cap");
            }
        }
        assert!(rl.tracked().0 <= 10_000);
        // The victim's bucket was evicted by the flood (it starts full again), never the cap.
        let later = t0 + Duration::from_secs(2);
        assert!(rl.check_at(victim, RateClass::Control, later).is_ok());
    }

    #[test]
    fn aging_drops_only_buckets_idle_for_a_full_refill() {
        // 1000 buckets: one shard, so the count below is exact.
        let rl = RateLimiter::new(limits(6, 2));
        let (w, idle) = (wallet(7), wallet(8));
        let t0 = Instant::now();
        rl.check_at(idle, RateClass::Control, t0).unwrap();
        rl.check_at(w, RateClass::Control, t0).unwrap();
        rl.check_at(w, RateClass::Control, t0).unwrap();
        // 59 s later the bucket has refilled by 1.97 tokens: one is taken, 0.97 is left.
        let t = t0 + Duration::from_secs(59);
        rl.check_at(w, RateClass::Control, t).unwrap();
        assert_eq!(rl.tracked().0, 2);
        // At 61 s the table has aged once; the bucket used at 59 s is kept (1.03 tokens: one
        // request, not the two a dropped, full bucket would allow).
        let t = t0 + Duration::from_secs(61);
        rl.check_at(w, RateClass::Control, t).unwrap();
        assert!(
            rl.check_at(w, RateClass::Control, t).is_err(),
            "a live bucket survives aging"
        );
        // Two refills later everything idle since is gone.
        let t = t0 + Duration::from_secs(200);
        rl.check_at(wallet(9), RateClass::Control, t).unwrap();
        assert_eq!(rl.tracked().0, 1, "idle buckets are dropped");
    }

    #[test]
    fn registrations_have_their_own_per_ip_bucket() {
        let rl = RateLimiter::new(limits(6, 2)).with_registrations(5);
        let t0 = Instant::now();
        let a: IpAddr = "198.51.100.7".parse().unwrap();
        for _ in 0..5 {
            rl.check_register_at(a, t0).unwrap();
        }
        let e = rl.check_register_at(a, t0).unwrap_err();
        assert_eq!(
            (e.limit, e.retry_after_s),
            (5, 12),
            "one registration per 12 s"
        );
        assert!(
            rl.check_ip_at(a, t0).is_ok(),
            "the general IP bucket is apart"
        );
        assert!(
            rl.check_register_at("198.51.100.8".parse().unwrap(), t0)
                .is_ok()
        );
        assert!(
            rl.check_register_at(a, t0 + Duration::from_secs(12))
                .is_ok()
        );
        assert!(
            rl.check_register_at(a, t0 + Duration::from_secs(12))
                .is_err()
        );
    }

    #[test]
    fn ip_buckets_burst_refill_and_group_ipv6_by_64() {
        let rl = RateLimiter::new(limits(6, 2));
        let t0 = Instant::now();
        let a: IpAddr = "203.0.113.9".parse().unwrap();
        for _ in 0..3 {
            rl.check_ip_at(a, t0).unwrap();
        }
        let e = rl.check_ip_at(a, t0).unwrap_err();
        assert_eq!((e.limit, e.retry_after_s), (60, 1), "one token per second");
        assert!(
            rl.check_ip_at("::ffff:203.0.113.9".parse().unwrap(), t0)
                .is_err(),
            "an IPv4-mapped address is the same client"
        );
        assert!(rl.check_ip_at("203.0.113.10".parse().unwrap(), t0).is_ok());
        rl.check_ip_at(a, t0 + Duration::from_secs(1)).unwrap();
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        for _ in 0..3 {
            rl.check_ip_at(v6("2001:db8:1:2::1"), t0).unwrap();
        }
        assert!(
            rl.check_ip_at(v6("2001:db8:1:2:ffff::9"), t0).is_err(),
            "the same /64"
        );
        assert!(rl.check_ip_at(v6("2001:db8:1:3::1"), t0).is_ok());
        // Millions of addresses keep the IP table bounded too.
        for i in 0..200_000u32 {
            rl.check_ip_at(IpAddr::from(i.to_be_bytes()), t0).unwrap();
        }
        assert!(rl.tracked().1 <= 1000);
    }
}
