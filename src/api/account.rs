//! The account plane for the caller's own wallet: profile, balance, ledger, usage, API keys.
//!
//! Every handler reads the wallet from the authenticated principal, never from the request, so
//! one wallet can never see another's data; a request that names another wallet is 403.

use std::collections::HashMap;

use http::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json as j};

use super::{Ctx, ReqBody, json_body, same_wallet};
use crate::auth::siwe::format_rfc3339;
use crate::billing::pricing::format_usd_micros;
use crate::crypto::to_checksum;
use crate::error::{Error, RequestError};
use crate::http::{Body, json, query_pairs};
use crate::storage::{LedgerKind, Store};

/// The query string's pairs (a repeated name keeps its last value).
pub(super) fn query(req: &Request<ReqBody>) -> HashMap<String, String> {
    query_pairs(req.uri().query()).into_iter().collect()
}

/// `limit`: 1–100, `default` when absent.
pub(super) fn limit(q: &HashMap<String, String>, default: usize) -> Result<usize, Error> {
    match q.get("limit") {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=100).contains(l))
            .ok_or_else(|| {
                RequestError::validation("limit", "limit must be an integer from 1 to 100").into()
            }),
    }
}

/// `limit` (1–100, default 50) and `cursor` (an offset) of a page.
fn page(q: &HashMap<String, String>) -> Result<(usize, usize), Error> {
    let limit = limit(q, 50)?;
    let cursor = match q.get("cursor").map(String::as_str) {
        None | Some("") => 0,
        Some(v) => v.parse::<usize>().map_err(|_| {
            RequestError::validation("cursor", "cursor must be a non-negative integer")
        })?,
    };
    Ok((limit, cursor))
}

/// Collects one page while counting every match: only the page's items are built.
struct Pager {
    limit: usize,
    cursor: usize,
    total: usize,
    events: Vec<Value>,
}

impl Pager {
    fn new(limit: usize, cursor: usize) -> Self {
        Self {
            limit,
            cursor,
            total: 0,
            events: Vec::with_capacity(limit),
        }
    }

    /// True when the next matching item falls on the page.
    fn wants_next(&self) -> bool {
        self.total >= self.cursor && self.events.len() < self.limit
    }

    /// Counts one matching item that is not on the page.
    fn skip(&mut self) {
        self.total += 1;
    }

    /// Counts one matching item; builds it only when it falls on the page.
    fn offer(&mut self, build: impl FnOnce() -> Value) {
        if self.total >= self.cursor && self.events.len() < self.limit {
            self.events.push(build());
        }
        self.total += 1;
    }

    /// True when the page is complete: with a known total nothing more needs reading.
    fn full(&self) -> bool {
        self.events.len() >= self.limit
    }

    /// The seeds' envelope with the total counted elsewhere (an unfiltered history's length),
    /// after reading only up to the end of the page.
    fn finish_counted(mut self, wallet: &str, total: u64) -> Value {
        self.total = usize::try_from(total).unwrap_or(usize::MAX).max(self.total);
        self.finish(wallet)
    }

    /// The seeds' envelope.
    fn finish(self, wallet: &str) -> Value {
        let has_more = self.cursor + self.events.len() < self.total;
        j!({"wallet_address": wallet, "events": self.events,
            "next_cursor": if has_more { Some(self.cursor + self.limit) } else { None },
            "has_more": has_more, "total": self.total})
    }
}

/// `GET /v1/me`
pub fn me(ctx: &Ctx) -> Result<Response<Body>, Error> {
    let p = ctx.caller()?;
    let b = ctx.state.billing.balance(&p.wallet);
    Ok(json(
        StatusCode::OK,
        &j!({"wallet_address": to_checksum(&p.wallet), "credits": b.balance, "created": false}),
    ))
}

/// `GET /v1/credits/me`: `credits` is the balance; `held` and `available` show open reservations.
pub fn credits_me(ctx: &Ctx) -> Result<Response<Body>, Error> {
    let p = ctx.caller()?;
    let b = ctx.state.billing.balance(&p.wallet);
    Ok(json(
        StatusCode::OK,
        &j!({"wallet_address": to_checksum(&p.wallet), "credits": b.balance, "held": b.held, "available": b.available}),
    ))
}

