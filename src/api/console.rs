//! The web console's routes: its page (`/console`) and the caller's spend summary.
//!
//! The summary reads the caller's own wallet from the principal (another wallet named in the
//! query is 403, as on every account route) and answers from `console::rollup`, never from a
//! walk of the history log. The operator's JSON lives in `console/ops.rs`.

pub mod ops;

use std::collections::HashMap;
use std::sync::LazyLock;

use http::header::{CACHE_CONTROL, ETAG, HeaderValue, IF_NONE_MATCH};
use http::{Request, Response, StatusCode};
use serde_json::{Value, json as j};

use super::{Ctx, ReqBody, same_wallet};
use crate::console::rollup::{Bucket, HOUR_MS, HOUR_RETENTION, MAX_BUCKETS, Series};
use crate::crypto::to_checksum;
use crate::error::{Error, RequestError};
use crate::http::{Body, bytes_response, empty, json};
use crate::storage::now_ms;

/// The latest `to` the summary takes (2100-01-01, in Unix seconds).
pub const MAX_TO_S: u64 = 4_102_444_800;

/// The console page with its asset links filled in, and its ETag.
static PAGE: LazyLock<(String, String)> = LazyLock::new(|| {
    let html = crate::console::assets::render(super::assets::url);
    let digest = ring::digest::digest(&ring::digest::SHA256, html.as_bytes());
    let tag = format!("\"{}\"", &hex::encode(digest.as_ref())[..20]);
    (html, tag)
});

/// `GET /console`: the single-page app, with the CSP and security headers of every page.
pub fn page(req: &Request<ReqBody>) -> Response<Body> {
    let (html, tag) = &*PAGE;
    let mut res = if req
        .headers()
        .get(IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == tag.as_bytes())
    {
        let mut r = Response::new(empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        bytes_response(
            StatusCode::OK,
            HeaderValue::from_static("text/html; charset=utf-8"),
            html.clone(),
        )
    };
    let h = res.headers_mut();
    super::assets::harden(h);
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(tag) {
        h.insert(ETAG, v);
    }
    res
}

/// An unsigned integer query parameter within `lo..=hi`.
fn uint(
    q: &HashMap<String, String>,
    name: &'static str,
    lo: u64,
    hi: u64,
) -> Result<Option<u64>, Error> {
    match q.get(name) {
        None => Ok(None),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| (lo..=hi).contains(n))
            .map(Some)
            .ok_or_else(|| {
                RequestError::validation(
                    name,
                    format!("{name} must be an integer from {lo} to {hi}"),
                )
                .into()
            }),
    }
}

/// `GET /v1/usage/summary?bucket=hour|day&buckets=&to=&wallet=`: the caller's metered calls
/// (credits, calls, errors, tokens) per bucket, in total, by model and by API key. The range is
/// the `buckets` buckets ending with the one holding `to` (Unix seconds, default now).
pub fn summary(ctx: &Ctx, req: &Request<ReqBody>) -> Result<Response<Body>, Error> {
    let p = ctx.caller()?;
    let q = super::account::query(req);
    if let Some(w) = q.get("wallet") {
        same_wallet(p, w)?;
    }
    let bucket = match q.get("bucket").map(String::as_str) {
        None | Some("hour") => Bucket::Hour,
        Some("day") => Bucket::Day,
        Some(_) => {
            return Err(RequestError::validation("bucket", "bucket must be hour or day").into());
        }
    };
    let default_n = if bucket == Bucket::Hour { 24 } else { 30 };
    let n = uint(&q, "buckets", 1, MAX_BUCKETS)?.unwrap_or(default_n);
    let to_ms = uint(&q, "to", 0, MAX_TO_S)?.map_or_else(now_ms, |s| s * 1000);
    let width = bucket.ms();
    let last = to_ms / width;
    let first = last.saturating_sub(n - 1);
    let s = ctx
        .state
        .store
        .rollup
        .summary(&p.wallet, bucket, first * width, (last + 1) * width);
    let names: HashMap<String, String> = ctx
        .state
        .keys
        .list(&p.wallet)
        .into_iter()
        .map(|k| (k.key_id, k.key_name))
        .collect();
    let series = |v: &[Series], key: &str| -> Vec<Value> {
        v.iter()
            .map(|s| {
                let mut o =
                    j!({key: s.name, "total": s.total, "credits": s.credits, "calls": s.calls});
                if key == "key_id" {
                    o["key_name"] = j!(s.name.as_ref().and_then(|n| names.get(n)));
                }
                o
            })
            .collect()
    };
    // Hour buckets older than this are not kept (their days are): an hourly chart starts here.
    let hourly_from = (now_ms() / HOUR_MS).saturating_sub(HOUR_RETENTION) * HOUR_MS / 1000;
    Ok(json(
        StatusCode::OK,
        &j!({
            "wallet_address": to_checksum(&p.wallet),
            "bucket": if bucket == Bucket::Hour { "hour" } else { "day" },
            "bucket_seconds": width / 1000,
            "from": first * width / 1000, "to": (last + 1) * width / 1000,
            "hourly_from": hourly_from,
            "starts": s.starts.iter().map(|ms| ms / 1000).collect::<Vec<_>>(),
            "buckets": s.buckets, "total": s.total,
            "by_model": series(&s.by_model, "model"), "by_key": series(&s.by_key, "key_id"),
        }),
    ))
}
