//! The pure parts of settling on our own: `transferWithAuthorization` calldata, EIP-1559
//! transactions signed by the settlement account (RLP and hashing by alloy, ECDSA by k256),
//! revert decoding, and the account-nonce cursor.
//!
//! Nothing here does I/O: `own` sends what this builds.

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, Bytes, Signature, TxKind, U256};

use super::PaymentError;
use super::header::Authorization;
use super::sign::Signer;
use crate::crypto::keccak256;
use crate::wallet::Wallet;

/// `transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)`
/// (EIP-3009, the `v, r, s` form every FiatToken version has).
pub const TRANSFER_WITH_AUTHORIZATION: &str = "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)";

/// The 4-byte selector of a function signature.
pub fn selector(signature: &str) -> [u8; 4] {
    let h = keccak256(signature.as_bytes());
    [h[0], h[1], h[2], h[3]]
}

/// An address as an ABI word.
pub fn word_address(a: &Wallet) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[12..].copy_from_slice(a.as_bytes());
    w
}

/// The calldata of `transferWithAuthorization` for a signed authorization (`r ‖ s ‖ v`, `v` 27/28
/// or 0/1).
pub fn transfer_calldata(a: &Authorization, sig: &[u8; 65]) -> Vec<u8> {
    let v = if sig[64] < 27 { sig[64] + 27 } else { sig[64] };
    let mut v_word = [0u8; 32];
    v_word[31] = v;
    let mut out = Vec::with_capacity(4 + 9 * 32);
    out.extend_from_slice(&selector(TRANSFER_WITH_AUTHORIZATION));
    out.extend_from_slice(&word_address(&a.from));
    out.extend_from_slice(&word_address(&a.to));
    out.extend_from_slice(a.value.as_word());
    out.extend_from_slice(a.valid_after.as_word());
    out.extend_from_slice(a.valid_before.as_word());
    out.extend_from_slice(&a.nonce);
    out.extend_from_slice(&v_word);
    out.extend_from_slice(&sig[..32]);
    out.extend_from_slice(&sig[32..64]);
    out
}

/// What a settlement transaction pays for gas and where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxParams {
    pub chain_id: u64,
    pub nonce: u64,
    pub gas_limit: u64,
    pub max_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
}

/// A signed transaction, ready to broadcast (`eth_sendRawTransaction`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTx {
    /// The EIP-2718 envelope (`0x02 ‖ rlp(…)`).
    pub raw: Vec<u8>,
    pub hash: [u8; 32],
}

/// Builds and signs an EIP-1559 call of `to` with `input` from `signer`.
pub fn sign_call(
    signer: &Signer,
    p: &TxParams,
    to: &Wallet,
    input: Vec<u8>,
) -> Result<SignedTx, PaymentError> {
    let tx = TxEip1559 {
        chain_id: p.chain_id,
        nonce: p.nonce,
        gas_limit: p.gas_limit,
        max_fee_per_gas: p.max_fee_per_gas,
        max_priority_fee_per_gas: p.max_priority_fee_per_gas,
        to: TxKind::Call(Address::from(*to.as_bytes())),
        value: U256::ZERO,
        access_list: Default::default(),
        input: Bytes::from(input),
    };
    let digest: [u8; 32] = tx.signature_hash().0;
    let rsv = signer.sign_digest(&digest)?;
    let sig = Signature::new(
        U256::from_be_slice(&rsv[..32]),
        U256::from_be_slice(&rsv[32..64]),
        rsv[64] == 28,
    );
    let envelope = TxEnvelope::from(tx.into_signed(sig));
    Ok(SignedTx {
        hash: envelope.tx_hash().0,
        raw: envelope.encoded_2718(),
    })
}

/// A human-readable reason from a revert's return data: `Error(string)`, `Panic(uint256)`, or
/// the raw bytes.
pub fn decode_revert(data: &[u8]) -> String {
    const ERROR: [u8; 4] = [0x08, 0xc3, 0x79, 0xa0];
    const PANIC: [u8; 4] = [0x4e, 0x48, 0x7b, 0x71];
    if data.is_empty() {
        return "reverted without a reason".into();
    }
    if data.len() >= 4 + 64 && data[..4] == ERROR {
        let body = &data[4..];
        let len = u64_of(&body[32..64]).and_then(|l| usize::try_from(l).ok());
        if let Some(len) = len
            && let Some(bytes) = body.get(64..64usize.saturating_add(len))
        {
            return String::from_utf8_lossy(bytes).into_owned();
        }
    }
    if data.len() == 4 + 32 && data[..4] == PANIC {
        return match u64_of(&data[4..]) {
            Some(code) => format!("panic 0x{code:02x}"),
            None => "panic".into(),
        };
    }
    format!("reverted with 0x{}", hex::encode(data))
}

/// A 32-byte big-endian word as `u64`, `None` when it does not fit.
fn u64_of(word: &[u8]) -> Option<u64> {
    if word.len() != 32 || word[..24].iter().any(|b| *b != 0) {
        return None;
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&word[24..]);
    Some(u64::from_be_bytes(b))
}

/// The settlement account's next transaction nonce, held in process (one per account and
/// chain). Unknown at start and after any failed send: then it is read again from the node
/// (`eth_getTransactionCount(…, "pending")`), so a send that failed never leaves a gap that
/// stalls the transactions after it.
#[derive(Debug, Default)]
pub struct NonceCursor {
    next: Option<u64>,
}

impl NonceCursor {
    /// Whether the node must be asked (`sync`) before `take`.
    pub fn needs_sync(&self) -> bool {
        self.next.is_none()
    }

    /// Sets the next nonce from the node's pending count.
    pub fn sync(&mut self, pending: u64) {
        self.next = Some(pending);
    }

