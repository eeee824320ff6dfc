//! The product's HTTP surface: one route table, deny-by-default dispatch, one file per resource.
//!
//! `routes::ROUTES` is the single declaration of what is served; `handle` matches a request
//! against it, resolves the caller as the route's `Access` demands, applies the wallet's rate
//! limit (or, for a request without a caller, its client IP's), puts a deadline on the request
//! body, applies the `Idempotency-Key` contract, calls the handler, and records the call in the
//! wallet's usage history. Every response gets an `x-request-id`; every error is OpenAI-shaped.

pub mod account;
pub mod admin;
pub mod agents;
pub mod assets;
pub mod chat;
pub mod console;
pub mod describe;
pub mod discovery;
pub mod health;
pub mod idempotency;
pub mod mcp;
pub mod media;
pub mod memory;
pub mod models;
pub mod money;
pub mod num;
pub mod openapi;
pub mod pay;
pub mod responses;
pub mod routes;
pub mod settle;
pub mod signin;
pub mod types;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::header::{AUTHORIZATION, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::{self, ApiKeys, AuthError, AuthMode, Principal, Sessions, Siwe};
use crate::billing::Billing;
use crate::config::Config;
use crate::error::Error;
use crate::http::{Body, TimedBody, json};
use crate::memory::Memory;
use crate::payments::Payments;
use crate::ratelimit::{Quota, RateLimiter};
use crate::storage::journal::JournalOp;
use crate::storage::{Storage, UsageEvent, now_ms};
use crate::upstream::Gemini;
pub use routes::{Access, ROUTES, Route, RouteId, find_route, match_path};

/// A request body: still on the wire (under its read deadline), or already read (idempotent
/// replays and MCP tool calls re-feed it).
pub type ReqBody = Either<TimedBody<Incoming>, Full<Bytes>>;

/// Everything a handler may use; built by `app`.
pub struct State {
    pub config: Config,
    pub store: Storage,
    pub billing: Arc<Billing>,
    pub keys: ApiKeys,
    pub sessions: Sessions,
    pub siwe: Siwe,
    pub limiter: RateLimiter,
    pub payments: Payments,
    /// Side effects that must finish whatever happens to their request (`crate::effects`).
    pub effects: crate::effects::Effects,
    /// Paid-stream blocks after failed settlements (`settle`).
    pub settler: settle::Settler,
    pub memory: Memory,
    /// Agent accounts registered without a wallet (`crate::agents`).
    pub agents: Arc<crate::agents::Agents>,
    /// Fetches image URLs of chat turns (`crate::media::fetch`, SSRF-checked).
    pub media: crate::media::fetch::Fetcher,
    /// The discovery documents, built from the route table and this config at start-up.
    pub docs: discovery::Docs,
    pub gemini: Gemini,
    pub metrics: PrometheusHandle,
    /// The built-in simulator is the upstream (no Gemini key).
    pub simulated: bool,
    pub admin_secret: String,
    pub started: Instant,
    request_seq: AtomicU64,
    request_salt: u64,
    /// The last upstream probe: when, and whether it worked (cached so `/readyz` stays cheap).
    pub(crate) probe: std::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

/// The parts `app` wires into a `State`.
pub struct Parts {
    pub config: Config,
    pub store: Storage,
    pub billing: Arc<Billing>,
    pub keys: ApiKeys,
    pub sessions: Sessions,
    pub payments: Payments,
    pub effects: crate::effects::Effects,
    /// The agent registry (`Agents::new` counts the store's unfunded agents).
    pub agents: Arc<crate::agents::Agents>,
    pub gemini: Gemini,
    /// The memory embedder (`app` loads a local model before binding).
    pub embedder: crate::memory::Embedder,
    pub metrics: PrometheusHandle,
    pub simulated: bool,
    pub admin_secret: String,
}

impl State {
    /// Fails only when the system has no randomness for the request-id salt.
    pub fn new(p: Parts) -> Result<Self, ring::error::Unspecified> {
        let mut salt = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)?;
        let a = &p.config.auth;
        let siwe = Siwe::new(a.siwe_domain.clone(), a.chain_ids.clone(), a.nonce_ttl)
            .with_origin(&describe::base_url(&p.config))
            .with_max_nonces(a.max_nonces)
            .with_store(&p.store);
        let limiter = RateLimiter::new(p.config.limits)
            .with_registrations(p.config.agents.register_per_min)
            .with_shared(p.store.clone());
        let memory = Memory::with_embedder(p.store.clone(), &p.config.memory, p.embedder)
            .with_effects(p.effects.clone());
        let docs = discovery::Docs::build(&p.config);
        let media = crate::media::fetch::Fetcher::new(&p.config.media);
        Ok(Self {
            docs,
            media,
            config: p.config,
            store: p.store,
            billing: p.billing,
            keys: p.keys,
            sessions: p.sessions,
            siwe,
            limiter,
            payments: p.payments,
            effects: p.effects,
            settler: settle::Settler::default(),
            memory,
            agents: p.agents,
            gemini: p.gemini,
            metrics: p.metrics,
            simulated: p.simulated,
            admin_secret: p.admin_secret,
            started: Instant::now(),
            request_seq: AtomicU64::new(0),
            request_salt: u64::from_le_bytes(salt),
            probe: std::sync::Mutex::new(None),
        })
    }

