//! History pages: one page of a wallet's ledger or usage, newest first, with the filter's total.
//!
//! Both backends answer the same question with the same shape (`Page`): the embedded store walks
//! its history chains here, PostgreSQL runs one `OFFSET … LIMIT` query and one count in a single
//! snapshot (`pg::history`). Unfiltered, the embedded walk stops at the end of the page and takes
//! the total from the chain's head; filtered, it walks the whole chain to count the matches.

use super::{LedgerEntry, LedgerKind, StorageError, Store, UsageEvent};
use crate::wallet::Wallet;

/// One page: the items from `offset`, at most `limit` of them, and how many match in all.
#[derive(Debug, Clone, Default)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
}

/// Which usage events a page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageFilter<'a> {
    All,
    /// Status ≥ 400.
    Errors,
    /// Exactly this path.
    Path(&'a str),
}

impl UsageFilter<'_> {
    pub fn keeps(&self, ev: &UsageEvent) -> bool {
        match self {
            Self::All => true,
            Self::Errors => ev.status >= 400,
            Self::Path(p) => ev.path == *p,
        }
    }
}

/// Keeps the matches that fall on the page and counts them all.
fn collect<T>(
    items: impl Iterator<Item = Result<T, StorageError>>,
    keep: impl Fn(&T) -> bool,
    offset: usize,
    limit: usize,
) -> Result<Page<T>, StorageError> {
    let mut page = Page {
        items: Vec::with_capacity(limit.min(1024)),
        total: 0,
    };
    for item in items {
        let item = item?;
        if !keep(&item) {
            continue;
        }
        if page.total >= offset as u64 && page.items.len() < limit {
            page.items.push(item);
        }
        page.total += 1;
    }
    Ok(page)
}

impl Store {
    /// A page of `wallet`'s ledger, newest first, of one kind or all.
    pub fn ledger_page(
        &self,
        wallet: &Wallet,
        kind: Option<LedgerKind>,
        offset: usize,
        limit: usize,
    ) -> Result<Page<LedgerEntry>, StorageError> {
        let (entries, count) = self.ledger_counted(wallet);
        match kind {
            None => Ok(Page {
                items: entries.skip(offset).take(limit).collect::<Result<_, _>>()?,
                total: count,
            }),
            Some(kind) => collect(entries, |e| e.kind == kind, offset, limit),
        }
    }

    /// A page of `wallet`'s usage events, newest first. Unfiltered, the events before the page
    /// are stepped over still encoded, never decoded.
    pub fn usage_page(
        &self,
        wallet: &Wallet,
        filter: UsageFilter<'_>,
        offset: usize,
        limit: usize,
    ) -> Result<Page<UsageEvent>, StorageError> {
        let (events, count) = self.usage_raw_counted(wallet);
        match filter {
            UsageFilter::All => Ok(Page {
                items: events
                    .skip(offset)
                    .take(limit)
                    .map(|raw| raw.and_then(|r| Self::decode_usage(&r)))
                    .collect::<Result<_, _>>()?,
                total: count,
            }),
            filter => collect(
                events.map(|raw| raw.and_then(|r| Self::decode_usage(&r))),
                |ev| filter.keeps(ev),
                offset,
                limit,
            ),
        }
    }

    /// True when `wallet` has any ledger entry (money ever reached it).
    pub fn has_ledger(&self, wallet: &Wallet) -> bool {
        self.ledger_counted(wallet).1 > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filtered_walk_counts_every_match_and_keeps_the_page() {
        let items = (0..20u64).map(Ok::<_, StorageError>);
        let page = collect(items, |i| i % 2 == 0, 3, 2).unwrap();
        assert_eq!((page.items, page.total), (vec![6, 8], 10));
        let past = collect((0..4u64).map(Ok), |_| true, 9, 5).unwrap();
        assert_eq!((past.items.len(), past.total), (0, 4));
    }
}
