//! x402 wire types for protocol versions 1 and 2: requirements, 402 bodies, payloads, facilitator answers.
//!
//! Field names are camelCase on the wire. Amounts and times are decimal strings, the nonce is `0x` +
//! 64 hex, and `maxTimeoutSeconds` and `x402Version` are JSON numbers (reference x402-siwe.md
//! §1.2–§1.6 and §3). Unknown fields are ignored on input, because SDKs keep adding optional ones,
//! but an unknown `x402Version` is refused.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::PaymentError;

/// The protocol version of a payload, a 402 answer or a receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    /// The `x402Version` number on the wire.
    pub fn number(self) -> u8 {
        match self {
            Version::V1 => 1,
            Version::V2 => 2,
        }
    }
}

/// One way to pay, as version 1 writes it (in the JSON body of a 402).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequirementsV1 {
    pub scheme: String,
    /// The v1 network name: `base`, `base-sepolia`.
    pub network: String,
    /// Atomic units of `asset`, as a decimal string.
    pub max_amount_required: String,
    /// The URL of the paid resource.
    pub resource: String,
    pub description: String,
    /// Optional in the v1 spec, required by the legacy zod schema; always sent by us.
    #[serde(default)]
    pub mime_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    pub pay_to: String,
    pub max_timeout_seconds: u64,
    pub asset: String,
    /// For EVM `exact`: the EIP-712 domain `{name, version}` of the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

/// One way to pay, as version 2 writes it (in `accepts` and in a payload's `accepted`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequirementsV2 {
    pub scheme: String,
    /// The CAIP-2 network id: `eip155:8453`, `eip155:84532`.
    pub network: String,
    /// Atomic units of `asset`, as a decimal string.
    pub amount: String,
    pub asset: String,
    pub pay_to: String,
    pub max_timeout_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

/// What is being paid for (version 2 moved this out of the requirements).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceInfo {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

/// The version 1 body of a 402 (`PaymentRequirementsResponse`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequiredV1 {
    pub x402_version: u8,
    pub error: String,
    pub accepts: Vec<RequirementsV1>,
}

/// The version 2 `PaymentRequired` object, sent base64-encoded in the `PAYMENT-REQUIRED` header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequiredV2 {
    pub x402_version: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub resource: ResourceInfo,
    pub accepts: Vec<RequirementsV2>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Value>,
}

/// The EIP-3009 `TransferWithAuthorization` message exactly as the client wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationWire {
    pub from: String,
    pub to: String,
    pub value: String,
    pub valid_after: String,
    pub valid_before: String,
    pub nonce: String,
}

/// The `exact` EVM payload: a signature over the authorization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExactPayload {
    pub signature: String,
    pub authorization: AuthorizationWire,
}

/// A version 1 payment (the `X-PAYMENT` header).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayloadV1 {
    pub x402_version: u8,
    pub scheme: String,
    pub network: String,
    pub payload: ExactPayload,
}

/// A version 2 payment (the `PAYMENT-SIGNATURE` header).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayloadV2 {
    pub x402_version: u8,
    /// An echo of the resource; never trusted for pricing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceInfo>,
    /// The requirements the client chose, copied from `accepts`.
    pub accepted: RequirementsV2,
    pub payload: ExactPayload,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Value>,
}

/// A payment of either version.
#[derive(Debug, Clone, PartialEq)]
pub enum PaymentPayload {
    V1(Box<PaymentPayloadV1>),
    V2(Box<PaymentPayloadV2>),
}

impl PaymentPayload {
    /// Reads a payload from parsed JSON, dispatching on `x402Version`. A missing or non-integer
    /// version is malformed; an integer other than 1 or 2 is `invalid_x402_version`.
    pub fn from_value(value: &Value) -> Result<Self, PaymentError> {
        let obj = value
            .as_object()
            .ok_or_else(|| PaymentError::Malformed("the payload is not a JSON object".into()))?;
        let version = obj
            .get("x402Version")
            .ok_or_else(|| PaymentError::Malformed("x402Version is missing".into()))?;
        let n = version
            .as_u64()
            .ok_or_else(|| PaymentError::Malformed("x402Version is not an integer".into()))?;
        let schema = |e: serde_json::Error| PaymentError::Malformed(format!("payload: {e}"));
        match n {
            1 => Ok(PaymentPayload::V1(Box::new(
                PaymentPayloadV1::deserialize(value).map_err(schema)?,
            ))),
            2 => Ok(PaymentPayload::V2(Box::new(
                PaymentPayloadV2::deserialize(value).map_err(schema)?,
            ))),
            other => Err(PaymentError::UnknownVersion(other)),
        }
    }

