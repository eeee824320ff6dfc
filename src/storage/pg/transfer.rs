//! PostgreSQL's half of `store export|import` (`storage::transfer`).
//!
//! Export reads every table in one repeatable-read, read-only snapshot, streaming the large
//! ones (ledger and usage in id order, memory in wallet and id order). Import is one
//! transaction: it locks the tables against writers, refuses a database a gateway is using or
//! one that holds data, inserts every record (ledger and usage rows keep their ids and commit
//! keys, so nothing can be applied twice), writes each wallet's `balances` row from the ledger
//! it inserted, checks `granted`, `committed` and the ledger sum rule against the file, and
//! commits; any error rolls all of it back.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use base64::Engine;
use futures_util::TryStreamExt;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::history::{
    HISTORY_LOCK, LEDGER_COLS, USAGE_COLS, entry_of, event_of, kind_name, wallet_of,
};
use super::records::key_of;
use super::{PgStore, to_i64, to_u64};
use crate::storage::transfer::{
    Item, MemoryMeta, Sink, Source, Summary, Totals, TransferError, hex_array,
};
use crate::storage::{AccountRecord, IdemRecord, RefreshRecord, StorageError, now_ms};
use crate::wallet::Wallet;

/// The tables an import fills; a target with a row in any of them is not empty.
const TABLES: &[&str] = &[
    "accounts",
    "api_keys",
    "refresh_tokens",
    "revoked_families",
    "idempotency",
    "x402_nonces",
    "ledger",
    "usage_events",
    "balances",
    "memory_records",
    "history_forgets",
];

/// A replica that beat this recently may still be running (leases expire after 10 s).
const LIVE_MS: u64 = 15_000;

/// Inserts sent per round of the pipeline.
const BATCH: usize = 512;

const NO_PARAMS: [&(dyn ToSql + Sync); 0] = [];

/// Streams the rows of `sql` into `sink`, one record each.
async fn dump<W: Write>(
    tx: &tokio_postgres::Transaction<'_>,
    sink: &mut Sink<W>,
    sql: &str,
    item: impl Fn(&Row) -> Result<Item, StorageError>,
) -> Result<(), TransferError> {
    let rows = tx
        .query_raw(sql, NO_PARAMS)
        .await
        .map_err(StorageError::from)?;
    let mut rows = std::pin::pin!(rows);
    while let Some(r) = rows.try_next().await.map_err(StorageError::from)? {
        sink.put(&item(&r)?)?;
    }
    Ok(())
}

/// Refuses while a gateway beats on this database.
async fn refuse_live<C: deadpool_postgres::GenericClient + Sync>(
    c: &C,
) -> Result<(), TransferError> {
    let since = to_i64(now_ms().saturating_sub(LIVE_MS));
    let live: i64 = c
        .query_one(
            "SELECT count(*) FROM replicas WHERE heartbeat_ms >= $1",
            &[&since],
        )
        .await
        .map_err(StorageError::from)?
        .try_get(0)
        .map_err(StorageError::from)?;
    if live > 0 {
        return Err(TransferError::Busy(format!(
            "{live} gateway(s) run on this database (heartbeat within {} s); stop them first",
            LIVE_MS / 1000
        )));
    }
    Ok(())
}

