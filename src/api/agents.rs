//! The LLM-for-Agents surface: agent registration and the `/api/v1` balance, transactions and models aliases.
//!
//! `POST /api/v1/agents/register` creates an agent account (`crate::agents`): a derived account
//! id with an API key and no wallet, answered in that document's shape plus our own fields. The
//! aliases read the caller's own data, whoever the caller is (an agent's key, a wallet's key or
//! JWT): nothing here special-cases agents except the `agent` block that describes one.
//!
//! Ledger kinds map to the document's transaction types: `topup` → `deposit` (x402 money in),
//! `debit` → `charge` (chat, embeddings, memory searches and summaries), `grant` → `grant`
//! (operator), `refund` → `refund` (x402 change). `type` filters by either name.

use http::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json as j};

use super::idempotency::Secrets;
use super::{Ctx, ReqBody, json_body};
use crate::auth::siwe::format_rfc3339;
use crate::billing::pricing::format_usd_micros;
use crate::crypto::to_checksum;
use crate::error::{Error, RequestError};
use crate::http::{Body, json, query_pairs};
use crate::storage::agents::AgentRecord;
use crate::storage::{LedgerEntry, LedgerKind};

/// Longest agent name, in characters (the document's bound).
const MAX_NAME: usize = 100;

/// The document's anti-spam notice, with our deadline and funding route.
fn notice(minutes: u64) -> String {
    format!(
        "Anti-spam protection: this agent will be automatically deleted if no deposit is received \
         within {minutes} minutes. You can simply register a new agent if that happens. Once the \
         first deposit (any amount) is credited, the agent becomes permanent. This measure exists \
         solely to prevent malicious actors from generating agents indefinitely. Deposit with an \
         x402 payment from any wallet: POST /v1/topup {{\"amount\": <USD>, \"agent\": \"<uuid>\"}}."
    )
}

/// An instant as the document writes it: RFC 3339 UTC with milliseconds.
fn iso_ms(ms: u64) -> String {
    let secs = format_rfc3339(i64::try_from(ms / 1000).unwrap_or(i64::MAX));
    format!("{}.{:03}Z", secs.trim_end_matches('Z'), ms % 1000)
}

/// Whole minutes of the deposit window, rounded up.
fn window_minutes(ms: u64) -> u64 {
    ms.div_ceil(60_000)
}

#[derive(Deserialize)]
struct RegisterBody {
    name: String,
}

fn check_name(name: &str) -> Result<(), Error> {
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME || name.chars().any(char::is_control) {
        return Err(RequestError::validation(
            "name",
            format!("name must be 1 to {MAX_NAME} characters, none of them a control character"),
        )
        .into());
    }
    Ok(())
}

/// `POST /api/v1/agents/register {"name"}`: 201 with the agent and its key (shown once).
pub async fn register(ctx: &Ctx, req: Request<ReqBody>) -> Result<Response<Body>, Error> {
    let state = &ctx.state;
    // Every attempt counts, before the body is read (5 a minute per IP by default).
    if let Some(ip) = ctx.peer {
        state.limiter.check_register(ip)?;
    }
    let b: RegisterBody = json_body(ctx, req).await?;
    check_name(&b.name)?;
    let r = state.agents.register(&b.name, &state.keys).await?;
    let a = &r.agent;
    let window = a.deadline_ms.saturating_sub(a.created_ms);
    let body = j!({
        "uuid": a.uuid, "apiKey": r.api_key, "name": a.name,
        "createdAt": iso_ms(a.created_ms), "requestId": ctx.request_id,
        "depositDeadline": iso_ms(a.deadline_ms),
        "depositRequiredWithinMinutes": window_minutes(window),
        "notice": notice(window_minutes(window)),
        // Ours: the account id the rest of the API uses, the key's id, and how to fund it.
        "account": to_checksum(&a.account), "keyId": r.key.key_id,
        "depositDeadlineMs": a.deadline_ms,
        "funding": funding(a),
    });
    let mut res = json(StatusCode::CREATED, &body);
    res.extensions_mut().insert(Secrets(&["apiKey"]));
    Ok(res)
}

fn funding(a: &AgentRecord) -> Value {
    j!({"method": "POST", "path": "/v1/topup", "body": {"amount": 1, "agent": a.uuid},
        "payment": "x402 (PAYMENT-SIGNATURE or X-PAYMENT) from any wallet; the agent is credited, not the payer"})
}

async fn agent_view(ctx: &Ctx, a: &AgentRecord) -> Result<Value, Error> {
    let funded = a.funded_ms.is_some() || ctx.state.store.has_ledger(&a.account).await?;
    Ok(
        j!({"uuid": a.uuid, "name": a.name, "createdAt": iso_ms(a.created_ms),
        "permanent": funded,
        "depositDeadline": if funded { None } else { Some(iso_ms(a.deadline_ms)) },
        "funding": funding(a)}),
    )
}

