//! x402 at the HTTP edge: 402 challenges, payment verification for a route, receipts, and the
//! change (paid − kept) credited back to the payer as a `refund` ledger entry.

use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};

use super::{State, error_response, settle};
use crate::billing::pricing::format_usd_micros;
use crate::crypto::to_checksum;
use crate::error::Error;
use crate::http::{Body, JSON, bytes_response};
use crate::payments::{PaymentError, Payments, Resource, Settlement, Verified};

/// The public URL of a route, for `resource` in requirements.
pub fn resource_url(state: &State, path: &str) -> String {
    match &state.config.public_base_url {
        Some(base) => format!("{base}{path}"),
        None => format!("http://{}{path}", state.config.auth.siwe_domain),
    }
}

/// A 402 asking for `quote` on `path`: the v1 JSON body and the v2 `PAYMENT-REQUIRED` header.
/// `reason` is why an earlier payment was refused.
pub fn challenge(
    state: &State,
    quote: u64,
    path: &str,
    description: &str,
    reason: Option<&PaymentError>,
) -> Response<Body> {
    let url = resource_url(state, path);
    match state.payments.challenge(
        quote,
        Resource {
            url: &url,
            description,
        },
        reason,
    ) {
        Ok(c) => {
            let mut res = bytes_response(StatusCode::PAYMENT_REQUIRED, JSON, c.body);
            let h = res.headers_mut();
            h.insert(HeaderName::from_static("payment-required"), c.header);
            h.insert(
                HeaderName::from_static("x-should-retry"),
                HeaderValue::from_static("false"),
            );
            res
        }
        Err(e) => error_response(&Error::from(e)),
    }
}

/// How a refused payment is answered: a payment that decodes but does not satisfy the
/// requirements gets a fresh 402 challenge naming the reason; anything else its own error.
pub fn refusal(
    state: &State,
    quote: u64,
    path: &str,
    description: &str,
    e: PaymentError,
) -> Response<Body> {
    if e.status() == 402 {
        challenge(state, quote, path, description, Some(&e))
    } else {
        error_response(&Error::from(e))
    }
}

/// True when the request carries an x402 payment header.
pub fn has_payment(headers: &HeaderMap) -> bool {
    headers.contains_key("payment-signature") || headers.contains_key("x-payment")
}

/// Decodes and verifies the request's payment for `quote`. `Ok(None)`: no payment header (the
/// caller answers with a challenge); `Err`: the finished refusal response.
pub async fn verify(
    state: &State,
    headers: &HeaderMap,
    quote: u64,
    path: &str,
    description: &str,
) -> Result<Option<Verified>, Response<Body>> {
    let decoded = match Payments::decode(headers) {
        Ok(Some(d)) => d,
        Ok(None) => return Ok(None),
        Err(e) => return Err(refusal(state, quote, path, description, e)),
    };
    match state
        .payments
        .verify(decoded, quote, &resource_url(state, path))
        .await
    {
        Ok(v) => {
            metrics::counter!("vectorway_x402_verified_total").increment(1);
            Ok(Some(v))
        }
        Err(e) => {
            metrics::counter!("vectorway_x402_refused_total", "code" => e.code()).increment(1);
            Err(refusal(state, quote, path, description, e))
        }
    }
}

/// The receipt header alone (`success:false` with the reason, on a refused settlement).
pub fn stamp_receipt(
    res: &mut Response<Body>,
    verified: &Verified,
    outcome: &Result<Settlement, PaymentError>,
) {
    if let Ok((name, value)) = verified.receipt_header(outcome) {
        res.headers_mut().insert(name, value);
    }
}

/// Stamps the receipt and payer headers on a paid answer.
pub fn stamp(
    res: &mut Response<Body>,
    verified: &Verified,
    outcome: &Result<Settlement, PaymentError>,
) {
    stamp_receipt(res, verified, outcome);
    let h = res.headers_mut();
    h.insert(
        HeaderName::from_static("x-payment-method"),
        HeaderValue::from_static("x402"),
    );
    if let Ok(v) = HeaderValue::from_str(&to_checksum(&verified.payer)) {
        h.insert(HeaderName::from_static("x-payer-address"), v);
    }
}

/// What a paid call keeps: its cost, floored at the minimum quote, never more than was paid.
pub fn kept(cost: u64, min_quote: u64, paid: u64) -> u64 {
    cost.max(min_quote).min(paid)
}

/// `usd_cost`: what was kept, as a dollar decimal.
pub fn usd(kept: u64) -> String {
    format_usd_micros(kept)
}

/// Waits for a settlement in the background and then credits the change: for calls that end
/// without waiting (a stream cut short, a client gone). It survives the request, and a crash
/// leaves the payment's intent for start-up to complete (`settle`).
pub fn credit_change_after<F>(state: Arc<State>, verified: Verified, settlement: F, kept: u64)
where
    F: std::future::Future<Output = Result<Settlement, PaymentError>> + Send + 'static,
{
    drop(settle::finish_call(state, verified, settlement, kept));
}
