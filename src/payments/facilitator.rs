//! The facilitator client: `POST /verify`, `POST /settle`, `GET /supported` with bounded concurrency and retries.
//!
//! Rules (reference §3.1 and the conformance pitfalls of §7.1):
//! - At most `settle_concurrency` calls are in flight (a semaphore permit per attempt, released
//!   during back-off).
//! - Each attempt has its own timeout (`settle_timeout`), covering the headers and the body.
//! - Transport errors, timeouts and 5xx answers are retried `settle_retries` times with
//!   exponential back-off (100 ms, 200 ms, 400 ms, …). Nothing else is retried: a
//!   `success:false` or `isValid:false` is an answer, not a fault.
//! - A retried `/settle` that is refused after an earlier attempt may have reached the
//!   facilitator proves nothing: the earlier attempt may have settled (the nonce is then used,
//!   and a resent transfer reverts with `transaction_failed`). That is `SettlementUnknown`, looked
//!   up on the chain or with the facilitator (`reconcile`), never a refusal.
//! - `settlement_pending` (a transaction was broadcast, its receipt has not come) is
//!   `SettlementUnknown` with that transaction, whatever the attempt.
//! - A call none of whose attempts could connect is `FacilitatorUnreachable`: the request never
//!   arrived, so nothing was settled. Any other failure may have had its effect.
//! - Paid means HTTP 2xx, a JSON body with `success: true` and a non-empty `transaction`. A
//!   `success:false` (at any status) is `SettlementRefused` with its `errorReason`; HTML,
//!   truncated JSON, a missing `success`, or a 5xx that outlives the retries is `Facilitator`
//!   (not paid).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full, Limited};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

use super::PaymentError;
use super::types::{FacilitatorRequest, SettleResponse, SupportedResponse, VerifyResponse};
use crate::upstream::client::HttpClient;

/// The largest facilitator answer read.
const MAX_BODY: usize = 64 << 10;
/// The first back-off; it doubles at each retry, up to `MAX_BACKOFF`.
const BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// An HTTP facilitator (the built-in simulator, x402.org, CDP, x402-rs, …).
pub struct FacilitatorClient {
    http: HttpClient,
    base: String,
    permits: Arc<Semaphore>,
    timeout: Duration,
    retries: u32,
    /// Whether `/supported` was read and covers the configured networks (`supported`).
    pub readiness: super::supported::Readiness,
}

impl std::fmt::Debug for FacilitatorClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FacilitatorClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// How one attempt ended.
enum Attempt {
    /// A status and a body: the facilitator answered.
    Answered(u16, Bytes),
    /// No usable answer (timeout, broken body) from a request that may have arrived: worth
    /// retrying, but the call may have had its effect.
    Transport(String),
    /// No connection was made, so the request never arrived: worth retrying.
    Unreached(String),
}

