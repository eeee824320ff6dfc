//! API keys `vw_<id>_<secret>`: generation, SHA-256 at rest, constant-time lookup, revocation.
//!
//! `<id>` is 12 lowercase letters/digits and is the key's `key_id`; `<secret>` is 43 URL-safe
//! characters (32 random bytes). The raw key is shown once; the store keeps SHA-256(secret).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use dashmap::DashMap;
use ring::rand::{SecureRandom, SystemRandom};

use super::{AuthError, AuthMode, Principal};
use crate::storage::journal::{Journal, JournalOp};
use crate::storage::{KeyRecord, Storage, StorageError, now_ms};
use crate::wallet::Wallet;

const ID_LEN: usize = 12;
const ID_ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// `last_used_at` is persisted at most this often per key (seconds).
const TOUCH_PERSIST_SECS: u64 = 1;

/// A cached key: the immutable record plus the fields requests change.
#[derive(Debug)]
struct Entry {
    record: KeyRecord,
    secret_hash: [u8; 32],
    revoked_at: AtomicU64,
    last_used: AtomicU64,
    persisted_used: AtomicU64,
}

/// All keys, cached in memory (the store is the truth; the cache is loaded at start-up).
pub struct ApiKeys {
    store: Storage,
    journal: Journal,
    cache: DashMap<String, Arc<Entry>>,
    rng: SystemRandom,
}

/// The split form of a raw key.
pub fn parse_key(raw: &str) -> Option<(&str, &str)> {
    let rest = raw.strip_prefix("vw_")?;
    let (id, secret) = (rest.get(..ID_LEN)?, rest.get(ID_LEN..)?.strip_prefix('_')?);
    let id_ok = id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let secret_ok = secret.len() >= 32
        && secret.len() <= 128
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some((id, secret))
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, b);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl ApiKeys {
    pub async fn load(store: Storage, journal: Journal) -> Result<Self, StorageError> {
        let cache = DashMap::new();
        for rec in store.all_keys().await? {
            let hash = hex::decode(&rec.secret_sha256)
                .ok()
                .and_then(|h| <[u8; 32]>::try_from(h).ok())
                .ok_or_else(|| StorageError::Codec(format!("key {} hash", rec.key_id)))?;
            cache.insert(rec.key_id.clone(), Arc::new(Entry::new(rec, hash)));
        }
        Ok(Self {
            store,
            journal,
            cache,
            rng: SystemRandom::new(),
        })
    }

    /// Creates a key for `wallet`; returns the raw key (shown once) and its record, once the
    /// record is on disk (a key that was shown must survive a crash).
    pub async fn create(
        &self,
        wallet: Wallet,
        name: &str,
    ) -> Result<(String, KeyRecord), StorageError> {
        let mut bytes = [0u8; 32 + ID_LEN];
        self.rng
            .fill(&mut bytes)
            .map_err(|_| StorageError::Sled("no randomness".into()))?;
        let id: String = bytes[32..]
            .iter()
            .map(|b| ID_ALPHABET[usize::from(*b) % 36] as char)
            .collect();
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes[..32]);
        let hash = sha256(secret.as_bytes());
        let now = now_ms() / 1000;
        let record = KeyRecord {
            key_id: id.clone(),
            wallet,
            secret_sha256: hex::encode(hash),
            key_name: name.to_string(),
            created_at: now,
            last_used_at: None,
            revoked_at: None,
        };
        self.store.ensure_account(&wallet, now).await?;
        self.store.put_key(&record).await?;
        // The raw key is shown once: it must not be shown before it would survive a crash.
        self.store.flush().await?;
        self.cache
            .insert(id.clone(), Arc::new(Entry::new(record.clone(), hash)));
        Ok((format!("vw_{id}_{secret}"), record))
    }

    /// Resolves a raw key to its wallet; touches `last_used_at`.
    pub fn authenticate(&self, raw: &str) -> Result<Principal, AuthError> {
        let (id, secret) = parse_key(raw).ok_or(AuthError::InvalidApiKey)?;
        let entry = self
            .cache
            .get(id)
            .map(|e| e.clone())
            .ok_or(AuthError::InvalidApiKey)?;
        let hash = sha256(secret.as_bytes());
        if !super::ct_eq(&hash, &entry.secret_hash) || entry.revoked_at.load(Ordering::Acquire) != 0
        {
            return Err(AuthError::InvalidApiKey);
        }
        self.touch(&entry);
        Ok(Principal {
            wallet: entry.record.wallet,
            key_id: Some(id.to_string()),
            mode: AuthMode::ApiKey,
        })
    }

    fn touch(&self, entry: &Entry) {
        let now = now_ms() / 1000;
        entry.last_used.store(now, Ordering::Release);
        let persisted = entry.persisted_used.load(Ordering::Acquire);
        if now >= persisted + TOUCH_PERSIST_SECS
            && entry
                .persisted_used
                .compare_exchange(persisted, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.journal
                .push(JournalOp::Key(Box::new(entry.snapshot())));
        }
    }

    /// Revokes a key owned by `wallet`, effective at once and durable when this returns.
    /// Another wallet's key, or an unknown id, is `Ok(false)`.
    pub async fn revoke(&self, wallet: &Wallet, key_id: &str) -> Result<bool, StorageError> {
        let Some(entry) = self.cache.get(key_id).map(|e| e.clone()) else {
            return Ok(false);
        };
        if entry.record.wallet != *wallet || entry.revoked_at.load(Ordering::Acquire) != 0 {
            return Ok(false);
        }
        entry.revoked_at.store(now_ms() / 1000, Ordering::Release);
        self.store.put_key(&entry.snapshot()).await?;
        self.store.flush().await?;
        Ok(true)
    }

    /// Deletes every key of the `wallets` (swept agent accounts): refused at once, and gone from
    /// the store, durably, when this returns (one pass over the cache). Returns how many.
    pub async fn remove_all(
        &self,
        wallets: &std::collections::HashSet<Wallet>,
    ) -> Result<usize, StorageError> {
        let ids: Vec<String> = self
            .cache
            .iter()
            .filter(|e| wallets.contains(&e.record.wallet))
            .map(|e| e.key().clone())
            .collect();
        for id in &ids {
            self.cache.remove(id);
            self.store.remove_key(id).await?;
        }
        self.store.flush().await?;
        Ok(ids.len())
    }

    /// Takes key records another gateway wrote (`Storage::auth_changes`): a new key is usable
    /// here from now on, a revocation is refused from now on. Returns how many changed the cache.
    pub fn apply_changes(&self, records: &[KeyRecord]) -> usize {
        let mut changed = 0;
        for rec in records {
            let Some(hash) = hex::decode(&rec.secret_sha256)
                .ok()
                .and_then(|h| <[u8; 32]>::try_from(h).ok())
            else {
                tracing::warn!(key = %rec.key_id, "a changed key has no valid hash; ignored");
                continue;
            };
            match self.cache.get(&rec.key_id).map(|e| e.clone()) {
                Some(entry) if entry.secret_hash == hash => {
                    if let Some(at) = rec.revoked_at
                        && entry.revoked_at.load(Ordering::Acquire) == 0
                    {
                        entry.revoked_at.store(at.max(1), Ordering::Release);
                        changed += 1;
                    }
                }
                _ => {
                    self.cache
                        .insert(rec.key_id.clone(), Arc::new(Entry::new(rec.clone(), hash)));
                    changed += 1;
                }
            }
        }
        changed
    }

    /// Every key of a wallet (revoked ones included), oldest first.
    pub fn list(&self, wallet: &Wallet) -> Vec<KeyRecord> {
        let mut keys: Vec<KeyRecord> = self
            .cache
            .iter()
            .filter(|e| e.record.wallet == *wallet)
            .map(|e| e.snapshot())
            .collect();
        keys.sort_by(|a, b| (a.created_at, &a.key_id).cmp(&(b.created_at, &b.key_id)));
        keys
    }
}

