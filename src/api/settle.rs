//! x402 settlements that owe the payer something, made durable: intent → settle → credit.
//!
//! Before a verified payment goes to the facilitator, an `IntentRecord` saying what the payer is
//! owed once it settles (all of it as credits for money in; the change for a paid call) is
//! fsynced. The settlement and the credit then run as one effect (`crate::effects`), so a client
//! that disconnects at any await point changes nothing, and a crash at any instant leaves the
//! intent, which `recover` completes at start-up: it looks the payment up
//! (`payments::reconcile`: the token's authorization state on the chain when the network has an
//! RPC URL, else the facilitator's `/verify`, then `/settle` again), credits once (the ledger is
//! checked for the credit's reference first), and forgets the intent. An outcome that stays
//! unknown is looked up again in the background, and is never taken for "not paid" without
//! proof. A credit that fails is retried.
//!
//! Every payment is checked with the facilitator's `/verify` (balance and authorization state,
//! by simulating the transfer) before any work: before the model runs for a unary call, before
//! the first byte of a stream, before settling money in. It costs one facilitator round trip
//! before the model (a few ms against a local facilitator; on a hosted one, its `/verify`
//! latency), and saves a generation and a reverted transaction for every payment that could
//! never settle. A payer one of whose stream settlements failed may not stream again until a
//! payment of theirs settles (`Settler::blocked`).

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

use super::State;
use crate::config::Network;
use crate::payments::reconcile::{Lookup, Outcome};
use crate::payments::verify::replay_key;
use crate::payments::{PaymentError, Settlement, SettlementHandle, Verified};
use crate::storage::intents::{IntentPurpose, IntentRecord, IntentState};
use crate::storage::{LedgerKind, now_ms};
use crate::wallet::Wallet;

/// Payers refused further streams at once, at most; past it the oldest entry is let go.
const MAX_BLOCKED: usize = 65_536;
/// Attempts at a credit before it is left to the next start-up's recovery.
const CREDIT_ATTEMPTS: u32 = 6;

/// The settlement state the API keeps in memory.
#[derive(Debug, Default)]
pub struct Settler {
    /// Payers whose stream settlement failed → when (ms). Cleared by a settlement of theirs.
    blocked: DashMap<Wallet, u64>,
}

impl Settler {
    pub fn is_blocked(&self, payer: &Wallet) -> bool {
        self.blocked.contains_key(payer)
    }

    fn block(&self, payer: Wallet) {
        if self.blocked.len() >= MAX_BLOCKED
            && let Some(oldest) = self
                .blocked
                .iter()
                .min_by_key(|e| *e.value())
                .map(|e| *e.key())
        {
            self.blocked.remove(&oldest);
        }
        self.blocked.insert(payer, now_ms());
        metrics::counter!("vectorway_x402_payers_blocked_total").increment(1);
    }

    fn unblock(&self, payer: &Wallet) {
        self.blocked.remove(payer);
    }

    pub fn blocked_count(&self) -> usize {
        self.blocked.len()
    }
}

/// The intent id of a payment: its replay key, hex (unique per payer, chain, asset and nonce).
pub fn intent_id(v: &Verified) -> String {
    hex::encode(replay_key(&v.network, &v.payer, &v.nonce))
}

/// Writes the payment's intent (fsynced) and starts its settlement. On a storage failure the
/// nonce is given back (nothing was sent to the facilitator) and the call is refused.
pub async fn start(
    state: &Arc<State>,
    v: &Verified,
    purpose: IntentPurpose,
) -> Result<SettlementHandle, PaymentError> {
    let rec = IntentRecord {
        id: intent_id(v),
        payer: v.payer,
        paid: v.amount,
        valid_before: v.valid_before,
        request: serde_json::to_value(v.facilitator_request())
            .map_err(|e| PaymentError::Internal(e.to_string()))?,
        network: v.network_name().to_string(),
        purpose,
        state: IntentState::Pending,
        created_ms: now_ms(),
    };
    match state.store.put_intent_durable(&rec).await {
        Ok(true) => Ok(state.payments.start_settlement(v)),
        // Another replica still holds an intent for this very authorization: it is in use.
        Ok(false) => Err(PaymentError::NonceReused),
        Err(e) => {
            state.payments.release_nonce(v).await;
            Err(e.into())
        }
    }
}

