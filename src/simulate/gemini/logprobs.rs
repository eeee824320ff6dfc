//! The simulator's `logprobsResult`: deterministic log probabilities for a candidate's tokens.
//!
//! Shape (Gemini's `LogprobsResult`, one entry per decoding step): `chosenCandidates[]` of
//! `{token, tokenId, logProbability}`, `topCandidates[]` of `{candidates: [...]}` sorted by
//! log probability, descending, with `logprobs` entries (none when it is 0 or unset), and
//! `logProbabilitySum`. The rules:
//! - the chosen token's log probability is −(h mod 997)/1000 for a hash h of the token, the
//!   candidate index and the step: in (−1, 0], the same for the same answer;
//! - the chosen token is the first top candidate (a greedy pick); the others are words of the
//!   simulator's vocabulary, each 0.75 lower than the one before;
//! - a stream event carries the steps of its own text; the unary answer carries them all.

use serde_json::{Value, json};

use super::WORDS;

fn hash(token: &str, cand: usize, step: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ (cand as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in token.bytes().chain((step as u64).to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn entry(token: &str, id: u64, lp: f64) -> Value {
    json!({"token": token, "tokenId": id % 256_000, "logProbability": lp})
}

/// The `logprobsResult` of `pieces` (the tokens of candidate `cand` from step `first` on), with
/// `k` alternatives per step.
pub(super) fn result(pieces: &[String], cand: usize, first: usize, k: u64) -> Value {
    let mut chosen = Vec::with_capacity(pieces.len());
    let mut top = Vec::with_capacity(pieces.len());
    let mut sum = 0.0;
    for (i, token) in pieces.iter().enumerate() {
        let h = hash(token, cand, first + i);
        let lp = -((h % 997) as f64) / 1000.0;
        sum += lp;
        chosen.push(entry(token, h, lp));
        let mut alternatives = vec![entry(token, h, lp)];
        for j in 1..k {
            let word = WORDS[((h >> 8) as usize + j as usize) % WORDS.len()];
            alternatives.push(entry(word, h >> j, lp - 0.75 * j as f64));
        }
        if k > 0 {
            top.push(json!({ "candidates": alternatives }));
        }
    }
    let mut out = json!({"chosenCandidates": chosen, "logProbabilitySum": sum});
    if k > 0 {
        out["topCandidates"] = Value::Array(top);
    }
    out
}
