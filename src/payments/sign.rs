//! The paying side of x402: sign EIP-3009 authorizations with a private key and build payment headers.
//!
//! This is what an x402 client does. The gateway never signs payments; tests, benches and load
//! tests use this module to produce real signatures (RFC 6979, low s) with the public Anvil dev
//! keys.

use http::header::HeaderValue;
use k256::ecdsa::SigningKey;
use ring::rand::{SecureRandom, SystemRandom};

use super::PaymentError;
use super::header::{Authorization, encode_json};
use super::requirements::SCHEME_EXACT;
use super::types::{
    AuthorizationWire, ExactPayload, PaymentPayloadV1, PaymentPayloadV2, RequirementsV2, Uint256,
};
use super::verify::transfer_digest;
use crate::config::Network;
use crate::crypto::{address_of, to_checksum};
use crate::wallet::Wallet;

/// Anvil/Hardhat dev account #0 (`0xf39F…2266`), public test key.
pub const DEV_KEY_0: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
/// Anvil/Hardhat dev account #1 (`0x7099…79C8`, the default `payTo`), public test key.
pub const DEV_KEY_1: &str = "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
/// Anvil/Hardhat dev account #2 (`0x3C44…93BC`), public test key.
pub const DEV_KEY_2: &str = "5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";

/// How far back clients date `validAfter` (the SDKs use now − 600 s against clock skew).
pub const VALID_AFTER_SKEW_S: u64 = 600;

/// A private key and its address.
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
    address: Wallet,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A key from 32 bytes; `None` for zero or a value not below the curve order.
    pub fn from_bytes(bytes: &[u8; 32]) -> Option<Self> {
        let key = SigningKey::from_slice(bytes).ok()?;
        let address = address_of(key.verifying_key());
        Some(Self { key, address })
    }

    /// A key from 64 hex digits, with or without `0x`.
    pub fn from_hex(hex_key: &str) -> Option<Self> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(hex_key.trim_start_matches("0x"), &mut b).ok()?;
        Self::from_bytes(&b)
    }

    /// A fresh random key.
    pub fn random() -> Option<Self> {
        let mut b = [0u8; 32];
        SystemRandom::new().fill(&mut b).ok()?;
        Self::from_bytes(&b)
    }

    pub fn address(&self) -> Wallet {
        self.address
    }

    /// Signs a 32-byte digest: `r ‖ s ‖ v` with a low `s` and `v ∈ {27, 28}`.
    pub fn sign_digest(&self, digest: &[u8; 32]) -> Result<[u8; 65], PaymentError> {
        let (sig, recid) = self
            .key
            .sign_prehash_recoverable(digest)
            .map_err(|e| PaymentError::Internal(format!("signing failed: {e}")))?;
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&sig.to_bytes());
        out[64] = 27 + recid.to_byte();
        Ok(out)
    }

    /// Signs `a` under `net`'s USDC domain.
    pub fn sign(&self, net: &Network, a: Authorization) -> Result<SignedPayment, PaymentError> {
        let signature = self.sign_digest(&transfer_digest(net, &a))?;
        Ok(SignedPayment {
            network: net.clone(),
            authorization: a,
            signature,
        })
    }

    /// Authorizes a transfer of `value` to `to`, valid from `now − 600` to `now + timeout_s`,
    /// with a random nonce: what the SDK clients do.
    pub fn pay(
        &self,
        net: &Network,
        to: Wallet,
        value: u64,
        now: u64,
        timeout_s: u64,
    ) -> Result<SignedPayment, PaymentError> {
        self.sign(
            net,
            Authorization {
                from: self.address,
                to,
                value: Uint256::from_u64(value),
                valid_after: Uint256::from_u64(now.saturating_sub(VALID_AFTER_SKEW_S)),
                valid_before: Uint256::from_u64(now.saturating_add(timeout_s)),
                nonce: random_nonce(),
            },
        )
    }
}

/// 32 random bytes from the system generator.
pub fn random_nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    if SystemRandom::new().fill(&mut n).is_err() {
        // The OS generator does not fail on supported platforms; stay unique regardless.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let c = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        n = crate::crypto::keccak256_parts(&[
            &crate::storage::now_ms().to_be_bytes(),
            &c.to_be_bytes(),
        ]);
    }
    n
}

/// A signed authorization, ready to be wrapped in either version's payload.
#[derive(Debug, Clone)]
pub struct SignedPayment {
    pub network: Network,
    pub authorization: Authorization,
    pub signature: [u8; 65],
}

