//! The durable store: the only module that knows sled. Trees, key layouts and record types.
//!
//! Trees and their keys (all integers big-endian so that sled's order is numeric order):
//! - `accounts`: wallet (20 bytes) → `AccountRecord`
//! - `keys`: key id (12 ASCII bytes) → `KeyRecord`
//! - `ledger`, `usage`: emptied at open: their records move into the history log (below)
//! - `x402_nonces`: chain id (8) ++ asset (20) ++ from (20) ++ nonce (32) → validBefore (8)
//! - `memory`: emptied at open: memory records move into the memory log (below)
//! - `refresh`: refresh-token id → `RefreshRecord`; `families`: token family → revoked-at
//! - `idempotency`: scope ‖ key → `IdemRecord`
//! - `intents`: payment id → `IntentRecord` (settlements not yet credited; see `intents`)
//! - `agents`: account (20) → `AgentRecord`; `agents_due`: deadline ms (8) ++ account (20) → ()
//!   for the agents not funded yet (see `agents`)
//!
//! Values are JSON: small, self-describing, and easy to inspect with `vectorway admin`.
//!
//! Ledger entries and usage events, one or two per call and kept forever, are not in sled: they
//! live in `history.log` (`history`), a checksummed append-only log whose resident cost is one
//! head per wallet. Balances are the fold of its ledger records. Wallet memory records, written
//! and forgotten as a queue at each namespace's cap, live in `memory.log` (`memlog`), whose
//! resident cost is one location per record.

pub mod agents;
pub mod backend;
pub mod history;
pub mod intents;
pub mod journal;
pub mod memlog;
pub mod pages;
pub mod pg;
mod records;
pub mod sent_txs;
pub mod transfer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

pub use self::backend::{MemoryChange, MemoryScan, Storage};
use self::history::{History, Stream};
use self::memlog::MemoryLog;
pub use self::records::{
    AccountRecord, IdemBegin, IdemRecord, KeyRecord, KeyTotals, LedgerEntry, LedgerKind,
    RefreshRecord, UsageEvent,
};
use crate::wallet::Wallet;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    #[error("storage error: {0}")]
    Sled(String),
    #[error("corrupt record: {0}")]
    Codec(String),
    #[error("the data directory {0} is in use by another process")]
    Locked(String),
    #[error(transparent)]
    Db(#[from] pg::DbError),
}

impl StorageError {
    /// The HTTP status of a request that failed on this: 503 while the database is out of
    /// reach (the request may be retried), 500 otherwise. Every layer whose error wraps a
    /// `StorageError` answers with this and `code`.
    pub fn status(&self) -> u16 {
        match self {
            StorageError::Db(pg::DbError::Unavailable(_)) => 503,
            StorageError::Sled(_)
            | StorageError::Codec(_)
            | StorageError::Locked(_)
            | StorageError::Db(pg::DbError::Statement(_) | pg::DbError::Schema(_)) => 500,
        }
    }

    /// The stable code beside `status`: `store_unavailable` or `internal_error`.
    pub fn code(&self) -> &'static str {
        match self.status() {
            503 => "store_unavailable",
            _ => "internal_error",
        }
    }
}

impl From<sled::Error> for StorageError {
    fn from(e: sled::Error) -> Self {
        StorageError::Sled(e.to_string())
    }
}

impl From<serde_json::Error> for StorageError {
    fn from(e: serde_json::Error) -> Self {
        StorageError::Codec(e.to_string())
    }
}

/// Adds a chat call made with an API key to its key's totals.
fn count_key_usage(map: &DashMap<(Wallet, String), KeyTotals>, wallet: Wallet, ev: &UsageEvent) {
    if let Some(key) = &ev.key_id
        && ev.path == "/v1/chat/completions"
    {
        let mut t = map.entry((wallet, key.clone())).or_default();
        t.requests += 1;
        t.prompt_tokens += ev.prompt_tokens;
        t.completion_tokens += ev.completion_tokens;
        t.credits += ev.credits;
    }
}

/// Serializes and coalesces fsyncs. sled runs `flush_async` on its small I/O thread pool, and a
/// flush blocks its thread until the log buffers are written by jobs queued on that same pool:
/// eight flushes at once take every thread and wait forever (and inserts then block on the full
/// buffers). So callers take a ticket and queue here; the one at the front flushes for every
/// ticket drawn before its flush started.
#[derive(Default)]
struct FlushGate {
    asked: AtomicU64,
    /// The highest ticket known to be on disk.
    done: tokio::sync::Mutex<u64>,
}

