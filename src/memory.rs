//! Wallet-scoped vector memory: write, search and delete texts by meaning, and embed texts for
//! `/v1/embeddings`.
//!
//! The store is the truth (the embedded memory log, or PostgreSQL shared by every replica):
//! every record lives there under wallet ‖ id, in the layout of `record.rs`. The in-memory
//! indexes are a cache, one per (wallet, namespace), built from the store on that pair's first
//! search after start; on a shared store `follow.rs` keeps them fresh with what other gateways
//! wrote and deleted, and a search returns only hits it reads back from the store, so a delete
//! answered by any gateway is never returned afterwards. A search only ever reads the index of its
//! own (wallet, namespace) key and fetches texts under its own wallet's prefix, so one wallet
//! can never see another's rows.
//!
//! Durability: a record is acknowledged when a search can return it, so `write` fsyncs the record
//! before indexing it, and a load fsyncs what its scan read before publishing the index. A chat's
//! memory write runs after the answer; a crash before that fsync loses the record, never one that
//! a search has shown.
//!
//! Concurrency of the lazy load: a slot is `Loading` while a task scans the store; writes
//! and deletes that land meanwhile (here, or on another gateway and seen by the feed) are queued on the slot (after they reached the log) and replayed
//! once the scan is done. Inserts are idempotent, so a record both scanned and queued is indexed
//! once, and a delete queued after the scan saw the record still removes it. Waiters share the
//! result through a watch channel; the scan runs to the end even if every waiter goes away.
//!
//! Graph work (`index::Job`) runs on tokio's blocking pool and installs its own result, so no
//! request waits for it; until it is installed, searches scan the rows it does not cover yet.

mod browse;
pub mod cache;
pub mod embedder;
mod follow;
mod id;
pub mod index;
mod load;
pub mod model;
pub mod record;
mod reembed;
#[cfg(test)]
mod tests;

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, RwLock};

use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::watch;

pub use browse::{ListPage, Listed, MAX_LIST, Namespace};
pub use cache::QueryEmbedding;
pub use embedder::{Embedder, GeminiEmbedder, LocalEmbedder};
pub use id::MemoryId;
pub use index::{Index, IndexParams};

use crate::locks::{lock, read, write};
use cache::EmbedCache;
use load::{load_index, over_cap};
use record::{MemoryRecord, RecordView};

use crate::config::MemoryConfig;
use crate::storage::{Storage, StorageError, now_ms};
use crate::upstream::{Gemini, UpstreamError};
use crate::wallet::Wallet;

/// Most results one search returns.
pub const MAX_K: usize = 100;
/// Longest text stored, searched for or embedded, in bytes.
pub const MAX_TEXT_BYTES: usize = 32 * 1024;

/// The line that opens the memory block of a chat call.
pub const RECALL_HEADER: &str =
    "Relevant memories from this wallet's earlier conversations (most relevant first):";
/// What precedes each memory in the block.
pub const RECALL_ITEM: &str = "\n- ";

/// Most bytes the memory block of a call recalling up to `k` memories can have: the header and
/// `k` items of at most a record's size.
pub fn block_bound_bytes(k: u32) -> u64 {
    RECALL_HEADER.len() as u64 + u64::from(k) * (RECALL_ITEM.len() + MAX_TEXT_BYTES) as u64
}
/// Most texts one `embed` call takes (OpenAI's limit for one embeddings request).
pub const MAX_EMBED_INPUTS: usize = 2_048;
/// Longest namespace, in characters (all ASCII).
pub const MAX_NAMESPACE_LEN: usize = 64;

#[derive(Debug, Clone, thiserror::Error)]
pub enum MemoryError {
    #[error("{message}")]
    Validation {
        param: &'static str,
        message: String,
    },
    #[error("memory '{0}' does not exist")]
    NotFound(String),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("memory failed: {0}")]
    Internal(String),
}

impl MemoryError {
    fn validation(param: &'static str, message: impl Into<String>) -> Self {
        Self::Validation {
            param,
            message: message.into(),
        }
    }

