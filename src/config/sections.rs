//! Validation of the auth, x402 and memory sections (x402 networks: `config::networks`).

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    AuthConfig, ConfigError, EmbedderKind, LimitsConfig, MemoryConfig, RawNetworks, X402Config,
    networks, resolve_secret,
};
use crate::wallet::Wallet;

/// Sign-in (SIWE) and sessions (JWT).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    /// The SIWE `domain` (RFC 3986 authority) messages must carry; empty: the public base URL's
    /// authority (or the listen address).
    pub siwe_domain: String,
    /// EVM chain ids accepted in SIWE messages.
    pub chain_ids: Vec<u64>,
    /// HS256 signing secret (≥ 32 bytes), literal or `$VAR`; empty: random, kept in
    /// `<data_dir>/jwt.secret`.
    pub jwt_secret: String,
    pub access_ttl_s: u64,
    pub refresh_ttl_s: u64,
    pub nonce_ttl_s: u64,
    /// Challenges outstanding at most (issued within `nonce_ttl_s`); past it a challenge is
    /// refused with 429 `siwe_challenges_exhausted` until the oldest expires.
    pub max_nonces: usize,
    /// Credits granted on a wallet's first sign-in.
    pub signup_grant: u64,
}

/// Request rates (requests per minute): per wallet, and per client IP for requests without one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// Chat, memory, embeddings.
    pub runtime_per_min: u32,
    /// Account, keys, usage, ledger, credits.
    pub control_per_min: u32,
    /// Requests that reach the router without a caller (public routes, sign-in, x402, MCP), per
    /// client IP (IPv6: per /64). Behind a reverse proxy every client has the proxy's address.
    pub ip_per_min: u32,
    /// Requests a client IP may send at once before `ip_per_min` paces it.
    pub ip_burst: u32,
    /// Buckets kept at most in each table (wallets; IPs); past it the least recently used go.
    pub max_tracked: usize,
}

/// x402 payments.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawX402 {
    /// Networks offered: a list of built-in names ("base", "base-sepolia"), or
    /// `[x402.networks.<name>]` tables (`config::networks`).
    pub networks: RawNetworks,
    /// Address that receives payments.
    pub pay_to: String,
    /// Facilitator base URL; empty: the built-in facilitator simulator.
    pub facilitator_url: String,
    /// `"self"`: verify and settle on chain ourselves (every network needs an `rpc_url`);
    /// empty: `facilitator_url` (`config::own`).
    pub facilitator: String,
    /// The settlement account's private key for `facilitator = "self"`: 64 hex digits or `$VAR`.
    pub settlement_key: String,
    /// Lets the built-in facilitator simulator run while a Gemini API key is set. The simulator
    /// moves no USDC and starts every address with $1,000, so this turns real Gemini calls into
    /// free ones: for a demo or a test of a real key, never for a public gateway.
    pub allow_simulated_facilitator_with_real_upstream: bool,
    /// Smallest quote, credits (= atomic USDC).
    pub min_quote: u64,
    /// `maxTimeoutSeconds` offered in requirements.
    pub max_timeout_s: u64,
    pub verifier_threads: usize,
    pub settle_concurrency: usize,
    pub settle_timeout_ms: u64,
    pub settle_retries: u32,
    /// How long a paid request waits for a settlement the facilitator left unknown
    /// (`settlement_pending`, a retry refused after a time-out) to be confirmed, on the chain
    /// (a network's `rpc_url`) or by the facilitator; past it the request is answered 504
    /// `x402_settlement_pending` and the payment is credited when it confirms.
    pub settle_pending_wait_ms: u64,
}

/// Wallet memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMemory {
    /// "auto" (Gemini when a key is set, else the local model when its files are in
    /// `model_dir`, else feature hashing), "gemini", "local-model", or "local" (feature hashing).
    pub embedder: String,
    /// The local model's directory (`vectorway model fetch` fills it); empty:
    /// `<data_dir>/models/all-MiniLM-L6-v2`.
    pub model_dir: String,
    pub embed_model: String,
    pub dims: usize,
    /// Below this many vectors a wallet's index is an exact scan; above it, HNSW.
    pub exact_threshold: usize,
    /// Chat injects only memories scoring at least this (cosine).
    pub score_floor: f32,
    /// Records kept per wallet and namespace; past it the oldest are forgotten (0: no limit).
    pub max_records: usize,
}

impl Default for RawAuth {
    fn default() -> Self {
        Self {
            siwe_domain: String::new(),
            chain_ids: vec![1, 8453, 84532],
            jwt_secret: String::new(),
            access_ttl_s: 900,
            refresh_ttl_s: 30 * 86_400,
            nonce_ttl_s: 300,
            max_nonces: 100_000,
            signup_grant: 0,
        }
    }
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            runtime_per_min: 600,
            control_per_min: 120,
            ip_per_min: 600,
            ip_burst: 300,
            max_tracked: 100_000,
        }
    }
}

