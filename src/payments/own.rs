//! Our own facilitator (`x402.facilitator = "self"`): `/verify` and `/settle` answered from the
//! chain itself, behind the same seam as a remote facilitator (`facilitator::Facilitator`), so
//! the API layer cannot tell the two apart.
//!
//! **Verify** reads the chain of the payment's network (its `rpc_url`): the token's
//! `DOMAIN_SEPARATOR()` is the EIP-712 domain we were configured with (checked once per network;
//! a mismatch is an operator error), the payment passes every local check (`verify::check`:
//! network, asset, payTo, value, signature) at the chain's own time (the latest block's
//! timestamp), `balanceOf(from) ≥ value`, `authorizationState(from, nonce)` is unused, and the
//! settlement account holds some gas (an empty one is an operator error, answered before the
//! model runs, not a payment lost later).
//!
//! **Settle** submits `transferWithAuthorization(from, to, value, validAfter, validBefore, nonce,
//! v, r, s)` from the settlement account. Never pay twice:
//! 1. every transaction sent for an authorization is recorded (hash, raw bytes, account nonce)
//!    and fsynced BEFORE it is broadcast (`storage::sent_txs`);
//! 2. a settle first looks at the recorded transactions of its authorization: a mined one
//!    decides (status 1: paid, by it); one the node still holds is waited for; one the node lost
//!    is broadcast again byte for byte (the same transaction cannot pay twice);
//! 3. a NEW transaction is built only after `authorizationState(from, nonce)` proves the
//!    authorization unused (used: the money moved, by the transaction its log names);
//! 4. the authorization nonce is single-use on chain, so even two transactions racing for it
//!    move the money once (the second reverts).
//!
//! Account nonces come from one in-process cursor per chain (`evm_tx::NonceCursor`) held from
//! allocation to broadcast, so concurrent settlements get distinct consecutive nonces; a failed
//! broadcast re-reads `eth_getTransactionCount(…, "pending")`, so it leaves no gap. Gas comes
//! from `eth_estimateGas` (+20 %; a revert there is decoded and nothing is sent), fees are
//! EIP-1559 (`2 × baseFee + tip`). The receipt is awaited up to `x402.settle_timeout_ms`; past it
//! the outcome is `SettlementUnknown` with the hash, which `reconcile` and the start-up recovery
//! resolve from the chain.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::chain::{ChainReader, quantity};
use super::evm_tx::{self, NonceCursor, SignedTx, TxParams};
use super::header::{self, DecodedPayment, HeaderKind};
use super::sign::Signer;
use super::types::{
    FacilitatorRequest, SettleResponse, SupportedKind, SupportedResponse, VerifyResponse,
};
use super::{PaymentError, verify};
use crate::config::{Network, X402Config};
use crate::crypto::{eip712_domain_separator, to_checksum};
use crate::storage::Store;
use crate::storage::sent_txs::SentTx;
use crate::wallet::Wallet;

/// How often a receipt is asked for.
const RECEIPT_POLL: Duration = Duration::from_millis(150);

/// The gateway as its own facilitator.
pub struct OwnFacilitator {
    cfg: Arc<X402Config>,
    store: Store,
    chain: ChainReader,
    signer: Signer,
    /// The settlement account's next nonce per chain id; locked from allocation to broadcast.
    cursors: tokio::sync::Mutex<HashMap<u64, NonceCursor>>,
    /// Networks whose token domain was checked against the configuration.
    domains_checked: Mutex<HashSet<u64>>,
    /// Authorizations being settled right now (one settlement at a time for each: a second
    /// would only send a transaction doomed to revert).
    in_flight: Arc<Mutex<HashSet<String>>>,
    receipt_timeout: Duration,
}

impl std::fmt::Debug for OwnFacilitator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnFacilitator")
            .field("account", &self.signer.address())
            .finish_non_exhaustive()
    }
}

/// A payment as our facilitator reads it.
struct Parsed {
    decoded: DecodedPayment,
    net: Network,
    /// The amount the requirements ask for.
    required: u64,
    /// The replay key, hex: the id of the authorization's transaction records.
    id: String,
}

