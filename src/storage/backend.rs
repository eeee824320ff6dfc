//! `Storage`, the one store the gateway holds: a facade over the embedded backend and PostgreSQL.
//!
//! The API layer, auth, billing, payments and agents hold a `Storage` and never name a backend.
//! Each record kind that lives in PostgreSQL when `store.backend = "postgres"` has an `async`
//! method here that picks the backend; the embedded backend (`Store`: sled plus the history and
//! memory logs) answers the rest through `Deref` until their kind moves too (see
//! ARCHITECTURE.md, "Storage backends", for which kinds have moved). A method defined here
//! shadows `Store`'s method of the same name, so a moved kind cannot be reached past the facade
//! by accident: the call would have to name `Store` itself.

mod agents;
mod intents;
mod memory;

use std::collections::HashMap;
use std::ops::Deref;

pub use self::memory::{MemoryChange, MemoryScan};
use super::AccountRecord;
use super::pages::{Page, UsageFilter};
use super::pg::buckets::Borrowed;
use super::pg::{AuthChanges, ChangeFeed, PgStore};
use super::{
    IdemBegin, IdemRecord, KeyRecord, KeyTotals, LedgerEntry, LedgerKind, RefreshRecord,
    StorageError, Store, UsageEvent,
};
use crate::wallet::Wallet;

/// The gateway's store. Cloning is cheap.
#[derive(Clone)]
pub struct Storage {
    /// The embedded store: everything with `Backend::Embedded`; with `Backend::Postgres`, the
    /// record kinds that have not moved to PostgreSQL yet.
    local: Store,
    backend: Backend,
}

/// Where the moved record kinds live.
#[derive(Clone)]
enum Backend {
    Embedded,
    Postgres(PgStore),
}

impl Deref for Storage {
    type Target = Store;

    fn deref(&self) -> &Store {
        &self.local
    }
}

impl Storage {
    /// Everything in the embedded store (the default backend).
    pub fn embedded(local: Store) -> Self {
        Self {
            local,
            backend: Backend::Embedded,
        }
    }

    /// The moved record kinds in PostgreSQL, the rest in `local`. The console's rollup is
    /// rebuilt from the database's history (as the embedded store rebuilds it from its log).
    pub async fn postgres(local: Store, pg: PgStore) -> Result<Self, StorageError> {
        pg.replay_history(&local.rollup).await?;
        pg.load_seen().await?;
        Ok(Self {
            local,
            backend: Backend::Postgres(pg),
        })
    }

    /// The backend's name, as `store.backend` spells it.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Embedded => "embedded",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// True when other gateways may share this store (PostgreSQL): start-up must not treat
    /// in-flight claims as abandoned, since another replica may be serving them.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Liveness probe for `/readyz`: every backend in use answers.
    pub async fn check(&self) -> Result<(), StorageError> {
        self.local.check()?;
        match &self.backend {
            Backend::Embedded => Ok(()),
            Backend::Postgres(pg) => pg.check().await,
        }
    }

    /// The end of the auth change feed now (`pg::ChangeFeed`); `None` on the embedded backend,
    /// whose gateway is the only writer of its keys and sessions.
    pub async fn auth_cursor(&self) -> Result<Option<i64>, StorageError> {
        match &self.backend {
            Backend::Embedded => Ok(None),
            Backend::Postgres(pg) => pg.auth_cursor().await.map(Some),
        }
    }

    /// Keys and revoked families other gateways wrote since the feed's cursor.
    pub async fn auth_changes(&self, feed: &mut ChangeFeed) -> Result<AuthChanges, StorageError> {
        match &self.backend {
            Backend::Embedded => Ok(AuthChanges::default()),
            Backend::Postgres(pg) => pg.auth_changes(feed).await,
        }
    }

    // === accounts ===