impl Default for RawX402 {
    fn default() -> Self {
        Self {
            networks: RawNetworks::default(),
            // Anvil/Hardhat dev account #1: a safe default for the simulator; set your own.
            pay_to: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into(),
            facilitator_url: String::new(),
            facilitator: String::new(),
            settlement_key: String::new(),
            allow_simulated_facilitator_with_real_upstream: false,
            min_quote: 1_000,
            max_timeout_s: 300,
            verifier_threads: 1,
            settle_concurrency: 64,
            settle_timeout_ms: 10_000,
            settle_retries: 2,
            settle_pending_wait_ms: 15_000,
        }
    }
}

impl Default for RawMemory {
    fn default() -> Self {
        Self {
            embedder: "auto".into(),
            model_dir: String::new(),
            embed_model: "gemini-embedding-001".into(),
            dims: 768,
            exact_threshold: 2_000,
            score_floor: 0.35,
            max_records: 10_000,
        }
    }
}

impl RawAuth {
    pub(super) fn validate(
        &self,
        listen: &SocketAddr,
        public_base_url: Option<&str>,
    ) -> Result<AuthConfig, ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        };
        let siwe_domain = match (self.siwe_domain.as_str(), public_base_url) {
            ("", Some(url)) => url
                .split("://")
                .nth(1)
                .unwrap_or(url)
                .split('/')
                .next()
                .unwrap_or("")
                .to_string(),
            ("", None) => listen.to_string(),
            (d, _) => d.to_string(),
        };
        if siwe_domain.is_empty() || siwe_domain.contains(['/', ' ']) {
            return Err(invalid(
                "auth.siwe_domain",
                "an authority like api.example.com or localhost:8080",
            ));
        }
        if self.chain_ids.is_empty() {
            return Err(invalid("auth.chain_ids", "at least one chain id"));
        }
        let jwt_secret = resolve_secret("auth.jwt_secret", &self.jwt_secret)?;
        if jwt_secret.as_ref().is_some_and(|s| s.len() < 32) {
            return Err(invalid("auth.jwt_secret", "at least 32 bytes"));
        }
        if self.access_ttl_s == 0
            || self.refresh_ttl_s <= self.access_ttl_s
            || self.nonce_ttl_s == 0
        {
            return Err(invalid(
                "auth.access_ttl_s",
                "access > 0, refresh > access, nonce > 0",
            ));
        }
        if self.max_nonces == 0 {
            return Err(invalid("auth.max_nonces", "must be greater than 0"));
        }
        Ok(AuthConfig {
            siwe_domain,
            chain_ids: self.chain_ids.clone(),
            jwt_secret,
            access_ttl: Duration::from_secs(self.access_ttl_s),
            refresh_ttl: Duration::from_secs(self.refresh_ttl_s),
            nonce_ttl: Duration::from_secs(self.nonce_ttl_s),
            max_nonces: self.max_nonces,
            signup_grant: self.signup_grant,
        })
    }
}

/// `server.public_base_url` without its trailing `/`; empty is `None`. It is also the JWT issuer
/// and gives the origin SIWE messages must name, so it must be an absolute http(s) URL.
pub(super) fn public_base_url(raw: &str) -> Result<Option<String>, ConfigError> {
    let url = raw.trim_end_matches('/');
    if url.is_empty() {
        return Ok(None);
    }
    let ok = url.parse::<http::Uri>().is_ok_and(|u| {
        matches!(u.scheme_str(), Some("http" | "https"))
            && u.authority().is_some_and(|a| !a.as_str().contains('@'))
    });
    if ok {
        Ok(Some(url.to_string()))
    } else {
        Err(ConfigError::Invalid {
            key: "server.public_base_url".into(),
            message: "want http(s)://host[:port][/path]".into(),
        })
    }
}

impl RawLimits {
    pub(super) fn validate(&self) -> Result<LimitsConfig, ConfigError> {
        for (key, v) in [
            ("limits.runtime_per_min", self.runtime_per_min),
            ("limits.control_per_min", self.control_per_min),
            ("limits.ip_per_min", self.ip_per_min),
            ("limits.ip_burst", self.ip_burst),
        ] {
            if v == 0 {
                return Err(ConfigError::Invalid {
                    key: key.into(),
                    message: "must be greater than 0".into(),
                });
            }
        }
        if self.max_tracked < 1000 {
            return Err(ConfigError::Invalid {
                key: "limits.max_tracked".into(),
                message: "at least 1000".into(),
            });
        }
        Ok(LimitsConfig {
            runtime_per_min: self.runtime_per_min,
            control_per_min: self.control_per_min,
            ip_per_min: self.ip_per_min,
            ip_burst: self.ip_burst,
            max_tracked: self.max_tracked,
        })
    }
}

