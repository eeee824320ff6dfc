//! Who is paying: credentials on a request resolved to a `Principal` (a wallet and how it proved it).
//!
//! Deny by default lives in the router: a route that is not public asks `auth` for a principal,
//! and a request without one gets 401 `missing_credentials`.

pub mod api_key;
pub mod jwt;
pub mod siwe;

use http::HeaderMap;
use http::header::AUTHORIZATION;

use crate::wallet::Wallet;
pub use api_key::ApiKeys;
pub use jwt::{Sessions, TokenPair};
pub use siwe::{Siwe, SiweError};

use crate::storage::StorageError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: send x-api-key or Authorization: Bearer")]
    MissingCredentials,
    #[error("invalid API key")]
    InvalidApiKey,
    #[error("conflicting credentials: send one of x-api-key, Authorization or a payment header")]
    AmbiguousCredentials,
    #[error("invalid admin secret")]
    InvalidAdminSecret,
    #[error("invalid or expired token")]
    InvalidToken,
    #[error("this refresh token was already used; its session family is revoked, sign in again")]
    RefreshReused,
    #[error("this credential belongs to another wallet than the one named in the request")]
    WalletMismatch,
    #[error("no randomness for a token id")]
    Randomness,
    #[error(transparent)]
    Siwe(#[from] SiweError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0}")]
    InvalidWallet(String),
}

/// How the caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    ApiKey,
    Jwt,
    X402,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::ApiKey => "api_key",
            AuthMode::Jwt => "jwt",
            AuthMode::X402 => "x402",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub wallet: Wallet,
    pub key_id: Option<String>,
    pub mode: AuthMode,
}

/// The API-key candidate in a request: `x-api-key`, or a `Bearer vw_…` token. Two different
/// values are ambiguous. `Ok(None)` means the request carries no API key.
pub fn api_key_from(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    let header = headers
        .get("x-api-key")
        .map(|v| v.to_str().map_err(|_| AuthError::InvalidApiKey))
        .transpose()?;
    let bearer = match headers.get(AUTHORIZATION) {
        None => None,
        Some(v) => {
            let v = v.to_str().map_err(|_| AuthError::InvalidApiKey)?;
            let token = v
                .strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .ok_or(AuthError::InvalidApiKey)?
                .trim();
            token.starts_with("vw_").then_some(token)
        }
    };
    match (header, bearer) {
        (Some(a), Some(b)) if a != b => Err(AuthError::AmbiguousCredentials),
        (Some(a), _) => Ok(Some(a.trim())),
        (None, b) => Ok(b),
    }
}

/// Constant-time equality of two byte strings of the same length (`subtle`); the length itself
/// is not secret. The one place that compares secrets byte by byte.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

/// Constant-time comparison of two secrets of any length: their SHA-256 digests are compared, so
/// neither the content nor the length of the expected secret leaks through timing.
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    let da = ring::digest::digest(&ring::digest::SHA256, a);
    let db = ring::digest::digest(&ring::digest::SHA256, b);
    ct_eq(da.as_ref(), db.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn api_key_sources() {
        assert_eq!(api_key_from(&headers(&[])).unwrap(), None);
        assert_eq!(
            api_key_from(&headers(&[("x-api-key", "vw_a")])).unwrap(),
            Some("vw_a")
        );
        assert_eq!(
            api_key_from(&headers(&[("authorization", "Bearer vw_b")])).unwrap(),
            Some("vw_b")
        );
        assert_eq!(
            api_key_from(&headers(&[("authorization", "Bearer eyJ")])).unwrap(),
            None,
            "a JWT is not a key"
        );
        assert!(matches!(
            api_key_from(&headers(&[
                ("x-api-key", "vw_a"),
                ("authorization", "Bearer vw_b")
            ])),
            Err(AuthError::AmbiguousCredentials)
        ));
        assert!(secrets_equal(b"abc", b"abc"));
        assert!(!secrets_equal(b"abc", b"abd"));
        assert!(!secrets_equal(b"abc", b"abcd"));
        assert!(ct_eq(b"abc", b"abc") && !ct_eq(b"abc", b"abd") && !ct_eq(b"abc", b"ab"));
    }
}
