//! Sign-in: SIWE challenge and verify, token refresh and revoke, and the agent-router surfaces
//! that authenticate with a SIWE message in the body or query (`/v1/auth/keys`, `/v1/usage/:wallet`).

use std::collections::HashMap;

use http::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json as j;

use super::num::Int;
use super::{Ctx, ReqBody, json_body, same_wallet, siwe_principal};
use crate::auth::{AuthError, SiweError};
use crate::crypto::to_checksum;
use crate::error::{Error, RequestError};
use crate::http::{Body, json, query_pairs};
use crate::ratelimit::RateClass;
use crate::storage::{LedgerKind, now_ms};
use crate::wallet::Wallet;

fn now_s() -> i64 {
    (now_ms() / 1000) as i64
}

fn parse_wallet(s: &str) -> Result<Wallet, Error> {
    s.parse()
        .map_err(|e: String| AuthError::InvalidWallet(e).into())
}

fn iso(secs: u64) -> String {
    crate::auth::siwe::format_rfc3339(secs as i64)
}

#[derive(Deserialize)]
struct ChallengeBody {
    wallet_address: String,
    #[serde(default)]
    chain_id: Option<Int<u64>>,
}

/// `POST /v1/auth/siwe/challenge`
pub async fn challenge(ctx: &Ctx, req: Request<ReqBody>) -> Result<Response<Body>, Error> {
    let b: ChallengeBody = json_body(ctx, req).await?;
    let wallet = parse_wallet(&b.wallet_address)?;
    ctx.state.limiter.check(wallet, RateClass::Control).await?;
    let c = ctx
        .state
        .siwe
        .issue(wallet, b.chain_id.map_or(1, |c| c.0), now_s())
        .await?;
    Ok(json(
        StatusCode::OK,
        &j!({"wallet_address": to_checksum(&wallet), "message": c.message, "nonce": c.nonce,
             "expires_in_seconds": ctx.state.config.auth.nonce_ttl.as_secs()}),
    ))
}

#[derive(Deserialize)]
struct VerifyBody {
    wallet_address: String,
    message: String,
    signature: String,
}

/// Verifies a signed message and checks it is for `wallet` (when the request names one).
async fn verify_siwe(
    ctx: &Ctx,
    message: &str,
    signature: &str,
    wallet: Option<&str>,
) -> Result<Wallet, Error> {
    let m = ctx.state.siwe.redeem(message, signature, now_s()).await?;
    if let Some(w) = wallet {
        let named = parse_wallet(w)?;
        if named != m.address {
            return Err(SiweError::WalletMismatch {
                message: to_checksum(&m.address),
                request: to_checksum(&named),
            }
            .into());
        }
    }
    ctx.state
        .limiter
        .check(m.address, RateClass::Control)
        .await?;
    Ok(m.address)
}

/// `POST /v1/auth/siwe/verify`: creates the account on first sign-in.
pub async fn verify(ctx: &Ctx, req: Request<ReqBody>) -> Result<Response<Body>, Error> {
    let b: VerifyBody = json_body(ctx, req).await?;
    let wallet = verify_siwe(ctx, &b.message, &b.signature, Some(&b.wallet_address)).await?;
    let state = &ctx.state;
    let (_, created) = state.store.ensure_account(&wallet, now_ms() / 1000).await?;
    let grant = state.config.auth.signup_grant;
    if created && grant > 0 {
        state
            .billing
            .credit(
                wallet,
                grant,
                LedgerKind::Grant,
                Some(ctx.request_id.clone()),
                Some("sign-up grant".into()),
            )
            .await?;
    }
    let tokens = state.sessions.issue(&wallet).await?;
    Ok(json(
        StatusCode::OK,
        &j!({"wallet_address": to_checksum(&wallet), "credits": state.billing.balance(&wallet).balance,
             "created": created, "tokens": tokens}),
    ))
}

#[derive(Deserialize)]
struct RefreshBody {
    refresh_token: String,
}

/// `POST /v1/auth/refresh`
pub async fn refresh(ctx: &Ctx, req: Request<ReqBody>) -> Result<Response<Body>, Error> {
    let b: RefreshBody = json_body(ctx, req).await?;
    let pair = ctx.state.sessions.refresh(&b.refresh_token).await?;
    Ok(json(StatusCode::OK, &pair))
}

/// `POST /v1/auth/revoke`
pub async fn revoke(ctx: &Ctx, req: Request<ReqBody>) -> Result<Response<Body>, Error> {
    let b: RefreshBody = json_body(ctx, req).await?;
    ctx.state.sessions.revoke(&b.refresh_token).await?;
    Ok(json(StatusCode::OK, &j!({"status": "revoked"})))
}

