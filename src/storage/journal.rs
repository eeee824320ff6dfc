//! Group commit: debits, usage events and key touches are batched and flushed every few ms.
//!
//! Writers push onto an unbounded channel (never blocking a request, never awaiting in `Drop`);
//! one task drains it, applies each window as one sled batch per tree, and fsyncs. A crash loses
//! at most the open window: debits not yet on disk (the wallet keeps that money), never money in,
//! which is written with `Store::append_durable` and acknowledged only after its fsync.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{KeyRecord, LedgerEntry, Storage, UsageEvent};
use crate::wallet::Wallet;

/// One thing to write.
#[derive(Debug)]
pub enum JournalOp {
    Ledger(LedgerEntry),
    Usage(Wallet, Box<UsageEvent>),
    Key(Box<KeyRecord>),
    /// Answered once everything sent before it is on disk.
    Barrier(oneshot::Sender<()>),
}

/// The sending side; cheap to clone.
#[derive(Debug, Clone)]
pub struct Journal {
    tx: mpsc::UnboundedSender<JournalOp>,
}

impl Journal {
    /// Creates the journal and the future that drains it (the caller spawns it).
    pub fn new(
        store: Storage,
        interval: Duration,
    ) -> (Self, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, run(store, rx, interval))
    }

    pub fn push(&self, op: JournalOp) {
        if self.tx.send(op).is_err() {
            tracing::error!("journal is closed; a record was dropped");
        }
    }

    /// Waits until everything pushed so far is durable.
    pub async fn sync(&self) {
        let (tx, rx) = oneshot::channel();
        self.push(JournalOp::Barrier(tx));
        let _ = rx.await;
    }
}

async fn run(store: Storage, mut rx: mpsc::UnboundedReceiver<JournalOp>, interval: Duration) {
    let mut ledger = Vec::new();
    let mut usage = Vec::new();
    let mut keys = Vec::new();
    let mut barriers = Vec::new();
    while let Some(first) = rx.recv().await {
        let deadline = tokio::time::Instant::now() + interval;
        let mut next = Some(first);
        loop {
            match next.take() {
                Some(JournalOp::Ledger(e)) => ledger.push(e),
                Some(JournalOp::Usage(w, e)) => usage.push((w, *e)),
                Some(JournalOp::Key(k)) => keys.push(*k),
                Some(JournalOp::Barrier(b)) => barriers.push(b),
                None => {}
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(op)) => next = Some(op),
                Ok(None) | Err(_) => break,
            }
        }
        // Write the window; on failure keep what is not yet written and retry, so nothing is
        // acknowledged (no barrier answered) until it is really on disk. A record is appended
        // once: after a failed sync only the sync is retried (with whatever arrived meanwhile).
        let mut end = 0u64;
        let mut touched = false;
        loop {
            let started = std::time::Instant::now();
            let result = write_window(
                &store,
                &mut ledger,
                &mut usage,
                &mut keys,
                &mut end,
                &mut touched,
            )
            .await;
            metrics::histogram!("vectorway_journal_flush_seconds")
                .record(started.elapsed().as_secs_f64());
            match result {
                Ok(()) => break,
                Err(e) => {
                    metrics::counter!("vectorway_journal_write_errors_total").increment(1);
                    tracing::error!(%e, entries = ledger.len(), "journal write failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    // Records that arrived meanwhile join the retry.
                    while let Ok(op) = rx.try_recv() {
                        match op {
                            JournalOp::Ledger(e) => ledger.push(e),
                            JournalOp::Usage(w, e) => usage.push((w, *e)),
                            JournalOp::Key(k) => keys.push(*k),
                            JournalOp::Barrier(b) => barriers.push(b),
                        }
                    }
                }
            }
        }
        for b in barriers.drain(..) {
            let _ = b.send(());
        }
    }
}

/// Appends what is pending (clearing it once written and counting it), stores key touches, then
/// makes everything up to `end` durable.
async fn write_window(
    store: &Storage,
    ledger: &mut Vec<LedgerEntry>,
    usage: &mut Vec<(Wallet, UsageEvent)>,
    keys: &mut Vec<KeyRecord>,
    end: &mut u64,
    touched: &mut bool,
) -> Result<(), crate::storage::StorageError> {
    if !ledger.is_empty() || !usage.is_empty() {
        *end = store.append(ledger, usage).await?;
        metrics::counter!("vectorway_journal_records_total")
            .increment((ledger.len() + usage.len()) as u64);
        ledger.clear();
        usage.clear();
    }
    // Key touches (last_used_at) are in sled: stored now, flushed after the log's sync.
    while let Some(k) = keys.last() {
        store.touch_key(k).await?; // on failure the rest stay queued for the retry
        keys.pop();
        *touched = true;
    }
    store.sync_history(*end).await?;
    if *touched {
        store.flush().await?;
    }
    Ok(())
}
