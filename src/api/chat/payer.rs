//! Who pays for a chat call and how it is settled: a credit hold (API key) or an x402 payment.
//!
//! Credits: the hold is committed at the actual cost (or released). x402: the payment was
//! verified and its settlement started before generation; when the cost is known the call keeps
//! `max(cost, min_quote)` (never more than paid) and the change is credited to the payer as a
//! `refund`, durably, once the settlement has succeeded. A call that fails after settlement
//! started keeps nothing: the whole payment comes back as credits. A unary answer whose
//! settlement certainly moved no money is withheld and its nonce released.

use std::sync::Arc;

use super::super::State;
use super::super::{pay, settle};
use crate::billing::Hold;
use crate::payments::{PaymentError, Settlement, SettlementHandle, Verified};

/// An x402 payment being settled.
pub struct X402 {
    pub verified: Verified,
    pub settlement: SettlementHandle,
}

pub enum Payer {
    Credits(Hold),
    X402(Box<X402>),
}

/// The outcome of a unary call's settlement.
#[expect(
    clippy::large_enum_variant,
    reason = "one value per request, moved once; boxing buys nothing"
)]
pub enum Settled {
    Credits {
        charged: u64,
    },
    X402 {
        kept: u64,
        verified: Verified,
        outcome: Result<Settlement, PaymentError>,
    },
}

impl Settled {
    /// `(credit_cost, usd_cost)` for the usage object: only the channel that paid is set.
    pub fn costs(&self) -> (Option<u64>, Option<String>) {
        match self {
            Settled::Credits { charged } => (Some(*charged), None),
            Settled::X402 { kept, .. } => (None, Some(pay::usd(*kept))),
        }
    }

    /// Credits (= atomic USDC) the call kept.
    pub fn amount(&self) -> u64 {
        match self {
            Settled::Credits { charged } => *charged,
            Settled::X402 { kept, .. } => *kept,
        }
    }
}

impl Payer {
    /// A whole answer costing `cost`: commit the hold, or wait for the settlement and credit the
    /// change. A refused settlement is returned as the error (the answer is withheld).
    pub async fn settle(
        self,
        state: &Arc<State>,
        cost: u64,
        reference: String,
    ) -> Result<Settled, PaymentError> {
        match self {
            Payer::Credits(hold) => Ok(Settled::Credits {
                charged: hold.commit(cost, Some(reference)),
            }),
            Payer::X402(x) => {
                // Settlement and change run as an effect (`settle::finish_call`): if this
                // request is dropped (the client went away), the change is still credited.
                let X402 {
                    verified,
                    settlement,
                } = *x;
                let kept = pay::kept(cost, state.config.x402.min_quote, verified.amount);
                let finishing =
                    settle::finish_call(state.clone(), verified.clone(), settlement, kept);
                match finishing.await {
                    Ok(Ok((s, _))) => Ok(Settled::X402 {
                        kept,
                        verified,
                        outcome: Ok(s),
                    }),
                    Ok(Err(e)) => {
                        // The answer is withheld: a payment that certainly moved no money
                        // may be sent again.
                        if e.nothing_settled() {
                            state.payments.release_nonce(&verified);
                        }
                        Err(e)
                    }
                    Err(e) => Err(PaymentError::Internal(e.to_string())),
                }
            }
        }
    }

    /// The call produced nothing the client received: release the hold, or give the whole
    /// payment back as credits once it settles (in the background; it survives the request).
    pub fn abandon(self, state: &Arc<State>) {
        self.finish_detached(state, 0);
    }

    /// Ends the payment in the background keeping `kept` (a stream cut short or disconnected).
    pub fn finish_detached(self, state: &Arc<State>, kept: u64) {
        match self {
            Payer::Credits(hold) if kept == 0 => hold.release(),
            Payer::Credits(hold) => {
                hold.commit(kept, None);
            }
            Payer::X402(x) => {
                let X402 {
                    verified,
                    settlement,
                } = *x;
                pay::credit_change_after(state.clone(), verified, settlement, kept);
            }
        }
    }
}
