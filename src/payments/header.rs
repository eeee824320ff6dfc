//! The x402 headers: decoding `PAYMENT-SIGNATURE` / `X-PAYMENT`, encoding `PAYMENT-REQUIRED` and receipts.
//!
//! Decoding is a pure function of the header bytes, so it can be fuzzed: size cap, standard
//! base64 (padded or not; the URL-safe alphabet is refused, as the TS SDK does), JSON, the schema
//! of the payload's version, then every field in its strict form (addresses `0x` + 40 hex, decimal
//! strings of digits only, nonce `0x` + 64 hex, signature `0x` + 130 hex). Every failure is a
//! `PaymentError` that maps to 400 `invalid_payment_header` (or `ambiguous_payment`), never a
//! panic. The payload's own `x402Version` decides how it is read, whichever header carried it
//! (agents following the Vectorway docs send v2 payloads in `X-PAYMENT`); the receipt goes back
//! in the header matching the request header.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::PaymentError;
use super::types::{
    AuthorizationWire, PaymentPayload, PaymentRequiredV2, RequirementsV2, SettleResponse, Uint256,
    Version,
};
use crate::wallet::Wallet;

/// The version 2 request header.
pub const PAYMENT_SIGNATURE: HeaderName = HeaderName::from_static("payment-signature");
/// The version 1 request header.
pub const X_PAYMENT: HeaderName = HeaderName::from_static("x-payment");
/// The version 2 402 header (base64 `PaymentRequired`).
pub const PAYMENT_REQUIRED: HeaderName = HeaderName::from_static("payment-required");
/// The version 2 receipt header.
pub const PAYMENT_RESPONSE: HeaderName = HeaderName::from_static("payment-response");
/// The version 1 receipt header.
pub const X_PAYMENT_RESPONSE: HeaderName = HeaderName::from_static("x-payment-response");

/// The largest payment header accepted, checked before decoding (a real one is about 1.5 KiB).
pub const MAX_HEADER_BYTES: usize = 8 * 1024;

/// Standard alphabet; `=` padding optional on input, always written on output.
const B64_IN: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const B64_OUT: GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Which request header carried the payment; the receipt goes back in the matching one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderKind {
    /// `PAYMENT-SIGNATURE`, answered with `PAYMENT-RESPONSE`.
    PaymentSignature,
    /// `X-PAYMENT`, answered with `X-PAYMENT-RESPONSE`.
    XPayment,
}

impl HeaderKind {
    pub fn request_header(self) -> HeaderName {
        match self {
            HeaderKind::PaymentSignature => PAYMENT_SIGNATURE,
            HeaderKind::XPayment => X_PAYMENT,
        }
    }

    pub fn response_header(self) -> HeaderName {
        match self {
            HeaderKind::PaymentSignature => PAYMENT_RESPONSE,
            HeaderKind::XPayment => X_PAYMENT_RESPONSE,
        }
    }
}

/// The signed EIP-3009 authorization with every field parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub from: Wallet,
    pub to: Wallet,
    pub value: Uint256,
    pub valid_after: Uint256,
    pub valid_before: Uint256,
    pub nonce: [u8; 32],
}

/// A payment header that decoded and passed the schema, ready for verification.
#[derive(Debug, Clone)]
pub struct DecodedPayment {
    pub header: HeaderKind,
    pub payload: PaymentPayload,
    pub authorization: Authorization,
    pub signature: [u8; 65],
    /// The payload JSON exactly as received; it is what the facilitator is sent.
    pub raw: Value,
}

impl DecodedPayment {
    pub fn version(&self) -> Version {
        self.payload.version()
    }

    /// Version 2 only: the requirements the client says it accepted.
    pub fn accepted(&self) -> Option<&RequirementsV2> {
        match &self.payload {
            PaymentPayload::V1(_) => None,
            PaymentPayload::V2(p) => Some(&p.accepted),
        }
    }
}

