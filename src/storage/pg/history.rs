//! The ledger and usage history in PostgreSQL: appends that keep `balances` and the ledger in
//! step, pages, key totals, and the console rollup's replay and feed across replicas.
//!
//! A journal window (or one money-in entry) is one statement, one round trip (the function
//! `vw_append_window`, migration 0005): the ledger rows are inserted from arrays, and the same
//! statement charges debits to the replica's lease and adds what was inserted to each wallet's `balances` row
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

/// One journal window, one statement: `vw_append_window` (migration 0005) skips rows already
/// stored, charges the new debits (this replica's lease, else the free balance, else what is
/// free and never more), inserts the ledger rows and usage events, adds money in to `granted`,
/// and returns each touched wallet's totals, with `due`/`charged` where debits were cut.
const APPEND_WINDOW: &str = "SELECT r_wallet AS wallet, r_granted AS granted, \
     r_committed AS committed, r_due, r_charged FROM vw_append_window($1, $2, $3, $4, $5, $6, \
     $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, \
     $25, $26, $27, $28, $29)";

/// The advisory lock every writer of the history holds (shared) until it commits, and
/// `vw_history_horizon` takes (exclusive) for an instant: migration 0005.
pub(super) const HISTORY_LOCK: i64 = 0x7677_6869;

/// Where a gateway is in the history feed: the highest id of each table it has folded into its
/// console rollup. It only ever moves to a horizon (`vw_history_horizon`), below which every
/// row is committed, so a row that commits after one with a higher id is not skipped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HistoryCursor {
    ledger: i64,
    usage: i64,
    forgets: i64,
}

fn seen_of(row: &Row) -> Result<Seen, StorageError> {
    Ok(Seen {
        granted: to_u64(row.try_get("granted")?),
        committed: to_u64(row.try_get("committed")?),
    })
}

/// A window's ledger entries as `vw_append_window`'s array parameters.
struct LedgerCols<'a> {
    wallets: Vec<&'a [u8]>,
    seqs: Vec<i64>,
    ts: Vec<i64>,
    kinds: Vec<&'static str>,
    credits: Vec<i64>,
    refs: Vec<Option<&'a str>>,
    notes: Vec<Option<&'a str>>,
    keys: Vec<Option<String>>,
}

impl<'a> LedgerCols<'a> {
    fn of(ledger: &'a [LedgerEntry]) -> Self {
        Self {
            wallets: ledger
                .iter()
                .map(|e| e.wallet.as_bytes().as_slice())
                .collect(),
            seqs: ledger.iter().map(|e| to_i64(e.seq)).collect(),
            ts: ledger.iter().map(|e| to_i64(e.ts_ms)).collect(),
            kinds: ledger.iter().map(|e| kind_name(e.kind)).collect(),
            credits: ledger.iter().map(|e| e.credits).collect(),
            refs: ledger.iter().map(|e| e.reference.as_deref()).collect(),
            notes: ledger.iter().map(|e| e.note.as_deref()).collect(),
            keys: ledger.iter().map(ledger_key).collect(),
        }
    }
}

/// A window's usage events as `vw_append_window`'s array parameters.
struct UsageCols<'a> {
    wallets: Vec<&'a [u8]>,
    seqs: Vec<i64>,
    ts: Vec<i64>,
    methods: Vec<&'a str>,
    paths: Vec<&'a str>,
    status: Vec<i32>,
    latency: Vec<i64>,
    credits: Vec<i64>,
    usd: Vec<Option<&'a str>>,
    model: Vec<Option<&'a str>>,
    prompt: Vec<i64>,
    completion: Vec<i64>,
    mem_r: Vec<bool>,
    mem_w: Vec<bool>,
    used: Vec<i32>,
    key_id: Vec<Option<&'a str>>,
    auth: Vec<&'a str>,
    request: Vec<&'a str>,
    commit: Vec<String>,
    transaction: Vec<Option<&'a str>>,
}