impl PgStore {
    /// Writes every record in the database to `sink`, from one snapshot.
    pub async fn export_into<W: Write>(&self, sink: &mut Sink<W>) -> Result<(), TransferError> {
        let mut c = self.client().await?;
        let tx = Self::snapshot(&mut c).await?;
        refuse_live(&tx).await?;
        let held = tx
            .query_one(
                "SELECT (SELECT count(*) FROM agents WHERE NOT doomed),
                        (SELECT count(*) FROM intents)",
                &[],
            )
            .await
            .map_err(StorageError::from)?;
        let count = |i: usize| -> Result<u64, TransferError> {
            Ok(to_u64(held.try_get(i).map_err(StorageError::from)?))
        };
        crate::storage::transfer::refuse_uncarried(count(0)?, count(1)?)?;
        let sql = "SELECT wallet, created_at FROM accounts ORDER BY wallet";
        dump(&tx, sink, sql, |r| {
            Ok(Item::Account(AccountRecord {
                wallet: wallet_of(r)?,
                created_at: to_u64(r.try_get(1)?),
            }))
        })
        .await?;
        let sql = "SELECT key_id, wallet, secret_sha256, key_name, created_at, last_used_at,
                          revoked_at FROM api_keys ORDER BY key_id";
        dump(&tx, sink, sql, |r| Ok(Item::Key(key_of(r)?))).await?;
        let sql = "SELECT id, family, wallet, expires_at, used FROM refresh_tokens ORDER BY id";
        dump(&tx, sink, sql, |r| {
            Ok(Item::Refresh {
                id: r.try_get(0)?,
                fields: RefreshRecord {
                    family: r.try_get(1)?,
                    wallet: wallet_of(r)?,
                    expires_at: to_u64(r.try_get(3)?),
                    used: r.try_get(4)?,
                },
            })
        })
        .await?;
        let sql = "SELECT family, revoked_at FROM revoked_families ORDER BY family";
        dump(&tx, sink, sql, |r| {
            Ok(Item::RevokedFamily {
                family: r.try_get(0)?,
                revoked_at: to_u64(r.try_get(1)?),
            })
        })
        .await?;
        let sql =
            "SELECT slot, body_sha256, status, body, created_at FROM idempotency ORDER BY slot";
        dump(&tx, sink, sql, |r| {
            Ok(Item::Idempotency {
                slot: hex::encode(r.try_get::<_, &[u8]>(0)?),
                fields: IdemRecord {
                    body_sha256: r.try_get(1)?,
                    status: u16::try_from(r.try_get::<_, i32>(2)?).unwrap_or(0),
                    body: r.try_get(3)?,
                    created_at: to_u64(r.try_get(4)?),
                },
            })
        })
        .await?;
        let sql = "SELECT nonce_key, valid_before, state, claimed_ms, resolved_ms
                   FROM x402_nonces ORDER BY nonce_key";
        dump(&tx, sink, sql, |r| {
            Ok(Item::X402Nonce {
                key: hex::encode(r.try_get::<_, &[u8]>(0)?),
                valid_before: to_u64(r.try_get(1)?),
                state: r.try_get(2)?,
                claimed_ms: to_u64(r.try_get(3)?),
                resolved_ms: r.try_get::<_, Option<i64>>(4)?.map(to_u64),
            })
        })
        .await?;
        let sql = format!("SELECT id, commit_key, {LEDGER_COLS} FROM ledger ORDER BY id");
        dump(&tx, sink, &sql, |r| {
            Ok(Item::Ledger {
                id: Some(r.try_get(0)?),
                commit_key: r.try_get(1)?,
                entry: entry_of(r)?,
            })
        })
        .await?;
        let sql = format!("SELECT id, commit_key, {USAGE_COLS} FROM usage_events ORDER BY id");
        dump(&tx, sink, &sql, |r| {
            Ok(Item::Usage {
                id: Some(r.try_get(0)?),
                wallet: wallet_of(r)?,
                commit_key: r.try_get(1)?,
                event: event_of(r)?,
            })
        })
        .await?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let sql = "SELECT wallet, id, namespace, created_ms, value FROM memory_records
                   WHERE NOT deleted ORDER BY wallet, id";
        dump(&tx, sink, sql, |r| {
            let ns: String = r.try_get(2)?;
            Ok(Item::Memory {
                wallet: wallet_of(r)?,
                id: hex::encode(r.try_get::<_, &[u8]>(1)?),
                namespace: (!ns.is_empty()).then_some(ns),
                created_ms: to_u64(r.try_get(3)?),
                value: b64.encode(r.try_get::<_, &[u8]>(4)?),
            })
        })
        .await?;
        let sql = "SELECT wallet, granted, committed FROM balances ORDER BY wallet";
        dump(&tx, sink, sql, |r| {
            Ok(Item::Balance {
                wallet: wallet_of(r)?,
                granted: to_u64(r.try_get(1)?),
                committed: to_u64(r.try_get(2)?),
            })
        })
        .await?;
        tx.commit().await.map_err(StorageError::from)?;
        Ok(())
    }