/// Finds and decodes the payment header of a request. `Ok(None)`: no payment header at all.
/// Both headers, or one header repeated, is `AmbiguousPayment`.
pub fn decode(headers: &HeaderMap) -> Result<Option<DecodedPayment>, PaymentError> {
    let mut found = None;
    for kind in [HeaderKind::PaymentSignature, HeaderKind::XPayment] {
        for value in headers.get_all(kind.request_header()) {
            if found.is_some() {
                return Err(PaymentError::AmbiguousPayment);
            }
            found = Some((kind, value));
        }
    }
    match found {
        None => Ok(None),
        Some((kind, value)) => decode_value(kind, value.as_bytes()).map(Some),
    }
}

/// Decodes one header value (base64 JSON). Pure: the fuzz target and the proptest call this.
pub fn decode_value(kind: HeaderKind, value: &[u8]) -> Result<DecodedPayment, PaymentError> {
    if value.len() > MAX_HEADER_BYTES {
        return Err(PaymentError::HeaderTooLarge {
            len: value.len(),
            limit: MAX_HEADER_BYTES,
        });
    }
    let json = B64_IN
        .decode(value)
        .map_err(|e| PaymentError::Malformed(format!("not standard base64: {e}")))?;
    decode_json(kind, &json)
}

/// Decodes the JSON inside a header value.
pub fn decode_json(kind: HeaderKind, json: &[u8]) -> Result<DecodedPayment, PaymentError> {
    let raw: Value = serde_json::from_slice(json)
        .map_err(|e| PaymentError::Malformed(format!("not JSON: {e}")))?;
    let payload = PaymentPayload::from_value(&raw)?;
    let exact = payload.exact();
    let authorization = parse_authorization(&exact.authorization)?;
    let signature = parse_hex_exact::<65>(&exact.signature, "payload.signature")?;
    Ok(DecodedPayment {
        header: kind,
        payload,
        authorization,
        signature,
        raw,
    })
}

/// Parses the six authorization fields into their strict forms.
pub fn parse_authorization(a: &AuthorizationWire) -> Result<Authorization, PaymentError> {
    Ok(Authorization {
        from: parse_address(&a.from, "authorization.from")?,
        to: parse_address(&a.to, "authorization.to")?,
        value: parse_decimal(&a.value, "authorization.value")?,
        valid_after: parse_decimal(&a.valid_after, "authorization.validAfter")?,
        valid_before: parse_decimal(&a.valid_before, "authorization.validBefore")?,
        nonce: parse_hex_exact::<32>(&a.nonce, "authorization.nonce")?,
    })
}

/// `0x` + 40 hex digits (either case; the checksum is not enforced, bytes are compared).
pub fn parse_address(s: &str, field: &str) -> Result<Wallet, PaymentError> {
    parse_hex_exact::<20>(s, field).map(Wallet)
}

fn parse_decimal(s: &str, field: &str) -> Result<Uint256, PaymentError> {
    Uint256::parse_decimal(s).ok_or_else(|| {
        PaymentError::Malformed(format!(
            "{field} must be a decimal integer string below 2^256"
        ))
    })
}

