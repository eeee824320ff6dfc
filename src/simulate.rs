//! `vectorway simulate`: a Gemini-wire server for tests, benches, load tests and key-less `serve`.
//!
//! It speaks the native REST surface (`generateContent`, `streamGenerateContent?alt=sse` with CRLF
//! framing and running usage, `batchEmbedContents`, `models`), answers with Gemini error bodies,
//! and has knobs (time to first token, tokens per second, chunk size, reply length) and a fault
//! plan (status codes with `RetryInfo`, stalls, mid-stream cuts, raw error tails, padded events,
//! streamed thoughts, missing usage, cache hits). Control endpoints under `/_sim/` set knobs and faults and
//! expose the log of requests received. Generation also behaves like Gemini for agent features
//! (function calls, tool results, 3.x thought signatures, structured output, `candidateCount`,
//! image tokens): see `gemini.rs` and its submodules for the rules.
//! It shares the product's HTTP plumbing but none of its domain code: token counts, embeddings
//! and errors are produced here independently, so a gateway bug cannot agree with itself.
//! Under `/facilitator/` the same server is an x402 facilitator (`facilitator`): `/verify`,
//! `/settle` and `/supported`, with its own signature checks and a USDC ledger.

pub mod facilitator;
pub mod gemini;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::config::SimulatorKnobs;
use crate::http::server::{ServeOptions, serve};
use crate::http::{Body, json, read_body};
use crate::wallet::Wallet;

/// What the simulator should do wrong, and for how many requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultPlan {
    /// Answer generation requests with this HTTP status and a Gemini error body.
    pub status: Option<u16>,
    /// `RetryInfo.retryDelay` on a 429, in seconds.
    pub retry_delay_s: Option<f64>,
    /// Wait this long before sending response headers.
    pub stall_before_headers_ms: Option<u64>,
    /// Streams: close the connection abruptly after this many events.
    pub cut_after_chunks: Option<u32>,
    /// Streams: after this many events, write a raw `{"error":…}` block and close.
    pub error_after_chunks: Option<u32>,
    /// Status inside that error block (default 503).
    pub error_status: Option<u16>,
    /// Streams: after this many events, pause for `stall_ms`.
    pub stall_after_chunks: Option<u32>,
    pub stall_ms: Option<u64>,
    /// Streams: add this many bytes of filler words to each text event (a very long answer at
    /// the same token count, for backpressure and memory tests).
    pub pad_event_bytes: Option<u32>,
    /// Streams: open with this many events of thought-summary parts (`"thought": true`, no
    /// visible text) carrying running usage with `thoughtsTokenCount`, as Gemini streams the
    /// thinking of a call that asked for `includeThoughts`. They count as events for the
    /// `*_after_chunks` faults, so `cut_after_chunks` equal to this cuts a stream that thought but
    /// never showed text.
    pub thought_events: Option<u32>,
    /// Send no `usageMetadata` at all (unary answers and every stream event), as Vertex AI's
    /// intermediate chunks or a stripping proxy do: the gateway cannot read the counts.
    pub omit_usage: bool,
    /// Report this many prompt tokens (at most the prompt) as served from Gemini's context
    /// cache: `cachedContentTokenCount` (part of `promptTokenCount`) and `cacheTokensDetails`
    /// on every usage object, as an implicit or explicit cache hit does (reference §1.6).
    pub cached_tokens: Option<u64>,
    /// How many generation requests the plan applies to; `None` = every one until replaced.
    pub times: Option<u32>,
}

/// Knob overrides accepted by `POST /_sim/knobs`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KnobUpdate {
    pub ttft_ms: Option<u64>,
    pub tokens_per_sec: Option<u32>,
    pub chunk_tokens: Option<u32>,
    pub reply_tokens: Option<u32>,
}

/// One request the simulator received (for tests to inspect what reached "Gemini").
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub body: serde_json::Value,
}

const LOG_CAP: usize = 1000;

pub(crate) struct SimState {
    knobs: Mutex<SimulatorKnobs>,
    faults: Mutex<FaultPlan>,
    log: Mutex<VecDeque<Recorded>>,
    api_key: Option<String>,
    served: AtomicU64,
    /// Stream events handed to the connection (each waits for room: this is what the reader
    /// pulled, plus buffers).
    stream_events: AtomicU64,
    /// Model requests (generate, stream, embed) between arrival and response head, now and at
    /// most.
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    facilitator: facilitator::Ledger,
}

