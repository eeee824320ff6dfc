//! Liveness, readiness, status and Prometheus metrics.

use std::time::{Duration, Instant};

use http::{Response, StatusCode};
use serde_json::json as j;

use super::State;
use crate::http::{Body, bytes_response, json};

pub fn live() -> Response<Body> {
    json(StatusCode::OK, &j!({"status": "ok"}))
}

/// How long a probe result is reused.
const PROBE_TTL: Duration = Duration::from_secs(5);

/// The upstream's reachability, probed at most every few seconds.
async fn upstream_ok(state: &State) -> Result<(), String> {
    if let Some((at, result)) = state
        .probe
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        && at.elapsed() < PROBE_TTL
    {
        return result.clone();
    }
    let result = state.gemini.probe().await.map_err(|e| e.to_string());
    *state.probe.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), result.clone()));
    result
}

/// Ready when the store answers and the upstream is reachable.
pub async fn ready(state: &State) -> Response<Body> {
    let store = state.store.check().map_err(|e| e.to_string());
    let upstream = upstream_ok(state).await;
    let ok = store.is_ok() && upstream.is_ok();
    json(
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        &j!({"status": if ok { "ready" } else { "not_ready" },
             "store": store.err().unwrap_or_else(|| "ok".into()),
             "upstream": upstream.err().unwrap_or_else(|| "ok".into())}),
    )
}

pub fn status(state: &State) -> Response<Body> {
    let store = state.store.check();
    json(
        if store.is_ok() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        &j!({
            "status": if store.is_ok() { "ok" } else { "degraded" },
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": state.started.elapsed().as_secs(),
            "store": {"ok": store.is_ok()},
            "upstream": {"simulated": state.simulated},
        }),
    )
}

pub fn metrics(state: &State) -> Response<Body> {
    metrics::gauge!("vectorway_open_holds").set(state.billing.open_holds() as f64);
    metrics::gauge!("vectorway_credits_held_total").set(state.billing.total_held() as f64);
    bytes_response(
        StatusCode::OK,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
        state.metrics.render(),
    )
}