    /// The nonce for the next transaction; `None` until synced.
    pub fn take(&mut self) -> Option<u64> {
        let n = self.next?;
        self.next = Some(n + 1);
        Some(n)
    }

    /// A send failed: forget the cursor, so the next `take` waits for a `sync`.
    pub fn failed(&mut self) {
        self.next = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payments::sign::DEV_KEY_0;
    use crate::payments::types::Uint256;

    fn uint(v: u64) -> Uint256 {
        let mut w = [0u8; 32];
        w[24..].copy_from_slice(&v.to_be_bytes());
        Uint256(w)
    }

    #[test]
    fn the_selector_is_fiat_tokens() {
        // FiatTokenV2_2's transferWithAuthorization(…, uint8 v, bytes32 r, bytes32 s).
        assert_eq!(
            hex::encode(selector(TRANSFER_WITH_AUTHORIZATION)),
            "e3ee160e"
        );
    }

    #[test]
    fn calldata_is_nine_words_in_abi_order() {
        let from = Wallet::from_slice(&[0x11; 20]).unwrap();
        let to = Wallet::from_slice(&[0x22; 20]).unwrap();
        let a = Authorization {
            from,
            to,
            value: uint(1_000),
            valid_after: uint(5),
            valid_before: uint(9),
            nonce: [0x33; 32],
        };
        let mut sig = [0u8; 65];
        sig[..32].copy_from_slice(&[0xaa; 32]);
        sig[32..64].copy_from_slice(&[0xbb; 32]);
        sig[64] = 1;
        let data = transfer_calldata(&a, &sig);
        assert_eq!(data.len(), 4 + 9 * 32);
        let w = |i: usize| &data[4 + 32 * i..4 + 32 * (i + 1)];
        assert_eq!(&w(0)[12..], from.as_bytes());
        assert_eq!(&w(1)[12..], to.as_bytes());
        assert_eq!(w(2)[30..], [0x03, 0xe8]);
        assert_eq!(w(5), &[0x33; 32]);
        assert_eq!(w(6)[31], 28, "v 0/1 becomes 27/28");
        assert_eq!(w(7), &[0xaa; 32]);
        assert_eq!(w(8), &[0xbb; 32]);
    }

    #[test]
    fn a_signed_transaction_recovers_to_the_settlement_account() {
        use alloy_consensus::transaction::SignerRecoverable;
        use alloy_eips::eip2718::Decodable2718;
        let signer = Signer::from_hex(DEV_KEY_0).unwrap();
        let token = Wallet::from_slice(&[0x44; 20]).unwrap();
        let p = TxParams {
            chain_id: 31337,
            nonce: 7,
            gas_limit: 90_000,
            max_fee_per_gas: 2_000_000_000,
            max_priority_fee_per_gas: 1_000_000_000,
        };
        let tx = sign_call(&signer, &p, &token, vec![1, 2, 3]).unwrap();
        assert_eq!(tx.raw[0], 0x02, "an EIP-1559 envelope");
        assert_eq!(tx.hash, keccak256(&tx.raw), "the hash is keccak(raw)");
        let decoded = TxEnvelope::decode_2718(&mut tx.raw.as_slice()).unwrap();
        assert_eq!(
            decoded.recover_signer().unwrap().0.0,
            *signer.address().as_bytes()
        );
        let TxEnvelope::Eip1559(signed) = decoded else {
            panic!("not 1559")
        };
        assert_eq!(signed.tx().nonce, 7);
        assert_eq!(signed.tx().chain_id, 31337);
        assert_eq!(signed.tx().gas_limit, 90_000);
        assert_eq!(signed.tx().input.as_ref(), &[1, 2, 3]);
        // Same inputs, same bytes: resending a recorded transaction is resending this one.
        assert_eq!(sign_call(&signer, &p, &token, vec![1, 2, 3]).unwrap(), tx);
    }

    #[test]
    fn reverts_decode() {
        // Error("FiatTokenV2: authorization is used or canceled")
        let msg = "FiatTokenV2: authorization is used or canceled";
        let mut data = vec![0x08, 0xc3, 0x79, 0xa0];
        let mut off = [0u8; 32];
        off[31] = 0x20;
        data.extend_from_slice(&off);
        let mut len = [0u8; 32];
        len[31] = msg.len() as u8;
        data.extend_from_slice(&len);
        let mut body = msg.as_bytes().to_vec();
        body.resize(64, 0);
        data.extend_from_slice(&body);
        assert_eq!(decode_revert(&data), msg);
        let mut panic = vec![0x4e, 0x48, 0x7b, 0x71];
        let mut code = [0u8; 32];
        code[31] = 0x11;
        panic.extend_from_slice(&code);
        assert_eq!(decode_revert(&panic), "panic 0x11");
        assert_eq!(decode_revert(&[]), "reverted without a reason");
        assert_eq!(decode_revert(&[1, 2]), "reverted with 0x0102");
        // A length past the data is not read.
        let mut bad = data.clone();
        bad[4 + 63] = 0xff;
        assert!(decode_revert(&bad).starts_with("reverted with 0x08c379a0"));
    }

    #[test]
    fn the_cursor_hands_out_consecutive_nonces_and_resyncs_after_a_failure() {
        let mut c = NonceCursor::default();
        assert!(c.needs_sync());
        assert_eq!(c.take(), None, "nothing before the first sync");
        c.sync(4);
        assert_eq!((c.take(), c.take(), c.take()), (Some(4), Some(5), Some(6)));
        // The send of 6 failed and never reached the node: the node's pending count is 6
        // again, and 6 is handed out again (no gap).
        c.failed();
        assert!(c.needs_sync());
        assert_eq!(c.take(), None);
        c.sync(6);
        assert_eq!(c.take(), Some(6));
    }
}
