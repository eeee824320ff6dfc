//! The `[agents]` section: agent accounts registered without a wallet (LLM-for-Agents) and their sweep.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Agent accounts (`POST /api/v1/agents/register`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAgents {
    /// An agent that has received no money this long after registering is deleted.
    pub deposit_deadline_ms: u64,
    /// How often the sweeper looks for agents past their deadline.
    pub sweep_interval_ms: u64,
    /// Unfunded agents alive at once, at most; past it registration answers 503
    /// `agent_capacity_reached` until a sweep or a first deposit frees a place.
    pub max_unfunded: usize,
    /// Registrations per client IP per minute (IPv6 by /64), in bursts of as many.
    pub register_per_min: u32,
}

impl Default for RawAgents {
    fn default() -> Self {
        Self {
            deposit_deadline_ms: 15 * 60_000,
            sweep_interval_ms: 5 * 60_000,
            max_unfunded: 10_000,
            register_per_min: 5,
        }
    }
}

/// The validated `[agents]` section.
#[derive(Debug, Clone, Copy)]
pub struct AgentsConfig {
    pub deposit_deadline: Duration,
    pub sweep_interval: Duration,
    pub max_unfunded: usize,
    pub register_per_min: u32,
}

impl RawAgents {
    pub(super) fn validate(&self) -> Result<AgentsConfig, ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            key: format!("agents.{key}"),
            message: message.into(),
        };
        if self.deposit_deadline_ms == 0 {
            return Err(invalid("deposit_deadline_ms", "must be greater than 0"));
        }
        if !(10..=86_400_000).contains(&self.sweep_interval_ms) {
            return Err(invalid("sweep_interval_ms", "from 10 ms to one day"));
        }
        if self.max_unfunded == 0 {
            return Err(invalid("max_unfunded", "must be greater than 0"));
        }
        if self.register_per_min == 0 {
            return Err(invalid("register_per_min", "must be greater than 0"));
        }
        Ok(AgentsConfig {
            deposit_deadline: Duration::from_millis(self.deposit_deadline_ms),
            sweep_interval: Duration::from_millis(self.sweep_interval_ms),
            max_unfunded: self.max_unfunded,
            register_per_min: self.register_per_min,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_seed_and_zeros_are_refused() {
        let c = RawAgents::default().validate().unwrap();
        assert_eq!(c.deposit_deadline, Duration::from_secs(15 * 60));
        assert_eq!(c.sweep_interval, Duration::from_secs(5 * 60));
        assert_eq!(c.register_per_min, 5);
        for bad in [
            RawAgents {
                deposit_deadline_ms: 0,
                ..RawAgents::default()
            },
            RawAgents {
                sweep_interval_ms: 1,
                ..RawAgents::default()
            },
            RawAgents {
                max_unfunded: 0,
                ..RawAgents::default()
            },
            RawAgents {
                register_per_min: 0,
                ..RawAgents::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
