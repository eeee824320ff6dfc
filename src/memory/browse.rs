//! Browsing a wallet's memory without a query: its namespaces with their record counts, and one
//! namespace's records newest first (`GET /v1/memory/namespaces`, `GET /v1/memory/records`).
//!
//! Both walk the wallet's records in the memory log on a blocking thread (one positioned read
//! per record, the same walk a first search's index load makes): O(records of the wallet), never
//! another wallet's, and nothing is embedded, so they cost the caller nothing. A PostgreSQL
//! memory backend answers the same two questions from `memory_records` (`GROUP BY namespace`,
//! and `ORDER BY id DESC` on its `(wallet, namespace)` index) behind these two methods.

use std::collections::BTreeMap;

use super::record::RecordView;
use super::{Memory, MemoryError, MemoryId, validate_namespace};
use crate::storage::{StorageError, Store};
use crate::wallet::Wallet;

/// Most records one list page returns.
pub const MAX_LIST: usize = 100;

/// One namespace of a wallet's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// `None`: the default namespace (memories written without one).
    pub namespace: Option<String>,
    pub records: u64,
    /// When its newest record was written, in Unix milliseconds.
    pub newest_at_ms: u64,
}

/// One record as a list shows it (no vector).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: MemoryId,
    pub namespace: Option<String>,
    pub text: String,
    pub created_at_ms: u64,
}

/// One page of a namespace's records, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub records: Vec<Listed>,
    /// Older records follow the last one (ask again with `before` = its id).
    pub has_more: bool,
}

/// Runs a walk of the memory log off tokio's workers.
async fn blocking<T: Send + 'static>(
    store: &Store,
    f: impl FnOnce(&Store) -> Result<T, StorageError> + Send + 'static,
) -> Result<T, MemoryError> {
    let store = Store::clone(store);
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| MemoryError::Internal(format!("memory walk task: {e}")))?
        .map_err(MemoryError::from)
}

impl Memory {
    /// The wallet's namespaces (the default one first as `None`, then by name), each with its
    /// live record count and newest record's time. A wallet with no memories has none.
    pub async fn namespaces(&self, wallet: Wallet) -> Result<Vec<Namespace>, MemoryError> {
        blocking(&self.store, move |store| {
            let mut by: BTreeMap<Option<String>, Namespace> = BTreeMap::new();
            for item in store.memories_of(&wallet) {
                let (id, bytes) = item?;
                let view = match RecordView::parse(&bytes) {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!(%wallet, id = %MemoryId(id), %e, "unreadable memory record skipped");
                        continue;
                    }
                };
                let ns = view.namespace.map(str::to_string);
                let entry = by.entry(ns.clone()).or_insert(Namespace {
                    namespace: ns,
                    records: 0,
                    newest_at_ms: 0,
                });
                entry.records += 1;
                entry.newest_at_ms = entry.newest_at_ms.max(view.created_at_ms);
            }
            Ok(by.into_values().collect())
        })
        .await
    }

    /// Up to `limit` (1 to `MAX_LIST`) records of (wallet, namespace), newest first, strictly
    /// older than `before` when given (the previous page's last id).
    pub async fn list(
        &self,
        wallet: Wallet,
        namespace: Option<&str>,
        limit: usize,
        before: Option<MemoryId>,
    ) -> Result<ListPage, MemoryError> {
        let namespace = validate_namespace(namespace)?.map(str::to_string);
        if !(1..=MAX_LIST).contains(&limit) {
            return Err(MemoryError::validation(
                "limit",
                format!("limit must be between 1 and {MAX_LIST}"),
            ));
        }
        blocking(&self.store, move |store| {
            let mut records = Vec::with_capacity(limit);
            let mut has_more = false;
            // Ids are UUIDv7 in creation order, so the log's id order reversed is newest first.
            let older = store
                .memories_of(&wallet)
                .rev()
                .filter(|item| !matches!((item, before), (Ok((id, _)), Some(b)) if *id >= b.0));
            for item in older {
                let (id, bytes) = item?;
                let Ok(view) = RecordView::parse(&bytes) else {
                    continue;
                };
                if view.namespace != namespace.as_deref() {
                    continue;
                }
                if records.len() == limit {
                    has_more = true;
                    break;
                }
                records.push(Listed {
                    id: MemoryId(id),
                    namespace: namespace.clone(),
                    text: view.text.to_string(),
                    created_at_ms: view.created_at_ms,
                });
            }
            Ok(ListPage { records, has_more })
        })
        .await
    }
}