/// Money in: settles `v` and credits all of it as `kind`, to the payer or to the agent account
/// `to` pins, as one effect that survives the request. Returns the settlement and the credited
/// account's new balance. The pin is held until the effect ends: by then the credit is in the
/// ledger or the intent is on disk (or nothing moved), so the sweeper cannot delete an agent
/// that money is on its way to (`crate::agents`).
pub async fn money_in(
    state: &Arc<State>,
    v: &Verified,
    kind: LedgerKind,
    note: String,
    to: Option<crate::agents::Pin>,
) -> Result<(Settlement, u64), PaymentError> {
    // Intent, settlement and credit all run in the effect: from here on nothing the client does
    // can stop them.
    let (st, v) = (state.clone(), v.clone());
    let run = async move {
        let account = to.as_ref().map(crate::agents::Pin::account);
        // `/verify` moves no money: a refused payment may be sent again.
        if let Err(e) = preflight(&st, &v, false).await {
            st.payments.release_nonce(&v).await;
            return Err(e);
        }
        let purpose = IntentPurpose::Credit {
            kind,
            note,
            to: account,
        };
        let settlement = start(&st, &v, purpose).await?;
        let outcome = settlement.await;
        let done = finish(&st, &v, outcome, None, false, account).await;
        // Marked funded inside the effect, so a client that leaves cannot skip it (the agent
        // would keep an unfunded slot until a sweep found the credit in the ledger).
        if let (Ok(_), Some(account)) = (&done, account)
            && let Err(e) = st.agents.note_funded(&account).await
        {
            tracing::warn!(%e, %account, "agent not marked funded yet; the sweeper marks it");
        }
        drop(to);
        done
    };
    match state.effects.spawn("x402 money in", run).await {
        Ok(r) => r,
        Err(e) => Err(PaymentError::Internal(e.to_string())),
    }
}

/// A paid call ended keeping `kept`: waits for its settlement and credits the change, in the
/// background (it survives the request). `Some` outcome on success.
pub fn finish_call<F>(
    state: Arc<State>,
    v: Verified,
    settlement: F,
    kept: u64,
) -> crate::effects::Finishing<Result<(Settlement, u64), PaymentError>>
where
    F: std::future::Future<Output = Result<Settlement, PaymentError>> + Send + 'static,
{
    let effects = state.effects.clone();
    effects.spawn("x402 call change", async move {
        let outcome = settlement.await;
        if let Err(e) = &outcome {
            note_refusal(&state, &v.payer, e);
        }
        finish(&state, &v, outcome, Some(kept), true, None).await
    })
}

/// A stream's settlement failed and its error event is about to be written: the payer is
/// blocked now, before the client can read the event and send another stream (`note_refusal`,
/// once for this failure), and the payment's intent ends in the background (forgotten, or
/// recovered if money may have moved).
pub fn finish_refused_stream(state: Arc<State>, v: Verified, e: PaymentError, kept: u64) {
    note_refusal(&state, &v.payer, &e);
    let effects = state.effects.clone();
    drop(effects.spawn("x402 call change", async move {
        finish(&state, &v, Err(e), Some(kept), true, None).await
    }));
}

/// A paid call's settlement `outcome` is known and the call keeps `kept`: credit the change
/// now (the caller runs this inside an effect).
pub async fn finish_call_now(
    state: &Arc<State>,
    v: &Verified,
    outcome: Result<Settlement, PaymentError>,
    kept: u64,
) -> Result<(Settlement, u64), PaymentError> {
    if let Err(e) = &outcome {
        note_refusal(state, &v.payer, e);
    }
    finish(state, v, outcome, Some(kept), false, None).await
}

