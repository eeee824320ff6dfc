//! Agent accounts: their records, the due index the sweeper reads, and the deletions a sweep does.
//!
//! An agent (LLM-for-Agents `POST /api/v1/agents/register`) is an ordinary account whose 20-byte
//! id was derived by the gateway instead of recovered from a signature (`crate::agents`). Its
//! record lives in `agents` under that id; while it has not been funded, a key
//! `deadline_ms (8, big-endian) ++ account (20)` in `agents_due` names it, so a sweep reads only
//! the agents whose deadline has passed, in deadline order. Both trees change together in one
//! sled transaction: an unfunded record always has its due key and a funded one never does.

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::history::Stream;
use super::{StorageError, Store};
use crate::wallet::Wallet;

/// One agent account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// The public id the agent was given (UUID, hyphenated lower case); the account is derived
    /// from it.
    pub uuid: String,
    pub name: String,
    pub account: Wallet,
    pub created_ms: u64,
    /// Swept unless funded by then.
    pub deadline_ms: u64,
    /// When the first money reached it (it is permanent from then on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funded_ms: Option<u64>,
}

fn due_key(deadline_ms: u64, account: &Wallet) -> [u8; 28] {
    let mut k = [0u8; 28];
    k[..8].copy_from_slice(&deadline_ms.to_be_bytes());
    k[8..].copy_from_slice(account.as_bytes());
    k
}

type Tx<T> = Result<T, ConflictableTransactionError<String>>;

fn decode(v: &[u8]) -> Tx<AgentRecord> {
    serde_json::from_slice(v).map_err(|e| ConflictableTransactionError::Abort(e.to_string()))
}

fn encode(rec: &AgentRecord) -> Tx<Vec<u8>> {
    serde_json::to_vec(rec).map_err(|e| ConflictableTransactionError::Abort(e.to_string()))
}

fn tx_error(e: TransactionError<String>) -> StorageError {
    match e {
        TransactionError::Abort(m) => StorageError::Codec(m),
        TransactionError::Storage(e) => e.into(),
    }
}

impl Store {
    /// Stores a new agent (unfunded: with its due key). `Ok(false)` if the account already has
    /// an agent record. Not durable until a flush.
    pub fn insert_agent(&self, rec: &AgentRecord) -> Result<bool, StorageError> {
        let bytes = serde_json::to_vec(rec)?;
        let due = due_key(rec.deadline_ms, &rec.account);
        (&self.agents, &self.agents_due)
            .transaction(|(agents, dues)| {
                if agents.get(rec.account.as_bytes())?.is_some() {
                    return Ok(false);
                }
                agents.insert(rec.account.as_bytes(), bytes.as_slice())?;
                if rec.funded_ms.is_none() {
                    dues.insert(&due[..], &[][..])?;
                }
                Ok(true)
            })
            .map_err(tx_error)
    }

    pub fn agent(&self, account: &Wallet) -> Result<Option<AgentRecord>, StorageError> {
        self.agents
            .get(account.as_bytes())?
            .map(|v| Ok(serde_json::from_slice(&v)?))
            .transpose()
    }

    /// The unfunded agents whose deadline is at or before `now_ms`, oldest deadline first.
    pub fn agents_due(&self, now_ms: u64) -> Result<Vec<Wallet>, StorageError> {
        let end = due_key(now_ms.saturating_add(1), &Wallet([0; 20]));
        self.agents_due
            .range(..&end[..])
            .keys()
            .map(|k| {
                let k = k?;
                Wallet::from_slice(k.get(8..).unwrap_or_default())
                    .ok_or_else(|| StorageError::Codec("agents_due key".into()))
            })
            .collect()
    }

    /// Agents not funded yet (swept or not).
    pub fn unfunded_agents(&self) -> usize {
        self.agents_due.len()
    }

