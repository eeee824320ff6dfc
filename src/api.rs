//! The product's HTTP surface: one route table, deny-by-default dispatch, one file per resource.
//!
//! `ROUTES` is the single declaration of what is served (method, path, who may call it, a summary);
//! `handle` matches a request against it, resolves the caller as the route's `Access` demands,
//! and calls the handler. Every response gets an `x-request-id`; every error is OpenAI-shaped.

pub mod admin;
pub mod chat;
pub mod credits;
pub mod health;
pub mod models;
pub mod types;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::{self, ApiKeys, AuthError, Principal};
use crate::billing::Billing;
use crate::config::Config;
use crate::error::{Error, RequestError};
use crate::http::{Body, json};
use crate::storage::Store;
use crate::upstream::Gemini;

/// Everything a handler may use; built by `app`.
pub struct State {
    pub config: Config,
    pub store: Store,
    pub billing: Arc<Billing>,
    pub keys: ApiKeys,
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

impl State {
    #[expect(clippy::too_many_arguments, reason = "wired once, in app.rs")]
    pub fn new(
        config: Config,
        store: Store,
        billing: Arc<Billing>,
        keys: ApiKeys,
        gemini: Gemini,
        metrics: PrometheusHandle,
        simulated: bool,
        admin_secret: String,
    ) -> Self {
        let mut salt = [0u8; 8];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt);
        Self {
            config,
            store,
            billing,
            keys,
            gemini,
            metrics,
            simulated,
            admin_secret,
            started: Instant::now(),
            request_seq: AtomicU64::new(0),
            request_salt: u64::from_le_bytes(salt),
            probe: std::sync::Mutex::new(None),
        }
    }

    fn next_request_id(&self) -> String {
        let n = self.request_seq.fetch_add(1, Ordering::Relaxed);
        format!("req_{:016x}{:08x}", self.request_salt, n)
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone.
    Public,
    /// A paying caller: an API key (x402 lands on the same routes later).
    Payer,
    /// An API key (runtime plane).
    ApiKey,
    /// The operator, with `X-Admin-Secret`.
    Admin,
}

/// Every served route. Dispatch, docs and tests all read this table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteId {
    Health,
    Healthz,
    Readyz,
    Status,
    Metrics,
    Models,
    Chat,
    CreditsMe,
    AdminGrant,
    AdminCreateKey,
    AdminBalance,
}

#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub id: RouteId,
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    /// Metric label and log name.
    pub name: &'static str,
    pub summary: &'static str,
}

pub const ROUTES: &[Route] = &[
    Route {
        id: RouteId::Health,
        method: "GET",
        path: "/health",
        access: Access::Public,
        name: "health",
        summary: "Liveness.",
    },
    Route {
        id: RouteId::Healthz,
        method: "GET",
        path: "/healthz",
        access: Access::Public,
        name: "healthz",
        summary: "Liveness (Kubernetes spelling).",
    },
    Route {
        id: RouteId::Readyz,
        method: "GET",
        path: "/readyz",
        access: Access::Public,
        name: "readyz",
        summary: "Readiness: store and upstream usable.",
    },
    Route {
        id: RouteId::Status,
        method: "GET",
        path: "/status",
        access: Access::Public,
        name: "status",
        summary: "Store and upstream status.",
    },
    Route {
        id: RouteId::Metrics,
        method: "GET",
        path: "/metrics",
        access: Access::Admin,
        name: "metrics",
        summary: "Prometheus metrics (operator: X-Admin-Secret or Bearer).",
    },
    Route {
        id: RouteId::Models,
        method: "GET",
        path: "/v1/models",
        access: Access::Public,
        name: "models",
        summary: "Models with per-1M-token prices.",
    },
    Route {
        id: RouteId::Chat,
        method: "POST",
        path: "/v1/chat/completions",
        access: Access::Payer,
        name: "chat",
        summary: "OpenAI-compatible chat completions, billed per token.",
    },
    Route {
        id: RouteId::CreditsMe,
        method: "GET",
        path: "/v1/credits/me",
        access: Access::ApiKey,
        name: "credits_me",
        summary: "The caller's credit balance.",
    },
    Route {
        id: RouteId::AdminGrant,
        method: "POST",
        path: "/admin/grant",
        access: Access::Admin,
        name: "admin_grant",
        summary: "Grant credits to a wallet (operator).",
    },
    Route {
        id: RouteId::AdminCreateKey,
        method: "POST",
        path: "/admin/keys",
        access: Access::Admin,
        name: "admin_keys",
        summary: "Create an API key for a wallet (operator).",
    },
    Route {
        id: RouteId::AdminBalance,
        method: "GET",
        path: "/admin/balance",
        access: Access::Admin,
        name: "admin_balance",
        summary: "A wallet's balance, held and available credits (operator).",
    },
];