/// Ends an intent once its settlement's outcome is known: credit what is owed, or forget it.
/// `kept`: what a paid call keeps (`None` for money in); `delivered`: the call's content reached
/// the client (a stream), so it keeps `kept` even if its settlement is only confirmed later
/// (a withheld unary answer keeps nothing); `to`: the account money in credits when it is not
/// the payer. A paid call's refusal is noted (`note_refusal`) by the caller, once.
async fn finish(
    state: &Arc<State>,
    v: &Verified,
    outcome: Result<Settlement, PaymentError>,
    kept: Option<u64>,
    delivered: bool,
    to: Option<Wallet>,
) -> Result<(Settlement, u64), PaymentError> {
    let id = intent_id(v);
    match outcome {
        Ok(s) => {
            state.settler.unblock(&v.payer);
            let mut rec = match state.store.intent(&id).await {
                Ok(Some(r)) => r,
                // Written by `start`; absent only if the store failed us: credit from `v`.
                _ => fallback_record(v, &id, kept, to),
            };
            rec.state = IntentState::Settled {
                transaction: s.transaction.clone(),
            };
            if let (IntentPurpose::Call { kept: k, .. }, Some(kept)) = (&mut rec.purpose, kept) {
                *k = Some(kept);
            }
            // The transaction (and what the call kept) is on disk before any credit is: a crash
            // after the credit finds it by its reference instead of settling again and crediting
            // twice, and a crash before the intent is forgotten cannot turn a call that kept
            // everything into a full refund.
            let stored = match state.store.put_intent_durable(&rec).await {
                Ok(true) => Ok(()),
                // Another replica claimed the intent (this one was cut off past its lease): it
                // resolves and credits it, once.
                Ok(false) => Err(PaymentError::Internal(
                    "the settlement intent was taken over by another replica".into(),
                )),
                Err(e) => Err(e.into()),
            };
            if let Err(e) = stored {
                tracing::error!(%e, intent = %id, "settled intent not stored; left for recovery");
                return if kept.is_none() {
                    Err(e)
                } else {
                    Ok((s, state.billing.balance(&rec.credited()).balance))
                };
            }
            match credit_owed(state, &rec, &s.transaction, true).await {
                Ok(balance) => Ok((s, balance)),
                // Money in answers with the error (the intent stays for recovery); a paid call
                // has its answer, whose settlement did succeed.
                Err(e) if kept.is_none() => Err(e),
                Err(_) => Ok((s, state.billing.balance(&rec.credited()).balance)),
            }
        }
        Err(e) => {
            if e.nothing_settled() {
                // The money never moved: nothing is owed, and the payment may be sent again
                // when its answer was withheld (money in; a unary call's `Payer::settle` does
                // its own release).
                // The intent goes first: once the nonce is free, the same payment may be sent
                // again (to any replica), and its new intent has the same id.
                forget(state, &id).await;
                if kept.is_none() {
                    state.payments.release_nonce(v).await;
                }
            } else {
                // A time-out or a 5xx: the money may have moved. The intent stays, and is
                // settled again in the background (and at the next start) until the
                // facilitator's answer says what happened.
                tracing::error!(payer = %v.payer, intent = %id, error = %e,
                    "x402 settlement outcome unknown; recovering in the background");
                if delivered && let Some(k) = kept {
                    keep_on_recovery(state, &id, k).await;
                }
                recover_later(state, id);
            }
            if delivered
                && let Some(k) = kept.filter(|k| *k > 0)
                && e.nothing_settled()
            {
                note_unpaid_stream(&v.payer, k, &e);
            }
            Err(e)
        }
    }
}

/// A paid call's settlement failed: if it was refused for the payer's reasons (funds,
/// authorization), the payer streams nothing until a payment of theirs settles. A facilitator
/// that fails or is down blocks nobody.
pub fn note_refusal(state: &State, payer: &Wallet, e: &PaymentError) {
    if matches!(
        e,
        PaymentError::SettlementRefused { .. } | PaymentError::NotSettled { .. }
    ) {
        state.settler.block(*payer);
    }
}

/// A stream's content reached the client and its settlement certainly failed (the payer moved
/// the funds or canceled the authorization after `/verify`): the loss is counted
/// (`vectorway_x402_unpaid_streams_total`, and the credits the call would have kept in
/// `vectorway_x402_unpaid_stream_credits_total`) and logged; the payer is blocked
/// (`note_refusal`) and the call's usage event is recorded with nothing charged.
fn note_unpaid_stream(payer: &Wallet, kept: u64, e: &PaymentError) {
    metrics::counter!("vectorway_x402_unpaid_streams_total").increment(1);
    metrics::counter!("vectorway_x402_unpaid_stream_credits_total").increment(kept);
    tracing::warn!(%payer, credits = kept, reason = %e,
        "a paid stream was delivered and its settlement failed: loss recorded, payer blocked");
}