    /// Marks an agent funded (permanent) and drops its due key. `Ok(true)` only for the call
    /// that changed it; an unknown or already funded agent is `Ok(false)`.
    pub fn mark_agent_funded(&self, account: &Wallet, at_ms: u64) -> Result<bool, StorageError> {
        (&self.agents, &self.agents_due)
            .transaction(|(agents, dues)| {
                let Some(v) = agents.get(account.as_bytes())? else {
                    return Ok(false);
                };
                let mut rec = decode(&v)?;
                if rec.funded_ms.is_some() {
                    return Ok(false);
                }
                rec.funded_ms = Some(at_ms);
                agents.insert(account.as_bytes(), encode(&rec)?)?;
                dues.remove(&due_key(rec.deadline_ms, account)[..])?;
                Ok(true)
            })
            .map_err(tx_error)
    }

    /// Removes an agent's record and due key; returns the record that was removed.
    pub fn remove_agent(&self, account: &Wallet) -> Result<Option<AgentRecord>, StorageError> {
        (&self.agents, &self.agents_due)
            .transaction(|(agents, dues)| {
                let Some(v) = agents.remove(account.as_bytes())? else {
                    return Ok(None);
                };
                let rec = decode(&v)?;
                dues.remove(&due_key(rec.deadline_ms, account)[..])?;
                Ok(Some(rec))
            })
            .map_err(tx_error)
    }

    /// Forgets an account record (not its keys, history or memory).
    pub fn remove_account(&self, account: &Wallet) -> Result<(), StorageError> {
        self.accounts.remove(account.as_bytes())?;
        Ok(())
    }

    /// Deletes a key record (not revokes: the key no longer exists at all).
    pub fn remove_key(&self, key_id: &str) -> Result<(), StorageError> {
        self.keys.remove(key_id.as_bytes())?;
        Ok(())
    }

    /// Forgets a wallet's ledger and usage history (a tombstone in the history log, fsynced)
    /// and its per-key totals. Records appended after this start new chains.
    pub async fn forget_history(&self, wallet: &Wallet) -> Result<(), StorageError> {
        let end = self
            .history
            .append([(Stream::Forget, wallet, Vec::new())])?;
        self.key_totals.retain(|(w, _), _| w != wallet);
        self.rollup.forget(wallet);
        self.sync_history(end).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u8, deadline_ms: u64) -> AgentRecord {
        AgentRecord {
            uuid: format!("u{n}"),
            name: format!("agent {n}"),
            account: Wallet([n; 20]),
            created_ms: 1,
            deadline_ms,
            funded_ms: None,
        }
    }

    #[test]
    fn due_index_follows_the_record_through_funding_and_removal() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b, c) = (rec(1, 300), rec(2, 100), rec(3, 200));
        for r in [&a, &b, &c] {
            assert!(store.insert_agent(r).unwrap());
        }
        assert!(!store.insert_agent(&a).unwrap(), "one record per account");
        assert_eq!(store.unfunded_agents(), 3);
        assert_eq!(
            store.agents_due(200).unwrap(),
            [b.account, c.account],
            "deadline order, inclusive"
        );
        assert!(store.agents_due(99).unwrap().is_empty());
        assert!(store.mark_agent_funded(&c.account, 150).unwrap());
        assert!(!store.mark_agent_funded(&c.account, 160).unwrap(), "once");
        assert_eq!(
            store.agent(&c.account).unwrap().unwrap().funded_ms,
            Some(150)
        );
        assert_eq!(store.agents_due(u64::MAX).unwrap(), [b.account, a.account]);
        assert_eq!(store.remove_agent(&b.account).unwrap(), Some(b.clone()));
        assert_eq!(store.remove_agent(&b.account).unwrap(), None);
        assert_eq!(store.agents_due(u64::MAX).unwrap(), [a.account]);
        assert_eq!(store.unfunded_agents(), 1);
        // A funded agent leaves no due key behind when it is removed either.
        store.remove_agent(&c.account).unwrap();
        assert_eq!(store.unfunded_agents(), 1);
    }
}
