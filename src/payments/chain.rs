//! Reading an EIP-3009 token's state over EVM JSON-RPC: did an authorization move money?
//!
//! A settlement whose outcome the facilitator left unknown (a time-out, `settlement_pending`, a
//! retry refused after an earlier attempt may have settled) is looked up on the chain of its
//! network, when the network has an `rpc_url`:
//! 1. `authorizationState(from, nonce)` on the token (`eth_call`): `false` means no transaction
//!    has used or canceled the authorization as of the latest block;
//! 2. if it is `true`, the token's `AuthorizationUsed(authorizer, nonce)` or
//!    `AuthorizationCanceled(authorizer, nonce)` log (`eth_getLogs`, both indexed, over the last
//!    `LOOKBACK_BLOCKS` blocks) says which, and in which transaction. FiatToken sets the same
//!    flag for both, so the flag alone cannot tell a payment from a payer who canceled it;
//! 3. for an unused authorization, the latest block's timestamp: once it is at or past
//!    `validBefore`, no block can ever accept the authorization (the token requires
//!    `block.timestamp < validBefore`, and timestamps never go back), which proves nothing moved.
//!
//! The RPC URL may carry a provider key: it is never logged, and errors name the method only.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Value, json};

use crate::config::Network;
use crate::crypto::keccak256;
use crate::upstream::client::HttpClient;
use crate::wallet::Wallet;

/// How far back the authorization's log is looked for: an authorization is valid for minutes
/// (`maxTimeoutSeconds`), so this is hours of blocks even on 2-second chains, and within the
/// range most RPC providers serve in one `eth_getLogs`.
pub const LOOKBACK_BLOCKS: u64 = 5_000;
/// The largest RPC answer read.
const MAX_BODY: usize = 1 << 20;

/// What the chain says about one authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizationState {
    /// Not used or canceled as of the latest block, whose timestamp is `chain_time`.
    Unused { chain_time: u64 },
    /// Used by `transaction`: the transfer happened.
    Used { transaction: String },
    /// Canceled by the payer (`cancelAuthorization`): no transfer, ever.
    Canceled { transaction: String },
    /// Flagged on chain, but no log in the last `LOOKBACK_BLOCKS` blocks says which.
    Unlocated,
}

/// A JSON-RPC reader for token state (one per gateway; cheap to clone).
#[derive(Clone)]
pub struct ChainReader {
    http: HttpClient,
    timeout: Duration,
}

impl std::fmt::Debug for ChainReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainReader").finish_non_exhaustive()
    }
}

/// The 4-byte selector of a function signature.
fn selector(signature: &str) -> [u8; 4] {
    let h = keccak256(signature.as_bytes());
    [h[0], h[1], h[2], h[3]]
}

fn word(address: &Wallet) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[12..].copy_from_slice(address.as_bytes());
    w
}