/// The sled database and its trees. Cloning is cheap (sled handles are reference counted).
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    flushes: Arc<FlushGate>,
    history: Arc<History>,
    /// Chat totals per (wallet, API key): the agent-router usage view without a history walk.
    key_totals: Arc<DashMap<(Wallet, String), KeyTotals>>,
    pub(crate) rollup: Arc<crate::console::rollup::Rollup>,
    accounts: sled::Tree,
    keys: sled::Tree,
    x402_nonces: sled::Tree,
    memories: Arc<MemoryLog>,
    refresh: sled::Tree,
    families: sled::Tree,
    idempotency: sled::Tree,
    intents: sled::Tree,
    agents: sled::Tree,
    agents_due: sled::Tree,
}

impl Store {
    /// Opens (or creates) the store. A directory held by another process is `Locked`.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::Sled(e.to_string()))?;
        // sled's page cache defaults to 1 GiB; balances and keys live in memory elsewhere, so a
        // small cache keeps the resident set small without slowing the hot paths.
        let db = sled::Config::new()
            .path(dir.join("db"))
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("could not acquire lock") =>
                {
                    StorageError::Locked(dir.display().to_string())
                }
                other => StorageError::from(other),
            })?;
        let history = Arc::new(open_history(dir, &db)?);
        let memories = Arc::new(open_memories(dir, &db)?);
        let key_totals = Arc::new(DashMap::new());
        let rollup = Arc::new(crate::console::rollup::Rollup::default());
        // One decode per record feeds both the key totals and the console's rollup; a record
        // that does not decode is left to `check`.
        history.scan_all(|rec| match rec.stream {
            Stream::Forget => {
                rollup.forget(&rec.wallet);
                key_totals.retain(|(w, _), _| *w != rec.wallet);
            }
            Stream::Usage => {
                if let Ok(ev) = Self::decode_usage(&rec.payload) {
                    rollup.add_usage(rec.wallet, &ev);
                    count_key_usage(&key_totals, rec.wallet, &ev);
                }
            }
            Stream::Ledger => {
                if let Ok(e) = serde_json::from_slice::<LedgerEntry>(&rec.payload) {
                    rollup.add_ledger(&e);
                }
            }
        })?;
        Ok(Self {
            flushes: Arc::default(),
            history,
            key_totals,
            rollup,
            accounts: db.open_tree("accounts")?,
            keys: db.open_tree("keys")?,
            x402_nonces: db.open_tree("x402_nonces")?,
            memories,
            refresh: db.open_tree("refresh")?,
            families: db.open_tree("families")?,
            idempotency: db.open_tree("idempotency")?,
            intents: db.open_tree("intents")?,
            agents: db.open_tree("agents")?,
            agents_due: db.open_tree("agents_due")?,
            db,
        })
    }

    /// `open` for tests that reopen a directory in the same process: sled lets go of its lock
    /// only when its flusher thread notices the last handle is gone, which a loaded machine can
    /// delay, so a reopen waits (boundedly) for `Locked` to clear. A second process gets
    /// `Locked` from `open` at once (`vectorway admin` relies on that).
    #[cfg(test)]
    pub(crate) fn open_when_free(dir: &Path) -> Result<Self, StorageError> {
        let by = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match Self::open(dir) {
                Err(StorageError::Locked(_)) if std::time::Instant::now() < by => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    /// A fresh, monotonically increasing sequence number.
    pub fn next_seq(&self) -> Result<u64, StorageError> {
        Ok(self.db.generate_id()?)
    }

    /// Waits until everything written so far is on disk. One sled flush runs at a time, and it
    /// serves every caller that asked before it started (see `FlushGate`).
    pub async fn flush(&self) -> Result<(), StorageError> {
        let gate = &self.flushes;
        let ticket = gate.asked.fetch_add(1, Ordering::AcqRel) + 1;
        let mut done = gate.done.lock().await;
        if *done >= ticket {
            return Ok(()); // a flush that started after our writes has finished
        }
        let covers = gate.asked.load(Ordering::Acquire);
        self.db.flush_async().await?;
        *done = covers;
        Ok(())
    }

    /// `flush` for blocking threads (`spawn_blocking` work).
    pub fn flush_blocking(&self) -> Result<(), StorageError> {
        self.db.flush()?;
        Ok(())
    }

    pub fn was_recovered(&self) -> bool {
        self.db.was_recovered()
    }

    // === accounts ===

    /// Creates the account if it does not exist; returns `(record, created)`.
    pub fn ensure_account(
        &self,
        wallet: &Wallet,
        now: u64,
    ) -> Result<(AccountRecord, bool), StorageError> {
        let fresh = AccountRecord {
            wallet: *wallet,
            created_at: now,
        };
        let bytes = serde_json::to_vec(&fresh)?;
        match self.accounts.compare_and_swap(
            wallet.as_bytes(),
            None as Option<&[u8]>,
            Some(bytes),
        )? {
            Ok(()) => Ok((fresh, true)),
            Err(cas) => match cas.current {
                Some(cur) => Ok((serde_json::from_slice(&cur)?, false)),
                None => Ok((fresh, true)),
            },
        }
    }

    pub fn account(&self, wallet: &Wallet) -> Result<Option<AccountRecord>, StorageError> {
        self.accounts
            .get(wallet.as_bytes())?
            .map(|v| Ok(serde_json::from_slice(&v)?))
            .transpose()
    }

    // === keys ===

    pub fn put_key(&self, key: &KeyRecord) -> Result<(), StorageError> {
        self.keys
            .insert(key.key_id.as_bytes(), serde_json::to_vec(key)?)?;
        Ok(())
    }

    /// Writes a key snapshot taken earlier without undoing anything newer: a revocation already
    /// stored stays, and `last_used_at` only moves forward.
    pub fn touch_key(&self, snapshot: &KeyRecord) -> Result<(), StorageError> {
        self.keys
            .fetch_and_update(snapshot.key_id.as_bytes(), |cur| {
                // A deleted key (a swept agent's) stays deleted.
                let cur = cur?;
                let mut next = snapshot.clone();
                if let Ok(stored) = serde_json::from_slice::<KeyRecord>(cur) {
                    next.revoked_at = stored.revoked_at.or(next.revoked_at);
                    next.last_used_at = next.last_used_at.max(stored.last_used_at);
                }
                serde_json::to_vec(&next).ok()
            })?;
        Ok(())
    }

    pub fn all_keys(&self) -> Result<Vec<KeyRecord>, StorageError> {
        self.keys
            .iter()
            .values()
            .map(|v| Ok(serde_json::from_slice(&v?)?))
            .collect()
    }

    // === ledger ===

    /// Appends ledger entries and usage events to the history log in one write. Not durable
    /// yet: returns the log offset to pass to `sync_history`.
    pub fn append(
        &self,
        ledger: &[LedgerEntry],
        usage: &[(Wallet, UsageEvent)],
    ) -> Result<u64, StorageError> {
        let mut records = Vec::with_capacity(ledger.len() + usage.len());
        for e in ledger {
            records.push((Stream::Ledger, &e.wallet, serde_json::to_vec(e)?));
        }
        for (w, e) in usage {
            records.push((Stream::Usage, w, serde_json::to_vec(e)?));
        }
        let end = self.history.append(records)?;
        self.rollup.appended(ledger, usage);
        for (w, e) in usage {
            count_key_usage(&self.key_totals, *w, e);
        }
        Ok(end)
    }

    /// Waits until the history log is on disk up to `upto` (an offset `append` returned).
    pub async fn sync_history(&self, upto: u64) -> Result<(), StorageError> {
        let history = Arc::clone(&self.history);
        tokio::task::spawn_blocking(move || history.sync(upto))
            .await
            .map_err(|e| StorageError::Sled(format!("history sync task: {e}")))?
    }

    /// Appends one entry and waits until it is on disk (money in).
    pub async fn append_durable(&self, entry: &LedgerEntry) -> Result<(), StorageError> {
        let end =
            self.history
                .append([(Stream::Ledger, &entry.wallet, serde_json::to_vec(entry)?)])?;
        self.rollup.appended(std::slice::from_ref(entry), &[]);
        self.sync_history(end).await
    }

    /// Every wallet's balance: the signed sum of its ledger entries (a scan of the whole log:
    /// start-up and checks only).
    pub fn balances(&self) -> Result<HashMap<Wallet, i128>, StorageError> {
        let mut out: HashMap<Wallet, i128> = HashMap::new();
        let mut bad = None;
        self.history.scan_all(|rec| {
            if rec.stream == Stream::Forget {
                out.remove(&rec.wallet);
            }
            if rec.stream != Stream::Ledger {
                return;
            }
            match serde_json::from_slice::<LedgerEntry>(&rec.payload) {
                Ok(e) => *out.entry(rec.wallet).or_default() += i128::from(e.credits),
                Err(e) => bad = Some(e),
            }
        })?;
        match bad {
            Some(e) => Err(e.into()),
            None => Ok(out),
        }
    }

    /// A key's chat totals (calls, tokens, credits) as recorded so far.
    pub fn key_totals(&self, wallet: &Wallet, key_id: &str) -> KeyTotals {
        self.key_totals
            .get(&(*wallet, key_id.to_string()))
            .map(|t| *t)
            .unwrap_or_default()
    }

    /// A wallet's ledger, newest first.
    pub fn ledger_of(
        &self,
        wallet: &Wallet,
    ) -> impl Iterator<Item = Result<LedgerEntry, StorageError>> + use<> {
        self.ledger_counted(wallet).0
    }

    /// `ledger_of` and how many entries it walks (the same snapshot: a page's total).
    pub(in crate::storage) fn ledger_counted(
        &self,
        wallet: &Wallet,
    ) -> (
        impl Iterator<Item = Result<LedgerEntry, StorageError>> + use<>,
        u64,
    ) {
        let (chain, n) = self.history.chain_counted(wallet, Stream::Ledger);
        (
            chain.map(|r| r.and_then(|v| Ok(serde_json::from_slice(&v)?))),
            n,
        )
    }

    /// A wallet's usage events, newest first, still encoded (a page decodes only the events it
    /// shows, with `decode_usage`), and how many it walks (the same snapshot: a page's total).
    pub(in crate::storage) fn usage_raw_counted(
        &self,
        wallet: &Wallet,
    ) -> (
        impl Iterator<Item = Result<Vec<u8>, StorageError>> + use<>,
        u64,
    ) {
        self.history.chain_counted(wallet, Stream::Usage)
    }

    /// Decodes one event of `usage_raw_counted`.
    pub(in crate::storage) fn decode_usage(raw: &[u8]) -> Result<UsageEvent, StorageError> {
        Ok(serde_json::from_slice(raw)?)
    }

    /// A wallet's usage events, newest first.
    pub fn usage_of(
        &self,
        wallet: &Wallet,
    ) -> impl Iterator<Item = Result<UsageEvent, StorageError>> + use<> {
        self.history
            .chain(wallet, Stream::Usage)
            .map(|r| r.and_then(|v| Self::decode_usage(&v)))
    }

    // === x402 nonces ===

    /// Claims an authorization nonce exactly once: `Ok(true)` for the first claim of `key`
    /// (chain ‖ asset ‖ from ‖ nonce), `Ok(false)` for every later one. Atomic across threads.
    pub fn claim_x402_nonce(
        &self,
        key: &[u8; 80],
        valid_before: u64,
    ) -> Result<bool, StorageError> {
        let cas = self.x402_nonces.compare_and_swap(
            &key[..],
            None as Option<&[u8]>,
            Some(&valid_before.to_be_bytes()[..]),
        )?;
        Ok(cas.is_ok())
    }

    /// Drops the claim of `key` (a payment that certainly moved no money and served nothing);
    /// `Ok(false)` when it was not claimed.
    pub fn release_x402_nonce(&self, key: &[u8; 80]) -> Result<bool, StorageError> {
        Ok(self.x402_nonces.remove(&key[..])?.is_some())
    }

    /// Forgets claims whose authorization expired before `now_s` (they can no longer be replayed).
    pub fn prune_x402_nonces(&self, now_s: u64) -> Result<usize, StorageError> {
        let mut n = 0;
        for item in self.x402_nonces.iter() {
            let (k, v) = item?;
            let vb = <[u8; 8]>::try_from(&v[..])
                .map(u64::from_be_bytes)
                .unwrap_or(u64::MAX);
            if vb < now_s {
                self.x402_nonces.remove(k)?;
                n += 1;
            }
        }
        Ok(n)
    }

    // === memory ===

    /// Stores (or replaces) one memory record of a wallet; durable after `sync_memories`.
    pub fn put_memory(
        &self,
        wallet: &Wallet,
        id: &[u8; 16],
        value: &[u8],
    ) -> Result<(), StorageError> {
        self.memories.put(wallet, id, value).map(drop)
    }

    /// The memory log, for what has no wrapper here (`MemoryLog::replace`).
    pub fn memory_log(&self) -> &MemoryLog {
        &self.memories
    }

    /// Deletes a wallet's record; `Ok(false)` when that wallet has no such record. Durable
    /// after `sync_memories`.
    pub fn delete_memory(&self, wallet: &Wallet, id: &[u8; 16]) -> Result<bool, StorageError> {
        self.memories.forget(wallet, id)
    }

    /// One record of a wallet.
    pub fn get_memory(
        &self,
        wallet: &Wallet,
        id: &[u8; 16],
    ) -> Result<Option<Vec<u8>>, StorageError> {
        self.memories.get(wallet, id)
    }

    /// Every record of one wallet, as `(id, value)`, in id order (`.rev()`: newest first).
    /// Never another wallet's.
    pub fn memories_of(
        &self,
        wallet: &Wallet,
    ) -> impl DoubleEndedIterator<Item = Result<([u8; 16], Vec<u8>), StorageError>> + use<> {
        self.memories.records_of(wallet)
    }

    /// Waits until every memory write and delete made so far is on disk (concurrent callers
    /// share one fsync).
    pub async fn sync_memories(&self) -> Result<(), StorageError> {
        let log = Arc::clone(&self.memories);
        let upto = log.mark();
        tokio::task::spawn_blocking(move || log.sync(upto))
            .await
            .map_err(|e| StorageError::Sled(format!("memory log sync task: {e}")))?
    }

    /// `sync_memories` for blocking threads.
    pub fn sync_memories_blocking(&self) -> Result<(), StorageError> {
        self.memories.sync(self.memories.mark())
    }

    // === sessions ===

    pub fn put_refresh(&self, id: &str, rec: &RefreshRecord) -> Result<(), StorageError> {
        self.refresh
            .insert(id.as_bytes(), serde_json::to_vec(rec)?)?;
        Ok(())
    }

    /// Marks a refresh token used; returns it as it was before (so `used == true` means reuse).
    pub fn spend_refresh(&self, id: &str) -> Result<Option<RefreshRecord>, StorageError> {
        let mut before = None;
        self.refresh.fetch_and_update(id.as_bytes(), |cur| {
            let rec: RefreshRecord = serde_json::from_slice(cur?).ok()?;
            before = Some(rec.clone());
            serde_json::to_vec(&RefreshRecord { used: true, ..rec }).ok()
        })?;
        Ok(before)
    }

    pub fn revoke_family(&self, family: &str, now: u64) -> Result<(), StorageError> {
        self.families
            .insert(family.as_bytes(), &now.to_be_bytes())?;
        Ok(())
    }

    pub fn revoked_families(&self) -> Result<Vec<String>, StorageError> {
        self.families
            .iter()
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&k?).into_owned()))
            .collect()
    }

    // === idempotency ===

    /// Claims `key` for a request whose body hashes to `body_sha256`. An answer stored before
    /// `expire_before`, or a claim made before `claims_before` (Unix seconds), no longer counts:
    /// it is replaced by the new claim.
    pub fn idem_begin(
        &self,
        key: &[u8],
        body_sha256: &str,
        now: u64,
        expire_before: u64,
        claims_before: u64,
    ) -> Result<IdemBegin, StorageError> {
        let pending = serde_json::to_vec(&IdemRecord {
            body_sha256: body_sha256.to_string(),
            status: 0,
            body: String::new(),
            created_at: now,
        })?;
        let mut expected: Option<sled::IVec> = None;
        loop {
            let cas = self.idempotency.compare_and_swap(
                key,
                expected.as_ref(),
                Some(pending.as_slice()),
            )?;
            let Err(cas) = cas else {
                return Ok(IdemBegin::Fresh);
            };
            let Some(raw) = cas.current else {
                expected = None;
                continue;
            };
            let cur: IdemRecord = serde_json::from_slice(&raw)?;
            let stale = if cur.status == 0 {
                cur.created_at < claims_before
            } else {
                cur.created_at < expire_before
            };
            if stale {
                expected = Some(raw);
                continue;
            }
            return Ok(if cur.body_sha256 != body_sha256 {
                IdemBegin::Conflict
            } else if cur.status == 0 {
                IdemBegin::InProgress
            } else {
                IdemBegin::Replay(cur)
            });
        }
    }

    /// Stores the answer (or, with `None`, forgets the key so the request can be retried).
    pub fn idem_finish(&self, key: &[u8], record: Option<&IdemRecord>) -> Result<(), StorageError> {
        match record {
            Some(r) => self.idempotency.insert(key, serde_json::to_vec(r)?)?,
            None => self.idempotency.remove(key)?,
        };
        Ok(())
    }

    /// Cheap liveness probe for `/readyz`.
    pub fn check(&self) -> Result<(), StorageError> {
        self.accounts.get(b"\0probe")?;
        Ok(())
    }
}