    pub fn version(&self) -> Version {
        match self {
            PaymentPayload::V1(_) => Version::V1,
            PaymentPayload::V2(_) => Version::V2,
        }
    }

    /// The scheme the payment uses (v2 keeps it in `accepted`).
    pub fn scheme(&self) -> &str {
        match self {
            PaymentPayload::V1(p) => &p.scheme,
            PaymentPayload::V2(p) => &p.accepted.scheme,
        }
    }

    /// The network the payment names (v1 name or CAIP-2 id, as the client wrote it).
    pub fn network(&self) -> &str {
        match self {
            PaymentPayload::V1(p) => &p.network,
            PaymentPayload::V2(p) => &p.accepted.network,
        }
    }

    pub fn exact(&self) -> &ExactPayload {
        match self {
            PaymentPayload::V1(p) => &p.payload,
            PaymentPayload::V2(p) => &p.payload,
        }
    }
}

/// The body of `POST {facilitator}/verify` and `/settle` (reference §3.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FacilitatorRequest {
    pub x402_version: u8,
    pub payment_payload: Value,
    pub payment_requirements: Value,
}

/// A facilitator's answer to `/verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse {
    pub is_valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
}

/// A facilitator's answer to `/settle`, and the receipt we send back in `PAYMENT-RESPONSE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettleResponse {
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    /// The transaction hash; the empty string on failure.
    #[serde(default)]
    pub transaction: String,
    /// The v1 name or the CAIP-2 id, matching the payment's version.
    #[serde(default)]
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
}

/// One payment kind a facilitator supports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportedKind {
    pub x402_version: u8,
    pub scheme: String,
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

/// A facilitator's answer to `GET /supported`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportedResponse {
    pub kinds: Vec<SupportedKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signers: Option<Value>,
}

/// An unsigned 256-bit integer as a 32-byte big-endian word (an EIP-712 `uint256`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uint256(pub [u8; 32]);

impl Uint256 {
    pub const ZERO: Uint256 = Uint256([0u8; 32]);

    pub fn from_u64(v: u64) -> Self {
        let mut w = [0u8; 32];
        w[24..].copy_from_slice(&v.to_be_bytes());
        Uint256(w)
    }

    /// Parses a decimal integer string: ASCII digits only (no sign, no whitespace, no `0x`), at
    /// most 80 of them, and a value below 2^256.
    pub fn parse_decimal(s: &str) -> Option<Self> {
        if s.is_empty() || s.len() > 80 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Little-endian 64-bit limbs; each digit multiplies by ten and adds, refusing overflow.
        let mut limbs = [0u64; 4];
        for b in s.bytes() {
            let mut carry = u128::from(b - b'0');
            for limb in &mut limbs {
                let v = u128::from(*limb) * 10 + carry;
                *limb = v as u64;
                carry = v >> 64;
            }
            if carry != 0 {
                return None;
            }
        }
        let mut w = [0u8; 32];
        for (i, limb) in limbs.iter().enumerate() {
            let at = 32 - 8 * (i + 1);
            w[at..at + 8].copy_from_slice(&limb.to_be_bytes());
        }
        Some(Uint256(w))
    }