impl<'a> UsageCols<'a> {
    fn of(usage: &'a [(Wallet, UsageEvent)]) -> Self {
        let ev = || usage.iter().map(|(_, e)| e);
        Self {
            wallets: usage.iter().map(|(w, _)| w.as_bytes().as_slice()).collect(),
            seqs: ev().map(|e| to_i64(e.seq)).collect(),
            ts: ev().map(|e| to_i64(e.ts_ms)).collect(),
            methods: ev().map(|e| e.method.as_str()).collect(),
            paths: ev().map(|e| e.path.as_str()).collect(),
            status: ev().map(|e| i32::from(e.status)).collect(),
            latency: ev().map(|e| to_i64(e.latency_ms)).collect(),
            credits: ev().map(|e| to_i64(e.credits)).collect(),
            usd: ev().map(|e| e.usd_cost.as_deref()).collect(),
            model: ev().map(|e| e.model.as_deref()).collect(),
            prompt: ev().map(|e| to_i64(e.prompt_tokens)).collect(),
            completion: ev().map(|e| to_i64(e.completion_tokens)).collect(),
            mem_r: ev().map(|e| e.memory_read).collect(),
            mem_w: ev().map(|e| e.memory_write).collect(),
            used: ev()
                .map(|e| i32::try_from(e.memories_used).unwrap_or(i32::MAX))
                .collect(),
            key_id: ev().map(|e| e.key_id.as_deref()).collect(),
            auth: ev().map(|e| e.auth_mode.as_str()).collect(),
            request: ev().map(|e| e.request_id.as_str()).collect(),
            commit: ev()
                .map(|e| format!("{}/{}", e.request_id, e.seq))
                .collect(),
            transaction: ev().map(|e| e.transaction.as_deref()).collect(),
        }
    }
}

impl PgStore {
    /// Appends ledger entries and usage events in one statement (`APPEND_WINDOW`), durable
    /// once it returns. Debits are charged to this replica's lease, else to the free balance;
    /// an entry already stored (its commit key is there: a retried window) is skipped. What the
    /// database returns about each wallet touched updates this gateway's view of it.
    pub async fn append_history(
        &self,
        ledger: &[LedgerEntry],
        usage: &[(Wallet, UsageEvent)],
    ) -> Result<(), StorageError> {
        self.append_fenced(ledger, usage, None).await.map(drop)
    }

    /// Appends one credit that finishes the settlement intent `intent`, in the transaction that
    /// deletes the intent's row if this replica owns it; `false` (nothing written) when it does
    /// not: another replica claimed the intent and credits it (`pg::intents`).
    pub async fn append_closing(
        &self,
        entry: &LedgerEntry,
        intent: &str,
    ) -> Result<bool, StorageError> {
        self.append_fenced(std::slice::from_ref(entry), &[], Some(intent))
            .await
    }

