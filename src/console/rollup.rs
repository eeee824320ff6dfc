//! Spend rollups: per-wallet totals by hour and by day, split by model and by API key.
//!
//! The store feeds every usage event and ledger entry to `Rollup` as it appends them to the
//! history log, and replays the whole log into it once at open, so a summary or a top-wallets
//! list reads a few buckets instead of walking records. Costs:
//! - memory: one `Cell` (two shared strings and five counters, ~80 bytes) per model × key used in
//!   a bucket, for each hour bucket of the last `HOUR_RETENTION` hours of a wallet's activity and
//!   each day bucket of its whole history, plus one `WalletTotals` per wallet;
//! - per append: one map lookup per wallet and a scan of the bucket's few cells, hour and day;
//! - per summary: the buckets in the asked range times their cells (at most `MAX_BUCKETS`);
//! - per top-wallets list: one pass over the wallets with a bounded heap (O(W log n)).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;

use dashmap::DashMap;
use serde::Serialize;

use crate::storage::{LedgerEntry, LedgerKind, UsageEvent};
use crate::wallet::Wallet;

pub const HOUR_MS: u64 = 3_600_000;
pub const DAY_MS: u64 = 24 * HOUR_MS;
/// Hour buckets kept behind a wallet's newest record (35 days); day buckets are kept forever.
pub const HOUR_RETENTION: u64 = 35 * 24;
/// The most buckets one summary may span.
pub const MAX_BUCKETS: u64 = 800;

/// A bucket width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Hour,
    Day,
}

impl Bucket {
    pub fn ms(self) -> u64 {
        match self {
            Bucket::Hour => HOUR_MS,
            Bucket::Day => DAY_MS,
        }
    }
}

/// Counters of metered calls (those that name a model or cost credits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub calls: u64,
    /// Calls answered with a status of 400 or more.
    pub errors: u64,
    pub credits: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Totals {
    fn add(&mut self, o: &Totals) {
        self.calls += o.calls;
        self.errors += o.errors;
        self.credits += o.credits;
        self.prompt_tokens += o.prompt_tokens;
        self.completion_tokens += o.completion_tokens;
    }

    fn of(ev: &UsageEvent) -> Self {
        Self {
            calls: 1,
            errors: u64::from(ev.status >= 400),
            credits: ev.credits,
            prompt_tokens: ev.prompt_tokens,
            completion_tokens: ev.completion_tokens,
        }
    }
}

/// One model × key's counters inside a bucket.
#[derive(Debug, Clone)]
struct Cell {
    model: Option<Arc<str>>,
    key: Option<Arc<str>>,
    t: Totals,
}

/// A wallet's all-time figures: metered calls and credits in by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WalletTotals {
    pub spend: Totals,
    pub topped_up: u64,
    pub granted: u64,
    pub refunded: u64,
    pub last_ts_ms: u64,
}

#[derive(Debug, Default)]
struct WalletRollup {
    hours: BTreeMap<u64, Vec<Cell>>,
    days: BTreeMap<u64, Vec<Cell>>,
    totals: WalletTotals,
}

/// One series of a summary: a model's or a key's counters per bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Series {
    /// The model id or key id; `None` for calls without one (x402 or session calls).
    pub name: Option<String>,
    pub total: Totals,
    pub credits: Vec<u64>,
    pub calls: Vec<u64>,
}

/// A wallet's metered calls over a range: every bucket, gaps as zeros.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Each bucket's start, in Unix milliseconds.
    pub starts: Vec<u64>,
    pub buckets: Vec<Totals>,
    pub total: Totals,
    pub by_model: Vec<Series>,
    pub by_key: Vec<Series>,
}

/// Every wallet's rollup; cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct Rollup {
    wallets: DashMap<Wallet, WalletRollup>,
}

/// Adds `t` to the cell of `model` × `key` in `cells`.
fn bump(cells: &mut Vec<Cell>, model: Option<&str>, key: Option<&str>, t: &Totals) {
    match cells
        .iter_mut()
        .find(|c| c.model.as_deref() == model && c.key.as_deref() == key)
    {
        Some(c) => c.t.add(t),
        None => cells.push(Cell {
            model: model.map(Arc::from),
            key: key.map(Arc::from),
            t: *t,
        }),
    }
}

/// Whether a usage event is a metered call (a model was named or credits were charged); the
/// account plane's own calls (`/v1/me`, page views) are not spend.
pub fn is_metered(ev: &UsageEvent) -> bool {
    ev.model.is_some() || ev.credits > 0
}

