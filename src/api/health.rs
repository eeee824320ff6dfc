//! Liveness, readiness, status and Prometheus metrics.

use http::{Response, StatusCode};
use serde_json::json as j;

use super::State;
use crate::http::{Body, bytes_response, json};

pub fn live() -> Response<Body> {
    json(StatusCode::OK, &j!({"status": "ok"}))
}

pub fn ready(state: &State) -> Response<Body> {
    match state.store.check() {
        Ok(()) => json(StatusCode::OK, &j!({"status": "ready"})),
        Err(e) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &j!({"status": "not_ready", "store": e.to_string()}),
        ),
    }
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
            "store": {"ok": store.is_ok(), "error": store.err().map(|e| e.to_string()), "data_dir": state.config.data_dir.display().to_string()},
            "upstream": {"base_url": state.gemini.base_url(), "simulated": state.simulated},
            "billing": {"open_holds": state.billing.open_holds(), "credits_held": state.billing.total_held()},
        }),
    )
}

pub fn metrics(state: &State) -> Response<Body> {
    metrics::gauge!("vectorway_open_holds").set(state.billing.open_holds() as f64);
    bytes_response(
        StatusCode::OK,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
        state.metrics.render(),
    )
}
