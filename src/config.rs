//! Strict, layered configuration: built-in defaults → TOML file → `VECTORWAY_*` environment.
//!
//! Every layer is merged as a TOML tree and deserialized once into `RawConfig`, whose structs all
//! deny unknown fields, so a typo in a file or an environment variable is an error rather than a
//! silently ignored setting. `RawConfig::validate` then turns it into the `Config` the rest of the
//! program uses (prices in integer credits, durations as `Duration`, secrets resolved). `main`
//! does all of this before binding any port and exits 64 on failure.
//!
//! Environment variables name a path with `__` between levels: `VECTORWAY_SERVER__LISTEN`,
//! `VECTORWAY_BILLING__MARKUP`. `GEMINI_API_KEY` sets the upstream key when the config has none.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::billing::pricing::{ModelPrice, PriceTable, parse_usd_micros};
use crate::wallet::Wallet;

/// Everything that can be wrong with a configuration, reported before start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("invalid configuration: {0}")]
    Schema(String),
    #[error("invalid value for {key}: {message}")]
    Invalid { key: String, message: String },
}

/// The configuration exactly as written, before validation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: RawServer,
    pub store: RawStore,
    pub upstream: RawUpstream,
    pub billing: RawBilling,
    pub simulator: RawSimulator,
    pub auth: RawAuth,
    pub limits: RawLimits,
    pub x402: RawX402,
    pub memory: RawMemory,
    pub agents: RawAgents,
    pub media: RawMedia,
    pub models: BTreeMap<String, RawModel>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// Address to listen on; port 0 picks a free port.
    pub listen: String,
    /// PEM certificate chain and key; both set turns TLS on (ALPN h2 + http/1.1).
    pub tls_cert: String,
    pub tls_key: String,
    pub header_read_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub body_limit_bytes: usize,
    /// Longest a request body may take to arrive, from the request head on (408 after it).
    pub body_read_timeout_ms: u64,
    /// Longest silence allowed between two pieces of a request body (408 after it).
    pub body_idle_timeout_ms: u64,
    pub shutdown_grace_ms: u64,
    /// Shared secret for `/admin/*`; `$VAR` reads an environment variable. Empty: a random secret
    /// is generated at start-up and written to `<data_dir>/admin.secret` (mode 0600).
    pub admin_secret: String,
    /// Public base URL used in generated documents; empty means `http://<listen>`.
    pub public_base_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    pub data_dir: String,
    /// Group-commit window for debits and usage events; unset: 5 ms on the embedded store
    /// (an fsync each), 20 ms on PostgreSQL (a statement each: `store::journal_interval`).
    pub journal_interval_ms: Option<u64>,
    /// `embedded` or `postgres`, with the `postgres_*` settings below (`config::store`).
    pub backend: String,
    pub postgres_url: String,
    pub postgres_pool_size: usize,
    pub postgres_connect_timeout_ms: u64,
    pub postgres_statement_timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpstream {
    /// Gemini base URL. Empty: Google's endpoint when a key is set, the built-in simulator otherwise.
    pub base_url: String,
    /// Gemini API key, literal or `$VAR`. Empty: `GEMINI_API_KEY` from the environment.
    pub api_key: String,
    pub connect_timeout_ms: u64,
    /// Time allowed until the response headers arrive.
    pub first_byte_timeout_ms: u64,
    /// Longest silence allowed between two body reads (stall detection).
    pub idle_read_timeout_ms: u64,
    pub pool_max_idle_per_host: usize,
    /// Connections (h2: each with the server's stream limit, ~100 at Google) per upstream host.
    pub connections: usize,
    /// A PEM file of CA certificates trusted besides the public roots (a private endpoint).
    pub ca_file: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBilling {
    /// Multiplier applied to the upstream list price, as a decimal string ("1.2").
    pub markup: String,
    pub default_max_tokens: u32,
    /// Holds older than this are released by the sweeper (a guard that was leaked).
    pub hold_max_age_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSimulator {
    pub ttft_ms: u64,
    pub tokens_per_sec: u32,
    pub chunk_tokens: u32,
    pub reply_tokens: u32,
}

/// One model of the price sheet. Prices are USD per 1M tokens, as decimal strings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub input_per_m: String,
    pub output_per_m: String,
    /// Prices above `long_context_tokens` prompt tokens (Gemini Pro's >200k tier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_input_per_m: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_output_per_m: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_context_tokens: Option<u64>,
    /// Price of prompt tokens served from Gemini's cache (`cachedContentTokenCount`), and the
    /// same above `long_context_tokens`; unset = the input price. At most the input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_per_m: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_cached_input_per_m: Option<String>,
    pub context_length: u64,
    pub max_output_tokens: u32,
    /// Upstream model id; defaults to the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Extra ids accepted for this model (the agent-router spells them `gemini/<id>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            tls_cert: String::new(),
            tls_key: String::new(),
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 75_000,
            body_limit_bytes: 1 << 20,
            body_read_timeout_ms: 30_000,
            body_idle_timeout_ms: 10_000,
            shutdown_grace_ms: 30_000,
            admin_secret: String::new(),
            public_base_url: String::new(),
        }
    }
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            data_dir: "vectorway-data".into(),
            journal_interval_ms: None,
            backend: store::DEFAULT_BACKEND.into(),
            postgres_url: String::new(),
            postgres_pool_size: store::DEFAULT_POOL_SIZE,
            postgres_connect_timeout_ms: store::DEFAULT_CONNECT_TIMEOUT_MS,
            postgres_statement_timeout_ms: store::DEFAULT_STATEMENT_TIMEOUT_MS,
        }
    }
}

