//! Money in over x402: agent onboarding, credit purchases and the agent-router top-up.
//!
//! Each is one paid call: no payment header → 402 with the price; a verified payment is settled
//! (awaited: credits are only granted for money that moved), then the credits are written and
//! fsynced, and only then is the answer sent, with the receipt header. Settlement and credit run
//! through `settle::money_in`: a durable intent first, then one effect that the client's
//! disconnect cannot stop and whose crash start-up completes.
//!
//! A purchase or a top-up may name an agent account (`"agent"`: its UUID or account id, from
//! `POST /api/v1/agents/register`) instead of the payer's own: any payer can fund it, and the
//! payer's wallet gets nothing. The agent must exist before the payment is verified and is
//! pinned against the sweeper before it is settled (`crate::agents`); one swept meanwhile is a
//! 404 `agent_not_found` with the payment's nonce given back, so nothing moves.

use http::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json as j;

use super::idempotency::Secrets;
use super::num::Int;
use super::{Ctx, ReqBody, parse_json, pay, settle};
use crate::auth::{AuthError, SiweError};
use crate::billing::pricing::{format_usd_micros, parse_usd_micros};
use crate::crypto::to_checksum;
use crate::error::{Error, RequestError};
use crate::http::{Body, json, read_body};
use crate::payments::{Payments, Settlement, Verified};
use crate::ratelimit::RateClass;
use crate::storage::{LedgerKind, now_ms};
use crate::wallet::Wallet;

/// Onboarding and purchases move between $0.50 and $1000 of credits.
const MIN_CREDITS: u64 = 500_000;
const MAX_CREDITS: u64 = 1_000_000_000;

fn wallet(s: &str) -> Result<Wallet, Error> {
    s.parse()
        .map_err(|e: String| AuthError::InvalidWallet(e).into())
}

fn credits_in_range(credits: u64) -> Result<(), Error> {
    if (MIN_CREDITS..=MAX_CREDITS).contains(&credits) {
        Ok(())
    } else {
        Err(RequestError::validation(
            "credits",
            format!("credits must be between {MIN_CREDITS} and {MAX_CREDITS}"),
        )
        .into())
    }
}

/// A wallet named in the body must be the one that signs the payment. Checked on the decoded
/// (not yet verified) payload so a mismatch burns nothing; the verified payer is checked again.
fn payer_must_be(headers: &http::HeaderMap, named: &Wallet) -> Result<(), Error> {
    if let Ok(Some(decoded)) = Payments::decode(headers)
        && decoded.authorization.from != *named
    {
        let from = decoded.authorization.from;
        return Err(SiweError::WalletMismatch {
            message: to_checksum(&from),
            request: to_checksum(named),
        }
        .into());
    }
    Ok(())
}

/// The agent account a body names (`"agent"`: UUID or account id), which must exist.
async fn named_agent(ctx: &Ctx, agent: Option<&str>) -> Result<Option<Wallet>, Error> {
    let Some(s) = agent else {
        return Ok(None);
    };
    let account = crate::agents::parse_ref(s).ok_or_else(|| {
        RequestError::validation("agent", "agent is the UUID or account id (0x…) of an agent")
    })?;
    match ctx.state.agents.get(&account).await? {
        Some(_) => Ok(Some(account)),
        None => Err(crate::agents::AgentError::NotFound(s.to_string()).into()),
    }
}

