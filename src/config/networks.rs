//! x402 networks from configuration: built-in Base and Base Sepolia USDC, and any EVM token an
//! operator names in `[x402.networks.<name>]`.
//!
//! `x402.networks` takes one of two forms:
//! - a list of built-in names, `["base-sepolia", "base"]` (the default is `["base-sepolia"]`);
//!   a v1 name or its CAIP-2 id (`eip155:84532`) both name the built-in;
//! - a table, one entry per network offered, in the order written:
//!   ```toml
//!   [x402.networks.base-sepolia]          # a built-in: every field is optional
//!   rpc_url = "$BASE_SEPOLIA_RPC"
//!   [x402.networks.anvil]                 # anything else: chain_id, asset, eip712_name
//!   chain_id = 31337                      # caip2 defaults to eip155:<chain_id>
//!   asset = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
//!   eip712_name = "USD Coin"
//!   eip712_version = "2"                  # the default
//!   decimals = 6                          # the default, and the only value accepted
//!   rpc_url = "http://127.0.0.1:8545"     # optional; literal or $VAR, never logged
//!   ```
//!   The key is the network's v1 name (`x402Version: 1` payloads carry it), the CAIP-2 id is
//!   its v2 name. A built-in's fields override its defaults.
//!
//! Only 6-decimal tokens are accepted: 1 credit is 1 atomic unit of the token (DESIGN §3), so a
//! token with other decimals would price every call wrongly.

use std::sync::Arc;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

use super::{ConfigError, resolve_secret};
use crate::wallet::Wallet;

/// The only token precision the credit unit allows (1 credit = 10^-6 token).
pub const DECIMALS: u8 = 6;

/// One network offered for x402 payments (built in, or `[x402.networks.<name>]`).
#[derive(Clone, PartialEq, Eq)]
pub struct Network {
    /// v1 name: "base", "base-sepolia", or the operator's name for it.
    pub name: Arc<str>,
    /// CAIP-2: "eip155:8453".
    pub caip2: Arc<str>,
    pub chain_id: u64,
    /// The token contract (EIP-712 verifyingContract).
    pub asset: Wallet,
    /// EIP-712 domain name and version of that token ("USD Coin"/"USDC", "2").
    pub eip712_name: Arc<str>,
    pub eip712_version: Arc<str>,
    /// Token decimals: always 6 (1 credit = 1 atomic unit).
    pub decimals: u8,
    /// EVM JSON-RPC endpoint to read the token's state from; may carry a secret (never logged).
    pub rpc_url: Option<Arc<str>>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("name", &self.name)
            .field("caip2", &self.caip2)
            .field("asset", &self.asset)
            .field("eip712_name", &self.eip712_name)
            .field("eip712_version", &self.eip712_version)
            .field("rpc_url", &self.rpc_url.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// `x402.networks` as written: a list of built-in names, or a table of network definitions.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum RawNetworks {
    Names(Vec<String>),
    Defined(toml::Table),
}

impl Default for RawNetworks {
    fn default() -> Self {
        // Testnet only by default: mainnet needs a real payTo and a real facilitator.
        RawNetworks::Names(vec!["base-sepolia".into()])
    }
}

impl<'de> Deserialize<'de> for RawNetworks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(d)? {
            toml::Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s),
                    other => Err(D::Error::custom(format!(
                        "x402.networks: a network name must be a string, not {other}"
                    ))),
                })
                .collect::<Result<_, _>>()
                .map(RawNetworks::Names),
            toml::Value::Table(t) => Ok(RawNetworks::Defined(t)),
            other => Err(D::Error::custom(format!(
                "x402.networks: want a list of names or [x402.networks.<name>] tables, not {other}"
            ))),
        }
    }
}

impl From<Vec<String>> for RawNetworks {
    fn from(names: Vec<String>) -> Self {
        RawNetworks::Names(names)
    }
}

/// One `[x402.networks.<name>]` table.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawNetwork {
    /// CAIP-2 id, `eip155:<chain_id>`.
    pub caip2: Option<String>,
    pub chain_id: Option<u64>,
    /// The token contract (the EIP-712 `verifyingContract`).
    pub asset: Option<String>,
    /// The token's EIP-712 domain name and version (what `extra` tells payers to sign).
    pub eip712_name: Option<String>,
    pub eip712_version: Option<String>,
    pub decimals: Option<u8>,
    /// EVM JSON-RPC endpoint (literal or `$VAR`): the gateway reads the token's authorization
    /// state there to resolve settlements whose outcome the facilitator left unknown.
    pub rpc_url: Option<String>,
}

