//! x402 payments, the resource-server side: price → 402 → decode → verify → settle → receipt.
//!
//! The flow for one paid call (DESIGN §4):
//! 1. No payment header: the API answers 402 with `Payments::challenge` for the call's quote
//!    (`quote_floor(worst case, min_quote)`): the v2 `PAYMENT-REQUIRED` header (base64
//!    `PaymentRequired`) and the v1 JSON body (`x402Version: 1`, `accepts`, `error`).
//! 2. `Payments::decode` reads `PAYMENT-SIGNATURE` (v2) or `X-PAYMENT` (v1): size cap, base64,
//!    JSON, schema, strict field forms. Any flaw is 400 `invalid_payment_header`.
//! 3. `Payments::verify` queues the payment on the verifier threads (`pipeline`), which check it
//!    locally with no RPC (`verify`): scheme, network, asset, payTo, value ≥ quote, validity
//!    window, EIP-712 signature, and last the atomic nonce claim (replay: 409). The result is a
//!    `Verified`: payer, amount paid, network, version, the payload as received, and the
//!    requirements to send to the facilitator.
//! 4. `Payments::start_settlement` spawns the facilitator `/settle` call at once, so settlement
//!    overlaps generation. The task is detached: dropping the `SettlementHandle` (the client went
//!    away) does not cancel it.
//! 5. The API awaits the handle before releasing a non-streaming answer (a refused settlement
//!    is a 402, not the answer; when it certainly moved no money the nonce is released, so the
//!    same payment can be sent again), or after `[DONE]` for a stream. `Verified::receipt_header`
//!    gives the `PAYMENT-RESPONSE` / `X-PAYMENT-RESPONSE` header; the API credits
//!    `amount − kept` to the payer as change.

pub mod chain;
pub mod evm_tx;
pub mod facilitator;
pub mod header;
pub mod own;
pub mod pipeline;
pub mod reconcile;
pub mod requirements;
pub mod sign;
pub mod supported;
pub mod types;
pub mod verify;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::config::{Network, X402Config};
use crate::effects::{Effects, Finishing};
use crate::storage::{Storage, StorageError, Store};
use crate::upstream::client::HttpClient;
use crate::wallet::Wallet;
pub use facilitator::{Facilitator, FacilitatorClient};
pub use header::{DecodedPayment, HeaderKind};
pub use pipeline::Pipeline;
pub use requirements::{Resource, quote_floor};
pub use types::{FacilitatorRequest, SettleResponse, Version};
pub use verify::{Checked, Reason};

/// The description sent in requirements when the caller gives none.
pub const DEFAULT_DESCRIPTION: &str = "vectorway API call";

/// Everything that can go wrong with a payment, from header bytes to settlement.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PaymentError {
    #[error("invalid payment header: {0}")]
    Malformed(String),
    #[error("the payment header is {len} bytes; the limit is {limit}")]
    HeaderTooLarge { len: usize, limit: usize },
    #[error("x402Version {0} is not supported; use 1 (X-PAYMENT) or 2 (PAYMENT-SIGNATURE)")]
    UnknownVersion(u64),
    #[error("send exactly one payment header: PAYMENT-SIGNATURE (x402 v2) or X-PAYMENT (v1)")]
    AmbiguousPayment,
    #[error("the payment does not satisfy the requirements: {detail}")]
    Unsatisfied { reason: Reason, detail: String },
    #[error("the authorization is not valid yet: validAfter {valid_after} is after now ({now})")]
    NotYetValid { valid_after: u64, now: u64 },
    #[error(
        "the authorization has expired: validBefore {valid_before} must be more than 6 s after now ({now})"
    )]
    Expired { valid_before: u64, now: u64 },
    #[error("this payment authorization was already used (nonce replay)")]
    NonceReused,
    #[error("payment verification is overloaded; retry in a moment")]
    Busy,
    #[error("payment verification is shutting down")]
    Unavailable,
    #[error("the facilitator refused the settlement: {reason}")]
    SettlementRefused {
        reason: String,
        message: Option<String>,
    },
    /// Proven after the fact (the chain, or the facilitator reading it): no money moved.
    #[error("the payment did not settle: {detail}")]
    NotSettled {
        reason: &'static str,
        detail: String,
    },
    /// The settlement's outcome is not known yet (`settlement_pending`, or a retry refused
    /// after an earlier attempt may have settled): it is looked up until it is.
    #[error(
        "the payment's settlement is not confirmed yet ({detail}); nothing is lost: if it \
         settles, the payment is credited to the paying wallet"
    )]
    SettlementUnknown {
        detail: String,
        transaction: Option<String>,
    },
    #[error("the payment facilitator failed: {0}")]
    Facilitator(String),
    /// No attempt could connect: the facilitator never saw the payment.
    #[error("the payment facilitator could not be reached; nothing was settled: {0}")]
    FacilitatorUnreachable(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("internal payment error: {0}")]
    Internal(String),
}