/// Records in a call's intent what it keeps once its settlement is confirmed (durably: recovery
/// after a crash must not refund content the client received).
async fn keep_on_recovery(state: &State, id: &str, k: u64) {
    let Ok(Some(mut rec)) = state.store.intent(id).await else {
        return;
    };
    if let IntentPurpose::Call { kept, .. } = &mut rec.purpose {
        *kept = Some(k);
    }
    match state.store.put_intent_durable(&rec).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(intent = %id,
            "what the call keeps was not stored: another replica owns the intent"),
        Err(e) => {
            tracing::warn!(%e, intent = %id, "what the call keeps was not stored; recovery refunds all");
        }
    }
}

fn fallback_record(v: &Verified, id: &str, kept: Option<u64>, to: Option<Wallet>) -> IntentRecord {
    IntentRecord {
        id: id.to_string(),
        payer: v.payer,
        paid: v.amount,
        valid_before: v.valid_before,
        request: serde_json::Value::Null,
        network: v.network_name().to_string(),
        purpose: match kept {
            Some(k) => IntentPurpose::Call {
                request_id: String::new(),
                kept: Some(k),
            },
            None => IntentPurpose::Credit {
                kind: LedgerKind::Topup,
                note: "x402 payment".into(),
                to,
            },
        },
        state: IntentState::Pending,
        created_ms: now_ms(),
    }
}

async fn forget(state: &State, id: &str) {
    match state.store.remove_intent(id).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(intent = %id, "finished intent owned by another replica now"),
        Err(e) => {
            tracing::warn!(%e, intent = %id, "finished intent not removed; recovery will skip it");
        }
    }
}

/// What a settled intent owes: (credits, kind, note).
fn owed(rec: &IntentRecord) -> (u64, LedgerKind, String) {
    match &rec.purpose {
        IntentPurpose::Credit { kind, note, .. } => {
            (rec.paid, *kind, format!("{note} · {} credits", rec.paid))
        }
        IntentPurpose::Call { kept, request_id } => {
            let kept = kept.unwrap_or(0).min(rec.paid);
            let note = if request_id.is_empty() {
                format!("x402 change: paid {}, kept {kept}", rec.paid)
            } else {
                format!("x402 change: paid {}, kept {kept} · {request_id}", rec.paid)
            };
            (rec.paid - kept, LedgerKind::Refund, note)
        }
    }
}

