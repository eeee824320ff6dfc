//! Wiring: builds the state from a validated config, owns start-up and shutdown order.
//!
//! Start: open the store → start the journal → rebuild balances → load keys → pick the upstream
//! (Gemini, or the in-process simulator when there is no key) → read a remote facilitator's
//! `/supported` (a configured network it lacks stops the start; an unreadable one starts the
//! gateway not ready, `payments::supported`) → bind → write `server.json`.
//! Background: the hold and idempotency sweeper, and the agent sweeper (`crate::agents`).
//! Stop: refuse new connections and let open ones finish → flush the journal → stop the simulator.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{self, Parts, State};
use crate::auth::{ApiKeys, Sessions};
use crate::billing::Billing;
use crate::config::Config;
use crate::config::StoreBackend;
use crate::http::server::{ServeOptions, load_tls, serve};
use crate::payments::{Payments, supported};
use crate::simulate::Simulator;
use crate::storage::journal::Journal;
use crate::storage::{Storage, StorageError, Store};
use crate::telemetry;
use crate::upstream::{Gemini, client};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS set-up failed: {0}")]
    Tls(std::io::Error),
    #[error("cannot start the built-in simulator: {0}")]
    Simulator(std::io::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("the system random number generator failed")]
    Randomness,
    /// The remote facilitator's `/supported` lacks a configured network.
    #[error("{0}")]
    FacilitatorNetworks(String),
    /// `memory.embedder = "local-model"` (or "auto" with the files present) cannot load it.
    #[error(transparent)]
    Model(#[from] crate::memory::model::ModelError),
}

/// A running gateway.
pub struct Running {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    simulator: Option<Simulator>,
    journal_task: Option<JoinHandle<()>>,
}

impl Running {
    pub fn base_url(&self) -> String {
        let scheme = if self.state.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The built-in simulator, when the gateway runs without a Gemini key.
    pub fn simulator(&self) -> Option<&Simulator> {
        self.simulator.as_ref()
    }

    /// Graceful stop: no new connections; open requests and streams finish (up to the grace
    /// period); then every journaled record is flushed.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        // Side effects already started (settlements, credits, stored idempotent answers) run
        // to their end before the journal's final flush. What is still running after the grace
        // period is completed from its intent at the next start.
        let pending = self
            .state
            .effects
            .drain(self.state.config.shutdown_grace)
            .await;
        if pending > 0 {
            tracing::warn!(pending, "side effects still running at shutdown");
        }
        self.state.billing.journal().sync().await;
        // Every debit is in the database now: what is left of this replica's leases goes back.
        self.state.billing.release_leases().await;
        let _ = std::fs::remove_file(self.state.config.data_dir.join("server.json"));
        if let Some(sim) = self.simulator.take() {
            sim.stop().await;
        }
        // The journal task is left running: streams still open after the grace period may
        // settle and journal their debits until the process exits.
        drop(self.journal_task.take());
    }

    /// Resolves when the server task ends on its own (it normally runs until `shutdown`).
    pub async fn wait(&mut self) {
        if let Some(t) = self.task.as_mut() {
            let _ = t.await;
            self.task = None;
        }
    }
}

fn write_private(path: &Path, contents: &str) -> Result<(), StartError> {
    let err = |source| StartError::Write {
        path: path.display().to_string(),
        source,
    };
    std::fs::write(path, contents).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    Ok(())
}

/// The admin secret: configured, or the one a previous start wrote, or a fresh random one.
fn admin_secret(config: &Config) -> Result<String, StartError> {
    match &config.admin_secret {
        Some(s) => Ok(s.clone()),
        None => persisted_secret(&config.data_dir.join("admin.secret")),
    }
}

/// A random secret kept in `path` (0600), created on first use.
fn persisted_secret(path: &Path) -> Result<String, StartError> {
    if let Ok(s) = std::fs::read_to_string(path)
        && s.trim().len() >= 16
    {
        return Ok(s.trim().to_string());
    }
    let mut bytes = [0u8; 24];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).map_err(|_| {
        StartError::Write {
            path: path.display().to_string(),
            source: std::io::Error::other("no randomness"),
        }
    })?;
    let secret = hex::encode(bytes);
    write_private(path, &secret)?;
    Ok(secret)
}

