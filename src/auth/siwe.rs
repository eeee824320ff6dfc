//! Sign-In with Ethereum (EIP-4361): strict message parsing, server-issued nonces, verification.
//!
//! A message is accepted only when it parses against the grammar exactly (LF line ends, fields in
//! order, no unknown lines), its `domain` equals the configured one, the origin of its `URI`
//! equals this deployment's origin (`with_origin`: the scheme and authority of the public base
//! URL), its chain id is allowed, its nonce was issued by this server, is unused and younger than
//! the nonce TTL, its times hold (issued-at not in the future and recent, expiration in the
//! future, not-before in the past, 60 s skew), and its EIP-191 signature recovers to its address.
//! The nonce is consumed by the first verification attempt that gets as far as the signature,
//! valid or not. Outstanding nonces live in a bounded table (`nonces`).

mod nonces;

use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};

use super::AuthError;
use crate::crypto;
use crate::storage::Storage;
use crate::wallet::Wallet;
pub use nonces::Nonces;

/// Longest SIWE message accepted.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Clock skew tolerated on issued-at and not-before.
const SKEW_S: i64 = 60;
/// Challenges outstanding at most unless `with_max_nonces` says otherwise.
const DEFAULT_MAX_NONCES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiweError {
    #[error("the SIWE message is malformed: {0}")]
    Malformed(&'static str),
    #[error("the SIWE message is for domain '{got}', this server is '{want}'")]
    DomainMismatch { got: String, want: String },
    #[error("the SIWE message's URI has origin '{got}', this server is '{want}'")]
    UriMismatch { got: String, want: String },
    #[error("too many sign-in challenges are outstanding; retry in {retry_after_s} s")]
    ChallengesExhausted { retry_after_s: u64 },
    #[error("no randomness for a nonce")]
    Randomness,
    #[error(
        "the SIWE nonce is unknown, expired or already used; ask /v1/auth/siwe/challenge for a new one"
    )]
    NonceInvalid,
    #[error("the SIWE message has expired or is not yet valid")]
    Expired,
    #[error("chain id {0} is not accepted")]
    ChainId(u64),
    #[error("the signature does not match the message's address")]
    SignatureInvalid,
    #[error("the message is for {message}, the request names {request}")]
    WalletMismatch { message: String, request: String },
}

/// The fields of an EIP-4361 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiweMessage {
    pub scheme: Option<String>,
    pub domain: String,
    pub address: Wallet,
    pub statement: Option<String>,
    pub uri: String,
    pub version: String,
    pub chain_id: u64,
    pub nonce: String,
    pub issued_at: i64,
    pub expiration_time: Option<i64>,
    pub not_before: Option<i64>,
    pub request_id: Option<String>,
    pub resources: Vec<String>,
}

const PREAMBLE: &str = " wants you to sign in with your Ethereum account:";

fn field<'a>(line: Option<&'a str>, tag: &'static str) -> Result<&'a str, SiweError> {
    line.and_then(|l| l.strip_prefix(tag))
        .ok_or(SiweError::Malformed(tag))
}

