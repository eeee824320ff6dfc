//! Outstanding SIWE nonces: single use, expiring after one TTL, at most `cap` issued per TTL.
//!
//! Every nonce lives for the same TTL, so nonces expire in the order they were issued, and a FIFO
//! of issue times serves as the time wheel: issuing first drops the expired head of the FIFO (at
//! most `EXPIRE_PER_CALL` per call, so no call pays for a backlog) and then appends; spending a
//! nonce removes it from the map. Both are O(1). A spent nonce keeps its FIFO slot until it expires,
//! so the cap counts challenges issued within the TTL, which also bounds the map.
//!
//! At the cap a new challenge is refused (429 `siwe_challenges_exhausted`, `Retry-After` = when
//! the oldest slot expires) rather than evicting a live nonce: a flood of challenges cannot cancel
//! sign-ins already under way, it can only delay new ones, and each client IP is rate limited
//! before it gets here.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::locks::lock;
use crate::wallet::Wallet;

/// Characters in a nonce this server issues.
pub const NONCE_LEN: usize = 22;
pub type Nonce = [u8; NONCE_LEN];

/// Expired slots dropped at most per call.
const EXPIRE_PER_CALL: usize = 1024;

struct Issued {
    wallet: Wallet,
    at: Instant,
}

struct Inner {
    live: HashMap<Nonce, Issued>,
    /// Issue order: every challenge issued within the TTL, spent or not.
    order: VecDeque<(Nonce, Instant)>,
}

pub struct Nonces {
    inner: Mutex<Inner>,
    ttl: Duration,
    cap: usize,
}

impl Nonces {
    pub fn new(ttl: Duration, cap: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                live: HashMap::new(),
                order: VecDeque::new(),
            }),
            ttl,
            cap: cap.max(1),
        }
    }

    /// Records a fresh nonce for `wallet`; at the cap, the whole seconds until there is room.
    pub fn insert(&self, nonce: Nonce, wallet: Wallet, now: Instant) -> Result<(), u64> {
        let mut g = lock(&self.inner);
        let inner = &mut *g;
        for _ in 0..EXPIRE_PER_CALL {
            match inner.order.front() {
                Some(&(n, at)) if now.saturating_duration_since(at) >= self.ttl => {
                    inner.order.pop_front();
                    if inner.live.get(&n).is_some_and(|i| i.at == at) {
                        inner.live.remove(&n);
                    }
                }
                _ => break,
            }
        }
        if inner.order.len() >= self.cap {
            let oldest = inner.order.front().map_or(now, |&(_, at)| at);
            let wait = self
                .ttl
                .saturating_sub(now.saturating_duration_since(oldest));
            return Err(crate::error::whole_seconds_up(wait));
        }
        inner.live.insert(nonce, Issued { wallet, at: now });
        inner.order.push_back((nonce, now));
        Ok(())
    }

    /// Spends `nonce`: the wallet it was issued to, if it is outstanding and younger than the TTL.
    pub fn take(&self, nonce: &str, now: Instant) -> Option<Wallet> {
        let key: Nonce = nonce.as_bytes().try_into().ok()?;
        let issued = lock(&self.inner).live.remove(&key)?;
        (now.saturating_duration_since(issued.at) < self.ttl).then_some(issued.wallet)
    }

    /// (nonces outstanding, FIFO slots held).
    pub fn len(&self) -> (usize, usize) {
        let g = lock(&self.inner);
        (g.live.len(), g.order.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nonce(i: u32) -> Nonce {
        let mut n = [b'a'; NONCE_LEN];
        n[..10].copy_from_slice(format!("{i:010}").as_bytes());
        n
    }

    fn text(n: &Nonce) -> &str {
        std::str::from_utf8(n).unwrap()
    }

    #[test]
    fn single_use_ttl_and_a_hard_cap_that_refuses_rather_than_evicts() {
        let ttl = Duration::from_secs(300);
        let t0 = Instant::now();
        let w = Wallet([1; 20]);
        let ns = Nonces::new(ttl, 3);
        for i in 0..3 {
            ns.insert(nonce(i), w, t0 + Duration::from_secs(u64::from(i)))
                .unwrap();
        }
        // Full: refused until the oldest (issued at t0) expires, 300 s - 10 s from now.
        let t = t0 + Duration::from_secs(10);
        assert_eq!(ns.insert(nonce(9), w, t), Err(290));
        assert_eq!(ns.take(text(&nonce(9)), t), None, "never issued");
        // Live nonces were not evicted; each is spent once.
        assert_eq!(ns.take(text(&nonce(0)), t), Some(w));
        assert_eq!(ns.take(text(&nonce(0)), t), None, "single use");
        assert_eq!(ns.take("short", t), None);
        // A spent nonce still holds its slot until it expires.
        assert!(ns.insert(nonce(9), w, t).is_err());
        assert_eq!(ns.len(), (2, 3));
        // At 300 s the first slot frees; nonce 1 (issued at 1 s) is still good until 301 s.
        let t = t0 + Duration::from_secs(300);
        ns.insert(nonce(3), w, t).unwrap();
        assert_eq!(ns.take(text(&nonce(1)), t), Some(w));
        // Expired nonces are refused even before their slot is reclaimed.
        let t = t0 + Duration::from_secs(302);
        assert_eq!(ns.take(text(&nonce(2)), t), None, "expired");
        // Later calls reclaim the expired slots.
        let t = t0 + Duration::from_secs(700);
        ns.insert(nonce(4), w, t).unwrap();
        assert_eq!(ns.len(), (1, 1));
    }

    #[test]
    fn a_flood_keeps_the_table_at_its_cap() {
        let ttl = Duration::from_secs(300);
        let t0 = Instant::now();
        let ns = Nonces::new(ttl, 10_000);
        let mut refused = 0;
        for i in 0..200_000u32 {
            let t = t0 + Duration::from_millis(u64::from(i));
            if ns.insert(nonce(i), Wallet([2; 20]), t).is_err() {
                refused += 1;
            }
            assert!(ns.len().1 <= 10_000);
        }
        // 200 s of challenges within one TTL: everything past the cap was refused.
        assert_eq!(refused, 190_000);
    }
}
