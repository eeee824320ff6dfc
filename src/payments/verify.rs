//! Local verification of an `exact` EVM payment: pure checks, then the atomic nonce claim, last.
//!
//! Order (each step only reads the payment and the configuration):
//! 1. scheme `exact` (`unsupported_scheme`);
//! 2. the network is one we offer, named the way the payload's version names networks
//!    (`invalid_network`); for version 2, `accepted.asset` is that network's USDC
//!    (`invalid_payment_requirements`) and `accepted.payTo` is ours;
//! 3. `authorization.to` is our `payTo` (`…_recipient_mismatch`);
//! 4. `value ≥ quote` (`…_authorization_value_mismatch`); overpayment is kept as change;
//! 5. `validAfter ≤ now` (`…_valid_after`) and `now < validBefore − 6` (expired);
//! 6. the EIP-712 `TransferWithAuthorization` digest, built from *our* network's domain (chain id,
//!    USDC address, name, version) and never from the payload, recovers (65 bytes, low s) to
//!    `authorization.from` (`…_signature`).
//!
//! Only then is the nonce claimed in the store under chain ‖ asset ‖ from ‖ nonce, so a payment
//! that fails any check above cannot burn someone's nonce, and a replay fails with 409.

use super::PaymentError;
use super::header::{Authorization, DecodedPayment, parse_address};
use super::requirements::SCHEME_EXACT;
use super::types::Version;
use crate::config::{Network, X402Config};
use crate::crypto::{
    eip712_digest, eip712_domain_separator, keccak256, keccak256_parts, recover, word_address,
};
use crate::storage::Store;
use crate::wallet::Wallet;

/// Seconds of margin before `validBefore`, for block time and settlement latency (reference §2.4).
pub const VALID_BEFORE_MARGIN_S: u64 = 6;

/// The largest payment accepted (2^62 atomic USDC), so that change credited from it can never
/// overflow a balance.
pub const MAX_PAYMENT: u64 = 1 << 62;

/// The type string hashed into the EIP-3009 typehash.
const TRANSFER_TYPE: &[u8] = b"TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)";

/// Why a payment that decoded does not satisfy our requirements (answered with 402).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    UnsupportedScheme,
    InvalidNetwork,
    AssetMismatch,
    RecipientMismatch,
    ValueMismatch,
    Signature,
}

impl Reason {
    /// The x402 `invalidReason` string (spec v2 §9 names).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::UnsupportedScheme => "unsupported_scheme",
            Reason::InvalidNetwork => "invalid_network",
            Reason::AssetMismatch => "invalid_payment_requirements",
            Reason::RecipientMismatch => "invalid_exact_evm_payload_recipient_mismatch",
            Reason::ValueMismatch => "invalid_exact_evm_payload_authorization_value_mismatch",
            Reason::Signature => "invalid_exact_evm_payload_signature",
        }
    }
}

/// A payment that passed every pure check; the nonce is not claimed yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub network: Network,
    pub payer: Wallet,
    /// The authorized value, atomic USDC (≥ the quote).
    pub amount: u64,
    /// `validBefore`, saturated to `u64`: how long the nonce claim must be kept.
    pub valid_before: u64,
    pub nonce: [u8; 32],
}

impl Checked {
    /// The replay key: chain id (8, big-endian) ‖ asset (20) ‖ from (20) ‖ nonce (32).
    pub fn nonce_key(&self) -> [u8; 80] {
        replay_key(&self.network, &self.payer, &self.nonce)
    }
}

/// The replay key of an authorization: chain id (8, big-endian) ‖ asset (20) ‖ from (20) ‖
/// nonce (32).
pub fn replay_key(network: &Network, from: &Wallet, nonce: &[u8; 32]) -> [u8; 80] {
    let mut k = [0u8; 80];
    k[..8].copy_from_slice(&network.chain_id.to_be_bytes());
    k[8..28].copy_from_slice(network.asset.as_bytes());
    k[28..48].copy_from_slice(from.as_bytes());
    k[48..].copy_from_slice(nonce);
    k
}

/// The parts of a replay key (`replay_key`'s layout read back): chain id, asset, nonce.
pub fn split_replay_key(k: &[u8; 80]) -> (u64, [u8; 20], [u8; 32]) {
    let mut chain_id = [0u8; 8];
    chain_id.copy_from_slice(&k[..8]);
    let mut asset = [0u8; 20];
    asset.copy_from_slice(&k[8..28]);
    let mut nonce = [0u8; 32];
    nonce.copy_from_slice(&k[48..]);
    (u64::from_be_bytes(chain_id), asset, nonce)
}