/// Reason strings a facilitator may send (reference §2.7), so `invalid_reason` stays `'static`.
const KNOWN_REASONS: &[&str] = &[
    "insufficient_funds",
    "invalid_exact_evm_payload_authorization_valid_after",
    "invalid_exact_evm_payload_authorization_valid_before",
    "invalid_exact_evm_payload_authorization_value_mismatch",
    "invalid_exact_evm_payload_authorization_value",
    "invalid_exact_evm_payload_signature",
    "invalid_exact_evm_payload_recipient_mismatch",
    "invalid_exact_evm_nonce_already_used",
    "invalid_exact_evm_insufficient_balance",
    "invalid_exact_evm_token_name_mismatch",
    "invalid_exact_evm_token_version_mismatch",
    "invalid_exact_evm_transaction_simulation_failed",
    "invalid_network",
    "invalid_payload",
    "invalid_payment_requirements",
    "invalid_scheme",
    "unsupported_scheme",
    "invalid_x402_version",
    "invalid_transaction_state",
    "transaction_failed",
    "settlement_pending",
    "unexpected_verify_error",
    "unexpected_settle_error",
];

impl PaymentError {
    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            PaymentError::Malformed(_)
            | PaymentError::HeaderTooLarge { .. }
            | PaymentError::UnknownVersion(_)
            | PaymentError::AmbiguousPayment
            | PaymentError::Expired { .. } => 400,
            PaymentError::Unsatisfied { .. }
            | PaymentError::NotYetValid { .. }
            | PaymentError::SettlementRefused { .. }
            | PaymentError::NotSettled { .. } => 402,
            PaymentError::NonceReused => 409,
            PaymentError::Storage(s) => s.status(),
            PaymentError::Internal(_) => 500,
            PaymentError::Facilitator(_) | PaymentError::FacilitatorUnreachable(_) => 502,
            PaymentError::SettlementUnknown { .. } => 504,
            PaymentError::Busy | PaymentError::Unavailable => 503,
        }
    }

    /// The stable `error.code` (also the metric label).
    pub fn code(&self) -> &'static str {
        match self {
            PaymentError::Malformed(_)
            | PaymentError::HeaderTooLarge { .. }
            | PaymentError::UnknownVersion(_) => "invalid_payment_header",
            PaymentError::AmbiguousPayment => "ambiguous_payment",
            PaymentError::Unsatisfied { .. } => "x402_payment_invalid",
            PaymentError::NotYetValid { .. } => "x402_authorization_not_yet_valid",
            PaymentError::Expired { .. } => "x402_authorization_expired",
            PaymentError::NonceReused => "x402_nonce_reused",
            PaymentError::Busy => "x402_verifier_busy",
            PaymentError::Unavailable => "x402_verifier_unavailable",
            PaymentError::SettlementRefused { .. } | PaymentError::NotSettled { .. } => {
                "x402_settlement_failed"
            }
            PaymentError::SettlementUnknown { .. } => "x402_settlement_pending",
            PaymentError::Facilitator(_) | PaymentError::FacilitatorUnreachable(_) => {
                "x402_facilitator_error"
            }
            PaymentError::Storage(s) => s.code(),
            PaymentError::Internal(_) => "internal_error",
        }
    }

    /// The x402 `invalidReason` / `errorReason` string, for the 402 `error` field and receipts.
    pub fn invalid_reason(&self) -> Option<&'static str> {
        match self {
            PaymentError::Malformed(_) | PaymentError::HeaderTooLarge { .. } => {
                Some("invalid_payload")
            }
            PaymentError::UnknownVersion(_) => Some("invalid_x402_version"),
            PaymentError::Unsatisfied { reason, .. } => Some(reason.as_str()),
            PaymentError::NotYetValid { .. } => {
                Some("invalid_exact_evm_payload_authorization_valid_after")
            }
            PaymentError::Expired { .. } => {
                Some("invalid_exact_evm_payload_authorization_valid_before")
            }
            PaymentError::NonceReused => Some("invalid_exact_evm_nonce_already_used"),
            PaymentError::SettlementRefused { reason, .. } => Some(
                KNOWN_REASONS
                    .iter()
                    .find(|k| **k == reason.as_str())
                    .copied()
                    .unwrap_or("unexpected_settle_error"),
            ),
            PaymentError::NotSettled { reason, .. } => Some(reason),
            PaymentError::SettlementUnknown { .. } => Some("settlement_pending"),
            PaymentError::Facilitator(_) | PaymentError::FacilitatorUnreachable(_) => {
                Some("unexpected_settle_error")
            }
            PaymentError::AmbiguousPayment
            | PaymentError::Busy
            | PaymentError::Unavailable
            | PaymentError::Storage(_)
            | PaymentError::Internal(_) => None,
        }
    }

    /// `Retry-After` in seconds, for the overload answer.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            PaymentError::Busy => Some(1),
            _ => None,
        }
    }

    /// True when a failed settlement certainly moved no money: the facilitator was never
    /// reached, it refused on the one attempt that reached it for a reason that rules a transfer
    /// out (a retry's refusal is `SettlementUnknown`: the earlier attempt may have settled), or
    /// the chain proved it (`NotSettled`). A timeout, a 5xx, a pending or unknown outcome, or a
    /// nonce the facilitator already saw used are not certain.
    pub fn nothing_settled(&self) -> bool {
        match self {
            PaymentError::FacilitatorUnreachable(_) | PaymentError::NotSettled { .. } => true,
            PaymentError::SettlementRefused { reason, .. } => {
                let r = reason.as_str();
                (r.starts_with("invalid_")
                    && r != "invalid_exact_evm_nonce_already_used"
                    && r != "invalid_transaction_state")
                    || matches!(
                        r,
                        "insufficient_funds" | "unsupported_scheme" | "transaction_failed"
                    )
            }
            _ => false,
        }
    }

    /// True when the fault is ours (details are not shown to the client).
    pub fn is_internal(&self) -> bool {
        matches!(self, PaymentError::Storage(_) | PaymentError::Internal(_))
    }
}

