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

/// Ready when the store answers, the upstream is reachable, and a remote facilitator's
/// `/supported` was read and covers the configured networks (`payments::supported`).
pub async fn ready(state: &State) -> Response<Body> {
    let store = state.store.check().await.map_err(|e| e.to_string());
    let upstream = upstream_ok(state).await;
    let facilitator = state
        .payments
        .facilitator()
        .remote()
        .and_then(|c| c.readiness.not_ready());
    let settlement = settlement_ok(state).await;
    let ok = store.is_ok() && upstream.is_ok() && facilitator.is_none() && settlement.is_ok();
    json(
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        &j!({"status": if ok { "ready" } else { "not_ready" },
             "store": store.err().unwrap_or_else(|| "ok".into()),
             "upstream": upstream.err().unwrap_or_else(|| "ok".into()),
             "facilitator": facilitator.unwrap_or_else(|| "ok".into()),
             "settlement": settlement.err().unwrap_or_else(|| "ok".into())}),
    )
}

/// With `x402.facilitator = "self"`: the settlement account holds gas on every network (an
/// empty one is an operator error: every payment would be refused).
async fn settlement_ok(state: &State) -> Result<(), String> {
    let Some(own) = state.payments.facilitator().own() else {
        return Ok(());
    };
    for net in &state.config.x402.networks {
        match own.gas_balance(net).await {
            Ok(0) => {
                return Err(format!(
                    "the settlement account {} has no gas on {}: fund it",
                    crate::crypto::to_checksum(&own.account()),
                    net.name
                ));
            }
            Ok(_) => {}
            Err(e) => return Err(format!("{}: the chain cannot be read: {e}", net.name)),
        }
    }
    Ok(())
}

/// Which facilitator settles x402 payments: the built-in simulator, or a remote one named by its
/// host (never the whole URL, which may carry a token).
fn facilitator(state: &State) -> serde_json::Value {
    let x = &state.config.x402;
    let real_upstream = state.config.upstream.api_key.is_some();
    if let Some(own) = state.payments.facilitator().own() {
        // Our own facilitator: the account is public, its key never shown.
        return j!({
            "simulated": false,
            "self": true,
            "settlement_account": crate::crypto::to_checksum(&own.account()),
            "free_credits_buy_real_calls": false,
        });
    }
    match &x.facilitator_url {
        None => j!({
            "simulated": true,
            "host": null,
            // Only with the opt-in can a simulated facilitator stand beside a real Gemini key.
            "free_credits_buy_real_calls": real_upstream,
            "allow_simulated_facilitator_with_real_upstream":
                x.allow_simulated_facilitator_with_real_upstream,
        }),
        Some(url) => {
            let host = url.parse::<http::Uri>().ok().and_then(|u| {
                let host = u.host()?.to_string();
                Some(match u.port_u16() {
                    Some(p) => format!("{host}:{p}"),
                    None => host,
                })
            });
            j!({
                "simulated": false,
                "host": host,
                "free_credits_buy_real_calls": false,
                "allow_simulated_facilitator_with_real_upstream":
                    x.allow_simulated_facilitator_with_real_upstream,
            })
        }
    }
}

pub async fn status(state: &State) -> Response<Body> {
    let store = state.store.check().await;
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
            "x402": {"facilitator": facilitator(state), "settlements": settlements(state).await},
        }),
    )
}

/// Settlement intents still open (waiting for recovery) and those the operator must resolve
/// by hand, payers refused streams, and side effects still running.
async fn settlements(state: &State) -> serde_json::Value {
    let intents = state.store.intents().await.unwrap_or_default();
    let unresolved = intents
        .iter()
        .filter(|i| {
            matches!(
                i.state,
                crate::storage::intents::IntentState::Unresolved { .. }
            )
        })
        .count();
    j!({
        "open_intents": intents.len(), "unresolved_intents": unresolved,
        "blocked_payers": state.settler.blocked_count(), "effects_running": state.effects.running(),
    })
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