/// The memory embedder, with the local model loaded and verified (on a blocking thread).
async fn memory_embedder(
    config: &Config,
    gemini: Gemini,
) -> Result<crate::memory::Embedder, StartError> {
    use crate::memory::{Embedder, model::ModelError};
    let cfg = config.memory.clone();
    let embedder = tokio::task::spawn_blocking(move || Embedder::from_config(&cfg, gemini))
        .await
        .map_err(|e| ModelError::Load(format!("the loading task failed: {e}")))??;
    match &embedder {
        Embedder::Local(_) => tracing::warn!(
            model_dir = %config.memory.model_dir.display(),
            "memory uses FEATURE HASHING: recall matches shared words, not meaning. Run \
             `vectorway model fetch` for the local model, or set GEMINI_API_KEY."
        ),
        e => tracing::info!(fingerprint = %e.fingerprint(), "memory embedder ready"),
    }
    Ok(embedder)
}

/// Starts the gateway described by `config`.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let local = Store::open(&config.data_dir)?;
    let store = match &config.backend {
        StoreBackend::Embedded => Storage::embedded(local),
        StoreBackend::Postgres(pg) => {
            // Everything but our own facilitator's sent transactions is shared.
            if config.x402.own.is_some() {
                tracing::warn!(
                    "store.backend = \"postgres\" with x402.facilitator = \"self\": the sent \
                     transactions are still in store.data_dir, so run one replica until they move"
                );
            }
            Storage::postgres(local, crate::storage::pg::PgStore::open(pg).await?).await?
        }
    };
    let (journal, journal_run) = Journal::new(store.clone(), config.journal_interval);
    #[expect(
        clippy::disallowed_methods,
        reason = "the app owns the journal task and aborts it after the final sync"
    )]
    let journal_task = tokio::spawn(journal_run);
    let effects = crate::effects::Effects::new();
    let billing = Arc::new(
        Billing::recover(
            store.clone(),
            journal.clone(),
            config.hold_max_age,
            effects.clone(),
        )
        .await?,
    );
    // The auth feed's end before the keys are read: a key written meanwhile is read twice at
    // worst, never missed (`follow_auth`).
    let auth_cursor = store.auth_cursor().await?;
    // Indexes load lazily, after this: whatever the feed skips before it, a load reads.
    let memory_cursor = store.memory_cursor().await?;
    let keys = ApiKeys::load(store.clone(), journal).await?;

    let extra_roots = match &config.upstream.ca_file {
        Some(path) => client::load_roots(path).map_err(StartError::Tls)?,
        None => Vec::new(),
    };
    let http = client::build_with(&client::ClientOptions {
        connect_timeout: config.upstream.connect_timeout,
        max_idle_per_host: config.upstream.pool_max_idle_per_host,
        connections: config.upstream.connections,
        extra_roots,
    });
    // The built-in simulator stands in for whatever is not configured: Gemini without a key,
    // the x402 facilitator without a URL.
    let needs_sim = config.upstream.base_url.is_none()
        || (config.x402.facilitator_url.is_none() && config.x402.own.is_none());
    let simulator = if needs_sim {
        let sim = Simulator::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            config.simulator,
            None,
        )
        .await
        .map_err(StartError::Simulator)?;
        Some(sim)
    } else {
        None
    };
    let mut upstream_cfg = config.upstream.clone();
    let base_url = match (&config.upstream.base_url, &simulator) {
        (Some(url), _) => url.clone(),
        (None, Some(sim)) => {
            tracing::warn!(
                simulator = %sim.base_url(),
                "NO GEMINI_API_KEY SET: answers come from the built-in Gemini SIMULATOR, not from Google. \
                 Set GEMINI_API_KEY (or upstream.api_key) for real completions."
            );
            upstream_cfg.api_key = Some("simulator".into());
            sim.base_url()
        }
        (None, None) => String::new(),
    };
    let facilitator_base = match (&config.x402.facilitator_url, &simulator) {
        _ if config.x402.own.is_some() => {
            tracing::info!(
                "x402 payments are verified and settled on chain by this gateway (facilitator = \"self\")"
            );
            String::new()
        }
        (Some(url), _) => url.clone(),
        (None, Some(sim)) => {
            tracing::warn!(
                facilitator = %sim.facilitator_url(),
                "NO x402 FACILITATOR SET: payments settle on the built-in facilitator SIMULATOR; no USDC moves."
            );
            if config.upstream.api_key.is_some() {
                // Config validation let this through only with the named opt-in.
                tracing::warn!(
                    "x402.allow_simulated_facilitator_with_real_upstream is ON: every address \
                     starts with $1,000 of simulated USDC that buys REAL Gemini calls."
                );
            }
            sim.facilitator_url()
        }
        (None, None) => String::new(),
    };
    let gemini_simulated = config.upstream.base_url.is_none();
    let gemini = Gemini::new(http.clone(), base_url, &upstream_cfg);
    let payments = Payments::new(
        &config.x402,
        store.clone(),
        http,
        facilitator_base,
        effects.clone(),
    );
    // A remote facilitator must settle every configured network: its `/supported` is read now
    // (`payments::supported`). Unreadable: the gateway starts not ready and reads it again.
    let remote = payments
        .facilitator()
        .remote()
        .filter(|_| config.x402.facilitator_url.is_some());
    let read_supported_later = match remote {
        None => false,
        Some(fac) => match supported::check_at_start(fac, &config.x402.networks).await {
            supported::Check::Covered => false,
            supported::Check::Missing(gone) => {
                return Err(StartError::FacilitatorNetworks(
                    supported::unsupported_message(fac.base_host(), &gone),
                ));
            }
            supported::Check::Unreadable(e) => {
                tracing::error!(error = %e, "the x402 facilitator's /supported could not be \
                        read: starting NOT READY (/readyz 503) and reading it again");
                fac.readiness
                    .set(Some(format!("facilitator /supported unreadable: {e}")));
                true
            }
        },
    };

    let embedder = memory_embedder(&config, gemini.clone()).await?;
    let tls = match &config.tls {
        Some((cert, key)) => Some(load_tls(cert, key).map_err(StartError::Tls)?),
        None => None,
    };
    let secret = admin_secret(&config)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    write_private(
        &config.data_dir.join("server.json"),
        &serde_json::json!({"addr": addr.to_string(), "pid": std::process::id()}).to_string(),
    )?;

    let opts = ServeOptions {
        header_read_timeout: config.header_read_timeout,
        idle_timeout: config.idle_timeout,
        tls,
        grace: config.shutdown_grace,
        max_concurrent_streams: 1024,
    };
    let hold_max_age = config.hold_max_age;
    let mut config = config;
    if config.auth.siwe_domain == config.listen.to_string() {
        // The default SIWE domain is the listen address; with port 0 that is the bound one.
        config.auth.siwe_domain = addr.to_string();
    }
    let jwt_secret = match &config.auth.jwt_secret {
        Some(s) => s.clone(),
        None => persisted_secret(&config.data_dir.join("jwt.secret"))?,
    };
    // Tokens are bound to this deployment: `aud` its SIWE domain, `iss` its public base URL.
    let sessions = Sessions::new(
        jwt_secret.as_bytes(),
        &config.auth.siwe_domain,
        &api::describe::base_url(&config),
        store.clone(),
        config.auth.access_ttl,
        config.auth.refresh_ttl,
    )
    .await?;
    let agents = Arc::new(crate::agents::Agents::new(store.clone(), config.agents).await?);
    let state = Arc::new(
        State::new(Parts {
            config,
            store,
            billing,
            keys,
            sessions,
            payments,
            effects,
            agents,
            gemini,
            embedder,
            metrics: telemetry::metrics_handle(),
            simulated: gemini_simulated,
            admin_secret: secret,
        })
        .map_err(|_| StartError::Randomness)?,
    );
    // No request survives a restart: idempotency claims left by the last run are forgotten, and
    // settlements it left are completed from their intents (in the background: the facilitator
    // may be slow, and a payment's intent is keyed by its nonce, which a new request cannot
    // claim again). A shared store's claims may be another replica's requests in flight: they
    // are left to expire (`api::idempotency::sweep`).
    let claims_before = if state.store.is_shared() { 0 } else { u64::MAX };
    match state
        .store
        .idem_sweep(api::idempotency::expired_before(), claims_before)
        .await
    {
        Ok(n) if n > 0 => tracing::info!(removed = n, "idempotency records cleared at start"),
        Ok(_) => {}
        Err(e) => tracing::warn!(%e, "idempotency sweep failed"),
    }
    let recovering = state.clone();
    drop(state.effects.spawn("settlement recovery", async move {
        api::settle::recover(&recovering).await
    }));
    let (stop, stopped) = oneshot::channel::<()>();
    let handler_state = state.clone();
    let sweeper_state = state.clone();
    let handler = move |req, peer| api::handle(handler_state.clone(), req, peer);
    #[expect(
        clippy::disallowed_methods,
        reason = "the app owns the server task; shutdown() joins it"
    )]
    let task = tokio::spawn(async move {
        let sweep_every =
            (hold_max_age / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
        let sweep_state = sweeper_state.clone();
        let sweeper = async move {
            let mut tick = tokio::time::interval(sweep_every);
            let mut last_prune = std::time::Instant::now();
            loop {
                tick.tick().await;
                sweep_state.billing.sweep();
                api::idempotency::sweep(&sweep_state).await;
                // Spent x402 nonces can be forgotten once their authorization has expired.
                if last_prune.elapsed() > Duration::from_secs(600) {
                    last_prune = std::time::Instant::now();
                    if let Err(e) = sweep_state
                        .store
                        .prune_x402_nonces(crate::payments::unix_now())
                        .await
                    {
                        tracing::warn!(%e, "x402 nonce pruning failed");
                    }
                }
            }
        };
        let agents_state = sweeper_state.clone();
        let agent_sweeper = async move {
            // Agents unfunded past their deadline are deleted (`crate::agents`). Each pass is an
            // effect: a shutdown lets it finish rather than cut it between deletions.
            let mut tick = tokio::time::interval(agents_state.agents.sweep_interval());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let st = agents_state.clone();
                let pass = agents_state.effects.spawn("agent sweep", async move {
                    st.agents.sweep(&st.keys, &st.memory, &st.billing).await
                });
                match pass.await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(%e, "agent sweep failed; retried next pass"),
                    Err(e) => tracing::warn!(%e, "agent sweep task failed"),
                }
            }
        };
        let auth_follower = follow_auth(sweeper_state.clone(), auth_cursor);
        let history_follower = follow_history(sweeper_state.clone());
        let memory_follower = follow_memory(sweeper_state.clone(), memory_cursor);
        let lease_state = sweeper_state.clone();
        let lease_keeper = async move {
            // Heartbeat, expired-lease recovery and idle-lease return (`billing::lease`).
            if !lease_state.store.is_shared() {
                return std::future::pending::<()>().await;
            }
            let mut tick = tokio::time::interval(crate::billing::lease::TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                lease_state.billing.tick_leases().await;
            }
        };
        let reconcile_state = sweeper_state.clone();
        let reconciler = async move {
            // The nonce reconciler: intents whose replica stopped beating are claimed and
            // resolved here (`settle::recover` on `Storage::claim_intents`). The first pass is
            // the start-up recovery above.
            if !reconcile_state.store.is_shared() {
                return std::future::pending::<()>().await;
            }
            let mut tick = tokio::time::interval_at(
                tokio::time::Instant::now() + RECONCILE_EVERY,
                RECONCILE_EVERY,
            );
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let st = reconcile_state.clone();
                let pass = reconcile_state
                    .effects
                    .spawn("settlement reconcile", async move {
                        api::settle::recover(&st).await
                    });
                if let Err(e) = pass.await {
                    tracing::warn!(%e, "settlement reconcile pass failed");
                }
            }
        };
        let watch_state = sweeper_state.clone();
        let facilitator_watch = async move {
            if read_supported_later {
                let x = &watch_state.config.x402;
                if let Some(fac) = watch_state.payments.facilitator().remote() {
                    supported::watch(fac, &x.networks, &fac.readiness).await;
                }
            }
            std::future::pending::<()>().await;
        };
        let shutdown = async {
            let _ = stopped.await;
        };
        tokio::select! {
            () = serve(listener, opts, handler, shutdown) => {}
            () = sweeper => {}
            () = agent_sweeper => {}
            () = auth_follower => {}
            () = history_follower => {}
            () = memory_follower => {}
            () = lease_keeper => {}
            () = reconciler => {}
            () = facilitator_watch => {}
        }
    });
    Ok(Running {
        addr,
        state,
        stop: Some(stop),
        task: Some(task),
        simulator,
        journal_task: Some(journal_task),
    })
}