impl FacilitatorClient {
    /// `base` is the URL the three endpoints hang off (no trailing slash needed).
    pub fn new(
        http: HttpClient,
        base: &str,
        concurrency: usize,
        timeout: Duration,
        retries: u32,
    ) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            timeout,
            retries,
            readiness: super::supported::Readiness::default(),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The facilitator's host and port, for messages (the URL's path or query may carry a token).
    pub fn base_host(&self) -> &str {
        host_of(&self.base)
    }

    /// Asks the facilitator whether a payment is valid (balance and nonce included).
    pub async fn verify(&self, req: &FacilitatorRequest) -> Result<VerifyResponse, PaymentError> {
        let body = serde_json::to_vec(req).map_err(|e| PaymentError::Internal(e.to_string()))?;
        let (status, bytes, _) = self.call(Method::POST, "verify", Some(body)).await?;
        let parsed: Option<VerifyResponse> = serde_json::from_slice(&bytes).ok();
        match parsed {
            Some(v) if (200..300).contains(&status) || !v.is_valid => Ok(v),
            _ => Err(PaymentError::Facilitator(format!(
                "/verify answered {status} without a verify response"
            ))),
        }
    }

    /// Settles a payment. `Ok` only for `success: true` with a transaction hash.
    pub async fn settle(&self, req: &FacilitatorRequest) -> Result<SettleResponse, PaymentError> {
        let body = serde_json::to_vec(req).map_err(|e| PaymentError::Internal(e.to_string()))?;
        let (status, bytes, reached_before) = self.call(Method::POST, "settle", Some(body)).await?;
        let parsed: Option<SettleResponse> = serde_json::from_slice(&bytes).ok();
        match parsed {
            Some(s) if !s.success && s.error_reason.as_deref() == Some("settlement_pending") => {
                Err(PaymentError::SettlementUnknown {
                    detail: "the facilitator broadcast the transfer and awaits its receipt \
                             (settlement_pending)"
                        .into(),
                    transaction: Some(s.transaction).filter(|t| !t.is_empty()),
                })
            }
            // A retry's refusal may be about its own earlier attempt, which timed out after the
            // facilitator had settled (the nonce is used; a resent transfer reverts): unknown.
            Some(s) if !s.success && reached_before => Err(PaymentError::SettlementUnknown {
                detail: format!(
                    "a retry was refused ({}) after an earlier attempt may have settled",
                    s.error_reason.as_deref().unwrap_or("no reason")
                ),
                transaction: None,
            }),
            Some(s) if !s.success => Err(PaymentError::SettlementRefused {
                reason: s
                    .error_reason
                    .unwrap_or_else(|| "unexpected_settle_error".into()),
                message: s.error_message,
            }),
            Some(s) if (200..300).contains(&status) && !s.transaction.is_empty() => Ok(s),
            Some(_) if (200..300).contains(&status) => Err(PaymentError::Facilitator(
                "/settle reported success without a transaction".into(),
            )),
            _ => Err(PaymentError::Facilitator(format!(
                "/settle answered {status} without a settle response"
            ))),
        }
    }

    /// The payment kinds the facilitator supports.
    pub async fn supported(&self) -> Result<SupportedResponse, PaymentError> {
        let (status, bytes, _) = self.call(Method::GET, "supported", None).await?;
        if !(200..300).contains(&status) {
            return Err(PaymentError::Facilitator(format!(
                "/supported answered {status}"
            )));
        }
        parse(&bytes, "/supported")
    }

    /// Sends one request with retries; the final answer is any status below 500, with whether
    /// an earlier attempt may have reached the facilitator.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes, bool), PaymentError> {
        let url = format!("{}/{path}", self.base);
        // Errors name the host and endpoint only: they reach clients and logs, and the
        // configured URL's path or query may carry a token.
        let shown = format!("{}/{path}", self.base_host());
        let body = Bytes::from(body.unwrap_or_default());
        let mut last = String::new();
        // Whether any attempt may have reached the facilitator (so a settlement may have run).
        let mut reached = false;
        for attempt in 0..=self.retries {
            if attempt > 0 {
                let backoff = BACKOFF.saturating_mul(2u32.saturating_pow(attempt - 1));
                tokio::time::sleep(backoff.min(MAX_BACKOFF)).await;
                metrics::counter!("vectorway_x402_facilitator_retries_total", "endpoint" => endpoint_label(path))
                    .increment(1);
            }
            let outcome = {
                let _permit = self
                    .permits
                    .acquire()
                    .await
                    .map_err(|_| PaymentError::Unavailable)?;
                self.attempt(method.clone(), &url, body.clone()).await?
            };
            match outcome {
                Attempt::Answered(status, bytes) if status < 500 => {
                    return Ok((status, bytes, reached));
                }
                Attempt::Answered(status, _) => {
                    reached = true;
                    last = format!("{shown} answered {status}");
                }
                Attempt::Transport(e) => {
                    reached = true;
                    last = format!("{shown}: {e}");
                }
                Attempt::Unreached(e) => last = format!("{shown}: {e}"),
            }
            tracing::warn!(attempt, error = %last, "facilitator call failed");
        }
        Err(if reached {
            PaymentError::Facilitator(last)
        } else {
            PaymentError::FacilitatorUnreachable(last)
        })
    }

    /// One attempt under the per-attempt timeout.
    async fn attempt(
        &self,
        method: Method,
        url: &str,
        body: Bytes,
    ) -> Result<Attempt, PaymentError> {
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(url)
            .header(header::ACCEPT, "application/json");
        if method == Method::POST {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let req = builder
            .body(Full::new(body))
            .map_err(|e| PaymentError::Internal(format!("facilitator request: {e}")))?;
        let exchange = async {
            let res = match self.http.request(req).await {
                Ok(res) => res,
                Err(e) if e.is_connect() => {
                    return Attempt::Unreached(format!("could not connect: {}", error_chain(&e)));
                }
                Err(e) => return Attempt::Transport(format!("request failed: {e}")),
            };
            let status = res.status().as_u16();
            match Limited::new(res.into_body(), MAX_BODY).collect().await {
                Ok(body) => Attempt::Answered(status, body.to_bytes()),
                Err(e) => Attempt::Transport(format!("reading the answer failed: {e}")),
            }
        };
        // A timeout may have cut a request the facilitator received: that is `Transport`.
        Ok(tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| Attempt::Transport(format!("no answer within {:?}", self.timeout))))
    }
}

