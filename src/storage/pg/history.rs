//! The ledger and usage history in PostgreSQL: appends that keep `balances` and the ledger in
//! step, pages, key totals, and the console rollup's replay.
//!
//! A journal window (or one money-in entry) is one statement: the ledger rows are inserted from
//! arrays, and the same statement adds what was inserted to each wallet's `balances` row
//! (`granted` for money in, `committed` for debits), so `granted − committed = Σ ledger` holds in
//! every snapshot. Each row carries a commit key (`reference/seq` for the ledger,
//! `request_id/seq` for usage): a window retried after a lost COMMIT answer inserts nothing
//! twice. Pages read their rows and their total in one repeatable-read snapshot.

use std::collections::HashMap;

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::leases::Seen;
use super::{PgStore, to_i64, to_u64};
use crate::console::rollup::Rollup;
use crate::storage::pages::{Page, UsageFilter};
use crate::storage::{KeyTotals, LedgerEntry, LedgerKind, StorageError, UsageEvent};
use crate::wallet::Wallet;

/// A ledger entry's commit key: unique per entry and the same when the entry is retried.
fn ledger_key(e: &LedgerEntry) -> Option<String> {
    e.reference.as_ref().map(|r| format!("{r}/{}", e.seq))
}

pub(super) fn kind_name(k: LedgerKind) -> &'static str {
    match k {
        LedgerKind::Topup => "topup",
        LedgerKind::Grant => "grant",
        LedgerKind::Refund => "refund",
        LedgerKind::Debit => "debit",
    }
}

fn kind_of(s: &str) -> Result<LedgerKind, StorageError> {
    Ok(match s {
        "topup" => LedgerKind::Topup,
        "grant" => LedgerKind::Grant,
        "refund" => LedgerKind::Refund,
        "debit" => LedgerKind::Debit,
        other => return Err(StorageError::Codec(format!("ledger kind {other}"))),
    })
}

pub(super) fn wallet_of(row: &Row) -> Result<Wallet, StorageError> {
    let raw: &[u8] = row.try_get("wallet")?;
    Wallet::from_slice(raw).ok_or_else(|| StorageError::Codec("wallet: not a wallet".into()))
}

pub(super) const LEDGER_COLS: &str = "wallet, seq, ts_ms, kind, credits, reference, note";

pub(super) fn entry_of(row: &Row) -> Result<LedgerEntry, StorageError> {
    Ok(LedgerEntry {
        seq: to_u64(row.try_get("seq")?),
        ts_ms: to_u64(row.try_get("ts_ms")?),
        wallet: wallet_of(row)?,
        kind: kind_of(row.try_get("kind")?)?,
        credits: row.try_get("credits")?,
        reference: row.try_get("reference")?,
        note: row.try_get("note")?,
    })
}

pub(super) const USAGE_COLS: &str = "wallet, seq, ts_ms, method, path, status, latency_ms, credits, usd_cost, \
     model, prompt_tokens, completion_tokens, memory_read, memory_write, memories_used, key_id, \
     auth_mode, request_id, transaction";

pub(super) fn event_of(row: &Row) -> Result<UsageEvent, StorageError> {
    Ok(UsageEvent {
        seq: to_u64(row.try_get("seq")?),
        ts_ms: to_u64(row.try_get("ts_ms")?),
        method: row.try_get("method")?,
        path: row.try_get("path")?,
        status: u16::try_from(row.try_get::<_, i32>("status")?).unwrap_or(0),
        latency_ms: to_u64(row.try_get("latency_ms")?),
        credits: to_u64(row.try_get("credits")?),
        usd_cost: row.try_get("usd_cost")?,
        model: row.try_get("model")?,
        prompt_tokens: to_u64(row.try_get("prompt_tokens")?),
        completion_tokens: to_u64(row.try_get("completion_tokens")?),
        memory_read: row.try_get("memory_read")?,
        memory_write: row.try_get("memory_write")?,
        memories_used: u32::try_from(row.try_get::<_, i32>("memories_used")?).unwrap_or(0),
        key_id: row.try_get("key_id")?,
        auth_mode: row.try_get("auth_mode")?,
        request_id: row.try_get("request_id")?,
        transaction: row.try_get("transaction")?,
    })
}

