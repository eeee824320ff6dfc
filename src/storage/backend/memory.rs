//! `Storage`'s wallet memory and SIWE challenges: the embedded memory log or PostgreSQL.
//!
//! The memory layer (`crate::memory`) holds a `Storage` and calls only these methods. Both
//! backends keep the same bytes per record (`memory::record`'s encoding). Every write and
//! delete is durable when its method returns (the embedded arm fsyncs the log; PostgreSQL
//! has committed). The embedded gateway keeps SIWE challenges in memory
//! (`auth::siwe::Nonces`); with PostgreSQL they are rows every replica can spend, once.

use super::{Backend, Storage};
use crate::storage::pg::ChangeFeed;
use crate::storage::{StorageError, Store};
use crate::wallet::Wallet;

/// Which of a wallet's records a scan reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryScan {
    /// Every namespace.
    All,
    /// One namespace (`None`: records without one). A hint: the embedded backend reads the
    /// whole wallet, so callers still check each record's namespace.
    Namespace(Option<String>),
}

/// A record another gateway wrote or deleted (`Storage::memory_changes`).
#[derive(Debug, Clone)]
pub struct MemoryChange {
    pub wallet: Wallet,
    pub id: [u8; 16],
    pub namespace: Option<String>,
    /// The record as stored; `None` when it was deleted.
    pub value: Option<Vec<u8>>,
}

impl From<Store> for Storage {
    fn from(local: Store) -> Self {
        Self::embedded(local)
    }
}

impl Storage {
    /// Stores one record (replacing one of the same id), durably. A shared store also keeps
    /// the record's (wallet, namespace) at `cap` records (0: no cap) in the same transaction
    /// and returns the ids it forgot; the embedded store returns none and leaves the cap to
    /// the loaded index (`memory::Memory::write`).
    pub async fn put_memory(
        &self,
        wallet: &Wallet,
        id: &[u8; 16],
        namespace: Option<&str>,
        value: &[u8],
        cap: usize,
    ) -> Result<Vec<[u8; 16]>, StorageError> {
        match &self.backend {
            Backend::Embedded => {
                self.local.put_memory(wallet, id, value)?;
                self.local.sync_memories().await?;
                Ok(Vec::new())
            }
            Backend::Postgres(pg) => pg.put_memory(wallet, id, namespace, value, cap).await,
        }
    }

    /// Rewrites a live record in place; `Ok(false)` when it was deleted meanwhile. Durable
    /// after `sync_memories`.
    pub async fn replace_memory(
        &self,
        wallet: &Wallet,
        id: &[u8; 16],
        value: &[u8],
    ) -> Result<bool, StorageError> {
        match &self.backend {
            Backend::Embedded => Ok(self
                .local
                .memory_log()
                .replace(wallet, id, value)?
                .is_some()),
            Backend::Postgres(pg) => pg.replace_memory(wallet, id, value).await,
        }
    }