    /// The HTTP status; upstream errors map as in `error.rs` for generation.
    pub fn status(&self) -> u16 {
        match self {
            MemoryError::Validation { .. } => 422,
            MemoryError::NotFound(_) => 404,
            MemoryError::Upstream(e) => match e {
                UpstreamError::RateLimited { .. } => 429,
                UpstreamError::Timeout(_) | UpstreamError::Unavailable { status: 504, .. } => 504,
                UpstreamError::Rejected { .. } => 400,
                UpstreamError::ModelNotFound(_) => 404,
                UpstreamError::Unavailable { .. }
                | UpstreamError::Connect(_)
                | UpstreamError::Protocol(_)
                | UpstreamError::Credentials(_)
                | UpstreamError::Interrupted(_) => 502,
            },
            MemoryError::Storage(s) => s.status(),
            MemoryError::Internal(_) => 500,
        }
    }

    /// The stable `error.code` (DESIGN §10).
    pub fn code(&self) -> &'static str {
        match self {
            MemoryError::Validation { .. } => "validation_error",
            MemoryError::NotFound(_) => "not_found",
            MemoryError::Upstream(e) => match e {
                UpstreamError::RateLimited { .. } => "upstream_rate_limited",
                UpstreamError::Timeout(_) | UpstreamError::Unavailable { status: 504, .. } => {
                    "upstream_timeout"
                }
                UpstreamError::ModelNotFound(_) => "model_not_found",
                UpstreamError::Rejected { .. } => "upstream_rejected",
                UpstreamError::Unavailable { .. }
                | UpstreamError::Connect(_)
                | UpstreamError::Protocol(_)
                | UpstreamError::Credentials(_)
                | UpstreamError::Interrupted(_) => "upstream_error",
            },
            MemoryError::Storage(s) => s.code(),
            MemoryError::Internal(_) => "internal_error",
        }
    }

    /// The request field at fault (OpenAI's `error.param`), for validation errors.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            MemoryError::Validation { param, .. } => Some(param),
            _ => None,
        }
    }

    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            MemoryError::Validation { .. } => "validation",
            MemoryError::NotFound(_) => "not_found",
            MemoryError::Upstream(e) => e.metric_label(),
            MemoryError::Storage(_) => "storage",
            MemoryError::Internal(_) => "internal",
        }
    }
}

/// One search result, as `GET /v1/memory` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Match {
    pub id: String,
    pub text: String,
    /// Cosine similarity, −1 to 1.
    pub score: f32,
}

/// Checks an optional namespace: up to 64 of `[A-Za-z0-9_.-]`; the empty string means none.
pub fn validate_namespace(ns: Option<&str>) -> Result<Option<&str>, MemoryError> {
    match ns {
        None | Some("") => Ok(None),
        Some(s)
            if s.len() <= MAX_NAMESPACE_LEN
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) =>
        {
            Ok(Some(s))
        }
        Some(_) => Err(MemoryError::validation(
            "namespace",
            format!("a namespace is up to {MAX_NAMESPACE_LEN} characters of A-Z a-z 0-9 _ . -"),
        )),
    }
}

fn validate_text(param: &'static str, text: &str) -> Result<(), MemoryError> {
    if text.trim().is_empty() {
        return Err(MemoryError::validation(
            param,
            format!("{param} must not be empty"),
        ));
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(MemoryError::validation(
            param,
            format!("{param} is longer than {MAX_TEXT_BYTES} bytes"),
        ));
    }
    Ok(())
}

// === slots ===

type SlotKey = (Wallet, Option<Box<str>>);
type Shared<T> = Arc<RwLock<T>>;
/// What a load publishes to its waiters.
type LoadResult = Option<Result<Shared<Index>, MemoryError>>;

/// A change that reached the log while its slot was loading.
enum Pending {
    Insert(MemoryId, Vec<f32>),
    Delete(MemoryId),
}

enum SlotState {
    /// Not loaded (or detached from the map after a failed or empty load): changes are not
    /// tracked, the next search loads from the log.
    Cold,
    Loading {
        pending: Vec<Pending>,
        done: watch::Sender<LoadResult>,
    },
    Ready(Shared<Index>),
}

struct Slot {
    state: Mutex<SlotState>,
}