/// The EIP-712 digest of a `TransferWithAuthorization` under `net`'s USDC domain.
pub fn transfer_digest(net: &Network, a: &Authorization) -> [u8; 32] {
    let domain = eip712_domain_separator(
        &net.eip712_name,
        &net.eip712_version,
        net.chain_id,
        &net.asset,
    );
    let struct_hash = keccak256_parts(&[
        &keccak256(TRANSFER_TYPE),
        &word_address(&a.from),
        &word_address(&a.to),
        a.value.as_word(),
        a.valid_after.as_word(),
        a.valid_before.as_word(),
        &a.nonce,
    ]);
    eip712_digest(&domain, &struct_hash)
}

/// Every check except the nonce claim. Pure: the same inputs give the same answer.
pub fn check(
    cfg: &X402Config,
    p: &DecodedPayment,
    quote: u64,
    now: u64,
) -> Result<Checked, PaymentError> {
    let unsatisfied = |r: Reason, detail: String| PaymentError::Unsatisfied { reason: r, detail };
    let scheme = p.payload.scheme();
    if scheme != SCHEME_EXACT {
        return Err(unsatisfied(
            Reason::UnsupportedScheme,
            format!("scheme {scheme:?} is not offered; use \"exact\""),
        ));
    }
    let version = p.version();
    let wanted = p.payload.network();
    let net = cfg
        .networks
        .iter()
        .find(|n| match version {
            Version::V1 => *n.name == *wanted,
            Version::V2 => *n.caip2 == *wanted,
        })
        .ok_or_else(|| {
            unsatisfied(
                Reason::InvalidNetwork,
                format!("network {wanted:?} is not offered"),
            )
        })?;
    if let Some(accepted) = p.accepted() {
        let asset = parse_address(&accepted.asset, "accepted.asset")?;
        if asset != net.asset {
            return Err(unsatisfied(
                Reason::AssetMismatch,
                format!("asset {asset} is not USDC on {}", net.caip2),
            ));
        }
        let pay_to = parse_address(&accepted.pay_to, "accepted.payTo")?;
        if pay_to != cfg.pay_to {
            return Err(unsatisfied(
                Reason::RecipientMismatch,
                format!("accepted.payTo {pay_to} is not ours"),
            ));
        }
    }
    let a = &p.authorization;
    if a.to != cfg.pay_to {
        return Err(unsatisfied(
            Reason::RecipientMismatch,
            format!("the authorization pays {}, not {}", a.to, cfg.pay_to),
        ));
    }
    let amount = match a.value.to_u64() {
        Some(v) if v > MAX_PAYMENT => {
            return Err(unsatisfied(
                Reason::ValueMismatch,
                format!("value {v} is above the largest accepted payment {MAX_PAYMENT}"),
            ));
        }
        Some(v) if v < quote => {
            return Err(unsatisfied(
                Reason::ValueMismatch,
                format!("value {v} is below the quote of {quote} atomic USDC"),
            ));
        }
        Some(v) => v,
        None => {
            return Err(unsatisfied(
                Reason::ValueMismatch,
                "value is above the largest accepted payment".into(),
            ));
        }
    };
    let valid_after = a.valid_after.saturating_u64();
    if valid_after > now {
        return Err(PaymentError::NotYetValid { valid_after, now });
    }
    let valid_before = a.valid_before.saturating_u64();
    if now.saturating_add(VALID_BEFORE_MARGIN_S) >= valid_before {
        return Err(PaymentError::Expired { valid_before, now });
    }
    let digest = transfer_digest(net, a);
    match recover(&digest, &p.signature) {
        Ok(signer) if signer == a.from => {}
        Ok(signer) => {
            return Err(unsatisfied(
                Reason::Signature,
                format!("the signature recovers to {signer}, not {}", a.from),
            ));
        }
        Err(e) => return Err(unsatisfied(Reason::Signature, e.to_string())),
    }
    Ok(Checked {
        network: net.clone(),
        payer: a.from,
        amount,
        valid_before,
        nonce: a.nonce,
    })
}

/// Claims the nonce of a checked payment: the first claim wins, every later one is a replay.
pub fn claim(store: &Store, checked: &Checked) -> Result<(), PaymentError> {
    if store.claim_x402_nonce(&checked.nonce_key(), checked.valid_before)? {
        Ok(())
    } else {
        Err(PaymentError::NonceReused)
    }
}

/// `check`, then `claim`.
pub fn verify(
    cfg: &X402Config,
    store: &Store,
    p: &DecodedPayment,
    quote: u64,
    now: u64,
) -> Result<Checked, PaymentError> {
    let checked = check(cfg, p, quote, now)?;
    claim(store, &checked)?;
    Ok(checked)
}

#[cfg(test)]
mod tests;