    /// Creates the account if it does not exist; returns `(record, created)`.
    pub async fn ensure_account(
        &self,
        wallet: &Wallet,
        now: u64,
    ) -> Result<(AccountRecord, bool), StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.ensure_account(wallet, now),
            Backend::Postgres(pg) => pg.ensure_account(wallet, now).await,
        }
    }

    pub async fn account(&self, wallet: &Wallet) -> Result<Option<AccountRecord>, StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.account(wallet),
            Backend::Postgres(pg) => pg.account(wallet).await,
        }
    }

    /// Forgets an account record (not its keys, history or memory).
    pub async fn remove_account(&self, wallet: &Wallet) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.remove_account(wallet),
            Backend::Postgres(pg) => pg.remove_account(wallet).await,
        }
    }

    // === keys ===

    pub async fn put_key(&self, key: &KeyRecord) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.put_key(key),
            Backend::Postgres(pg) => pg.put_key(key).await,
        }
    }

    /// Writes a key snapshot taken earlier without undoing anything newer (`Store::touch_key`).
    pub async fn touch_key(&self, snapshot: &KeyRecord) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.touch_key(snapshot),
            Backend::Postgres(pg) => pg.touch_key(snapshot).await,
        }
    }

    pub async fn all_keys(&self) -> Result<Vec<KeyRecord>, StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.all_keys(),
            Backend::Postgres(pg) => pg.all_keys().await,
        }
    }

    /// Deletes a key record (not revokes: the key no longer exists at all).
    pub async fn remove_key(&self, key_id: &str) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.remove_key(key_id),
            Backend::Postgres(pg) => pg.remove_key(key_id).await,
        }
    }

    // === x402 nonces ===

    /// Claims an authorization nonce exactly once, across every gateway sharing the store.
    pub async fn claim_x402_nonce(
        &self,
        key: &[u8; 80],
        valid_before: u64,
    ) -> Result<bool, StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.claim_x402_nonce(key, valid_before),
            Backend::Postgres(pg) => pg.claim_x402_nonce(key, valid_before).await,
        }
    }

    /// Drops the claim of `key`; `Ok(false)` when it was not claimed.
    pub async fn release_x402_nonce(&self, key: &[u8; 80]) -> Result<bool, StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.release_x402_nonce(key),
            Backend::Postgres(pg) => pg.release_x402_nonce(key).await,
        }
    }

    /// Forgets claims whose authorization expired before `now_s`.
    pub async fn prune_x402_nonces(&self, now_s: u64) -> Result<usize, StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.prune_x402_nonces(now_s),
            Backend::Postgres(pg) => pg.prune_x402_nonces(now_s).await,
        }
    }

    // === sessions ===

    pub async fn put_refresh(&self, id: &str, rec: &RefreshRecord) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.put_refresh(id, rec),
            Backend::Postgres(pg) => pg.put_refresh(id, rec).await,
        }
    }

    /// Marks a refresh token used; returns it as it was before (so `used == true` means reuse).
    pub async fn spend_refresh(&self, id: &str) -> Result<Option<RefreshRecord>, StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.spend_refresh(id),
            Backend::Postgres(pg) => pg.spend_refresh(id).await,
        }
    }

    pub async fn revoke_family(&self, family: &str, now: u64) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.revoke_family(family, now),
            Backend::Postgres(pg) => pg.revoke_family(family, now).await,
        }
    }

    pub async fn revoked_families(&self) -> Result<Vec<String>, StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.revoked_families(),
            Backend::Postgres(pg) => pg.revoked_families().await,
        }
    }

    // === idempotency ===

    /// Claims `key` for a request whose body hashes to `body_sha256` (`Store::idem_begin`).
    pub async fn idem_begin(
        &self,
        key: &[u8],
        body_sha256: &str,
        now: u64,
        expire_before: u64,
        claims_before: u64,
    ) -> Result<IdemBegin, StorageError> {
        match &self.backend {
            Backend::Embedded => {
                self.local
                    .idem_begin(key, body_sha256, now, expire_before, claims_before)
            }
            Backend::Postgres(pg) => {
                pg.idem_begin(key, body_sha256, now, expire_before, claims_before)
                    .await
            }
        }
    }

    /// Stores the answer (or, with `None`, forgets the key so the request can be retried).
    pub async fn idem_finish(
        &self,
        key: &[u8],
        record: Option<&IdemRecord>,
    ) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.idem_finish(key, record),
            Backend::Postgres(pg) => pg.idem_finish(key, record).await,
        }
    }

    /// Forgets answers stored before `expire_before` and claims made before `claims_before`.
    pub async fn idem_sweep(
        &self,
        expire_before: u64,
        claims_before: u64,
    ) -> Result<usize, StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.idem_sweep(expire_before, claims_before),
            Backend::Postgres(pg) => pg.idem_sweep(expire_before, claims_before).await,
        }
    }

    // === ledger and usage history ===

    /// Appends a journal window. Embedded: not durable yet, returns the log offset to pass to
    /// `sync_history`. PostgreSQL: durable (and moved into `balances`) once it returns.
    pub async fn append(
        &self,
        ledger: &[LedgerEntry],
        usage: &[(Wallet, UsageEvent)],
    ) -> Result<u64, StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.append(ledger, usage),
            Backend::Postgres(pg) => {
                pg.append_history(ledger, usage).await?;
                self.local.rollup.appended(ledger, usage);
                Ok(0)
            }
        }
    }

    /// Waits until the history is durable up to `upto` (an offset `append` returned).
    pub async fn sync_history(&self, upto: u64) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.sync_history(upto).await,
            Backend::Postgres(_) => Ok(()),
        }
    }

    /// Appends one entry and returns once it is durable (money in).
    pub async fn append_durable(&self, entry: &LedgerEntry) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.append_durable(entry).await,
            Backend::Postgres(pg) => {
                pg.append_history(std::slice::from_ref(entry), &[]).await?;
                self.local.rollup.appended(std::slice::from_ref(entry), &[]);
                Ok(())
            }
        }
    }

    /// Every wallet's balance, the signed sum of its ledger (start-up and checks only).
    pub async fn balances(&self) -> Result<HashMap<Wallet, i128>, StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.balances(),
            Backend::Postgres(pg) => pg.balances().await,
        }
    }

    /// A key's chat totals (calls, tokens, credits) as recorded so far.
    pub async fn key_totals(
        &self,
        wallet: &Wallet,
        key_id: &str,
    ) -> Result<KeyTotals, StorageError> {
        match &self.backend {
            Backend::Embedded => Ok(self.local.key_totals(wallet, key_id)),
            Backend::Postgres(pg) => pg.key_totals(wallet, key_id).await,
        }
    }

    /// A page of `wallet`'s ledger, newest first, of one kind or all (`pages`).
    pub async fn ledger_page(
        &self,
        wallet: &Wallet,
        kind: Option<LedgerKind>,
        offset: usize,
        limit: usize,
    ) -> Result<Page<LedgerEntry>, StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.ledger_page(wallet, kind, offset, limit),
            Backend::Postgres(pg) => pg.ledger_page(wallet, kind, offset, limit).await,
        }
    }

    /// A page of `wallet`'s usage events, newest first (`pages`).
    pub async fn usage_page(
        &self,
        wallet: &Wallet,
        filter: UsageFilter<'_>,
        offset: usize,
        limit: usize,
    ) -> Result<Page<UsageEvent>, StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.usage_page(wallet, filter, offset, limit),
            Backend::Postgres(pg) => pg.usage_page(wallet, filter, offset, limit).await,
        }
    }

    /// A wallet's whole ledger, newest first (checks and tests; pages use `ledger_page`).
    pub async fn ledger_of(&self, wallet: &Wallet) -> Result<Vec<LedgerEntry>, StorageError> {
        Ok(self.ledger_page(wallet, None, 0, usize::MAX).await?.items)
    }

    /// A wallet's whole usage history, newest first (checks and tests).
    pub async fn usage_of(&self, wallet: &Wallet) -> Result<Vec<UsageEvent>, StorageError> {
        Ok(self
            .usage_page(wallet, UsageFilter::All, 0, usize::MAX)
            .await?
            .items)
    }

    /// True when `wallet` has any ledger entry (money ever reached it).
    pub async fn has_ledger(&self, wallet: &Wallet) -> Result<bool, StorageError> {
        match &self.backend {
            Backend::Embedded => Ok(self.local.has_ledger(wallet)),
            Backend::Postgres(pg) => pg.has_ledger(wallet).await,
        }
    }

    /// True when `wallet`'s ledger has an entry with `reference` written at or after
    /// `since_ms` (`Store::ledger_has_reference`).
    pub async fn ledger_has_reference(
        &self,
        wallet: &Wallet,
        reference: &str,
        since_ms: u64,
    ) -> Result<bool, StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.ledger_has_reference(wallet, reference, since_ms),
            Backend::Postgres(pg) => {
                pg.ledger_has_reference(
                    wallet,
                    reference,
                    since_ms.saturating_sub(super::intents::REORDER_SLACK_MS),
                )
                .await
            }
        }
    }

    /// Folds what other gateways appended to the shared history since the last call into the
    /// console's rollup (`PgStore::follow_history`); nothing to do on the embedded store.
    pub async fn follow_history(&self) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Embedded => Ok(()),
            Backend::Postgres(pg) => pg.follow_history(&self.local.rollup).await,
        }
    }

    /// Forgets a wallet's ledger and usage history and its key totals (a swept agent).
    pub async fn forget_history(&self, wallet: &Wallet) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.forget_history(wallet).await,
            Backend::Postgres(pg) => {
                pg.forget_history(wallet).await?;
                self.local.rollup.forget(wallet);
                Ok(())
            }
        }
    }

    // === credit leases (`billing::lease`; PostgreSQL only) ===

    /// Leases `n` credits of `wallet`'s free balance to this replica until `expires_ms`;
    /// `false` when that much is not free (or on the embedded backend, which has no leases).
    pub async fn lease(
        &self,
        wallet: &Wallet,
        n: u64,
        expires_ms: u64,
    ) -> Result<bool, StorageError> {
        match &self.backend {
            Backend::Embedded => Ok(false),
            Backend::Postgres(pg) => Ok(pg
                .lease(wallet, pg.replica(), n, super::now_ms(), expires_ms)
                .await?
                .is_some()),
        }
    }

    /// Gives `n` unused credits of this replica's lease back; `false` when the lease no longer
    /// holds them (recovered meanwhile).
    pub async fn unlease(&self, wallet: &Wallet, n: u64) -> Result<bool, StorageError> {
        match &self.backend {
            Backend::Embedded => Ok(false),
            Backend::Postgres(pg) => Ok(pg.unlease(wallet, pg.replica(), n).await?.is_some()),
        }
    }

    /// Renews this replica's heartbeat and its leases' expiry.
    pub async fn heartbeat(&self, expires_ms: u64) -> Result<u64, StorageError> {
        match &self.backend {
            Backend::Embedded => Ok(0),
            Backend::Postgres(pg) => {
                pg.heartbeat(pg.replica(), super::now_ms(), expires_ms)
                    .await
            }
        }
    }

    /// Recovers the leases that expired before `now_ms`; returns the credits recovered.
    pub async fn recover_expired_leases(&self, now_ms: u64) -> Result<u64, StorageError> {
        match &self.backend {
            Backend::Embedded => Ok(0),
            Backend::Postgres(pg) => pg.recover_expired(now_ms).await,
        }
    }

    /// Gives back every lease of this replica and forgets it; returns the credits given back.
    pub async fn release_leases(&self) -> Result<u64, StorageError> {
        match &self.backend {
            Backend::Embedded => Ok(0),
            Backend::Postgres(pg) => pg.release_replica(pg.replica()).await,
        }
    }

    /// A debit charged in memory and journaled, not yet in the database.
    pub fn note_pending(&self, wallet: &Wallet, credits: u64) {
        match &self.backend {
            Backend::Embedded => {}
            Backend::Postgres(pg) => pg.note_pending(wallet, credits),
        }
    }

    /// The balance this gateway knows of on a shared store (`None` on the embedded backend,
    /// whose credit table is the truth).
    pub fn known_balance(&self, wallet: &Wallet) -> Option<u64> {
        match &self.backend {
            Backend::Embedded => None,
            Backend::Postgres(pg) => Some(pg.known_balance(wallet)),
        }
    }

    /// Reads `wallet`'s totals from the shared store into `known_balance` (no-op embedded).
    pub async fn refresh_balance(&self, wallet: &Wallet) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Embedded => Ok(()),
            Backend::Postgres(pg) => pg.seen(wallet).await.map(drop),
        }
    }

    // === rate limits ===

    /// Takes up to `want` tokens from the bucket of `(scope, class)` that every gateway on this
    /// store shares (`pg::buckets`); `None` when the store is this gateway's alone (each
    /// gateway's own buckets are then the limit).
    pub async fn borrow_rate_tokens(
        &self,
        scope: &str,
        class: &str,
        want: u32,
        capacity: u32,
        per_min: u32,
    ) -> Result<Option<Borrowed>, StorageError> {
        match &self.backend {
            Backend::Embedded => Ok(None),
            Backend::Postgres(pg) => pg
                .borrow_rate_tokens(scope, class, want, capacity, per_min)
                .await
                .map(Some),
        }
    }
}