/// Inserts ledger rows (skipping any whose commit key is already there) and adds the money in
/// among them to `balances.granted`, in one statement. Debits reach `committed` first
/// (`charge_debits`), so the ledger and `balances` change in the same transaction.
const INSERT_LEDGER: &str = "
WITH ins AS (
    INSERT INTO ledger (wallet, seq, ts_ms, kind, credits, reference, note, commit_key)
    SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::bigint[], $4::text[], $5::bigint[],
                         $6::text[], $7::text[], $8::text[])
    ON CONFLICT (commit_key) DO NOTHING
    RETURNING wallet, credits)
INSERT INTO balances AS b (wallet, granted)
SELECT wallet, sum(greatest(credits, 0))::bigint FROM ins GROUP BY wallet
ON CONFLICT (wallet) DO UPDATE SET granted = b.granted + EXCLUDED.granted
RETURNING wallet, granted, committed";

/// A debit charged to this replica's lease: `used` and `committed` grow, `leased` shrinks.
const CHARGE_LEASE: &str = "
WITH l AS (
    UPDATE credit_leases SET used = used + $3
    WHERE wallet = $1 AND replica = $2 AND amount - used >= $3
    RETURNING wallet)
UPDATE balances b SET leased = b.leased - $3, committed = b.committed + $3
FROM l WHERE b.wallet = l.wallet
RETURNING b.granted, b.committed";

/// A debit charged to the free balance (no lease covers it: the embedded-style single replica,
/// or a lease recovered while its replica was cut off).
const CHARGE_FREE: &str = "
UPDATE balances SET committed = committed + $2
WHERE wallet = $1 AND granted - committed - leased >= $2
RETURNING granted, committed";

/// What is left when even the free balance cannot cover a debit: all of it, never more.
const CHARGE_REST: &str = "
UPDATE balances b SET committed = b.committed + x.free
FROM (SELECT wallet, greatest(granted - committed - leased, 0) AS free
      FROM balances WHERE wallet = $1 FOR UPDATE) x
WHERE b.wallet = x.wallet
RETURNING b.granted, b.committed, x.free";

const INSERT_USAGE: &str = "
INSERT INTO usage_events (wallet, seq, ts_ms, method, path, status, latency_ms, credits,
    usd_cost, model, prompt_tokens, completion_tokens, memory_read, memory_write, memories_used,
    key_id, auth_mode, request_id, commit_key, transaction)
SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::bigint[], $4::text[], $5::text[],
    $6::int[], $7::bigint[], $8::bigint[], $9::text[], $10::text[], $11::bigint[], $12::bigint[],
    $13::bool[], $14::bool[], $15::int[], $16::text[], $17::text[], $18::text[], $19::text[],
    $20::text[])
ON CONFLICT (commit_key) DO NOTHING";

fn seen_of(row: &Row) -> Result<Seen, StorageError> {
    Ok(Seen {
        granted: to_u64(row.try_get("granted")?),
        committed: to_u64(row.try_get("committed")?),
    })
}

/// Charges the debits among `fresh` (entries not stored yet) to `balances`, per wallet in
/// wallet order (so two replicas' windows lock rows in the same order): from `replica`'s lease
/// when it covers them, else from the free balance, else as much as is free, never more. A
/// debit cut short is rewritten to what was charged (the ledger states what `committed` got).
async fn charge_debits(
    tx: &tokio_postgres::Transaction<'_>,
    replica: &str,
    fresh: &mut [(LedgerEntry, Option<String>)],
) -> Result<Vec<(Wallet, Seen)>, StorageError> {
    let mut per: std::collections::BTreeMap<Wallet, u64> = std::collections::BTreeMap::new();
    for (e, _) in fresh.iter().filter(|(e, _)| e.credits < 0) {
        *per.entry(e.wallet).or_default() += e.credits.unsigned_abs();
    }
    let mut seen = Vec::with_capacity(per.len());
    for (wallet, due) in per {
        let w = wallet.as_bytes().as_slice();
        let d = to_i64(due);
        // The balances row first, as every lease change does (`pg::leases`).
        tx.execute("SELECT 1 FROM balances WHERE wallet = $1 FOR UPDATE", &[&w])
            .await?;
        if let Some(r) = tx.query_opt(CHARGE_LEASE, &[&w, &replica, &d]).await? {
            seen.push((wallet, seen_of(&r)?));
            continue;
        }
        if let Some(r) = tx.query_opt(CHARGE_FREE, &[&w, &d]).await? {
            seen.push((wallet, seen_of(&r)?));
            continue;
        }
        let (charged, r) = match tx.query_opt(CHARGE_REST, &[&w]).await? {
            Some(r) => (to_u64(r.try_get("free")?), Some(r)),
            None => (0, None),
        };
        metrics::counter!("vectorway_debits_cut_total").increment(1);
        tracing::error!(%wallet, due, charged, "debits exceed what the wallet has free; charged what was there");
        let mut left = charged;
        for (e, _) in fresh
            .iter_mut()
            .filter(|(e, _)| e.wallet == wallet && e.credits < 0)
        {
            let take = e.credits.unsigned_abs().min(left);
            left -= take;
            e.credits = -to_i64(take);
        }
        if let Some(r) = r {
            seen.push((wallet, seen_of(&r)?));
        }
    }
    Ok(seen)
}