    /// What embeddings cost.
    pub fn embedding_price(&self) -> &crate::billing::pricing::ModelPrice {
        &self.config.embedding_price
    }

    fn next_request_id(&self) -> String {
        let n = self.request_seq.fetch_add(1, Ordering::Relaxed);
        format!("req_{:016x}{:08x}", self.request_salt, n)
    }
}

/// Per-request facts handlers need besides the request itself.
pub struct Ctx {
    pub state: Arc<State>,
    pub request_id: String,
    pub started: Instant,
    pub principal: Option<Principal>,
    pub route: &'static Route,
    pub params: Vec<String>,
    /// The client's address (`None` for a request re-entering from an MCP tool call).
    pub peer: Option<IpAddr>,
}

impl Ctx {
    /// The authenticated caller (routes whose access guarantees one).
    pub fn caller(&self) -> Result<&Principal, Error> {
        self.principal
            .as_ref()
            .ok_or_else(|| AuthError::MissingCredentials.into())
    }
}

/// The service function: route, authenticate, limit, dispatch, stamp, measure.
pub async fn handle(state: Arc<State>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let started = Instant::now();
    let request_id = state.next_request_id();
    let version = req.version();
    let (route_name, mut res) = match find_route(req.method(), req.uri().path()) {
        Err(e) => ("unmatched", unmatched(&e, req.uri().path())),
        Ok((route, params)) => {
            let params = params.into_iter().map(str::to_string).collect();
            let (read, idle) = (
                state.config.body_read_timeout,
                state.config.body_idle_timeout,
            );
            let req = req.map(|b| Either::Left(TimedBody::new(b, read, idle)));
            let peer = Some(peer.ip());
            (
                route.name,
                serve(&state, route, params, req, &request_id, started, peer).await,
            )
        }
    };
    // A body that stalled leaves the connection mid-message: HTTP/1 closes it after the 408.
    if res.status() == StatusCode::REQUEST_TIMEOUT && version <= http::Version::HTTP_11 {
        res.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut()
            .insert(HeaderName::from_static("x-request-id"), v);
    }
    let status = res.status().as_u16();
    metrics::counter!("vectorway_http_requests_total", "route" => route_name, "status" => status_class(status))
        .increment(1);
    metrics::histogram!("vectorway_http_request_duration_seconds", "route" => route_name)
        .record(started.elapsed().as_secs_f64());
    tracing::debug!(
        request_id,
        route = route_name,
        status,
        elapsed_us = started.elapsed().as_micros() as u64,
        "request"
    );
    res
}

/// A 404, or a 405 with the `Allow` header RFC 9110 requires: the methods served on `path`.
fn unmatched(e: &crate::error::RequestError, path: &str) -> Response<Body> {
    let mut res = error_response(&Error::from(e.clone()));
    if matches!(e, crate::error::RequestError::MethodNotAllowed { .. }) {
        let allowed: Vec<&str> = routes::routes_at(path).map(|(r, _)| r.method).collect();
        if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
            res.headers_mut().insert(http::header::ALLOW, v);
        }
    }
    res
}

