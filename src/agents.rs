//! Agent accounts: a name and an API key with no wallet, funded by anyone's x402 top-up, swept if never funded.
//!
//! **Identity.** An agent account is an ordinary 20-byte account id (`Wallet`), so every
//! per-account feature (credits, holds, ledger, usage, memory, keys, rate limits) works for it
//! unchanged. The id is derived, never chosen: `keccak256("vectorway/agent-account/v1" ‖ uuid)`
//! truncated to its last 20 bytes, where `uuid` is 122 random bits from the system RNG. A real
//! signer's address is the last 20 bytes of `keccak256(public key)`, a 64-byte input; ours hash a
//! 42-byte input, so the two are never the same preimage, and an agent id equal to a signer's
//! address is a 160-bit Keccak collision: about 2^80 work for someone choosing both inputs, and a
//! second preimage (2^160) for an attacker who must match an agent id the gateway drew. Nobody
//! holds a private key for an agent id for the same reason, so no SIWE message or x402 payment
//! can act as one. Registration also refuses an id that already has an account, a ledger or an
//! agent record (it draws again), so even that impossible case cannot merge two accounts.
//!
//! **Sweep, race-free against money.** An agent with no money by its deadline is deleted. Every
//! path that credits an agent account first *pins* it (`pin`): under `gate` it checks that the
//! record exists and counts a pin; the sweeper, under the same `gate`, skips pinned agents,
//! agents that a settlement intent still owes (`IntentPurpose::Credit { to }`: a payment whose
//! outcome is unknown, or a crash's leftover), and agents whose ledger has any entry (funded;
//! they become permanent). So either the sweep deletes first and the top-up is refused before
//! anything is settled (its nonce given back), or the pin comes first and the sweep leaves the
//! agent alone until the money is in the ledger (durable) or the intent is on disk. A pin is
//! released when the payment's effect ends; by then one of those two facts holds, or nothing
//! moved. Pins are in memory: after a crash the intents stand in for them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};

use crate::auth::ApiKeys;
use crate::billing::Billing;
use crate::config::AgentsConfig;
use crate::memory::Memory;
use crate::storage::agents::AgentRecord;
use crate::storage::{KeyRecord, Storage, StorageError, now_ms};
use crate::wallet::Wallet;

/// Domain tag of the account derivation (see the module doc).
const DOMAIN: &[u8] = b"vectorway/agent-account/v1";

#[derive(Debug, Clone, thiserror::Error)]
pub enum AgentError {
    #[error("no agent account {0}; it may have been deleted for want of a deposit")]
    NotFound(String),
    #[error(
        "too many agents are waiting for their first deposit ({max}); retry in {retry_after_s} s"
    )]
    CapacityReached { max: usize, retry_after_s: u64 },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl AgentError {
    pub fn status(&self) -> u16 {
        match self {
            AgentError::NotFound(_) => 404,
            AgentError::CapacityReached { .. } => 503,
            AgentError::Storage(s) => s.status(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            AgentError::NotFound(_) => "agent_not_found",
            AgentError::CapacityReached { .. } => "agent_capacity_reached",
            AgentError::Storage(s) => s.code(),
        }
    }

    pub fn retry_after(&self) -> Option<u64> {
        match self {
            AgentError::CapacityReached { retry_after_s, .. } => Some(*retry_after_s),
            AgentError::NotFound(_) | AgentError::Storage(_) => None,
        }
    }
}

/// The account id of the agent with this UUID.
pub fn account_of(uuid: &uuid::Uuid) -> Wallet {
    let h = crate::crypto::keccak256_parts(&[DOMAIN, uuid.as_bytes()]);
    let mut w = [0u8; 20];
    w.copy_from_slice(&h[12..]);
    Wallet(w)
}

/// Reads an agent reference: its UUID, or its account id (`0x…`).
pub fn parse_ref(s: &str) -> Option<Wallet> {
    if s.starts_with("0x") || s.starts_with("0X") {
        return s.parse().ok();
    }
    uuid::Uuid::try_parse(s).ok().map(|u| account_of(&u))
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Deleted: no money by the deadline.
    pub deleted: usize,
    /// Found funded (a ledger entry): permanent from now on.
    pub funded: usize,
    /// Past the deadline but pinned or owed by an open intent: left for a later sweep.
    pub kept: usize,
}

/// The agent registry: the store's records, the pins and the unfunded count.
pub struct Agents {
    store: Storage,
    config: AgentsConfig,
    /// Agents not yet funded (registered, not swept); at most `config.max_unfunded`.
    unfunded: AtomicUsize,
    /// Serializes pinning against sweeping (held across the sweep's awaits).
    gate: tokio::sync::Mutex<()>,
    pins: std::sync::Mutex<HashMap<Wallet, usize>>,
    passes: AtomicU64,
    rng: SystemRandom,
}

impl std::fmt::Debug for Agents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agents")
            .field("unfunded", &self.unfunded.load(Ordering::Relaxed))
            .finish()
    }
}

