//! Gemini `candidates[]` → the neutral answer, pure: each candidate's visible text, function calls,
//! finish reason and `logprobsResult`, grouped by `candidates[].index` (absent = 0).
//!
//! A unary answer becomes the first candidate plus `Completion::more`; a stream chunk becomes the
//! first candidate's events plus `StreamEvent::Indexed` events for the others. `logprobsResult`
//! pairs `chosenCandidates[i]` with `topCandidates[i]` (one entry per decoding step); in a stream
//! each chunk carries the steps of its own text. Thought parts are never shown; their bytes are
//! counted across candidates (what a stream without usage is billed at).

use super::tools::candidate_calls;
use super::translate::map_finish;
use super::types::{Candidate, GenerateResponse, LogprobsResult};
use crate::upstream::{Choice, Finish, StreamEvent, TokenLogprob, ToolCall};

/// Bytes of every candidate's thought parts.
pub(super) fn thought_bytes(resp: &GenerateResponse<'_>) -> u64 {
    resp.candidates
        .iter()
        .filter_map(|c| c.content.as_ref())
        .flat_map(|content| &content.parts)
        .filter(|p| p.thought == Some(true))
        .filter_map(|p| p.text.as_ref())
        .map(|t| t.len() as u64)
        .sum()
}

/// A candidate's visible text (thought parts excluded).
fn visible_text(c: &Candidate<'_>) -> String {
    let mut out = String::new();
    if let Some(content) = &c.content {
        for part in &content.parts {
            if part.thought != Some(true)
                && let Some(t) = &part.text
            {
                out.push_str(t);
            }
        }
    }
    out
}

fn calls(c: &Candidate<'_>) -> Vec<ToolCall> {
    let mut out = Vec::new();
    if let Some(content) = &c.content {
        candidate_calls(content, &mut out);
    }
    out
}

/// `logprobsResult` → one entry per chosen token, with the alternatives of its step.
fn logprobs(r: &LogprobsResult) -> Vec<TokenLogprob> {
    r.chosen_candidates
        .iter()
        .enumerate()
        .map(|(i, chosen)| TokenLogprob {
            token: chosen.token.clone(),
            logprob: chosen.log_probability,
            top: r
                .top_candidates
                .get(i)
                .map(|t| {
                    t.candidates
                        .iter()
                        .map(|c| (c.token.clone(), c.log_probability))
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

/// A prompt blocked before any candidate (`promptFeedback`, reference §1.4).
fn blocked(resp: &GenerateResponse<'_>) -> bool {
    resp.candidates.is_empty() && resp.prompt_feedback.is_some()
}

/// The candidates of a unary answer, in index order: the first, then the others.
pub(super) fn choices(resp: &GenerateResponse<'_>) -> (Choice, Vec<Choice>) {
    let mut all: Vec<Choice> = resp
        .candidates
        .iter()
        .map(|c| {
            let tool_calls = calls(c);
            Choice {
                index: c.index,
                text: visible_text(c),
                finish: c
                    .finish_reason
                    .as_deref()
                    .map_or(Finish::Stop, map_finish)
                    .with_calls(tool_calls.len()),
                tool_calls,
                logprobs: c.logprobs_result.as_ref().map(logprobs),
            }
        })
        .collect();
    all.sort_by_key(|c| c.index);
    let mut rest = all.into_iter();
    let first = rest.next().unwrap_or(Choice {
        index: 0,
        text: String::new(),
        tool_calls: Vec::new(),
        finish: if blocked(resp) {
            Finish::ContentFilter
        } else {
            Finish::Stop
        },
        logprobs: None,
    });
    (first, rest.collect())
}

/// The events of one stream chunk's candidates (usage excepted), appended to `out`; finishes
/// are returned for the caller to push after the usage.
pub(super) fn chunk_events(
    resp: &GenerateResponse<'_>,
    out: &mut Vec<StreamEvent>,
) -> Vec<StreamEvent> {
    let mut finishes = Vec::new();
    if blocked(resp) {
        finishes.push(StreamEvent::Finish(Finish::ContentFilter));
    }
    for c in &resp.candidates {
        let wrap = |e: StreamEvent| match c.index {
            0 => e,
            i => StreamEvent::Indexed(i, Box::new(e)),
        };
        if let Some(r) = &c.logprobs_result {
            out.push(wrap(StreamEvent::Logprobs(logprobs(r))));
        }
        let text = visible_text(c);
        if !text.is_empty() {
            out.push(wrap(StreamEvent::Delta(text)));
        }
        out.extend(
            calls(c)
                .into_iter()
                .map(|call| wrap(StreamEvent::ToolCall(call))),
        );
        if let Some(f) = c.finish_reason.as_deref() {
            finishes.push(wrap(StreamEvent::Finish(map_finish(f))));
        }
    }
    finishes
}
