//! The embedded store's half of `store export|import`: sled's trees and the two logs.
//!
//! Export walks each tree, the history log in file order (a wallet's records before its last
//! `Forget` tombstone are left out, as every reader leaves them out), and the memory log wallet
//! by wallet. Import cannot be one transaction across sled and two logs, so the caller checks
//! the whole file first (`Source::verify`) and only a file that checks out is written; the
//! balances the store then folds from its history are compared with the file's.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};

use base64::Engine;

use super::{
    Item, MemoryMeta, Sink, Source, Summary, Totals, TransferError, hex_array, ledger_commit_key,
    usage_commit_key,
};
use crate::storage::history::Stream;
use crate::storage::{LedgerEntry, Store, UsageEvent};
use crate::wallet::Wallet;

/// History records appended per write while importing.
const BATCH: usize = 1024;

fn be_u64(v: &[u8]) -> u64 {
    <[u8; 8]>::try_from(v).map_or(u64::MAX, u64::from_be_bytes)
}

impl Store {
    /// The first kind of record the store holds, if any (an import needs an empty store).
    pub fn holds_data(&self) -> Result<Option<&'static str>, TransferError> {
        let trees = [
            ("accounts", &self.accounts),
            ("api keys", &self.keys),
            ("refresh tokens", &self.refresh),
            ("revoked families", &self.families),
            ("idempotency records", &self.idempotency),
            ("x402 nonces", &self.x402_nonces),
        ];
        for (name, tree) in trees {
            if !tree.is_empty() {
                return Ok(Some(name));
            }
        }
        let mut history = false;
        self.history.scan_all(|_| history = true)?;
        if history {
            return Ok(Some("ledger or usage history"));
        }
        if !self.memories.is_empty() {
            return Ok(Some("memory records"));
        }
        Ok(None)
    }

    /// Writes every record this store holds to `sink` (the caller holds the data directory's
    /// lock: nothing changes meanwhile).
    pub fn export_into<W: Write>(
        &self,
        sink: &mut Sink<W>,
        meta: MemoryMeta,
    ) -> Result<(), TransferError> {
        super::refuse_uncarried(self.agents.len() as u64, self.intents.len() as u64)?;
        for v in self.accounts.iter().values() {
            sink.put(&Item::Account(
                serde_json::from_slice(&v?).map_err(crate::storage::StorageError::from)?,
            ))?;
        }
        for key in self.all_keys()? {
            sink.put(&Item::Key(key))?;
        }
        for kv in self.refresh.iter() {
            let (k, v) = kv?;
            sink.put(&Item::Refresh {
                id: String::from_utf8_lossy(&k).into_owned(),
                fields: serde_json::from_slice(&v).map_err(crate::storage::StorageError::from)?,
            })?;
        }
        for kv in self.families.iter() {
            let (k, v) = kv?;
            sink.put(&Item::RevokedFamily {
                family: String::from_utf8_lossy(&k).into_owned(),
                revoked_at: be_u64(&v),
            })?;
        }
        for kv in self.idempotency.iter() {
            let (k, v) = kv?;
            sink.put(&Item::Idempotency {
                slot: hex::encode(&k),
                fields: serde_json::from_slice(&v).map_err(crate::storage::StorageError::from)?,
            })?;
        }
        let now = crate::storage::now_ms();
        for kv in self.x402_nonces.iter() {
            let (k, v) = kv?;
            sink.put(&Item::X402Nonce {
                key: hex::encode(&k),
                valid_before: be_u64(&v),
                state: "claimed".into(),
                claimed_ms: now,
                resolved_ms: None,
            })?;
        }
        self.export_history(sink)?;
        let b64 = base64::engine::general_purpose::STANDARD;
        for wallet in self.memories.wallets() {
            for rec in self.memories_of(&wallet) {
                let (id, value) = rec?;
                let (namespace, created_ms) = meta(&value)?;
                sink.put(&Item::Memory {
                    wallet,
                    id: hex::encode(id),
                    namespace,
                    created_ms,
                    value: b64.encode(&value),
                })?;
            }
        }
        Ok(())
    }

    /// The history in file order, then each wallet's totals folded from it.
    fn export_history<W: Write>(&self, sink: &mut Sink<W>) -> Result<(), TransferError> {
        // Pass 1: where each wallet's chains last restarted (its last `Forget`).
        let (mut n, mut cut): (u64, HashMap<Wallet, u64>) = (0, HashMap::new());
        self.history.scan_all(|rec| {
            if rec.stream == Stream::Forget {
                cut.insert(rec.wallet, n);
            }
            n += 1;
        })?;
        let (mut i, mut err, mut totals) = (0u64, None, BTreeMap::<Wallet, Totals>::new());
        self.history.scan_all(|rec| {
            let at = i;
            i += 1;
            if err.is_some() || cut.get(&rec.wallet).is_some_and(|c| at <= *c) {
                return;
            }
            let item = match rec.stream {
                Stream::Forget => return,
                Stream::Ledger => serde_json::from_slice::<LedgerEntry>(&rec.payload).map(|e| {
                    let t = totals.entry(e.wallet).or_default();
                    match e.credits >= 0 {
                        true => t.granted += e.credits.unsigned_abs(),
                        false => t.committed += e.credits.unsigned_abs(),
                    }
                    Item::Ledger {
                        id: None,
                        commit_key: ledger_commit_key(&e),
                        entry: e,
                    }
                }),
                Stream::Usage => {
                    serde_json::from_slice::<UsageEvent>(&rec.payload).map(|e| Item::Usage {
                        id: None,
                        wallet: rec.wallet,
                        commit_key: Some(usage_commit_key(&e)),
                        event: e,
                    })
                }
            };
            let put = item
                .map_err(|e| TransferError::Store(e.into()))
                .and_then(|item| sink.put(&item));
            if let Err(e) = put {
                err = Some(e);
            }
        })?;
        if let Some(e) = err {
            return Err(e);
        }
        for (wallet, t) in totals {
            sink.put(&Item::Balance {
                wallet,
                granted: t.granted,
                committed: t.committed,
            })?;
        }
        Ok(())
    }

    /// Writes a file's records into this (empty) store; the caller has verified the file.
    /// Durable when it returns; then the balances the store folds are checked against the
    /// file's.
    pub async fn import_from<R: BufRead>(
        &self,
        mut src: Source<R>,
    ) -> Result<Summary, TransferError> {
        if let Some(what) = self.holds_data()? {
            return Err(TransferError::NotEmpty(what.into()));
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let (mut ledger, mut usage) = (Vec::new(), Vec::new());
        while let Some(item) = src.next_item()? {
            match item {
                Item::Account(a) => {
                    self.accounts.insert(
                        a.wallet.as_bytes(),
                        serde_json::to_vec(&a).map_err(crate::storage::StorageError::from)?,
                    )?;
                }
                Item::Key(k) => self.put_key(&k)?,
                Item::Refresh { id, fields } => self.put_refresh(&id, &fields)?,
                Item::RevokedFamily { family, revoked_at } => {
                    self.revoke_family(&family, revoked_at)?
                }
                Item::Idempotency { slot, fields } => {
                    let slot = hex::decode(&slot)
                        .map_err(|_| TransferError::File("idempotency slot: not hex".into()))?;
                    self.idem_finish(&slot, Some(&fields))?;
                }
                Item::X402Nonce {
                    key, valid_before, ..
                } => {
                    let key = hex_array::<80>("x402 nonce key", &key)?;
                    if !self.claim_x402_nonce(&key, valid_before)? {
                        return Err(TransferError::File("an x402 nonce twice".into()));
                    }
                }
                Item::Ledger { entry, .. } => ledger.push(entry),
                Item::Usage { wallet, event, .. } => usage.push((wallet, event)),
                Item::Memory {
                    wallet, id, value, ..
                } => {
                    let id = hex_array::<16>("memory id", &id)?;
                    let value = b64
                        .decode(&value)
                        .map_err(|_| TransferError::File("memory value: not base64".into()))?;
                    self.put_memory(&wallet, &id, &value)?;
                }
                Item::Balance { .. } | Item::End { .. } => {}
            }
            if ledger.len() + usage.len() >= BATCH {
                self.append(&ledger, &usage)?;
                (ledger, usage) = (Vec::new(), Vec::new());
            }
        }
        let end = self.append(&ledger, &usage)?;
        self.sync_history(end).await?;
        self.sync_memories().await?;
        self.flush().await?;
        let sums = self.balances()?.into_iter().collect();
        src.summary.verify_sums(&sums)?;
        Ok(src.summary)
    }
}
