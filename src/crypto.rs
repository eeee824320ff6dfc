//! Ethereum signature math: Keccak-256, EIP-191 and EIP-712 digests, secp256k1 recovery, EIP-55.
//!
//! Recovery accepts only 65-byte EOA signatures `r‖s‖v` with `v ∈ {0, 1, 27, 28}` and a low `s`
//! (high-s is malleable and rejected on-chain by USDC), and never returns the zero address.

use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
use sha3::{Digest, Keccak256};

use crate::wallet::Wallet;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("signature must be 65 bytes (r, s, v), got {0}")]
    Length(usize),
    #[error("signature v must be 0, 1, 27 or 28")]
    RecoveryId,
    #[error("signature s is in the upper half of the curve order (malleable)")]
    HighS,
    #[error("signature does not recover to a public key")]
    Recovery,
}

pub fn keccak256(data: &[u8]) -> [u8; 32] {
    Keccak256::digest(data).into()
}

/// Keccak-256 over several slices without concatenating them.
pub fn keccak256_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Keccak256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// EIP-191 `personal_sign` digest: keccak256("\x19Ethereum Signed Message:\n" ‖ len ‖ message).
pub fn eip191_hash(message: &[u8]) -> [u8; 32] {
    let len = message.len().to_string();
    keccak256_parts(&[b"\x19Ethereum Signed Message:\n", len.as_bytes(), message])
}

/// Recovers the address that signed `digest`.
pub fn recover(digest: &[u8; 32], sig: &[u8]) -> Result<Wallet, CryptoError> {
    if sig.len() != 65 {
        return Err(CryptoError::Length(sig.len()));
    }
    let v = match sig[64] {
        0 | 27 => 0,
        1 | 28 => 1,
        _ => return Err(CryptoError::RecoveryId),
    };
    let signature = Signature::from_slice(&sig[..64]).map_err(|_| CryptoError::Recovery)?;
    if signature.normalize_s().is_some() {
        return Err(CryptoError::HighS);
    }
    let recid = RecoveryId::from_byte(v).ok_or(CryptoError::RecoveryId)?;
    let key = VerifyingKey::recover_from_prehash(digest, &signature, recid)
        .map_err(|_| CryptoError::Recovery)?;
    let wallet = address_of(&key);
    if wallet.0 == [0u8; 20] {
        return Err(CryptoError::Recovery);
    }
    Ok(wallet)
}

/// The Ethereum address of a public key: the last 20 bytes of keccak256(uncompressed point).
pub fn address_of(key: &VerifyingKey) -> Wallet {
    let point = key.to_encoded_point(false);
    let hash = keccak256(&point.as_bytes()[1..]);
    let mut out = [0u8; 20];
    out.copy_from_slice(&hash[12..]);
    Wallet(out)
}

/// EIP-55 mixed-case checksum form of an address.
pub fn to_checksum(wallet: &Wallet) -> String {
    let lower = hex::encode(wallet.0);
    let hash = keccak256(lower.as_bytes());
    let mut out = String::with_capacity(42);
    out.push_str("0x");
    for (i, c) in lower.chars().enumerate() {
        let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
        out.push(if c.is_ascii_alphabetic() && nibble >= 8 {
            c.to_ascii_uppercase()
        } else {
            c
        });
    }
    out
}

/// True when `s` is all-lowercase, all-uppercase, or a correct EIP-55 checksum.
pub fn checksum_ok(s: &str, wallet: &Wallet) -> bool {
    let hex = s.trim_start_matches("0x");
    let letters = hex.chars().filter(char::is_ascii_alphabetic);
    letters.clone().all(|c| c.is_ascii_lowercase())
        || letters.clone().all(|c| c.is_ascii_uppercase())
        || to_checksum(wallet) == s
}

/// A 32-byte big-endian word holding `v`.
pub fn word_u128(v: u128) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[16..].copy_from_slice(&v.to_be_bytes());
    w
}

/// An address left-padded to a 32-byte word.
pub fn word_address(a: &Wallet) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[12..].copy_from_slice(&a.0);
    w
}

/// `keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")`
pub fn eip712_domain_separator(
    name: &str,
    version: &str,
    chain_id: u64,
    verifying_contract: &Wallet,
) -> [u8; 32] {
    let typehash = keccak256(
        b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)",
    );
    keccak256_parts(&[
        &typehash,
        &keccak256(name.as_bytes()),
        &keccak256(version.as_bytes()),
        &word_u128(u128::from(chain_id)),
        &word_address(verifying_contract),
    ])
}