/// `GET /v1/credits/ledger?limit=&cursor=&kind=`
pub fn ledger(ctx: &Ctx, req: &Request<ReqBody>) -> Result<Response<Body>, Error> {
    let p = ctx.caller()?;
    let q = query(req);
    let (limit, cursor) = page(&q)?;
    let kind = match q.get("kind").map(|k| k.to_ascii_lowercase()) {
        None => None,
        Some(k) => Some(match k.as_str() {
            "topup" => LedgerKind::Topup,
            "debit" => LedgerKind::Debit,
            "refund" => LedgerKind::Refund,
            "grant" => LedgerKind::Grant,
            _ => {
                return Err(RequestError::validation(
                    "kind",
                    "kind must be topup, debit, refund or grant",
                )
                .into());
            }
        }),
    };
    let mut page = Pager::new(limit, cursor);
    let (entries, count) = ctx.state.store.ledger_counted(&p.wallet);
    // Unfiltered, a cursor at or past the end shows nothing: no walk.
    let past_end = kind.is_none() && cursor as u64 >= count;
    for e in entries.take(if past_end { 0 } else { usize::MAX }) {
        let e = e?;
        if kind.is_some_and(|k| k != e.kind) {
            continue;
        }
        page.offer(|| j!({"ts": format_rfc3339((e.ts_ms / 1000) as i64), "kind": e.kind, "credits": e.credits,
                       "usd": format_usd_micros(e.credits.unsigned_abs()), "ref": e.reference, "note": e.note,
                       "transaction": e.reference.as_deref().and_then(transaction_hash)}));
        if kind.is_none() && page.full() {
            break;
        }
    }
    let wallet = to_checksum(&p.wallet);
    Ok(json(
        StatusCode::OK,
        &match kind {
            None => page.finish_counted(&wallet, count),
            Some(_) => page.finish(&wallet),
        },
    ))
}

/// The transaction hash a ledger reference names, lower case: an x402 top-up or refund is
/// credited with its settlement's transaction as the reference (`x402:<intent id>` when only the
/// facilitator vouched for it, a request id for a debit: neither is a hash).
fn transaction_hash(reference: &str) -> Option<String> {
    let hex = reference.strip_prefix("0x")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| reference.to_ascii_lowercase())
}

/// `GET /v1/usage?limit=&cursor=&filter=all|errors|<exact path>`
pub fn usage(ctx: &Ctx, req: &Request<ReqBody>) -> Result<Response<Body>, Error> {
    let p = ctx.caller()?;
    let q = query(req);
    let (limit, cursor) = page(&q)?;
    let filter = q.get("filter").map(String::as_str).unwrap_or("all");
    if !(filter == "all" || filter == "errors" || filter.starts_with('/')) {
        return Err(RequestError::validation(
            "filter",
            "filter must be all, errors, or a path starting with /",
        )
        .into());
    }
    let mut page = Pager::new(limit, cursor);
    let (events, count) = ctx.state.store.usage_raw_counted(&p.wallet);
    let past_end = filter == "all" && cursor as u64 >= count;
    for raw in events.take(if past_end { 0 } else { usize::MAX }) {
        let raw = raw?;
        // Unfiltered, the history's length is known without reading it: the walk stops at the end
        // of the page, and events before the cursor are stepped over, never decoded.
        let ev = if filter == "all" && !page.wants_next() {
            page.skip();
            continue;
        } else {
            Store::decode_usage(&raw)?
        };
        let keep = match filter {
            "all" => true,
            "errors" => ev.status >= 400,
            path => ev.path == path,
        };
        if !keep {
            continue;
        }
        page.offer(|| j!({
            "ts": ev.ts_ms as f64 / 1000.0, "ts_iso": format_rfc3339((ev.ts_ms / 1000) as i64),
            "method": ev.method, "path": ev.path, "status": ev.status, "latency_ms": ev.latency_ms,
            "credits": ev.credits, "usd_cost": ev.usd_cost.clone().or_else(|| (ev.credits > 0).then(|| format_usd_micros(ev.credits))),
            "model": ev.model, "prompt_tokens": ev.prompt_tokens, "completion_tokens": ev.completion_tokens,
            "memory_read": ev.memory_read, "memory_write": ev.memory_write, "memories_used": ev.memories_used,
            "key_id": ev.key_id, "auth_mode": ev.auth_mode, "request_id": ev.request_id,
            "transaction": ev.transaction.as_deref().and_then(transaction_hash),
        }));
        if filter == "all" && page.full() {
            break;
        }
    }
    let wallet = to_checksum(&p.wallet);
    Ok(json(
        StatusCode::OK,
        &if filter == "all" {
            page.finish_counted(&wallet, count)
        } else {
            page.finish(&wallet)
        },
    ))
}