impl Default for RawUpstream {
    fn default() -> Self {
        Self {
            base_url: String::new(),
            api_key: String::new(),
            connect_timeout_ms: 5_000,
            first_byte_timeout_ms: 60_000,
            idle_read_timeout_ms: 60_000,
            pool_max_idle_per_host: 256,
            connections: 8,
            ca_file: String::new(),
        }
    }
}

impl Default for RawBilling {
    fn default() -> Self {
        Self {
            markup: "1.2".into(),
            default_max_tokens: 1024,
            hold_max_age_ms: 15 * 60_000,
        }
    }
}

impl Default for RawSimulator {
    fn default() -> Self {
        Self {
            ttft_ms: 40,
            tokens_per_sec: 400,
            chunk_tokens: 4,
            reply_tokens: 48,
        }
    }
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            server: RawServer::default(),
            store: RawStore::default(),
            upstream: RawUpstream::default(),
            billing: RawBilling::default(),
            simulator: RawSimulator::default(),
            auth: RawAuth::default(),
            limits: RawLimits::default(),
            x402: RawX402::default(),
            memory: RawMemory::default(),
            agents: RawAgents::default(),
            media: RawMedia::default(),
            models: prices::default_models(),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_limit: usize,
    pub body_read_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub shutdown_grace: Duration,
    pub admin_secret: Option<String>,
    pub public_base_url: Option<String>,
    pub data_dir: PathBuf,
    pub journal_interval: Duration,
    pub backend: StoreBackend,
    pub upstream: UpstreamConfig,
    pub default_max_tokens: u32,
    pub hold_max_age: Duration,
    pub prices: PriceTable,
    /// `gemini-embedding-001` at $0.15 per 1M input tokens, times the markup.
    pub embedding_price: ModelPrice,
    pub simulator: SimulatorKnobs,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub x402: X402Config,
    pub memory: MemoryConfig,
    pub agents: AgentsConfig,
    pub media: MediaConfig,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub siwe_domain: String,
    pub chain_ids: Vec<u64>,
    /// `None`: generate and keep in `<data_dir>/jwt.secret`.
    pub jwt_secret: Option<String>,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub nonce_ttl: Duration,
    /// Challenges outstanding at most (issued within the nonce TTL).
    pub max_nonces: usize,
    pub signup_grant: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct LimitsConfig {
    pub runtime_per_min: u32,
    pub control_per_min: u32,
    /// Requests without a caller (public routes, sign-in, x402, MCP), per client IP.
    pub ip_per_min: u32,
    pub ip_burst: u32,
    /// Buckets kept at most, per table (wallets; IPs).
    pub max_tracked: usize,
}

#[derive(Debug, Clone)]
pub struct X402Config {
    pub networks: Vec<Network>,
    pub pay_to: Wallet,
    /// `None`: the built-in facilitator simulator.
    pub facilitator_url: Option<String>,
    /// `x402.facilitator = "self"`: verify and settle on chain ourselves (`payments::own`).
    pub own: Option<OwnFacilitator>,
    /// The operator accepted the facilitator simulator beside a real Gemini key (free credits).
    pub allow_simulated_facilitator_with_real_upstream: bool,
    pub min_quote: u64,
    pub max_timeout_s: u64,
    pub verifier_threads: usize,
    pub settle_concurrency: usize,
    pub settle_timeout: Duration,
    pub settle_retries: u32,
    /// How long a request waits for a settlement whose outcome is unknown (pending).
    pub settle_pending_wait: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbedderKind {
    Gemini,
    /// all-MiniLM-L6-v2 in process, from `MemoryConfig::model_dir`.
    LocalModel,
    /// Feature hashing (the fallback).
    Local,
}

#[derive(Debug, Clone)]
pub struct MemoryConfig {
    pub embedder: EmbedderKind,
    /// Where the local model's files are (`<data_dir>/models/all-MiniLM-L6-v2` by default).
    pub model_dir: PathBuf,
    pub embed_model: String,
    pub dims: usize,
    pub exact_threshold: usize,
    pub score_floor: f32,
    /// Records kept per wallet and namespace (oldest forgotten first); 0: no limit.
    pub max_records: usize,
}

/// Where Gemini is and how patient to be with it.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// `None` means: start the built-in simulator and point at it.
    pub base_url: Option<String>,
    pub api_key: Option<String>,
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub idle_read_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    pub connections: usize,
    pub ca_file: Option<PathBuf>,
}

/// Knobs of the Gemini simulator (used by `simulate` and by `serve` without a key).
#[derive(Debug, Clone, Copy)]
pub struct SimulatorKnobs {
    pub ttft: Duration,
    pub tokens_per_sec: u32,
    pub chunk_tokens: u32,
    pub reply_tokens: u32,
}

const GOOGLE_BASE_URL: &str = "https://generativelanguage.googleapis.com";

impl RawConfig {
    /// Loads defaults, then the file (if any), then `VECTORWAY_*` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut tree = toml::Table::try_from(RawConfig::default())
            .map_err(|e| ConfigError::Schema(e.to_string()))?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let layer: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Parse {
                        path: path.to_path_buf(),
                        message: e.to_string(),
                    })?;
            merge(&mut tree, layer);
        }
        let mut gemini_key = None;
        for (var, value) in env {
            if var == "GEMINI_API_KEY" {
                gemini_key = Some(value);
                continue;
            }
            let Some(rest) = var.strip_prefix("VECTORWAY_") else {
                continue;
            };
            if matches!(
                rest,
                "CONFIG"
                    | "LOG"
                    | "LOG_FORMAT"
                    | "BIN"
                    | "TEST_LOG"
                    | "TEST_BACKEND"
                    | "MODEL_DIR"
                    | "CACHE_DIR"
            ) {
                continue;
            }
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            if path.iter().any(String::is_empty) {
                return Err(ConfigError::Env {
                    var,
                    message: "empty path segment".into(),
                });
            }
            insert_path(&mut tree, &path, env_value(&value)).map_err(|message| {
                ConfigError::Env {
                    var: var.clone(),
                    message,
                }
            })?;
        }
        let mut raw: RawConfig = toml::Value::Table(tree)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Schema(e.to_string()))?;
        if raw.upstream.api_key.is_empty()
            && let Some(key) = gemini_key
        {
            raw.upstream.api_key = key;
        }
        Ok(raw)
    }

    /// Checks every value and converts it into the form the program uses.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.into(),
            message,
        };
        let listen: SocketAddr = self
            .server
            .listen
            .parse()
            .map_err(|e| invalid("server.listen", format!("{e} (want host:port)")))?;
        let tls = match (
            self.server.tls_cert.is_empty(),
            self.server.tls_key.is_empty(),
        ) {
            (true, true) => None,
            (false, false) => {
                let cert = PathBuf::from(&self.server.tls_cert);
                let key = PathBuf::from(&self.server.tls_key);
                for (name, p) in [("server.tls_cert", &cert), ("server.tls_key", &key)] {
                    if !p.is_file() {
                        return Err(invalid(
                            name,
                            format!("{} is not a readable file", p.display()),
                        ));
                    }
                }
                Some((cert, key))
            }
            _ => {
                return Err(invalid(
                    "server.tls_cert",
                    "tls_cert and tls_key go together".into(),
                ));
            }
        };
        if self.server.body_limit_bytes < 1024 || self.server.body_limit_bytes > 64 << 20 {
            return Err(invalid(
                "server.body_limit_bytes",
                "must be 1 KiB ..= 64 MiB".into(),
            ));
        }
        let positive = |key: &str, v: u64| {
            if v == 0 {
                Err(invalid(key, "must be greater than 0".into()))
            } else {
                Ok(v)
            }
        };
        positive(
            "server.header_read_timeout_ms",
            self.server.header_read_timeout_ms,
        )?;
        positive("server.idle_timeout_ms", self.server.idle_timeout_ms)?;
        positive(
            "server.body_read_timeout_ms",
            self.server.body_read_timeout_ms,
        )?;
        positive(
            "server.body_idle_timeout_ms",
            self.server.body_idle_timeout_ms,
        )?;
        positive(
            "upstream.connect_timeout_ms",
            self.upstream.connect_timeout_ms,
        )?;
        positive(
            "upstream.first_byte_timeout_ms",
            self.upstream.first_byte_timeout_ms,
        )?;
        positive(
            "upstream.idle_read_timeout_ms",
            self.upstream.idle_read_timeout_ms,
        )?;
        positive("billing.hold_max_age_ms", self.billing.hold_max_age_ms)?;
        if !(1..=64).contains(&self.upstream.connections) {
            return Err(invalid("upstream.connections", "must be 1 ..= 64".into()));
        }
        let backend = store::validate(&self.store)?;
        let journal_interval = store::journal_interval(self.store.journal_interval_ms, &backend)?;
        if self.store.data_dir.is_empty() {
            return Err(invalid("store.data_dir", "must not be empty".into()));
        }
        if self.billing.default_max_tokens == 0 {
            return Err(invalid(
                "billing.default_max_tokens",
                "must be greater than 0".into(),
            ));
        }
        let admin_secret = resolve_secret("server.admin_secret", &self.server.admin_secret)?;
        if let Some(s) = &admin_secret
            && s.len() < 16
        {
            return Err(invalid(
                "server.admin_secret",
                "at least 16 characters".into(),
            ));
        }
        let api_key = resolve_secret("upstream.api_key", &self.upstream.api_key)?;
        let base_url = match (self.upstream.base_url.trim_end_matches('/'), &api_key) {
            ("", Some(_)) => Some(GOOGLE_BASE_URL.to_string()),
            ("", None) => None,
            (url, _) => {
                let uri: http::Uri = url
                    .parse()
                    .map_err(|e| invalid("upstream.base_url", format!("{e}")))?;
                if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                    return Err(invalid(
                        "upstream.base_url",
                        "want http(s)://host[:port]".into(),
                    ));
                }
                Some(url.to_string())
            }
        };
        let public_base_url = sections::public_base_url(&self.server.public_base_url)?;
        let markup_ppm = parse_usd_micros(&self.billing.markup)
            .filter(|m| *m >= 1_000_000 && *m <= 100_000_000)
            .ok_or_else(|| invalid("billing.markup", "a decimal between 1 and 100".into()))?;
        if self.models.is_empty() {
            return Err(invalid("models", "at least one model".into()));
        }
        let mut models = Vec::new();
        for (id, m) in &self.models {
            let key = |f: &str| format!("models.{id}.{f}");
            let price = |f: &str, v: &str| {
                parse_usd_micros(v)
                    .ok_or_else(|| invalid(&key(f), "a USD decimal like 0.30".into()))
            };
            let long = match (
                &m.long_input_per_m,
                &m.long_output_per_m,
                m.long_context_tokens,
            ) {
                (None, None, None) => None,
                (Some(i), Some(o), Some(t)) if t > 0 => Some((
                    t,
                    price("long_input_per_m", i)?,
                    price("long_output_per_m", o)?,
                )),
                _ => {
                    return Err(invalid(
                        &key("long_context_tokens"),
                        "set all three long_*".into(),
                    ));
                }
            };
            if m.max_output_tokens == 0 || m.context_length == 0 {
                return Err(invalid(
                    &key("max_output_tokens"),
                    "must be greater than 0".into(),
                ));
            }
            let input = price("input_per_m", &m.input_per_m)?;
            let (cached, long_cached) = prices::cache_prices(m, long, input, &key)?;
            models.push(
                ModelPrice::new(
                    id.clone(),
                    m.upstream.clone().unwrap_or_else(|| id.clone()),
                    m.aliases.clone(),
                    input,
                    price("output_per_m", &m.output_per_m)?,
                    long,
                    markup_ppm,
                    m.context_length,
                    m.max_output_tokens,
                )
                .with_cache_prices(cached, long_cached, markup_ppm),
            );
        }
        let prices = PriceTable::new(models).map_err(|message| ConfigError::Invalid {
            key: "models".into(),
            message,
        })?;
        let auth = self.auth.validate(&listen, public_base_url.as_deref())?;
        let limits = self.limits.validate()?;
        let x402 = self.x402.validate(api_key.is_some())?;
        let data_dir = PathBuf::from(&self.store.data_dir);
        let memory = self.memory.validate(api_key.is_some(), &data_dir)?;
        let agents = self.agents.validate()?;
        let media = self.media.validate()?;
        if self.simulator.tokens_per_sec == 0 || self.simulator.chunk_tokens == 0 {
            return Err(invalid(
                "simulator.tokens_per_sec",
                "must be greater than 0".into(),
            ));
        }
        Ok(Config {
            listen,
            tls,
            header_read_timeout: Duration::from_millis(self.server.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(self.server.idle_timeout_ms),
            body_limit: self.server.body_limit_bytes,
            body_read_timeout: Duration::from_millis(self.server.body_read_timeout_ms),
            body_idle_timeout: Duration::from_millis(self.server.body_idle_timeout_ms),
            shutdown_grace: Duration::from_millis(self.server.shutdown_grace_ms),
            admin_secret,
            public_base_url,
            data_dir: PathBuf::from(&self.store.data_dir),
            journal_interval,
            backend,
            upstream: UpstreamConfig {
                base_url,
                api_key,
                connect_timeout: Duration::from_millis(self.upstream.connect_timeout_ms),
                first_byte_timeout: Duration::from_millis(self.upstream.first_byte_timeout_ms),
                idle_read_timeout: Duration::from_millis(self.upstream.idle_read_timeout_ms),
                pool_max_idle_per_host: self.upstream.pool_max_idle_per_host,
                connections: self.upstream.connections,
                ca_file: (!self.upstream.ca_file.is_empty())
                    .then(|| PathBuf::from(&self.upstream.ca_file)),
            },
            default_max_tokens: self.billing.default_max_tokens,
            hold_max_age: Duration::from_millis(self.billing.hold_max_age_ms),
            prices,
            embedding_price: ModelPrice::new(
                "gemini-embedding-001".into(),
                "gemini-embedding-001".into(),
                Vec::new(),
                150_000,
                0,
                None,
                markup_ppm,
                2048,
                1,
            ),
            simulator: SimulatorKnobs {
                ttft: Duration::from_millis(self.simulator.ttft_ms),
                tokens_per_sec: self.simulator.tokens_per_sec,
                chunk_tokens: self.simulator.chunk_tokens,
                reply_tokens: self.simulator.reply_tokens,
            },
            auth,
            limits,
            x402,
            memory,
            agents,
            media,
        })
    }
}