impl PgStore {
    /// Appends ledger entries and usage events in one transaction, durable once it returns.
    /// Debits are charged to `replica`'s lease (`CHARGE_LEASE`), else to the free balance; an
    /// entry already stored (its commit key is there: a retried window) is skipped. Returns
    /// what the database says about each wallet touched.
    pub async fn append_history(
        &self,
        ledger: &[LedgerEntry],
        usage: &[(Wallet, UsageEvent)],
    ) -> Result<(), StorageError> {
        let replica = &*self.replica;
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let mut seen = Vec::new();
        if !ledger.is_empty() {
            let keys: Vec<Option<String>> = ledger.iter().map(ledger_key).collect();
            let present: std::collections::HashSet<String> = tx
                .query(
                    "SELECT commit_key FROM ledger WHERE commit_key = ANY($1)",
                    &[&keys.iter().flatten().collect::<Vec<_>>()],
                )
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
            let mut fresh: Vec<(LedgerEntry, Option<String>)> = ledger
                .iter()
                .cloned()
                .zip(keys)
                .filter(|(_, k)| k.as_ref().is_none_or(|k| !present.contains(k)))
                .collect();
            seen.extend(charge_debits(&tx, replica, &mut fresh).await?);
            fresh.retain(|(e, _)| e.credits != 0);
            let col = |f: &dyn Fn(&LedgerEntry) -> i64| -> Vec<i64> {
                fresh.iter().map(|(e, _)| f(e)).collect()
            };
            let wallets: Vec<&[u8]> = fresh
                .iter()
                .map(|(e, _)| e.wallet.as_bytes().as_slice())
                .collect();
            let seqs = col(&|e| to_i64(e.seq));
            let ts = col(&|e| to_i64(e.ts_ms));
            let credits = col(&|e| e.credits);
            let kinds: Vec<&str> = fresh.iter().map(|(e, _)| kind_name(e.kind)).collect();
            let refs: Vec<Option<&str>> =
                fresh.iter().map(|(e, _)| e.reference.as_deref()).collect();
            let notes: Vec<Option<&str>> = fresh.iter().map(|(e, _)| e.note.as_deref()).collect();
            let keys: Vec<Option<&str>> = fresh.iter().map(|(_, k)| k.as_deref()).collect();
            for r in tx
                .query(
                    INSERT_LEDGER,
                    &[&wallets, &seqs, &ts, &kinds, &credits, &refs, &notes, &keys],
                )
                .await?
            {
                seen.push((wallet_of(&r)?, seen_of(&r)?));
            }
        }
        if !usage.is_empty() {
            let col = |f: &dyn Fn(&UsageEvent) -> i64| -> Vec<i64> {
                usage.iter().map(|(_, e)| f(e)).collect()
            };
            let text = |f: &dyn Fn(&UsageEvent) -> Option<String>| -> Vec<Option<String>> {
                usage.iter().map(|(_, e)| f(e)).collect()
            };
            let wallets: Vec<&[u8]> = usage.iter().map(|(w, _)| w.as_bytes().as_slice()).collect();
            let seqs = col(&|e| to_i64(e.seq));
            let ts = col(&|e| to_i64(e.ts_ms));
            let methods = text(&|e| Some(e.method.clone()));
            let paths = text(&|e| Some(e.path.clone()));
            let status: Vec<i32> = usage.iter().map(|(_, e)| i32::from(e.status)).collect();
            let latency = col(&|e| to_i64(e.latency_ms));
            let credits = col(&|e| to_i64(e.credits));
            let usd = text(&|e| e.usd_cost.clone());
            let model = text(&|e| e.model.clone());
            let prompt = col(&|e| to_i64(e.prompt_tokens));
            let completion = col(&|e| to_i64(e.completion_tokens));
            let mem_r: Vec<bool> = usage.iter().map(|(_, e)| e.memory_read).collect();
            let mem_w: Vec<bool> = usage.iter().map(|(_, e)| e.memory_write).collect();
            let used: Vec<i32> = usage
                .iter()
                .map(|(_, e)| i32::try_from(e.memories_used).unwrap_or(i32::MAX))
                .collect();
            let key_id = text(&|e| e.key_id.clone());
            let auth = text(&|e| Some(e.auth_mode.clone()));
            let req = text(&|e| Some(e.request_id.clone()));
            let keys = text(&|e| Some(format!("{}/{}", e.request_id, e.seq)));
            let transaction = text(&|e| e.transaction.clone());
            let params: [&(dyn ToSql + Sync); 20] = [
                &wallets,
                &seqs,
                &ts,
                &methods,
                &paths,
                &status,
                &latency,
                &credits,
                &usd,
                &model,
                &prompt,
                &completion,
                &mem_r,
                &mem_w,
                &used,
                &key_id,
                &auth,
                &req,
                &keys,
                &transaction,
            ];
            tx.execute(INSERT_USAGE, &params).await?;
        }
        // Every debit of the window is in the database once this commits (inserted now, or by
        // an earlier attempt whose answer was lost: then its wallet's totals are read here).
        let mut landed: HashMap<Wallet, u64> = HashMap::new();
        for e in ledger.iter().filter(|e| e.credits < 0) {
            *landed.entry(e.wallet).or_default() += e.credits.unsigned_abs();
        }
        let unread: Vec<Wallet> = landed
            .keys()
            .filter(|w| !seen.iter().any(|(s, _)| s == *w))
            .copied()
            .collect();
        for w in unread {
            let row = tx
                .query_opt(
                    "SELECT granted, committed FROM balances WHERE wallet = $1",
                    &[&w.as_bytes().as_slice()],
                )
                .await?;
            if let Some(r) = row {
                seen.push((w, seen_of(&r)?));
            }
        }
        tx.commit().await?;
        for (w, s) in seen {
            self.observe(&w, s, landed.remove(&w).unwrap_or(0));
        }
        Ok(())
    }

