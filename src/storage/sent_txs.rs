//! Settlement transactions our own facilitator (`x402.facilitator = "self"`) signed: written and
//! fsynced BEFORE the transaction is broadcast, so a crash between "sent" and "confirmed" leaves
//! the raw transaction, its hash and its account nonce on disk.
//!
//! Keyed `<authorization id>/<tx hash>` in sled's `sent_txs` tree (the authorization id is the
//! payment's replay key, hex), so every transaction ever sent for one authorization is found by
//! a prefix scan. A record stays until the authorization is known to be spent or dead on chain.

use serde::{Deserialize, Serialize};

use super::{StorageError, Store};

/// One signed settlement transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentTx {
    /// The authorization it settles (replay key, hex).
    pub authorization: String,
    /// The network's v1 name.
    pub network: String,
    /// `0x…` transaction hash.
    pub hash: String,
    /// `0x…` EIP-2718 bytes: resending them is resending this very transaction.
    pub raw: String,
    /// The settlement account's nonce it uses.
    pub account_nonce: u64,
    pub created_ms: u64,
}

impl Store {
    fn sent_tree(&self) -> Result<sled::Tree, StorageError> {
        Ok(self.db.open_tree("sent_txs")?)
    }

    /// Records a signed transaction and fsyncs it: call before broadcasting it.
    pub async fn put_sent_tx_durable(&self, tx: &SentTx) -> Result<(), StorageError> {
        let key = format!("{}/{}", tx.authorization, tx.hash);
        self.sent_tree()?
            .insert(key.as_bytes(), serde_json::to_vec(tx)?)?;
        self.flush().await
    }

    /// Every transaction sent for an authorization, in hash order.
    pub fn sent_txs_for(&self, authorization: &str) -> Result<Vec<SentTx>, StorageError> {
        let prefix = format!("{authorization}/");
        self.sent_tree()?
            .scan_prefix(prefix.as_bytes())
            .values()
            .map(|v| Ok(serde_json::from_slice(&v?)?))
            .collect()
    }

    /// Every recorded transaction.
    pub fn sent_txs(&self) -> Result<Vec<SentTx>, StorageError> {
        self.sent_tree()?
            .iter()
            .values()
            .map(|v| Ok(serde_json::from_slice(&v?)?))
            .collect()
    }

    /// Forgets the transactions of an authorization whose fate the chain has settled.
    pub fn forget_sent_txs(&self, authorization: &str) -> Result<(), StorageError> {
        let tree = self.sent_tree()?;
        let prefix = format!("{authorization}/");
        for k in tree.scan_prefix(prefix.as_bytes()).keys() {
            tree.remove(k?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sent_transactions_survive_a_reopen_and_are_found_by_authorization() {
        let dir = tempfile::tempdir().unwrap();
        let tx = |auth: &str, hash: &str, n: u64| SentTx {
            authorization: auth.into(),
            network: "anvil".into(),
            hash: hash.into(),
            raw: "0x02".into(),
            account_nonce: n,
            created_ms: 1,
        };
        {
            let s = Store::open(dir.path()).unwrap();
            s.put_sent_tx_durable(&tx("aa", "0x01", 1)).await.unwrap();
            s.put_sent_tx_durable(&tx("aa", "0x02", 2)).await.unwrap();
            s.put_sent_tx_durable(&tx("ab", "0x03", 3)).await.unwrap();
        }
        let s = Store::open_when_free(dir.path()).unwrap();
        let aa = s.sent_txs_for("aa").unwrap();
        assert_eq!(aa.len(), 2);
        assert_eq!(aa[1].account_nonce, 2);
        assert_eq!(s.sent_txs().unwrap().len(), 3);
        s.forget_sent_txs("aa").unwrap();
        assert!(s.sent_txs_for("aa").unwrap().is_empty());
        assert_eq!(s.sent_txs_for("ab").unwrap().len(), 1);
    }
}