impl SignedPayment {
    /// The `payload` object: signature and authorization in their wire forms.
    pub fn exact(&self) -> ExactPayload {
        let a = &self.authorization;
        ExactPayload {
            signature: format!("0x{}", hex::encode(self.signature)),
            authorization: AuthorizationWire {
                from: to_checksum(&a.from),
                to: to_checksum(&a.to),
                value: a.value.to_decimal(),
                valid_after: a.valid_after.to_decimal(),
                valid_before: a.valid_before.to_decimal(),
                nonce: format!("0x{}", hex::encode(a.nonce)),
            },
        }
    }

    pub fn payload_v1(&self) -> PaymentPayloadV1 {
        PaymentPayloadV1 {
            x402_version: 1,
            scheme: SCHEME_EXACT.into(),
            network: self.network.name.to_string(),
            payload: self.exact(),
        }
    }

    /// A version 2 payload that accepted `accepted` (normally copied from the 402's `accepts`).
    pub fn payload_v2(&self, accepted: RequirementsV2) -> PaymentPayloadV2 {
        PaymentPayloadV2 {
            x402_version: 2,
            resource: None,
            accepted,
            payload: self.exact(),
            extensions: None,
        }
    }

    /// The requirements this authorization satisfies exactly, as a server would have offered them
    /// (`maxTimeoutSeconds` 300).
    pub fn matching_requirements(&self) -> RequirementsV2 {
        RequirementsV2 {
            scheme: SCHEME_EXACT.into(),
            network: self.network.caip2.to_string(),
            amount: self.authorization.value.to_decimal(),
            asset: to_checksum(&self.network.asset),
            pay_to: to_checksum(&self.authorization.to),
            max_timeout_seconds: 300,
            extra: Some(serde_json::json!({
                "name": &*self.network.eip712_name,
                "version": &*self.network.eip712_version,
            })),
        }
    }

    /// The `X-PAYMENT` header value (version 1).
    pub fn x_payment(&self) -> Result<HeaderValue, PaymentError> {
        encode_json(&self.payload_v1())
    }

    /// The `PAYMENT-SIGNATURE` header value (version 2, accepting `matching_requirements`).
    pub fn payment_signature(&self) -> Result<HeaderValue, PaymentError> {
        encode_json(&self.payload_v2(self.matching_requirements()))
    }
}

/// The same signature with `s` replaced by `n − s` and `v` flipped: it recovers the same key but
/// is malleable, so USDC and our verifier refuse it. For attack tests.
pub fn high_s_twin(sig: &[u8; 65]) -> [u8; 65] {
    const N: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xfe, 0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36,
        0x41, 0x41,
    ];
    let mut out = *sig;
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(N[i]) - i16::from(sig[32 + i]) - borrow;
        out[32 + i] = d.rem_euclid(256) as u8;
        borrow = i16::from(d < 0);
    }
    out[64] = if sig[64] == 27 { 28 } else { 27 };
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::known_network;

    #[test]
    fn reproduces_the_reference_signature() {
        let signer = Signer::from_hex(DEV_KEY_0).unwrap();
        assert_eq!(
            to_checksum(&signer.address()),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        );
        let net = known_network("base-sepolia").unwrap();
        let a = Authorization {
            from: signer.address(),
            to: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
                .parse()
                .unwrap(),
            value: Uint256::from_u64(10_000),
            valid_after: Uint256::from_u64(1_740_672_089),
            valid_before: Uint256::from_u64(1_740_672_154),
            nonce: [0x11; 32],
        };
        let signed = signer.sign(&net, a).unwrap();
        assert_eq!(
            hex::encode(signed.signature),
            "4bd9d9bb605c1eb130b7cdab465fa994fec42e67b0b3bd68e97ebafbbbf2b8f109b4c9677c8bacd7efe49698c49a5a513cce3636dd72b36cbde03174fb8f92f21b"
        );
        let twin = high_s_twin(&signed.signature);
        assert_ne!(twin, signed.signature);
        assert_eq!(high_s_twin(&twin), signed.signature);
    }

    #[test]
    fn dev_keys_have_their_addresses() {
        let one = Signer::from_hex(DEV_KEY_1).unwrap();
        assert_eq!(
            to_checksum(&one.address()),
            "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
        );
        let two = Signer::from_hex(DEV_KEY_2).unwrap();
        assert_eq!(
            to_checksum(&two.address()),
            "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
        );
        assert!(Signer::from_hex("00").is_none());
        assert!(Signer::from_bytes(&[0u8; 32]).is_none());
        assert_ne!(random_nonce(), random_nonce());
    }
}