/// A registration: the record, the raw key (shown once) and its record.
pub struct Registered {
    pub agent: AgentRecord,
    pub api_key: String,
    pub key: KeyRecord,
}

impl Agents {
    /// The registry over `store`, counting the unfunded agents already there.
    pub async fn new(store: Storage, config: AgentsConfig) -> Result<Self, StorageError> {
        let unfunded = AtomicUsize::new(store.unfunded_agents().await?);
        Ok(Self {
            store,
            config,
            unfunded,
            gate: tokio::sync::Mutex::new(()),
            pins: std::sync::Mutex::new(HashMap::new()),
            passes: AtomicU64::new(0),
            rng: SystemRandom::new(),
        })
    }

    /// Agents waiting for their first deposit.
    pub fn unfunded(&self) -> usize {
        self.unfunded.load(Ordering::Acquire)
    }

    /// Sweeps run so far.
    pub fn passes(&self) -> u64 {
        self.passes.load(Ordering::Acquire)
    }

    pub async fn get(&self, account: &Wallet) -> Result<Option<AgentRecord>, StorageError> {
        self.store.agent(account).await
    }

    /// Creates an agent named `name` and its API key. The record and the key are on disk
    /// before this returns (the key is shown once).
    pub async fn register(&self, name: &str, keys: &ApiKeys) -> Result<Registered, AgentError> {
        let max = self.config.max_unfunded;
        if self
            .unfunded
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_err()
        {
            metrics::counter!("vectorway_agent_registrations_refused_total").increment(1);
            return Err(AgentError::CapacityReached {
                max,
                retry_after_s: self.config.sweep_interval.as_secs().max(1),
            });
        }
        let agent = match self.insert_new(name).await {
            Ok(a) => a,
            Err(e) => {
                self.unfunded.fetch_sub(1, Ordering::AcqRel);
                return Err(e);
            }
        };
        // From here on the record counts as unfunded until it is swept or funded: a failure
        // below leaves it for the sweeper.
        let (api_key, key) = keys.create(agent.account, name).await?;
        metrics::counter!("vectorway_agents_registered_total").increment(1);
        Ok(Registered {
            agent,
            api_key,
            key,
        })
    }

    /// Draws a fresh UUID whose account is unused and stores the record.
    async fn insert_new(&self, name: &str) -> Result<AgentRecord, AgentError> {
        for _ in 0..4 {
            let mut bytes = [0u8; 16];
            self.rng
                .fill(&mut bytes)
                .map_err(|_| StorageError::Sled("no randomness".into()))?;
            let uuid = uuid::Builder::from_random_bytes(bytes).into_uuid();
            let account = account_of(&uuid);
            if self.store.account(&account).await?.is_some()
                || self.store.has_ledger(&account).await?
            {
                continue;
            }
            let created_ms = now_ms();
            let deadline =
                u64::try_from(self.config.deposit_deadline.as_millis()).unwrap_or(u64::MAX);
            let rec = AgentRecord {
                uuid: uuid.hyphenated().to_string(),
                name: name.to_string(),
                account,
                created_ms,
                deadline_ms: created_ms.saturating_add(deadline),
                funded_ms: None,
            };
            if self.store.insert_agent(&rec).await? {
                return Ok(rec);
            }
        }
        Err(StorageError::Sled("no unused agent id in four draws".into()).into())
    }

