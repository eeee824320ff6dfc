//! Reserve+commit operations per second: the lock-free credit table, and the full `Billing` path.
//!
//! One element = one reservation ended by a charge (`try_hold` + `settle`, or `reserve` +
//! `commit`). Every hold succeeds (the wallets are funded far beyond what a run can spend) and the
//! charge is below the hold, so both counters move on every op, as in a real call.
//!
//! Groups:
//! * `slot_1_thread`: `Slot::try_hold` + `Slot::settle` on one `Arc<Slot>`, no lookup.
//! * `table_1_thread` / `table_2_threads`: the same with a `CreditTable::slot` lookup per op (as
//!   `Billing::reserve` does), from 1 thread, and from 2 threads on one hot wallet or on one
//!   wallet per thread. Both threads start together on a barrier; the time is the wall time
//!   until both are done, and each iteration counts 2 elements. `CreditTable` shards its
//!   `DashMap` with a per-process random hasher, so the two "distinct" wallets share a shard
//!   (and its lock word) in about 1 run in 8; expect that run to look more like the hot case.
//! * `billing`: `Billing::reserve(..).commit(..)` with a real sled `Store` in a temporary
//!   directory and its group-commit journal running on a tokio runtime (5 ms window, the
//!   default). `reserve_commit` times the request-path cost only: the journal drains in the
//!   background and is synced after the clock stops, so its backlog stays bounded.
//!   `reserve_commit_durable` also times that sync, giving the sustained rate at which debits
//!   reach disk.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vectorway::billing::Billing;
use vectorway::billing::table::{CreditTable, Slot};
use vectorway::storage::journal::Journal;
use vectorway::storage::{LedgerKind, Storage, Store};
use vectorway::wallet::Wallet;

/// Credits held per call (a worst-case price) and charged at commit (the actual usage).
const HOLD: u64 = 2_000;
const CHARGE: u64 = 1_234;
/// Enough for ~9e14 ops: no run can drain it.
const FUNDS: u64 = 1 << 60;

const HOT: Wallet = Wallet([0x11; 20]);
const OTHER: Wallet = Wallet([0x22; 20]);

/// One reserve+commit on a slot.
#[inline]
fn hold_and_settle(slot: &Slot) {
    if let Err(available) = slot.try_hold(black_box(HOLD)) {
        panic!("hold refused with {available} available");
    }
    slot.settle(HOLD, black_box(CHARGE));
}

/// Runs `work(thread, iters)` on 2 threads started together; returns the wall time of both.
fn two_threads(iters: u64, work: impl Fn(usize, u64) + Sync) -> Duration {
    let barrier = Barrier::new(3);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|t| {
                let (barrier, work) = (&barrier, &work);
                s.spawn(move || {
                    barrier.wait();
                    work(t, iters);
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for h in handles {
            if let Err(panic) = h.join() {
                std::panic::resume_unwind(panic);
            }
        }
        start.elapsed()
    })
}

fn table_benches(c: &mut Criterion) {
    let slot = Slot::default();
    slot.credit(FUNDS);
    let mut g = c.benchmark_group("slot_1_thread");
    g.throughput(Throughput::Elements(1));
    g.bench_function("try_hold_settle", |b| b.iter(|| hold_and_settle(&slot)));
    g.finish();
    assert_eq!(slot.read().held, 0);

    let table = CreditTable::default();
    table.restore(HOT, FUNDS);
    table.restore(OTHER, FUNDS);

    let mut g = c.benchmark_group("table_1_thread");
    g.throughput(Throughput::Elements(1));
    g.bench_function("slot_try_hold_settle", |b| {
        b.iter(|| hold_and_settle(&table.slot(black_box(&HOT))))
    });
    g.finish();

    let mut g = c.benchmark_group("table_2_threads");
    g.throughput(Throughput::Elements(2));
    for (label, wallets) in [
        ("hot_wallet", [HOT, HOT]),
        ("distinct_wallets", [HOT, OTHER]),
    ] {
        g.bench_function(label, |b| {
            b.iter_custom(|iters| {
                two_threads(iters, |t, n| {
                    let wallet = wallets[t];
                    for _ in 0..n {
                        hold_and_settle(&table.slot(black_box(&wallet)));
                    }
                })
            })
        });
    }
    g.finish();
    assert_eq!(table.total_held(), 0);
}

fn billing_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let store = Storage::embedded(Store::open(dir.path()).unwrap_or_else(|e| panic!("store: {e}")));
    let (journal, run) = Journal::new(store.clone(), Duration::from_millis(5));
    // The runtime owns the journal task; it ends when `billing` (the last sender) is dropped.
    let journal_task = rt.spawn(run);
    let billing = Arc::new(
        rt.block_on(Billing::recover(
            store.clone(),
            journal,
            Duration::from_secs(15 * 60),
            vectorway::effects::Effects::new(),
        ))
        .unwrap_or_else(|e| panic!("recover: {e}")),
    );
    rt.block_on(billing.credit(HOT, FUNDS, LedgerKind::Grant, None, None))
        .unwrap_or_else(|e| panic!("credit: {e}"));
    // `ChatStream` passes the request id as the ledger reference.
    let reference = String::from("req_5f3a9c0e12d4b7a800000001");

    let reserve_commit = |iters: u64| {
        for _ in 0..iters {
            // The embedded backend's reservation completes on its first poll (no database).
            let hold = futures_util::FutureExt::now_or_never(billing.reserve(black_box(HOT), HOLD))
                .unwrap_or_else(|| panic!("reserve waited on the embedded backend"))
                .unwrap_or_else(|e| panic!("reserve: {e}"));
            black_box(hold.commit(black_box(CHARGE), Some(reference.clone())));
        }
    };

    let mut g = c.benchmark_group("billing");
    g.throughput(Throughput::Elements(1));
    g.bench_function("reserve_commit", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            reserve_commit(iters);
            let elapsed = start.elapsed();
            rt.block_on(billing.journal().sync());
            elapsed
        })
    });
    g.bench_function("reserve_commit_durable", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            reserve_commit(iters);
            rt.block_on(billing.journal().sync());
            start.elapsed()
        })
    });
    g.finish();

    assert_eq!((billing.open_holds(), billing.total_held()), (0, 0));
    // Every debit reached the ledger: it sums to the table's balance.
    let ledger = rt
        .block_on(store.balances())
        .unwrap_or_else(|e| panic!("balances: {e}"));
    assert_eq!(
        ledger.get(&HOT).copied(),
        Some(i128::from(billing.balance(&HOT).balance))
    );
    drop(store);
    // Close the journal (last sender), let its task finish, then remove the directory.
    drop(billing);
    if let Err(e) = rt.block_on(journal_task) {
        panic!("journal task: {e}");
    }
    drop(rt);
    if let Err(e) = dir.close() {
        panic!("removing the temporary store: {e}");
    }
}

criterion_group!(credit, table_benches, billing_benches);
criterion_main!(credit);
