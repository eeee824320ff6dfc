//! What one generation request gets: prompt count, thinking, and each candidate's parts as stream segments.
//!
//! Rules (see `agent.rs`, `schema.rs` and `media.rs` for theirs):
//! - Prompt tokens: one per content, the tokenizer's count of each text part, of each
//!   `functionCall` / `functionResponse` part (its compact JSON) and of the `tools` declarations
//!   (Gemini counts declared tools in the prompt); media parts by `media.rs`, reported under their
//!   modality in `promptTokensDetails`.
//! - `generationConfig.candidateCount` n (default 1, at most 64 here) gives n candidates with
//!   `index` 0..n-1; candidate 0 is what a single-candidate request gets, the others use a seed
//!   moved by their index, so their texts (and string arguments) differ. `candidatesTokenCount`
//!   is the visible output of all candidates together (§1.6), thoughts counted once. Gemini 3
//!   models refuse n > 1 with 400 "Multiple candidates is not enabled for this model" (reported
//!   on every 3.x model, googleapis/js-genai#1609).
//! - `responseLogprobs: true` gives every candidate a `logprobsResult` (`logprobs.rs`) over its
//!   text's tokens, with `logprobs` (0 to 20, else 400) alternatives per step; without it there
//!   is none, and `logprobs` alone is refused as Gemini documents it ("only valid if
//!   responseLogprobs").
//! - A candidate answers, in this order: tool calls or a tool-result text (`agent.rs`); with
//!   `responseMimeType: application/json` a JSON value generated from `responseJsonSchema` or
//!   `responseSchema` (`schema.rs`), or `{"answer": …}` without a schema; otherwise
//!   `reply_tokens` words from a seed hashed from the prompt's text.
//! - Output is capped by `maxOutputTokens` minus thinking: words stop there and JSON or tool-result
//!   text is cut there, with `MAX_TOKENS`; function calls are never cut. Everything else ends `STOP`.
//! - Streaming splits words into `chunk_tokens`-word segments and other text into
//!   `chunk_tokens × 4`-byte segments (each counted by the tokenizer, so unary and streamed
//!   counts agree); all `functionCall` parts of a candidate arrive whole in one segment (§1.7).

use http::StatusCode;
use serde_json::{Value, json};

use super::agent::{self, ToolAnswer};
use super::schema::{self, canonical};
use super::{WORDS, count_tokens, error, field, media, parts};
use crate::config::SimulatorKnobs;
use crate::http::Body;
use http::Response;

/// One streamed piece of a candidate: its parts, their output tokens, and the text of each
/// token (what `logprobsResult` describes; empty for function calls).
pub(super) struct Segment {
    pub parts: Vec<Value>,
    pub tokens: u64,
    pub pieces: Vec<String>,
}

pub(super) struct CandPlan {
    pub segments: Vec<Segment>,
    pub finish: &'static str,
}

pub(super) struct Plan {
    pub prompt: u64,
    /// `(modality, tokens)` in the order `promptTokensDetails` lists them.
    pub prompt_details: Vec<(&'static str, u64)>,
    pub thoughts: u64,
    pub cands: Vec<CandPlan>,
    /// `Some(k)`: `responseLogprobs` was asked, with `k` alternatives per step.
    pub logprobs: Option<u64>,
    /// Prompt tokens reported as served from cache (`cachedContentTokenCount`; the
    /// `cached_tokens` fault sets it, at most the prompt).
    pub cached: u64,
}

impl Plan {
    /// Visible output tokens of every candidate.
    pub fn output(&self) -> u64 {
        self.cands
            .iter()
            .flat_map(|c| &c.segments)
            .map(|s| s.tokens)
            .sum()
    }

