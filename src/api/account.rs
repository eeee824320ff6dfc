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
use crate::storage::LedgerKind;
use crate::storage::pages::UsageFilter;

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

/// The seeds' page envelope: `events` from `cursor`, and the filter's `total`.
fn envelope(
    wallet: &crate::wallet::Wallet,
    events: Vec<Value>,
    cursor: usize,
    limit: usize,
    total: u64,
) -> Value {
    let total = usize::try_from(total).unwrap_or(usize::MAX);
    let has_more = cursor.saturating_add(events.len()) < total;
    j!({"wallet_address": to_checksum(wallet), "events": events,
        "next_cursor": if has_more { Some(cursor + limit) } else { None },
        "has_more": has_more, "total": total})
}

/// `GET /v1/me`
pub async fn me(ctx: &Ctx) -> Result<Response<Body>, Error> {
    let p = ctx.caller()?;
    let b = ctx.state.billing.balance_now(&p.wallet).await?;
    Ok(json(
        StatusCode::OK,
        &j!({"wallet_address": to_checksum(&p.wallet), "credits": b.balance, "created": false}),
    ))
}

/// `GET /v1/credits/me`: `credits` is the balance; `held` and `available` show open reservations.
pub async fn credits_me(ctx: &Ctx) -> Result<Response<Body>, Error> {
    let p = ctx.caller()?;
    let b = ctx.state.billing.balance_now(&p.wallet).await?;
    Ok(json(
        StatusCode::OK,
        &j!({"wallet_address": to_checksum(&p.wallet), "credits": b.balance, "held": b.held, "available": b.available}),
    ))
}

/// `GET /v1/credits/ledger?limit=&cursor=&kind=`
pub async fn ledger(ctx: &Ctx, req: &Request<ReqBody>) -> Result<Response<Body>, Error> {
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
    let found = ctx
        .state
        .store
        .ledger_page(&p.wallet, kind, cursor, limit)
        .await?;
    let events = found.items.iter().map(|e| {
        j!({"ts": format_rfc3339((e.ts_ms / 1000) as i64), "kind": e.kind, "credits": e.credits,
            "usd": format_usd_micros(e.credits.unsigned_abs()), "ref": e.reference, "note": e.note,
            "transaction": e.reference.as_deref().and_then(transaction_hash)})
    });
    Ok(json(
        StatusCode::OK,
        &envelope(&p.wallet, events.collect(), cursor, limit, found.total),
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
pub async fn usage(ctx: &Ctx, req: &Request<ReqBody>) -> Result<Response<Body>, Error> {
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
    let filter = match filter {
        "all" => UsageFilter::All,
        "errors" => UsageFilter::Errors,
        path => UsageFilter::Path(path),
    };
    let found = ctx
        .state
        .store
        .usage_page(&p.wallet, filter, cursor, limit)
        .await?;
    let events = found.items.iter().map(|ev| {
        j!({
            "ts": ev.ts_ms as f64 / 1000.0, "ts_iso": format_rfc3339((ev.ts_ms / 1000) as i64),
            "method": ev.method, "path": ev.path, "status": ev.status, "latency_ms": ev.latency_ms,
            "credits": ev.credits, "usd_cost": ev.usd_cost.clone().or_else(|| (ev.credits > 0).then(|| format_usd_micros(ev.credits))),
            "model": ev.model, "prompt_tokens": ev.prompt_tokens, "completion_tokens": ev.completion_tokens,
            "memory_read": ev.memory_read, "memory_write": ev.memory_write, "memories_used": ev.memories_used,
            "key_id": ev.key_id, "auth_mode": ev.auth_mode, "request_id": ev.request_id,
            "transaction": ev.transaction.as_deref().and_then(transaction_hash),
        })
    });
    Ok(json(
        StatusCode::OK,
        &envelope(&p.wallet, events.collect(), cursor, limit, found.total),
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
    fn the_envelope_pages_by_offset_and_total() {
        let w = crate::wallet::Wallet([0x11; 20]);
        let v = envelope(&w, vec![j!(3), j!(4)], 3, 2, 7);
        assert_eq!(
            (
                v["events"].clone(),
                v["total"].clone(),
                v["has_more"].clone(),
                v["next_cursor"].clone()
            ),
            (j!([3, 4]), j!(7), j!(true), j!(5))
        );
        let v = envelope(&w, vec![j!(5), j!(6)], 5, 5, 7);
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