    /// Imports a file into this (empty) database in one transaction, verified before it
    /// commits; nothing is written unless all of it is.
    pub async fn import_from<R: BufRead>(
        &self,
        mut src: Source<R>,
        meta: MemoryMeta,
    ) -> Result<Summary, TransferError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(StorageError::from)?;
        tx.batch_execute(&format!(
            "LOCK TABLE {}, replicas IN EXCLUSIVE MODE",
            TABLES.join(", ")
        ))
        .await
        .map_err(StorageError::from)?;
        refuse_live(&tx).await?;
        // A writer of the history, as every other (the console's history feed, `HistoryCursor`).
        tx.execute("SELECT pg_advisory_xact_lock_shared($1)", &[&HISTORY_LOCK])
            .await
            .map_err(StorageError::from)?;
        for t in TABLES {
            let q = format!("SELECT EXISTS (SELECT 1 FROM {t})");
            let any: bool = tx
                .query_one(q.as_str(), &[])
                .await
                .map_err(StorageError::from)?
                .try_get(0)
                .map_err(StorageError::from)?;
            if any {
                return Err(TransferError::NotEmpty(format!("table {t} has rows")));
            }
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let s = Stmts::prepare(&tx).await?;
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(item) = src.next_item()? {
            batch.extend(s.row(item, &b64, meta)?);
            if batch.len() >= BATCH {
                flush(&tx, &mut batch).await?;
            }
        }
        flush(&tx, &mut batch).await?;
        // Each wallet's totals follow from the ledger inserted; the file stated the same ones
        // (`Source` checked), and the database must now say so too.
        for (w, t) in &src.summary.ledger {
            tx.execute(
                "INSERT INTO balances (wallet, granted, committed) VALUES ($1, $2, $3)",
                &[
                    &w.as_bytes().as_slice(),
                    &to_i64(t.granted),
                    &to_i64(t.committed),
                ],
            )
            .await
            .map_err(StorageError::from)?;
        }
        for (table, col) in [("ledger", "id"), ("usage_events", "id")] {
            let q = format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{col}'),
                               GREATEST((SELECT max({col}) FROM {table}), 1))"
            );
            tx.execute(q.as_str(), &[])
                .await
                .map_err(StorageError::from)?;
        }
        verify(&tx, &src.summary).await?;
        tx.commit().await.map_err(StorageError::from)?;
        Ok(src.summary)
    }
}

/// The database's totals and ledger sums after an import, against the file's.
async fn verify(tx: &tokio_postgres::Transaction<'_>, file: &Summary) -> Result<(), TransferError> {
    let mut db: BTreeMap<Wallet, Totals> = BTreeMap::new();
    for r in tx
        .query("SELECT wallet, granted, committed FROM balances", &[])
        .await
        .map_err(StorageError::from)?
    {
        let t = Totals {
            granted: to_u64(r.try_get(1).map_err(StorageError::from)?),
            committed: to_u64(r.try_get(2).map_err(StorageError::from)?),
        };
        db.insert(wallet_of(&r)?, t);
    }
    let stated: BTreeMap<Wallet, Totals> = file
        .stated
        .iter()
        .filter(|(_, t)| **t != Totals::default())
        .map(|(w, t)| (*w, *t))
        .collect();
    db.retain(|_, t| *t != Totals::default());
    if db != stated {
        return Err(TransferError::Mismatch(format!(
            "balances rows {db:?} differ from the file's {stated:?}"
        )));
    }
    let mut sums = BTreeMap::new();
    for r in tx
        .query(
            "SELECT wallet, sum(credits)::text FROM ledger GROUP BY wallet",
            &[],
        )
        .await
        .map_err(StorageError::from)?
    {
        let s: String = r.try_get(1).map_err(StorageError::from)?;
        let s: i128 = s
            .parse()
            .map_err(|_| TransferError::Mismatch(format!("ledger sum {s}")))?;
        sums.insert(wallet_of(&r)?, s);
    }
    file.verify_sums(&sums)
}

