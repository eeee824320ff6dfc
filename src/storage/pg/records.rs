//! The record kinds that live in PostgreSQL: accounts, API keys, x402 nonces, sessions, idempotency.
//!
//! Each method has the meaning of the embedded `Store` method of the same name (the facade,
//! `storage::Storage`, picks one or the other); the single statements here make each one atomic
//! across every gateway sharing the database, as sled's compare-and-swap does within one.

use tokio_postgres::Row;

use super::{PgStore, to_i64, to_u64};
use crate::storage::{
    AccountRecord, IdemBegin, IdemRecord, KeyRecord, RefreshRecord, StorageError,
};
use crate::wallet::Wallet;

fn wallet_of(row: &Row, col: &str) -> Result<Wallet, StorageError> {
    let raw: &[u8] = row.try_get(col)?;
    Wallet::from_slice(raw).ok_or_else(|| StorageError::Codec(format!("{col}: not a wallet")))
}

fn opt_u64(v: Option<i64>) -> Option<u64> {
    v.map(to_u64)
}

pub(super) fn key_of(row: &Row) -> Result<KeyRecord, StorageError> {
    Ok(KeyRecord {
        key_id: row.try_get("key_id")?,
        wallet: wallet_of(row, "wallet")?,
        secret_sha256: row.try_get("secret_sha256")?,
        key_name: row.try_get("key_name")?,
        created_at: to_u64(row.try_get("created_at")?),
        last_used_at: opt_u64(row.try_get("last_used_at")?),
        revoked_at: opt_u64(row.try_get("revoked_at")?),
    })
}

impl PgStore {
    // === accounts ===

    /// Creates the account if it does not exist; returns `(record, created)`.
    pub async fn ensure_account(
        &self,
        wallet: &Wallet,
        now: u64,
    ) -> Result<(AccountRecord, bool), StorageError> {
        let c = self.client().await?;
        let w = wallet.as_bytes().as_slice();
        let inserted = c
            .query_opt(
                "INSERT INTO accounts (wallet, created_at) VALUES ($1, $2)
                 ON CONFLICT (wallet) DO NOTHING RETURNING created_at",
                &[&w, &to_i64(now)],
            )
            .await?;
        if let Some(row) = inserted {
            let created_at = to_u64(row.try_get(0)?);
            return Ok((
                AccountRecord {
                    wallet: *wallet,
                    created_at,
                },
                true,
            ));
        }
        match self.account(wallet).await? {
            Some(rec) => Ok((rec, false)),
            // Removed between the two statements (an agent sweep): it does not exist now.
            None => Box::pin(self.ensure_account(wallet, now)).await,
        }
    }

    pub async fn account(&self, wallet: &Wallet) -> Result<Option<AccountRecord>, StorageError> {
        let c = self.client().await?;
        let w = wallet.as_bytes().as_slice();
        let row = c
            .query_opt("SELECT created_at FROM accounts WHERE wallet = $1", &[&w])
            .await?;
        row.map(|r| {
            Ok(AccountRecord {
                wallet: *wallet,
                created_at: to_u64(r.try_get(0)?),
            })
        })
        .transpose()
    }

    /// Forgets an account record (not its keys, history or memory).
    pub async fn remove_account(&self, wallet: &Wallet) -> Result<(), StorageError> {
        let c = self.client().await?;
        let w = wallet.as_bytes().as_slice();
        c.execute("DELETE FROM accounts WHERE wallet = $1", &[&w])
            .await?;
        Ok(())
    }

    // === keys ===

