//! The operator's console JSON (`X-Admin-Secret`): live counters, top wallets, the config in force.
//!
//! `/admin/stats` reads the same Prometheus recorder `/metrics` renders (request counters by
//! status class, the request-latency histogram, the in-flight stream gauge), so the panel and a
//! scraper never disagree; the console derives requests per second from two polls. The config
//! view is a whitelist: a field appears only when it is written here, and every secret is shown
//! as `"[redacted]"` (set) or `null` (unset), never its value.

use std::collections::{BTreeMap, HashMap};

use http::{Request, Response, StatusCode};
use serde_json::{Value, json as j};

use super::super::{Ctx, ReqBody};
use crate::config::{Config, EmbedderKind};
use crate::crypto::to_checksum;
use crate::error::Error;
use crate::http::{Body, json};
use crate::storage::now_ms;

/// Requests of these routes are left out of the live figures (the panel's own polling).
const UNCOUNTED: &[&str] = &["admin_stats", "admin_top_wallets"];

/// What `/admin/stats` reads from the rendered metrics.
#[derive(Debug, Default, PartialEq)]
pub struct Counters {
    /// Requests by status class ("2xx" …).
    pub by_class: BTreeMap<String, u64>,
    /// The request-latency histogram: upper bound (seconds) → cumulative count, summed over
    /// routes; `f64::INFINITY` is `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    pub latency_sum_s: f64,
    pub streams_in_flight: i64,
}

/// Splits `name{a="x",b="y"} value` into its name, labels and value.
fn sample(line: &str) -> Option<(&str, HashMap<&str, &str>, f64)> {
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        Some((n, rest)) => (n, rest.strip_suffix('}')?),
        None => (head, ""),
    };
    let labels = labels
        .split("\",")
        .filter_map(|kv| {
            let (k, v) = kv.split_once("=\"")?;
            Some((k, v.trim_end_matches('"')))
        })
        .collect();
    Some((name, labels, value))
}

/// Reads the console's counters from Prometheus text.
pub fn counters(text: &str) -> Counters {
    let mut c = Counters::default();
    let mut buckets: BTreeMap<u64, (f64, u64)> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, labels, value)) = sample(line) else {
            continue;
        };
        if labels.get("route").is_some_and(|r| UNCOUNTED.contains(r)) {
            continue;
        }
        match name {
            "vectorway_http_requests_total" => {
                if let Some(class) = labels.get("status") {
                    *c.by_class.entry((*class).to_string()).or_default() += value as u64;
                }
            }
            "vectorway_http_request_duration_seconds_bucket" => {
                let le = match labels.get("le") {
                    Some(&"+Inf") => f64::INFINITY,
                    Some(v) => v.parse().unwrap_or(f64::INFINITY),
                    None => continue,
                };
                // Bounds are ordered by their bits (all positive), summed across routes.
                let e = buckets.entry(le.to_bits()).or_insert((le, 0));
                e.1 += value as u64;
            }
            "vectorway_http_request_duration_seconds_sum" => c.latency_sum_s += value,
            "vectorway_streams_in_flight" => c.streams_in_flight = value as i64,
            _ => {}
        }
    }
    c.buckets = buckets.into_values().collect();
    c
}

/// The `q` quantile (0–1) of a cumulative histogram, interpolated within its bucket; `None`
/// without samples. A quantile in the `+Inf` bucket is the last finite bound.
pub fn quantile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let (mut lo, mut below) = (0.0, 0u64);
    for &(le, count) in buckets {
        if count as f64 >= rank {
            if le.is_infinite() {
                return Some(lo);
            }
            let inside = (count - below) as f64;
            let frac = if inside > 0.0 {
                (rank - below as f64) / inside
            } else {
                1.0
            };
            return Some(lo + (le - lo) * frac.clamp(0.0, 1.0));
        }
        (lo, below) = (le, count);
    }
    Some(lo)
}

/// `GET /admin/stats`: the live panel's figures.
pub fn stats(ctx: &Ctx) -> Result<Response<Body>, Error> {
    let s = &ctx.state;
    let c = counters(&s.metrics.render());
    let total: u64 = c.by_class.values().sum();
    let errors = c.by_class.get("5xx").copied().unwrap_or(0);
    let ms = |v: Option<f64>| v.map(|s| (s * 1e6).round() / 1e3);
    Ok(json(
        StatusCode::OK,
        &j!({
            "at_ms": now_ms(),
            "uptime_seconds": s.started.elapsed().as_secs(),
            "requests": {"total": total, "by_class": c.by_class, "server_errors": errors},
            "error_rate": if total == 0 { 0.0 } else { errors as f64 / total as f64 },
            "latency_ms": {"p50": ms(quantile(&c.buckets, 0.5)), "p99": ms(quantile(&c.buckets, 0.99)),
                           "sum": (c.latency_sum_s * 1e3).round()},
            "latency_buckets": c.buckets.iter().map(|(le, n)| j!({
                "le": if le.is_finite() { j!(le) } else { j!("+Inf") }, "count": n,
            })).collect::<Vec<_>>(),
            "streams_in_flight": c.streams_in_flight.max(0),
            "credits_held": s.billing.total_held(),
            "open_holds": s.billing.open_holds(),
            "effects_running": s.effects.running(),
            "wallets_with_history": s.store.rollup.wallets(),
        }),
    ))
}

