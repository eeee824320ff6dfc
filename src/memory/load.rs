//! Loading one (wallet, namespace) index from the store, and trimming an index to the cap.
//!
//! A load folds the wallet's records (`Storage::fold_memories`, on a blocking thread) into a
//! fresh `Index`, skipping other namespaces, other embedders' vectors and unreadable records.

use super::record::RecordView;
use super::{Index, IndexParams, MemoryError, MemoryId};
use crate::storage::{MemoryScan, Storage};
use crate::wallet::Wallet;

/// What a load's scan gathers.
struct Scan {
    index: Index,
    namespace: Option<Box<str>>,
    fingerprint: String,
    dims: usize,
    foreign: usize,
    corrupt: usize,
    vector: Vec<f32>,
}

impl Scan {
    /// Indexes one stored record if it belongs to the scan's namespace and embedder.
    fn add(&mut self, id: [u8; 16], bytes: &[u8]) {
        let view = match RecordView::parse(bytes) {
            Ok(v) if v.id == id => v,
            _ => {
                self.corrupt += 1;
                return;
            }
        };
        if view.namespace != self.namespace.as_deref() {
            return;
        }
        if view.embedder != self.fingerprint || view.dims() != self.dims {
            self.foreign += 1;
            return;
        }
        self.vector.clear();
        view.append_vector(&mut self.vector);
        self.index.insert(MemoryId(id), &self.vector);
    }
}

/// Scans a wallet's records into a fresh index of one namespace. Records of other namespaces
/// are skipped after reading their header; records from another embedder (or of another
/// size) and unreadable records are skipped with a warning. Returns the index and how many
/// records another embedder made.
pub(super) async fn load_index(
    store: &Storage,
    wallet: Wallet,
    namespace: Option<&str>,
    fingerprint: &str,
    (dims, params, cap): (usize, IndexParams, usize),
) -> Result<(Index, usize), MemoryError> {
    let scan = Scan {
        index: Index::new(dims, params),
        namespace: namespace.map(Box::from),
        fingerprint: fingerprint.to_string(),
        dims,
        foreign: 0,
        corrupt: 0,
        vector: Vec::with_capacity(dims),
    };
    let filter = MemoryScan::Namespace(namespace.map(str::to_string));
    let mut scan = store
        .fold_memories(wallet, filter, scan, |s, id, bytes| s.add(id, bytes))
        .await?;
    let (foreign, corrupt) = (scan.foreign, scan.corrupt);
    if foreign + corrupt > 0 {
        tracing::warn!(
            %wallet, namespace, foreign, corrupt, fingerprint,
            "memory records skipped while loading: made by another embedder, or unreadable"
        );
    }
    metrics::counter!("vectorway_memory_index_loads_total").increment(1);
    // Written while unloaded (a write only counts against a loaded index): trim it now. A
    // shared store keeps the cap at each write itself.
    if !store.is_shared() {
        for id in over_cap(&mut scan.index, cap) {
            store.delete_memory(&wallet, &id.0).await?;
        }
    }
    Ok((scan.index, foreign))
}

/// Takes the oldest records out of a (wallet, namespace) index until at most `cap` are left
/// (0: no limit) and returns them, for the caller to forget in the store.
pub(super) fn over_cap(index: &mut Index, cap: usize) -> Vec<MemoryId> {
    let mut out = Vec::new();
    while cap > 0 && index.live() > cap {
        let Some(id) = index.oldest() else {
            break;
        };
        index.delete(&id);
        metrics::counter!("vectorway_memory_forgotten_total").increment(1);
        out.push(id);
    }
    out
}
