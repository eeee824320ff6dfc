//! The record types the store keeps: accounts, keys, ledger entries, usage events, key totals,
//! refresh tokens and idempotency records (values are JSON in every backend).

use serde::{Deserialize, Serialize};

use crate::wallet::Wallet;

/// A wallet's account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountRecord {
    pub wallet: Wallet,
    pub created_at: u64,
}

/// An API key; only the SHA-256 of its secret is kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    pub key_id: String,
    pub wallet: Wallet,
    pub secret_sha256: String,
    pub key_name: String,
    pub created_at: u64,
    pub last_used_at: Option<u64>,
    pub revoked_at: Option<u64>,
}

/// The kinds of credit movement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LedgerKind {
    Topup,
    Grant,
    Refund,
    Debit,
}

/// One credit movement. `credits` is signed: positive in, negative out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub seq: u64,
    pub ts_ms: u64,
    pub wallet: Wallet,
    pub kind: LedgerKind,
    pub credits: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One API call, as the usage history shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UsageEvent {
    pub seq: u64,
    pub ts_ms: u64,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub latency_ms: u64,
    pub credits: u64,
    pub usd_cost: Option<String>,
    pub model: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub memory_read: bool,
    pub memory_write: bool,
    pub memories_used: u32,
    pub key_id: Option<String>,
    pub auth_mode: String,
    pub request_id: String,
    /// An x402 call's settlement transaction, once it settled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<String>,
}

/// A key's chat totals: what the agent-router usage view reports per key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyTotals {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub credits: u64,
}

/// One issued refresh token (the JWT carries its id).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshRecord {
    pub family: String,
    pub wallet: Wallet,
    pub expires_at: u64,
    pub used: bool,
}

/// A stored answer to an idempotent request; `status == 0` marks one still in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdemRecord {
    pub body_sha256: String,
    pub status: u16,
    pub body: String,
    pub created_at: u64,
}

/// What an idempotency key says about a new request.
#[derive(Debug, Clone)]
pub enum IdemBegin {
    /// First use: go ahead, then `idem_finish`.
    Fresh,
    /// Same key, same body, finished: replay this answer.
    Replay(IdemRecord),
    /// Same key, different body.
    Conflict,
    /// Same key and body, first request still running.
    InProgress,
}
