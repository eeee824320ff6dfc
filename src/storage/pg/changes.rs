//! The auth change feed: keys and revoked families written by any gateway, read by every other.
//!
//! Every write of an API key (`put_key`) or a family revocation takes the next value of the
//! `auth_change_seq` sequence. A gateway polls for rows above its cursor. A sequence value is
//! drawn inside the writing statement but becomes visible only at its commit, so a later value
//! can be visible before an earlier one: the feed therefore re-reads from the highest value it
//! had seen `lookback` ago (longer than a statement may run: `statement_timeout` cancels it),
//! and applying a change twice is harmless (the cache takes the stored record as it is).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::PgStore;
use crate::storage::{KeyRecord, StorageError};

/// Where a gateway is in the feed.
#[derive(Debug)]
pub struct ChangeFeed {
    lookback: Duration,
    /// (when, highest value seen then), oldest first; the front is at least `lookback` old
    /// once the feed has run that long.
    seen: VecDeque<(Instant, i64)>,
}

/// What changed since the feed's cursor.
#[derive(Debug, Default)]
pub struct AuthChanges {
    pub keys: Vec<KeyRecord>,
    pub revoked_families: Vec<String>,
}

impl ChangeFeed {
    /// A feed that starts at `cursor` (0: from the beginning).
    pub fn new(cursor: i64, lookback: Duration) -> Self {
        Self {
            lookback,
            seen: VecDeque::from([(Instant::now(), cursor)]),
        }
    }

    /// The highest value seen so far.
    pub(super) fn last(&self) -> i64 {
        self.seen.back().map_or(0, |s| s.1)
    }

    /// The value to read above: the highest seen at least `lookback` ago.
    pub(super) fn from(&self) -> i64 {
        let cut = Instant::now().checked_sub(self.lookback);
        self.seen
            .iter()
            .rev()
            .find(|(at, _)| cut.is_none_or(|c| *at <= c))
            .or(self.seen.front())
            .map_or(0, |s| s.1)
    }

    pub(super) fn record(&mut self, highest: i64) {
        let now = Instant::now();
        self.seen.push_back((now, highest));
        // Keep one entry older than the lookback (the current `from`) and everything newer.
        while self.seen.len() > 2
            && self
                .seen
                .get(1)
                .is_some_and(|(at, _)| now.duration_since(*at) >= self.lookback)
        {
            self.seen.pop_front();
        }
    }
}

impl PgStore {
    /// The current end of the auth feed (a gateway that has just loaded everything starts here).
    pub async fn auth_cursor(&self) -> Result<i64, StorageError> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "SELECT GREATEST(
                     (SELECT COALESCE(MAX(change_seq), 0) FROM api_keys),
                     (SELECT COALESCE(MAX(change_seq), 0) FROM revoked_families))",
                &[],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Keys and revoked families written since the feed's cursor; advances the feed.
    pub async fn auth_changes(&self, feed: &mut ChangeFeed) -> Result<AuthChanges, StorageError> {
        let from = feed.from();
        let c = self.client().await?;
        let mut highest = feed.last().max(from);
        let mut out = AuthChanges::default();
        for row in c
            .query(
                "SELECT key_id, wallet, secret_sha256, key_name, created_at, last_used_at,
                        revoked_at, change_seq
                 FROM api_keys WHERE change_seq > $1 ORDER BY change_seq",
                &[&from],
            )
            .await?
        {
            highest = highest.max(row.try_get("change_seq")?);
            out.keys.push(super::records::key_of(&row)?);
        }
        for row in c
            .query(
                "SELECT family, change_seq FROM revoked_families WHERE change_seq > $1",
                &[&from],
            )
            .await?
        {
            highest = highest.max(row.try_get(1)?);
            out.revoked_families.push(row.try_get(0)?);
        }
        feed.record(highest);
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