/// A verified payment: the nonce is claimed and the money can be settled.
#[derive(Debug, Clone)]
pub struct Verified {
    pub payer: Wallet,
    /// The authorized value in atomic USDC (= credits); at least `quote`.
    pub amount: u64,
    /// The quote it was verified against.
    pub quote: u64,
    pub network: Network,
    pub version: Version,
    /// The request header it came in, which decides the receipt header.
    pub header: HeaderKind,
    pub nonce: [u8; 32],
    pub valid_before: u64,
    /// The payload exactly as the client sent it.
    pub payload: Value,
    /// Our requirements for it, in the payload's version shape, with the amount actually
    /// authorized (strict facilitators require `value == amount`).
    pub requirements: Value,
}

impl Verified {
    pub(crate) fn new(
        cfg: &X402Config,
        p: &DecodedPayment,
        checked: Checked,
        quote: u64,
        resource: &str,
    ) -> Self {
        let version = p.version();
        let requirements = match version {
            Version::V1 => serde_json::to_value(requirements::v1_requirement(
                cfg,
                &checked.network,
                checked.amount,
                Resource {
                    url: resource,
                    description: DEFAULT_DESCRIPTION,
                },
            )),
            Version::V2 => serde_json::to_value(requirements::v2_requirement(
                cfg,
                &checked.network,
                checked.amount,
            )),
        }
        .unwrap_or(Value::Null);
        Self {
            payer: checked.payer,
            amount: checked.amount,
            quote,
            network: checked.network,
            version,
            header: p.header,
            nonce: checked.nonce,
            valid_before: checked.valid_before,
            payload: p.raw.clone(),
            requirements,
        }
    }

