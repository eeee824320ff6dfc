//! Agent accounts in PostgreSQL: the records, the due index, and the pin/doom protocol that keeps
//! a sweep on one replica from deleting an agent that money is on its way to through another.
//!
//! Embedded, `Agents::gate` orders pins against sweeps in one process. Across replicas the row
//! does: `pin` sets `pinned_until` (now + `PIN_TTL_MS`) only on a row that is not `doomed`, and a
//! sweep first dooms the row only while `pinned_until` has passed and it is unfunded; both are one
//! conditional `UPDATE`, so the row lock orders them. Doomed first: the pin finds nothing and
//! the payment is refused before anything settles. Pinned first: the sweep keeps the agent, and
//! by the time the pin lapses the payment's intent is in `intents` (the sweep's owed check) or
//! its credit is in the ledger (funded), or nothing moved. A doomed row can no longer be funded
//! either; the sweep deletes keys, memory and history, and the row last, so a sweep that died
//! midway is finished by the next one (a doomed row stays due).

use super::{PgStore, to_i64, to_u64};
use crate::storage::StorageError;
use crate::storage::agents::AgentRecord;
use crate::wallet::Wallet;

/// How long a pin holds an agent against every replica's sweep: far longer than a payment
/// takes from its pin to its intent being written (one `/verify`).
pub const PIN_TTL_MS: u64 = 10 * 60 * 1000;

const COLS: &str = "record::text AS record, funded_ms";

fn record_of(row: &tokio_postgres::Row) -> Result<AgentRecord, StorageError> {
    let text: &str = row.try_get("record")?;
    let mut rec: AgentRecord = serde_json::from_str(text)?;
    rec.funded_ms = row.try_get::<_, Option<i64>>("funded_ms")?.map(to_u64);
    Ok(rec)
}

impl PgStore {
    /// Stores a new agent; `false` if the account already has one.
    pub async fn insert_agent(&self, rec: &AgentRecord) -> Result<bool, StorageError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "INSERT INTO agents (account, record, deadline_ms, funded_ms)
                 VALUES ($1, ($2::text)::jsonb, $3, $4) ON CONFLICT (account) DO NOTHING",
                &[
                    &rec.account.as_bytes().as_slice(),
                    &serde_json::to_string(rec)?,
                    &to_i64(rec.deadline_ms),
                    &rec.funded_ms.map(to_i64),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    /// An agent's record, until the sweep removes it (as embedded: the record goes last, after
    /// its keys, memory and history; a doomed agent can no longer be pinned or funded).
    pub async fn agent(&self, account: &Wallet) -> Result<Option<AgentRecord>, StorageError> {
        let c = self.client().await?;
        c.query_opt(
            &format!("SELECT {COLS} FROM agents WHERE account = $1"),
            &[&account.as_bytes().as_slice()],
        )
        .await?
        .as_ref()
        .map(record_of)
        .transpose()
    }

    /// Pins a live agent until `until_ms` against every replica's sweep; `false` when there is
    /// no such agent (or a sweep has doomed it).
    pub async fn pin_agent(&self, account: &Wallet, until_ms: u64) -> Result<bool, StorageError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE agents SET pinned_until = greatest(pinned_until, $2)
                 WHERE account = $1 AND NOT doomed",
                &[&account.as_bytes().as_slice(), &to_i64(until_ms)],
            )
            .await?;
        Ok(n == 1)
    }

    /// Dooms an unfunded agent whose pins have lapsed by `now_ms` (or one a sweep doomed
    /// before); `false` when it is pinned, funded or gone: the sweep keeps it.
    pub async fn doom_agent(&self, account: &Wallet, now_ms: u64) -> Result<bool, StorageError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE agents SET doomed = true
                 WHERE account = $1 AND funded_ms IS NULL AND (doomed OR pinned_until < $2)",
                &[&account.as_bytes().as_slice(), &to_i64(now_ms)],
            )
            .await?;
        Ok(n == 1)
    }

    /// The unfunded agents whose deadline is at or before `now_ms`, oldest deadline first.
    pub async fn agents_due(&self, now_ms: u64) -> Result<Vec<Wallet>, StorageError> {
        let c = self.client().await?;
        c.query(
            "SELECT account FROM agents WHERE funded_ms IS NULL AND deadline_ms <= $1
             ORDER BY deadline_ms, account",
            &[&to_i64(now_ms)],
        )
        .await?
        .iter()
        .map(|r| {
            let raw: &[u8] = r.try_get(0)?;
            Wallet::from_slice(raw).ok_or_else(|| StorageError::Codec("agents: account".into()))
        })
        .collect()
    }

    /// Agents not funded yet.
    pub async fn unfunded_agents(&self) -> Result<usize, StorageError> {
        let c = self.client().await?;
        let n: i64 = c
            .query_one("SELECT count(*) FROM agents WHERE funded_ms IS NULL", &[])
            .await?
            .try_get(0)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Marks a live agent funded; `true` only for the call that changed it.
    pub async fn mark_agent_funded(
        &self,
        account: &Wallet,
        at_ms: u64,
    ) -> Result<bool, StorageError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE agents SET funded_ms = $2
                 WHERE account = $1 AND funded_ms IS NULL AND NOT doomed",
                &[&account.as_bytes().as_slice(), &to_i64(at_ms)],
            )
            .await?;
        Ok(n == 1)
    }

    /// Removes an agent's row; returns the record that was removed.
    pub async fn remove_agent(
        &self,
        account: &Wallet,
    ) -> Result<Option<AgentRecord>, StorageError> {
        let c = self.client().await?;
        c.query_opt(
            &format!("DELETE FROM agents WHERE account = $1 RETURNING {COLS}"),
            &[&account.as_bytes().as_slice()],
        )
        .await?
        .as_ref()
        .map(record_of)
        .transpose()
    }
}