    /// Waits until every memory write made so far is durable.
    pub async fn sync_memories(&self) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.sync_memories().await,
            Backend::Postgres(_) => Ok(()),
        }
    }

    /// One live record of a wallet.
    pub async fn get_memory(
        &self,
        wallet: &Wallet,
        id: &[u8; 16],
    ) -> Result<Option<Vec<u8>>, StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.get_memory(wallet, id),
            Backend::Postgres(pg) => pg.get_memory(wallet, id).await,
        }
    }

    /// The live records among `ids` of one wallet (order not kept; a deleted one is absent).
    pub async fn get_memories(
        &self,
        wallet: &Wallet,
        ids: &[[u8; 16]],
    ) -> Result<Vec<([u8; 16], Vec<u8>)>, StorageError> {
        match &self.backend {
            Backend::Embedded => {
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    if let Some(v) = self.local.get_memory(wallet, id)? {
                        out.push((*id, v));
                    }
                }
                Ok(out)
            }
            Backend::Postgres(pg) => pg.get_memories(wallet, ids).await,
        }
    }

    /// Deletes a wallet's record, durably (on every path: "not found" may be the answer
    /// because another delete got there first, which must be durable too). `Ok(false)` when
    /// the wallet has no such record.
    pub async fn delete_memory(
        &self,
        wallet: &Wallet,
        id: &[u8; 16],
    ) -> Result<bool, StorageError> {
        match &self.backend {
            Backend::Embedded => {
                let deleted = self.local.delete_memory(wallet, id)?;
                self.local.sync_memories().await?;
                Ok(deleted)
            }
            Backend::Postgres(pg) => pg.delete_memory(wallet, id).await,
        }
    }

    /// Deletes every record of a wallet, durably; returns how many there were.
    pub async fn forget_memories_of(&self, wallet: &Wallet) -> Result<usize, StorageError> {
        match &self.backend {
            Backend::Embedded => {
                let ids = self.local.memories_of(wallet).map(|r| r.map(|(id, _)| id));
                let ids: Vec<[u8; 16]> = ids.collect::<Result<_, _>>()?;
                for id in &ids {
                    self.local.delete_memory(wallet, id)?;
                }
                self.local.sync_memories().await?;
                Ok(ids.len())
            }
            Backend::Postgres(pg) => pg.forget_memories_of(wallet).await,
        }
    }

    /// Folds `f` over a wallet's records (`scan` of them; see `MemoryScan`) in id order, on a
    /// blocking thread, without holding them all at once where the backend streams (the
    /// embedded log). What the fold read is durable when it returns.
    pub async fn fold_memories<T, F>(
        &self,
        wallet: Wallet,
        scan: MemoryScan,
        init: T,
        mut f: F,
    ) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnMut(&mut T, [u8; 16], &[u8]) + Send + 'static,
    {
        let task = match &self.backend {
            Backend::Embedded => {
                let store = self.local.clone();
                tokio::task::spawn_blocking(move || {
                    let mut acc = init;
                    for item in store.memories_of(&wallet) {
                        let (id, bytes) = item?;
                        f(&mut acc, id, &bytes);
                    }
                    // The scan may have read a record whose writer still waits for its fsync:
                    // make what the caller will show durable first (free when nothing is due).
                    store.sync_memories_blocking()?;
                    Ok(acc)
                })
            }
            Backend::Postgres(pg) => {
                let rows = pg.memories_of(&wallet, &scan).await?;
                tokio::task::spawn_blocking(move || {
                    let mut acc = init;
                    for (id, bytes) in rows {
                        f(&mut acc, id, &bytes);
                    }
                    Ok(acc)
                })
            }
        };
        task.await
            .map_err(|e| StorageError::Sled(format!("memory scan task: {e}")))?
    }

    /// The end of the memory change feed now; `None` on the embedded backend, whose gateway
    /// is the only writer of its memories.
    pub async fn memory_cursor(&self) -> Result<Option<i64>, StorageError> {
        match &self.backend {
            Backend::Embedded => Ok(None),
            Backend::Postgres(pg) => pg.memory_cursor().await.map(Some),
        }
    }

    /// Records written (of `wallets`) or deleted (of any wallet) by any gateway since the
    /// feed's cursor, oldest first.
    pub async fn memory_changes(
        &self,
        feed: &mut ChangeFeed,
        wallets: &[Wallet],
    ) -> Result<Vec<MemoryChange>, StorageError> {
        match &self.backend {
            Backend::Embedded => Ok(Vec::new()),
            Backend::Postgres(pg) => pg.memory_changes(feed, wallets).await,
        }
    }

    /// Drops what a shared store keeps only for other gateways' sake: memory tombstones made
    /// before `tombstones_before_ms` and SIWE challenges expired at `now_s`.
    pub async fn prune_shared(
        &self,
        tombstones_before_ms: u64,
        now_s: u64,
    ) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Embedded => Ok(()),
            Backend::Postgres(pg) => {
                pg.prune_memory_tombstones(tombstones_before_ms).await?;
                pg.prune_siwe_nonces(now_s).await?;
                Ok(())
            }
        }
    }

    // === SIWE challenges ===

    /// Records a challenge where every gateway can spend it (a shared store; the embedded
    /// gateway keeps its challenges in memory and this does nothing).
    pub async fn put_siwe_nonce(
        &self,
        nonce: &str,
        wallet: &Wallet,
        issued_at: u64,
        expires_at: u64,
    ) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Embedded => Ok(()),
            Backend::Postgres(pg) => {
                pg.put_siwe_nonce(nonce, wallet, issued_at, expires_at)
                    .await
            }
        }
    }

    /// Spends a challenge recorded by `put_siwe_nonce` on any gateway: the wallet it was
    /// issued to, once, if it has not expired at `now_s` (always `None` on the embedded store).
    pub async fn take_siwe_nonce(
        &self,
        nonce: &str,
        now_s: u64,
    ) -> Result<Option<Wallet>, StorageError> {
        match &self.backend {
            Backend::Embedded => Ok(None),
            Backend::Postgres(pg) => pg.take_siwe_nonce(nonce, now_s).await,
        }
    }
}