    /// The network as this payment's version names it (`base-sepolia` or `eip155:84532`).
    pub fn network_name(&self) -> &str {
        match self.version {
            Version::V1 => &self.network.name,
            Version::V2 => &self.network.caip2,
        }
    }

    /// The body for the facilitator's `/verify` and `/settle`.
    pub fn facilitator_request(&self) -> FacilitatorRequest {
        FacilitatorRequest {
            x402_version: self.version.number(),
            payment_payload: self.payload.clone(),
            payment_requirements: self.requirements.clone(),
        }
    }

    /// The receipt for a settlement outcome (`success:false` with a reason when it failed).
    pub fn receipt(&self, outcome: &Result<Settlement, PaymentError>) -> SettleResponse {
        match outcome {
            Ok(s) => SettleResponse {
                success: true,
                error_reason: None,
                error_message: None,
                payer: Some(crate::crypto::to_checksum(&s.payer)),
                transaction: s.transaction.clone(),
                network: self.network_name().into(),
                amount: Some(s.amount.to_string()),
            },
            Err(e) => SettleResponse {
                success: false,
                error_reason: Some(
                    e.invalid_reason()
                        .unwrap_or("unexpected_settle_error")
                        .into(),
                ),
                error_message: None,
                payer: Some(crate::crypto::to_checksum(&self.payer)),
                transaction: String::new(),
                network: self.network_name().into(),
                amount: None,
            },
        }
    }

    /// The receipt header: `PAYMENT-RESPONSE` for `PAYMENT-SIGNATURE`, `X-PAYMENT-RESPONSE` for
    /// `X-PAYMENT`.
    pub fn receipt_header(
        &self,
        outcome: &Result<Settlement, PaymentError>,
    ) -> Result<(HeaderName, HeaderValue), PaymentError> {
        Ok((
            self.header.response_header(),
            header::encode_receipt(&self.receipt(outcome))?,
        ))
    }
}

/// A settled payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// The transaction hash the facilitator reported.
    pub transaction: String,
    /// The network, named the payment's version's way.
    pub network: String,
    pub payer: Wallet,
    /// Atomic USDC moved.
    pub amount: u64,
}

/// The parts of a 402 that asks for payment.
#[derive(Debug, Clone)]
pub struct Challenge {
    /// `PAYMENT-REQUIRED`: base64 of the v2 `PaymentRequired`.
    pub header: HeaderValue,
    /// The v1 JSON body (`x402Version: 1`, `error`, `accepts`).
    pub body: Vec<u8>,
}

/// The outcome of a settlement started by `start_settlement`. Awaiting it is optional: dropping
/// it detaches the task, which still runs to the end.
#[derive(Debug)]
pub struct SettlementHandle {
    inner: HandleInner,
}

#[derive(Debug)]
enum HandleInner {
    Task(Finishing<Result<Settlement, PaymentError>>),
    Failed(Option<PaymentError>),
}

impl Future for SettlementHandle {
    type Output = Result<Settlement, PaymentError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.inner {
            HandleInner::Task(task) => Pin::new(task).poll(cx).map(|joined| {
                joined.unwrap_or_else(|e| {
                    Err(PaymentError::Internal(format!("settlement task: {e}")))
                })
            }),
            HandleInner::Failed(e) => Poll::Ready(Err(e
                .take()
                .unwrap_or_else(|| PaymentError::Internal("settlement polled twice".into())))),
        }
    }
}