impl Slot {
    /// Applies a change that already reached the log; returns the index when it changed, so the
    /// caller can plan graph work outside the slot lock.
    fn apply(&self, change: Pending) -> Option<Shared<Index>> {
        let mut st = lock(&self.state);
        match &mut *st {
            SlotState::Cold => None,
            SlotState::Loading { pending, .. } => {
                pending.push(change);
                None
            }
            SlotState::Ready(ix) => {
                let mut w = write(ix);
                match change {
                    Pending::Insert(id, v) => w.insert(id, &v),
                    Pending::Delete(id) => w.delete(&id),
                };
                drop(w);
                Some(ix.clone())
            }
        }
    }
}

/// Hands the index's due graph work to the index worker; the job installs its own result.
fn maintain(ix: &Shared<Index>) {
    let Some(job) = write(ix).plan() else {
        return;
    };
    let ix = ix.clone();
    // Detached on purpose: the job only touches this index, must finish even when the request
    // that triggered it is gone, and clears the index's busy flag itself.
    on_index_worker(Box::new(move || run_job(&ix, job)));
}

type Work = Box<dyn FnOnce() + Send>;

/// Runs `work` on the one long-lived thread that does every index's graph work, in order (or
/// here, if that thread cannot be started). One thread rather than tokio's blocking pool: pool
/// threads exit after 10 s idle, and graphs built on one thread and freed after it exited
/// leave the allocator's pages stranded until another thread adopts them, which the soak
/// measured as RSS drift. The graph build itself still runs in parallel on rayon's pool.
fn on_index_worker(work: Work) {
    static WORKER: std::sync::OnceLock<Option<std::sync::mpsc::Sender<Work>>> =
        std::sync::OnceLock::new();
    let worker = WORKER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Work>();
        std::thread::Builder::new()
            .name("vw-memory-index".into())
            .spawn(move || {
                while let Ok(work) = rx.recv() {
                    work();
                }
            })
            .ok()
            .map(|_| tx)
    });
    let refused = match worker {
        Some(tx) => tx.send(work).err().map(|e| e.0),
        None => Some(work),
    };
    if let Some(work) = refused {
        work();
    }
}

/// Runs a job and installs it, then any job that became due meanwhile (writes and deletes
/// made during a build cannot plan their own while it is out). A panic inside `hnsw_rs`
/// leaves the exact scan in charge. What an install replaces is freed after the index lock is
/// released, so searches never wait for a graph to be taken apart.
fn run_job(ix: &Shared<Index>, job: index::Job) {
    let mut next = Some(job);
    while let Some(job) = next.take() {
        match catch_unwind(AssertUnwindSafe(|| job.run())) {
            Ok(done) => {
                let mut w = write(ix);
                let replaced = w.install(done);
                next = w.plan();
                drop(w);
                drop(replaced);
            }
            Err(_) => {
                tracing::error!("memory index job panicked; the index stays on exact search");
                write(ix).abandon();
            }
        }
    }
}

// === Memory ===

/// The memory service: the store, the embedder, and the lazily loaded indexes.
pub struct Memory {
    store: Storage,
    embedder: Embedder,
    fingerprint: String,
    params: IndexParams,
    slots: Arc<DashMap<SlotKey, Arc<Slot>>>,
    /// Records kept per (wallet, namespace); past it the oldest are forgotten. 0: no limit.
    cap: usize,
    /// Where re-embeds run (`reembed.rs`), and the wallets being re-embedded.
    effects: crate::effects::Effects,
    reembedding: Arc<DashMap<Wallet, ()>>,
    /// Vectors of recently embedded texts (`cache.rs`); not used for feature hashing, which is
    /// cheaper than a lookup.
    cache: Option<Arc<EmbedCache>>,
    cache_key: Arc<str>,
}

/// Bytes of vectors (and their texts) the embedding cache keeps by default: ~10,000 chat turns
/// of the local model.
pub const EMBED_CACHE_BYTES: usize = 32 << 20;

impl fmt::Debug for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memory")
            .field("embedder", &self.fingerprint)
            .field("indexes", &self.slots.len())
            .finish()
    }
}

impl Memory {
    pub fn new(store: impl Into<Storage>, embedder: Embedder, params: IndexParams) -> Self {
        let cache = match embedder {
            Embedder::Local(_) => None,
            Embedder::Gemini(_) | Embedder::Model(_) => {
                Some(Arc::new(EmbedCache::new(EMBED_CACHE_BYTES)))
            }
        };
        Self {
            store: store.into(),
            cache,
            cache_key: embedder.fingerprint().into(),
            fingerprint: embedder.fingerprint(),
            embedder,
            params,
            slots: Arc::new(DashMap::new()),
            cap: 0,
            effects: crate::effects::Effects::new(),
            reembedding: Arc::new(DashMap::new()),
        }
    }

