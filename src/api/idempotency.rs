//! `Idempotency-Key` on POSTs that create or move money: the same key and body replay the first
//! successful answer; the same key with another body is 409 `idempotency_conflict`, as is a key
//! whose first request is still running. Keys are scoped to the route and the caller.
//!
//! Only 2xx answers are stored: a refused request had no effect, so retrying it with the same key
//! runs it again. That is what x402 needs: the unpaid call is answered 402 with the price, and
//! the client repeats it, same key and body, with the payment; a stored 402 (or a 429, or a 404
//! "onboard first") would be replayed forever.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};

use super::{Ctx, ReqBody, dispatch, error_response};
use crate::error::{Error, RequestError};
use crate::http::{Body, JSON, bytes_response, read_body};
use crate::storage::{IdemBegin, IdemRecord, now_ms};

pub const HEADER: &str = "idempotency-key";

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
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
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts.headers, body, ctx.state.config.body_limit)
        .await
        .map_err(|e| fail(e.into()))?;
    let scope = match &ctx.principal {
        Some(p) => p.wallet.to_string(),
        None => "-".to_string(),
    };
    let slot = sha256(&[
        parts.method.as_str().as_bytes(),
        ctx.route.path.as_bytes(),
        scope.as_bytes(),
        b"\0",
        &key,
    ]);
    let body_hash = hex::encode(sha256(&[&bytes]));
    let store = ctx.state.store.clone();
    match store
        .idem_begin(&slot, &body_hash, now_ms() / 1000)
        .map_err(|e| fail(e.into()))?
    {
        IdemBegin::Replay(rec) => {
            let status = StatusCode::from_u16(rec.status).unwrap_or(StatusCode::OK);
            let mut res = bytes_response(status, JSON, rec.body);
            res.headers_mut().insert(
                HeaderName::from_static("idempotent-replayed"),
                HeaderValue::from_static("true"),
            );
            return Ok(res);
        }
        IdemBegin::Conflict => {
            return Err(fail(
                RequestError::IdempotencyConflict(
                    "this Idempotency-Key was used with a different body",
                )
                .into(),
            ));
        }
        IdemBegin::InProgress => {
            return Err(fail(
                RequestError::IdempotencyConflict(
                    "a request with this Idempotency-Key is still in progress",
                )
                .into(),
            ));
        }
        IdemBegin::Fresh => {}
    }
    let req = Request::from_parts(parts, Either::Right(Full::new(bytes)));
    let res = dispatch(ctx, req)
        .await
        .unwrap_or_else(|e| error_response(&e));
    let (head, body) = res.into_parts();
    let collected = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_else(|_| Bytes::new());
    let record = head.status.is_success().then(|| IdemRecord {
        body_sha256: body_hash,
        status: head.status.as_u16(),
        body: String::from_utf8_lossy(&collected).into_owned(),
        created_at: now_ms() / 1000,
    });
    let stored = store.idem_finish(&slot, record.as_ref());
    if let Err(e) = stored {
        tracing::error!(%e, "idempotency record not stored");
    } else if record.is_some() {
        let _ = store.flush().await;
    }
    let mut res = Response::from_parts(head, crate::http::full(collected));
    if !res.headers().contains_key(CONTENT_TYPE) {
        res.headers_mut().insert(CONTENT_TYPE, JSON);
    }
    Ok(res)
}
