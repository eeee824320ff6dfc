//! The facilitator simulator: x402 `/verify`, `/settle`, `/supported` with real signature checks and a USDC ledger.
//!
//! Mounted under `/facilitator/` on the simulator server. It checks EIP-3009 signatures for real,
//! through its own small code path (the EIP-712 digest is built inline with `sha3` and recovered
//! with `k256` directly; it shares nothing with `crate::crypto` or `payments::verify`, so a bug
//! there cannot agree with itself here). It keeps a USDC balance per address (an unseen address
//! starts with `default_balance`, $1000 unless changed, so a default `serve` works out of the
//! box) and the set of used `(from, nonce)` pairs, so insufficient funds and double spends fail
//! the way real facilitators fail: HTTP 200 with `isValid:false` / `success:false` and a reason.
//!
//! Control endpoints: `POST _balance {address, amount}` sets a balance (atomic units);
//! `GET _balance?address=0x…` reads one; `POST _default_balance {amount}`; `GET _stats` counts
//! calls; `POST _faults {endpoint?, status?, body?, delay_ms?, after_ms?, times?}` makes the next
//! calls fail or answer late (`after_ms`: after the work is done);
//! `POST _reset` forgets balances, nonces, counts and faults.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha3::{Digest, Keccak256};

use crate::http::{Body, bytes_response, json as json_response, query_pairs, read_body};

/// Atomic USDC an address holds before anyone sets it: $1000.
pub const DEFAULT_BALANCE: u64 = 1_000_000_000;

/// How many calls the simulator has answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FacilitatorStats {
    pub verify: u64,
    pub settle: u64,
    /// Settlements that moved money.
    pub settled: u64,
    /// Settlements refused (`success:false`).
    pub refused: u64,
    pub supported: u64,
}

/// Failures to inject into `/verify` and `/settle`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FacilitatorFaults {
    /// "verify" or "settle"; `None` for both.
    pub endpoint: Option<String>,
    /// Answer with this status and `body` instead of doing the work.
    pub status: Option<u16>,
    pub body: Option<String>,
    /// Wait this long first (then fail with `status`, or answer normally).
    pub delay_ms: Option<u64>,
    /// Do the work (a settlement moves the money), then wait this long before answering: a
    /// facilitator whose answer is late or lost after the transfer happened.
    pub after_ms: Option<u64>,
    /// How many calls the faults apply to; `None` for all of them.
    pub times: Option<u32>,
}

#[derive(Default)]
struct Books {
    balances: HashMap<[u8; 20], u128>,
    used: HashSet<([u8; 20], [u8; 32])>,
    transfers: u64,
}

/// The simulator's USDC ledger, counters and faults.
pub struct Ledger {
    books: Mutex<Books>,
    default_balance: AtomicU64,
    faults: Mutex<FacilitatorFaults>,
    verify: AtomicU64,
    settle: AtomicU64,
    settled: AtomicU64,
    refused: AtomicU64,
    supported: AtomicU64,
}

impl Default for Ledger {
    fn default() -> Self {
        Self {
            books: Mutex::new(Books::default()),
            default_balance: AtomicU64::new(DEFAULT_BALANCE),
            faults: Mutex::new(FacilitatorFaults::default()),
            verify: AtomicU64::new(0),
            settle: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            supported: AtomicU64::new(0),
        }
    }
}

impl Ledger {
    pub fn set_balance(&self, address: [u8; 20], amount: u64) {
        let mut b = self.books.lock().unwrap_or_else(|p| p.into_inner());
        b.balances.insert(address, u128::from(amount));
    }

    pub fn balance(&self, address: &[u8; 20]) -> u64 {
        let b = self.books.lock().unwrap_or_else(|p| p.into_inner());
        let bal = b.balances.get(address).copied();
        let bal = bal.unwrap_or_else(|| u128::from(self.default_balance.load(Ordering::Relaxed)));
        u64::try_from(bal).unwrap_or(u64::MAX)
    }

    pub fn set_default_balance(&self, amount: u64) {
        self.default_balance.store(amount, Ordering::Relaxed);
    }

    pub fn set_faults(&self, faults: FacilitatorFaults) {
        *self.faults.lock().unwrap_or_else(|p| p.into_inner()) = faults;
    }

    pub fn stats(&self) -> FacilitatorStats {
        FacilitatorStats {
            verify: self.verify.load(Ordering::Relaxed),
            settle: self.settle.load(Ordering::Relaxed),
            settled: self.settled.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            supported: self.supported.load(Ordering::Relaxed),
        }
    }