/// Serves a matched route. `peer` is the client's address; `None` for a request that re-enters
/// from an MCP tool call (its `/mcp` request was already counted).
async fn serve(
    state: &Arc<State>,
    route: &'static Route,
    params: Vec<String>,
    req: Request<ReqBody>,
    request_id: &str,
    started: Instant,
    peer: Option<IpAddr>,
) -> Response<Body> {
    let principal = match authorize(state, route, req.headers()) {
        Ok(p) => p,
        Err(e) => return error_response_on(route, &e),
    };
    let quota = match (&principal, peer) {
        (Some(p), _) => match state.limiter.check(p.wallet, route.class).await {
            Ok(q) => q,
            Err(e) => return error_response_on(route, &Error::from(e)),
        },
        // No caller yet (public routes, sign-in, x402, MCP): the client IP's bucket. Operators
        // with the admin secret are not limited.
        (None, Some(ip)) if route.access != Access::Admin => match state.limiter.check_ip(ip) {
            Ok(()) => None,
            Err(e) => return error_response_on(route, &Error::from(e)),
        },
        (None, _) => None,
    };
    let (method, path) = (req.method().to_string(), req.uri().path().to_string());
    let who = principal.clone();
    let ctx = Ctx {
        state: state.clone(),
        request_id: request_id.to_string(),
        started,
        principal,
        route,
        params,
        peer,
    };
    let mut res = if route.idempotent && req.headers().contains_key(idempotency::HEADER) {
        idempotency::run(ctx, req).await
    } else {
        dispatch(ctx, req)
            .await
            .unwrap_or_else(|e| error_response_on(route, &e))
    };
    if let Some(q) = quota {
        stamp_quota(&mut res, q);
    }
    if let Some(p) = who
        // Chat records its own events, and so do successful embeddings and memory searches
        // (with tokens and cost).
        && !(matches!(route.id, RouteId::Chat | RouteId::Responses)
            || matches!(route.id, RouteId::Embeddings | RouteId::MemorySearch)
                && res.status().is_success())
    {
        record_call(
            state,
            &p,
            &method,
            &path,
            res.status().as_u16(),
            started,
            request_id,
        );
    }
    res
}

fn stamp_quota(res: &mut Response<Body>, q: Quota) {
    let h = res.headers_mut();
    for (name, v) in [
        ("x-ratelimit-limit", u64::from(q.limit)),
        ("x-ratelimit-remaining", u64::from(q.remaining)),
        ("x-ratelimit-reset", q.reset_s),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v.to_string()) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
}

/// Journals one usage event for `wallet` (its sequence number and time are set here). Every
/// usage record of the API goes through this one function.
pub fn journal_usage(state: &State, wallet: crate::wallet::Wallet, mut ev: UsageEvent) {
    match state.store.next_seq() {
        Ok(seq) => ev.seq = seq,
        Err(e) => return tracing::error!(%e, "usage event lost: no sequence number"),
    }
    ev.ts_ms = now_ms();
    state
        .billing
        .journal()
        .push(JournalOp::Usage(wallet, Box::new(ev)));
}

/// Journals a call in the caller's usage history, for routes that do not record their own.
fn record_call(
    state: &State,
    p: &Principal,
    method: &str,
    path: &str,
    status: u16,
    started: Instant,
    request_id: &str,
) {
    let ev = UsageEvent {
        method: method.to_string(),
        path: path.to_string(),
        status,
        latency_ms: started.elapsed().as_millis() as u64,
        key_id: p.key_id.clone(),
        auth_mode: p.mode.as_str().into(),
        request_id: request_id.to_string(),
        ..UsageEvent::default()
    };
    journal_usage(state, p.wallet, ev);
}

fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// A Bearer token that is not an API key (a JWT), if any.
fn bearer_jwt(headers: &http::HeaderMap) -> Option<&str> {
    let v = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let t = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))?
        .trim();
    (!t.starts_with("vw_")).then_some(t)
}

fn key_or_jwt(
    state: &State,
    headers: &http::HeaderMap,
    allow_key: bool,
) -> Result<Option<Principal>, Error> {
    if allow_key && let Some(raw) = auth::api_key_from(headers)? {
        return Ok(Some(state.keys.authenticate(raw)?));
    }
    match bearer_jwt(headers) {
        Some(token) => Ok(Some(state.sessions.authenticate(token)?)),
        None => Ok(None),
    }
}

