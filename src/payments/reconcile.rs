//! Settlements whose outcome is uncertain: find out from the chain, or from the facilitator,
//! whether the money moved, and never conclude "not paid" without proof.
//!
//! A `/settle` can end without a certain answer: the facilitator timed out or failed after the
//! request may have arrived (`Facilitator`), it answered `settlement_pending` with a broadcast
//! transaction, or a retry was refused after an earlier attempt may already have settled
//! (`SettlementUnknown`; a retried transfer reverts with `transaction_failed` because the first
//! one used the authorization). `look` asks, once:
//!
//! - **the chain**, when the network has an `rpc_url` (`chain::ChainReader`): the authorization
//!   was used → moved, in that transaction; canceled by the payer → not moved; unused and the
//!   chain's time is past `validBefore` → not moved, ever; unused but still valid → not moved
//!   *yet* (a transaction may be in flight): proof only when the one transaction sent for it
//!   reverted (a first-attempt `transaction_failed`), else unknown;
//! - **the facilitator** otherwise, or when `reask`: `/verify` first (it reads the chain: a used
//!   nonce is `…nonce_already_used`, which means our own earlier attempt settled it), and if the
//!   payment is still good, `/settle` again (EIP-3009 nonces make a transfer happen at most once,
//!   and a facilitator that answered `settlement_pending` reconciles a resent payload against its
//!   broadcast transaction, as the x402 SDK's resource server expects). A `/verify` refusal for a
//!   reason other than the nonce or the time window (the balance, the signature) means the
//!   authorization is unused and cannot be used now: not moved. An expired authorization cannot
//!   be judged by a facilitator (it checks the time first): unknown.
//!
//! `Payments::start_settlement` runs `look` in the request (`Resolver::reconcile`) for a
//! `SettlementUnknown` until `x402.settle_pending_wait_ms` has passed, so the payer gets the
//! answer or the credits the moment the transfer confirms; so does a `Facilitator` error (a
//! time-out or a 5xx after the request reached it), with or without a chain to read (without
//! one, the facilitator is asked again), and a `transaction_failed` gets one look at the chain
//! when there is one. Whatever is still unknown
//! stays an open intent, which `api::settle` keeps looking up in the background and at start-up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::chain::{AuthorizationState, ChainReader};
use super::{Facilitator, FacilitatorRequest, PaymentError, unix_now};
use crate::config::Network;
use crate::wallet::Wallet;

/// Looks settlements up (cheap to clone: settlement tasks and recovery each hold one).
#[derive(Debug, Clone)]
pub struct Resolver {
    pub(crate) facilitator: Arc<Facilitator>,
    pub(crate) chain: ChainReader,
    /// How long a request waits for an unknown outcome (`x402.settle_pending_wait_ms`).
    pub(crate) wait: Duration,
}

/// What a look found.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The money moved, in this transaction (or under this reference, when only the facilitator
    /// could say that the authorization was used).
    Moved(String),
    /// Proven: no money moved, and none will under this authorization's current state.
    NotMoved(PaymentError),
    /// Not known yet.
    Unknown(PaymentError),
}

/// A payment whose settlement is being looked up.
#[derive(Debug, Clone, Copy)]
pub struct Lookup<'a> {
    pub network: &'a Network,
    pub from: Wallet,
    pub nonce: [u8; 32],
    pub valid_before: u64,
    pub request: &'a FacilitatorRequest,
    /// A transaction hash the facilitator reported (`settlement_pending`), if any.
    pub transaction: Option<&'a str>,
    /// A reference for a transfer only the facilitator vouches for (`x402:<intent id>`).
    pub marker: &'a str,
}

/// The longest pause between two looks within a request.
const MAX_PAUSE: Duration = Duration::from_secs(2);

impl Resolver {
    /// Looks once; see the module docs. `previous` is how the last attempt ended; `reask`: ask
    /// the facilitator again even when the chain can be read.
    pub async fn look(&self, l: &Lookup<'_>, previous: &PaymentError, reask: bool) -> Outcome {
        let first_attempt_reverted = matches!(previous,
            PaymentError::SettlementRefused { reason, .. } if reason == "transaction_failed");
        if l.network.rpc_url.is_some() {
            match self.chain.authorization(l.network, &l.from, &l.nonce).await {
                Ok(AuthorizationState::Used { transaction }) => return Outcome::Moved(transaction),
                Ok(AuthorizationState::Canceled { transaction }) => {
                    return Outcome::NotMoved(PaymentError::NotSettled {
                        reason: "transaction_failed",
                        detail: format!(
                            "the payer canceled the authorization (transaction {transaction})"
                        ),
                    });
                }
                Ok(AuthorizationState::Unlocated) => {
                    return Outcome::Unknown(PaymentError::SettlementUnknown {
                        detail: "the authorization is spent on chain, but no log of it was found \
                                 in the recent blocks"
                            .into(),
                        transaction: l.transaction.map(str::to_string),
                    });
                }
                Ok(AuthorizationState::Unused { chain_time }) if chain_time >= l.valid_before => {
                    return Outcome::NotMoved(PaymentError::NotSettled {
                        reason: "invalid_exact_evm_payload_authorization_valid_before",
                        detail: "the authorization expired unused".into(),
                    });
                }
                Ok(AuthorizationState::Unused { .. }) if first_attempt_reverted => {
                    return Outcome::NotMoved(previous.clone());
                }
                Ok(AuthorizationState::Unused { .. }) if !reask => {
                    return Outcome::Unknown(unknown_from(previous, l.transaction));
                }
                Ok(AuthorizationState::Unused { .. }) => {}
                Err(e) => {
                    tracing::warn!(network = %l.network.name, error = %e,
                        "the chain could not be read to resolve a settlement");
                    if !reask {
                        return Outcome::Unknown(unknown_from(previous, l.transaction));
                    }
                }
            }
        }
        self.ask_facilitator(l, first_attempt_reverted).await
    }

