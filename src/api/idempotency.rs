//! `Idempotency-Key` on POSTs that create or move money: the same key and body replay the first
//! successful answer; the same key with another body is 409 `idempotency_conflict`, as is a key
//! whose first request is still running.
//!
//! Scope: a key belongs to the route and to whoever proved who they are: the authenticated
//! wallet, or, on x402 routes that have no other credentials, the payment itself (a hash of the
//! payment header: only its holder can replay the answer it bought), or the operator on admin
//! routes. A request with none of these (an unpaid x402 call, a SIWE body) is not idempotent at
//! all: it runs as if it had no key. Secrets are never stored: a handler names the fields of its
//! answer that are shown once (`Secrets`), and a replay carries `null` there, the list of
//! redacted fields in `redacted`, and an `idempotent-redacted` header. Stored answers expire
//! after `TTL_S`; a claim whose request is still running is forgotten after `CLAIM_TTL_S` or
//! at the next start.
//!
//! The claim and the first request run as one effect (`crate::effects`): a client that
//! disconnects does not stop it, and its answer is stored (or its claim released) all the same.
//!
//! Only 2xx answers are stored: a refused request had no effect, so retrying it with the same key
//! runs it again. That is what x402 needs: the unpaid call is answered 402 with the price, and
//! the client repeats it, same key and body, with the payment; a stored 402 (or a 429, or a 404
//! "onboard first") would be replayed forever.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};

use super::{Access, Ctx, ReqBody, State, dispatch, error_response, pay};
use crate::error::{Error, RequestError};
use crate::http::{Body, JSON, bytes_response, read_body};
use crate::storage::{IdemBegin, IdemRecord, now_ms};

pub const HEADER: &str = "idempotency-key";
/// How long a stored answer is replayed (seconds).
pub const TTL_S: u64 = 24 * 3600;
/// How long a claim may stay in progress before it is forgotten (seconds).
pub const CLAIM_TTL_S: u64 = 15 * 60;
/// How often the store is swept of expired records (seconds).
const SWEEP_EVERY_S: u64 = 600;

/// The top-level fields of an answer that are shown once and never replayed.
#[derive(Debug, Clone, Copy)]
pub struct Secrets(pub &'static [&'static str]);

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Stored answers created before this (Unix seconds) have expired.
pub fn expired_before() -> u64 {
    (now_ms() / 1000).saturating_sub(TTL_S)
}

/// Forgets expired answers and abandoned claims, at most once per `SWEEP_EVERY_S`.
pub async fn sweep(state: &State) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = now_ms() / 1000;
    let last = LAST.load(Ordering::Relaxed);
    if now < last + SWEEP_EVERY_S
        || LAST
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    match state
        .store
        .idem_sweep(expired_before(), now.saturating_sub(CLAIM_TTL_S))
        .await
    {
        Ok(n) if n > 0 => tracing::debug!(removed = n, "idempotency records expired"),
        Ok(_) => {}
        Err(e) => tracing::warn!(%e, "idempotency sweep failed"),
    }
}

/// Whose key this is, or `None` when the caller proved nothing (then the key is ignored).
fn scope(ctx: &Ctx, headers: &http::HeaderMap) -> Option<Vec<u8>> {
    if let Some(p) = &ctx.principal {
        return Some(format!("wallet:{}", p.wallet).into_bytes());
    }
    match ctx.route.access {
        // `authorize` let the request through only with the operator's secret.
        Access::Admin => Some(b"admin".to_vec()),
        _ if pay::has_payment(headers) => {
            let mut h = Vec::new();
            for name in ["payment-signature", "x-payment"] {
                if let Some(v) = headers.get(name) {
                    h.extend_from_slice(name.as_bytes());
                    h.push(0);
                    h.extend_from_slice(v.as_bytes());
                    h.push(0);
                }
            }
            let mut out = b"payment:".to_vec();
            out.extend_from_slice(&sha256(&[&h]));
            Some(out)
        }
        _ => None,
    }
}

/// Runs an idempotent request.
pub async fn run(ctx: Ctx, req: Request<ReqBody>) -> Response<Body> {
    match guarded(ctx, req).await {
        Ok(res) | Err(res) => res,
    }
}

