//! `[store]` backend settings: the embedded default or PostgreSQL, validated strictly.
//!
//! ```toml
//! [store]
//! backend = "postgres"                 # or "embedded" (the default)
//! postgres_url = "$DATABASE_URL"       # a libpq URL or key=value string, literal or `$VAR`
//! postgres_pool_size = 16              # connections per gateway
//! postgres_connect_timeout_ms = 5000   # connecting, and waiting for a pooled connection
//! postgres_statement_timeout_ms = 5000 # PostgreSQL's statement_timeout for every session
//! ```
//!
//! Environment: `VECTORWAY_STORE__BACKEND`, `VECTORWAY_STORE__POSTGRES_URL`, ... like every
//! other setting.

use std::str::FromStr;
use std::time::Duration;

use super::{ConfigError, RawStore, resolve_secret};

/// Defaults of the PostgreSQL settings (`RawStore::default`).
pub(super) const DEFAULT_BACKEND: &str = "embedded";
pub(super) const DEFAULT_POOL_SIZE: usize = 16;
pub(super) const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
pub(super) const DEFAULT_STATEMENT_TIMEOUT_MS: u64 = 5_000;

/// The journal's group-commit window when `store.journal_interval_ms` is unset. Embedded: each
/// window is an fsync, and 5 ms keeps a crash's loss (debits not yet on disk: the wallet keeps
/// that money) small. PostgreSQL: each window is one statement (`vw_append_window`), so the
/// window bounds each replica's write rate to the database (50 a second at 20 ms) whatever
/// its load; a killed replica's open window is at most 20 ms of calls.
pub(super) const EMBEDDED_JOURNAL_MS: u64 = 5;
pub(super) const POSTGRES_JOURNAL_MS: u64 = 20;

/// The journal window: the configured one (1 ..= 1000 ms), else the backend's default.
pub(super) fn journal_interval(
    configured: Option<u64>,
    backend: &StoreBackend,
) -> Result<Duration, ConfigError> {
    let ms = configured.unwrap_or(match backend {
        StoreBackend::Embedded => EMBEDDED_JOURNAL_MS,
        StoreBackend::Postgres(_) => POSTGRES_JOURNAL_MS,
    });
    if !(1..=1_000).contains(&ms) {
        return Err(ConfigError::Invalid {
            key: "store.journal_interval_ms".into(),
            message: "must be 1 ..= 1000 (ms)".into(),
        });
    }
    Ok(Duration::from_millis(ms))
}

/// Where the gateway keeps its records.
#[derive(Debug, Clone)]
pub enum StoreBackend {
    /// sled and the history and memory logs in `store.data_dir`.
    Embedded,
    /// A PostgreSQL database shared by every replica.
    Postgres(PostgresConfig),
}

/// A validated PostgreSQL connection.
#[derive(Clone)]
pub struct PostgresConfig {
    /// The connection string, secrets included: never logged (`Debug` redacts it).
    pub url: String,
    pub pool_size: usize,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &"<redacted>")
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

impl PostgresConfig {
    /// The driver's configuration: the URL with the timeouts applied. The URL was checked by
    /// `validate`, so this fails only if it was changed since.
    pub fn driver_config(&self) -> Result<tokio_postgres::Config, String> {
        let mut c = tokio_postgres::Config::from_str(&self.url).map_err(|e| e.to_string())?;
        c.connect_timeout(self.connect_timeout);
        let ms = self.statement_timeout.as_millis();
        c.options(format!("-c statement_timeout={ms}"));
        if c.get_application_name().is_none() {
            c.application_name("vectorway");
        }
        Ok(c)
    }
}

/// Checks `[store]`'s backend settings.
pub(super) fn validate(raw: &RawStore) -> Result<StoreBackend, ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        key: key.into(),
        message,
    };
    match raw.backend.as_str() {
        "embedded" => return Ok(StoreBackend::Embedded),
        "postgres" => {}
        other => {
            return Err(invalid(
                "store.backend",
                format!("{other:?} is not a backend (want \"embedded\" or \"postgres\")"),
            ));
        }
    }
    let url = resolve_secret("store.postgres_url", &raw.postgres_url)?.ok_or_else(|| {
        invalid(
            "store.postgres_url",
            "required when store.backend = \"postgres\"".into(),
        )
    })?;
    // The driver's own message names the bad part without echoing the string (a password).
    if let Err(e) = tokio_postgres::Config::from_str(&url) {
        return Err(invalid(
            "store.postgres_url",
            format!("not a PostgreSQL connection string: {e}"),
        ));
    }
    if !(1..=1024).contains(&raw.postgres_pool_size) {
        return Err(invalid(
            "store.postgres_pool_size",
            "must be 1 ..= 1024".into(),
        ));
    }
    let ms = |key: &str, v: u64| {
        if (1..=600_000).contains(&v) {
            Ok(Duration::from_millis(v))
        } else {
            Err(invalid(key, "must be 1 ..= 600000 (ms)".into()))
        }
    };
    Ok(StoreBackend::Postgres(PostgresConfig {
        url,
        pool_size: raw.postgres_pool_size,
        connect_timeout: ms(
            "store.postgres_connect_timeout_ms",
            raw.postgres_connect_timeout_ms,
        )?,
        statement_timeout: ms(
            "store.postgres_statement_timeout_ms",
            raw.postgres_statement_timeout_ms,
        )?,
    }))
}