/// The payments domain as the API uses it.
pub struct Payments {
    cfg: Arc<X402Config>,
    store: Storage,
    pipeline: Pipeline,
    facilitator: Arc<Facilitator>,
    /// Looks up settlements whose outcome is uncertain (`reconcile`).
    resolver: reconcile::Resolver,
    effects: Effects,
}

impl std::fmt::Debug for Payments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payments")
            .field("facilitator", &self.facilitator.base_url())
            .field("verifier_threads", &self.pipeline.threads())
            .finish_non_exhaustive()
    }
}

impl Payments {
    /// Starts the verifier threads. `facilitator_base` is the facilitator URL (the configured one,
    /// or the simulator's `…/facilitator`).
    /// Settlements run as `effects`, so they finish whatever happens to their request.
    pub fn new(
        cfg: &X402Config,
        store: Storage,
        http: HttpClient,
        facilitator_base: String,
        effects: Effects,
    ) -> Self {
        let cfg = Arc::new(cfg.clone());
        let chain = chain::ChainReader::new(http.clone(), cfg.settle_timeout);
        let remote = |base: &str| {
            Facilitator::Remote(FacilitatorClient::new(
                http.clone(),
                base,
                cfg.settle_concurrency,
                cfg.settle_timeout,
                cfg.settle_retries,
            ))
        };
        let facilitator = Arc::new(match &cfg.own {
            None => remote(&facilitator_base),
            Some(own) => match sign::Signer::from_hex(own.key.expose()) {
                Some(signer) => Facilitator::Own(Box::new(own::OwnFacilitator::new(
                    cfg.clone(),
                    Store::clone(&store),
                    chain.clone(),
                    signer,
                    cfg.settle_timeout,
                ))),
                None => {
                    // Config validation accepts only valid keys; should one slip through, every
                    // payment is refused before anything is sent (nothing listens on port 9).
                    tracing::error!("x402.settlement_key is not a usable key");
                    remote("http://127.0.0.1:9")
                }
            },
        });
        Self {
            pipeline: Pipeline::start(cfg.clone(), store.clone(), pipeline::DEFAULT_CAPACITY),
            store,
            resolver: reconcile::Resolver {
                facilitator: facilitator.clone(),
                chain,
                wait: cfg.settle_pending_wait,
            },
            cfg,
            facilitator,
            effects,
        }
    }

    pub fn config(&self) -> &X402Config {
        &self.cfg
    }

    pub fn facilitator(&self) -> &Facilitator {
        &self.facilitator
    }

    /// Looks up settlements whose outcome is uncertain.
    pub fn resolver(&self) -> &reconcile::Resolver {
        &self.resolver
    }

    /// The x402 price of a call whose worst case is `worst_case_credits`.
    pub fn quote(&self, worst_case_credits: u64) -> u64 {
        quote_floor(worst_case_credits, self.cfg.min_quote)
    }

    /// Reads the payment header of a request; `Ok(None)` when there is none.
    pub fn decode(headers: &HeaderMap) -> Result<Option<DecodedPayment>, PaymentError> {
        header::decode(headers)
    }

    /// Verifies a decoded payment against `quote` for `resource` (the route's URL), now.
    pub async fn verify(
        &self,
        decoded: DecodedPayment,
        quote: u64,
        resource: &str,
    ) -> Result<Verified, PaymentError> {
        self.verify_at(decoded, quote, resource, unix_now()).await
    }

    /// `verify` at a given Unix time (tests, replays of recorded payments).
    pub async fn verify_at(
        &self,
        decoded: DecodedPayment,
        quote: u64,
        resource: &str,
        now: u64,
    ) -> Result<Verified, PaymentError> {
        self.pipeline.verify(decoded, quote, resource, now).await
    }

