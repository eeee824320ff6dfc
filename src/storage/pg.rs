//! The PostgreSQL backend: a connection pool, the schema's migrations, and the moved record kinds.
//!
//! `PgStore` holds a `deadpool_postgres::Pool` of `tokio_postgres` connections whose every
//! session runs with the configured `statement_timeout`. A failure to get or keep a connection
//! is `DbError::Unavailable` (503 `store_unavailable`), and so is a server that answers it is
//! shutting down, starting up or out of connections (`server_is_away`); a statement the server
//! refused is `DbError::Statement` (500). The schema is versioned (`migrate`): `PgStore::open` applies
//! what is missing and refuses a database whose schema is newer than this binary knows.

pub mod agents;
pub mod buckets;
mod changes;
mod history;
mod intents;
mod leases;
mod memory;
pub mod migrate;
mod records;
mod transfer;

pub use changes::{AuthChanges, ChangeFeed};
pub use leases::Seen;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use super::StorageError;
use crate::config::PostgresConfig;

/// What can go wrong with the database (`StorageError::Db`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum DbError {
    /// The database refused a statement.
    #[error("database error: {0}")]
    Statement(String),
    /// The database cannot be reached (or the pool waited past its timeout): 503.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database schema is not one this binary can run on (`migrate`).
    #[error("{0}")]
    Schema(String),
}

/// The PostgreSQL store. Cloning is cheap (the pool is shared).
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// This gateway's replica id (`leases`): random per start.
    replica: std::sync::Arc<str>,
    /// What this gateway last learned of each wallet's totals (`leases::SeenCell`).
    seen: std::sync::Arc<dashmap::DashMap<crate::wallet::Wallet, std::sync::Arc<leases::SeenCell>>>,
    /// How far this gateway's console rollup has read the shared history (`follow_history`).
    history: std::sync::Arc<tokio::sync::Mutex<history::HistoryCursor>>,
}

impl PgStore {
    /// Connects, brings the schema up to date (`migrate::up`), and returns the store. A
    /// database that cannot be reached within the connect timeout is `Unavailable`.
    pub async fn open(cfg: &PostgresConfig) -> Result<Self, StorageError> {
        let store = Self::connect(cfg)?;
        let mut client = store.client().await?;
        migrate::up(&mut client).await?;
        Ok(store)
    }

    /// The pool alone, without touching the database (connections open on first use).
    pub fn connect(cfg: &PostgresConfig) -> Result<Self, StorageError> {
        let driver = cfg
            .driver_config()
            .map_err(|e| StorageError::Db(DbError::Statement(e)))?;
        let manager = Manager::from_config(
            driver,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(cfg.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(cfg.connect_timeout))
            .create_timeout(Some(cfg.connect_timeout))
            .recycle_timeout(Some(cfg.connect_timeout))
            .build()
            .map_err(|e| StorageError::Db(DbError::Statement(e.to_string())))?;
        let replica = format!("r-{}", uuid::Uuid::now_v7().simple()).into();
        Ok(Self {
            pool,
            replica,
            seen: std::sync::Arc::default(),
            history: std::sync::Arc::default(),
        })
    }

    /// A pooled connection, or `Unavailable`.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StorageError> {
        self.pool
            .get()
            .await
            .map_err(|e| StorageError::Db(DbError::Unavailable(e.to_string())))
    }

    /// A repeatable-read, read-only transaction on `c`: one snapshot for several statements.
    pub(crate) async fn snapshot(
        c: &mut deadpool_postgres::Object,
    ) -> Result<deadpool_postgres::Transaction<'_>, StorageError> {
        Ok(c.build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?)
    }

    /// Liveness probe for `/readyz`: one round trip.
    pub async fn check(&self) -> Result<(), StorageError> {
        self.client().await?.simple_query("SELECT 1").await?;
        Ok(())
    }
}

impl From<tokio_postgres::Error> for StorageError {
    fn from(e: tokio_postgres::Error) -> Self {
        // A closed connection or an I/O failure is the database being away, not a bad query;
        // so is a server that answers it is shutting down, starting up or out of connections.
        let away = match e.as_db_error() {
            None => true,
            Some(db) => server_is_away(db.code().code()),
        };
        if e.is_closed() || away {
            DbError::Unavailable(e.to_string()).into()
        } else {
            DbError::Statement(e.to_string()).into()
        }
    }
}

/// Whether a SQLSTATE says the server, not the statement, is the problem: class 08
/// (connection exception), class 57 (operator intervention: `admin_shutdown` when the server
/// is stopped under a running query, `cannot_connect_now` while it starts) and class 53
/// (insufficient resources: too many connections, disk full). A request that fails on one of
/// these may be retried, so it is a 503, never a 500.
fn server_is_away(sqlstate: &str) -> bool {
    matches!(sqlstate.get(..2), Some("08" | "57" | "53"))
}

/// A `u64` for a `bigint` column; values past `i64::MAX` (sentinels like `u64::MAX`) saturate.
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A `bigint` column read back as `u64` (the schema's CHECKs keep them non-negative).
pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::server_is_away;

    #[test]
    fn a_server_going_away_is_not_a_bad_statement() {
        for state in [
            "57P01", "57P02", "57P03", "08006", "08001", "53300", "53100",
        ] {
            assert!(server_is_away(state), "{state}");
        }
        for state in ["23505", "40001", "42P01", "22003", "P0001", ""] {
            assert!(!server_is_away(state), "{state}");
        }
    }
}