/// `GET /admin/top-wallets?limit=`: the wallets that spent the most credits (all time), with
/// their balances and credits in by kind.
pub fn top_wallets(ctx: &Ctx, req: &Request<ReqBody>) -> Result<Response<Body>, Error> {
    let limit = crate::api::account::limit(&crate::api::account::query(req), 10)?;
    let s = &ctx.state;
    let wallets: Vec<Value> = s
        .store
        .rollup
        .top_wallets(limit)
        .into_iter()
        .map(|(w, t)| {
            let b = s.billing.balance(&w);
            j!({"wallet": to_checksum(&w), "spent": t.spend.credits, "calls": t.spend.calls,
                "errors": t.spend.errors, "prompt_tokens": t.spend.prompt_tokens,
                "completion_tokens": t.spend.completion_tokens, "topped_up": t.topped_up,
                "granted": t.granted, "refunded": t.refunded, "credits": b.balance,
                "held": b.held, "available": b.available, "last_ts_ms": t.last_ts_ms})
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &j!({"wallets": wallets, "credits_held": s.billing.total_held(),
             "tracked_wallets": s.store.rollup.wallets()}),
    ))
}

/// `"[redacted]"` for a secret that is set, `null` for one that is not.
fn secret(set: bool) -> Value {
    if set { j!("[redacted]") } else { Value::Null }
}

/// A URL's scheme, host and port: what may be shown of an address that can carry a token.
pub fn origin_of(url: &str) -> Option<String> {
    let u: http::Uri = url.parse().ok()?;
    let host = u.host()?;
    let scheme = u.scheme_str().unwrap_or("http");
    Some(match u.port_u16() {
        Some(p) => format!("{scheme}://{host}:{p}"),
        None => format!("{scheme}://{host}"),
    })
}

/// The config in force, secrets redacted (`GET /admin/config`).
pub fn view(c: &Config, simulated: bool) -> Value {
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    let x = &c.x402;
    let facilitator = match (&x.own, &x.facilitator_url) {
        (Some(_), _) => j!("self"),
        (None, Some(url)) => j!(origin_of(url)),
        (None, None) => j!("simulator"),
    };
    let networks: Vec<Value> = x.networks.iter().map(|n| j!({
        "name": &*n.name, "caip2": &*n.caip2, "chain_id": n.chain_id, "asset": to_checksum(&n.asset),
        "eip712_name": &*n.eip712_name, "eip712_version": &*n.eip712_version,
        "rpc_url": secret(n.rpc_url.is_some()),
    })).collect();
    j!({
        "server": {
            "listen": c.listen.to_string(), "tls": c.tls.is_some(),
            "header_read_timeout_ms": ms(c.header_read_timeout), "idle_timeout_ms": ms(c.idle_timeout),
            "body_limit_bytes": c.body_limit, "body_read_timeout_ms": ms(c.body_read_timeout),
            "body_idle_timeout_ms": ms(c.body_idle_timeout), "shutdown_grace_ms": ms(c.shutdown_grace),
            // Configured or generated at start-up: always set.
            "admin_secret": secret(true),
            "public_base_url": c.public_base_url.as_deref().and_then(origin_of),
        },
        "store": {"data_dir": c.data_dir.display().to_string(), "journal_interval_ms": ms(c.journal_interval)},
        "upstream": {
            "simulated": simulated,
            "base_url": c.upstream.base_url.as_deref().and_then(origin_of),
            "api_key": secret(c.upstream.api_key.is_some()),
            "connect_timeout_ms": ms(c.upstream.connect_timeout),
            "first_byte_timeout_ms": ms(c.upstream.first_byte_timeout),
            "idle_read_timeout_ms": ms(c.upstream.idle_read_timeout),
            "connections": c.upstream.connections,
            "ca_file": c.upstream.ca_file.as_ref().map(|p| p.display().to_string()),
        },
        "billing": {"default_max_tokens": c.default_max_tokens, "hold_max_age_ms": ms(c.hold_max_age)},
        "auth": {
            "siwe_domain": c.auth.siwe_domain, "chain_ids": c.auth.chain_ids,
            "jwt_secret": secret(c.auth.jwt_secret.is_some()),
            "access_ttl_s": c.auth.access_ttl.as_secs(), "refresh_ttl_s": c.auth.refresh_ttl.as_secs(),
            "nonce_ttl_s": c.auth.nonce_ttl.as_secs(), "max_nonces": c.auth.max_nonces,
            "signup_grant": c.auth.signup_grant,
        },
        "limits": {
            "runtime_per_min": c.limits.runtime_per_min, "control_per_min": c.limits.control_per_min,
            "ip_per_min": c.limits.ip_per_min, "ip_burst": c.limits.ip_burst,
            "max_tracked": c.limits.max_tracked,
        },
        "x402": {
            "networks": networks, "pay_to": to_checksum(&x.pay_to), "facilitator": facilitator,
            "settlement_key": secret(x.own.is_some()),
            "allow_simulated_facilitator_with_real_upstream": x.allow_simulated_facilitator_with_real_upstream,
            "min_quote": x.min_quote, "max_timeout_s": x.max_timeout_s,
            "verifier_threads": x.verifier_threads, "settle_concurrency": x.settle_concurrency,
            "settle_timeout_ms": ms(x.settle_timeout), "settle_retries": x.settle_retries,
            "settle_pending_wait_ms": ms(x.settle_pending_wait),
        },
        "memory": {
            "embedder": match c.memory.embedder { EmbedderKind::Gemini => "gemini", EmbedderKind::Local => "local", EmbedderKind::LocalModel => "local-model" },
            "embed_model": c.memory.embed_model, "dims": c.memory.dims,
            "exact_threshold": c.memory.exact_threshold, "score_floor": c.memory.score_floor,
            "max_records": c.memory.max_records,
        },
        "agents": {
            "deposit_deadline_s": c.agents.deposit_deadline.as_secs(),
            "sweep_interval_s": c.agents.sweep_interval.as_secs(),
            "max_unfunded": c.agents.max_unfunded, "register_per_min": c.agents.register_per_min,
        },
        "media": {
            "fetch": c.media.fetch, "allow_http": c.media.allow_http,
            "max_item_bytes": c.media.max_item_bytes, "max_total_bytes": c.media.max_total_bytes,
            "max_urls": c.media.max_urls, "connect_timeout_ms": ms(c.media.connect_timeout),
            "fetch_timeout_ms": ms(c.media.fetch_timeout), "max_redirects": c.media.max_redirects,
            "allow_hosts": c.media.policy.allow_hosts, "allow_ranges": c.media.policy.allow_ranges.len(),
        },
    })
}