/// Verifies, settles and credits one payment, to the payer or to the agent account `to`;
/// `Err` is the finished refusal.
async fn take_payment(
    ctx: &Ctx,
    headers: &http::HeaderMap,
    quote: u64,
    path: &str,
    description: &str,
    note: &str,
    to: Option<Wallet>,
) -> Result<(Verified, Settlement, u64), Response<Body>> {
    let state = &ctx.state;
    let verified = match pay::verify(state, headers, quote, path, description).await {
        Ok(Some(v)) => v,
        Ok(None) => return Err(pay::challenge(state, quote, path, description, None)),
        Err(refused) => return Err(refused),
    };
    if let Err(e) = state
        .limiter
        .check(verified.payer, RateClass::Control)
        .await
    {
        // Nothing was settled: the same payment may be sent again once the limit allows.
        state.payments.release_nonce(&verified).await;
        return Err(super::error_response(&e.into()));
    }
    // An agent swept since the body was read: refused before anything is settled.
    let pin = match to {
        None => None,
        Some(account) => match state.agents.pin(account).await {
            Ok(pin) => Some(pin),
            Err(e) => {
                state.payments.release_nonce(&verified).await;
                return Err(super::error_response(&e.into()));
            }
        },
    };
    // Intent, settlement and credit run as one effect: a client that disconnects now changes
    // nothing, and a crash leaves an intent that start-up completes (`settle`).
    match settle::money_in(
        state,
        &verified,
        LedgerKind::Topup,
        format!("{note} · {}", ctx.request_id),
        pin,
    )
    .await
    {
        Ok((settlement, balance)) => Ok((verified, settlement, balance)),
        Err(e) => {
            let failed = Err(e.clone());
            let mut res = pay::refusal(state, quote, path, description, e);
            pay::stamp_receipt(&mut res, &verified, &failed);
            Err(res)
        }
    }
}

fn paid_response(
    status: StatusCode,
    body: &serde_json::Value,
    v: &Verified,
    s: Settlement,
) -> Response<Body> {
    let mut res = json(status, body);
    pay::stamp(&mut res, v, &Ok(s));
    res
}

#[derive(Deserialize)]
struct OnboardBody {
    wallet_address: String,
    credits: Int<u64>,
    #[serde(default)]
    key_name: Option<String>,
}

/// `POST /v1/auth/agent-onboard`: account + credits + JWT pair + API key, in one paid call.
pub async fn onboard(ctx: &Ctx, req: Request<ReqBody>) -> Result<Response<Body>, Error> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts.headers, body, ctx.state.config.body_limit).await?;
    let b: OnboardBody = parse_json(&bytes)?;
    let named = wallet(&b.wallet_address)?;
    credits_in_range(b.credits.0)?;
    let key_name = b.key_name.unwrap_or_else(|| "agent".into());
    if key_name.is_empty() || key_name.chars().count() > 128 {
        return Err(
            RequestError::validation("key_name", "key_name must be 1 to 128 characters").into(),
        );
    }
    payer_must_be(&parts.headers, &named)?;
    let existed = ctx.state.store.account(&named).await?.is_some();
    let path = "/v1/auth/agent-onboard";
    let (v, s, balance) = match take_payment(
        ctx,
        &parts.headers,
        b.credits.0,
        path,
        "vectorway agent onboarding: credits, session and API key",
        "x402 agent-onboard",
        None,
    )
    .await
    {
        Ok(t) => t,
        Err(res) => return Ok(res),
    };
    let state = &ctx.state;
    state
        .store
        .ensure_account(&v.payer, now_ms() / 1000)
        .await?;
    let created = !existed;
    let tokens = state.sessions.issue(&v.payer).await?;
    let (raw, rec) = state.keys.create(v.payer, &key_name).await?;
    let body = j!({
        "wallet_address": to_checksum(&v.payer), "credits": balance, "created": created, "agent_only": true,
        "tokens": tokens, "api_key": raw,
        "api_key_metadata": {"key_id": rec.key_id, "key_name": rec.key_name, "created_at": rec.created_at, "last_used_at": null},
    });
    let mut res = paid_response(StatusCode::OK, &body, &v, s);
    res.extensions_mut().insert(Secrets(&["tokens", "api_key"]));
    Ok(res)
}

#[derive(Deserialize)]
struct PurchaseBody {
    #[serde(default)]
    wallet_address: Option<String>,
    #[serde(default)]
    agent: Option<String>,
    credits: Int<u64>,
}