/// Set in sled's default tree once the history log is the record: from then on the old
/// ledger/usage trees must stay empty.
const HISTORY_MARK: &[u8] = b"history_log_in_use";

/// Opens `<dir>/history.log`. A store written before the log existed keeps its ledger and usage
/// in sled trees: they are copied, in key order, into `history.log.tmp`, which is synced and
/// renamed into place before the trees are emptied, so a crash at any point either redoes the
/// copy from scratch or finds it complete (never applies it twice).
fn open_history(dir: &Path, db: &sled::Db) -> Result<History, StorageError> {
    let path = dir.join("history.log");
    let old_ledger = db.open_tree("ledger")?;
    let old_usage = db.open_tree("usage")?;
    let marked = db.get(HISTORY_MARK)?.is_some();
    if old_ledger.is_empty() && old_usage.is_empty() {
        let log = History::open(&path)?;
        if !marked {
            db.insert(HISTORY_MARK, b"1")?;
            db.flush()?;
        }
        return Ok(log);
    }
    if marked {
        // The log was in use, and then a binary from before it wrote history into sled (a
        // downgrade): neither copy is complete, and clearing the trees would lose records.
        return Err(StorageError::Codec(
            "history.log is in use, but the sled ledger/usage trees hold records written since \
             (a version from before the log ran on this data directory): refusing to start"
                .into(),
        ));
    }
    if !path.exists() {
        let tmp = dir.join("history.log.tmp");
        let _ = std::fs::remove_file(&tmp);
        let staged = History::open(&tmp)?;
        let (mut copied, mut end) = (0usize, 0u64);
        for (tree, stream) in [(&old_ledger, Stream::Ledger), (&old_usage, Stream::Usage)] {
            for item in tree.iter() {
                let (k, v) = item?;
                let wallet = Wallet::from_slice(&k[..20.min(k.len())])
                    .ok_or_else(|| StorageError::Codec("ledger key".into()))?;
                end = staged.append([(stream, &wallet, v.to_vec())])?;
                copied += 1;
            }
        }
        staged.sync(end)?;
        drop(staged);
        std::fs::rename(&tmp, &path).map_err(|e| StorageError::Sled(e.to_string()))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StorageError::Sled(e.to_string()))?;
        tracing::info!(
            records = copied,
            "moved the ledger and usage history out of sled"
        );
    }
    old_ledger.clear()?;
    old_usage.clear()?;
    db.insert(HISTORY_MARK, b"1")?;
    db.flush()?;
    History::open(&path)
}