/// `"$VAR"` reads the variable (which must be set); anything else is literal; empty is `None`.
fn resolve_secret(key: &str, value: &str) -> Result<Option<String>, ConfigError> {
    if value.is_empty() {
        return Ok(None);
    }
    if let Some(var) = value.strip_prefix('$') {
        return match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Some(v)),
            _ => Err(ConfigError::Invalid {
                key: key.into(),
                message: format!("refers to ${var}, which is not set"),
            }),
        };
    }
    Ok(Some(value.to_string()))
}

/// Environment values are TOML scalars when they parse as one (`8080`, `true`, `"x"`), else strings.
fn env_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => match t.remove("v") {
            Some(
                v @ (toml::Value::Integer(_) | toml::Value::Boolean(_) | toml::Value::Float(_)),
            ) => v,
            Some(v @ (toml::Value::String(_) | toml::Value::Array(_)))
                if raw.starts_with(['"', '[']) =>
            {
                v
            }
            _ => toml::Value::String(raw.to_string()),
        },
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn insert_path(tree: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty path")?;
    let mut node = tree;
    for seg in parents {
        let entry = node
            .entry(seg.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        // A list a variable descends into becomes a table (`x402.networks`: a list of names,
        // or `VECTORWAY_X402__NETWORKS__<NAME>__<FIELD>` tables).
        if matches!(entry, toml::Value::Array(_)) {
            *entry = toml::Value::Table(toml::Table::new());
        }
        node = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(format!("{seg} is not a section")),
        };
    }
    // A string setting given as a number (`VECTORWAY_BILLING__MARKUP=1.5`) stays a string.
    let value = match (node.get(last), value) {
        (Some(toml::Value::String(_)), v @ (toml::Value::Integer(_) | toml::Value::Float(_))) => {
            toml::Value::String(v.to_string())
        }
        (_, v) => v,
    };
    node.insert(last.clone(), value);
    Ok(())
}