/// Resolves the caller a route demands. Deny by default: only `Public` and handler-checked
/// `Siwe` routes pass without one.
fn authorize(
    state: &State,
    route: &Route,
    headers: &http::HeaderMap,
) -> Result<Option<Principal>, Error> {
    let required = |p: Option<Principal>| {
        p.ok_or_else(|| Error::from(AuthError::MissingCredentials))
            .map(Some)
    };
    match route.access {
        // MCP tool calls are authorized when they re-enter their REST route (`mcp::forward`).
        Access::Public | Access::Siwe | Access::Mcp => Ok(None),
        // A payer uses an API key or an x402 payment header, never both; with neither, the
        // handler answers with the price (402).
        Access::Payer => match auth::api_key_from(headers)? {
            Some(_) if pay::has_payment(headers) => Err(AuthError::AmbiguousCredentials.into()),
            Some(raw) => Ok(Some(state.keys.authenticate(raw)?)),
            None => Ok(None),
        },
        Access::X402 => Ok(None),
        Access::ApiKey => match auth::api_key_from(headers)? {
            Some(raw) => Ok(Some(state.keys.authenticate(raw)?)),
            None => Err(AuthError::MissingCredentials.into()),
        },
        Access::Jwt => required(key_or_jwt(state, headers, false)?),
        Access::KeyOrJwt => required(key_or_jwt(state, headers, true)?),
        // Without a key or JWT the handler looks for a SIWE message in the query.
        Access::KeyJwtOrSiwe => key_or_jwt(state, headers, true),
        Access::Admin => {
            let bearer = headers
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::as_bytes);
            let given = headers
                .get("x-admin-secret")
                .map(HeaderValue::as_bytes)
                .or(bearer);
            let given = given.ok_or(AuthError::InvalidAdminSecret)?;
            if auth::secrets_equal(given, state.admin_secret.as_bytes()) {
                Ok(None)
            } else {
                Err(AuthError::InvalidAdminSecret.into())
            }
        }
    }
}

async fn dispatch(ctx: Ctx, req: Request<ReqBody>) -> Result<Response<Body>, Error> {
    match ctx.route.id {
        RouteId::Health | RouteId::Healthz => Ok(health::live()),
        RouteId::Readyz => Ok(health::ready(&ctx.state).await),
        RouteId::Status => Ok(health::status(&ctx.state).await),
        RouteId::Metrics => Ok(health::metrics(&ctx.state)),
        RouteId::Models => Ok(models::list(&ctx.state)),
        RouteId::Chat => chat::completions(ctx, req).await,
        RouteId::Responses => responses::create(ctx, req).await,
        RouteId::Mcp => mcp::handle(&ctx, req).await,
        RouteId::SiweChallenge => signin::challenge(&ctx, req).await,
        RouteId::SiweVerify => signin::verify(&ctx, req).await,
        RouteId::Refresh => signin::refresh(&ctx, req).await,
        RouteId::Revoke => signin::revoke(&ctx, req).await,
        RouteId::Me => account::me(&ctx).await,
        RouteId::CreditsMe => account::credits_me(&ctx).await,
        RouteId::Ledger => account::ledger(&ctx, &req).await,
        RouteId::Usage => account::usage(&ctx, &req).await,
        RouteId::ApiKeyCreate => account::create_key(&ctx, req).await,
        RouteId::ApiKeyList => account::list_keys(&ctx),
        RouteId::ApiKeyRevoke => account::revoke_key(&ctx).await,
        RouteId::AuthKeysCreate => signin::router_create_key(&ctx, req).await,
        RouteId::AuthKeysList => signin::router_list_keys(&ctx, signin::query_map(&req)).await,
        RouteId::AuthKeysRevoke => signin::router_revoke_key(&ctx, req).await,
        RouteId::UsageWallet => signin::router_usage(&ctx, signin::query_map(&req)).await,
        RouteId::AdminGrant => admin::grant(&ctx, req).await,
        RouteId::AdminCreateKey => admin::create_key(&ctx, req).await,
        RouteId::AdminBalance => admin::balance(&ctx, &req).await,
        RouteId::LlmsTxt => Ok(discovery::serve(&ctx.state.docs.llms, req.headers())),
        RouteId::LlmsFull | RouteId::DocsMd => {
            Ok(discovery::serve(&ctx.state.docs.full, req.headers()))
        }
        RouteId::SkillMd => Ok(discovery::serve(&ctx.state.docs.skill, req.headers())),
        RouteId::OpenApi => Ok(discovery::serve(&ctx.state.docs.openapi, req.headers())),
        RouteId::DocsHtml => Ok(discovery::serve(&ctx.state.docs.html, req.headers())),
        RouteId::Assets => assets::get(&ctx.params, req.uri(), req.headers()),
        RouteId::MemorySearch => memory::search(&ctx, &req).await,
        RouteId::MemoryNamespaces => memory::namespaces(&ctx).await,
        RouteId::MemoryList => memory::list(&ctx, &req).await,
        RouteId::MemoryDelete => memory::delete(&ctx).await,
        RouteId::Embeddings => memory::embeddings(&ctx, req).await,
        RouteId::AgentOnboard => money::onboard(&ctx, req).await,
        RouteId::CreditsPurchase => money::purchase(&ctx, req).await,
        RouteId::Topup => money::topup(&ctx, req).await,
        RouteId::AgentRegister => agents::register(&ctx, req).await,
        RouteId::AgentBalance => agents::balance(&ctx).await,
        RouteId::AgentTransactions => agents::transactions(&ctx, &req).await,
        RouteId::AgentModels => Ok(models::list(&ctx.state)),
        RouteId::UsageSummary => console::summary(&ctx, &req),
        RouteId::AdminStats => console::ops::stats(&ctx),
        RouteId::AdminTopWallets => console::ops::top_wallets(&ctx, &req),
        RouteId::AdminConfig => console::ops::config(&ctx),
        RouteId::Console => Ok(console::page(&req)),
    }
}

