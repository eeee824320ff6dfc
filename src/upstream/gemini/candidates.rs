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

#[cfg(test)]
mod tests {
    use crate::upstream::gemini::translate::{decode_chunk, decode_response};
    use crate::upstream::{Finish, StreamEvent, TokenLogprob, TokenUsage};

    const LOGPROBS: &str = r#""logprobsResult":{"topCandidates":[{"candidates":[
        {"token":"Hi","tokenId":5,"logProbability":-0.1},{"token":"Hey","logProbability":-2.5}]}],
        "chosenCandidates":[{"token":"Hi","tokenId":5,"logProbability":-0.1}]}"#;

    #[test]
    fn several_candidates_by_index_with_logprobs() {
        // Out of order, candidate 0 without its (zero) index, one ending in a call.
        let body = format!(
            r#"{{"candidates":[
            {{"content":{{"role":"model","parts":[{{"functionCall":{{"name":"f","args":{{"a":1}}}}}}]}},"finishReason":"STOP","index":2}},
            {{"content":{{"role":"model","parts":[{{"text":"Hi"}}]}},"finishReason":"STOP",{LOGPROBS}}},
            {{"content":{{"role":"model","parts":[{{"text":"Yo"}}]}},"finishReason":"MAX_TOKENS","index":1}}],
            "usageMetadata":{{"promptTokenCount":10,"cachedContentTokenCount":4,"candidatesTokenCount":6,"totalTokenCount":16}}}}"#
        );
        let c = decode_response(body.as_bytes()).unwrap();
        assert_eq!((c.text.as_str(), c.finish), ("Hi", Finish::Stop));
        assert_eq!(
            c.logprobs,
            Some(vec![TokenLogprob {
                token: "Hi".into(),
                logprob: -0.1,
                top: vec![("Hi".into(), -0.1), ("Hey".into(), -2.5)],
            }])
        );
        let rest: Vec<_> = c
            .more
            .iter()
            .map(|m| (m.index, m.text.as_str(), m.finish, m.tool_calls.len()))
            .collect();
        assert_eq!(
            rest,
            [(1, "Yo", Finish::Length, 0), (2, "", Finish::ToolCalls, 1)]
        );
        assert!(c.more[0].logprobs.is_none(), "none sent, none shown");
        assert_eq!(
            c.usage,
            TokenUsage {
                prompt: 10,
                completion: 6,
                reasoning: 0,
                cached: 4
            }
        );
        let indexes: Vec<u32> = c.choices().map(|ch| ch.index).collect();
        assert_eq!(indexes, [0, 1, 2]);
    }

    #[test]
    fn stream_chunks_wrap_the_other_candidates() {
        let chunk = format!(
            r#"{{"candidates":[{{"content":{{"role":"model","parts":[{{"text":"Hi"}}]}},{LOGPROBS}}},
            {{"content":{{"role":"model","parts":[{{"text":"Yo"}}]}},"index":1,"finishReason":"STOP"}}],
            "usageMetadata":{{"promptTokenCount":3,"cachedContentTokenCount":2,"candidatesTokenCount":2}}}}"#
        );
        let mut out = Vec::new();
        decode_chunk(chunk.as_bytes(), &mut out).unwrap();
        let logprobs = vec![TokenLogprob {
            token: "Hi".into(),
            logprob: -0.1,
            top: vec![("Hi".into(), -0.1), ("Hey".into(), -2.5)],
        }];
        assert_eq!(
            out,
            vec![
                StreamEvent::Logprobs(logprobs),
                StreamEvent::Delta("Hi".into()),
                StreamEvent::Indexed(1, Box::new(StreamEvent::Delta("Yo".into()))),
                StreamEvent::Usage(TokenUsage {
                    prompt: 3,
                    completion: 2,
                    reasoning: 0,
                    cached: 2
                }),
                StreamEvent::Indexed(1, Box::new(StreamEvent::Finish(Finish::Stop))),
            ]
        );
        // A zero log probability is omitted on the wire (proto3 JSON): it reads as 0.
        out.clear();
        decode_chunk(
            br#"{"candidates":[{"content":{"parts":[{"text":"a"}]},"logprobsResult":{"chosenCandidates":[{"token":"a"}]}}]}"#,
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out[0],
            StreamEvent::Logprobs(vec![TokenLogprob {
                token: "a".into(),
                logprob: 0.0,
                top: vec![]
            }])
        );
    }

    #[test]
    fn a_blocked_prompt_is_one_filtered_choice() {
        let c = decode_response(br#"{"promptFeedback":{"blockReason":"SAFETY"}}"#).unwrap();
        assert_eq!((c.finish, c.more.len()), (Finish::ContentFilter, 0));
        let mut out = Vec::new();
        decode_chunk(br#"{"promptFeedback":{"blockReason":"SAFETY"}}"#, &mut out).unwrap();
        assert_eq!(out, vec![StreamEvent::Finish(Finish::ContentFilter)]);
    }
}