impl Entry {
    fn new(rec: KeyRecord, hash: [u8; 32]) -> Self {
        let used = rec.last_used_at.unwrap_or(0);
        let revoked = rec.revoked_at.unwrap_or(0);
        Self {
            record: rec,
            secret_hash: hash,
            revoked_at: AtomicU64::new(revoked),
            last_used: AtomicU64::new(used),
            persisted_used: AtomicU64::new(used),
        }
    }

    fn snapshot(&self) -> KeyRecord {
        let mut rec = self.record.clone();
        let used = self.last_used.load(Ordering::Acquire);
        rec.last_used_at = (used != 0).then_some(used);
        let revoked = self.revoked_at.load(Ordering::Acquire);
        rec.revoked_at = (revoked != 0).then_some(revoked);
        rec
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn key_format() {
        let secret = "A".repeat(43);
        assert_eq!(
            parse_key(&format!("vw_abcdefghij12_{secret}")),
            Some(("abcdefghij12", secret.as_str()))
        );
        for bad in [
            "",
            "vw_",
            "vw_abc_def",
            &format!("vw_ABCDEFGHIJ12_{secret}"),
            &format!("vw_abcdefghij12_{}", "a".repeat(31)),
        ] {
            assert_eq!(parse_key(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn create_authenticate_revoke_reload() {
        let dir = tempfile::tempdir().unwrap();
        let store = Storage::embedded(crate::storage::Store::open(dir.path()).unwrap());
        let (journal, run) = Journal::new(store.clone(), Duration::from_millis(1));
        #[expect(clippy::disallowed_methods, reason = "the test owns its journal task")]
        tokio::spawn(run);
        let keys = ApiKeys::load(store.clone(), journal.clone()).await.unwrap();
        let w: Wallet = "0x2222222222222222222222222222222222222222"
            .parse()
            .unwrap();
        let other: Wallet = "0x3333333333333333333333333333333333333333"
            .parse()
            .unwrap();
        let (raw, rec) = keys.create(w, "agent").await.unwrap();
        assert!(parse_key(&raw).is_some());
        assert_eq!(keys.authenticate(&raw).unwrap().wallet, w);
        let mut tampered = raw.clone();
        tampered.pop();
        tampered.push(if raw.ends_with('A') { 'B' } else { 'A' });
        assert!(keys.authenticate(&tampered).is_err());
        assert!(
            !keys.revoke(&other, &rec.key_id).await.unwrap(),
            "another wallet cannot revoke it"
        );
        assert!(keys.revoke(&w, &rec.key_id).await.unwrap());
        assert!(keys.authenticate(&raw).is_err(), "revocation is immediate");
        journal.sync().await;
        let reloaded = ApiKeys::load(store, journal).await.unwrap();
        assert!(reloaded.authenticate(&raw).is_err());
        assert!(reloaded.list(&w)[0].revoked_at.is_some());
        assert!(reloaded.list(&w)[0].last_used_at.is_some());
    }
}