/// `POST /v1/credits/purchase`: the wallet must have an account and be the payer; or `agent`
/// names an agent account that any payer funds.
pub async fn purchase(ctx: &Ctx, req: Request<ReqBody>) -> Result<Response<Body>, Error> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts.headers, body, ctx.state.config.body_limit).await?;
    let b: PurchaseBody = parse_json(&bytes)?;
    let wallet_address = match (b.wallet_address, b.agent.as_deref()) {
        (Some(w), None) => w,
        (None, Some(_)) => {
            credits_in_range(b.credits.0)?;
            let to = named_agent(ctx, b.agent.as_deref()).await?;
            let (v, s, balance) = match take_payment(
                ctx,
                &parts.headers,
                b.credits.0,
                "/v1/credits/purchase",
                "vectorway credits for an agent account",
                "x402 credits purchase for an agent",
                to,
            )
            .await
            {
                Ok(t) => t,
                Err(res) => return Ok(res),
            };
            let body = agent_funded(ctx, to, &v, balance).await;
            return Ok(paid_response(StatusCode::OK, &body, &v, s));
        }
        _ => {
            return Err(RequestError::validation(
                "wallet_address",
                "name exactly one of wallet_address and agent",
            )
            .into());
        }
    };
    let named = wallet(&wallet_address)?;
    credits_in_range(b.credits.0)?;
    if ctx.state.store.account(&named).await?.is_none() {
        return Err(RequestError::NotFound {
            method: "POST".into(),
            path: format!(
                "account {}; onboard first (/v1/auth/agent-onboard)",
                to_checksum(&named)
            ),
        }
        .into());
    }
    payer_must_be(&parts.headers, &named)?;
    let path = "/v1/credits/purchase";
    let (v, s, balance) = match take_payment(
        ctx,
        &parts.headers,
        b.credits.0,
        path,
        "vectorway credits",
        "x402 credits purchase",
        None,
    )
    .await
    {
        Ok(t) => t,
        Err(res) => return Ok(res),
    };
    let body = j!({"wallet_address": to_checksum(&v.payer), "credits": balance, "created": false});
    Ok(paid_response(StatusCode::OK, &body, &v, s))
}

#[derive(Deserialize)]
struct TopupBody {
    amount: serde_json::Number,
    #[serde(default)]
    agent: Option<String>,
}

/// `POST /v1/topup {"amount": dollars, "agent"?}` (agent-router): unpaid → 402 with
/// requirements for that amount; paid → the payer's wallet, or the agent account named, is
/// credited.
pub async fn topup(ctx: &Ctx, req: Request<ReqBody>) -> Result<Response<Body>, Error> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts.headers, body, ctx.state.config.body_limit).await?;
    let b: TopupBody = parse_json(&bytes)?;
    let micros = parse_usd_micros(&b.amount.to_string())
        .filter(|m| (1_000_000..=MAX_CREDITS).contains(m))
        .ok_or_else(|| {
            RequestError::validation("amount", "amount is USD from 1 to 1000, at most 6 decimals")
        })?;
    let to = named_agent(ctx, b.agent.as_deref()).await?;
    let path = "/v1/topup";
    let (v, s, balance) = match take_payment(
        ctx,
        &parts.headers,
        micros,
        path,
        &format!("vectorway top-up of ${}", format_usd_micros(micros)),
        "x402 topup",
        to,
    )
    .await
    {
        Ok(t) => t,
        Err(res) => return Ok(res),
    };
    let body = match to {
        None => {
            j!({"wallet": to_checksum(&v.payer), "balance_usdc": balance, "credited_usdc": v.amount})
        }
        Some(_) => agent_funded(ctx, to, &v, balance).await,
    };
    Ok(paid_response(StatusCode::OK, &body, &v, s))
}

/// The answer to money in for an agent account: whose account, who paid, what it holds now.
async fn agent_funded(
    ctx: &Ctx,
    to: Option<Wallet>,
    v: &Verified,
    balance: u64,
) -> serde_json::Value {
    let account = to.unwrap_or(v.payer);
    let uuid = ctx
        .state
        .agents
        .get(&account)
        .await
        .ok()
        .flatten()
        .map(|a| a.uuid);
    let who = to_checksum(&account);
    j!({"wallet": who, "wallet_address": who, "agent": uuid, "payer": to_checksum(&v.payer),
        "credits": balance, "created": false, "balance_usdc": balance, "credited_usdc": v.amount,
        "permanent": true})
}