    pub async fn put_key(&self, key: &KeyRecord) -> Result<(), StorageError> {
        let c = self.client().await?;
        let w = key.wallet.as_bytes().as_slice();
        c.execute(
            "INSERT INTO api_keys
                 (key_id, wallet, secret_sha256, key_name, created_at, last_used_at, revoked_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (key_id) DO UPDATE SET
                 wallet = EXCLUDED.wallet, secret_sha256 = EXCLUDED.secret_sha256,
                 key_name = EXCLUDED.key_name, created_at = EXCLUDED.created_at,
                 last_used_at = EXCLUDED.last_used_at, revoked_at = EXCLUDED.revoked_at,
                 change_seq = nextval('auth_change_seq')",
            &[
                &key.key_id,
                &w,
                &key.secret_sha256,
                &key.key_name,
                &to_i64(key.created_at),
                &key.last_used_at.map(to_i64),
                &key.revoked_at.map(to_i64),
            ],
        )
        .await?;
        Ok(())
    }

    /// Writes a snapshot's `last_used_at` without undoing anything newer: a stored revocation
    /// stays, `last_used_at` only moves forward, and a deleted key stays deleted.
    pub async fn touch_key(&self, snapshot: &KeyRecord) -> Result<(), StorageError> {
        let c = self.client().await?;
        c.execute(
            "UPDATE api_keys SET
                 last_used_at = GREATEST(last_used_at, $2),
                 revoked_at = COALESCE(revoked_at, $3)
             WHERE key_id = $1",
            &[
                &snapshot.key_id,
                &snapshot.last_used_at.map(to_i64),
                &snapshot.revoked_at.map(to_i64),
            ],
        )
        .await?;
        Ok(())
    }

    pub async fn all_keys(&self) -> Result<Vec<KeyRecord>, StorageError> {
        let c = self.client().await?;
        c.query(
            "SELECT key_id, wallet, secret_sha256, key_name, created_at, last_used_at, revoked_at
             FROM api_keys ORDER BY key_id",
            &[],
        )
        .await?
        .iter()
        .map(key_of)
        .collect()
    }

    /// Deletes a key record (not revokes: the key no longer exists at all).
    pub async fn remove_key(&self, key_id: &str) -> Result<(), StorageError> {
        let c = self.client().await?;
        c.execute("DELETE FROM api_keys WHERE key_id = $1", &[&key_id])
            .await?;
        Ok(())
    }

    // === x402 nonces ===

    /// Claims an authorization nonce exactly once across every gateway: the primary key lets
    /// one insert through, every later one finds the row.
    pub async fn claim_x402_nonce(
        &self,
        key: &[u8; 80],
        valid_before: u64,
    ) -> Result<bool, StorageError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "INSERT INTO x402_nonces (nonce_key, valid_before, claimed_ms)
                 VALUES ($1, $2, $3) ON CONFLICT (nonce_key) DO NOTHING",
                &[
                    &key.as_slice(),
                    &to_i64(valid_before),
                    &to_i64(crate::storage::now_ms()),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    /// Drops the claim of `key`; `Ok(false)` when it was not claimed.
    pub async fn release_x402_nonce(&self, key: &[u8; 80]) -> Result<bool, StorageError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "DELETE FROM x402_nonces WHERE nonce_key = $1",
                &[&key.as_slice()],
            )
            .await?;
        Ok(n == 1)
    }