#[derive(Deserialize)]
struct CreateKeyBody {
    wallet_address: String,
    key_name: String,
}

fn metadata(k: &crate::storage::KeyRecord) -> Value {
    j!({"key_id": k.key_id, "key_name": k.key_name, "created_at": k.created_at, "last_used_at": k.last_used_at})
}

/// `POST /v1/api-keys {"wallet_address","key_name"}`: the raw key is in this answer only.
pub async fn create_key(ctx: &Ctx, req: Request<ReqBody>) -> Result<Response<Body>, Error> {
    let p = ctx.caller()?.clone();
    let b: CreateKeyBody = json_body(ctx, req).await?;
    same_wallet(&p, &b.wallet_address)?;
    if b.key_name.is_empty() || b.key_name.chars().count() > 128 {
        return Err(
            RequestError::validation("key_name", "key_name must be 1 to 128 characters").into(),
        );
    }
    let (raw, rec) = ctx.state.keys.create(p.wallet, &b.key_name).await?;
    let mut res = json(
        StatusCode::CREATED,
        &j!({"api_key": raw, "metadata": metadata(&rec)}),
    );
    res.extensions_mut()
        .insert(super::idempotency::Secrets(&["api_key"]));
    Ok(res)
}

/// `GET /v1/api-keys`: a bare array of the caller's active keys.
pub fn list_keys(ctx: &Ctx) -> Result<Response<Body>, Error> {
    let p = ctx.caller()?;
    let keys: Vec<Value> = ctx
        .state
        .keys
        .list(&p.wallet)
        .iter()
        .filter(|k| k.revoked_at.is_none())
        .map(metadata)
        .collect();
    Ok(json(StatusCode::OK, &keys))
}

/// `DELETE /v1/api-keys/{key_id}`: another wallet's key (or an unknown one) is 404.
pub async fn revoke_key(ctx: &Ctx) -> Result<Response<Body>, Error> {
    let p = ctx.caller()?;
    let key_id = ctx.params.first().map(String::as_str).unwrap_or_default();
    if ctx.state.keys.revoke(&p.wallet, key_id).await? {
        Ok(json(
            StatusCode::OK,
            &j!({"status": "revoked", "key_id": key_id}),
        ))
    } else {
        Err(RequestError::NotFound {
            method: "DELETE".into(),
            path: format!("/v1/api-keys/{key_id}"),
        }
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_whole_hash_is_a_transaction() {
        let h = format!("0x{}", "Ab".repeat(32));
        assert_eq!(transaction_hash(&h), Some(h.to_ascii_lowercase()));
        for not in [
            "x402:eip155:8453:0xabc",
            "req_123",
            &h[..65],
            &format!("{h}0"),
            &format!("0x{}", "zz".repeat(32)),
        ] {
            assert_eq!(transaction_hash(not), None, "{not}");
        }
    }

    #[test]
    fn pages_count_everything_but_build_only_the_page() {
        let mut built = 0;
        let mut page = Pager::new(2, 3);
        for i in 0..7 {
            page.offer(|| {
                built += 1;
                j!(i)
            });
        }
        assert_eq!(built, 2);
        let v = page.finish("w");
        assert_eq!(
            (
                v["events"].clone(),
                v["total"].clone(),
                v["has_more"].clone(),
                v["next_cursor"].clone()
            ),
            (j!([3, 4]), j!(7), j!(true), j!(5))
        );
        let mut last = Pager::new(5, 5);
        (0..7).for_each(|i| last.offer(|| j!(i)));
        let v = last.finish("w");
        assert_eq!(
            (
                v["events"].clone(),
                v["has_more"].clone(),
                v["next_cursor"].clone()
            ),
            (j!([5, 6]), j!(false), Value::Null)
        );
    }
}