    /// Starts settling `verified` on its own task and returns at once. Call it once per payment.
    pub fn start_settlement(&self, verified: &Verified) -> SettlementHandle {
        if tokio::runtime::Handle::try_current().is_err() {
            return SettlementHandle {
                inner: HandleInner::Failed(Some(PaymentError::Internal(
                    "settlement needs a tokio runtime".into(),
                ))),
            };
        }
        let resolver = self.resolver.clone();
        let request = verified.facilitator_request();
        let (payer, network) = (verified.payer, verified.network_name().to_string());
        let amount = verified.amount;
        let (net, nonce, valid_before) = (
            verified.network.clone(),
            verified.nonce,
            verified.valid_before,
        );
        let marker = format!(
            "x402:{}",
            hex::encode(verify::replay_key(&net, &payer, &nonce))
        );
        let settle = async move {
            let started = Instant::now();
            // An outcome the facilitator left uncertain is looked up before anyone is told
            // "not paid" (`reconcile`).
            let transaction = match resolver.facilitator.settle(&request).await {
                Ok(r) => Ok(r.transaction),
                Err(e) => {
                    let hint = match &e {
                        PaymentError::SettlementUnknown { transaction, .. } => transaction.clone(),
                        _ => None,
                    };
                    let lookup = reconcile::Lookup {
                        network: &net,
                        from: payer,
                        nonce,
                        valid_before,
                        request: &request,
                        transaction: hint.as_deref(),
                        marker: &marker,
                    };
                    resolver.reconcile(&lookup, e).await
                }
            };
            let result = transaction.map(|transaction| Settlement {
                transaction,
                network,
                payer,
                amount,
            });
            let label = match &result {
                Ok(_) => "ok",
                Err(e) => e.code(),
            };
            metrics::counter!("vectorway_x402_settle_total", "outcome" => label).increment(1);
            metrics::histogram!("vectorway_x402_settle_seconds")
                .record(started.elapsed().as_secs_f64());
            if let Err(e) = &result {
                tracing::warn!(%payer, error = %e, "x402 settlement failed");
            }
            result
        };
        // Settlement must finish even when the request that started it is cancelled (the client
        // disconnected): it is an effect; the handle only observes it.
        SettlementHandle {
            inner: HandleInner::Task(self.effects.spawn("x402 settlement", settle)),
        }
    }

    /// Gives a verified payment's nonce back after a settlement that certainly moved no money
    /// (`PaymentError::nothing_settled`) for a call whose answer was withheld: the same signed
    /// payment may be sent again. Never after a client was served, or when money may have moved.
    pub async fn release_nonce(&self, verified: &Verified) {
        let key = verify::replay_key(&verified.network, &verified.payer, &verified.nonce);
        match self.store.release_x402_nonce(&key).await {
            Ok(_) => metrics::counter!("vectorway_x402_nonces_released_total").increment(1),
            Err(e) => tracing::error!(%e, payer = %verified.payer, "x402 nonce not released"),
        }
    }

    /// The 402 that asks for `quote`: the `PAYMENT-REQUIRED` header and the v1 body. `reason` is
    /// why an earlier payment was refused, if one was.
    pub fn challenge(
        &self,
        quote: u64,
        resource: Resource<'_>,
        reason: Option<&PaymentError>,
    ) -> Result<Challenge, PaymentError> {
        let (v1_error, v2_error) = match reason {
            None => (
                "X-PAYMENT header is required".to_string(),
                "PAYMENT-SIGNATURE header is required".to_string(),
            ),
            Some(e) => {
                let r = e
                    .invalid_reason()
                    .map_or_else(|| e.to_string(), str::to_string);
                (r.clone(), r)
            }
        };
        let v1 = requirements::payment_required_v1(&self.cfg, quote, resource, &v1_error);
        let v2 = requirements::payment_required_v2(&self.cfg, quote, resource, &v2_error);
        Ok(Challenge {
            header: header::encode_payment_required(&v2)?,
            body: serde_json::to_vec(&v1).map_err(|e| PaymentError::Internal(e.to_string()))?,
        })
    }
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