/// Reads and parses a JSON body (capped), mapping syntax to 400 and shape to 422.
pub async fn json_body<T: serde::de::DeserializeOwned>(
    ctx: &Ctx,
    req: Request<ReqBody>,
) -> Result<T, Error> {
    let (parts, body) = req.into_parts();
    let bytes = crate::http::read_body(&parts.headers, body, ctx.state.config.body_limit).await?;
    parse_json(&bytes)
}

/// Parses a JSON body, mapping syntax to 400 `invalid_json` and shape to 422 `validation_error`.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| {
        if e.is_data() {
            crate::error::RequestError::validation("body", e.to_string()).into()
        } else {
            crate::error::RequestError::InvalidJson(e.to_string()).into()
        }
    })
}

/// The wallet the request is about must be the caller's own.
pub fn same_wallet(caller: &Principal, named: &str) -> Result<(), Error> {
    let named: crate::wallet::Wallet = named.parse().map_err(AuthError::InvalidWallet)?;
    if named == caller.wallet {
        Ok(())
    } else {
        Err(AuthError::WalletMismatch.into())
    }
}

/// Principal for a handler-verified SIWE caller.
pub fn siwe_principal(wallet: crate::wallet::Wallet) -> Principal {
    Principal {
        wallet,
        key_id: None,
        mode: AuthMode::Jwt,
    }
}

/// An error as an HTTP response (OpenAI body, `Retry-After` on 429, no SDK retries on 402).
pub fn error_response(e: &Error) -> Response<Body> {
    coded_response(e, e.code())
}

/// `error_response` for `route`: the LLM-for-Agents aliases use that document's code where it
/// has one for the same error (`describe::route_code`).
pub fn error_response_on(route: &Route, e: &Error) -> Response<Body> {
    coded_response(e, describe::route_code(route.id, e.code()))
}

fn coded_response(e: &Error, code: &'static str) -> Response<Body> {
    let mut body = e.body();
    body.error.code = code;
    let mut res = json(e.status(), &body);
    if let Some(secs) = e.retry_after()
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        res.headers_mut().insert(RETRY_AFTER, v);
    }
    if e.status() == StatusCode::PAYMENT_REQUIRED {
        res.headers_mut().insert(
            HeaderName::from_static("x-should-retry"),
            HeaderValue::from_static("false"),
        );
    }
    if e.status().is_server_error() {
        tracing::warn!(error = %e, code = e.code(), "request failed");
    }
    res
}