/// The USDC deployments built in (reference x402-siwe.md §2.2), by v1 name or CAIP-2 id.
pub fn known_network(name: &str) -> Option<Network> {
    let (name, caip2, chain_id, asset, eip712_name) = match name {
        "base" | "eip155:8453" => (
            "base",
            "eip155:8453",
            8453,
            "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
            "USD Coin",
        ),
        "base-sepolia" | "eip155:84532" => (
            "base-sepolia",
            "eip155:84532",
            84532,
            "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
            "USDC",
        ),
        _ => return None,
    };
    Some(Network {
        name: name.into(),
        caip2: caip2.into(),
        chain_id,
        asset: asset.parse().ok()?,
        eip712_name: eip712_name.into(),
        eip712_version: "2".into(),
        decimals: DECIMALS,
        rpc_url: None,
    })
}

fn invalid(key: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message,
    }
}

/// A v1 network name: lowercase letters, digits and `-`, as x402's own names are.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
}

/// One defined network: a built-in with overrides, or a network of the operator's.
fn define(name: &str, value: &toml::Value) -> Result<Network, ConfigError> {
    let key = format!("x402.networks.{name}");
    if !valid_name(name) {
        return Err(invalid(
            &key,
            "a network's name is its x402 v1 name: lowercase letters, digits and '-'".into(),
        ));
    }
    // A string field set from the environment may arrive as a number
    // (`…__EIP712_VERSION=2`): it stays the string it was written as.
    let mut value = value.clone();
    if let toml::Value::Table(t) = &mut value {
        for field in ["caip2", "asset", "eip712_name", "eip712_version", "rpc_url"] {
            if let Some(v @ (toml::Value::Integer(_) | toml::Value::Float(_))) = t.get_mut(field) {
                *v = toml::Value::String(v.to_string());
            }
        }
    }
    let raw: RawNetwork = value
        .try_into()
        .map_err(|e: toml::de::Error| invalid(&key, e.message().to_string()))?;
    let base = known_network(name);
    let chain_id = match (raw.chain_id, &base) {
        (Some(id), _) => id,
        (None, Some(b)) => b.chain_id,
        (None, None) => return Err(invalid(&key, "chain_id is required".into())),
    };
    if chain_id == 0 {
        return Err(invalid(&key, "chain_id must be greater than 0".into()));
    }
    let caip2 = format!("eip155:{chain_id}");
    if let Some(c) = &raw.caip2
        && *c != caip2
    {
        return Err(invalid(
            &key,
            format!("caip2 {c:?} does not match chain_id {chain_id} (want {caip2:?})"),
        ));
    }
    if let Some(b) = &base
        && b.chain_id != chain_id
    {
        return Err(invalid(
            &key,
            format!(
                "{name} is chain {}; name another chain differently",
                b.chain_id
            ),
        ));
    }
    let asset: Wallet = match (&raw.asset, &base) {
        (Some(a), _) => a
            .parse()
            .map_err(|e: String| invalid(&format!("{key}.asset"), e))?,
        (None, Some(b)) => b.asset,
        (None, None) => {
            return Err(invalid(
                &key,
                "asset (the token address) is required".into(),
            ));
        }
    };
    if asset.0 == [0u8; 20] {
        return Err(invalid(&format!("{key}.asset"), "the zero address".into()));
    }
    let eip712_name = match (&raw.eip712_name, &base) {
        (Some(n), _) if !n.is_empty() => Arc::from(n.as_str()),
        (Some(_), _) => return Err(invalid(&key, "eip712_name is empty".into())),
        (None, Some(b)) => b.eip712_name.clone(),
        (None, None) => {
            return Err(invalid(
                &key,
                "eip712_name (the token's EIP-712 domain name, e.g. \"USD Coin\") is required"
                    .into(),
            ));
        }
    };
    let eip712_version: Arc<str> = match &raw.eip712_version {
        Some(v) if !v.is_empty() => v.as_str().into(),
        Some(_) => return Err(invalid(&key, "eip712_version is empty".into())),
        None => base
            .as_ref()
            .map_or_else(|| "2".into(), |b| b.eip712_version.clone()),
    };
    let decimals = raw.decimals.unwrap_or(DECIMALS);
    if decimals != DECIMALS {
        return Err(invalid(
            &format!("{key}.decimals"),
            format!(
                "{decimals} is not supported: 1 credit is one atomic unit of a {DECIMALS}-decimal \
                 token (USDC), so only {DECIMALS} is accepted"
            ),
        ));
    }
    let rpc_url = match resolve_secret(
        &format!("{key}.rpc_url"),
        raw.rpc_url.as_deref().unwrap_or(""),
    )? {
        None => None,
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
            Some(Arc::from(url.trim_end_matches('/')))
        }
        Some(_) => {
            return Err(invalid(
                &format!("{key}.rpc_url"),
                "want http(s)://…".into(),
            ));
        }
    };
    Ok(Network {
        name: name.into(),
        caip2: caip2.into(),
        chain_id,
        asset,
        eip712_name,
        eip712_version,
        decimals,
        rpc_url,
    })
}