/// The EIP-712 digest `keccak256(0x1901 ‖ domainSeparator ‖ structHash)`.
pub fn eip712_digest(domain_separator: &[u8; 32], struct_hash: &[u8; 32]) -> [u8; 32] {
    keccak256_parts(&[b"\x19\x01", domain_separator, struct_hash])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s.trim_start_matches("0x")).unwrap()
    }

    #[test]
    fn eip191_vector_from_the_reference() {
        let msg = "localhost:8080 wants you to sign in with your Ethereum account:\n0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266\n\nSign in to the gateway\n\nURI: http://localhost:8080/login\nVersion: 1\nChain ID: 84532\nNonce: abcdef1234567890\nIssued At: 2026-01-01T00:00:00Z\nExpiration Time: 2026-01-01T00:05:00Z";
        assert_eq!(msg.len(), 285);
        let h = eip191_hash(msg.as_bytes());
        assert_eq!(
            hex::encode(h),
            "aae049bb7b1c30c6badad3c6846645e296744ad57018b181fa19decdc3a328cf"
        );
        let sig = unhex(
            "9a1ad05ad5207950cd269d976430cf0bd2d0db998aed5dc272de93a1cb5481ad4091699099435b8307f17f705f532d5a97130cda27ac7572068a320cfa623fcf1c",
        );
        let who = recover(&h, &sig).unwrap();
        assert_eq!(
            to_checksum(&who),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        );
    }

    #[test]
    fn siwe_rs_vector_and_tampering() {
        let msg = "localhost:4361 wants you to sign in with your Ethereum account:\n0x6Da01670d8fc844e736095918bbE11fE8D564163\n\nSIWE Notepad Example\n\nURI: http://localhost:4361\nVersion: 1\nChain ID: 1\nNonce: kEWepMt9knR6lWJ6A\nIssued At: 2021-12-07T18:28:18.807Z";
        let mut sig = unhex(
            "6228b3ecd7bf2df018183aeab6b6f1db1e9f4e3cbe24560404112e25363540eb679934908143224d746bbb5e1aa65ab435684081f4dbb74a0fec57f98f40f5051c",
        );
        let h = eip191_hash(msg.as_bytes());
        assert_eq!(
            to_checksum(&recover(&h, &sig).unwrap()),
            "0x6Da01670d8fc844e736095918bbE11fE8D564163"
        );
        sig[0] = 0x72;
        assert_ne!(
            recover(&h, &sig).ok().map(|w| to_checksum(&w)),
            Some("0x6Da01670d8fc844e736095918bbE11fE8D564163".into())
        );
    }

    #[test]
    fn eip712_transfer_vector_and_malleability() {
        let usdc: Wallet = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
            .parse()
            .unwrap();
        let ds = eip712_domain_separator("USDC", "2", 84532, &usdc);
        assert_eq!(
            hex::encode(ds),
            "71f17a3b2ff373b803d70a5a07c046c1a2bc8e89c09ef722fcb047abe94c9818"
        );
        let base: Wallet = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
            .parse()
            .unwrap();
        assert_eq!(
            hex::encode(eip712_domain_separator("USD Coin", "2", 8453, &base)),
            "02fa7265e7c5d81118673727957699e4d68f74cd74b7db77da710fe8a2c7834f"
        );
        let typehash = keccak256(b"TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)");
        assert_eq!(
            hex::encode(typehash),
            "7c7c6cdb67a18743f49ec6fa9b35f50d52ed05cbed4cc592e13b44501c1a2267"
        );
        let from: Wallet = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
            .parse()
            .unwrap();
        let to: Wallet = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
            .parse()
            .unwrap();
        let sh = keccak256_parts(&[
            &typehash,
            &word_address(&from),
            &word_address(&to),
            &word_u128(10_000),
            &word_u128(1_740_672_089),
            &word_u128(1_740_672_154),
            &[0x11; 32],
        ]);
        assert_eq!(
            hex::encode(sh),
            "b07d48365c7399eb8c2fb098b28bc28845a15b8baf6f9cde007435d6b745e629"
        );
        let digest = eip712_digest(&ds, &sh);
        assert_eq!(
            hex::encode(digest),
            "9d9ecbadd505c2057bca5aac00eae7d1058f0e82307819d1ff726631d7d9bc5d"
        );
        let sig = unhex(
            "4bd9d9bb605c1eb130b7cdab465fa994fec42e67b0b3bd68e97ebafbbbf2b8f109b4c9677c8bacd7efe49698c49a5a513cce3636dd72b36cbde03174fb8f92f21b",
        );
        assert_eq!(recover(&digest, &sig).unwrap(), from);
        // (r, n − s, v ^ 1) recovers the same key but is refused as malleable.
        let n = unhex("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141");
        let mut high = sig.clone();
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let d = i16::from(n[i]) - i16::from(sig[32 + i]) - borrow;
            high[32 + i] = d.rem_euclid(256) as u8;
            borrow = i16::from(d < 0);
        }
        high[64] = 28;
        assert_eq!(recover(&digest, &high), Err(CryptoError::HighS));
        assert_eq!(recover(&digest, &sig[..64]), Err(CryptoError::Length(64)));
        let mut bad_v = sig.clone();
        bad_v[64] = 5;
        assert_eq!(recover(&digest, &bad_v), Err(CryptoError::RecoveryId));
    }

    #[test]
    fn checksums() {
        let w: Wallet = "0x6da01670d8fc844e736095918bbe11fe8d564163"
            .parse()
            .unwrap();
        assert_eq!(
            to_checksum(&w),
            "0x6Da01670d8fc844e736095918bbE11fE8D564163"
        );
        assert!(checksum_ok(
            "0x6Da01670d8fc844e736095918bbE11fE8D564163",
            &w
        ));
        assert!(checksum_ok(
            "0x6da01670d8fc844e736095918bbe11fe8d564163",
            &w
        ));
        assert!(!checksum_ok(
            "0x6DA01670d8fc844e736095918bbE11fE8D564163",
            &w
        ));
    }
}