/// Opens `<dir>/memory.log`, first moving any records still in sled's `memory` tree (a store
/// from before the log, or one a downgraded binary wrote to) into it. The copy is synced before
/// the tree is emptied, and putting a record twice only replaces it, so a crash anywhere in
/// between is repaired by the next open.
fn open_memories(dir: &Path, db: &sled::Db) -> Result<MemoryLog, StorageError> {
    let log = MemoryLog::open(&dir.join("memory.log"), memlog::COMPACT_MIN)?;
    let old = db.open_tree("memory")?;
    if old.is_empty() {
        return Ok(log);
    }
    let mut copied = 0usize;
    for item in old.iter() {
        let (k, v) = item?;
        let (Some(wallet), Ok(id)) = (
            Wallet::from_slice(&k[..20.min(k.len())]),
            <[u8; 16]>::try_from(k.get(20..).unwrap_or_default()),
        ) else {
            return Err(StorageError::Codec("memory key".into()));
        };
        log.put(&wallet, &id, &v)?;
        copied += 1;
    }
    log.sync(log.mark())?;
    old.clear()?;
    db.flush()?;
    tracing::info!(
        records = copied,
        "moved the wallet memory records out of sled"
    );
    Ok(log)
}

/// sled's page cache, in bytes. sled's resident memory runs well past this figure (its nodes
/// are larger in memory than on disk): 8 MiB keeps the soak's RSS within ~40 MB of idle, where
/// 32 MiB let it climb with the data for minutes (`loadtest/README.md`).
const CACHE_BYTES: u64 = 8 << 20;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