/// The import's prepared statements, one per kind.
struct Stmts {
    account: tokio_postgres::Statement,
    key: tokio_postgres::Statement,
    refresh: tokio_postgres::Statement,
    family: tokio_postgres::Statement,
    idem: tokio_postgres::Statement,
    nonce: tokio_postgres::Statement,
    ledger: tokio_postgres::Statement,
    usage: tokio_postgres::Statement,
    memory: tokio_postgres::Statement,
}

impl Stmts {
    async fn prepare(tx: &tokio_postgres::Transaction<'_>) -> Result<Self, TransferError> {
        let p = |sql: &'static str| tx.prepare(sql);
        let e = StorageError::from;
        Ok(Self {
            account: p("INSERT INTO accounts (wallet, created_at) VALUES ($1, $2)").await.map_err(e)?,
            key: p("INSERT INTO api_keys (key_id, wallet, secret_sha256, key_name, created_at,
                        last_used_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7)").await.map_err(e)?,
            refresh: p("INSERT INTO refresh_tokens (id, family, wallet, expires_at, used)
                        VALUES ($1, $2, $3, $4, $5)").await.map_err(e)?,
            family: p("INSERT INTO revoked_families (family, revoked_at) VALUES ($1, $2)").await.map_err(e)?,
            idem: p("INSERT INTO idempotency (slot, body_sha256, status, body, created_at)
                     VALUES ($1, $2, $3, $4, $5)").await.map_err(e)?,
            nonce: p("INSERT INTO x402_nonces (nonce_key, valid_before, state, claimed_ms, resolved_ms)
                      VALUES ($1, $2, $3, $4, $5)").await.map_err(e)?,
            ledger: p("INSERT INTO ledger (id, wallet, seq, ts_ms, kind, credits, reference, note, commit_key)
                       VALUES (COALESCE($1, nextval(pg_get_serial_sequence('ledger', 'id'))),
                               $2, $3, $4, $5, $6, $7, $8, $9)").await.map_err(e)?,
            usage: p("INSERT INTO usage_events (id, wallet, seq, ts_ms, method, path, status,
                          latency_ms, credits, usd_cost, model, prompt_tokens, completion_tokens,
                          memory_read, memory_write, memories_used, key_id, auth_mode, request_id,
                          commit_key, transaction)
                      VALUES (COALESCE($1, nextval(pg_get_serial_sequence('usage_events', 'id'))),
                              $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                              $17, $18, $19, $20, $21)").await.map_err(e)?,
            memory: p("INSERT INTO memory_records (wallet, id, namespace, value, created_ms)
                       VALUES ($1, $2, $3, $4, $5)").await.map_err(e)?,
        })
    }

    /// The statement and owned parameters that insert `item` (`None`: nothing to insert).
    fn row(
        &self,
        item: Item,
        b64: &base64::engine::GeneralPurpose,
        meta: MemoryMeta,
    ) -> Result<Option<Pending>, TransferError> {
        let w = |w: Wallet| -> Param { Box::new(w.as_bytes().to_vec()) };
        let n = |v: u64| -> Param { Box::new(to_i64(v)) };
        let on = |v: Option<u64>| -> Param { Box::new(v.map(to_i64)) };
        let (st, params): (&tokio_postgres::Statement, Vec<Param>) = match item {
            Item::Account(a) => (&self.account, vec![w(a.wallet), n(a.created_at)]),
            Item::Key(k) => (
                &self.key,
                vec![
                    Box::new(k.key_id),
                    w(k.wallet),
                    Box::new(k.secret_sha256),
                    Box::new(k.key_name),
                    n(k.created_at),
                    on(k.last_used_at),
                    on(k.revoked_at),
                ],
            ),
            Item::Refresh { id, fields: r } => (
                &self.refresh,
                vec![
                    Box::new(id),
                    Box::new(r.family),
                    w(r.wallet),
                    n(r.expires_at),
                    Box::new(r.used),
                ],
            ),
            Item::RevokedFamily { family, revoked_at } => {
                (&self.family, vec![Box::new(family), n(revoked_at)])
            }
            Item::Idempotency { slot, fields: r } => {
                let slot = hex::decode(&slot)
                    .map_err(|_| TransferError::File("idempotency slot: not hex".into()))?;
                (
                    &self.idem,
                    vec![
                        Box::new(slot),
                        Box::new(r.body_sha256),
                        Box::new(i32::from(r.status)),
                        Box::new(r.body),
                        n(r.created_at),
                    ],
                )
            }
            Item::X402Nonce {
                key,
                valid_before,
                state,
                claimed_ms,
                resolved_ms,
            } => {
                let key = hex_array::<80>("x402 nonce key", &key)?;
                (
                    &self.nonce,
                    vec![
                        Box::new(key.to_vec()),
                        n(valid_before),
                        Box::new(state),
                        n(claimed_ms),
                        on(resolved_ms),
                    ],
                )
            }
            Item::Ledger {
                id,
                commit_key,
                entry: e,
            } => (
                &self.ledger,
                vec![
                    Box::new(id),
                    w(e.wallet),
                    n(e.seq),
                    n(e.ts_ms),
                    Box::new(kind_name(e.kind)),
                    Box::new(e.credits),
                    Box::new(e.reference),
                    Box::new(e.note),
                    Box::new(commit_key),
                ],
            ),
            Item::Usage {
                id,
                wallet,
                commit_key,
                event: e,
            } => (
                &self.usage,
                vec![
                    Box::new(id),
                    w(wallet),
                    n(e.seq),
                    n(e.ts_ms),
                    Box::new(e.method),
                    Box::new(e.path),
                    Box::new(i32::from(e.status)),
                    n(e.latency_ms),
                    n(e.credits),
                    Box::new(e.usd_cost),
                    Box::new(e.model),
                    n(e.prompt_tokens),
                    n(e.completion_tokens),
                    Box::new(e.memory_read),
                    Box::new(e.memory_write),
                    Box::new(i32::try_from(e.memories_used).unwrap_or(i32::MAX)),
                    Box::new(e.key_id),
                    Box::new(e.auth_mode),
                    Box::new(e.request_id),
                    Box::new(commit_key),
                    Box::new(e.transaction),
                ],
            ),
            Item::Memory {
                wallet,
                id,
                namespace,
                created_ms,
                value,
            } => {
                let id = hex_array::<16>("memory id", &id)?;
                let value = b64
                    .decode(&value)
                    .map_err(|_| TransferError::File("memory value: not base64".into()))?;
                let (ns, _) = meta(&value)?;
                if ns != namespace {
                    return Err(TransferError::File(format!(
                        "memory {}: namespace {namespace:?}, but the record says {ns:?}",
                        hex::encode(id)
                    )));
                }
                (
                    &self.memory,
                    vec![
                        w(wallet),
                        Box::new(id.to_vec()),
                        Box::new(namespace.unwrap_or_default()),
                        Box::new(value),
                        n(created_ms),
                    ],
                )
            }
            Item::Balance { .. } | Item::End { .. } => return Ok(None),
        };
        Ok(Some((st.clone(), params)))
    }
}

/// One owned statement parameter.
type Param = Box<dyn ToSql + Sync + Send>;

/// An insert waiting for its batch.
type Pending = (tokio_postgres::Statement, Vec<Param>);

/// Inserts pending in one batch, sent without waiting for each answer (the connection
/// pipelines them; they run in order, and the first error aborts the transaction).
async fn flush(
    tx: &tokio_postgres::Transaction<'_>,
    batch: &mut Vec<Pending>,
) -> Result<(), TransferError> {
    let sent = batch.iter().map(|(st, params)| {
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
        async move { tx.execute(st, &refs).await }
    });
    futures_util::future::try_join_all(sent)
        .await
        .map_err(StorageError::from)?;
    batch.clear();
    Ok(())
}