    /// The value when it fits in a `u64`.
    pub fn to_u64(&self) -> Option<u64> {
        if self.0[..24].iter().any(|b| *b != 0) {
            return None;
        }
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[24..]);
        Some(u64::from_be_bytes(b))
    }

    /// The value, or `u64::MAX` when it does not fit.
    pub fn saturating_u64(&self) -> u64 {
        self.to_u64().unwrap_or(u64::MAX)
    }

    pub fn as_word(&self) -> &[u8; 32] {
        &self.0
    }

    /// The decimal string form (what the wire carries).
    pub fn to_decimal(&self) -> String {
        let mut limbs = [0u64; 4];
        for (i, limb) in limbs.iter_mut().enumerate() {
            let at = 32 - 8 * (i + 1);
            let mut b = [0u8; 8];
            b.copy_from_slice(&self.0[at..at + 8]);
            *limb = u64::from_be_bytes(b);
        }
        let mut digits = Vec::new();
        while limbs.iter().any(|l| *l != 0) {
            // Long division of the 256-bit number by ten, most significant limb first.
            let mut rem = 0u128;
            for limb in limbs.iter_mut().rev() {
                let cur = (rem << 64) | u128::from(*limb);
                *limb = (cur / 10) as u64;
                rem = cur % 10;
            }
            digits.push(b'0' + rem as u8);
        }
        if digits.is_empty() {
            return "0".into();
        }
        digits.reverse();
        String::from_utf8(digits).unwrap_or_default()
    }
}

impl std::fmt::Debug for Uint256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to_u64() {
            Some(v) => write!(f, "{v}"),
            None => write!(f, "0x{}", hex::encode(self.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_words() {
        assert_eq!(Uint256::parse_decimal("0"), Some(Uint256::ZERO));
        assert_eq!(
            Uint256::parse_decimal("10000").and_then(|u| u.to_u64()),
            Some(10_000)
        );
        assert_eq!(
            Uint256::parse_decimal("18446744073709551615").and_then(|u| u.to_u64()),
            Some(u64::MAX)
        );
        let big = Uint256::parse_decimal("18446744073709551616").unwrap();
        assert_eq!(big.to_u64(), None);
        assert_eq!(big.saturating_u64(), u64::MAX);
        assert_eq!(big.0[23], 1);
        let max = "115792089237316195423570985008687907853269984665640564039457584007913129639935";
        assert_eq!(Uint256::parse_decimal(max), Some(Uint256([0xff; 32])));
        let over = "115792089237316195423570985008687907853269984665640564039457584007913129639936";
        assert_eq!(Uint256::parse_decimal(over), None);
        for bad in ["", "+1", "-1", " 1", "1 ", "0x10", "1e3", "1.0", "١"] {
            assert_eq!(Uint256::parse_decimal(bad), None, "{bad:?}");
        }
        assert_eq!(
            Uint256::from_u64(77),
            Uint256::parse_decimal("077").unwrap()
        );
        for text in ["0", "7", "10000", "18446744073709551616", max] {
            assert_eq!(Uint256::parse_decimal(text).unwrap().to_decimal(), text);
        }
    }

    #[test]
    fn payload_versions_are_strict() {
        let v3 = serde_json::json!({"x402Version": 3, "scheme": "exact"});
        assert!(matches!(
            PaymentPayload::from_value(&v3),
            Err(PaymentError::UnknownVersion(3))
        ));
        for bad in [
            serde_json::json!({"x402Version": "1"}),
            serde_json::json!({"x402Version": 1.5}),
            serde_json::json!({"x402Version": -1}),
            serde_json::json!({}),
            serde_json::json!([1]),
            serde_json::json!({"x402Version": 1, "scheme": "exact"}),
        ] {
            assert!(
                matches!(
                    PaymentPayload::from_value(&bad),
                    Err(PaymentError::Malformed(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn settle_response_wire_shape() {
        let ok = SettleResponse {
            success: true,
            error_reason: None,
            error_message: None,
            payer: Some("0xabc".into()),
            transaction: "0x01".into(),
            network: "base-sepolia".into(),
            amount: None,
        };
        assert_eq!(
            serde_json::to_value(&ok).unwrap(),
            serde_json::json!({"success": true, "payer": "0xabc", "transaction": "0x01", "network": "base-sepolia"})
        );
        let failed: SettleResponse =
            serde_json::from_str(r#"{"success":false,"errorReason":"insufficient_funds","transaction":"","network":"eip155:84532","extraField":1}"#)
                .unwrap();
        assert_eq!(failed.error_reason.as_deref(), Some("insufficient_funds"));
        assert!(serde_json::from_str::<SettleResponse>(r#"{"transaction":"0x1"}"#).is_err());
    }
}