    /// `append_history`; with `closes`, in one transaction with the fenced removal of that
    /// intent (nothing written when this replica does not own it).
    async fn append_fenced(
        &self,
        ledger: &[LedgerEntry],
        usage: &[(Wallet, UsageEvent)],
        closes: Option<&str>,
    ) -> Result<bool, StorageError> {
        let replica: &str = &self.replica;
        let l = LedgerCols::of(ledger);
        let u = UsageCols::of(usage);
        let params: [&(dyn ToSql + Sync); 29] = [
            &replica,
            &l.wallets,
            &l.seqs,
            &l.ts,
            &l.kinds,
            &l.credits,
            &l.refs,
            &l.notes,
            &l.keys,
            &u.wallets,
            &u.seqs,
            &u.ts,
            &u.methods,
            &u.paths,
            &u.status,
            &u.latency,
            &u.credits,
            &u.usd,
            &u.model,
            &u.prompt,
            &u.completion,
            &u.mem_r,
            &u.mem_w,
            &u.used,
            &u.key_id,
            &u.auth,
            &u.request,
            &u.commit,
            &u.transaction,
        ];
        let mut c = self.client().await?;
        let statement = c.prepare_cached(APPEND_WINDOW).await?;
        let rows = match closes {
            None => c.query(&statement, &params).await?,
            Some(id) => {
                let tx = c.transaction().await?;
                let mine = tx
                    .execute(
                        "DELETE FROM intents WHERE id = $1 AND owner = $2",
                        &[&id, &replica],
                    )
                    .await?;
                if mine == 0 {
                    return Ok(false); // dropping `tx` rolls it back
                }
                let rows = tx.query(&statement, &params).await?;
                tx.commit().await?;
                rows
            }
        };
        // Every debit of the window is in the database now (inserted by this statement, or by
        // an earlier attempt whose answer was lost).
        let mut landed: HashMap<Wallet, u64> = HashMap::new();
        for e in ledger.iter().filter(|e| e.credits < 0) {
            *landed.entry(e.wallet).or_default() += e.credits.unsigned_abs();
        }
        for r in rows {
            let wallet = wallet_of(&r)?;
            if let (Some(due), Some(charged)) = (
                r.try_get::<_, Option<i64>>("r_due")?,
                r.try_get::<_, Option<i64>>("r_charged")?,
            ) {
                metrics::counter!("vectorway_debits_cut_total").increment(1);
                tracing::error!(%wallet, due, charged, "debits exceed what the wallet has free; charged what was there");
            }
            self.observe(&wallet, seen_of(&r)?, landed.remove(&wallet).unwrap_or(0));
        }
        Ok(true)
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
        // A writer of the history, like `vw_append_window` (see `HistoryCursor`).
        tx.execute("SELECT pg_advisory_xact_lock_shared($1)", &[&HISTORY_LOCK])
            .await?;
        tx.execute("INSERT INTO history_forgets (wallet) VALUES ($1)", &[&w])
            .await?;
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

    /// The history feed's horizon (`vw_history_horizon`): each table's highest id at an
    /// instant when no writer was between its insert and its commit.
    async fn horizon(c: &tokio_postgres::Client) -> Result<HistoryCursor, StorageError> {
        let r = c
            .query_one("SELECT * FROM vw_history_horizon()", &[])
            .await?;
        Ok(HistoryCursor {
            ledger: r.try_get("ledger_id")?,
            usage: r.try_get("usage_id")?,
            forgets: r.try_get("forget_id")?,
        })
    }

    /// Feeds every ledger entry and usage event up to the horizon, in commit order, to the
    /// console's rollup (start-up), and starts the history feed there.
    pub async fn replay_history(&self, rollup: &Rollup) -> Result<(), StorageError> {
        let c = self.client().await?;
        let to = Self::horizon(&c).await?;
        self.read_history(&c, rollup, HistoryCursor::default(), to, None)
            .await?;
        *self.history.lock().await = to;
        Ok(())
    }

    /// Folds what the other gateways appended (and forgot) since the feed's cursor into the
    /// rollup: this gateway's own appends were folded in when they were written.
    pub async fn follow_history(&self, rollup: &Rollup) -> Result<(), StorageError> {
        let mut cursor = self.history.lock().await;
        let c = self.client().await?;
        let to = Self::horizon(&c).await?;
        if to != *cursor {
            self.read_history(&c, rollup, *cursor, to, Some(&self.replica))
                .await?;
            *cursor = to;
        }
        Ok(())
    }

    /// Reads the rows in (`from`, `to`] into `rollup`, forgets first (a forgotten wallet's
    /// rows are gone from the tables, so what is read after it is what came later); rows
    /// written by `skip` are left out.
    async fn read_history(
        &self,
        c: &tokio_postgres::Client,
        rollup: &Rollup,
        from: HistoryCursor,
        to: HistoryCursor,
        skip: Option<&str>,
    ) -> Result<(), StorageError> {
        for row in c
            .query(
                "SELECT wallet FROM history_forgets WHERE id > $1 AND id <= $2 ORDER BY id",
                &[&from.forgets, &to.forgets],
            )
            .await?
        {
            rollup.forget(&wallet_of(&row)?);
        }
        let ledger = format!(
            "SELECT {LEDGER_COLS} FROM ledger WHERE id > $1 AND id <= $2 \
             AND replica IS DISTINCT FROM $3 ORDER BY id"
        );
        for row in c.query(&ledger, &[&from.ledger, &to.ledger, &skip]).await? {
            rollup.add_ledger(&entry_of(&row)?);
        }
        let usage = format!(
            "SELECT {USAGE_COLS} FROM usage_events WHERE id > $1 AND id <= $2 \
             AND replica IS DISTINCT FROM $3 ORDER BY id"
        );
        for row in c.query(&usage, &[&from.usage, &to.usage, &skip]).await? {
            rollup.add_usage(wallet_of(&row)?, &event_of(&row)?);
        }
        Ok(())
    }
}