    /// Runs re-embeds on the server's tracked effects (shutdown waits for them).
    pub fn with_effects(mut self, effects: crate::effects::Effects) -> Self {
        self.effects = effects;
        self
    }

    /// Replaces the embedding cache by one of `bytes` (0: none).
    pub fn with_cache_bytes(mut self, bytes: usize) -> Self {
        self.cache = (bytes > 0).then(|| Arc::new(EmbedCache::new(bytes)));
        self
    }

    /// What the embedding cache holds and has served (`None` without a cache).
    pub fn cache_stats(&self) -> Option<cache::CacheStats> {
        self.cache.as_ref().map(|c| c.stats())
    }

    /// Keeps at most `cap` records per (wallet, namespace), forgetting the oldest (0: no limit).
    pub fn with_cap(mut self, cap: usize) -> Self {
        self.cap = cap;
        self
    }

    /// The embedder and exact-scan threshold from config; graph settings are the defaults.
    /// Blocks while a local model loads; fails when its files are missing or corrupt.
    pub fn from_config(
        store: impl Into<Storage>,
        cfg: &MemoryConfig,
        gemini: Gemini,
    ) -> Result<Self, model::ModelError> {
        Ok(Self::with_embedder(
            store,
            cfg,
            Embedder::from_config(cfg, gemini)?,
        ))
    }

    /// `from_config` with an embedder made already (`app` loads the model before binding).
    pub fn with_embedder(
        store: impl Into<Storage>,
        cfg: &MemoryConfig,
        embedder: Embedder,
    ) -> Self {
        let params = IndexParams {
            exact_threshold: cfg.exact_threshold,
            ..IndexParams::default()
        };
        Self::new(store, embedder, params).with_cap(cfg.max_records)
    }

    /// Values per vector.
    pub fn dims(&self) -> usize {
        self.embedder.dims()
    }

    /// The embedding model's name, for the `model` field of `/v1/embeddings` answers.
    pub fn model(&self) -> &str {
        self.embedder.model_name()
    }

    /// Embeds, stores and indexes one memory (the index only if it is loaded already).
    pub async fn write(
        &self,
        wallet: Wallet,
        namespace: Option<&str>,
        text: &str,
    ) -> Result<MemoryId, MemoryError> {
        let namespace = validate_namespace(namespace)?;
        validate_text("text", text)?;
        let vector = self.embed_one(text).await?;
        let id = MemoryId::now_v7();
        let record = MemoryRecord {
            id: id.0,
            created_at_ms: now_ms(),
            namespace: namespace.map(str::to_string),
            embedder: self.fingerprint.clone(),
            text: text.to_string(),
            vector,
        };
        // A record is acknowledged when a search can return it: durable before it is indexed.
        let forgotten = self
            .store
            .put_memory(&wallet, &id.0, namespace, &record.encode(), self.cap)
            .await?;
        if let Some(slot) = self.existing_slot(wallet, namespace) {
            for gone in forgotten {
                slot.apply(Pending::Delete(MemoryId(gone)));
            }
            if let Some(ix) = slot.apply(Pending::Insert(id, record.vector)) {
                if !self.store.is_shared() {
                    // The embedded store leaves the cap to the loaded index: forgotten here
                    // (from the index, then the log).
                    let doomed = over_cap(&mut write(&ix), self.cap);
                    for old in doomed {
                        self.store.delete_memory(&wallet, &old.0).await?;
                    }
                }
                maintain(&ix);
            }
        }
        metrics::counter!("vectorway_memory_writes_total").increment(1);
        Ok(id)
    }