#[derive(Deserialize)]
struct RouterKeyBody {
    message: String,
    signature: String,
    #[serde(default)]
    label: Option<String>,
}

/// `POST /v1/auth/keys` (agent-router): SIWE in the body, the key shown once.
pub async fn router_create_key(ctx: &Ctx, req: Request<ReqBody>) -> Result<Response<Body>, Error> {
    let b: RouterKeyBody = json_body(ctx, req).await?;
    let wallet = verify_siwe(ctx, &b.message, &b.signature, None).await?;
    let label = b.label.unwrap_or_else(|| "default".into());
    if label.chars().count() > 128 {
        return Err(RequestError::validation("label", "at most 128 characters").into());
    }
    let (raw, rec) = ctx.state.keys.create(wallet, &label).await?;
    let mut res = json(
        StatusCode::CREATED,
        &j!({"id": rec.key_id, "key": raw, "label": rec.key_name, "created_at": iso(rec.created_at)}),
    );
    res.extensions_mut()
        .insert(super::idempotency::Secrets(&["key"]));
    Ok(res)
}

/// The query string's pairs (taken before any wait, so no borrow of the request is held).
pub fn query_map(req: &Request<ReqBody>) -> HashMap<String, String> {
    query_pairs(req.uri().query()).into_iter().collect()
}

async fn siwe_from_query(ctx: &Ctx, q: &HashMap<String, String>) -> Result<Wallet, Error> {
    match (q.get("message"), q.get("signature")) {
        (Some(m), Some(s)) => verify_siwe(ctx, m, s, None).await,
        _ => Err(AuthError::MissingCredentials.into()),
    }
}

/// `GET /v1/auth/keys?message=&signature=` (agent-router): every key, revoked ones with `revoked_at`.
pub async fn router_list_keys(
    ctx: &Ctx,
    query: HashMap<String, String>,
) -> Result<Response<Body>, Error> {
    let wallet = siwe_from_query(ctx, &query).await?;
    let data: Vec<_> = ctx
        .state
        .keys
        .list(&wallet)
        .into_iter()
        .map(|k| {
            j!({"id": k.key_id, "label": k.key_name, "created_at": iso(k.created_at),
                "last_used_at": k.last_used_at.map(iso), "revoked_at": k.revoked_at.map(iso)})
        })
        .collect();
    Ok(json(StatusCode::OK, &j!({ "data": data })))
}

/// `DELETE /v1/auth/keys/{key_id}` (agent-router): SIWE in the body.
pub async fn router_revoke_key(ctx: &Ctx, req: Request<ReqBody>) -> Result<Response<Body>, Error> {
    let b: RouterKeyBody = json_body(ctx, req).await?;
    let wallet = verify_siwe(ctx, &b.message, &b.signature, None).await?;
    let key_id = ctx.params.first().map(String::as_str).unwrap_or_default();
    if ctx.state.keys.revoke(&wallet, key_id).await? {
        Ok(json(StatusCode::OK, &j!({"revoked": true})))
    } else {
        Err(RequestError::NotFound {
            method: "DELETE".into(),
            path: format!("/v1/auth/keys/{key_id}"),
        }
        .into())
    }
}

/// `GET /v1/usage/{wallet}` (agent-router): balance, held credits, per-key totals.
pub async fn router_usage(
    ctx: &Ctx,
    query: HashMap<String, String>,
) -> Result<Response<Body>, Error> {
    let caller = match &ctx.principal {
        Some(p) => p.clone(),
        None => siwe_principal(siwe_from_query(ctx, &query).await?),
    };
    let named = ctx.params.first().map(String::as_str).unwrap_or_default();
    same_wallet(&caller, named)?;
    let wallet = caller.wallet;
    let b = ctx.state.billing.balance_now(&wallet).await?;
    let mut keys = Vec::new();
    for k in ctx.state.keys.list(&wallet) {
        let t = ctx.state.store.key_totals(&wallet, &k.key_id).await?;
        keys.push(
            j!({"api_key_id": k.key_id, "label": k.key_name, "request_count": t.requests,
            "total_prompt_tokens": t.prompt_tokens, "total_completion_tokens": t.completion_tokens,
            "total_charged_usdc": t.credits}),
        );
    }
    Ok(json(
        StatusCode::OK,
        &j!({"wallet": to_checksum(&wallet), "balance_usdc": b.balance, "locked_usdc": b.held,
             "available_usdc": b.available, "keys": keys}),
    ))
}