    pub fn prompt_details_json(&self) -> Value {
        Value::Array(
            self.prompt_details
                .iter()
                .map(|(m, n)| json!({"modality": m, "tokenCount": n}))
                .collect(),
        )
    }
}

fn bad(message: String) -> Box<Response<Body>> {
    Box::new(error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", &message))
}

const MODALITIES: [&str; 5] = ["TEXT", "IMAGE", "AUDIO", "VIDEO", "DOCUMENT"];

pub(super) fn plan(
    model: &str,
    body: &Value,
    knobs: &SimulatorKnobs,
) -> Result<Plan, Box<Response<Body>>> {
    let contents = body
        .get("contents")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            bad("* GenerateContentRequest.contents: contents is not specified".into())
        })?;
    let decls = agent::declarations(body).map_err(bad)?;
    agent::check_turns(contents).map_err(bad)?;
    if agent::signs(model) {
        agent::check_signatures(contents).map_err(bad)?;
    }
    let mut counts = [0u64; 5];
    let mut seed: u64 = 0xcbf2_9ce4_8422_2325;
    let system = field(body, "systemInstruction", "system_instruction");
    for content in contents.iter().chain(system) {
        counts[0] += 1;
        for p in parts(content) {
            if let Some(t) = p.get("text").and_then(Value::as_str) {
                counts[0] += count_tokens(t);
                for b in t.bytes() {
                    seed = (seed ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
                }
            } else if let Some(call) = field(p, "functionCall", "function_call")
                .or_else(|| field(p, "functionResponse", "function_response"))
            {
                counts[0] += count_tokens(&canonical(call));
            } else if let Some((modality, n)) = media::tokens(p) {
                let i = MODALITIES.iter().position(|m| *m == modality).unwrap_or(0);
                counts[i] += n;
            }
        }
    }
    if let Some(tools) = body.get("tools").filter(|t| !t.is_null()) {
        counts[0] += count_tokens(&canonical(tools));
    }
    let prompt_details: Vec<(&'static str, u64)> = MODALITIES
        .iter()
        .zip(counts)
        .enumerate()
        .filter(|(i, (_, n))| *i == 0 || *n > 0)
        .map(|(_, (m, n))| (*m, n))
        .collect();
    let cfg = field(body, "generationConfig", "generation_config");
    let max_out = cfg
        .and_then(|c| field(c, "maxOutputTokens", "max_output_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(8192);
    let budget = cfg
        .and_then(|c| field(c, "thinkingConfig", "thinking_config"))
        .and_then(|t| field(t, "thinkingBudget", "thinking_budget"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let thoughts = match budget {
        b if b < 0 => 16,
        b => (b as u64).min(24),
    }
    .min(max_out);
    let room = max_out - thoughts;
    let n = cfg
        .and_then(|c| field(c, "candidateCount", "candidate_count"))
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .clamp(1, 64);
    if n > 1 && model.starts_with("gemini-3") {
        return Err(bad(
            "Multiple candidates is not enabled for this model".into()
        ));
    }
    let logprobs = match (
        cfg.and_then(|c| field(c, "responseLogprobs", "response_logprobs"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
        cfg.and_then(|c| field(c, "logprobs", "logprobs")),
    ) {
        (_, Some(k)) if k.as_u64().is_none_or(|k| k > 20) => {
            return Err(bad(
                "* GenerateContentRequest.generation_config.logprobs: must be in the range [0, 20]"
                    .into(),
            ));
        }
        (true, k) => Some(k.and_then(Value::as_u64).unwrap_or(0)),
        (false, None) => None,
        (false, Some(_)) => {
            return Err(bad(
                "logprobs is only valid if response_logprobs is true".into()
            ));
        }
    };
    let json_out = cfg
        .and_then(|c| field(c, "responseMimeType", "response_mime_type"))
        .and_then(Value::as_str)
        .is_some_and(|m| m.eq_ignore_ascii_case("application/json"));
    let out_schema = cfg.and_then(|c| {
        field(c, "responseJsonSchema", "response_json_schema")
            .or_else(|| field(c, "responseSchema", "response_schema"))
    });
    let words = agent::prompt_words(&agent::last_user_text(contents), &decls);
    let chunk = knobs.chunk_tokens.max(1) as usize;
    let cands = (0..n)
        .map(|c| {
            let seed = seed.wrapping_add(c.wrapping_mul(0xd6e8_feb8_6659_fd93));
            match agent::answer(body, contents, &decls, agent::signs(model), c) {
                Some(ToolAnswer::Calls(parts)) => {
                    let tokens = parts
                        .iter()
                        .filter_map(|p| p.get("functionCall"))
                        .map(|f| count_tokens(&canonical(f)))
                        .sum();
                    CandPlan {
                        segments: vec![Segment {
                            parts,
                            tokens,
                            pieces: Vec::new(),
                        }],
                        finish: "STOP",
                    }
                }
                Some(ToolAnswer::FromResults(text)) => text_cand(&text, room, chunk),
                None if json_out => {
                    let value = match out_schema {
                        Some(s) => schema::generate(s, s, &words, c),
                        None => {
                            json!({"answer": seeded_words(seed, u64::from(knobs.reply_tokens).min(8)).join(" ")})
                        }
                    };
                    text_cand(&canonical(&value), room, chunk)
                }
                None => words_cand(seed, u64::from(knobs.reply_tokens), room, chunk),
            }
        })
        .collect();
    Ok(Plan {
        prompt: counts.iter().sum(),
        prompt_details,
        thoughts,
        cands,
        logprobs,
        cached: 0,
    })
}

fn seeded_words(seed: u64, n: u64) -> Vec<&'static str> {
    (0..n)
        .map(|i| {
            let h = seed
                .wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                .rotate_left(17);
            WORDS[(h % WORDS.len() as u64) as usize]
        })
        .collect()
}

/// `reply_tokens` words (one token each), cut at `room`.
fn words_cand(seed: u64, reply: u64, room: u64, chunk: usize) -> CandPlan {
    let words = seeded_words(seed, reply.min(room));
    let finish = if (words.len() as u64) < reply {
        "MAX_TOKENS"
    } else {
        "STOP"
    };
    if words.is_empty() {
        return CandPlan {
            segments: vec![Segment {
                parts: Vec::new(),
                tokens: 0,
                pieces: Vec::new(),
            }],
            finish,
        };
    }
    let last = words.len() - 1;
    let segments = words
        .chunks(chunk)
        .enumerate()
        .map(|(i, w)| {
            // One token per word, with the space after it (none after the last word).
            let pieces: Vec<String> = w
                .iter()
                .enumerate()
                .map(|(j, word)| match i * chunk + j == last {
                    true => (*word).to_string(),
                    false => format!("{word} "),
                })
                .collect();
            Segment {
                parts: vec![json!({ "text": pieces.concat() })],
                tokens: w.len() as u64,
                pieces,
            }
        })
        .collect();
    CandPlan { segments, finish }
}

/// A text answer (JSON or tool-result text), cut at `room` tokens, in `chunk × 4`-byte segments.
fn text_cand(text: &str, room: u64, chunk: usize) -> CandPlan {
    let mut text = text;
    let mut finish = "STOP";
    if count_tokens(text) > room {
        text = prefix(text, (room * 4) as usize);
        finish = "MAX_TOKENS";
    }
    let mut segments = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        // `chunk × 4` bytes always hold a whole character (at most 4 bytes).
        let (piece, tail) = rest.split_at(prefix(rest, chunk * 4).len());
        rest = tail;
        segments.push(Segment {
            parts: vec![json!({ "text": piece })],
            tokens: count_tokens(piece),
            pieces: pieces(piece),
        });
    }
    if segments.is_empty() {
        segments.push(Segment {
            parts: Vec::new(),
            tokens: 0,
            pieces: Vec::new(),
        });
    }
    CandPlan { segments, finish }
}

/// The tokens of a text: slices of up to 4 bytes, cut on character boundaries (the tokenizer's
/// one token per 4 bytes; non-ASCII text may give a piece more than it counts).
fn pieces(text: &str) -> Vec<String> {
    let mut out = Vec::with_capacity(text.len().div_ceil(4));
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = prefix(rest, 4).len();
        if cut == 0 {
            // A character wider than 4 bytes cannot exist in UTF-8; guard the loop anyway.
            cut = rest.chars().next().map_or(rest.len(), char::len_utf8);
        }
        let (piece, tail) = rest.split_at(cut);
        out.push(piece.to_string());
        rest = tail;
    }
    out
}

/// The longest prefix of `s` of at most `bytes` bytes ending on a character boundary.
fn prefix(s: &str, bytes: usize) -> &str {
    let mut end = bytes.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