/// Why verification refused, as the x402 `invalidReason`.
fn invalid(reason: &str, message: String, payer: Option<&Wallet>) -> VerifyResponse {
    VerifyResponse {
        is_valid: false,
        invalid_reason: Some(reason.into()),
        invalid_message: Some(message),
        payer: payer.map(to_checksum),
    }
}

/// An `Error(string)`-style revert message out of a JSON-RPC error (`data` is the return data).
fn rpc_revert(e: &str) -> String {
    // ChainReader errors read `method: {json error}`; the data, when there is some, is hex.
    let data = e
        .split("\"data\":\"0x")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|h| hex::decode(h).ok());
    match data {
        Some(d) => evm_tx::decode_revert(&d),
        None => e.to_string(),
    }
}

/// The node answered with a JSON-RPC error: it received the transaction and refused it.
fn node_refused(e: &str) -> bool {
    e.split_once(": ")
        .is_some_and(|(_, rest)| rest.starts_with('{'))
}

/// No connection was made: the node never saw the request.
fn never_connected(e: &str) -> bool {
    e.contains("(Connect)")
}

fn hex0x(b: &[u8]) -> String {
    format!("0x{}", hex::encode(b))
}

fn u128_of(v: &Value, what: &str) -> Result<u128, String> {
    v.as_str()
        .and_then(|s| s.strip_prefix("0x"))
        .and_then(|s| u128::from_str_radix(s, 16).ok())
        .ok_or_else(|| format!("{what}: not a quantity: {v}"))
}

impl OwnFacilitator {
    pub fn new(
        cfg: Arc<X402Config>,
        store: Store,
        chain: ChainReader,
        signer: Signer,
        receipt_timeout: Duration,
    ) -> Self {
        Self {
            cfg,
            store,
            chain,
            signer,
            cursors: tokio::sync::Mutex::new(HashMap::new()),
            domains_checked: Mutex::new(HashSet::new()),
            in_flight: Arc::default(),
            receipt_timeout,
        }
    }

    /// The settlement account.
    pub fn account(&self) -> Wallet {
        self.signer.address()
    }

    /// Every configured network (all have an `rpc_url` in this mode).
    pub fn supported(&self) -> SupportedResponse {
        let kinds = self
            .cfg
            .networks
            .iter()
            .flat_map(|n| {
                [(1u8, n.name.to_string()), (2u8, n.caip2.to_string())].map(|(v, network)| {
                    SupportedKind {
                        x402_version: v,
                        scheme: "exact".into(),
                        network,
                        extra: None,
                    }
                })
            })
            .collect();
        SupportedResponse {
            kinds,
            extensions: None,
            signers: Some(json!({ "eip155:*": [to_checksum(&self.account())] })),
        }
    }

    /// The settlement account's gas balance (wei) on `net`.
    pub async fn gas_balance(&self, net: &Network) -> Result<u128, String> {
        let v = self
            .rpc(
                net,
                "eth_getBalance",
                json!([hex0x(self.account().as_bytes()), "latest"]),
            )
            .await?;
        u128_of(&v, "eth_getBalance")
    }

    async fn rpc(&self, net: &Network, method: &str, params: Value) -> Result<Value, String> {
        let url = net
            .rpc_url
            .as_deref()
            .ok_or_else(|| format!("{} has no rpc_url", net.name))?;
        self.chain.rpc(url, method, params).await
    }