/// Parses a message against the EIP-4361 grammar.
pub fn parse(msg: &str) -> Result<SiweMessage, SiweError> {
    if msg.len() > MAX_MESSAGE_BYTES {
        return Err(SiweError::Malformed("message too long"));
    }
    if msg.contains('\r') || !msg.is_ascii() {
        return Err(SiweError::Malformed("only ASCII with LF line ends"));
    }
    let lines: Vec<&str> = msg.split('\n').collect();
    let mut it = lines.into_iter().peekable();
    let head = it
        .next()
        .and_then(|l| l.strip_suffix(PREAMBLE))
        .ok_or(SiweError::Malformed("preamble"))?;
    let (scheme, domain) = match head.split_once("://") {
        Some((s, d)) => (Some(s.to_string()), d),
        None => (None, head),
    };
    if domain.is_empty() || domain.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(SiweError::Malformed("domain"));
    }
    let addr_text = it.next().ok_or(SiweError::Malformed("address"))?;
    let address: Wallet = addr_text
        .parse()
        .map_err(|_| SiweError::Malformed("address"))?;
    if !crypto::checksum_ok(addr_text, &address) {
        return Err(SiweError::Malformed("address checksum"));
    }
    if it.next() != Some("") {
        return Err(SiweError::Malformed("blank line after address"));
    }
    // Either `statement`, blank, or blank, blank (no statement).
    let statement = match it.next() {
        Some("") => None,
        Some(s) if !s.is_empty() => {
            if it.next() != Some("") {
                return Err(SiweError::Malformed("blank line after statement"));
            }
            Some(s.to_string())
        }
        _ => return Err(SiweError::Malformed("statement")),
    };
    let uri = field(it.next(), "URI: ")?.to_string();
    let version = field(it.next(), "Version: ")?.to_string();
    if version != "1" {
        return Err(SiweError::Malformed("version must be 1"));
    }
    let chain_id = field(it.next(), "Chain ID: ")?;
    if chain_id.is_empty() || !chain_id.bytes().all(|b| b.is_ascii_digit()) || chain_id.len() > 18 {
        return Err(SiweError::Malformed("chain id"));
    }
    let chain_id: u64 = chain_id
        .parse()
        .map_err(|_| SiweError::Malformed("chain id"))?;
    let nonce = field(it.next(), "Nonce: ")?.to_string();
    if nonce.len() < 8 || !nonce.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(SiweError::Malformed("nonce"));
    }
    let issued_at =
        parse_rfc3339(field(it.next(), "Issued At: ")?).ok_or(SiweError::Malformed("issued at"))?;
    let mut m = SiweMessage {
        scheme,
        domain: domain.to_string(),
        address,
        statement,
        uri,
        version,
        chain_id,
        nonce,
        issued_at,
        expiration_time: None,
        not_before: None,
        request_id: None,
        resources: Vec::new(),
    };
    if let Some(v) = it.next_if(|l| l.starts_with("Expiration Time: ")) {
        m.expiration_time =
            Some(parse_rfc3339(&v[17..]).ok_or(SiweError::Malformed("expiration time"))?);
    }
    if let Some(v) = it.next_if(|l| l.starts_with("Not Before: ")) {
        m.not_before = Some(parse_rfc3339(&v[12..]).ok_or(SiweError::Malformed("not before"))?);
    }
    if let Some(v) = it.next_if(|l| l.starts_with("Request ID: ")) {
        m.request_id = Some(v[12..].to_string());
    }
    if it.next_if(|l| *l == "Resources:").is_some() {
        while let Some(r) = it.next_if(|l| l.starts_with("- ")) {
            m.resources.push(r[2..].to_string());
        }
    }
    if it.next().is_some() {
        return Err(SiweError::Malformed("unexpected line"));
    }
    Ok(m)
}

/// The first and last second RFC 3339 can write in UTC: 0000-01-01T00:00:00Z, 9999-12-31T23:59:59Z.
const RFC3339_FIRST: i64 = -62_167_219_200;
const RFC3339_LAST: i64 = 253_402_300_799;

/// RFC 3339 `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` → Unix seconds (the `time` crate's parser; a
/// leap second reads as the second before it).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    // RFC 3339's `date-time` separates date and time with `T` (any case); `time` takes any byte.
    if !matches!(s.as_bytes().get(10), Some(b'T' | b't')) {
        return None;
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(time::OffsetDateTime::unix_timestamp)
        // An offset can carry year 0000 or 9999 past what RFC 3339 can write back in UTC.
        .filter(|t| (RFC3339_FIRST..=RFC3339_LAST).contains(t))
}

