//! Settlement intents: a durable note, written before a payment is sent to the facilitator, of
//! what the gateway owes the payer once it settles; and the idempotency records' upkeep.
//!
//! An intent is keyed by its id (the payment's replay key, hex) in sled's `intents` tree. It is
//! fsynced before settlement starts, so a crash at any instant after money can have moved leaves
//! a record that start-up completes: it settles again (or learns that it already settled) and
//! credits what is owed, exactly once, by checking the payer's ledger for the credit's
//! reference before writing it.

use serde::{Deserialize, Serialize};

use super::{IdemRecord, LedgerKind, StorageError, Store};
use crate::wallet::Wallet;

/// Where an intent stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum IntentState {
    /// Written before settlement: the money may or may not have moved.
    Pending,
    /// The facilitator reported this transaction: the money moved.
    Settled { transaction: String },
    /// Recovery could not tell whether the money moved (the authorization expired before the
    /// facilitator answered again): kept for the operator, shown in `/status`.
    Unresolved { reason: String },
}

/// What a settled payment is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "purpose", rename_all = "snake_case")]
pub enum IntentPurpose {
    /// Money in (onboard, purchase, top-up): the whole payment becomes credits of `kind`, for
    /// the payer, or for `to` (an agent account a top-up named).
    Credit {
        kind: LedgerKind,
        note: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<Wallet>,
    },
    /// A paid call: the payment minus what the call keeps comes back as a `refund`. `kept` is
    /// unknown until the call ends; a call interrupted by a crash keeps nothing.
    Call {
        request_id: String,
        kept: Option<u64>,
    },
}

/// A payment on its way to the facilitator and what it buys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentRecord {
    pub id: String,
    pub payer: Wallet,
    /// Atomic USDC authorized (= credits).
    pub paid: u64,
    /// The authorization's `validBefore` (Unix seconds).
    pub valid_before: u64,
    /// The facilitator request body (`x402Version`, `paymentPayload`, `paymentRequirements`).
    pub request: serde_json::Value,
    /// The network as the payment's version names it (for the settlement record).
    pub network: String,
    pub purpose: IntentPurpose,
    pub state: IntentState,
    pub created_ms: u64,
}

impl IntentRecord {
    /// The account what this intent owes is credited to.
    pub fn credited(&self) -> Wallet {
        match &self.purpose {
            IntentPurpose::Credit { to: Some(to), .. } => *to,
            _ => self.payer,
        }
    }
}

/// How far out of time order ledger entries can be appended (the journal's window is at most
/// 1 s; a stalled fsync adds to it), with a wide margin.
pub(super) const REORDER_SLACK_MS: u64 = 5 * 60 * 1000;

/// How long a replica owns an intent on PostgreSQL without beating (as long as its credit
/// leases: `billing::lease::TTL`); past it another replica claims and resolves the intent.
pub const INTENT_TTL_MS: u64 = 10_000;

impl Store {
    /// Writes an intent and fsyncs it before returning.
    pub async fn put_intent_durable(&self, rec: &IntentRecord) -> Result<(), StorageError> {
        self.intents
            .insert(rec.id.as_bytes(), serde_json::to_vec(rec)?)?;
        self.flush().await
    }

    /// Rewrites an intent without waiting for the disk (recovery tolerates losing the update).
    pub fn update_intent(&self, rec: &IntentRecord) -> Result<(), StorageError> {
        self.intents
            .insert(rec.id.as_bytes(), serde_json::to_vec(rec)?)?;
        Ok(())
    }

    pub fn intent(&self, id: &str) -> Result<Option<IntentRecord>, StorageError> {
        match self.intents.get(id.as_bytes())? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// Forgets a finished intent.
    pub fn remove_intent(&self, id: &str) -> Result<(), StorageError> {
        self.intents.remove(id.as_bytes())?;
        Ok(())
    }

    /// Every intent still open, oldest first by id order.
    pub fn intents(&self) -> Result<Vec<IntentRecord>, StorageError> {
        self.intents
            .iter()
            .values()
            .map(|v| Ok(serde_json::from_slice(&v?)?))
            .collect()
    }

    /// True when `wallet`'s ledger has an entry with `reference` written at or after
    /// `since_ms`. Entries are appended in commit order, not time order (a debit stamped before
    /// a credit may be group-committed after it), so the walk stops only at an entry five
    /// minutes older than `since_ms`.
    pub fn ledger_has_reference(
        &self,
        wallet: &Wallet,
        reference: &str,
        since_ms: u64,
    ) -> Result<bool, StorageError> {
        for entry in self.ledger_of(wallet) {
            let entry = entry?;
            if entry.ts_ms < since_ms.saturating_sub(REORDER_SLACK_MS) {
                break;
            }
            if entry.reference.as_deref() == Some(reference) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Idempotency upkeep: forgets answers stored before `expire_before` and in-progress claims
    /// made before `claims_before` (Unix seconds; at start-up every claim, since no request
    /// survives a restart). Returns how many records were removed.
    pub fn idem_sweep(
        &self,
        expire_before: u64,
        claims_before: u64,
    ) -> Result<usize, StorageError> {
        let mut removed = 0;
        for kv in self.idempotency.iter() {
            let (k, v) = kv?;
            let stale = match serde_json::from_slice::<IdemRecord>(&v) {
                Ok(r) if r.status == 0 => r.created_at < claims_before,
                Ok(r) => r.created_at < expire_before,
                Err(_) => true,
            };
            if stale {
                // Only if unchanged: a request may have claimed the key again meanwhile.
                if self
                    .idempotency
                    .compare_and_swap(&k, Some(&v), None as Option<&[u8]>)?
                    .is_ok()
                {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}