    async fn ask_facilitator(&self, l: &Lookup<'_>, first_attempt_reverted: bool) -> Outcome {
        let verdict = match self.facilitator.verify(l.request).await {
            Ok(v) => v,
            Err(e) => return Outcome::Unknown(e),
        };
        if !verdict.is_valid {
            let reason = verdict
                .invalid_reason
                .unwrap_or_else(|| "unexpected_verify_error".into());
            let moved_ref = l.transaction.unwrap_or(l.marker).to_string();
            return match reason.as_str() {
                // The facilitator read the chain: the authorization is spent, by our own earlier
                // attempt (only the facilitator and the payer hold it).
                r if r.contains("nonce") => Outcome::Moved(moved_ref),
                r if r.ends_with("valid_before") || r.ends_with("valid_after") => {
                    Outcome::Unknown(PaymentError::SettlementUnknown {
                        detail: format!(
                            "the facilitator cannot judge an authorization outside its time \
                             window ({r})"
                        ),
                        transaction: l.transaction.map(str::to_string),
                    })
                }
                _ if first_attempt_reverted || l.transaction.is_none() => {
                    Outcome::NotMoved(PaymentError::SettlementRefused {
                        reason,
                        message: verdict.invalid_message,
                    })
                }
                // A broadcast transaction is still out there: the chain decides, later.
                _ => Outcome::Unknown(PaymentError::SettlementUnknown {
                    detail: format!("the facilitator now refuses it ({reason})"),
                    transaction: l.transaction.map(str::to_string),
                }),
            };
        }
        match self.facilitator.settle(l.request).await {
            Ok(s) => Outcome::Moved(s.transaction),
            // Earlier attempts may have settled it: no answer from here is a proof.
            Err(PaymentError::SettlementRefused { reason, message }) => {
                Outcome::Unknown(PaymentError::SettlementUnknown {
                    detail: format!(
                        "settled again and refused ({reason}{})",
                        message.map(|m| format!(": {m}")).unwrap_or_default()
                    ),
                    transaction: l.transaction.map(str::to_string),
                })
            }
            Err(e) => Outcome::Unknown(e),
        }
    }

    /// Looks until the outcome is known or `wait` has passed (within a request): for an
    /// outcome the facilitator left open (`SettlementUnknown`), and for a `Facilitator` error
    /// when the network has a chain. A `transaction_failed` gets one look at the chain, when the
    /// network has one.
    pub async fn reconcile(
        &self,
        l: &Lookup<'_>,
        first: PaymentError,
    ) -> Result<String, PaymentError> {
        let has_chain = l.network.rpc_url.is_some();
        let keep_looking = match &first {
            PaymentError::SettlementUnknown { .. } => true,
            // A time-out or a 5xx from a `/settle` that reached the facilitator: the transfer
            // may be on its way (a confirmation slower than the facilitator's answer, a chain
            // that stopped, an answer lost after the transfer mined). It is looked up like a
            // pending settlement: on the chain when there is one, else by asking the
            // facilitator again (`/verify`: a spent nonce is the chain's word that it moved;
            // still good → `/settle` again, which EIP-3009 lets move the money at most once).
            // An outcome still open at the end of the wait is `SettlementUnknown` (504
            // `x402_settlement_pending`), never "not paid".
            PaymentError::Facilitator(_) => true,
            PaymentError::SettlementRefused { reason, .. } if reason == "transaction_failed" => {
                false
            }
            _ => return Err(first),
        };
        if !keep_looking && !has_chain {
            return Err(first);
        }
        let deadline = Instant::now() + self.wait;
        let mut pause = Duration::from_millis(250);
        let mut previous = first.clone();
        loop {
            // Within a request the chain is polled; the facilitator is asked again only when
            // there is no chain to read.
            match self.look(l, &previous, !has_chain).await {
                Outcome::Moved(tx) => {
                    metrics::counter!("vectorway_x402_reconciled_total", "outcome" => "moved")
                        .increment(1);
                    return Ok(tx);
                }
                Outcome::NotMoved(e) => {
                    metrics::counter!("vectorway_x402_reconciled_total", "outcome" => "not_moved")
                        .increment(1);
                    return Err(e);
                }
                Outcome::Unknown(e) => {
                    if !keep_looking {
                        return Err(first);
                    }
                    if Instant::now() + pause > deadline || unix_now() > l.valid_before + 60 {
                        metrics::counter!("vectorway_x402_reconciled_total", "outcome" => "unknown")
                            .increment(1);
                        return Err(unknown_from(&e, l.transaction));
                    }
                    // Keep the most telling error (a pending hash beats a later time-out).
                    if matches!(e, PaymentError::SettlementUnknown { .. }) {
                        previous = e;
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                }
            }
        }
    }
}

/// `e` as an unknown outcome (keeping a reported transaction hash).
fn unknown_from(e: &PaymentError, transaction: Option<&str>) -> PaymentError {
    match e {
        PaymentError::SettlementUnknown { .. } => e.clone(),
        other => PaymentError::SettlementUnknown {
            detail: other.to_string(),
            transaction: transaction.map(str::to_string),
        },
    }
}