    /// The `k` memories of (wallet, namespace) most similar to `query`, best first, with their
    /// cosine scores and no floor.
    pub async fn search(
        &self,
        wallet: Wallet,
        namespace: Option<&str>,
        query: &str,
        k: usize,
    ) -> Result<Vec<Match>, MemoryError> {
        let namespace = validate_namespace(namespace)?;
        validate_text("q", query)?;
        if !(1..=MAX_K).contains(&k) {
            return Err(MemoryError::validation(
                "k",
                format!("k must be between 1 and {MAX_K}"),
            ));
        }
        // Sequential, not `try_join!`: joining these borrowed futures makes the caller's future
        // not provably `Send` (a rustc limitation with higher-ranked lifetimes).
        let query = self.embed_one(query).await?;
        self.search_vector(wallet, namespace, &query, k).await
    }

    /// `search` with the query embedded already (`embed_one`), so a caller can embed it while
    /// it does other work.
    pub async fn search_vector(
        &self,
        wallet: Wallet,
        namespace: Option<&str>,
        query: &[f32],
        k: usize,
    ) -> Result<Vec<Match>, MemoryError> {
        let namespace = validate_namespace(namespace)?;
        if query.len() != self.dims() {
            return Err(MemoryError::Internal(
                "a query vector of the wrong size".into(),
            ));
        }
        let ix = self.index_for(wallet, namespace).await?;
        let hits = read(&ix).search(query, k);
        // The texts are read back from the store, in one round trip: a record deleted since
        // the index was read (here, or by another gateway before it answered) is gone, and
        // skipped.
        let ids: Vec<[u8; 16]> = hits.iter().map(|(id, _)| id.0).collect();
        let mut found: std::collections::HashMap<[u8; 16], Vec<u8>> = self
            .store
            .get_memories(&wallet, &ids)
            .await?
            .into_iter()
            .collect();
        let mut out = Vec::with_capacity(hits.len());
        for (id, score) in hits {
            let Some(bytes) = found.remove(&id.0) else {
                continue;
            };
            match RecordView::parse(&bytes) {
                Ok(view) => out.push(Match {
                    id: id.to_string(),
                    text: view.text.to_string(),
                    score,
                }),
                Err(e) => tracing::warn!(%wallet, %id, %e, "unreadable memory record skipped"),
            }
        }
        Ok(out)
    }

    /// Deletes one memory of `wallet`. `Ok(false)` when the wallet has no memory with that id
    /// (another wallet's id, an unknown id, or text that is not an id at all). Searches stop
    /// returning it at once, and the delete is on disk before this returns.
    pub async fn delete(&self, wallet: Wallet, id: &str) -> Result<bool, MemoryError> {
        let Ok(id) = id.parse::<MemoryId>() else {
            return Ok(false);
        };
        // Synced on every path: "not found" may be the answer because a delete that is not on
        // disk yet (another request's, or the cap's) got there first.
        let Some(bytes) = self.store.get_memory(&wallet, &id.0).await? else {
            self.store.sync_memories().await?;
            return Ok(false);
        };
        let namespace = RecordView::parse(&bytes)
            .ok()
            .map(|v| v.namespace.map(str::to_string));
        if !self.store.delete_memory(&wallet, &id.0).await? {
            return Ok(false);
        }
        // An unreadable record was never indexed: there is nothing to tombstone.
        if let Some(namespace) = namespace
            && let Some(slot) = self.existing_slot(wallet, namespace.as_deref())
            && let Some(ix) = slot.apply(Pending::Delete(id))
        {
            maintain(&ix);
        }
        metrics::counter!("vectorway_memory_deletes_total").increment(1);
        Ok(true)
    }

    /// Deletes every memory of `wallet` and drops its loaded indexes (a swept agent account);
    /// on disk before this returns. Returns how many records there were.
    pub async fn forget_wallet(&self, wallet: Wallet) -> Result<usize, MemoryError> {
        self.slots.retain(|(w, _), _| *w != wallet);
        Ok(self.store.forget_memories_of(&wallet).await?)
    }

    fn key(wallet: Wallet, namespace: Option<&str>) -> SlotKey {
        (wallet, namespace.map(Box::from))
    }

    fn existing_slot(&self, wallet: Wallet, namespace: Option<&str>) -> Option<Arc<Slot>> {
        self.slots
            .get(&Self::key(wallet, namespace))
            .map(|s| s.value().clone())
    }