    /// Every wallet's balance, `granted − committed` (= the sum of its ledger).
    pub async fn balances(&self) -> Result<HashMap<Wallet, i128>, StorageError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT wallet, granted - committed AS sum FROM balances",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((wallet_of(r)?, i128::from(r.try_get::<_, i64>("sum")?))))
            .collect()
    }

    /// A page of `wallet`'s ledger, newest first.
    pub async fn ledger_page(
        &self,
        wallet: &Wallet,
        kind: Option<LedgerKind>,
        offset: usize,
        limit: usize,
    ) -> Result<Page<LedgerEntry>, StorageError> {
        let w = wallet.as_bytes().as_slice();
        let kind = kind.map(kind_name);
        let cond = "wallet = $1 AND ($2::text IS NULL OR kind = $2)";
        let (rows, total) = self
            .page_of(
                &format!("SELECT {LEDGER_COLS} FROM ledger WHERE {cond} ORDER BY id DESC"),
                &format!("SELECT count(*) FROM ledger WHERE {cond}"),
                &[&w, &kind],
                offset,
                limit,
            )
            .await?;
        Ok(Page {
            items: rows.iter().map(entry_of).collect::<Result<_, _>>()?,
            total,
        })
    }

    /// A page of `wallet`'s usage events, newest first.
    pub async fn usage_page(
        &self,
        wallet: &Wallet,
        filter: UsageFilter<'_>,
        offset: usize,
        limit: usize,
    ) -> Result<Page<UsageEvent>, StorageError> {
        let w = wallet.as_bytes().as_slice();
        let (cond, path) = match filter {
            UsageFilter::All => ("wallet = $1", None),
            UsageFilter::Errors => ("wallet = $1 AND status >= 400", None),
            UsageFilter::Path(p) => ("wallet = $1 AND path = $2", Some(p)),
        };
        let params: Vec<&(dyn ToSql + Sync)> = match &path {
            None => vec![&w],
            Some(p) => vec![&w, p],
        };
        let (rows, total) = self
            .page_of(
                &format!("SELECT {USAGE_COLS} FROM usage_events WHERE {cond} ORDER BY id DESC"),
                &format!("SELECT count(*) FROM usage_events WHERE {cond}"),
                &params,
                offset,
                limit,
            )
            .await?;
        Ok(Page {
            items: rows.iter().map(event_of).collect::<Result<_, _>>()?,
            total,
        })
    }

    /// Runs a page's query (with `OFFSET`/`LIMIT` appended) and its count in one snapshot.
    async fn page_of(
        &self,
        select: &str,
        count: &str,
        params: &[&(dyn ToSql + Sync)],
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Row>, u64), StorageError> {
        let mut c = self.client().await?;
        let tx = Self::snapshot(&mut c).await?;
        let total: i64 = tx.query_one(count, params).await?.try_get(0)?;
        let rows = tx
            .query(
                &format!(
                    "{select} OFFSET {} LIMIT {}",
                    to_i64(offset as u64),
                    to_i64(limit as u64)
                ),
                params,
            )
            .await?;
        tx.commit().await?;
        Ok((rows, to_u64(total)))
    }

    /// True when `wallet` has any ledger entry.
    pub async fn has_ledger(&self, wallet: &Wallet) -> Result<bool, StorageError> {
        let c = self.client().await?;
        let w = wallet.as_bytes().as_slice();
        Ok(c.query_one(
            "SELECT EXISTS (SELECT 1 FROM ledger WHERE wallet = $1)",
            &[&w],
        )
        .await?
        .try_get(0)?)
    }

    /// True when `wallet`'s ledger has an entry with `reference` stamped at or after `since_ms`.
    pub async fn ledger_has_reference(
        &self,
        wallet: &Wallet,
        reference: &str,
        since_ms: u64,
    ) -> Result<bool, StorageError> {
        let c = self.client().await?;
        let w = wallet.as_bytes().as_slice();
        Ok(c.query_one(
            "SELECT EXISTS (SELECT 1 FROM ledger
                            WHERE wallet = $1 AND reference = $2 AND ts_ms >= $3)",
            &[&w, &reference, &to_i64(since_ms)],
        )
        .await?
        .try_get(0)?)
    }

    /// A key's chat totals, summed over the usage history.
    pub async fn key_totals(
        &self,
        wallet: &Wallet,
        key_id: &str,
    ) -> Result<KeyTotals, StorageError> {
        let c = self.client().await?;
        let w = wallet.as_bytes().as_slice();
        let r = c
            .query_one(
                "SELECT count(*), coalesce(sum(prompt_tokens), 0)::bigint,
                        coalesce(sum(completion_tokens), 0)::bigint, coalesce(sum(credits), 0)::bigint
                 FROM usage_events
                 WHERE wallet = $1 AND key_id = $2 AND path = '/v1/chat/completions'",
                &[&w, &key_id],
            )
            .await?;
        Ok(KeyTotals {
            requests: to_u64(r.try_get(0)?),
            prompt_tokens: to_u64(r.try_get(1)?),
            completion_tokens: to_u64(r.try_get(2)?),
            credits: to_u64(r.try_get(3)?),
        })
    }

    /// Forgets a wallet's ledger, usage and balance row (a swept agent: it holds nothing).
    pub async fn forget_history(&self, wallet: &Wallet) -> Result<(), StorageError> {
        let mut c = self.client().await?;
        let w = wallet.as_bytes().as_slice();
        let tx = c.transaction().await?;
        tx.execute("DELETE FROM ledger WHERE wallet = $1", &[&w])
            .await?;
        tx.execute("DELETE FROM usage_events WHERE wallet = $1", &[&w])
            .await?;
        tx.execute(
            "DELETE FROM balances WHERE wallet = $1 AND leased = 0",
            &[&w],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Feeds every ledger entry and usage event, in commit order, to the console's rollup.
    pub async fn replay_history(&self, rollup: &Rollup) -> Result<(), StorageError> {
        let c = self.client().await?;
        for row in c
            .query(
                &format!("SELECT {LEDGER_COLS} FROM ledger ORDER BY id"),
                &[],
            )
            .await?
        {
            rollup.add_ledger(&entry_of(&row)?);
        }
        for row in c
            .query(
                &format!("SELECT {USAGE_COLS} FROM usage_events ORDER BY id"),
                &[],
            )
            .await?
        {
            rollup.add_usage(wallet_of(&row)?, &event_of(&row)?);
        }
        Ok(())
    }
}
