//! `Storage`'s agent accounts: sled's `agents` and `agents_due` trees or PostgreSQL's `agents`.
//!
//! Embedded, one gateway owns its agents and `Agents::gate` orders pins against sweeps, so
//! `pin_agent` is "the record exists" and `doom_agent` always agrees. On PostgreSQL the row
//! orders them across replicas (`pg::agents`: a pin and a doom are each one conditional update).

use super::{Backend, Storage};
use crate::storage::agents::AgentRecord;
use crate::storage::pg::agents::PIN_TTL_MS;
use crate::storage::{StorageError, now_ms};
use crate::wallet::Wallet;

impl Storage {
    /// Stores a new agent (unfunded: due at its deadline); `false` if the account has one.
    /// Embedded: durable at the next flush; PostgreSQL: committed.
    pub async fn insert_agent(&self, rec: &AgentRecord) -> Result<bool, StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.insert_agent(rec),
            Backend::Postgres(pg) => pg.insert_agent(rec).await,
        }
    }

    pub async fn agent(&self, account: &Wallet) -> Result<Option<AgentRecord>, StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.agent(account),
            Backend::Postgres(pg) => pg.agent(account).await,
        }
    }

    /// Holds a live agent against every gateway's sweep while money is on its way to it;
    /// `false` when there is no such agent (or a sweep is deleting it).
    pub async fn pin_agent(&self, account: &Wallet) -> Result<bool, StorageError> {
        match &self.backend {
            Backend::Embedded => Ok(self.local.agent(account)?.is_some()),
            Backend::Postgres(pg) => pg.pin_agent(account, now_ms() + PIN_TTL_MS).await,
        }
    }

    /// Takes an unfunded, unpinned agent for deletion; `false`: keep it (pinned or funded on
    /// another gateway meanwhile).
    pub async fn doom_agent(&self, account: &Wallet) -> Result<bool, StorageError> {
        match &self.backend {
            Backend::Embedded => Ok(true),
            Backend::Postgres(pg) => pg.doom_agent(account, now_ms()).await,
        }
    }

    /// The unfunded agents whose deadline is at or before `now_ms`, oldest deadline first.
    pub async fn agents_due(&self, now_ms: u64) -> Result<Vec<Wallet>, StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.agents_due(now_ms),
            Backend::Postgres(pg) => pg.agents_due(now_ms).await,
        }
    }

    /// Agents not funded yet (swept or not).
    pub async fn unfunded_agents(&self) -> Result<usize, StorageError> {
        match &self.backend {
            Backend::Embedded => Ok(self.local.unfunded_agents()),
            Backend::Postgres(pg) => pg.unfunded_agents().await,
        }
    }

    /// Marks an agent funded (permanent); `true` only for the call that changed it.
    pub async fn mark_agent_funded(
        &self,
        account: &Wallet,
        at_ms: u64,
    ) -> Result<bool, StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.mark_agent_funded(account, at_ms),
            Backend::Postgres(pg) => pg.mark_agent_funded(account, at_ms).await,
        }
    }

    /// Removes an agent's record (and its due entry); returns the record that was removed.
    pub async fn remove_agent(
        &self,
        account: &Wallet,
    ) -> Result<Option<AgentRecord>, StorageError> {
        match &self.backend {
            Backend::Embedded => self.local.remove_agent(account),
            Backend::Postgres(pg) => pg.remove_agent(account).await,
        }
    }
}