/// How often a gateway sharing its store looks for settlement intents whose replica stopped
/// beating (`Storage::claim_intents`): an orphan is claimed within `INTENT_TTL_MS` of its
/// owner's last beat plus this.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(2);

/// How often a gateway sharing its store reads the keys and revocations others wrote: a key
/// created or revoked, or a session family revoked, through one gateway is honoured or refused
/// by every other within this plus one round trip.
pub const AUTH_FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// A change feed from `cursor`, re-reading one statement timeout (plus a second) back
/// (`ChangeFeed`), and the interval to read it at.
fn follow_from(
    state: &State,
    cursor: i64,
    every: Duration,
) -> (crate::storage::pg::ChangeFeed, tokio::time::Interval) {
    let lookback = match &state.config.backend {
        StoreBackend::Postgres(pg) => pg.statement_timeout + Duration::from_secs(1),
        StoreBackend::Embedded => Duration::from_secs(1),
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    (crate::storage::pg::ChangeFeed::new(cursor, lookback), tick)
}

/// Follows the auth change feed (`storage::pg::ChangeFeed`) into the key cache and the
/// revoked-family set; never returns. On the embedded backend (`cursor` is `None`) it waits.
async fn follow_auth(state: Arc<State>, cursor: Option<i64>) {
    let Some(cursor) = cursor else {
        return std::future::pending().await;
    };
    let (mut feed, mut tick) = follow_from(&state, cursor, AUTH_FOLLOW_EVERY);
    loop {
        tick.tick().await;
        match state.store.auth_changes(&mut feed).await {
            Ok(ch) => {
                state.keys.apply_changes(&ch.keys);
                state.sessions.apply_revocations(&ch.revoked_families);
            }
            Err(e) => tracing::warn!(%e, "reading the auth changes failed; retried"),
        }
    }
}

/// How often a gateway sharing its store folds the calls and payments other gateways recorded
/// into its console rollup: the console and `/admin/top-wallets` of every replica show a call
/// made through any of them within this plus one round trip.
pub const HISTORY_FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// Follows the shared history into the console's rollup (`Storage::follow_history`); never
/// returns. On the embedded backend it waits.
async fn follow_history(state: Arc<State>) {
    if !state.store.is_shared() {
        return std::future::pending().await;
    }
    let mut tick = tokio::time::interval(HISTORY_FOLLOW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = state.store.follow_history().await {
            tracing::warn!(%e, "reading the shared history failed; retried");
        }
    }
}

/// How often a gateway sharing its store reads the memory records others wrote and deleted: a
/// memory written through one gateway is searchable through every other within this plus one
/// round trip (at once where its (wallet, namespace) index is not loaded: the load reads it).
pub const MEMORY_FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// How long a memory tombstone stays for the other gateways' feeds. A gateway that could not
/// read its feed for half of it drops its loaded indexes (they reload from the store), so a
/// delete is never missed for good; searches are unaffected either way (they read hits back).
pub const MEMORY_TOMBSTONES_KEPT: Duration = Duration::from_secs(600);

/// How often a gateway prunes old tombstones and expired SIWE challenges from a shared store.
const PRUNE_SHARED_EVERY: Duration = Duration::from_secs(60);

/// Follows the memory change feed into the loaded indexes, and prunes what a shared store
/// keeps only for the feeds; never returns. On the embedded backend it waits.
async fn follow_memory(state: Arc<State>, cursor: Option<i64>) {
    let Some(cursor) = cursor else {
        return std::future::pending().await;
    };
    let (mut feed, mut tick) = follow_from(&state, cursor, MEMORY_FOLLOW_EVERY);
    let mut read_at = std::time::Instant::now();
    let mut pruned_at = std::time::Instant::now();
    loop {
        tick.tick().await;
        let wallets = state.memory.loaded_wallets();
        match state.store.memory_changes(&mut feed, &wallets).await {
            Ok(changes) => {
                if read_at.elapsed() >= MEMORY_TOMBSTONES_KEPT / 2 {
                    tracing::warn!("the memory feed fell behind; loaded indexes reload");
                    state.memory.drop_indexes();
                } else {
                    state.memory.apply_changes(&changes);
                }
                read_at = std::time::Instant::now();
            }
            Err(e) => tracing::warn!(%e, "reading the memory changes failed; retried"),
        }
        if pruned_at.elapsed() >= PRUNE_SHARED_EVERY {
            pruned_at = std::time::Instant::now();
            let now = crate::storage::now_ms();
            let before = now.saturating_sub(MEMORY_TOMBSTONES_KEPT.as_millis() as u64);
            if let Err(e) = state.store.prune_shared(before, now / 1000).await {
                tracing::warn!(%e, "pruning the shared store failed; retried");
            }
        }
    }
}