impl Rollup {
    /// Counts one usage event of `wallet`.
    pub fn add_usage(&self, wallet: Wallet, ev: &UsageEvent) {
        if !is_metered(ev) {
            return;
        }
        let t = Totals::of(ev);
        let (model, key) = (ev.model.as_deref(), ev.key_id.as_deref());
        let mut w = self.wallets.entry(wallet).or_default();
        let hour = ev.ts_ms / HOUR_MS;
        bump(w.hours.entry(hour).or_default(), model, key, &t);
        bump(w.days.entry(ev.ts_ms / DAY_MS).or_default(), model, key, &t);
        // Hours older than the retention behind this record are folded away (their days stay).
        let cutoff = hour.saturating_sub(HOUR_RETENTION);
        while w.hours.first_key_value().is_some_and(|(h, _)| *h < cutoff) {
            w.hours.pop_first();
        }
        w.totals.spend.add(&t);
        w.totals.last_ts_ms = w.totals.last_ts_ms.max(ev.ts_ms);
    }

    /// Counts one ledger entry (credits in by kind; debits are counted from usage events).
    pub fn add_ledger(&self, e: &LedgerEntry) {
        let credits = e.credits.unsigned_abs();
        let mut w = self.wallets.entry(e.wallet).or_default();
        match e.kind {
            LedgerKind::Topup => w.totals.topped_up += credits,
            LedgerKind::Grant => w.totals.granted += credits,
            LedgerKind::Refund => w.totals.refunded += credits,
            LedgerKind::Debit => {}
        }
        w.totals.last_ts_ms = w.totals.last_ts_ms.max(e.ts_ms);
    }

    /// Counts what the store just appended to the history log.
    pub fn appended(&self, ledger: &[LedgerEntry], usage: &[(Wallet, UsageEvent)]) {
        for e in ledger {
            self.add_ledger(e);
        }
        for (w, ev) in usage {
            self.add_usage(*w, ev);
        }
    }

    /// Drops a wallet whose history was forgotten (a swept agent).
    pub fn forget(&self, wallet: &Wallet) {
        self.wallets.remove(wallet);
    }

    /// A wallet's all-time figures.
    pub fn totals(&self, wallet: &Wallet) -> WalletTotals {
        self.wallets
            .get(wallet)
            .map(|w| w.totals)
            .unwrap_or_default()
    }

    /// The metered calls of `wallet` in `[from_ms, to_ms)`, by `bucket`, every bucket present.
    /// The caller bounds the range (`MAX_BUCKETS`).
    pub fn summary(&self, wallet: &Wallet, bucket: Bucket, from_ms: u64, to_ms: u64) -> Summary {
        let width = bucket.ms();
        let first = from_ms / width;
        let last = to_ms.saturating_sub(1).max(from_ms) / width;
        let n = (last - first + 1) as usize;
        let mut out = Summary {
            starts: (first..=last).map(|b| b * width).collect(),
            buckets: vec![Totals::default(); n],
            total: Totals::default(),
            by_model: Vec::new(),
            by_key: Vec::new(),
        };
        let Some(w) = self.wallets.get(wallet) else {
            return out;
        };
        let map = match bucket {
            Bucket::Hour => &w.hours,
            Bucket::Day => &w.days,
        };
        for (b, cells) in map.range(first..=last) {
            let i = (b - first) as usize;
            for c in cells {
                out.buckets[i].add(&c.t);
                out.total.add(&c.t);
                add_series(&mut out.by_model, c.model.as_deref(), i, n, &c.t);
                add_series(&mut out.by_key, c.key.as_deref(), i, n, &c.t);
            }
        }
        for s in [&mut out.by_model, &mut out.by_key] {
            s.sort_by(|a, b| {
                b.total
                    .credits
                    .cmp(&a.total.credits)
                    .then(a.name.cmp(&b.name))
            });
        }
        out
    }

    /// The `n` wallets that spent the most credits, most first (ties: lower address first).
    pub fn top_wallets(&self, n: usize) -> Vec<(Wallet, WalletTotals)> {
        let mut heap = BinaryHeap::with_capacity(n + 1);
        for w in self.wallets.iter() {
            heap.push(Reverse((w.totals.spend.credits, Reverse(*w.key()))));
            if heap.len() > n {
                heap.pop();
            }
        }
        let mut top: Vec<_> = heap
            .into_iter()
            .map(|Reverse((_, Reverse(w)))| (w, self.totals(&w)))
            .collect();
        top.sort_by(|a, b| {
            b.1.spend
                .credits
                .cmp(&a.1.spend.credits)
                .then(a.0.cmp(&b.0))
        });
        top
    }

    /// How many wallets have a rollup.
    pub fn wallets(&self) -> usize {
        self.wallets.len()
    }
}

fn add_series(series: &mut Vec<Series>, name: Option<&str>, i: usize, n: usize, t: &Totals) {
    let s = match series.iter().position(|s| s.name.as_deref() == name) {
        Some(p) => &mut series[p],
        None => {
            series.push(Series {
                name: name.map(str::to_string),
                total: Totals::default(),
                credits: vec![0; n],
                calls: vec![0; n],
            });
            let last = series.len() - 1;
            &mut series[last]
        }
    };
    s.total.add(t);
    s.credits[i] += t.credits;
    s.calls[i] += t.calls;
}

#[cfg(test)]
mod tests;