async fn guarded(ctx: Ctx, req: Request<ReqBody>) -> Result<Response<Body>, Response<Body>> {
    let fail = |e: Error| error_response(&e);
    let key = req
        .headers()
        .get(HEADER)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default()
        .to_vec();
    if key.is_empty() || key.len() > 255 || !key.iter().all(|b| b.is_ascii_graphic()) {
        return Err(fail(
            RequestError::validation("Idempotency-Key", "1 to 255 visible ASCII characters").into(),
        ));
    }
    let Some(scope) = scope(&ctx, req.headers()) else {
        return Ok(dispatch(ctx, req)
            .await
            .unwrap_or_else(|e| error_response(&e)));
    };
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts.headers, body, ctx.state.config.body_limit)
        .await
        .map_err(|e| fail(e.into()))?;
    let slot = sha256(&[
        parts.method.as_str().as_bytes(),
        ctx.route.path.as_bytes(),
        &scope,
        b"\0",
        &key,
    ]);
    let body_hash = hex::encode(sha256(&[&bytes]));
    let store = ctx.state.store.clone();
    // The claim, the request and the record of its answer are one effect: a client that goes
    // away leaves neither a half-done request nor a claim that answers 409 until it expires (a
    // claim written by the database while the client left during the round trip included).
    let effects = ctx.state.effects.clone();
    let req = Request::from_parts(parts, Either::Right(Full::new(bytes)));
    let first = async move {
        let now = now_ms() / 1000;
        let begun = store
            .idem_begin(
                &slot,
                &body_hash,
                now,
                expired_before(),
                now.saturating_sub(CLAIM_TTL_S),
            )
            .await;
        let conflict = |why| error_response(&RequestError::IdempotencyConflict(why).into());
        match begun {
            Err(e) => return error_response(&e.into()),
            Ok(IdemBegin::Replay(rec)) => return replay(rec),
            Ok(IdemBegin::Conflict) => {
                return conflict("this Idempotency-Key was used with a different body");
            }
            Ok(IdemBegin::InProgress) => {
                return conflict("a request with this Idempotency-Key is still in progress");
            }
            Ok(IdemBegin::Fresh) => {}
        }
        let res = dispatch(ctx, req)
            .await
            .unwrap_or_else(|e| error_response(&e));
        let (head, body) = res.into_parts();
        let collected = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_else(|_| Bytes::new());
        let secrets = head.extensions.get::<Secrets>().copied();
        let record = head.status.is_success().then(|| IdemRecord {
            body_sha256: body_hash,
            status: head.status.as_u16(),
            body: redact(&collected, secrets),
            created_at: now_ms() / 1000,
        });
        match store.idem_finish(&slot, record.as_ref()).await {
            Err(e) => tracing::error!(%e, "idempotency record not stored"),
            Ok(()) if record.is_some() => {
                if let Err(e) = store.flush().await {
                    tracing::error!(%e, "idempotency record not flushed");
                }
            }
            Ok(()) => {}
        }
        let mut res = Response::from_parts(head, crate::http::full(collected));
        if !res.headers().contains_key(CONTENT_TYPE) {
            res.headers_mut().insert(CONTENT_TYPE, JSON);
        }
        res
    };
    effects
        .spawn("idempotent request", first)
        .await
        .map_err(|e| fail(crate::payments::PaymentError::Internal(e.to_string()).into()))
}

/// The stored form of an answer: the secret fields replaced by `null` and listed in `redacted`.
fn redact(body: &[u8], secrets: Option<Secrets>) -> String {
    let Some(Secrets(fields)) = secrets else {
        return String::from_utf8_lossy(body).into_owned();
    };
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(mut map)) => {
            let mut redacted = Vec::new();
            for f in fields {
                if let Some(v) = map.get_mut(*f) {
                    *v = serde_json::Value::Null;
                    redacted.push(serde_json::Value::from(*f));
                }
            }
            map.insert("redacted".into(), serde_json::Value::Array(redacted));
            serde_json::Value::Object(map).to_string()
        }
        // A secret-bearing answer we cannot parse is not stored with its secrets.
        _ => r#"{"redacted":["*"]}"#.to_string(),
    }
}

fn replay(rec: IdemRecord) -> Response<Body> {
    let status = StatusCode::from_u16(rec.status).unwrap_or(StatusCode::OK);
    let redacted = serde_json::from_str::<serde_json::Value>(&rec.body)
        .ok()
        .and_then(|v| v.get("redacted").cloned())
        .and_then(|v| v.as_array().cloned())
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect::<Vec<_>>()
                .join(", ")
        });
    let mut res = bytes_response(status, JSON, rec.body);
    let h = res.headers_mut();
    h.insert(
        HeaderName::from_static("idempotent-replayed"),
        HeaderValue::from_static("true"),
    );
    if let Some(v) = redacted.and_then(|r| HeaderValue::from_str(&r).ok()) {
        h.insert(HeaderName::from_static("idempotent-redacted"), v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_replaced_and_listed() {
        let body = br#"{"api_key":"vw_abc_secret","tokens":{"access_token":"x"},"credits":5}"#;
        let out: serde_json::Value =
            serde_json::from_str(&redact(body, Some(Secrets(&["api_key", "tokens"])))).unwrap();
        assert_eq!(out["api_key"], serde_json::Value::Null);
        assert_eq!(out["tokens"], serde_json::Value::Null);
        assert_eq!(out["credits"], 5);
        assert_eq!(out["redacted"], serde_json::json!(["api_key", "tokens"]));
        assert!(!out.to_string().contains("secret"));
    }

    #[test]
    fn an_unparsable_secret_answer_is_not_stored() {
        let out = redact(b"vw_abc_secret", Some(Secrets(&["api_key"])));
        assert!(!out.contains("secret"));
    }

    #[test]
    fn answers_without_secrets_are_stored_as_they_are() {
        assert_eq!(redact(br#"{"a":1}"#, None), r#"{"a":1}"#);
    }
}
