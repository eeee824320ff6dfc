//! Re-embedding a wallet's memories after the embedder changed, in the background.
//!
//! Every record names the embedder that made its vector (its fingerprint). A load skips the
//! records of another embedder, so an index only ever holds vectors of one space, and reports
//! how many it skipped; then `start` re-embeds that wallet's foreign records (all namespaces)
//! on a tracked effect (`Effects::spawn`): it runs to its end whether or not the request that
//! loaded the index stays, and shutdown waits for it within the grace period.
//!
//! Each record is rewritten in place (same id, creation time, namespace and text; the new
//! vector and fingerprint) with `Storage::replace_memory`, which never brings back a record deleted
//! meanwhile. The work is resumable: a restart or a failed embedding call leaves the remaining
//! records foreign, and the next load of the wallet starts again with exactly those. While it
//! runs, searches see the records already re-embedded plus new writes, never a vector of the old
//! space: after each round the wallet's loaded indexes are dropped, so the next search loads
//! the store again (in creation order, which the cap relies on). On a shared store the other
//! gateways' feeds deliver each rewritten record as a change.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::record::{MemoryRecord, RecordView};
use super::{Embedder, MemoryError, Slot, SlotKey};
use crate::effects::Effects;
use crate::storage::{MemoryScan, Storage};
use crate::wallet::Wallet;

/// Texts embedded per round.
const ROUND: usize = 64;
/// Loaded indexes are dropped at most this often while a wallet is re-embedded (and at its end).
const REFRESH: Duration = Duration::from_secs(1);

/// What a re-embed needs from `Memory`.
pub(super) struct Reembed {
    pub store: Storage,
    pub embedder: Embedder,
    pub fingerprint: String,
    pub dims: usize,
    pub slots: Arc<DashMap<SlotKey, Arc<Slot>>>,
    /// Wallets being re-embedded now (one task per wallet).
    pub running: Arc<DashMap<Wallet, ()>>,
}

impl Reembed {
    /// Starts re-embedding `wallet` on `effects`, unless it is already under way. Must be
    /// called inside the runtime (a blocking-pool thread is).
    pub fn start(self, effects: &Effects, wallet: Wallet) {
        if self.running.insert(wallet, ()).is_some() {
            return;
        }
        tracing::info!(%wallet, fingerprint = %self.fingerprint, "re-embedding memories made by another embedder");
        // Detached: the handle is dropped, the effect runs to its end on its own.
        drop(effects.spawn("memory re-embed", async move {
            let result = self.run(wallet).await;
            self.drop_indexes(wallet);
            self.running.remove(&wallet);
            match result {
                Ok(n) => tracing::info!(%wallet, records = n, "memories re-embedded"),
                Err(e) => {
                    tracing::warn!(%wallet, %e, "memory re-embed stopped; the next load resumes it")
                }
            }
        }));
    }

    /// Re-embeds every foreign record of `wallet`; returns how many were rewritten.
    async fn run(&self, wallet: Wallet) -> Result<usize, MemoryError> {
        let ids = foreign_ids(&self.store, wallet, self.fingerprint.clone(), self.dims).await?;
        metrics::gauge!("vectorway_memory_reembed_pending").increment(ids.len() as f64);
        let mut done = 0;
        let mut refreshed = Instant::now();
        for chunk in ids.chunks(ROUND) {
            let rewritten = self.round(wallet, chunk).await;
            metrics::gauge!("vectorway_memory_reembed_pending").decrement(chunk.len() as f64);
            let rewritten = match rewritten {
                Ok(n) => n,
                Err(e) => {
                    let left = ids.len() - done - chunk.len();
                    metrics::gauge!("vectorway_memory_reembed_pending").decrement(left as f64);
                    return Err(e);
                }
            };
            done += chunk.len();
            metrics::counter!("vectorway_memory_reembedded_total").increment(rewritten as u64);
            if refreshed.elapsed() >= REFRESH {
                self.drop_indexes(wallet);
                refreshed = Instant::now();
            }
        }
        Ok(done)
    }

    /// Re-reads, embeds and rewrites one round of records; returns how many were rewritten.
    async fn round(&self, wallet: Wallet, ids: &[[u8; 16]]) -> Result<usize, MemoryError> {
        let mut records = Vec::with_capacity(ids.len());
        for id in ids {
            // Read again: it may have been deleted, or rewritten by an earlier run.
            let Some(bytes) = self.store.get_memory(&wallet, id).await? else {
                continue;
            };
            match MemoryRecord::decode(&bytes) {
                Ok(r) if r.embedder != self.fingerprint || r.vector.len() != self.dims => {
                    records.push(r);
                }
                _ => {}
            }
        }
        if records.is_empty() {
            return Ok(0);
        }
        let texts: Vec<String> = records.iter().map(|r| r.text.clone()).collect();
        let vectors = self.embedder.embed(&texts).await?;
        if vectors.len() != records.len() || vectors.iter().any(|v| v.len() != self.dims) {
            return Err(MemoryError::Internal(
                "the embedder returned vectors of the wrong number or size".into(),
            ));
        }
        let mut rewritten = 0;
        for (mut record, mut vector) in records.into_iter().zip(vectors) {
            super::index::normalize(&mut vector);
            record.vector = vector;
            record.embedder.clone_from(&self.fingerprint);
            if self
                .store
                .replace_memory(&wallet, &record.id, &record.encode())
                .await?
            {
                rewritten += 1;
            }
        }
        self.store.sync_memories().await?;
        Ok(rewritten)
    }

    /// Forgets the wallet's loaded indexes: the next search loads them from the log.
    fn drop_indexes(&self, wallet: Wallet) {
        self.slots.retain(|(w, _), _| *w != wallet);
    }
}

/// The ids of `wallet`'s records made by another embedder (or of another size), oldest first.
async fn foreign_ids(
    store: &Storage,
    wallet: Wallet,
    fingerprint: String,
    dims: usize,
) -> Result<Vec<[u8; 16]>, MemoryError> {
    let scan = move |out: &mut Vec<[u8; 16]>, id: [u8; 16], bytes: &[u8]| {
        if let Ok(view) = RecordView::parse(bytes)
            && view.id == id
            && (view.embedder != fingerprint || view.dims() != dims)
        {
            out.push(id);
        }
    };
    Ok(store
        .fold_memories(wallet, MemoryScan::All, Vec::new(), scan)
        .await?)
}