    fn parse(&self, req: &FacilitatorRequest) -> Result<Parsed, PaymentError> {
        let kind = if req.x402_version == 1 {
            HeaderKind::XPayment
        } else {
            HeaderKind::PaymentSignature
        };
        let json = serde_json::to_vec(&req.payment_payload)
            .map_err(|e| PaymentError::Internal(e.to_string()))?;
        let decoded = header::decode_json(kind, &json)?;
        let required = ["amount", "maxAmountRequired"]
            .iter()
            .find_map(|k| req.payment_requirements.get(*k))
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| {
                PaymentError::Malformed("paymentRequirements without an amount".into())
            })?;
        // The network and the pure checks at "now" only pick the network here; the time window
        // is judged against the chain's clock by the callers.
        let wanted = decoded.payload.network().to_string();
        let net = self
            .cfg
            .networks
            .iter()
            .find(|n| *n.name == *wanted || *n.caip2 == *wanted)
            .cloned()
            .ok_or_else(|| PaymentError::Unsatisfied {
                reason: super::Reason::InvalidNetwork,
                detail: format!("network {wanted:?} is not offered"),
            })?;
        let id = hex::encode(verify::replay_key(
            &net,
            &decoded.authorization.from,
            &decoded.authorization.nonce,
        ));
        Ok(Parsed {
            decoded,
            net,
            required,
            id,
        })
    }

    /// The chain's latest block: (timestamp, base fee).
    async fn latest(&self, net: &Network) -> Result<(u64, u128), String> {
        let block = self
            .rpc(net, "eth_getBlockByNumber", json!(["latest", false]))
            .await?;
        let time = quantity(&block["timestamp"], "latest block timestamp")?;
        let base = u128_of(&block["baseFeePerGas"], "baseFeePerGas").unwrap_or(0);
        Ok((time, base))
    }

    async fn call_word(&self, net: &Network, data: Vec<u8>) -> Result<[u8; 32], String> {
        let v = self
            .rpc(
                net,
                "eth_call",
                json!([{"to": hex0x(net.asset.as_bytes()), "data": hex0x(&data)}, "latest"]),
            )
            .await?;
        v.as_str()
            .and_then(|s| s.strip_prefix("0x"))
            .and_then(|s| hex::decode(s).ok())
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            .ok_or_else(|| format!("eth_call: unexpected answer {v}"))
    }

    /// The token's EIP-712 domain is the configured one (once per network).
    async fn check_domain(&self, net: &Network) -> Result<(), PaymentError> {
        if self
            .domains_checked
            .lock()
            .map(|s| s.contains(&net.chain_id))
            .unwrap_or(false)
        {
            return Ok(());
        }
        let on_chain = self
            .call_word(net, evm_tx::selector("DOMAIN_SEPARATOR()").to_vec())
            .await
            .map_err(|e| PaymentError::FacilitatorUnreachable(format!("{}: {e}", net.name)))?;
        let ours = eip712_domain_separator(
            &net.eip712_name,
            &net.eip712_version,
            net.chain_id,
            &net.asset,
        );
        if on_chain != ours {
            return Err(PaymentError::Facilitator(format!(
                "the token at {} on {} has another EIP-712 domain than x402.networks.{} \
                 configures (eip712_name {:?}, eip712_version {:?}, chain_id {})",
                net.asset, net.name, net.name, net.eip712_name, net.eip712_version, net.chain_id
            )));
        }
        if let Ok(mut s) = self.domains_checked.lock() {
            s.insert(net.chain_id);
        }
        Ok(())
    }

    /// Verifies against chain state; see the module docs. `Err` is a fault of ours or of the
    /// node (the payment was not judged), `Ok(is_valid: false)` a refusal.
    pub async fn verify(&self, req: &FacilitatorRequest) -> Result<VerifyResponse, PaymentError> {
        let p = match self.parse(req) {
            Ok(p) => p,
            Err(e) => {
                let reason = e.invalid_reason().unwrap_or("invalid_payload");
                return Ok(invalid(reason, e.to_string(), None));
            }
        };
        let from = p.decoded.authorization.from;
        let unreachable =
            |e: String| PaymentError::FacilitatorUnreachable(format!("{}: {e}", p.net.name));
        self.check_domain(&p.net).await?;
        // The four reads are independent: one round trip to the node instead of four. They are
        // judged in the order below, so the first failing check still decides the answer.
        let mut balance_of = evm_tx::selector("balanceOf(address)").to_vec();
        balance_of.extend_from_slice(&evm_tx::word_address(&from));
        let mut auth_state = evm_tx::selector("authorizationState(address,bytes32)").to_vec();
        auth_state.extend_from_slice(&evm_tx::word_address(&from));
        auth_state.extend_from_slice(&p.decoded.authorization.nonce);
        let (latest, balance, state, gas) = tokio::join!(
            self.latest(&p.net),
            self.call_word(&p.net, balance_of),
            self.call_word(&p.net, auth_state),
            self.gas_balance(&p.net),
        );
        let (chain_time, _) = latest.map_err(unreachable)?;
        if let Err(e) = verify::check(&self.cfg, &p.decoded, p.required, chain_time) {
            let reason = e.invalid_reason().unwrap_or("invalid_payload");
            return Ok(invalid(reason, e.to_string(), Some(&from)));
        }
        let value = p.decoded.authorization.value.to_u64().unwrap_or(u64::MAX);
        let balance = balance.map_err(unreachable)?;
        let enough = balance[..24].iter().any(|b| *b != 0)
            || u64::from_be_bytes(balance[24..].try_into().unwrap_or([0; 8])) >= value;
        if !enough {
            return Ok(invalid(
                "invalid_exact_evm_insufficient_balance",
                format!("{from} holds less than {value} of the token"),
                Some(&from),
            ));
        }
        let state = state.map_err(unreachable)?;
        if state.iter().any(|b| *b != 0) {
            return Ok(invalid(
                "invalid_exact_evm_nonce_already_used",
                "the authorization is used or canceled on chain".into(),
                Some(&from),
            ));
        }
        if gas.map_err(unreachable)? == 0 {
            return Err(no_gas(&self.account(), &p.net, "it holds none"));
        }
        Ok(VerifyResponse {
            is_valid: true,
            invalid_reason: None,
            invalid_message: None,
            payer: Some(to_checksum(&from)),
        })
    }

    /// Settles; see the module docs.
    pub async fn settle(&self, req: &FacilitatorRequest) -> Result<SettleResponse, PaymentError> {
        let p = self.parse(req).map_err(|e| refused(&e))?;
        let Some(_guard) = InFlight::enter(&self.in_flight, &p.id) else {
            return Err(PaymentError::SettlementUnknown {
                detail: "this authorization is being settled by another task".into(),
                transaction: None,
            });
        };
        let net = &p.net;
        let from = p.decoded.authorization.from;
        let paid = |transaction: String| SettleResponse {
            success: true,
            error_reason: None,
            error_message: None,
            payer: Some(to_checksum(&from)),
            transaction,
            network: p.decoded.payload.network().to_string(),
            amount: Some(
                p.decoded
                    .authorization
                    .value
                    .to_u64()
                    .unwrap_or(0)
                    .to_string(),
            ),
        };
        // 1. What was already sent for this authorization decides first.
        if let Some(tx) = self.resume_recorded(&p).await? {
            self.forget(&p.id);
            return Ok(paid(tx));
        }
        // 2. A new transaction only for an authorization the chain proves unused.
        let unreachable =
            |e: String| PaymentError::FacilitatorUnreachable(format!("{}: {e}", net.name));
        match self
            .chain
            .authorization(net, &from, &p.decoded.authorization.nonce)
            .await
            .map_err(unreachable)?
        {
            super::chain::AuthorizationState::Unused { chain_time } => {
                if let Err(e) = verify::check(&self.cfg, &p.decoded, p.required, chain_time) {
                    return Err(refused(&e));
                }
            }
            super::chain::AuthorizationState::Used { transaction } => {
                self.forget(&p.id);
                return Ok(paid(transaction));
            }
            super::chain::AuthorizationState::Canceled { transaction } => {
                return Err(PaymentError::NotSettled {
                    reason: "transaction_failed",
                    detail: format!("the payer canceled the authorization ({transaction})"),
                });
            }
            super::chain::AuthorizationState::Unlocated => {
                return Err(PaymentError::SettlementUnknown {
                    detail: "the authorization is spent on chain; its transaction was not found"
                        .into(),
                    transaction: None,
                });
            }
        }
        let input = evm_tx::transfer_calldata(&p.decoded.authorization, &p.decoded.signature);
        let account = hex0x(self.account().as_bytes());
        let token = hex0x(net.asset.as_bytes());
        let call = json!({"from": account, "to": token, "data": hex0x(&input)});
        let gas = match self.rpc(net, "eth_estimateGas", json!([call])).await {
            Ok(v) => quantity(&v, "eth_estimateGas").map_err(unreachable)?,
            Err(e) if e.contains("revert") || e.contains("\"data\"") => {
                // The transfer would fail now: nothing is sent.
                let why = rpc_revert(&e);
                let reason = if why.contains("exceeds balance") {
                    "invalid_exact_evm_insufficient_balance"
                } else {
                    "invalid_exact_evm_transaction_simulation_failed"
                };
                return Err(PaymentError::SettlementRefused {
                    reason: reason.into(),
                    message: Some(why),
                });
            }
            Err(e) => return Err(unreachable(e)),
        };
        let gas_limit = gas + gas / 5;
        let (_, base_fee) = self.latest(net).await.map_err(unreachable)?;
        let tip = match self.rpc(net, "eth_maxPriorityFeePerGas", json!([])).await {
            Ok(v) => u128_of(&v, "eth_maxPriorityFeePerGas").unwrap_or(1_000_000_000),
            Err(_) => 1_000_000_000,
        };
        let max_fee = base_fee.saturating_mul(2).saturating_add(tip);
        let need = max_fee.saturating_mul(u128::from(gas_limit));
        let have = self.gas_balance(net).await.map_err(unreachable)?;
        if have < need {
            return Err(no_gas(
                &self.account(),
                net,
                &format!("it holds {have} wei, a settlement needs up to {need}"),
            ));
        }
        let signed = self
            .send_new(
                &p,
                TxParams {
                    chain_id: net.chain_id,
                    nonce: 0,
                    gas_limit,
                    max_fee_per_gas: max_fee,
                    max_priority_fee_per_gas: tip.min(max_fee),
                },
                input,
            )
            .await?;
        match self.wait_receipt(net, &signed.hash).await {
            Some(Ok(true)) => {
                self.forget(&p.id);
                Ok(paid(hex0x(&signed.hash)))
            }
            Some(Ok(false)) => Err(self.reverted(net, &signed.hash, &call).await),
            _ => Err(PaymentError::SettlementUnknown {
                detail: format!(
                    "transaction broadcast; no receipt within {:?}",
                    self.receipt_timeout
                ),
                transaction: Some(hex0x(&signed.hash)),
            }),
        }
    }

    /// Allocates the account nonce, signs, records durably, broadcasts — under the cursor lock.
    async fn send_new(
        &self,
        p: &Parsed,
        mut params: TxParams,
        input: Vec<u8>,
    ) -> Result<SignedTx, PaymentError> {
        let net = &p.net;
        let unreachable =
            |e: String| PaymentError::FacilitatorUnreachable(format!("{}: {e}", net.name));
        let account = hex0x(self.account().as_bytes());
        let mut cursors = self.cursors.lock().await;
        let cursor = cursors.entry(net.chain_id).or_default();
        let mut attempt = 0;
        let signed = loop {
            attempt += 1;
            if cursor.needs_sync() {
                let pending = self
                    .rpc(net, "eth_getTransactionCount", json!([account, "pending"]))
                    .await
                    .map_err(unreachable)?;
                cursor.sync(quantity(&pending, "eth_getTransactionCount").map_err(unreachable)?);
            }
            params.nonce = cursor
                .take()
                .ok_or_else(|| PaymentError::Internal("nonce cursor not synced".into()))?;
            let signed = evm_tx::sign_call(&self.signer, &params, &net.asset, input.clone())?;
            let record = SentTx {
                authorization: p.id.clone(),
                network: net.name.to_string(),
                hash: hex0x(&signed.hash),
                raw: hex0x(&signed.raw),
                account_nonce: params.nonce,
                created_ms: crate::storage::now_ms(),
            };
            if let Err(e) = self.store.put_sent_tx_durable(&record).await {
                // Not recorded, not sent: the nonce goes back.
                cursor.failed();
                return Err(e.into());
            }
            let Err(e) = self
                .rpc(net, "eth_sendRawTransaction", json!([record.raw]))
                .await
            else {
                break signed;
            };
            cursor.failed();
            // Did the node take it after all (a lost answer)? Its pending count says.
            let pending = self
                .rpc(net, "eth_getTransactionCount", json!([account, "pending"]))
                .await
                .ok()
                .and_then(|v| quantity(&v, "eth_getTransactionCount").ok());
            let taken = pending.is_some_and(|n| n > params.nonce);
            if taken && self.known(net, &record.hash).await {
                break signed;
            }
            tracing::warn!(network = %net.name, nonce = params.nonce, error = %e,
                "settlement transaction not accepted by the node");
            // Another transaction of the account holds that nonce (sent from elsewhere): this
            // one can never be mined, so a new one with the node's next nonce is safe.
            if !(taken && attempt < 3) {
                if taken || node_refused(&e) || never_connected(&e) {
                    return Err(unreachable(format!("eth_sendRawTransaction: {e}")));
                }
                // A time-out or a lost answer, and the node cannot say now: it may hold the
                // transaction and mine it. Not "nothing settled": the outcome is unknown, and
                // the record lets the lookup find it (or send it again, byte for byte).
                return Err(PaymentError::SettlementUnknown {
                    detail: format!("{}: eth_sendRawTransaction: {e}", net.name),
                    transaction: Some(record.hash.clone()),
                });
            }
        };
        metrics::counter!("vectorway_x402_self_transactions_total").increment(1);
        Ok(signed)
    }

    /// Drops the transaction records of an authorization the chain shows spent (its
    /// `authorizationState` is the proof from now on; a later settle finds it there).
    fn forget(&self, id: &str) {
        if let Err(e) = self.store.forget_sent_txs(id) {
            tracing::warn!(%e, authorization = id, "settlement transaction records not dropped");
        }
    }

    /// Whether the node knows a transaction (pending or mined).
    async fn known(&self, net: &Network, hash: &str) -> bool {
        matches!(
            self.rpc(net, "eth_getTransactionByHash", json!([hash])).await,
            Ok(v) if !v.is_null()
        )
    }

    /// The recorded transactions of an authorization: `Some(hash)` when one of them paid;
    /// `None` when none is alive (a new one may be built, after the chain's proof); a live one is
    /// waited for (`SettlementUnknown` past the time-out).
    async fn resume_recorded(&self, p: &Parsed) -> Result<Option<String>, PaymentError> {
        let net = &p.net;
        let recorded = self.store.sent_txs_for(&p.id)?;
        for tx in &recorded {
            let hash = hex::decode(tx.hash.trim_start_matches("0x"))
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                .ok_or_else(|| PaymentError::Internal(format!("bad recorded hash {}", tx.hash)))?;
            match self.receipt(net, &hash).await {
                Ok(Some(true)) => return Ok(Some(tx.hash.clone())),
                Ok(Some(false)) => continue,
                Ok(None) => {}
                Err(e) => {
                    return Err(PaymentError::SettlementUnknown {
                        detail: format!("the chain could not be read: {e}"),
                        transaction: Some(tx.hash.clone()),
                    });
                }
            }
            if !self.known(net, &tx.hash).await {
                // Lost by the node (or never broadcast: a crash right after the record): the
                // very same bytes again. "nonce too low" means another transaction took its
                // account nonce: it can never be mined. Under the cursor lock, and the cursor
                // re-reads the node afterwards, since this may take the nonce it would give.
                let mut cursors = self.cursors.lock().await;
                let resent = self
                    .rpc(net, "eth_sendRawTransaction", json!([tx.raw]))
                    .await;
                cursors.entry(net.chain_id).or_default().failed();
                drop(cursors);
                match resent {
                    Ok(_) => {
                        tracing::info!(tx = %tx.hash, "recorded settlement transaction resent");
                    }
                    Err(e) if e.to_ascii_lowercase().contains("nonce") => continue,
                    Err(e) => {
                        return Err(PaymentError::SettlementUnknown {
                            detail: format!("a recorded transaction could not be resent: {e}"),
                            transaction: Some(tx.hash.clone()),
                        });
                    }
                }
            }
            match self.wait_receipt(net, &hash).await {
                Some(Ok(true)) => return Ok(Some(tx.hash.clone())),
                // Reverted: the chain check of `settle` decides what comes next.
                Some(Ok(false)) => continue,
                _ => {
                    return Err(PaymentError::SettlementUnknown {
                        detail: "a recorded transaction is still pending".into(),
                        transaction: Some(tx.hash.clone()),
                    });
                }
            }
        }
        Ok(None)
    }

    /// `Some(Ok(status))` once mined, `None` past the time-out (read errors are retried until
    /// the time-out).
    async fn wait_receipt(&self, net: &Network, hash: &[u8; 32]) -> Option<Result<bool, String>> {
        let deadline = Instant::now() + self.receipt_timeout;
        loop {
            if let Ok(Some(status)) = self.receipt(net, hash).await {
                return Some(Ok(status));
            }
            if Instant::now() + RECEIPT_POLL > deadline {
                return None;
            }
            tokio::time::sleep(RECEIPT_POLL).await;
        }
    }

    /// A mined transaction's status; `None` while it is not mined.
    async fn receipt(&self, net: &Network, hash: &[u8; 32]) -> Result<Option<bool>, String> {
        let r = self
            .rpc(net, "eth_getTransactionReceipt", json!([hex0x(hash)]))
            .await?;
        if r.is_null() {
            return Ok(None);
        }
        Ok(Some(quantity(&r["status"], "receipt status")? == 1))
    }

    /// The refusal for a mined, reverted transfer, with the revert reason when a replay of the
    /// call gives one.
    async fn reverted(&self, net: &Network, hash: &[u8; 32], call: &Value) -> PaymentError {
        let why = match self.rpc(net, "eth_call", json!([call, "latest"])).await {
            Err(e) => rpc_revert(&e),
            Ok(_) => "reverted on chain".into(),
        };
        PaymentError::SettlementRefused {
            reason: "transaction_failed".into(),
            message: Some(format!("transaction {} reverted: {why}", hex0x(hash))),
        }
    }
}

