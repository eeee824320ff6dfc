//! `x402.facilitator = "self"`: the gateway verifies and settles payments itself, on the chain of
//! each network (its `rpc_url`), from a settlement account whose key is `x402.settlement_key`
//! (64 hex digits, literal or `$VAR`). The key is never logged, and never shown in `/status`.

use super::{ConfigError, Network, resolve_secret};

/// The settlement account's private key (hex); its `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct SettlementKey(String);

impl SettlementKey {
    /// The 64 hex digits (with or without `0x`).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SettlementKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SettlementKey(<redacted>)")
    }
}

/// What our own facilitator needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnFacilitator {
    pub key: SettlementKey,
}

/// Validates `x402.facilitator` and `x402.settlement_key`: `None` for a remote facilitator
/// (`""`, the default: `facilitator_url`, or the simulator), `Some` for `"self"`.
pub(super) fn validate(
    mode: &str,
    settlement_key: &str,
    networks: &[Network],
) -> Result<Option<OwnFacilitator>, ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        key: key.into(),
        message,
    };
    match mode {
        "" | "remote" => {
            if !settlement_key.is_empty() {
                return Err(invalid(
                    "x402.settlement_key",
                    "only used with x402.facilitator = \"self\"".into(),
                ));
            }
            return Ok(None);
        }
        "self" => {}
        other => {
            return Err(invalid(
                "x402.facilitator",
                format!("{other:?}: want \"self\", or leave it unset for facilitator_url"),
            ));
        }
    }
    if let Some(n) = networks.iter().find(|n| n.rpc_url.is_none()) {
        return Err(invalid(
            &format!("x402.networks.{}.rpc_url", n.name),
            "x402.facilitator = \"self\" settles on chain: every network needs an rpc_url".into(),
        ));
    }
    let key = resolve_secret("x402.settlement_key", settlement_key)?.ok_or_else(|| {
        invalid(
            "x402.settlement_key",
            "x402.facilitator = \"self\" needs the settlement account's key (64 hex digits, or \
             $VAR naming it)"
                .into(),
        )
    })?;
    let digits = key.trim().trim_start_matches("0x");
    let mut bytes = [0u8; 32];
    if hex::decode_to_slice(digits, &mut bytes).is_err()
        || k256::ecdsa::SigningKey::from_slice(&bytes).is_err()
    {
        // Never echo the value: it is a private key, or close to one.
        return Err(invalid(
            "x402.settlement_key",
            "not a secp256k1 private key (want 64 hex digits)".into(),
        ));
    }
    Ok(Some(OwnFacilitator {
        key: SettlementKey(digits.to_string()),
    }))
}

#[cfg(test)]
mod tests {
    use super::super::{RawConfig, X402Config};
    use super::*;

    const KEY: &str = "4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356";
    const ANVIL: &str = "[x402.networks.anvil]\nchain_id = 31337\n\
        asset = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\neip712_name = \"USD Coin\"\n";

    fn load(file: &str) -> Result<X402Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, file).unwrap();
        RawConfig::load(Some(&path), std::iter::empty())?
            .validate()
            .map(|c| c.x402)
    }

    fn refusal(r: Result<X402Config, ConfigError>) -> (String, String) {
        match r {
            Err(ConfigError::Invalid { key, message }) => (key, message),
            other => panic!("expected an invalid-config error, got {other:?}"),
        }
    }

    #[test]
    fn self_mode_takes_a_key_and_never_shows_it() {
        let x = load(&format!(
            "[x402]\nfacilitator = \"self\"\nsettlement_key = \"0x{KEY}\"\n\
             {ANVIL}rpc_url = \"http://127.0.0.1:8545\"\n"
        ))
        .unwrap();
        let own = x.own.clone().unwrap();
        assert_eq!(own.key.expose(), KEY);
        assert!(!format!("{x:?}").contains(KEY), "Debug shows no key");
        // The default is a remote facilitator.
        assert!(load("").unwrap().own.is_none());
    }

    #[test]
    fn self_mode_refusals_name_the_key_and_never_echo_it() {
        let (key, _) = refusal(load(&format!(
            "[x402]\nfacilitator = \"self\"\nsettlement_key = \"{KEY}\"\n{ANVIL}"
        )));
        assert_eq!(key, "x402.networks.anvil.rpc_url");
        let with_rpc = format!("{ANVIL}rpc_url = \"http://127.0.0.1:8545\"\n");
        let (key, _) = refusal(load(&format!("[x402]\nfacilitator = \"self\"\n{with_rpc}")));
        assert_eq!(key, "x402.settlement_key");
        let bad = "zz".repeat(32);
        let (key, message) = refusal(load(&format!(
            "[x402]\nfacilitator = \"self\"\nsettlement_key = \"{bad}\"\n{with_rpc}"
        )));
        assert_eq!(key, "x402.settlement_key");
        assert!(!message.contains(&bad));
        let (key, message) = refusal(load(&format!(
            "[x402]\nfacilitator = \"self\"\nsettlement_key = \"$VW_TEST_UNSET_KEY\"\n{with_rpc}"
        )));
        assert_eq!(key, "x402.settlement_key");
        assert!(message.contains("not set"), "{message}");
        let (key, _) = refusal(load("[x402]\nfacilitator = \"mine\"\n"));
        assert_eq!(key, "x402.facilitator");
        let (key, _) = refusal(load(&format!("[x402]\nsettlement_key = \"{KEY}\"\n")));
        assert_eq!(key, "x402.settlement_key");
    }
}