/// `GET /admin/config`
pub fn config(ctx: &Ctx) -> Result<Response<Body>, Error> {
    Ok(json(
        StatusCode::OK,
        &view(&ctx.state.config, ctx.state.simulated),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_routes_and_skip_the_panels_own_polls() {
        let text = r#"# TYPE vectorway_http_requests_total counter
vectorway_http_requests_total{route="chat",status="2xx"} 8
vectorway_http_requests_total{route="me",status="2xx"} 2
vectorway_http_requests_total{route="chat",status="5xx"} 1
vectorway_http_requests_total{route="admin_stats",status="2xx"} 50
vectorway_http_request_duration_seconds_bucket{route="chat",le="0.01"} 4
vectorway_http_request_duration_seconds_bucket{route="chat",le="0.1"} 9
vectorway_http_request_duration_seconds_bucket{route="chat",le="+Inf"} 9
vectorway_http_request_duration_seconds_bucket{route="me",le="0.01"} 2
vectorway_http_request_duration_seconds_bucket{route="me",le="0.1"} 2
vectorway_http_request_duration_seconds_bucket{route="me",le="+Inf"} 2
vectorway_http_request_duration_seconds_sum{route="chat"} 0.5
vectorway_streams_in_flight 3
"#;
        let c = counters(text);
        assert_eq!(c.by_class["2xx"], 10);
        assert_eq!(c.by_class["5xx"], 1);
        assert_eq!(c.buckets, vec![(0.01, 6), (0.1, 11), (f64::INFINITY, 11)]);
        assert_eq!(c.streams_in_flight, 3);
        // 6 of 11 are under 10 ms: the median is just under it; p99 is in (0.01, 0.1].
        let p50 = quantile(&c.buckets, 0.5).unwrap();
        assert!(p50 > 0.0 && p50 <= 0.01, "{p50}");
        let p99 = quantile(&c.buckets, 0.99).unwrap();
        assert!(p99 > 0.01 && p99 <= 0.1, "{p99}");
        assert_eq!(quantile(&[(0.1, 0), (f64::INFINITY, 0)], 0.5), None);
        assert_eq!(quantile(&[(0.1, 0), (f64::INFINITY, 4)], 0.5), Some(0.1));
    }

    #[test]
    fn origins_drop_paths_queries_and_credentials() {
        assert_eq!(
            origin_of("https://user:tok@rpc.example:8545/v3/SECRET?key=SECRET").as_deref(),
            Some("https://rpc.example:8545")
        );
    }
}