/// The networks offered, in order. Refuses an empty set, unknown names, and two entries that a
/// payment could not tell apart (same v1 name, or same chain).
pub fn validate(raw: &RawNetworks) -> Result<Vec<Network>, ConfigError> {
    let networks = match raw {
        RawNetworks::Names(names) => names
            .iter()
            .map(|n| {
                known_network(n).ok_or_else(|| {
                    invalid(
                        "x402.networks",
                        format!(
                            "unknown network {n}; the built-ins are base and base-sepolia \
                             (or eip155:8453, eip155:84532); define others as \
                             [x402.networks.<name>] with chain_id, asset and eip712_name"
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        RawNetworks::Defined(table) => table
            .iter()
            .map(|(name, value)| define(name, value))
            .collect::<Result<Vec<_>, _>>()?,
    };
    if networks.is_empty() {
        return Err(invalid(
            "x402.networks",
            "offer at least one network".into(),
        ));
    }
    for (i, n) in networks.iter().enumerate() {
        if let Some(dup) = networks[..i]
            .iter()
            .find(|m| m.name == n.name || m.chain_id == n.chain_id)
        {
            return Err(invalid(
                "x402.networks",
                format!(
                    "{} and {} are the same network (one token per chain: a v2 payment names \
                     only the chain)",
                    dup.name, n.name
                ),
            ));
        }
    }
    Ok(networks)
}

#[cfg(test)]
mod tests {
    use super::super::RawConfig;
    use super::*;

    const ANVIL_USDC: &str = "0x5FbDB2315678afecb367f032d93F642f64180aa3";

    fn load(file: &str, env: &[(&str, &str)]) -> Result<Vec<Network>, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, file).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        RawConfig::load(Some(&path), env)?
            .validate()
            .map(|c| c.x402.networks)
    }

    fn invalid_key(r: Result<Vec<Network>, ConfigError>) -> (String, String) {
        match r {
            Err(ConfigError::Invalid { key, message }) => (key, message),
            other => panic!("expected an invalid-config error, got {other:?}"),
        }
    }

    #[test]
    fn the_default_is_base_sepolia_and_names_resolve_both_ways() {
        let nets = load("", &[]).unwrap();
        assert_eq!(nets, vec![known_network("base-sepolia").unwrap()]);
        let nets = load(
            "[x402]\nnetworks = [\"eip155:8453\", \"base-sepolia\"]\nfacilitator_url = \"https://f.example\"\npay_to = \"0x209693Bc6afc0C5328bA36FaF03C514EF312287C\"\n",
            &[],
        )
        .unwrap();
        let names: Vec<&str> = nets.iter().map(|n| &*n.name).collect();
        assert_eq!(names, ["base", "base-sepolia"], "listed order, v1 names");
        assert_eq!(&*nets[0].caip2, "eip155:8453");
    }

    #[test]
    fn a_token_of_our_choosing_on_any_chain() {
        let file = format!(
            "[x402.networks.anvil]\nchain_id = 31337\nasset = \"{ANVIL_USDC}\"\n\
             eip712_name = \"USD Coin\"\nrpc_url = \"http://127.0.0.1:8545/\"\n\
             [x402.networks.base-sepolia]\n"
        );
        let nets = load(&file, &[]).unwrap();
        assert_eq!(nets.len(), 2);
        let anvil = &nets[0];
        assert_eq!((&*anvil.name, &*anvil.caip2), ("anvil", "eip155:31337"));
        assert_eq!(anvil.chain_id, 31337);
        assert_eq!(anvil.asset, ANVIL_USDC.parse().unwrap());
        assert_eq!(
            (&*anvil.eip712_name, &*anvil.eip712_version),
            ("USD Coin", "2")
        );
        assert_eq!(anvil.decimals, 6);
        assert_eq!(anvil.rpc_url.as_deref(), Some("http://127.0.0.1:8545"));
        assert!(
            !format!("{anvil:?}").contains("8545"),
            "the RPC URL is not logged"
        );
        assert_eq!(
            nets[1],
            known_network("base-sepolia").unwrap(),
            "the file's order"
        );
    }

    #[test]
    fn a_network_from_the_environment_replaces_the_default_list() {
        let nets = load(
            "",
            &[
                ("VECTORWAY_X402__NETWORKS__ANVIL__CHAIN_ID", "31337"),
                ("VECTORWAY_X402__NETWORKS__ANVIL__ASSET", ANVIL_USDC),
                ("VECTORWAY_X402__NETWORKS__ANVIL__EIP712_NAME", "USD Coin"),
                ("VECTORWAY_X402__NETWORKS__ANVIL__EIP712_VERSION", "2"),
            ],
        )
        .unwrap();
        assert_eq!(nets.len(), 1);
        assert_eq!(&*nets[0].caip2, "eip155:31337");
    }

    #[test]
    fn a_built_in_takes_overrides() {
        let nets = load(
            "[x402.networks.base-sepolia]\nrpc_url = \"https://sepolia.base.org\"\n",
            &[],
        )
        .unwrap();
        let mut want = known_network("base-sepolia").unwrap();
        want.rpc_url = Some("https://sepolia.base.org".into());
        assert_eq!(nets, vec![want]);
    }

    #[test]
    fn refusals_name_the_key() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "[x402]\nnetworks = [\"polygon\"]\n",
                "x402.networks",
                "unknown network polygon",
            ),
            (
                "[x402.networks.anvil]\nasset = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\neip712_name = \"USD Coin\"\n",
                "x402.networks.anvil",
                "chain_id is required",
            ),
            (
                "[x402.networks.anvil]\nchain_id = 31337\neip712_name = \"USD Coin\"\n",
                "x402.networks.anvil",
                "asset",
            ),
            (
                "[x402.networks.anvil]\nchain_id = 31337\nasset = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\n",
                "x402.networks.anvil",
                "eip712_name",
            ),
            (
                "[x402.networks.anvil]\nchain_id = 31337\ncaip2 = \"eip155:1\"\nasset = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\neip712_name = \"X\"\n",
                "x402.networks.anvil",
                "does not match",
            ),
            (
                "[x402.networks.anvil]\nchain_id = 31337\nasset = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\neip712_name = \"X\"\ndecimals = 18\n",
                "x402.networks.anvil.decimals",
                "18 is not supported",
            ),
            (
                "[x402.networks.anvil]\nchain_id = 31337\nasset = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\neip712_name = \"X\"\nrpc_url = \"ws://x\"\n",
                "x402.networks.anvil.rpc_url",
                "http",
            ),
            (
                "[x402.networks.anvil]\nchain_id = 31337\nasset = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\neip712_name = \"X\"\nrpc_url = \"$VECTORWAY_TEST_UNSET_RPC\"\n",
                "x402.networks.anvil.rpc_url",
                "not set",
            ),
            (
                "[x402.networks.anvil]\nchain_id = 31337\nasset = \"0xnope\"\neip712_name = \"X\"\n",
                "x402.networks.anvil.asset",
                "",
            ),
            (
                "[x402.networks.anvil]\nchain_id = 84532\nasset = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\neip712_name = \"X\"\n[x402.networks.base-sepolia]\n",
                "x402.networks",
                "same network",
            ),
            (
                "[x402.networks.base]\nchain_id = 1\n",
                "x402.networks.base",
                "is chain 8453",
            ),
            (
                "[x402.networks.Anvil]\nchain_id = 1\n",
                "x402.networks.Anvil",
                "v1 name",
            ),
            (
                "[x402.networks.anvil]\nchain_id = 31337\nasset = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\neip712_name = \"X\"\ncolour = \"blue\"\n",
                "x402.networks.anvil",
                "unknown field",
            ),
            ("[x402]\nnetworks = []\n", "x402.networks", "at least one"),
        ];
        for (file, key, message) in cases {
            let (k, m) = invalid_key(load(file, &[]));
            assert_eq!(k, *key, "{file}");
            assert!(m.contains(message), "{file}: {m}");
        }
    }
}