    /// Forgets claims whose authorization expired before `now_s`.
    pub async fn prune_x402_nonces(&self, now_s: u64) -> Result<usize, StorageError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "DELETE FROM x402_nonces WHERE valid_before < $1",
                &[&to_i64(now_s)],
            )
            .await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    // === sessions ===

    pub async fn put_refresh(&self, id: &str, rec: &RefreshRecord) -> Result<(), StorageError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO refresh_tokens (id, family, wallet, expires_at, used)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET family = EXCLUDED.family,
                 wallet = EXCLUDED.wallet, expires_at = EXCLUDED.expires_at, used = EXCLUDED.used",
            &[
                &id,
                &rec.family,
                &rec.wallet.as_bytes().as_slice(),
                &to_i64(rec.expires_at),
                &rec.used,
            ],
        )
        .await?;
        Ok(())
    }

    /// Marks a refresh token used and returns it as it was before: of two gateways spending
    /// the same token at once, the second waits on the row lock and sees `used == true`.
    pub async fn spend_refresh(&self, id: &str) -> Result<Option<RefreshRecord>, StorageError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "UPDATE refresh_tokens r SET used = true
                 FROM (SELECT id, used FROM refresh_tokens WHERE id = $1 FOR UPDATE) old
                 WHERE r.id = old.id
                 RETURNING r.family, r.wallet, r.expires_at, old.used",
                &[&id],
            )
            .await?;
        row.map(|r| {
            Ok(RefreshRecord {
                family: r.try_get("family")?,
                wallet: wallet_of(&r, "wallet")?,
                expires_at: to_u64(r.try_get("expires_at")?),
                used: r.try_get("used")?,
            })
        })
        .transpose()
    }

    pub async fn revoke_family(&self, family: &str, now: u64) -> Result<(), StorageError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO revoked_families (family, revoked_at) VALUES ($1, $2)
             ON CONFLICT (family) DO NOTHING",
            &[&family, &to_i64(now)],
        )
        .await?;
        Ok(())
    }

    pub async fn revoked_families(&self) -> Result<Vec<String>, StorageError> {
        let c = self.client().await?;
        c.query("SELECT family FROM revoked_families ORDER BY family", &[])
            .await?
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect()
    }

    // === idempotency ===

    /// Claims `key` (`Store::idem_begin`): one upsert takes a free or stale slot; otherwise the
    /// current record decides between replay, conflict and in progress.
    pub async fn idem_begin(
        &self,
        key: &[u8],
        body_sha256: &str,
        now: u64,
        expire_before: u64,
        claims_before: u64,
    ) -> Result<IdemBegin, StorageError> {
        let c = self.client().await?;
        // A record deleted between the two statements is retried; the loop ends because each
        // round either claims the slot or reads a record.
        for _ in 0..8 {
            let claimed = c
                .query_opt(
                    "INSERT INTO idempotency AS i (slot, body_sha256, status, body, created_at)
                     VALUES ($1, $2, 0, '', $3)
                     ON CONFLICT (slot) DO UPDATE SET body_sha256 = EXCLUDED.body_sha256,
                         status = 0, body = '', created_at = EXCLUDED.created_at
                     WHERE (i.status = 0 AND i.created_at < $5)
                        OR (i.status <> 0 AND i.created_at < $4)
                     RETURNING 1",
                    &[
                        &key,
                        &body_sha256,
                        &to_i64(now),
                        &to_i64(expire_before),
                        &to_i64(claims_before),
                    ],
                )
                .await?;
            if claimed.is_some() {
                return Ok(IdemBegin::Fresh);
            }
            let Some(row) = c
                .query_opt(
                    "SELECT body_sha256, status, body, created_at FROM idempotency WHERE slot = $1",
                    &[&key],
                )
                .await?
            else {
                continue;
            };
            let cur = IdemRecord {
                body_sha256: row.try_get(0)?,
                status: u16::try_from(row.try_get::<_, i32>(1)?).unwrap_or(0),
                body: row.try_get(2)?,
                created_at: to_u64(row.try_get(3)?),
            };
            return Ok(if cur.body_sha256 != body_sha256 {
                IdemBegin::Conflict
            } else if cur.status == 0 {
                IdemBegin::InProgress
            } else {
                IdemBegin::Replay(cur)
            });
        }
        Err(super::DbError::Statement("idempotency slot kept changing".into()).into())
    }

    /// Stores the answer (or, with `None`, forgets the key so the request can be retried).
    pub async fn idem_finish(
        &self,
        key: &[u8],
        record: Option<&IdemRecord>,
    ) -> Result<(), StorageError> {
        let c = self.client().await?;
        match record {
            Some(r) => {
                c.execute(
                    "INSERT INTO idempotency (slot, body_sha256, status, body, created_at)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (slot) DO UPDATE SET body_sha256 = EXCLUDED.body_sha256,
                         status = EXCLUDED.status, body = EXCLUDED.body,
                         created_at = EXCLUDED.created_at",
                    &[
                        &key,
                        &r.body_sha256,
                        &i32::from(r.status),
                        &r.body,
                        &to_i64(r.created_at),
                    ],
                )
                .await?
            }
            None => {
                c.execute("DELETE FROM idempotency WHERE slot = $1", &[&key])
                    .await?
            }
        };
        Ok(())
    }

    /// Forgets answers stored before `expire_before` and claims made before `claims_before`.
    pub async fn idem_sweep(
        &self,
        expire_before: u64,
        claims_before: u64,
    ) -> Result<usize, StorageError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "DELETE FROM idempotency
                 WHERE (status = 0 AND created_at < $2) OR (status <> 0 AND created_at < $1)",
                &[&to_i64(expire_before), &to_i64(claims_before)],
            )
            .await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}
