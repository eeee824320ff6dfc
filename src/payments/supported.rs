//! A remote facilitator's `GET /supported`, read at start: every configured network must be one of its kinds.
//!
//! The facilitator HTTP API lists what a facilitator settles as `kinds` of
//! `{x402Version, scheme, network}` (reference §3). A configured network is supported when some
//! kind has scheme `exact` and names it, by CAIP-2 id (`eip155:84532`, v2) or by its v1 name
//! (`base-sepolia`); a kind `eip155:*` covers every EVM chain. A configured network that the
//! facilitator does not list is a configuration error: every payment on it would be refused at
//! `/verify`, so the gateway does not start (`app::StartError::FacilitatorNetworks`).
//!
//! A facilitator that cannot be read at start (down, a time-out, a 5xx, an answer that is not a
//! `/supported` body, no answer within `START_WAIT`) does not stop the gateway: it starts,
//! `/readyz` answers 503 with `facilitator: <why>`, and `watch` reads `/supported` again (1 s, doubling up to 30 s) until it
//! answers. A late answer that lacks a configured network keeps `/readyz` at 503 for good, with
//! the networks named (the process is already serving; the operator must fix the config).

use std::sync::RwLock;
use std::time::Duration;

use super::FacilitatorClient;
use super::types::SupportedResponse;
use crate::config::Network;

/// Whether the facilitator's `/supported` was read and covers the configured networks.
#[derive(Debug)]
pub struct Readiness {
    /// `None`: ready. `Some(why)`: not ready, and why.
    not_ready: RwLock<Option<String>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            not_ready: RwLock::new(None),
        }
    }
}

impl Readiness {
    /// Why the facilitator is not ready, or `None` when it is.
    pub fn not_ready(&self) -> Option<String> {
        self.not_ready
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set(&self, why: Option<String>) {
        *self.not_ready.write().unwrap_or_else(|p| p.into_inner()) = why;
    }
}

/// What one read of `/supported` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Every configured network is supported.
    Covered,
    /// These configured networks are not (`name (caip2)` each).
    Missing(Vec<String>),
    /// `/supported` could not be read.
    Unreadable(String),
}

/// The configured networks `answer` does not cover, as `name (caip2)`.
pub fn missing(networks: &[Network], answer: &SupportedResponse) -> Vec<String> {
    networks
        .iter()
        .filter(|n| {
            !answer.kinds.iter().any(|k| {
                k.scheme == "exact"
                    && (k.network == *n.caip2
                        || k.network == *n.name
                        || (k.network == "eip155:*" && n.caip2.starts_with("eip155:")))
            })
        })
        .map(|n| format!("{} ({})", n.name, n.caip2))
        .collect()
}

/// The longest the start waits for `/supported` (a facilitator that does not answer sooner is
/// read again in the background, `watch`): the gateway comes up promptly either way.
pub const START_WAIT: Duration = Duration::from_secs(5);

/// `check`, waiting at most `START_WAIT` (the start-up read).
pub async fn check_at_start(client: &FacilitatorClient, networks: &[Network]) -> Check {
    tokio::time::timeout(START_WAIT, check(client, networks))
        .await
        .unwrap_or_else(|_| Check::Unreadable(format!("no answer within {START_WAIT:?}")))
}

/// Reads `/supported` once and checks `networks` against it.
pub async fn check(client: &FacilitatorClient, networks: &[Network]) -> Check {
    match client.supported().await {
        Ok(answer) => {
            let gone = missing(networks, &answer);
            if gone.is_empty() {
                Check::Covered
            } else {
                Check::Missing(gone)
            }
        }
        Err(e) => Check::Unreadable(e.to_string()),
    }
}

/// The message for networks the facilitator does not support.
pub fn unsupported_message(host: &str, gone: &[String]) -> String {
    format!(
        "the x402 facilitator at {host} does not support network {} (scheme exact) in its \
         /supported answer; remove it from x402.networks or use a facilitator that settles it",
        gone.join(", ")
    )
}

/// Reads `/supported` until it answers (the gateway started without it), keeping `readiness`
/// up to date. Returns once the answer is known.
pub async fn watch(client: &FacilitatorClient, networks: &[Network], readiness: &Readiness) {
    let mut pause = Duration::from_secs(1);
    loop {
        tokio::time::sleep(pause).await;
        match check(client, networks).await {
            Check::Covered => {
                tracing::info!("the x402 facilitator answers /supported: ready");
                readiness.set(None);
                return;
            }
            Check::Missing(gone) => {
                let msg = unsupported_message(client.base_host(), &gone);
                tracing::error!("{msg}");
                readiness.set(Some(msg));
                return;
            }
            Check::Unreadable(e) => {
                tracing::warn!(error = %e, "the x402 facilitator's /supported is still unreadable");
                readiness.set(Some(format!("facilitator /supported unreadable: {e}")));
                pause = (pause * 2).min(Duration::from_secs(30));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::known_network;
    use crate::payments::facilitator::host_of;

    #[test]
    fn messages_name_the_host_without_path_query_or_credentials() {
        assert_eq!(host_of("https://x402.org/facilitator"), "x402.org");
        assert_eq!(host_of("http://127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(
            host_of("https://user:tok@fac.example:443/p?k=s"),
            "fac.example:443"
        );
        assert_eq!(host_of("https://fac.example?key=secret"), "fac.example");
    }

    fn answer(kinds: serde_json::Value) -> SupportedResponse {
        serde_json::from_value(serde_json::json!({ "kinds": kinds })).unwrap()
    }

    #[test]
    fn a_network_is_covered_by_caip2_or_v1_name_with_scheme_exact() {
        let nets = vec![known_network("base-sepolia").unwrap()];
        let by_caip2 = answer(serde_json::json!([
            {"x402Version": 2, "scheme": "exact", "network": "eip155:84532"}
        ]));
        assert!(missing(&nets, &by_caip2).is_empty());
        let by_name = answer(serde_json::json!([
            {"x402Version": 1, "scheme": "exact", "network": "base-sepolia"}
        ]));
        assert!(missing(&nets, &by_name).is_empty());
        let wildcard = answer(serde_json::json!([
            {"x402Version": 2, "scheme": "exact", "network": "eip155:*"}
        ]));
        assert!(missing(&nets, &wildcard).is_empty());
        let other_scheme = answer(serde_json::json!([
            {"x402Version": 2, "scheme": "upto", "network": "eip155:84532"}
        ]));
        assert_eq!(
            missing(&nets, &other_scheme),
            vec!["base-sepolia (eip155:84532)"]
        );
        let other_chain = answer(serde_json::json!([
            {"x402Version": 2, "scheme": "exact", "network": "eip155:8453"},
            {"x402Version": 1, "scheme": "exact", "network": "base"}
        ]));
        assert_eq!(
            missing(&nets, &other_chain),
            vec!["base-sepolia (eip155:84532)"]
        );
    }
}
