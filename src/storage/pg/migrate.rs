//! Versioned schema migrations: embedded SQL files applied in order, once, under an advisory lock.
//!
//! `schema_migrations` records each applied version. `up` takes a session advisory lock first,
//! so replicas starting together apply each migration once (the others wait, then find nothing
//! to do); each migration and its `schema_migrations` row commit in one transaction, so a crash
//! leaves a version either wholly applied or not at all. A database holding a version this
//! binary does not know (a newer gateway migrated it) is refused: `DbError::Schema`.

use tokio_postgres::Client;

use super::DbError;
use crate::storage::StorageError;

/// The migrations this binary knows, in order: (version, name, SQL).
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "init", include_str!("migrations/0001_init.sql")),
    (
        2,
        "history_keys",
        include_str!("migrations/0002_history_keys.sql"),
    ),
    (3, "memory", include_str!("migrations/0003_memory.sql")),
    (
        4,
        "usage_transaction",
        include_str!("migrations/0004_usage_transaction.sql"),
    ),
    (
        5,
        "history_window",
        include_str!("migrations/0005_history_window.sql"),
    ),
    (6, "intents", include_str!("migrations/0006_intents.sql")),
    (7, "agents", include_str!("migrations/0007_agents.sql")),
];

/// The advisory lock key every gateway takes while migrating (ASCII "vectorwy").
const LOCK_KEY: i64 = 0x7665_6374_6f72_7779;

/// The newest version this binary knows.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// What `vectorway migrate status` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Versions recorded in the database, ascending.
    pub applied: Vec<i32>,
    /// Known versions not applied yet, ascending.
    pub pending: Vec<i32>,
    /// Applied versions this binary does not know (a newer gateway's).
    pub unknown: Vec<i32>,
}

/// Applies every pending migration; returns the versions applied now. Refuses (before
/// changing anything) a database with a version this binary does not know.
pub async fn up(client: &mut Client) -> Result<Vec<i32>, StorageError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await?;
    let result = up_locked(client).await;
    // The lock is the session's: released here, or with the connection if this fails.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    let applied = result?;
    unlocked?;
    Ok(applied)
}

async fn up_locked(client: &mut Client) -> Result<Vec<i32>, StorageError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version     integer PRIMARY KEY,
                 name        text NOT NULL,
                 applied_at  timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
    let st = status(client).await?;
    refuse_unknown(&st)?;
    let mut done = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        if !st.pending.contains(version) {
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version, name, "database migration applied");
        done.push(*version);
    }
    Ok(done)
}

/// Which versions are applied, pending and unknown. A database never migrated has every
/// version pending.
pub async fn status(client: &Client) -> Result<Status, StorageError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await?
        .get(0);
    let applied: Vec<i32> = if exists {
        client
            .query(
                "SELECT version FROM schema_migrations ORDER BY version",
                &[],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect()
    } else {
        Vec::new()
    };
    let known: Vec<i32> = MIGRATIONS.iter().map(|m| m.0).collect();
    Ok(Status {
        pending: known
            .iter()
            .copied()
            .filter(|v| !applied.contains(v))
            .collect(),
        unknown: applied
            .iter()
            .copied()
            .filter(|v| !known.contains(v))
            .collect(),
        applied,
    })
}

/// `vectorway migrate up`: applies what is pending; the report and whether all went well.
pub async fn cli_up(
    cfg: &crate::config::PostgresConfig,
) -> Result<(serde_json::Value, bool), StorageError> {
    let store = super::PgStore::connect(cfg)?;
    let mut client = store.client().await?;
    let applied = up(&mut client).await?;
    let st = status(&client).await?;
    Ok((
        serde_json::json!({"applied_now": applied, "applied": st.applied, "latest": latest()}),
        true,
    ))
}

/// `vectorway migrate status`: the report, and false when the database is newer than us.
pub async fn cli_status(
    cfg: &crate::config::PostgresConfig,
) -> Result<(serde_json::Value, bool), StorageError> {
    let store = super::PgStore::connect(cfg)?;
    let client = store.client().await?;
    let st = status(&client).await?;
    Ok((
        serde_json::json!({
            "applied": st.applied, "pending": st.pending, "unknown": st.unknown,
            "latest": latest(),
        }),
        st.unknown.is_empty(),
    ))
}

/// `Schema` when the database holds versions this binary does not know.
pub fn refuse_unknown(st: &Status) -> Result<(), StorageError> {
    match st.unknown.last() {
        None => Ok(()),
        Some(newest) => Err(StorageError::Db(DbError::Schema(format!(
            "the database schema is at version {newest}, newer than this gateway knows ({}): \
             run a gateway at least as new as the one that migrated it",
            latest()
        )))),
    }
}