/// Formats Unix seconds as RFC 3339 UTC (`2026-01-01T00:00:00Z`); a time outside the years
/// 0000–9999 that RFC 3339 can write is clamped to the nearest of them.
pub fn format_rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t.clamp(RFC3339_FIRST, RFC3339_LAST))
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The origin (`scheme://host[:port]`, lower case, without a default port) of an absolute URI;
/// `None` for a URI without an authority or with user info.
pub fn origin_of(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?.to_ascii_lowercase();
    if authority.is_empty() || authority.contains(['@', ' ']) {
        return None;
    }
    let default_port = match scheme.as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => "",
    };
    let authority = match authority.strip_suffix(default_port) {
        Some(a) if !default_port.is_empty() => a,
        _ => authority.as_str(),
    };
    Some(format!("{scheme}://{authority}"))
}

/// Issues challenges and verifies signed messages.
pub struct Siwe {
    domain: String,
    /// What the origin of a message's `URI` must be.
    origin: String,
    chain_ids: Vec<u64>,
    ttl: Duration,
    nonces: Nonces,
    /// A store other gateways share (PostgreSQL): challenges are recorded there, so any
    /// gateway can spend one, once. `None`: the nonce table above is the only record.
    shared: Option<Storage>,
    rng: SystemRandom,
}

/// A challenge for a wallet to sign.
#[derive(Debug, Clone)]
pub struct Challenge {
    pub message: String,
    pub nonce: String,
}

impl Siwe {
    /// A verifier for `domain` whose origin is `http://<domain>` (see `with_origin`).
    pub fn new(domain: String, chain_ids: Vec<u64>, ttl: Duration) -> Self {
        Self {
            origin: format!("http://{}", domain.to_ascii_lowercase()),
            domain,
            chain_ids,
            ttl,
            nonces: Nonces::new(ttl, DEFAULT_MAX_NONCES),
            shared: None,
            rng: SystemRandom::new(),
        }
    }

    /// Messages must name a URI whose origin is that of `base_url` (ignored when it has none).
    pub fn with_origin(mut self, base_url: &str) -> Self {
        if let Some(o) = origin_of(base_url) {
            self.origin = o;
        }
        self
    }

    /// At most `max` challenges outstanding (issued within the TTL).
    pub fn with_max_nonces(mut self, max: usize) -> Self {
        self.nonces = Nonces::new(self.ttl, max);
        self
    }

