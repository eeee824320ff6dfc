//! Keeping the loaded indexes fresh with what other gateways wrote and deleted.
//!
//! On a shared store (PostgreSQL) `app::follow_memory` reads the memory change feed every
//! `app::MEMORY_FOLLOW_EVERY` and hands the changes here. Only wallets with a loaded (or
//! loading) index are asked about; a write to a wallet with no index here needs nothing, its
//! first search loads it from the store. Applying a change twice is harmless (an insert of a
//! present id and a delete of an absent one do nothing), and a stale insert (the row was read
//! live just before a delete committed) is undone by the delete's own, later, change. None of
//! this decides what a search returns: hits are read back from the store (`Memory::search`),
//! so a deleted record is never returned even by an index that still holds it.

use std::collections::HashSet;

use super::record::RecordView;
use super::{Memory, MemoryId, Pending, maintain};
use crate::storage::MemoryChange;
use crate::wallet::Wallet;

impl Memory {
    /// The wallets with an index loaded or loading here.
    pub fn loaded_wallets(&self) -> Vec<Wallet> {
        let set: HashSet<Wallet> = self.slots.iter().map(|e| e.key().0).collect();
        set.into_iter().collect()
    }

    /// Applies changes read from the store's feed to the loaded indexes.
    pub fn apply_changes(&self, changes: &[MemoryChange]) {
        for ch in changes {
            let Some(slot) = self.existing_slot(ch.wallet, ch.namespace.as_deref()) else {
                continue;
            };
            let change = match &ch.value {
                None => Pending::Delete(MemoryId(ch.id)),
                Some(bytes) => match RecordView::parse(bytes) {
                    // Another embedder's vector is not comparable with this index's (a
                    // gateway with another embedder configured wrote it); skipped as a load
                    // skips it.
                    Ok(v)
                        if v.id == ch.id
                            && v.embedder == self.fingerprint
                            && v.dims() == self.dims() =>
                    {
                        let mut vector = Vec::with_capacity(v.dims());
                        v.append_vector(&mut vector);
                        Pending::Insert(MemoryId(ch.id), vector)
                    }
                    _ => continue,
                },
            };
            if let Some(ix) = slot.apply(change) {
                maintain(&ix);
            }
        }
    }

    /// Forgets every loaded index: the next search of each loads it from the store. For a
    /// gateway whose feed fell further behind than deletes are kept for it.
    pub fn drop_indexes(&self) {
        self.slots.clear();
    }
}
