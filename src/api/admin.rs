//! Operator endpoints (`X-Admin-Secret`): grant credits, create keys, read a balance. The
//! `vectorway admin` CLI calls these when a server owns the data directory.

use http::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json as j;

use super::num::Int;
use super::{Ctx, ReqBody};
use crate::auth::AuthError;
use crate::error::{Error, RequestError};
use crate::http::{Body, json, query_pairs, read_body};
use crate::storage::LedgerKind;
use crate::wallet::Wallet;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    wallet: String,
    credits: Int<u64>,
    #[serde(default)]
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    wallet: String,
    #[serde(default)]
    name: Option<String>,
}

fn wallet(s: &str) -> Result<Wallet, Error> {
    s.parse()
        .map_err(|e: String| AuthError::InvalidWallet(e).into())
}

async fn body<T: for<'de> Deserialize<'de>>(ctx: &Ctx, req: Request<ReqBody>) -> Result<T, Error> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts.headers, body, ctx.state.config.body_limit).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        if e.is_data() {
            RequestError::validation("body", e.to_string()).into()
        } else {
            RequestError::InvalidJson(e.to_string()).into()
        }
    })
}

/// `POST /admin/grant {"wallet","credits"}`: durable before the answer.
pub async fn grant(ctx: &Ctx, req: Request<ReqBody>) -> Result<Response<Body>, Error> {
    let b: GrantBody = body(ctx, req).await?;
    let w = wallet(&b.wallet)?;
    let credits = b.credits.0;
    let note = b.note.unwrap_or_else(|| "operator grant".into());
    // An agent account is pinned against the sweeper until the grant is in its ledger.
    let _pin = ctx.state.agents.pin_if_agent(w).await?;
    let balance = ctx
        .state
        .billing
        .credit(
            w,
            credits,
            LedgerKind::Grant,
            Some(ctx.request_id.clone()),
            Some(note),
        )
        .await?;
    ctx.state.agents.note_funded(&w).await?;
    Ok(json(
        StatusCode::OK,
        &j!({"wallet": w, "granted": credits, "credits": balance}),
    ))
}

/// `POST /admin/keys {"wallet","name"}`: the raw key is in this answer only.
pub async fn create_key(ctx: &Ctx, req: Request<ReqBody>) -> Result<Response<Body>, Error> {
    let b: KeyBody = body(ctx, req).await?;
    let w = wallet(&b.wallet)?;
    // A sweep running now cannot miss a key created for the agent account it deletes.
    let _pin = ctx.state.agents.pin_if_agent(w).await?;
    let (raw, rec) = ctx
        .state
        .keys
        .create(w, b.name.as_deref().unwrap_or("admin"))
        .await?;
    let mut res = json(
        StatusCode::CREATED,
        &j!({"api_key": raw, "key_id": rec.key_id, "wallet": w, "key_name": rec.key_name, "created_at": rec.created_at}),
    );
    res.extensions_mut()
        .insert(super::idempotency::Secrets(&["api_key"]));
    Ok(res)
}

/// `GET /admin/balance?wallet=0x…`
pub async fn balance(ctx: &Ctx, req: &Request<ReqBody>) -> Result<Response<Body>, Error> {
    let q = query_pairs(req.uri().query());
    let w = q
        .iter()
        .find(|(k, _)| k == "wallet")
        .map(|(_, v)| wallet(v))
        .ok_or_else(|| RequestError::validation("wallet", "wallet is required"))??;
    let b = ctx.state.billing.balance_now(&w).await?;
    Ok(json(
        StatusCode::OK,
        &j!({"wallet": w, "credits": b.balance, "held": b.held, "available": b.available}),
    ))
}