    pub fn reset(&self) {
        *self.books.lock().unwrap_or_else(|p| p.into_inner()) = Books::default();
        self.set_faults(FacilitatorFaults::default());
        self.default_balance
            .store(DEFAULT_BALANCE, Ordering::Relaxed);
        for c in [
            &self.verify,
            &self.settle,
            &self.settled,
            &self.refused,
            &self.supported,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// The fault to apply to a call of `endpoint`, consuming one of its `times`.
    fn take_fault(&self, endpoint: &str) -> Option<FacilitatorFaults> {
        let mut f = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        if f.status.is_none() && f.delay_ms.is_none() && f.after_ms.is_none() {
            return None;
        }
        if f.endpoint.as_deref().is_some_and(|e| e != endpoint) || f.times == Some(0) {
            return None;
        }
        let current = f.clone();
        match f.times {
            Some(1) => *f = FacilitatorFaults::default(),
            Some(n) => f.times = Some(n - 1),
            None => {}
        }
        Some(current)
    }

    /// Verifies, and for a settlement moves the money, atomically with the nonce and balance check.
    fn execute(&self, t: &Transfer, settle: bool) -> Result<u64, &'static str> {
        let mut b = self.books.lock().unwrap_or_else(|p| p.into_inner());
        if b.used.contains(&(t.from, t.nonce)) {
            return Err("invalid_exact_evm_nonce_already_used");
        }
        let default = u128::from(self.default_balance.load(Ordering::Relaxed));
        let have = b.balances.get(&t.from).copied().unwrap_or(default);
        if have < t.value {
            return Err("insufficient_funds");
        }
        if !settle {
            return Ok(0);
        }
        b.balances.insert(t.from, have - t.value);
        let to = b.balances.get(&t.to).copied().unwrap_or(default);
        b.balances.insert(t.to, to.saturating_add(t.value));
        b.used.insert((t.from, t.nonce));
        b.transfers += 1;
        Ok(b.transfers)
    }
}

/// Serves one `/facilitator/<what>` request.
pub async fn route(
    ledger: &Ledger,
    method: &Method,
    what: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let bytes = match read_body(&parts.headers, body, 1 << 20).await {
        Ok(b) => b,
        Err(e) => {
            return json_response(StatusCode::BAD_REQUEST, &json!({"error": e.to_string()}));
        }
    };
    match (method.as_str(), what) {
        ("POST", "verify" | "settle") => {
            let settle = what == "settle";
            let counter = if settle {
                &ledger.settle
            } else {
                &ledger.verify
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let mut after = None;
            if let Some(f) = ledger.take_fault(what) {
                if let Some(ms) = f.delay_ms {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                if let Some(status) = f.status {
                    return fault_response(status, f.body.as_deref());
                }
                after = f.after_ms;
            }
            let res = answer(ledger, &bytes, settle);
            if let Some(ms) = after {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            res
        }
        ("GET", "supported") => {
            ledger.supported.fetch_add(1, Ordering::Relaxed);
            let mut kinds = Vec::new();
            for (v1, caip2) in [("base", "eip155:8453"), ("base-sepolia", "eip155:84532")] {
                kinds.push(json!({"x402Version": 1, "scheme": "exact", "network": v1}));
                kinds.push(json!({"x402Version": 2, "scheme": "exact", "network": caip2}));
            }
            json_response(
                StatusCode::OK,
                &json!({"kinds": kinds, "extensions": [], "signers": {}}),
            )
        }
        ("POST", "_balance") => {
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            match (address(&v["address"]), amount(&v["amount"])) {
                (Some(a), Some(n)) => {
                    ledger.set_balance(a, n);
                    json_response(
                        StatusCode::OK,
                        &json!({"address": v["address"], "balance": n}),
                    )
                }
                _ => json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "want {\"address\": \"0x…\", \"amount\": atomic units}"}),
                ),
            }
        }
        ("GET", "_balance") => {
            let q = query_pairs(parts.uri.query());
            let a = q
                .iter()
                .find(|(k, _)| k == "address")
                .map(|(_, v)| v.clone());
            match a.as_deref().and_then(|s| address(&Value::String(s.into()))) {
                Some(addr) => json_response(
                    StatusCode::OK,
                    &json!({"address": a, "balance": ledger.balance(&addr)}),
                ),
                None => json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "want ?address=0x…"}),
                ),
            }
        }
        ("POST", "_default_balance") => {
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            match amount(&v["amount"]) {
                Some(n) => {
                    ledger.set_default_balance(n);
                    json_response(StatusCode::OK, &json!({"default_balance": n}))
                }
                None => json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "want {\"amount\": atomic units}"}),
                ),
            }
        }
        ("POST", "_faults") => match serde_json::from_slice::<FacilitatorFaults>(&bytes) {
            Ok(f) => {
                ledger.set_faults(f.clone());
                json_response(StatusCode::OK, &f)
            }
            Err(e) => json_response(StatusCode::BAD_REQUEST, &json!({"error": e.to_string()})),
        },
        ("GET", "_stats") => json_response(StatusCode::OK, &ledger.stats()),
        ("POST", "_reset") => {
            ledger.reset();
            json_response(StatusCode::OK, &json!({"ok": true}))
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no facilitator endpoint {method} {what}")}),
        ),
    }
}