fn hex0x(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

/// A `0x…` quantity (block number, timestamp).
pub(crate) fn quantity(v: &Value, what: &str) -> Result<u64, String> {
    v.as_str()
        .and_then(|s| s.strip_prefix("0x"))
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .ok_or_else(|| format!("{what}: not a quantity: {v}"))
}

impl ChainReader {
    pub fn new(http: HttpClient, timeout: Duration) -> Self {
        Self { http, timeout }
    }

    /// Whether the authorization `(from, nonce)` on `net`'s token was used, canceled, or is
    /// still open. `Err` when the network has no RPC URL or the node cannot be read.
    pub async fn authorization(
        &self,
        net: &Network,
        from: &Wallet,
        nonce: &[u8; 32],
    ) -> Result<AuthorizationState, String> {
        let url = net
            .rpc_url
            .as_deref()
            .ok_or_else(|| format!("{} has no rpc_url", net.name))?;
        let token = hex0x(net.asset.as_bytes());
        let mut data = selector("authorizationState(address,bytes32)").to_vec();
        data.extend_from_slice(&word(from));
        data.extend_from_slice(nonce);
        let flag = self
            .rpc(
                url,
                "eth_call",
                json!([{"to": token, "data": hex0x(&data)}, "latest"]),
            )
            .await?;
        let flag = flag
            .as_str()
            .and_then(|s| s.strip_prefix("0x"))
            .and_then(|s| hex::decode(s).ok())
            .filter(|b| b.len() == 32)
            .ok_or_else(|| format!("authorizationState: unexpected answer {flag}"))?;
        if flag.iter().all(|b| *b == 0) {
            let block = self
                .rpc(url, "eth_getBlockByNumber", json!(["latest", false]))
                .await?;
            let chain_time = quantity(&block["timestamp"], "latest block timestamp")?;
            return Ok(AuthorizationState::Unused { chain_time });
        }
        let latest = quantity(
            &self.rpc(url, "eth_blockNumber", json!([])).await?,
            "eth_blockNumber",
        )?;
        let used = hex0x(&keccak256(b"AuthorizationUsed(address,bytes32)"));
        let canceled = hex0x(&keccak256(b"AuthorizationCanceled(address,bytes32)"));
        let logs = self
            .rpc(
                url,
                "eth_getLogs",
                json!([{
                    "address": token,
                    "fromBlock": format!("0x{:x}", latest.saturating_sub(LOOKBACK_BLOCKS)),
                    "toBlock": "latest",
                    "topics": [[used, canceled], hex0x(&word(from)), hex0x(nonce)],
                }]),
            )
            .await?;
        let Some(log) = logs.as_array().and_then(|l| l.last()) else {
            return Ok(AuthorizationState::Unlocated);
        };
        let transaction = log["transactionHash"]
            .as_str()
            .ok_or("eth_getLogs: a log without transactionHash")?
            .to_ascii_lowercase();
        match log["topics"][0].as_str().map(str::to_ascii_lowercase) {
            Some(t) if t == used => Ok(AuthorizationState::Used { transaction }),
            Some(t) if t == canceled => Ok(AuthorizationState::Canceled { transaction }),
            _ => Err("eth_getLogs: a log of another event".into()),
        }
    }

    /// One JSON-RPC call; `Err` names the method, never the URL.
    pub(crate) async fn rpc(
        &self,
        url: &str,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let req = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| format!("{method}: {e}"))?;
        let exchange = async {
            let res = self
                .http
                .request(req)
                .await
                .map_err(|e| format!("{method}: request failed: {e}"))?;
            let status = res.status();
            let bytes = Limited::new(res.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| format!("{method}: reading the answer failed: {e}"))?
                .to_bytes();
            if !status.is_success() {
                return Err(format!("{method}: the node answered {status}"));
            }
            serde_json::from_slice::<Value>(&bytes).map_err(|e| format!("{method}: not JSON: {e}"))
        };
        let answer = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("{method}: no answer within {:?}", self.timeout))??;
        if let Some(e) = answer.get("error").filter(|e| !e.is_null()) {
            return Err(format!("{method}: {e}"));
        }
        answer
            .get("result")
            .cloned()
            .ok_or_else(|| format!("{method}: an answer without a result"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_and_topics_are_the_token_abis() {
        // FiatTokenV2_2 / EIP3009.sol: authorizationState(address,bytes32) is 0xe94a0102.
        assert_eq!(
            hex::encode(selector("authorizationState(address,bytes32)")),
            "e94a0102"
        );
        assert_eq!(
            hex::encode(keccak256(b"AuthorizationUsed(address,bytes32)")),
            "98de503528ee59b575ef0c0a2576a82497bfc029a5685b209e9ec333479b10a5"
        );
        assert_eq!(
            hex::encode(keccak256(b"AuthorizationCanceled(address,bytes32)")),
            "1cdd46ff242716cdaa72d159d339a485b3438398348d68f09d7c8c0a59353d81"
        );
    }

    #[test]
    fn quantities_parse() {
        assert_eq!(quantity(&json!("0x1a"), "n").unwrap(), 26);
        assert!(quantity(&json!("26"), "n").is_err());
        assert!(quantity(&json!(26), "n").is_err());
    }
}