impl RawX402 {
    /// `real_upstream`: a Gemini API key is configured, so calls cost real money upstream.
    pub(super) fn validate(&self, real_upstream: bool) -> Result<X402Config, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.into(),
            message,
        };
        let networks = networks::validate(&self.networks)?;
        let own = super::own::validate(&self.facilitator, &self.settlement_key, &networks)?;
        let pay_to: Wallet = self
            .pay_to
            .parse()
            .map_err(|e: String| invalid("x402.pay_to", e))?;
        if pay_to.0 == [0u8; 20] {
            return Err(invalid(
                "x402.pay_to",
                "the zero address burns payments".into(),
            ));
        }
        if networks.iter().any(|n| n.chain_id == 8453) {
            // Anvil/Hardhat dev accounts #0–#2: their private keys are public.
            const DEV: [&str; 3] = [
                "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266",
                "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
                "0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc",
            ];
            if DEV.contains(&pay_to.to_string().as_str()) {
                return Err(invalid(
                    "x402.pay_to",
                    "a public dev key cannot receive mainnet USDC; set your own address".into(),
                ));
            }
            if self.facilitator_url.trim().is_empty() && own.is_none() {
                return Err(invalid(
                    "x402.facilitator_url",
                    "mainnet (base) needs a real facilitator; the simulator moves no USDC".into(),
                ));
            }
        }
        let facilitator_url = match self.facilitator_url.trim_end_matches('/') {
            "" => None,
            url if url.starts_with("http://") || url.starts_with("https://") => {
                Some(url.to_string())
            }
            _ => return Err(invalid("x402.facilitator_url", "want http(s)://…".into())),
        };
        if facilitator_url.is_none()
            && own.is_none()
            && real_upstream
            && !self.allow_simulated_facilitator_with_real_upstream
        {
            return Err(invalid(
                "x402.facilitator_url",
                "a Gemini API key is set but no facilitator is: the built-in facilitator \
                 simulator moves no USDC and starts every address with $1,000, which would buy \
                 real Gemini calls for free. Set x402.facilitator_url to a real facilitator, or \
                 set x402.allow_simulated_facilitator_with_real_upstream = true \
                 (VECTORWAY_X402__ALLOW_SIMULATED_FACILITATOR_WITH_REAL_UPSTREAM=true) to accept \
                 that"
                    .into(),
            ));
        }
        if self.verifier_threads == 0 || self.verifier_threads > 64 || self.settle_concurrency == 0
        {
            return Err(invalid(
                "x402.verifier_threads",
                "1..=64 threads, settle_concurrency > 0".into(),
            ));
        }
        if self.min_quote == 0 || self.max_timeout_s < 10 {
            return Err(invalid(
                "x402.min_quote",
                "min_quote > 0 and max_timeout_s ≥ 10".into(),
            ));
        }
        Ok(X402Config {
            networks,
            pay_to,
            facilitator_url,
            own,
            allow_simulated_facilitator_with_real_upstream: self
                .allow_simulated_facilitator_with_real_upstream,
            min_quote: self.min_quote,
            max_timeout_s: self.max_timeout_s,
            verifier_threads: self.verifier_threads,
            settle_concurrency: self.settle_concurrency,
            settle_timeout: Duration::from_millis(self.settle_timeout_ms.max(1)),
            settle_retries: self.settle_retries,
            settle_pending_wait: Duration::from_millis(self.settle_pending_wait_ms),
        })
    }
}

/// The local model's directory under `<data_dir>/models/`, its files and its vector size
/// (`memory::model` loads them; a test there checks these agree).
pub const LOCAL_MODEL_DIR: &str = "all-MiniLM-L6-v2";
pub const LOCAL_MODEL_FILES: [&str; 3] = ["model.safetensors", "tokenizer.json", "config.json"];
pub const LOCAL_MODEL_DIMS: usize = 384;

impl RawMemory {
    pub(super) fn validate(
        &self,
        has_gemini_key: bool,
        data_dir: &std::path::Path,
    ) -> Result<MemoryConfig, ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        };
        let model_dir = if self.model_dir.is_empty() {
            data_dir.join("models").join(LOCAL_MODEL_DIR)
        } else {
            std::path::PathBuf::from(&self.model_dir)
        };
        // "auto" looks for the model's files only; `app` verifies and loads them at start.
        let has_model = || {
            LOCAL_MODEL_FILES
                .iter()
                .all(|f| model_dir.join(f).is_file())
        };
        let embedder = match (self.embedder.as_str(), has_gemini_key) {
            ("auto", true) | ("gemini", _) => EmbedderKind::Gemini,
            ("auto", false) if has_model() => EmbedderKind::LocalModel,
            ("local-model", _) => EmbedderKind::LocalModel,
            ("auto", false) | ("local", _) => EmbedderKind::Local,
            _ => {
                return Err(invalid(
                    "memory.embedder",
                    "auto, gemini, local-model or local",
                ));
            }
        };
        if !(8..=3072).contains(&self.dims) {
            return Err(invalid("memory.dims", "8..=3072"));
        }
        if !(-1.0..=1.0).contains(&self.score_floor) {
            return Err(invalid("memory.score_floor", "a cosine between -1 and 1"));
        }
        Ok(MemoryConfig {
            embedder,
            model_dir,
            embed_model: self.embed_model.clone(),
            // The model's size is fixed; `memory.dims` sizes Gemini's and the hashing vectors.
            dims: if embedder == EmbedderKind::LocalModel {
                LOCAL_MODEL_DIMS
            } else {
                self.dims
            },
            exact_threshold: self.exact_threshold,
            score_floor: self.score_floor,
            max_records: self.max_records,
        })
    }
}