fn fault_response(status: u16, body: Option<&str>) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = body
        .unwrap_or(r#"{"error":"simulated facilitator fault"}"#)
        .to_string();
    let ct = if body.trim_start().starts_with('<') {
        HeaderValue::from_static("text/html")
    } else {
        HeaderValue::from_static("application/json")
    };
    bytes_response(status, ct, body)
}

/// A verify or settle answer for a request body.
fn answer(ledger: &Ledger, body: &[u8], settle: bool) -> Response<Body> {
    let parsed = serde_json::from_slice::<Value>(body)
        .map_err(|_| "invalid_payload")
        .and_then(|v| parse(&v).map(|t| (v, t)));
    let (network, outcome) = match &parsed {
        Err(reason) => (String::new(), Err(*reason)),
        Ok((_, t)) => (
            t.network.clone(),
            check(t, unix_now()).and_then(|()| ledger.execute(t, settle)),
        ),
    };
    let payer = parsed
        .as_ref()
        .ok()
        .map(|(_, t)| format!("0x{}", hex::encode(t.from)));
    let status = if parsed.is_err() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    if !settle {
        let mut out = json!({"isValid": outcome.is_ok()});
        if let Err(reason) = outcome {
            out["invalidReason"] = reason.into();
        }
        if let Some(p) = payer {
            out["payer"] = p.into();
        }
        return json_response(status, &out);
    }
    let mut out = json!({"network": network});
    match (outcome, &parsed) {
        (Ok(n), Ok((_, t))) => {
            ledger.settled.fetch_add(1, Ordering::Relaxed);
            let tx = keccak(&[
                b"vectorway-simulated-transfer",
                &t.from,
                &t.nonce,
                &n.to_be_bytes(),
            ]);
            out["success"] = true.into();
            out["transaction"] = format!("0x{}", hex::encode(tx)).into();
            out["amount"] = t.value.to_string().into();
        }
        (failed, _) => {
            ledger.refused.fetch_add(1, Ordering::Relaxed);
            out["success"] = false.into();
            out["transaction"] = "".into();
            out["errorReason"] = failed.err().unwrap_or("unexpected_settle_error").into();
        }
    }
    if let Some(p) = payer {
        out["payer"] = p.into();
    }
    json_response(status, &out)
}

/// The facts of one transfer, read from a `{x402Version, paymentPayload, paymentRequirements}` body.
struct Transfer {
    network: String,
    chain_id: u64,
    asset: [u8; 20],
    pay_to: [u8; 20],
    amount: u128,
    domain_name: String,
    domain_version: String,
    from: [u8; 20],
    to: [u8; 20],
    value: u128,
    valid_after: u64,
    valid_before: u64,
    nonce: [u8; 32],
    signature: Vec<u8>,
}

fn parse(body: &Value) -> Result<Transfer, &'static str> {
    let req = &body["paymentRequirements"];
    let pay = &body["paymentPayload"];
    if req["scheme"].as_str() != Some("exact") {
        return Err("unsupported_scheme");
    }
    let network = req["network"]
        .as_str()
        .ok_or("invalid_payment_requirements")?;
    let chain_id = chain_of(network).ok_or("invalid_network")?;
    let (paid_network, paid_scheme) = match body["x402Version"].as_u64() {
        Some(1) => (&pay["network"], &pay["scheme"]),
        Some(2) => (&pay["accepted"]["network"], &pay["accepted"]["scheme"]),
        _ => return Err("invalid_x402_version"),
    };
    if paid_scheme.as_str() != Some("exact") {
        return Err("unsupported_scheme");
    }
    if paid_network.as_str() != Some(network) {
        return Err("invalid_network");
    }
    let amount = req
        .get("amount")
        .or_else(|| req.get("maxAmountRequired"))
        .and_then(decimal)
        .ok_or("invalid_payment_requirements")?;
    let domain_name = req["extra"]["name"]
        .as_str()
        .ok_or("invalid_payment_requirements")?;
    let domain_version = req["extra"]["version"]
        .as_str()
        .ok_or("invalid_payment_requirements")?;
    let auth = &pay["payload"]["authorization"];
    let signature = pay["payload"]["signature"]
        .as_str()
        .and_then(|s| s.strip_prefix("0x"))
        .and_then(|s| hex::decode(s).ok())
        .ok_or("invalid_payload")?;
    let nonce = auth["nonce"]
        .as_str()
        .and_then(|s| s.strip_prefix("0x"))
        .and_then(|s| hex::decode(s).ok())
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or("invalid_payload")?;
    let time = |v: &Value| decimal(v).and_then(|t| u64::try_from(t).ok());
    Ok(Transfer {
        network: network.to_string(),
        chain_id,
        asset: address(&req["asset"]).ok_or("invalid_payment_requirements")?,
        pay_to: address(&req["payTo"]).ok_or("invalid_payment_requirements")?,
        amount,
        domain_name: domain_name.to_string(),
        domain_version: domain_version.to_string(),
        from: address(&auth["from"]).ok_or("invalid_payload")?,
        to: address(&auth["to"]).ok_or("invalid_payload")?,
        value: decimal(&auth["value"]).ok_or("invalid_payload")?,
        valid_after: time(&auth["validAfter"]).ok_or("invalid_payload")?,
        valid_before: time(&auth["validBefore"]).ok_or("invalid_payload")?,
        nonce,
        signature,
    })
}