    /// The index of (wallet, namespace), loading it from the log on first use.
    async fn index_for(
        &self,
        wallet: Wallet,
        namespace: Option<&str>,
    ) -> Result<Shared<Index>, MemoryError> {
        let key = Self::key(wallet, namespace);
        let slot = self
            .slots
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Slot {
                    state: Mutex::new(SlotState::Cold),
                })
            })
            .value()
            .clone();
        let mut rx = {
            let mut st = lock(&slot.state);
            match &*st {
                SlotState::Ready(ix) => return Ok(ix.clone()),
                SlotState::Loading { done, .. } => done.subscribe(),
                SlotState::Cold => {
                    let (done, rx) = watch::channel(None);
                    *st = SlotState::Loading {
                        pending: Vec::new(),
                        done,
                    };
                    drop(st);
                    self.start_load(key, slot.clone());
                    rx
                }
            }
        };
        // Wait on `changed()` in a loop rather than `wait_for(Option::is_some)`: a higher-ranked
        // predicate held across the await makes this future not provably `Send`.
        let result = loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                break Some(r);
            }
            if rx.changed().await.is_err() {
                return Err(MemoryError::Internal(
                    "the memory index load was abandoned".into(),
                ));
            }
        };
        match result {
            Some(Ok(ix)) => Ok(ix),
            Some(Err(e)) => Err(e),
            None => Err(MemoryError::Internal(
                "the memory index load ended without a result".into(),
            )),
        }
    }

    /// Loads a slot on its own task: scan the store, replay what was queued meanwhile, publish.
    fn start_load(&self, key: SlotKey, slot: Arc<Slot>) {
        let store = self.store.clone();
        let slots = self.slots.clone();
        let fingerprint = self.fingerprint.clone();
        let (dims, params, cap) = (self.dims(), self.params, self.cap);
        let effects = self.effects.clone();
        let reembed = reembed::Reembed {
            store: store.clone(),
            embedder: self.embedder.clone(),
            fingerprint: fingerprint.clone(),
            dims,
            slots: slots.clone(),
            running: self.reembedding.clone(),
        };
        // Detached on purpose: the load must finish and publish even if every waiter is gone,
        // or later waiters would find the slot stuck in `Loading`.
        // On a blocking thread that drives the (async) scan itself: the store's scan moves its
        // own CPU work to the blocking pool as well.
        let runtime = tokio::runtime::Handle::current();
        drop(tokio::task::spawn_blocking(move || {
            let (wallet, namespace) = (key.0, key.1.as_deref());
            let loaded = catch_unwind(AssertUnwindSafe(|| {
                runtime.block_on(load_index(
                    &store,
                    wallet,
                    namespace,
                    &fingerprint,
                    (dims, params, cap),
                ))
            }))
            .unwrap_or_else(|_| {
                Err(MemoryError::Internal(
                    "the memory index load panicked".into(),
                ))
            });
            // Records of another embedder are re-embedded in the background (`reembed.rs`).
            if matches!(&loaded, Ok((_, foreign)) if *foreign > 0) {
                reembed.start(&effects, wallet);
            } else {
                drop(reembed);
            }
            // Let go of the store before anyone hears back: a caller may close it and reopen the
            // directory at once, and sled allows one open handle set per directory.
            drop(store);
            let mut st = lock(&slot.state);
            let SlotState::Loading { pending, done } = std::mem::replace(&mut *st, SlotState::Cold)
            else {
                return;
            };
            let ix = match loaded {
                Ok((mut index, _)) => {
                    for change in pending {
                        match change {
                            Pending::Insert(id, v) => index.insert(id, &v),
                            Pending::Delete(id) => index.delete(&id),
                        };
                    }
                    Arc::new(RwLock::new(index))
                }
                Err(e) => {
                    // Stay `Cold` and leave the map: the next search tries again.
                    drop(st);
                    slots.remove_if(&key, |_, s| Arc::ptr_eq(s, &slot));
                    done.send_replace(Some(Err(e)));
                    return;
                }
            };
            let empty = read(&ix).rows() == 0;
            *st = SlotState::Ready(ix.clone());
            drop(st);
            if empty {
                // Nothing to cache: an empty wallet namespace costs no memory until it has rows
                // (writes reach the log either way; the next search loads again).
                slots.remove_if(&key, |_, s| Arc::ptr_eq(s, &slot));
            }
            done.send_replace(Some(Ok(ix.clone())));
            // A large wallet's graph is built after the waiters have their exact index.
            maintain(&ix);
        }));
    }
}
