//! Browsing a wallet's memory without a query: its namespaces with their record counts, and one
//! namespace's records newest first (`GET /v1/memory/namespaces`, `GET /v1/memory/records`).
//!
//! Both fold over the wallet's records through the storage facade (`Storage::fold_memories`: the
//! memory log on the embedded store, `memory_records` on PostgreSQL), on a blocking thread, the
//! same walk a first search's index load makes: O(records of the wallet), never another
//! wallet's, and nothing is embedded, so they cost the caller nothing.

use std::collections::{BTreeMap, VecDeque};

use super::record::RecordView;
use super::{Memory, MemoryError, MemoryId, validate_namespace};
use crate::storage::MemoryScan;
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

impl Memory {
    /// The wallet's namespaces (the default one first as `None`, then by name), each with its
    /// live record count and newest record's time. A wallet with no memories has none.
    pub async fn namespaces(&self, wallet: Wallet) -> Result<Vec<Namespace>, MemoryError> {
        let by = self
            .store
            .fold_memories(
                wallet,
                MemoryScan::All,
                BTreeMap::<Option<String>, Namespace>::new(),
                move |by, id, bytes| {
                    let view = match RecordView::parse(bytes) {
                        Ok(v) => v,
                        Err(e) => {
                            tracing::warn!(%wallet, id = %MemoryId(id), %e, "unreadable memory record skipped");
                            return;
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
                },
            )
            .await?;
        Ok(by.into_values().collect())
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
        // The fold runs in id order, oldest first (ids are UUIDv7 in creation order): keep the
        // newest `limit + 1` older than `before`; one more than the page means more follow.
        let want = namespace.clone();
        let mut newest = self
            .store
            .fold_memories(
                wallet,
                MemoryScan::Namespace(namespace.clone()),
                VecDeque::with_capacity(limit + 1),
                move |newest, id, bytes| {
                    if before.is_some_and(|b| id >= b.0) {
                        return;
                    }
                    let Ok(view) = RecordView::parse(bytes) else {
                        return;
                    };
                    if view.namespace != want.as_deref() {
                        return;
                    }
                    if newest.len() == limit + 1 {
                        newest.pop_front();
                    }
                    newest.push_back(Listed {
                        id: MemoryId(id),
                        namespace: want.clone(),
                        text: view.text.to_string(),
                        created_at_ms: view.created_at_ms,
                    });
                },
            )
            .await?;
        let has_more = newest.len() > limit;
        if has_more {
            newest.pop_front();
        }
        Ok(ListPage {
            records: newest.into_iter().rev().collect(),
            has_more,
        })
    }
}
