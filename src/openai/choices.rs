//! Several choices and log probabilities in OpenAI answers (pure).
//!
//! - `choices[i].logprobs` is `{"content":[{token, logprob, bytes, top_logprobs}], "refusal":
//!   null}` when the request asked for log probabilities (Gemini's `chosenCandidates` paired with
//!   `topCandidates`), `null` otherwise. A stream carries each chunk's tokens on the chunk of
//!   its text. `bytes` are the token's UTF-8 bytes; a non-finite log probability (never seen from
//!   Gemini) is sent as OpenAI's "very unlikely" -9999.0, since SDKs parse a number.
//! - Tool-call ids stay distinct across choices: choice 0 keeps `call_<id>_<i>`
//!   (`answer::call_id`), choice k > 0 gets `call_<id>_<k>_<i>`.

use serde::Serialize;

use crate::upstream::TokenLogprob;

/// `choices[i].logprobs` of an answer that asked for them.
#[derive(Debug, Serialize)]
pub struct LogprobsOut<'a> {
    content: Vec<TokenOut<'a>>,
    refusal: Option<()>,
}

#[derive(Debug, Serialize)]
struct TokenOut<'a> {
    token: &'a str,
    logprob: f64,
    bytes: &'a [u8],
    top_logprobs: Vec<TopOut<'a>>,
}

#[derive(Debug, Serialize)]
struct TopOut<'a> {
    token: &'a str,
    logprob: f64,
    bytes: &'a [u8],
}

fn finite(x: f64) -> f64 {
    if x.is_finite() { x } else { -9999.0 }
}

/// The `logprobs` object for `tokens` (an empty list when Gemini sent none).
pub fn logprobs_out(tokens: Option<&[TokenLogprob]>) -> LogprobsOut<'_> {
    LogprobsOut {
        content: tokens
            .unwrap_or_default()
            .iter()
            .map(|t| TokenOut {
                token: &t.token,
                logprob: finite(t.logprob),
                bytes: t.token.as_bytes(),
                top_logprobs: t
                    .top
                    .iter()
                    .map(|(token, logprob)| TopOut {
                        token,
                        logprob: finite(*logprob),
                        bytes: token.as_bytes(),
                    })
                    .collect(),
            })
            .collect(),
        refusal: None,
    }
}

/// The id base of choice `index`'s tool calls (`answer::call_id` appends `_<i>`).
pub fn calls_base(completion_id: &str, index: u32) -> String {
    match index {
        0 => completion_id.to_string(),
        k => format!("{completion_id}_{k}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::answer::call_id;

    #[test]
    fn logprobs_shape() {
        let tokens = vec![TokenLogprob {
            token: "é".into(),
            logprob: -0.25,
            top: vec![("é".into(), -0.25), ("e".into(), f64::NEG_INFINITY)],
        }];
        let v = serde_json::to_value(logprobs_out(Some(&tokens))).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"content":[{"token":"é","logprob":-0.25,"bytes":[195,169],
                "top_logprobs":[{"token":"é","logprob":-0.25,"bytes":[195,169]},
                                {"token":"e","logprob":-9999.0,"bytes":[101]}]}],"refusal":null})
        );
        assert_eq!(
            serde_json::to_value(logprobs_out(None)).unwrap(),
            serde_json::json!({"content":[],"refusal":null})
        );
    }

    #[test]
    fn call_ids_are_distinct_across_choices() {
        let a = call_id(&calls_base("chatcmpl-x", 0), 1);
        let b = call_id(&calls_base("chatcmpl-x", 1), 0);
        let c = call_id(&calls_base("chatcmpl-x", 11), 0);
        assert_eq!((a.as_str(), b.as_str()), ("call_x_1", "call_x_1_0"));
        assert_ne!(b, c);
    }
}