/// Counts one model request as in flight until dropped.
struct InFlight<'a>(&'a SimState);

impl<'a> InFlight<'a> {
    fn enter(st: &'a SimState) -> Self {
        let now = st.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        st.peak_in_flight.fetch_max(now, Ordering::AcqRel);
        Self(st)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl SimState {
    pub(crate) fn knobs(&self) -> SimulatorKnobs {
        *self.knobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The fault plan for the next generation request (consuming one of its `times`).
    pub(crate) fn take_fault(&self) -> FaultPlan {
        let mut plan = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        let current = plan.clone();
        match plan.times {
            Some(0) => return FaultPlan::default(),
            Some(1) => *plan = FaultPlan::default(),
            Some(n) => plan.times = Some(n - 1),
            None => {}
        }
        current
    }

    fn record(&self, r: Recorded) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if log.len() == LOG_CAP {
            log.pop_front();
        }
        log.push_back(r);
    }
}

/// A running simulator.
pub struct Simulator {
    addr: SocketAddr,
    state: Arc<SimState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Simulator {
    /// Binds `listen` (port 0 for any) and serves plain HTTP until `stop` or drop.
    pub async fn start(
        listen: SocketAddr,
        knobs: SimulatorKnobs,
        api_key: Option<String>,
    ) -> std::io::Result<Self> {
        Self::start_with(
            listen,
            knobs,
            api_key,
            ServeOptions::plain(Duration::from_secs(1)),
        )
        .await
    }

    /// `start` with connection settings of its own (TLS, h2 stream limit), as Google's
    /// front ends have: h2 by ALPN and at most 100 streams per connection.
    pub async fn start_with(
        listen: SocketAddr,
        knobs: SimulatorKnobs,
        api_key: Option<String>,
        opts: ServeOptions,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(SimState {
            knobs: Mutex::new(knobs),
            faults: Mutex::new(FaultPlan::default()),
            log: Mutex::new(VecDeque::new()),
            api_key,
            served: AtomicU64::new(0),
            stream_events: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            peak_in_flight: AtomicU64::new(0),
            facilitator: facilitator::Ledger::default(),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let st = state.clone();
        let handler = move |req: Request<Incoming>, _peer: SocketAddr| {
            let st = st.clone();
            async move { route(st, req).await }
        };
        #[expect(
            clippy::disallowed_methods,
            reason = "the simulator owns its server task; stop() ends it"
        )]
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            serve(listener, opts, handler, shutdown).await;
        });
        Ok(Self {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_faults(&self, plan: FaultPlan) {
        *self.state.faults.lock().unwrap_or_else(|p| p.into_inner()) = plan;
    }

    pub fn set_knobs(&self, knobs: SimulatorKnobs) {
        *self.state.knobs.lock().unwrap_or_else(|p| p.into_inner()) = knobs;
    }

    /// Requests received so far (generation and embedding calls).
    pub fn requests(&self) -> Vec<Recorded> {
        self.state
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Number of generation requests answered (any outcome).
    pub fn generation_count(&self) -> u64 {
        self.state.served.load(Ordering::Relaxed)
    }

    /// The most model requests that were in flight at once (arrived, no response head yet).
    pub fn peak_in_flight(&self) -> u64 {
        self.state.peak_in_flight.load(Ordering::Acquire)
    }

    /// Stream events sent so far, over all streams (an event counts once the connection took it).
    pub fn stream_events(&self) -> u64 {
        self.state.stream_events.load(Ordering::Relaxed)
    }

    /// The base URL of the built-in x402 facilitator (`…/facilitator`).
    pub fn facilitator_url(&self) -> String {
        format!("http://{}/facilitator", self.addr)
    }

    /// Sets an address's USDC balance at the facilitator, in atomic units.
    pub fn set_balance(&self, address: &Wallet, amount: u64) {
        self.state.facilitator.set_balance(address.0, amount);
    }

    /// An address's USDC balance at the facilitator, in atomic units.
    pub fn balance(&self, address: &Wallet) -> u64 {
        self.state.facilitator.balance(&address.0)
    }

    /// The balance of addresses the facilitator has not seen yet.
    pub fn set_default_balance(&self, amount: u64) {
        self.state.facilitator.set_default_balance(amount);
    }

    /// Counts of facilitator calls (verify, settle, settled, refused).
    pub fn facilitator_stats(&self) -> facilitator::FacilitatorStats {
        self.state.facilitator.stats()
    }

    pub fn set_facilitator_faults(&self, faults: facilitator::FacilitatorFaults) {
        self.state.facilitator.set_faults(faults);
    }

    /// Stops serving and waits for open connections (up to a second).
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn route(st: Arc<SimState>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if let Some(ctl) = path.strip_prefix("/_sim/") {
        return control(&st, &method, ctl, req).await;
    }
    if let Some(what) = path.strip_prefix("/facilitator/") {
        return facilitator::route(&st.facilitator, &method, what, req).await;
    }
    if let Some(resp) = gemini::authenticate(&st, &req) {
        return resp;
    }
    if method == Method::GET && (path == "/v1beta/models" || path == "/v1/models") {
        return gemini::list_models();
    }
    let Some(rest) = path.strip_prefix("/v1beta/models/") else {
        return gemini::error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("Method not found: {path}"),
        );
    };
    let Some((model, action)) = rest.split_once(':') else {
        return gemini::error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("Method not found: {path}"),
        );
    };
    if method != Method::POST {
        return gemini::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "INVALID_ARGUMENT",
            "use POST",
        );
    }
    let (parts, body) = req.into_parts();
    let bytes = match read_body(&parts.headers, body, 32 << 20).await {
        Ok(b) => b,
        Err(e) => {
            return gemini::error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", &e.to_string());
        }
    };
    let body: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return gemini::error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                &format!("Invalid JSON payload received. {e}"),
            );
        }
    };
    st.record(Recorded {
        method: method.to_string(),
        path: path.clone(),
        body: body.clone(),
    });
    let model = model.to_string();
    let _counted = InFlight::enter(&st);
    match action {
        "generateContent" => gemini::generate(&st, &model, &body, false, parts.uri.query()).await,
        "streamGenerateContent" => {
            gemini::generate(&st, &model, &body, true, parts.uri.query()).await
        }
        "batchEmbedContents" => gemini::batch_embed(&model, &body),
        "embedContent" => gemini::embed_one(&model, &body),
        _ => gemini::error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("Method not found: {action}"),
        ),
    }
}

