//! `Storage`'s settlement intents: sled's `intents` tree or PostgreSQL's `intents` table.
//!
//! Embedded, the gateway's own data directory holds its intents and start-up recovers every one
//! of them. On PostgreSQL an intent is owned by the replica that wrote it under a lease its
//! heartbeat renews (`pg::intents`); every write, removal and closing credit is fenced on that
//! ownership (`false`: another replica has claimed it), and `claim_intents` takes the intents
//! whose owner stopped beating. A write is durable when `put_intent_durable` returns (sled
//! fsynced, or PostgreSQL committed), before any settlement starts.

use super::{Backend, Storage};
use crate::storage::intents::{INTENT_TTL_MS, IntentRecord};
use crate::storage::{LedgerEntry, StorageError, now_ms};

/// At most this many orphans are claimed by one reconcile pass (the rest wait for the next).
const CLAIM_BATCH: u32 = 64;

impl Storage {
    /// Writes an intent and returns once it is durable; `false` when another replica owns an
    /// intent of that id (PostgreSQL).
    pub async fn put_intent_durable(&self, rec: &IntentRecord) -> Result<bool, StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.put_intent_durable(rec).await.map(|()| true),
            Backend::Postgres(pg) => pg.put_intent(rec, now_ms() + INTENT_TTL_MS).await,
        }
    }

    /// Rewrites an intent (embedded: without waiting for the disk; recovery tolerates losing
    /// the update); `false` when this replica no longer owns it.
    pub async fn update_intent(&self, rec: &IntentRecord) -> Result<bool, StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.update_intent(rec).map(|()| true),
            Backend::Postgres(pg) => pg.put_intent(rec, now_ms() + INTENT_TTL_MS).await,
        }
    }

    /// An intent this gateway holds: on PostgreSQL, `None` once another replica has claimed
    /// it (its owner resolves it; `settle::recover_later` stops looking).
    pub async fn intent(&self, id: &str) -> Result<Option<IntentRecord>, StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.intent(id),
            Backend::Postgres(pg) => pg.intent(id).await,
        }
    }

    /// Forgets a finished intent; `false` when this replica does not own it (PostgreSQL).
    pub async fn remove_intent(&self, id: &str) -> Result<bool, StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.remove_intent(id).map(|()| true),
            Backend::Postgres(pg) => pg.remove_intent(id).await,
        }
    }

    /// Every intent still open, of every replica sharing the store (status, the agent sweep).
    pub async fn intents(&self) -> Result<Vec<IntentRecord>, StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.intents(),
            Backend::Postgres(pg) => pg.intents().await,
        }
    }

    /// The intents this gateway must recover now. Embedded (start-up): every open intent, the
    /// previous run's. PostgreSQL: the intents whose owner's lease ran out (a replica that died
    /// or let them go), claimed for this replica in one statement.
    pub async fn claim_intents(&self) -> Result<Vec<IntentRecord>, StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.intents(),
            Backend::Postgres(pg) => {
                let now = now_ms();
                pg.claim_orphans(now, now + INTENT_TTL_MS, CLAIM_BATCH)
                    .await
            }
        }
    }

    /// Lets go of an intent this gateway stopped looking at: on PostgreSQL the next reconcile
    /// pass (any replica's) claims it; embedded, the next start-up recovers it.
    pub async fn release_intent(&self, id: &str) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Embedded => Ok(()),
            Backend::Postgres(pg) => pg.release_intent(id).await.map(drop),
        }
    }

    /// Makes what recovery finished durable (embedded: one fsync; PostgreSQL has committed).
    pub async fn sync_intents(&self) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.flush().await,
            Backend::Postgres(_) => Ok(()),
        }
    }

    /// Appends a credit that finishes the intent `intent`, durable when this returns, and
    /// forgets the intent. PostgreSQL: one transaction that writes the credit only if it deletes
    /// the intent this replica owns (`false`: another replica claimed it and credits it), so a
    /// payment is credited once across replicas. Embedded: the credit, then the removal (a
    /// crash between them leaves an intent whose recovery finds the credit's reference).
    pub async fn append_closing(
        &self,
        entry: &LedgerEntry,
        intent: &str,
    ) -> Result<bool, StorageError> {
        match &self.backend {
            Backend::Embedded => {
                self.local.append_durable(entry).await?;
                self.local.remove_intent(intent)?;
                Ok(true)
            }
            Backend::Postgres(pg) => {
                let done = pg.append_closing(entry, intent).await?;
                if done {
                    self.local.rollup.appended(std::slice::from_ref(entry), &[]);
                }
                Ok(done)
            }
        }
    }
}
