//! The in-memory credit table: per-wallet `available` and `held` counters, lock-free.
//!
//! `available` is the only counter a reservation races on: a hold is a compare-and-swap that
//! subtracts from `available` only when enough is there, so `available ≥ 0` holds at every
//! instant under any interleaving, and `balance = available + held`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

use crate::wallet::Wallet;

/// One wallet's counters.
#[derive(Debug, Default)]
pub struct Slot {
    available: AtomicU64,
    held: AtomicU64,
}

/// A consistent-enough reading of one wallet (the two loads are not one atomic snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Balance {
    pub balance: u64,
    pub held: u64,
    pub available: u64,
}

impl Slot {
    /// Moves `amount` from available to held, or fails leaving everything unchanged.
    pub fn try_hold(&self, amount: u64) -> Result<(), u64> {
        let mut cur = self.available.load(Ordering::Acquire);
        loop {
            if cur < amount {
                return Err(cur);
            }
            match self.available.compare_exchange_weak(
                cur,
                cur - amount,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.held.fetch_add(amount, Ordering::AcqRel);
                    return Ok(());
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Ends a hold of `held`, keeping `charge ≤ held` of it and returning the rest to available.
    pub fn settle(&self, held: u64, charge: u64) {
        debug_assert!(charge <= held);
        self.held.fetch_sub(held, Ordering::AcqRel);
        self.available.fetch_add(held - charge, Ordering::AcqRel);
    }

    /// Takes up to `amount` straight from available (a charge whose hold was already swept);
    /// returns what was taken.
    pub fn take_available(&self, amount: u64) -> u64 {
        let mut cur = self.available.load(Ordering::Acquire);
        loop {
            let take = cur.min(amount);
            match self.available.compare_exchange_weak(
                cur,
                cur - take,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return take,
                Err(actual) => cur = actual,
            }
        }
    }

    pub fn credit(&self, amount: u64) {
        self.available.fetch_add(amount, Ordering::AcqRel);
    }

    pub fn read(&self) -> Balance {
        let held = self.held.load(Ordering::Acquire);
        let available = self.available.load(Ordering::Acquire);
        Balance {
            balance: available + held,
            held,
            available,
        }
    }
}

/// All wallets' counters.
#[derive(Debug, Default)]
pub struct CreditTable {
    slots: DashMap<Wallet, Arc<Slot>>,
}

impl CreditTable {
    /// The slot of a wallet, created empty on first use.
    pub fn slot(&self, wallet: &Wallet) -> Arc<Slot> {
        if let Some(s) = self.slots.get(wallet) {
            return s.clone();
        }
        self.slots.entry(*wallet).or_default().clone()
    }

    pub fn read(&self, wallet: &Wallet) -> Balance {
        self.slots.get(wallet).map(|s| s.read()).unwrap_or_default()
    }

    /// Drops a wallet's slot if it holds nothing (a deleted account); `true` if it is gone.
    pub fn forget_empty(&self, wallet: &Wallet) -> bool {
        self.slots
            .remove_if(wallet, |_, s| s.read() == Balance::default())
            .is_some()
            || !self.slots.contains_key(wallet)
    }

    /// Sets a wallet's balance at recovery time (nothing is held after a restart).
    pub fn restore(&self, wallet: Wallet, balance: u64) {
        let slot = Slot::default();
        slot.available.store(balance, Ordering::Release);
        self.slots.insert(wallet, Arc::new(slot));
    }

    /// The slots with nothing held (a lease there is idle and can be given back).
    pub fn idle(&self) -> Vec<(Wallet, Arc<Slot>)> {
        self.slots
            .iter()
            .filter(|s| s.held.load(Ordering::Acquire) == 0)
            .map(|s| (*s.key(), s.value().clone()))
            .collect()
    }

    /// Sum of all held credits (a metric, and the "no hold survives" check).
    pub fn total_held(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| s.held.load(Ordering::Acquire))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Hold(u64),
        Settle(usize, u64),
        Credit(u64),
        Take(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..500).prop_map(Op::Hold),
            (0usize..8, 0u64..600).prop_map(|(i, c)| Op::Settle(i, c)),
            (0u64..300).prop_map(Op::Credit),
            (0u64..300).prop_map(Op::Take),
        ]
    }

    proptest! {
        /// Random sequences keep `balance = credits in − charges`, `held = open holds`, available ≥ 0.
        #[test]
        fn sum_rule_holds(ops in proptest::collection::vec(op(), 0..200)) {
            let s = Slot::default();
            let (mut credited, mut charged) = (0u64, 0u64);
            let mut open: Vec<u64> = Vec::new();
            for op in ops {
                match op {
                    Op::Hold(a) => if s.try_hold(a).is_ok() { open.push(a) },
                    Op::Settle(i, c) => if !open.is_empty() {
                        let h = open.swap_remove(i % open.len());
                        let c = c.min(h);
                        s.settle(h, c);
                        charged += c;
                    },
                    Op::Credit(a) => { s.credit(a); credited += a; }
                    Op::Take(a) => charged += s.take_available(a),
                }
                let b = s.read();
                prop_assert_eq!(b.balance, credited - charged);
                prop_assert_eq!(b.held, open.iter().sum::<u64>());
            }
        }
    }

    #[test]
    fn concurrent_holds_never_overdraw() {
        let s = Arc::new(Slot::default());
        s.credit(20 * 100);
        let won: u64 = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let s = s.clone();
                    scope.spawn(move || (0..50).filter(|_| s.try_hold(100).is_ok()).count() as u64)
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(won, 20);
        assert_eq!(
            s.read(),
            Balance {
                balance: 2000,
                held: 2000,
                available: 0
            }
        );
    }
}
