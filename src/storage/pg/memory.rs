//! Wallet memory and SIWE challenges in PostgreSQL, and the memory change feed.
//!
//! A memory record is one row of `memory_records` under (wallet, id); `value` is the record as
//! the embedded memory log holds it (`memory::record`'s encoding, vector included), so both
//! backends share one codec and a store moves between them byte for byte. A delete leaves a
//! tombstone (`deleted`, `deleted_ms`) with a fresh `change_seq`, so every replica's feed sees
//! it; `prune_memory_tombstones` removes tombstones older than every feed can lag. A write
//! keeps its (wallet, namespace) at the cap in the same transaction, under a transaction
//! advisory lock on the pair, so two replicas writing at once cannot both miss the other's row.

use super::changes::ChangeFeed;
use super::{PgStore, to_i64, to_u64};
use crate::storage::{MemoryChange, MemoryScan, StorageError};
use crate::wallet::Wallet;

/// The stored namespace of a record (`''` for none; a namespace is never empty).
fn ns_column(namespace: Option<&str>) -> &str {
    namespace.unwrap_or("")
}

fn id_of(raw: &[u8]) -> Result<[u8; 16], StorageError> {
    raw.try_into()
        .map_err(|_| StorageError::Codec("memory id: not 16 bytes".into()))
}