fn merge(base: &mut toml::Table, layer: toml::Table) {
    for (k, v) in layer {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(l)) => merge(b, l),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

impl Config {
    /// A configuration for tests and benches: given data dir and upstream, everything else default.
    pub fn for_tests(data_dir: &Path, upstream_base_url: &str) -> Self {
        let mut raw = RawConfig::default();
        raw.server.listen = "127.0.0.1:0".into();
        raw.store.data_dir = data_dir.display().to_string();
        raw.upstream.base_url = upstream_base_url.into();
        // The simulator serves the facilitator under /facilitator, so tests share its USDC ledger.
        raw.x402.facilitator_url =
            format!("{}/facilitator", upstream_base_url.trim_end_matches('/'));
        raw.upstream.api_key = "test-key".into();
        raw.server.admin_secret = "test-admin-secret-0123456789".into();
        match raw.validate() {
            Ok(c) => c,
            Err(e) => panic!("test config is invalid: {e}"),
        }
    }
}

mod agents;
mod media;
mod networks;
mod own;
mod prices;
mod sections;
mod store;

pub use agents::{AgentsConfig, RawAgents};
pub use media::{MediaConfig, RawMedia};
pub use networks::{Network, RawNetwork, RawNetworks, known_network};
pub use own::{OwnFacilitator, SettlementKey};
pub use sections::{
    LOCAL_MODEL_DIMS, LOCAL_MODEL_DIR, LOCAL_MODEL_FILES, RawAuth, RawLimits, RawMemory, RawX402,
};
pub use store::{PostgresConfig, StoreBackend};

#[cfg(test)]
mod tests;