/// Credits what a settled intent owes (once: a credit with this reference already in the
/// credited account's ledger is not written again), retrying a failed write, then forgets the
/// intent. Returns the credited account's balance (the payer's, or the agent's it names).
///
/// `fresh`: the caller settled this payment just now, so no credit can exist yet and the
/// first attempt skips the ledger walk (a retry, and recovery, always check).
async fn credit_owed(
    state: &State,
    rec: &IntentRecord,
    reference: &str,
    fresh: bool,
) -> Result<u64, PaymentError> {
    let (credits, kind, note) = owed(rec);
    let account = rec.credited();
    let mut delay = Duration::from_millis(50);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let found = if fresh && attempt == 1 {
            Ok(false)
        } else {
            state
                .store
                .ledger_has_reference(&account, reference, rec.created_ms)
                .await
        };
        let result = match found {
            Err(e) => Err(PaymentError::from(e)),
            Ok(done) if credits == 0 || done => {
                forget(state, &rec.id).await;
                Ok(state.billing.balance(&account).balance)
            }
            // The credit and the intent's removal are one write (across replicas: only the
            // intent's owner can credit it).
            Ok(_) => state
                .billing
                .credit_closing(
                    account,
                    credits,
                    kind,
                    Some(reference.to_string()),
                    Some(note.clone()),
                    Some(&rec.id),
                )
                .await
                .map(|b| {
                    if b.is_none() {
                        tracing::warn!(intent = %rec.id,
                            "intent claimed by another replica; it credits the payment");
                    }
                    b.unwrap_or_else(|| state.billing.balance(&account).balance)
                })
                .map_err(|e| PaymentError::Internal(e.to_string())),
        };
        match result {
            Ok(balance) => return Ok(balance),
            Err(e) if attempt >= CREDIT_ATTEMPTS => {
                metrics::counter!("vectorway_x402_credit_failures_total").increment(1);
                tracing::error!(%e, payer = %rec.payer, intent = %rec.id,
                    "x402 credit failed; kept for recovery at the next start");
                return Err(e);
            }
            Err(e) => {
                tracing::warn!(%e, payer = %rec.payer, attempt, "x402 credit failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The outcome of one intent's recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovered {
    /// Settled (now or before the crash) and what it owed is credited.
    Credited,
    /// The facilitator refused it for a reason that rules a transfer out: nothing owed.
    NothingMoved,
    /// The facilitator could not be asked, or the answer cannot tell: kept for the next start.
    Kept,
    /// Marked unresolved: the operator must check the chain.
    Unresolved,
}

/// Completes every intent a previous run left (start-up: nothing else is settling), or on a
/// shared store (PostgreSQL) every intent whose replica stopped beating (`Storage::claim_intents`,
/// run at start and every `RECONCILE_EVERY`: the nonce reconciler). Returns the outcome of
/// each, in the store's order.
///
/// An intent whose outcome is still unknown (`Recovered::Kept`: the facilitator or the chain
/// could not be asked, or cannot tell yet) is handed to `recover_later`, which keeps looking in
/// the background of this run instead of waiting for the next start.
pub async fn recover(state: &Arc<State>) -> Vec<(String, Recovered)> {
    let intents = match state.store.claim_intents().await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(%e, "settlement intents unreadable");
            return Vec::new();
        }
    };
    let mut out = Vec::with_capacity(intents.len());
    for rec in intents {
        let r = recover_one(state, rec.clone()).await;
        // What recovery finished stays finished through another crash (a restart loop does
        // not redo it); intents are rare, so one fsync each is cheap.
        if let Err(e) = state.store.sync_intents().await {
            tracing::warn!(%e, intent = %rec.id, "recovered intent not flushed");
        }
        tracing::info!(intent = %rec.id, payer = %rec.payer, outcome = ?r, "settlement intent recovered");
        let label = match r {
            Recovered::Credited => "credited",
            Recovered::NothingMoved => "nothing_moved",
            Recovered::Kept => "kept",
            Recovered::Unresolved => "unresolved",
        };
        metrics::counter!("vectorway_x402_intents_recovered_total", "outcome" => label)
            .increment(1);
        if r == Recovered::Kept {
            recover_later(state, rec.id.clone());
        }
        out.push((rec.id, r));
    }
    out
}

async fn recover_one(state: &State, mut rec: IntentRecord) -> Recovered {
    let nonce_marker = format!("x402:{}", rec.id);
    let transaction = match &rec.state {
        IntentState::Unresolved { .. } => return Recovered::Unresolved,
        IntentState::Settled { transaction } => transaction.clone(),
        IntentState::Pending => {
            let request = match serde_json::from_value(rec.request.clone()) {
                Ok(r) => r,
                Err(e) => {
                    return unresolved(state, &mut rec, &format!("unreadable request: {e}")).await;
                }
            };
            let Some((network, nonce)) = lookup_parts(state, &rec.id) else {
                return unresolved(
                    state,
                    &mut rec,
                    "the payment's network is no longer configured",
                )
                .await;
            };
            let lookup = Lookup {
                network: &network,
                from: rec.payer,
                nonce,
                valid_before: rec.valid_before,
                request: &request,
                transaction: None,
                marker: &nonce_marker,
            };
            // Whatever happened before: the chain (or the facilitator) says, and the payment is
            // settled again if it is still good.
            let before =
                PaymentError::Facilitator("an earlier attempt's outcome is unknown".into());
            match state.payments.resolver().look(&lookup, &before, true).await {
                Outcome::Moved(transaction) => transaction,
                Outcome::NotMoved(e) => {
                    tracing::info!(intent = %rec.id, reason = %e, "nothing moved; intent forgotten");
                    forget(state, &rec.id).await;
                    return Recovered::NothingMoved;
                }
                // Past its window the authorization can no longer be judged (without a chain,
                // or with one that cannot say which transaction spent it): the operator decides.
                Outcome::Unknown(e) if crate::payments::unix_now() > rec.valid_before => {
                    return unresolved(state, &mut rec, &e.to_string()).await;
                }
                Outcome::Unknown(e) => {
                    tracing::warn!(%e, intent = %rec.id, "settlement still unknown; kept");
                    return Recovered::Kept;
                }
            }
        }
    };
    // A credit written before the crash carries the transaction, or the marker.
    if state
        .store
        .ledger_has_reference(&rec.credited(), &nonce_marker, rec.created_ms)
        .await
        .unwrap_or(false)
    {
        forget(state, &rec.id).await;
        return Recovered::Credited;
    }
    match credit_owed(state, &rec, &transaction, false).await {
        Ok(_) => Recovered::Credited,
        Err(_) => Recovered::Kept,
    }
}

/// Recovers one intent in the background: a few attempts with growing pauses while its
/// authorization is valid; what is still open after that waits for the next start.
fn recover_later(state: &Arc<State>, id: String) {
    let store = state.store.clone();
    let me = state.clone();
    drop(state.effects.spawn("settlement retry", async move {
        // A facilitator that just failed is given time; the authorization stays valid for
        // minutes (x402's maxTimeoutSeconds), and the next start retries too. 5 s, 15 s, 45 s,
        // then every 2 minutes: at least six looks, and on until the authorization has
        // expired (past it, a look always decides: paid, not paid, or unresolved for the
        // operator; only a failing credit stays open, for the next start).
        let mut pause = Duration::from_secs(5);
        for attempt in 1.. {
            tokio::time::sleep(pause).await;
            let Ok(Some(rec)) = store.intent(&id).await else {
                return;
            };
            let expired = crate::payments::unix_now() > rec.valid_before;
            match recover_one(&me, rec).await {
                Recovered::Kept if attempt >= 6 && expired => {
                    // On a shared store the next reconcile pass takes it up again.
                    if let Err(e) = store.release_intent(&id).await {
                        tracing::warn!(%e, intent = %id, "intent not released");
                    }
                    return;
                }
                Recovered::Kept => pause = (pause * 3).min(Duration::from_secs(120)),
                done => {
                    tracing::info!(intent = %id, outcome = ?done, "settlement recovered");
                    return;
                }
            }
        }
    }));
}

/// The configured network and the nonce of an intent, from its id (the replay key: chain id ‖
/// asset ‖ from ‖ nonce).
fn lookup_parts(state: &State, id: &str) -> Option<(Network, [u8; 32])> {
    let key: [u8; 80] = hex::decode(id).ok()?.try_into().ok()?;
    let (chain_id, asset, nonce) = crate::payments::verify::split_replay_key(&key);
    let network = state
        .config
        .x402
        .networks
        .iter()
        .find(|n| n.chain_id == chain_id && *n.asset.as_bytes() == asset)?
        .clone();
    Some((network, nonce))
}

async fn unresolved(state: &State, rec: &mut IntentRecord, reason: &str) -> Recovered {
    rec.state = IntentState::Unresolved {
        reason: reason.to_string(),
    };
    match state.store.update_intent(rec).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::error!(intent = %rec.id, "unresolved intent owned by another replica")
        }
        Err(e) => tracing::error!(%e, intent = %rec.id, "unresolved intent not stored"),
    }
    metrics::counter!("vectorway_x402_intents_unresolved_total").increment(1);
    tracing::error!(intent = %rec.id, payer = %rec.payer, reason,
        "x402 settlement unresolved: check the chain and credit by hand");
    Recovered::Unresolved
}

/// A payment's checks before any work: for a stream, the payer is not blocked; for every
/// payment, the facilitator's `/verify` (balance, authorization state) accepts it.
pub async fn preflight(state: &State, v: &Verified, stream: bool) -> Result<(), PaymentError> {
    if stream && state.settler.is_blocked(&v.payer) {
        return Err(PaymentError::SettlementRefused {
            reason: "insufficient_funds".into(),
            message: Some(
                "an earlier paid stream of this payer failed to settle; pay a unary call or a \
                 top-up first"
                    .into(),
            ),
        });
    }
    let answer = state
        .payments
        .facilitator()
        .verify(&v.facilitator_request())
        .await?;
    if answer.is_valid {
        Ok(())
    } else {
        Err(PaymentError::SettlementRefused {
            reason: answer
                .invalid_reason
                .unwrap_or_else(|| "unexpected_verify_error".into()),
            message: answer.invalid_message,
        })
    }
}