impl PgStore {
    /// Stores a record (replacing one of the same id) and forgets the oldest live records of
    /// its (wallet, namespace) past `cap` (0: no cap); returns the forgotten ids. Committed
    /// (durable) when this returns.
    pub async fn put_memory(
        &self,
        wallet: &Wallet,
        id: &[u8; 16],
        namespace: Option<&str>,
        value: &[u8],
        cap: usize,
    ) -> Result<Vec<[u8; 16]>, StorageError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let (w, ns, now) = (
            wallet.as_bytes().as_slice(),
            ns_column(namespace),
            to_i64(crate::storage::now_ms()),
        );
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(encode($1, 'hex') || '/' || $2, 0))",
            &[&w, &ns],
        )
        .await?;
        tx.execute(
            "INSERT INTO memory_records (wallet, id, namespace, value, created_ms)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (wallet, id) DO UPDATE SET namespace = EXCLUDED.namespace,
                 value = EXCLUDED.value, deleted = false, deleted_ms = NULL,
                 change_seq = nextval('memory_change_seq')",
            &[&w, &id.as_slice(), &ns, &value, &now],
        )
        .await?;
        let mut forgotten = Vec::new();
        if cap > 0 {
            let rows = tx
                .query(
                    "WITH doomed AS (
                         SELECT id FROM memory_records
                         WHERE wallet = $1 AND namespace = $2 AND NOT deleted
                         ORDER BY id DESC OFFSET $3)
                     UPDATE memory_records m SET deleted = true, deleted_ms = $4,
                         change_seq = nextval('memory_change_seq')
                     FROM doomed WHERE m.wallet = $1 AND m.id = doomed.id
                     RETURNING m.id",
                    &[&w, &ns, &to_i64(cap as u64), &now],
                )
                .await?;
            for row in rows {
                forgotten.push(id_of(row.try_get(0)?)?);
            }
        }
        tx.commit().await?;
        Ok(forgotten)
    }

    /// Rewrites a live record in place; `false` when it is gone (never resurrects a delete).
    pub async fn replace_memory(
        &self,
        wallet: &Wallet,
        id: &[u8; 16],
        value: &[u8],
    ) -> Result<bool, StorageError> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE memory_records SET value = $3, change_seq = nextval('memory_change_seq')
                 WHERE wallet = $1 AND id = $2 AND NOT deleted",
                &[&wallet.as_bytes().as_slice(), &id.as_slice(), &value],
            )
            .await?;
        Ok(n == 1)
    }

    /// One live record of a wallet.
    pub async fn get_memory(
        &self,
        wallet: &Wallet,
        id: &[u8; 16],
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT value FROM memory_records WHERE wallet = $1 AND id = $2 AND NOT deleted",
                &[&wallet.as_bytes().as_slice(), &id.as_slice()],
            )
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// The live records among `ids` of one wallet, in one round trip (order not kept).
    pub async fn get_memories(
        &self,
        wallet: &Wallet,
        ids: &[[u8; 16]],
    ) -> Result<Vec<([u8; 16], Vec<u8>)>, StorageError> {
        let ids: Vec<&[u8]> = ids.iter().map(<[u8; 16]>::as_slice).collect();
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, value FROM memory_records
                 WHERE wallet = $1 AND id = ANY($2) AND NOT deleted",
                &[&wallet.as_bytes().as_slice(), &ids],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((id_of(r.try_get(0)?)?, r.try_get(1)?)))
            .collect()
    }

    /// Tombstones a wallet's record; `false` when that wallet has no such live record.
    pub async fn delete_memory(
        &self,
        wallet: &Wallet,
        id: &[u8; 16],
    ) -> Result<bool, StorageError> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE memory_records SET deleted = true, deleted_ms = $3,
                     change_seq = nextval('memory_change_seq')
                 WHERE wallet = $1 AND id = $2 AND NOT deleted",
                &[
                    &wallet.as_bytes().as_slice(),
                    &id.as_slice(),
                    &to_i64(crate::storage::now_ms()),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    /// Tombstones every live record of a wallet; returns how many there were.
    pub async fn forget_memories_of(&self, wallet: &Wallet) -> Result<usize, StorageError> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE memory_records SET deleted = true, deleted_ms = $2,
                     change_seq = nextval('memory_change_seq')
                 WHERE wallet = $1 AND NOT deleted",
                &[
                    &wallet.as_bytes().as_slice(),
                    &to_i64(crate::storage::now_ms()),
                ],
            )
            .await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// A wallet's live records (one namespace's, or all), in id order (creation order).
    pub async fn memories_of(
        &self,
        wallet: &Wallet,
        scan: &MemoryScan,
    ) -> Result<Vec<([u8; 16], Vec<u8>)>, StorageError> {
        let c = self.client().await?;
        let w = wallet.as_bytes().as_slice();
        let rows = match scan {
            MemoryScan::All => {
                c.query(
                    "SELECT id, value FROM memory_records WHERE wallet = $1 AND NOT deleted
                     ORDER BY id",
                    &[&w],
                )
                .await?
            }
            MemoryScan::Namespace(ns) => {
                c.query(
                    "SELECT id, value FROM memory_records
                     WHERE wallet = $1 AND namespace = $2 AND NOT deleted ORDER BY id",
                    &[&w, &ns_column(ns.as_deref())],
                )
                .await?
            }
        };
        rows.iter()
            .map(|r| Ok((id_of(r.try_get(0)?)?, r.try_get(1)?)))
            .collect()
    }

    /// The current end of the memory feed.
    pub async fn memory_cursor(&self) -> Result<i64, StorageError> {
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT COALESCE(MAX(change_seq), 0) FROM memory_records",
                &[],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Records written or deleted since the feed's cursor, oldest change first; advances the
    /// feed. A live record's value is read only for the wallets in `wallets` (the ones whose
    /// indexes are loaded); other wallets' writes are skipped, their deletes still reported.
    pub async fn memory_changes(
        &self,
        feed: &mut ChangeFeed,
        wallets: &[Wallet],
    ) -> Result<Vec<MemoryChange>, StorageError> {
        let from = feed.from();
        let wallets: Vec<&[u8]> = wallets.iter().map(|w| w.as_bytes().as_slice()).collect();
        let rows = self
            .client()
            .await?
            .query(
                "SELECT wallet, id, deleted, change_seq,
                        CASE WHEN NOT deleted AND wallet = ANY($2) THEN value END, namespace
                 FROM memory_records WHERE change_seq > $1 ORDER BY change_seq",
                &[&from, &wallets],
            )
            .await?;
        let mut highest = feed.last().max(from);
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            highest = highest.max(row.try_get(3)?);
            let raw: &[u8] = row.try_get(0)?;
            let wallet = Wallet::from_slice(raw)
                .ok_or_else(|| StorageError::Codec("memory wallet: not a wallet".into()))?;
            let id = id_of(row.try_get(1)?)?;
            let deleted: bool = row.try_get(2)?;
            let value: Option<Vec<u8>> = row.try_get(4)?;
            let ns: String = row.try_get(5)?;
            let namespace = (!ns.is_empty()).then_some(ns);
            match (deleted, value) {
                (true, _) => out.push(MemoryChange {
                    wallet,
                    id,
                    namespace,
                    value: None,
                }),
                (false, Some(v)) => out.push(MemoryChange {
                    wallet,
                    id,
                    namespace,
                    value: Some(v),
                }),
                (false, None) => {}
            }
        }
        feed.record(highest);
        Ok(out)
    }

    /// Removes memory tombstones made before `before_ms`; returns how many.
    pub async fn prune_memory_tombstones(&self, before_ms: u64) -> Result<u64, StorageError> {
        Ok(self
            .client()
            .await?
            .execute(
                "DELETE FROM memory_records WHERE deleted AND deleted_ms < $1",
                &[&to_i64(before_ms)],
            )
            .await?)
    }

    // === SIWE challenges ===

    /// Records a challenge issued to `wallet`, valid until `expires_at` (Unix seconds).
    pub async fn put_siwe_nonce(
        &self,
        nonce: &str,
        wallet: &Wallet,
        issued_at: u64,
        expires_at: u64,
    ) -> Result<(), StorageError> {
        self.client()
            .await?
            .execute(
                "INSERT INTO siwe_nonces (nonce, wallet, issued_at, expires_at)
                 VALUES ($1, $2, $3, $4)",
                &[
                    &nonce,
                    &wallet.as_bytes().as_slice(),
                    &to_i64(issued_at),
                    &to_i64(expires_at),
                ],
            )
            .await?;
        Ok(())
    }

    /// Spends a challenge: the wallet it was issued to, if it is outstanding and not expired
    /// at `now` (Unix seconds). One statement, so of every gateway spending it at once,
    /// exactly one gets the wallet.
    pub async fn take_siwe_nonce(
        &self,
        nonce: &str,
        now: u64,
    ) -> Result<Option<Wallet>, StorageError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "DELETE FROM siwe_nonces WHERE nonce = $1 RETURNING wallet, expires_at",
                &[&nonce],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        if to_u64(row.try_get(1)?) <= now {
            return Ok(None);
        }
        let raw: &[u8] = row.try_get(0)?;
        Ok(Wallet::from_slice(raw))
    }

    /// Forgets challenges that expired before `now` (Unix seconds); returns how many.
    pub async fn prune_siwe_nonces(&self, now: u64) -> Result<u64, StorageError> {
        Ok(self
            .client()
            .await?
            .execute(
                "DELETE FROM siwe_nonces WHERE expires_at <= $1",
                &[&to_i64(now)],
            )
            .await?)
    }
}