    /// Records challenges in `store` when other gateways share it (`issue`, `redeem`).
    pub fn with_store(mut self, store: &Storage) -> Self {
        self.shared = store.is_shared().then(|| store.clone());
        self
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The nonce table (for tests and metrics).
    pub fn nonces(&self) -> &Nonces {
        &self.nonces
    }

    /// A fresh 128-bit nonce (22 alphanumeric characters) and the message embedding it.
    pub fn challenge(
        &self,
        wallet: Wallet,
        chain_id: u64,
        now: i64,
    ) -> Result<Challenge, SiweError> {
        if !self.chain_ids.contains(&chain_id) {
            return Err(SiweError::ChainId(chain_id));
        }
        let mut bytes = [0u8; nonces::NONCE_LEN];
        self.rng
            .fill(&mut bytes)
            .map_err(|_| SiweError::Randomness)?;
        const ALNUM: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        // 22 symbols of 62 carry ≥ 128 bits (the modulo bias over 256 is below 2^-1 per symbol).
        for b in &mut bytes {
            *b = ALNUM[usize::from(*b) % 62];
        }
        self.nonces
            .insert(bytes, wallet, Instant::now())
            .map_err(|retry_after_s| SiweError::ChallengesExhausted { retry_after_s })?;
        let nonce: String = bytes.iter().map(|b| char::from(*b)).collect();
        let message = format!(
            "{domain}{PREAMBLE}\n{address}\n\nSign in to vectorway.\n\nURI: {origin}\nVersion: 1\nChain ID: {chain_id}\nNonce: {nonce}\nIssued At: {issued}\nExpiration Time: {exp}",
            domain = self.domain,
            origin = self.origin,
            address = crypto::to_checksum(&wallet),
            issued = format_rfc3339(now),
            exp = format_rfc3339(now + self.ttl.as_secs() as i64),
        );
        Ok(Challenge { message, nonce })
    }

    /// `challenge`, recorded in the shared store when there is one (each gateway still counts
    /// the challenges it issued against its own cap).
    pub async fn issue(
        &self,
        wallet: Wallet,
        chain_id: u64,
        now: i64,
    ) -> Result<Challenge, AuthError> {
        let c = self.challenge(wallet, chain_id, now)?;
        if let Some(store) = &self.shared {
            let now = u64::try_from(now).unwrap_or(0);
            store
                .put_siwe_nonce(&c.nonce, &wallet, now, now + self.ttl.as_secs())
                .await?;
        }
        Ok(c)
    }

    /// `verify`, spending the nonce in the shared store when there is one: a challenge issued
    /// by any gateway is accepted once, by exactly one of them.
    pub async fn redeem(
        &self,
        message: &str,
        signature_hex: &str,
        now: i64,
    ) -> Result<SiweMessage, AuthError> {
        let Some(store) = &self.shared else {
            return Ok(self.verify(message, signature_hex, now)?);
        };
        let m = self.check(message, now)?;
        let issued_to = store
            .take_siwe_nonce(&m.nonce, u64::try_from(now).unwrap_or(0))
            .await?
            .ok_or(SiweError::NonceInvalid)?;
        Ok(Self::finish(m, message, signature_hex, issued_to)?)
    }

    /// Verifies a signed message; on success the nonce is spent and the signer returned.
    pub fn verify(
        &self,
        message: &str,
        signature_hex: &str,
        now: i64,
    ) -> Result<SiweMessage, SiweError> {
        let m = self.check(message, now)?;
        // Spend the nonce before checking the signature: one attempt per challenge.
        let issued_to = self
            .nonces
            .take(&m.nonce, Instant::now())
            .ok_or(SiweError::NonceInvalid)?;
        Self::finish(m, message, signature_hex, issued_to)
    }

    /// Everything about a message but its nonce and signature: grammar, domain, origin,
    /// chain and time.
    fn check(&self, message: &str, now: i64) -> Result<SiweMessage, SiweError> {
        let m = parse(message)?;
        if m.domain != self.domain {
            return Err(SiweError::DomainMismatch {
                got: m.domain,
                want: self.domain.clone(),
            });
        }
        if origin_of(&m.uri).as_deref() != Some(self.origin.as_str()) {
            return Err(SiweError::UriMismatch {
                got: m.uri,
                want: self.origin.clone(),
            });
        }
        if !self.chain_ids.contains(&m.chain_id) {
            return Err(SiweError::ChainId(m.chain_id));
        }
        if m.issued_at > now + SKEW_S
            || m.issued_at < now - self.ttl.as_secs() as i64 - SKEW_S
            || m.expiration_time.is_some_and(|e| e <= now)
            || m.not_before.is_some_and(|nb| nb > now + SKEW_S)
        {
            return Err(SiweError::Expired);
        }
        Ok(m)
    }

    /// The rest of a check whose nonce was spent (issued to `issued_to`): the signer.
    fn finish(
        m: SiweMessage,
        message: &str,
        signature_hex: &str,
        issued_to: Wallet,
    ) -> Result<SiweMessage, SiweError> {
        if issued_to != m.address {
            return Err(SiweError::NonceInvalid);
        }
        let sig = hex::decode(signature_hex.trim().trim_start_matches("0x"))
            .map_err(|_| SiweError::SignatureInvalid)?;
        let signer = crypto::recover(&crypto::eip191_hash(message.as_bytes()), &sig)
            .map_err(|_| SiweError::SignatureInvalid)?;
        if signer != m.address {
            return Err(SiweError::SignatureInvalid);
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests;