/// `GET /api/v1/balance`: the caller's balance; `agent` describes an agent account (else null).
pub async fn balance(ctx: &Ctx) -> Result<Response<Body>, Error> {
    let p = ctx.caller()?;
    let b = ctx.state.billing.balance_now(&p.wallet).await?;
    let agent = match ctx.state.agents.get(&p.wallet).await? {
        Some(a) => Some(agent_view(ctx, &a).await?),
        None => None,
    };
    Ok(json(
        StatusCode::OK,
        &j!({
            "object": "balance", "account": to_checksum(&p.wallet), "currency": "USDC",
            "balance": format_usd_micros(b.balance), "available": format_usd_micros(b.available),
            "held": format_usd_micros(b.held),
            "credits": b.balance, "availableCredits": b.available, "heldCredits": b.held,
            "unit": "1 credit = 1 atomic USDC = $0.000001",
            "agent": agent,
        }),
    ))
}

/// The document's name for a ledger kind.
fn seed_type(kind: LedgerKind) -> &'static str {
    match kind {
        LedgerKind::Topup => "deposit",
        LedgerKind::Debit => "charge",
        LedgerKind::Grant => "grant",
        LedgerKind::Refund => "refund",
    }
}

fn parse_type(t: &str) -> Option<LedgerKind> {
    Some(match t.to_ascii_lowercase().as_str() {
        "deposit" | "topup" => LedgerKind::Topup,
        "charge" | "debit" => LedgerKind::Debit,
        "grant" => LedgerKind::Grant,
        "refund" => LedgerKind::Refund,
        _ => return None,
    })
}

fn transaction(e: &LedgerEntry) -> Value {
    let usd = format_usd_micros(e.credits.unsigned_abs());
    j!({"id": e.seq.to_string(), "type": seed_type(e.kind), "kind": e.kind,
        "amount": e.credits, "amountUsd": if e.credits < 0 { format!("-{usd}") } else { usd },
        "reference": e.reference, "note": e.note, "createdAt": iso_ms(e.ts_ms)})
}

/// `GET /api/v1/transactions?limit=&offset=&type=`: the caller's ledger, newest first.
pub async fn transactions(ctx: &Ctx, req: &Request<ReqBody>) -> Result<Response<Body>, Error> {
    let p = ctx.caller()?;
    let (mut limit, mut offset, mut kind) = (50usize, 0usize, None);
    for (k, v) in query_pairs(req.uri().query()) {
        match k.as_str() {
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|l| (1..=100).contains(l))
                    .ok_or_else(|| {
                        RequestError::validation("limit", "limit must be an integer from 1 to 100")
                    })?;
            }
            "offset" => {
                offset = v.parse().map_err(|_| {
                    RequestError::validation("offset", "offset must be a non-negative integer")
                })?;
            }
            "type" => {
                kind = Some(parse_type(&v).ok_or_else(|| {
                    RequestError::validation(
                        "type",
                        "type must be deposit, charge, grant or refund (or topup, debit)",
                    )
                })?);
            }
            _ => {}
        }
    }
    let found = ctx
        .state
        .store
        .ledger_page(&p.wallet, kind, offset, limit)
        .await?;
    let data: Vec<Value> = found.items.iter().map(transaction).collect();
    let total = usize::try_from(found.total).unwrap_or(usize::MAX);
    let has_more = offset.saturating_add(data.len()) < total;
    Ok(json(
        StatusCode::OK,
        &j!({"object": "list", "account": to_checksum(&p.wallet), "data": data,
             "total": total, "limit": limit, "offset": offset, "hasMore": has_more}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_names_and_types_read_as_the_document_writes_them() {
        assert_eq!(iso_ms(1_776_168_000_000), "2026-04-14T12:00:00.000Z");
        assert_eq!(iso_ms(1_776_168_000_042), "2026-04-14T12:00:00.042Z");
        assert_eq!(window_minutes(15 * 60_000), 15);
        assert_eq!(window_minutes(300), 1, "a test window rounds up");
        assert!(check_name("my-agent").is_ok());
        assert!(
            check_name(&"é".repeat(100)).is_ok(),
            "characters, not bytes"
        );
        assert!(check_name(" ").is_ok(), "the document's rule is the length");
        for bad in ["", "a\nb", "\u{85}", &"x".repeat(101)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for kind in [
            LedgerKind::Topup,
            LedgerKind::Debit,
            LedgerKind::Grant,
            LedgerKind::Refund,
        ] {
            assert_eq!(parse_type(seed_type(kind)), Some(kind));
        }
        assert_eq!(parse_type("TopUp"), Some(LedgerKind::Topup));
        assert_eq!(parse_type("gas_sponsored"), None);
        assert!(notice(15).contains("within 15 minutes"));
    }
}