/// `0x` followed by exactly `2·N` hex digits.
fn parse_hex_exact<const N: usize>(s: &str, field: &str) -> Result<[u8; N], PaymentError> {
    let bad = || {
        PaymentError::Malformed(format!(
            "{field} must be 0x followed by {} hex digits",
            2 * N
        ))
    };
    let digits = s.strip_prefix("0x").ok_or_else(bad)?;
    if digits.len() != 2 * N {
        return Err(bad());
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(digits, &mut out).map_err(|_| bad())?;
    Ok(out)
}

/// Base64 (standard, padded) of the compact JSON of `value`, as a header value.
pub fn encode_json<T: Serialize + ?Sized>(value: &T) -> Result<HeaderValue, PaymentError> {
    let json = serde_json::to_vec(value).map_err(|e| PaymentError::Internal(e.to_string()))?;
    HeaderValue::from_str(&B64_OUT.encode(json)).map_err(|e| PaymentError::Internal(e.to_string()))
}

/// The `PAYMENT-REQUIRED` header value.
pub fn encode_payment_required(pr: &PaymentRequiredV2) -> Result<HeaderValue, PaymentError> {
    encode_json(pr)
}

/// The `PAYMENT-RESPONSE` / `X-PAYMENT-RESPONSE` header value.
pub fn encode_receipt(receipt: &SettleResponse) -> Result<HeaderValue, PaymentError> {
    encode_json(receipt)
}

/// Reads a base64 JSON header value of any type (clients and tests decode 402s and receipts).
pub fn decode_base64_json<T: DeserializeOwned>(value: &[u8]) -> Result<T, PaymentError> {
    if value.len() > 2 * MAX_HEADER_BYTES {
        return Err(PaymentError::HeaderTooLarge {
            len: value.len(),
            limit: 2 * MAX_HEADER_BYTES,
        });
    }
    let json = B64_IN
        .decode(value)
        .map_err(|e| PaymentError::Malformed(format!("not standard base64: {e}")))?;
    serde_json::from_slice(&json).map_err(|e| PaymentError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SIG: &str = "0x4bd9d9bb605c1eb130b7cdab465fa994fec42e67b0b3bd68e97ebafbbbf2b8f109b4c9677c8bacd7efe49698c49a5a513cce3636dd72b36cbde03174fb8f92f21b";

    fn v1_json() -> Value {
        serde_json::json!({
            "x402Version": 1,
            "scheme": "exact",
            "network": "base-sepolia",
            "payload": {
                "signature": SIG,
                "authorization": {
                    "from": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
                    "to": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
                    "value": "10000",
                    "validAfter": "1740672089",
                    "validBefore": "1740672154",
                    "nonce": format!("0x{}", "11".repeat(32)),
                }
            }
        })
    }

    fn b64(v: &Value) -> String {
        B64_OUT.encode(serde_json::to_vec(v).unwrap())
    }

    fn is_header_error(r: Result<DecodedPayment, PaymentError>) -> bool {
        matches!(&r, Err(e) if e.status() == 400 && e.code() == "invalid_payment_header")
    }

    #[test]
    fn decodes_v1_padded_and_unpadded() {
        let enc = b64(&v1_json());
        let p = decode_value(HeaderKind::XPayment, enc.as_bytes()).unwrap();
        assert_eq!(p.version(), Version::V1);
        assert_eq!(p.authorization.value.to_u64(), Some(10_000));
        assert_eq!(p.authorization.nonce, [0x11; 32]);
        assert_eq!(p.signature[64], 0x1b);
        assert_eq!(p.raw, v1_json());
        let unpadded = enc.trim_end_matches('=');
        assert!(decode_value(HeaderKind::XPayment, unpadded.as_bytes()).is_ok());
    }

    #[test]
    fn header_lookup() {
        let mut h = HeaderMap::new();
        assert!(decode(&h).unwrap().is_none());
        h.insert(
            "x-payment",
            HeaderValue::from_str(&b64(&v1_json())).unwrap(),
        );
        let p = decode(&h).unwrap().unwrap();
        assert_eq!(p.header, HeaderKind::XPayment);
        h.insert(
            "payment-signature",
            HeaderValue::from_str(&b64(&v1_json())).unwrap(),
        );
        let e = decode(&h).unwrap_err();
        assert_eq!((e.status(), e.code()), (400, "ambiguous_payment"));
        let mut twice = HeaderMap::new();
        twice.append("x-payment", HeaderValue::from_static("e30="));
        twice.append("x-payment", HeaderValue::from_static("e30="));
        assert!(matches!(
            decode(&twice),
            Err(PaymentError::AmbiguousPayment)
        ));
    }

    #[test]
    fn malformed_headers_are_400() {
        let enc = b64(&v1_json());
        // Truncated base64, a truncated JSON document, URL-safe alphabet, not base64 at all.
        assert!(is_header_error(decode_value(
            HeaderKind::XPayment,
            &enc.as_bytes()[..enc.len() - 7]
        )));
        let half = B64_OUT.encode(&serde_json::to_vec(&v1_json()).unwrap()[..100]);
        assert!(is_header_error(decode_value(
            HeaderKind::XPayment,
            half.as_bytes()
        )));
        let url_safe = base64::engine::general_purpose::URL_SAFE.encode([0xfb, 0xff, 0xfe]);
        assert!(is_header_error(decode_value(
            HeaderKind::XPayment,
            url_safe.as_bytes()
        )));
        assert!(is_header_error(decode_value(
            HeaderKind::XPayment,
            b"not base64!"
        )));
        assert!(is_header_error(decode_value(HeaderKind::XPayment, b"")));
        // Oversized: refused before decoding.
        let big = vec![b'A'; MAX_HEADER_BYTES + 4];
        let e = decode_value(HeaderKind::XPayment, &big).unwrap_err();
        assert!(matches!(e, PaymentError::HeaderTooLarge { .. }));
        assert_eq!(e.code(), "invalid_payment_header");
        // Unknown version.
        let mut v = v1_json();
        v["x402Version"] = 7.into();
        let e = decode_value(HeaderKind::XPayment, b64(&v).as_bytes()).unwrap_err();
        assert_eq!(e.invalid_reason(), Some("invalid_x402_version"));
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn strict_field_forms() {
        let cases: &[(&str, Value)] = &[
            ("value", "+10000".into()),
            ("value", "-1".into()),
            ("value", " 10000".into()),
            ("value", "10000 ".into()),
            ("value", "0x2710".into()),
            ("value", 10000.into()),
            ("value", "".into()),
            ("validBefore", "1e9".into()),
            ("from", "f39Fd6e51aad88F6F4ce6aB8827279cffFb92266".into()),
            ("from", "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb9226".into()),
            ("to", "0xzz9693Bc6afc0C5328bA36FaF03C514EF312287C".into()),
            ("nonce", format!("0x{}", "11".repeat(31)).into()),
            ("nonce", "11".repeat(32).into()),
        ];
        for (field, bad) in cases {
            let mut v = v1_json();
            v["payload"]["authorization"][*field] = bad.clone();
            assert!(
                is_header_error(decode_value(HeaderKind::XPayment, b64(&v).as_bytes())),
                "{field} = {bad}"
            );
        }
        for bad_sig in [&SIG[..SIG.len() - 2], &SIG[2..], "0x"] {
            let mut v = v1_json();
            v["payload"]["signature"] = bad_sig.into();
            assert!(is_header_error(decode_value(
                HeaderKind::XPayment,
                b64(&v).as_bytes()
            )));
        }
    }

    #[test]
    fn receipt_round_trip() {
        let r = SettleResponse {
            success: true,
            error_reason: None,
            error_message: None,
            payer: Some("0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266".into()),
            transaction: format!("0x{}", "ab".repeat(32)),
            network: "base-sepolia".into(),
            amount: None,
        };
        let h = encode_receipt(&r).unwrap();
        let back: SettleResponse = decode_base64_json(h.as_bytes()).unwrap();
        assert_eq!(back, r);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn decode_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..12_000)) {
            let _ = decode_value(HeaderKind::PaymentSignature, &bytes);
            let _ = decode_json(HeaderKind::XPayment, &bytes);
        }

        #[test]
        fn decode_never_panics_on_base64_of_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4_000)) {
            let enc = B64_OUT.encode(&bytes);
            let _ = decode_value(HeaderKind::XPayment, enc.as_bytes());
        }

        #[test]
        fn decode_never_panics_on_mutated_payloads(
            field in prop::sample::select(vec!["from", "to", "value", "validAfter", "validBefore", "nonce"]),
            text in ".{0,90}",
        ) {
            let mut v = v1_json();
            v["payload"]["authorization"][field] = Value::String(text);
            let _ = decode_value(HeaderKind::XPayment, b64(&v).as_bytes());
        }
    }
}
