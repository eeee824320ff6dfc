//! Settlement intents in PostgreSQL, each owned by one replica under a lease (ARCHITECTURE.md,
//! "Settlement intents", the cross-replica protocol).
//!
//! An `intents` row is written (committed, so durable) before its payment goes to the
//! facilitator, owned by the replica that wrote it, with `lease_until` = now + `TTL`; the
//! owner's heartbeat (`leases::heartbeat`) pushes the lease of all of its intents in the same
//! transaction as its credit leases. Every change the owner makes is fenced on `owner = me`,
//! so once another replica has claimed a row, the old owner (alive after all: a long pause, a
//! partition) can neither rewrite nor remove it, nor credit it: the credit that finishes an
//! intent is inserted in the transaction that deletes the row `WHERE owner = me`
//! (`PgStore::append_closing`), and rolled back when that deletes nothing. `claim_orphans` is
//! one `UPDATE … WHERE lease_until < now … RETURNING`: of replicas racing for an orphan exactly
//! one gets it (the others' rechecks see the new lease), and the winner resolves it as start-up
//! recovery does.

use super::{PgStore, to_i64};
use crate::storage::StorageError;
use crate::storage::intents::{IntentRecord, IntentState};

fn state_name(s: &IntentState) -> &'static str {
    match s {
        IntentState::Pending => "pending",
        IntentState::Settled { .. } => "settled",
        IntentState::Unresolved { .. } => "unresolved",
    }
}

fn record_of(row: &tokio_postgres::Row) -> Result<IntentRecord, StorageError> {
    let text: &str = row.try_get("record")?;
    Ok(serde_json::from_str(text)?)
}

/// Writes an intent owned by `$2`, or rewrites it if this replica owns it: nothing when another
/// replica does.
const PUT: &str = "
INSERT INTO intents AS i (id, owner, lease_until, state, record, created_ms)
VALUES ($1, $2, $3, $4, ($5::text)::jsonb, $6)
ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, record = EXCLUDED.record
    WHERE i.owner = EXCLUDED.owner";

/// Takes every claimable intent whose owner's lease ran out (its replica died, shut down, or
/// gave it back), up to `$4` of them.
const CLAIM: &str = "
UPDATE intents SET owner = $1, lease_until = $2
WHERE id IN (
    SELECT id FROM intents WHERE lease_until < $3 AND state <> 'unresolved'
    ORDER BY lease_until LIMIT $4 FOR UPDATE SKIP LOCKED)
  AND lease_until < $3
RETURNING record::text AS record";

impl PgStore {
    /// Writes `rec` owned by this replica until `lease_until` (committed when this returns);
    /// `false` when another replica owns a row of that id.
    pub async fn put_intent(
        &self,
        rec: &IntentRecord,
        lease_until: u64,
    ) -> Result<bool, StorageError> {
        let c = self.client().await?;
        let json = serde_json::to_string(rec)?;
        let n = c
            .execute(
                PUT,
                &[
                    &rec.id,
                    &&*self.replica,
                    &to_i64(lease_until),
                    &state_name(&rec.state),
                    &json,
                    &to_i64(rec.created_ms),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    /// An intent this replica owns (`None` when it is gone or another replica claimed it).
    pub async fn intent(&self, id: &str) -> Result<Option<IntentRecord>, StorageError> {
        let c = self.client().await?;
        c.query_opt(
            "SELECT record::text AS record FROM intents WHERE id = $1 AND owner = $2",
            &[&id, &&*self.replica],
        )
        .await?
        .as_ref()
        .map(record_of)
        .transpose()
    }

    /// Every open intent of every replica, oldest first.
    pub async fn intents(&self) -> Result<Vec<IntentRecord>, StorageError> {
        let c = self.client().await?;
        c.query(
            "SELECT record::text AS record FROM intents ORDER BY created_ms, id",
            &[],
        )
        .await?
        .iter()
        .map(record_of)
        .collect()
    }

    /// Forgets a finished intent this replica owns; `false` when it does not own it (another
    /// replica claimed it, or it is gone).
    pub async fn remove_intent(&self, id: &str) -> Result<bool, StorageError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "DELETE FROM intents WHERE id = $1 AND owner = $2",
                &[&id, &&*self.replica],
            )
            .await?;
        Ok(n == 1)
    }

    /// Gives up this replica's lease on an intent it stopped looking at, so the next reconcile
    /// pass (of any replica, this one included) claims it again.
    pub async fn release_intent(&self, id: &str) -> Result<bool, StorageError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE intents SET lease_until = 0 WHERE id = $1 AND owner = $2",
                &[&id, &&*self.replica],
            )
            .await?;
        Ok(n == 1)
    }

    /// Claims up to `limit` intents whose lease ran out before `now_ms`, for this replica until
    /// `lease_until`; returns them. One statement: two replicas never both take one.
    pub async fn claim_orphans(
        &self,
        now_ms: u64,
        lease_until: u64,
        limit: u32,
    ) -> Result<Vec<IntentRecord>, StorageError> {
        let c = self.client().await?;
        c.query(
            CLAIM,
            &[
                &&*self.replica,
                &to_i64(lease_until),
                &to_i64(now_ms),
                &i64::from(limit),
            ],
        )
        .await?
        .iter()
        .map(record_of)
        .collect()
    }
}