/// The host (and port) of a URL, without its scheme, credentials, path or query.
pub(crate) fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    authority.rsplit_once('@').map_or(authority, |(_, h)| h)
}

/// The facilitator seam: a remote one over HTTP, or our own on chain (`own`). Both answer
/// verify and settle with the same types and errors, so callers cannot tell them apart.
#[derive(Debug)]
pub enum Facilitator {
    Remote(FacilitatorClient),
    Own(Box<super::own::OwnFacilitator>),
}

impl Facilitator {
    /// The remote base URL, or `self`.
    pub fn base_url(&self) -> &str {
        match self {
            Facilitator::Remote(c) => c.base_url(),
            Facilitator::Own(_) => "self",
        }
    }

    pub async fn verify(&self, req: &FacilitatorRequest) -> Result<VerifyResponse, PaymentError> {
        match self {
            Facilitator::Remote(c) => c.verify(req).await,
            Facilitator::Own(o) => o.verify(req).await,
        }
    }

    pub async fn settle(&self, req: &FacilitatorRequest) -> Result<SettleResponse, PaymentError> {
        match self {
            Facilitator::Remote(c) => c.settle(req).await,
            Facilitator::Own(o) => o.settle(req).await,
        }
    }

    pub async fn supported(&self) -> Result<SupportedResponse, PaymentError> {
        match self {
            Facilitator::Remote(c) => c.supported().await,
            Facilitator::Own(o) => Ok(o.supported()),
        }
    }

    /// Our own facilitator, when that is the mode.
    pub fn own(&self) -> Option<&super::own::OwnFacilitator> {
        match self {
            Facilitator::Remote(_) => None,
            Facilitator::Own(o) => Some(o),
        }
    }

    /// The remote facilitator, when that is the mode.
    pub fn remote(&self) -> Option<&FacilitatorClient> {
        match self {
            Facilitator::Remote(c) => Some(c),
            Facilitator::Own(_) => None,
        }
    }
}

/// An error and its sources, one line (hyper's connect errors hide the cause in `source`).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

fn endpoint_label(path: &str) -> &'static str {
    match path {
        "verify" => "verify",
        "settle" => "settle",
        _ => "supported",
    }
}

fn parse<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, PaymentError> {
    serde_json::from_slice(bytes)
        .map_err(|e| PaymentError::Facilitator(format!("{what} answered badly: {e}")))
}