    /// Pins a live agent against the sweeper while money is on its way to it. The agent must
    /// exist now; the sweeper leaves it alone until the pin is dropped.
    pub async fn pin(self: &Arc<Self>, account: Wallet) -> Result<Pin, AgentError> {
        let _gate = self.gate.lock().await;
        if self.store.pin_agent(&account).await? {
            Ok(self.pinned(account))
        } else {
            Err(AgentError::NotFound(account.to_string()))
        }
    }

    /// `pin` when `account` is an agent's; `None` for any other account.
    pub async fn pin_if_agent(
        self: &Arc<Self>,
        account: Wallet,
    ) -> Result<Option<Pin>, AgentError> {
        let _gate = self.gate.lock().await;
        Ok(self
            .store
            .pin_agent(&account)
            .await?
            .then(|| self.pinned(account)))
    }

    fn pinned(self: &Arc<Self>, account: Wallet) -> Pin {
        *crate::locks::lock(&self.pins).entry(account).or_default() += 1;
        Pin {
            agents: Arc::clone(self),
            account,
        }
    }

    fn is_pinned(&self, account: &Wallet) -> bool {
        crate::locks::lock(&self.pins).contains_key(account)
    }

    /// Records that money reached `account` (when it is an unfunded agent): permanent now.
    pub async fn note_funded(&self, account: &Wallet) -> Result<(), StorageError> {
        if self.store.mark_agent_funded(account, now_ms()).await? {
            self.unfunded.fetch_sub(1, Ordering::AcqRel);
            tracing::info!(%account, "agent funded: permanent");
        }
        Ok(())
    }

    /// Deletes every agent past its deadline that never received money: its keys (at once),
    /// memories, usage history, account and record. Agents found funded become permanent.
    pub async fn sweep(
        &self,
        keys: &ApiKeys,
        memory: &Memory,
        billing: &Billing,
    ) -> Result<Swept, StorageError> {
        let _gate = self.gate.lock().await;
        self.passes.fetch_add(1, Ordering::AcqRel);
        let mut out = Swept::default();
        let due = self.store.agents_due(now_ms()).await?;
        if due.is_empty() {
            return Ok(out);
        }
        let owed: HashSet<Wallet> = self
            .store
            .intents()
            .await?
            .iter()
            .map(|i| i.credited())
            .collect();
        let mut doomed = HashSet::new();
        for account in due {
            if self.is_pinned(&account) || owed.contains(&account) {
                out.kept += 1;
            } else if self.store.has_ledger(&account).await? {
                self.note_funded(&account).await?;
                out.funded += 1;
            } else if self.store.doom_agent(&account).await? {
                doomed.insert(account);
            } else {
                // Pinned by another gateway sharing the store (or funded there meanwhile).
                out.kept += 1;
            }
        }
        if doomed.is_empty() {
            return Ok(out);
        }
        // Keys first, so nothing can act as the agent while the rest goes; the record last, so
        // a crash midway leaves a due record that the next sweep finishes.
        keys.remove_all(&doomed).await?;
        for account in &doomed {
            memory
                .forget_wallet(*account)
                .await
                .map_err(|e| StorageError::Sled(e.to_string()))?;
            self.store.forget_history(account).await?;
            self.store.remove_account(account).await?;
            if self.store.remove_agent(account).await?.is_some() {
                self.unfunded.fetch_sub(1, Ordering::AcqRel);
            }
            billing.forget_if_empty(account);
            out.deleted += 1;
        }
        self.store.flush().await?;
        metrics::counter!("vectorway_agents_swept_total").increment(out.deleted as u64);
        tracing::info!(
            deleted = out.deleted,
            funded = out.funded,
            kept = out.kept,
            "agent sweep"
        );
        Ok(out)
    }

    /// How long the sweeper waits between passes.
    pub fn sweep_interval(&self) -> Duration {
        self.config.sweep_interval
    }
}

/// Keeps an agent from being swept while money is on its way to it (see the module doc).
#[derive(Debug)]
pub struct Pin {
    agents: Arc<Agents>,
    account: Wallet,
}

impl Pin {
    pub fn account(&self) -> Wallet {
        self.account
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut pins = crate::locks::lock(&self.agents.pins);
        if let Some(n) = pins.get_mut(&self.account) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&self.account);
            }
        }
    }
}

#[cfg(test)]
mod tests;