/// Matches `path` against a pattern with `{param}` segments; returns the captured params.
pub fn match_path<'p>(pattern: &str, path: &'p str) -> Option<Vec<&'p str>> {
    let mut params = Vec::new();
    let mut pat = pattern.split('/');
    let mut got = path.split('/');
    loop {
        match (pat.next(), got.next()) {
            (None, None) => return Some(params),
            (Some(p), Some(g)) if p.starts_with('{') && p.ends_with('}') && !g.is_empty() => {
                params.push(g)
            }
            (Some(p), Some(g)) if p == g => {}
            _ => return None,
        }
    }
}

/// Finds the route for a request: `Ok((route, params))`, or 404 / 405.
pub fn find_route<'p>(
    method: &Method,
    path: &'p str,
) -> Result<(&'static Route, Vec<&'p str>), RequestError> {
    let mut path_matched = false;
    for route in ROUTES {
        if let Some(params) = match_path(route.path, path) {
            if route.method == method.as_str() {
                return Ok((route, params));
            }
            path_matched = true;
        }
    }
    let (method, path) = (method.to_string(), path.to_string());
    Err(if path_matched {
        RequestError::MethodNotAllowed { method, path }
    } else {
        RequestError::NotFound { method, path }
    })
}

/// Per-request facts handlers need besides the request itself.
pub struct Ctx {
    pub state: Arc<State>,
    pub request_id: String,
    pub started: Instant,
    pub principal: Option<Principal>,
    pub route: &'static Route,
}

/// The service function: route, authenticate, dispatch, stamp, measure.
pub async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
    _peer: SocketAddr,
) -> Response<Body> {
    let started = Instant::now();
    let request_id = state.next_request_id();
    let (route_name, mut res) = match find_route(req.method(), req.uri().path()) {
        Err(e) => ("unmatched", error_response(&Error::from(e))),
        Ok((route, params)) => {
            let params: Vec<String> = params.into_iter().map(str::to_string).collect();
            let res = match authorize(&state, route, req.headers()) {
                Err(e) => error_response(&e),
                Ok(principal) => {
                    let ctx = Ctx {
                        state: state.clone(),
                        request_id: request_id.clone(),
                        started,
                        principal,
                        route,
                    };
                    dispatch(ctx, req, params)
                        .await
                        .unwrap_or_else(|e| error_response(&e))
                }
            };
            (route.name, res)
        }
    };
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

fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Resolves the caller a route demands. Deny by default: only `Public` routes pass without one.
fn authorize(
    state: &State,
    route: &Route,
    headers: &http::HeaderMap,
) -> Result<Option<Principal>, Error> {
    match route.access {
        Access::Public => Ok(None),
        Access::Payer | Access::ApiKey => match auth::api_key_from(headers)? {
            Some(raw) => Ok(Some(state.keys.authenticate(raw)?)),
            None => Err(AuthError::MissingCredentials.into()),
        },
        Access::Admin => {
            let bearer = headers
                .get(http::header::AUTHORIZATION)
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

async fn dispatch(
    ctx: Ctx,
    req: Request<Incoming>,
    _params: Vec<String>,
) -> Result<Response<Body>, Error> {
    match ctx.route.id {
        RouteId::Health | RouteId::Healthz => Ok(health::live()),
        RouteId::Readyz => Ok(health::ready(&ctx.state).await),
        RouteId::Status => Ok(health::status(&ctx.state)),
        RouteId::Metrics => Ok(health::metrics(&ctx.state)),
        RouteId::Models => Ok(models::list(&ctx.state)),
        RouteId::Chat => chat::completions(ctx, req).await,
        RouteId::CreditsMe => credits::me(&ctx),
        RouteId::AdminGrant => admin::grant(&ctx, req).await,
        RouteId::AdminCreateKey => admin::create_key(&ctx, req).await,
        RouteId::AdminBalance => admin::balance(&ctx, &req),
    }
}

/// An error as an HTTP response (OpenAI body, `Retry-After` on 429, no SDK retries on 402).
pub fn error_response(e: &Error) -> Response<Body> {
    let mut res = json(e.status(), &e.body());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_is_exact_and_deny_by_default() {
        assert_eq!(
            find_route(&Method::GET, "/v1/models").unwrap().0.id,
            RouteId::Models
        );
        assert!(matches!(
            find_route(&Method::POST, "/v1/models"),
            Err(RequestError::MethodNotAllowed { .. })
        ));
        assert!(matches!(
            find_route(&Method::GET, "/v1/models/"),
            Err(RequestError::NotFound { .. })
        ));
        assert!(matches!(
            find_route(&Method::GET, "/v1/nope"),
            Err(RequestError::NotFound { .. })
        ));
        assert_eq!(
            match_path("/v1/api-keys/{id}", "/v1/api-keys/abc"),
            Some(vec!["abc"])
        );
        assert_eq!(match_path("/v1/api-keys/{id}", "/v1/api-keys/"), None);
        let public: Vec<_> = ROUTES
            .iter()
            .filter(|r| r.access == Access::Public)
            .map(|r| r.path)
            .collect();
        assert_eq!(
            public,
            ["/health", "/healthz", "/readyz", "/status", "/v1/models"]
        );
        let mut seen = std::collections::HashSet::new();
        assert!(
            ROUTES.iter().all(|r| seen.insert((r.method, r.path))),
            "no route is declared twice"
        );
    }
}