/// Marks an authorization as being settled until dropped.
struct InFlight {
    set: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl InFlight {
    /// `None` when the authorization is already being settled.
    fn enter(set: &Arc<Mutex<HashSet<String>>>, id: &str) -> Option<Self> {
        let mut s = set.lock().ok()?;
        if !s.insert(id.to_string()) {
            return None;
        }
        Some(Self {
            set: set.clone(),
            id: id.to_string(),
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut s) = self.set.lock() {
            s.remove(&self.id);
        }
    }
}

/// A local refusal as a settle refusal (nothing was sent).
fn refused(e: &PaymentError) -> PaymentError {
    PaymentError::SettlementRefused {
        reason: e.invalid_reason().unwrap_or("invalid_payload").into(),
        message: Some(e.to_string()),
    }
}

/// The operator error for a settlement account that cannot pay for gas.
fn no_gas(account: &Wallet, net: &Network, detail: &str) -> PaymentError {
    PaymentError::FacilitatorUnreachable(format!(
        "the settlement account {} has no gas on {} ({detail}): the operator must fund it; \
         no payment was taken",
        to_checksum(account),
        net.name
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_settlement_per_authorization_at_a_time() {
        let set = Arc::default();
        let first = InFlight::enter(&set, "aa").unwrap();
        assert!(InFlight::enter(&set, "aa").is_none(), "a second is refused");
        let other = InFlight::enter(&set, "ab");
        assert!(other.is_some(), "another authorization is not held up");
        drop(first);
        assert!(
            InFlight::enter(&set, "aa").is_some(),
            "free again once the first ends"
        );
    }

    #[test]
    fn a_node_error_yields_its_revert_reason() {
        // anvil's eth_estimateGas error for a FiatToken revert, as ChainReader reports it.
        let e = r#"eth_estimateGas: {"code":3,"message":"execution reverted: ERC20: transfer amount exceeds balance","data":"0x08c379a00000000000000000000000000000000000000000000000000000000000000020000000000000000000000000000000000000000000000000000000000000002645524332303a207472616e7366657220616d6f756e7420657863656564732062616c616e63650000000000000000000000000000000000000000000000000000"}"#;
        assert_eq!(rpc_revert(e), "ERC20: transfer amount exceeds balance");
        assert_eq!(rpc_revert("eth_call: timed out"), "eth_call: timed out");
    }

    #[test]
    fn only_a_refusal_or_no_connection_proves_a_broadcast_was_not_taken() {
        // The shapes `ChainReader::rpc` gives its errors.
        let refused = r#"eth_sendRawTransaction: {"code":-32000,"message":"nonce too low"}"#;
        assert!(node_refused(refused) && !never_connected(refused));
        let down = "eth_sendRawTransaction: request failed: client error (Connect)";
        assert!(never_connected(down) && !node_refused(down));
        for maybe in [
            "eth_sendRawTransaction: no answer within 1s",
            "eth_sendRawTransaction: reading the answer failed: connection reset",
            "eth_sendRawTransaction: the node answered 502 Bad Gateway",
        ] {
            assert!(!node_refused(maybe) && !never_connected(maybe), "{maybe}");
        }
    }
}
