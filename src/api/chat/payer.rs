//! Who pays for a chat call and how it is settled: a credit hold (API key) or an x402 payment.
//!
//! Credits: the hold is committed at the actual cost (or released). x402: the payment was
//! verified and its settlement started before generation; when the cost is known the call keeps
//! `max(cost, min_quote)` (never more than paid) and the change is credited to the payer as a
//! `refund`, durably, once the settlement has succeeded. A call that fails after settlement
//! started keeps nothing: the whole payment comes back as credits. A unary answer whose
//! settlement certainly moved no money is withheld and its nonce released.
//!
//! An x402 call's usage event is recorded once its settlement's outcome is known, so its
//! credits are what the call kept: a client that leaves meanwhile does not turn a kept payment
//! into a free call in the usage history.

use std::future::Future;
use std::sync::Arc;

use super::super::State;
use super::super::{pay, settle};
use super::{CLIENT_CLOSED, Meter};
use crate::billing::Hold;
use crate::payments::{PaymentError, Settlement, SettlementHandle, Verified};
use crate::upstream::TokenUsage;

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
}

/// The usage event a unary call owes once its payment is settled. The handler records it with
/// the answer's status; if the request is gone by then (the client left while the settlement
/// ran), dropping it records 499 with what the call kept, so the usage history agrees with the
/// ledger either way.
pub struct Owed {
    meter: Option<Meter>,
    credits: u64,
    usage: TokenUsage,
    /// The x402 settlement's transaction, when the payment settled.
    transaction: Option<String>,
}

impl Owed {
    fn new(meter: Meter, credits: u64, usage: TokenUsage) -> Self {
        Self {
            meter: Some(meter),
            credits,
            usage,
            transaction: None,
        }
    }

    fn settled_in(mut self, transaction: &str) -> Self {
        self.transaction = Some(transaction.to_string()).filter(|t| !t.is_empty());
        self
    }

    /// Records the call with `status` and the credits it kept.
    pub fn record(mut self, status: u16) {
        if let Some(m) = self.meter.take() {
            m.record_paid(
                status,
                self.credits,
                Some(&self.usage),
                self.transaction.take(),
            );
        }
    }
}

impl Drop for Owed {
    fn drop(&mut self) {
        if let Some(m) = self.meter.take() {
            m.record_paid(
                CLIENT_CLOSED,
                self.credits,
                Some(&self.usage),
                self.transaction.take(),
            );
        }
    }
}

impl Payer {
    /// A whole answer billed at `usage` (costing `cost`): commit the hold, or wait for the
    /// settlement and credit the change. A refused settlement is returned as the error (the
    /// answer is withheld). Either way the call's usage event comes back as `Owed`.
    pub async fn settle(
        self,
        state: &Arc<State>,
        cost: u64,
        meter: Meter,
        usage: TokenUsage,
    ) -> (Owed, Result<Settled, PaymentError>) {
        match self {
            Payer::Credits(hold) => {
                let charged = hold.commit(cost, Some(meter.request_id.clone()));
                (
                    Owed::new(meter, charged, usage),
                    Ok(Settled::Credits { charged }),
                )
            }
            Payer::X402(x) => {
                // Settlement, change and the usage event run as one effect: if this request is
                // dropped (the client went away), the change is still credited (through the
                // payment's intent, `settle`) and the event still names what was kept.
                let effects = state.effects.clone();
                let state = state.clone();
                let min_quote = state.config.x402.min_quote;
                let fallback = meter.clone();
                let run = async move {
                    let X402 {
                        verified,
                        settlement,
                    } = *x;
                    let kept = pay::kept(cost, min_quote, verified.amount);
                    let outcome = settlement.await;
                    match settle::finish_call_now(&state, &verified, outcome, kept).await {
                        Ok((s, _)) => (
                            Owed::new(meter, kept, usage).settled_in(&s.transaction),
                            Ok(Settled::X402 {
                                kept,
                                verified,
                                outcome: Ok(s),
                            }),
                        ),
                        Err(e) => {
                            // The answer is withheld: a payment that certainly moved no money
                            // may be sent again.
                            if e.nothing_settled() {
                                state.payments.release_nonce(&verified).await;
                            }
                            (Owed::new(meter, 0, usage), Err(e))
                        }
                    }
                };
                match effects.spawn("x402 call settlement", run).await {
                    Ok(r) => r,
                    Err(e) => (
                        Owed::new(fallback, 0, usage),
                        Err(PaymentError::Internal(e.to_string())),
                    ),
                }
            }
        }
    }

    /// The call produced nothing the client received: release the hold, or give the whole
    /// payment back as credits once it settles (in the background; it survives the request).
    /// The caller records the call.
    pub fn abandon(self, state: &Arc<State>) {
        match self {
            Payer::Credits(hold) => hold.release(),
            Payer::X402(x) => {
                let X402 {
                    verified,
                    settlement,
                } = *x;
                pay::credit_change_after(state.clone(), verified, settlement, 0);
            }
        }
    }

    /// Ends the payment of a stream cut short or disconnected, billed at `usage` (costing
    /// `cost`), and records the call with `status`. Credits are charged at once, under the
    /// request id. An x402 call keeps `max(cost, min_quote)` (at most what was paid) once its
    /// settlement succeeds, in the background; its usage event is recorded then, with what was
    /// kept, or with nothing when the payment did not go through.
    pub fn finish_detached(self, meter: &Meter, status: u16, cost: u64, usage: TokenUsage) {
        match self {
            Payer::Credits(hold) => {
                let charged = hold.commit(cost, Some(meter.request_id.clone()));
                meter.record(status, charged, Some(&usage));
            }
            Payer::X402(x) => {
                let X402 {
                    verified,
                    settlement,
                } = *x;
                let kept = if cost == 0 {
                    0
                } else {
                    pay::kept(cost, meter.state.config.x402.min_quote, verified.amount)
                };
                let settlement = recorded(settlement, meter.clone(), status, kept, usage);
                pay::credit_change_after(meter.state.clone(), verified, settlement, kept);
            }
        }
    }
}

/// `settlement`, which records the call once its outcome is known: `status` with the credits
/// kept if the payment settled, with none if it did not.
pub async fn recorded<F>(
    settlement: F,
    meter: Meter,
    status: u16,
    kept: u64,
    usage: TokenUsage,
) -> Result<Settlement, PaymentError>
where
    F: Future<Output = Result<Settlement, PaymentError>>,
{
    let outcome = settlement.await;
    let (credits, transaction) = match &outcome {
        Ok(s) => (kept, Some(s.transaction.clone()).filter(|t| !t.is_empty())),
        Err(_) => (0, None),
    };
    meter.record_paid(status, credits, Some(&usage), transaction);
    outcome
}