async fn control(
    st: &SimState,
    method: &Method,
    what: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts.headers, body, 1 << 20)
        .await
        .unwrap_or_default();
    match (method.as_str(), what) {
        ("POST", "faults") => match serde_json::from_slice::<FaultPlan>(&bytes) {
            Ok(plan) => {
                *st.faults.lock().unwrap_or_else(|p| p.into_inner()) = plan.clone();
                json(StatusCode::OK, &plan)
            }
            Err(e) => json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"error": e.to_string()}),
            ),
        },
        ("POST", "knobs") => match serde_json::from_slice::<KnobUpdate>(&bytes) {
            Ok(u) => {
                let mut k = st.knobs.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(v) = u.ttft_ms {
                    k.ttft = Duration::from_millis(v);
                }
                if let Some(v) = u.tokens_per_sec.filter(|v| *v > 0) {
                    k.tokens_per_sec = v;
                }
                if let Some(v) = u.chunk_tokens.filter(|v| *v > 0) {
                    k.chunk_tokens = v;
                }
                if let Some(v) = u.reply_tokens {
                    k.reply_tokens = v;
                }
                json(StatusCode::OK, &serde_json::json!({"ok": true}))
            }
            Err(e) => json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"error": e.to_string()}),
            ),
        },
        ("GET", "requests") => {
            let log: Vec<Recorded> = st
                .log
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned()
                .collect();
            json(StatusCode::OK, &log)
        }
        ("DELETE", "requests") => {
            st.log.lock().unwrap_or_else(|p| p.into_inner()).clear();
            json(StatusCode::OK, &serde_json::json!({"ok": true}))
        }
        ("GET", "stats") => json(
            StatusCode::OK,
            &serde_json::json!({"generations": st.served.load(Ordering::Relaxed),
                                "stream_events": st.stream_events.load(Ordering::Relaxed),
                                "peak_in_flight": st.peak_in_flight.load(Ordering::Relaxed)}),
        ),
        _ => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "unknown control endpoint"}),
        ),
    }
}