/// The checks that need no ledger: signature, recipient, time window, amount.
fn check(t: &Transfer, now: u64) -> Result<(), &'static str> {
    if recover_signer(t) != Some(t.from) {
        return Err("invalid_exact_evm_payload_signature");
    }
    if t.to != t.pay_to {
        return Err("invalid_exact_evm_payload_recipient_mismatch");
    }
    if t.valid_before < now.saturating_add(6) {
        return Err("invalid_exact_evm_payload_authorization_valid_before");
    }
    if t.valid_after > now {
        return Err("invalid_exact_evm_payload_authorization_valid_after");
    }
    if t.value != t.amount {
        return Err("invalid_exact_evm_payload_authorization_value_mismatch");
    }
    Ok(())
}

/// Builds the EIP-712 digest of the transfer and recovers its signer; `None` when the signature
/// is not 65 bytes, has a bad `v` or a high `s`, or does not recover.
fn recover_signer(t: &Transfer) -> Option<[u8; 20]> {
    let word = |v: u128| {
        let mut w = [0u8; 32];
        w[16..].copy_from_slice(&v.to_be_bytes());
        w
    };
    let addr_word = |a: &[u8; 20]| {
        let mut w = [0u8; 32];
        w[12..].copy_from_slice(a);
        w
    };
    let domain = keccak(&[
        &keccak(&[
            b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)",
        ]),
        &keccak(&[t.domain_name.as_bytes()]),
        &keccak(&[t.domain_version.as_bytes()]),
        &word(u128::from(t.chain_id)),
        &addr_word(&t.asset),
    ]);
    let message = keccak(&[
        &keccak(&[b"TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"]),
        &addr_word(&t.from),
        &addr_word(&t.to),
        &word(t.value),
        &word(u128::from(t.valid_after)),
        &word(u128::from(t.valid_before)),
        &t.nonce,
    ]);
    let digest = keccak(&[b"\x19\x01", &domain, &message]);
    if t.signature.len() != 65 {
        return None;
    }
    let sig = Signature::from_slice(&t.signature[..64]).ok()?;
    if sig.normalize_s().is_some() {
        return None;
    }
    let v = match t.signature[64] {
        0 | 27 => 0,
        1 | 28 => 1,
        _ => return None,
    };
    let key = VerifyingKey::recover_from_prehash(&digest, &sig, RecoveryId::from_byte(v)?).ok()?;
    let point = key.to_encoded_point(false);
    let hash = keccak(&[&point.as_bytes()[1..]]);
    let mut out = [0u8; 20];
    out.copy_from_slice(&hash[12..]);
    Some(out)
}

fn keccak(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Keccak256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn chain_of(network: &str) -> Option<u64> {
    match network {
        "base" => Some(8453),
        "base-sepolia" => Some(84532),
        _ => network.strip_prefix("eip155:")?.parse().ok(),
    }
}

fn address(v: &Value) -> Option<[u8; 20]> {
    let s = v.as_str()?.strip_prefix("0x")?;
    let b = hex::decode(s).ok()?;
    <[u8; 20]>::try_from(b).ok()
}

/// A decimal string (or, for the control endpoints, a JSON integer).
fn decimal(v: &Value) -> Option<u128> {
    match v {
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        _ => None,
    }
}

fn amount(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| decimal(v).and_then(|n| u64::try_from(n).ok()))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
