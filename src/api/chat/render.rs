//! The unary `chat.completion` object: one choice per candidate (`n`), each with its message,
//! tool calls, `logprobs` and finish reason, plus the Vectorway usage and `output_text` (the
//! first choice's text). The shape is OpenAI's, so the SDKs and the Responses adapter read it.

use http::{Response, StatusCode};
use serde::Serialize;

use super::{MemoryUse, UsageOut, completion_id};
use crate::api::Ctx;
use crate::billing::pricing::ModelPrice;
use crate::http::{Body, json};
use crate::openai::answer::{self, ToolCallOut};
use crate::openai::choices::{self, LogprobsOut};
use crate::storage::now_ms;
use crate::upstream::{Completion, TokenUsage};

#[derive(Serialize)]
struct CompletionOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<ChoiceOut<'a>>,
    usage: UsageOut<'a>,
    output_text: &'a str,
    system_fingerprint: Option<&'static str>,
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    index: u32,
    message: MessageOut<'a>,
    logprobs: Option<LogprobsOut<'a>>,
    finish_reason: &'static str,
    /// Gemini's own reason when `finish_reason` hides it (failed function calling).
    #[serde(skip_serializing_if = "Option::is_none")]
    native_finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct MessageOut<'a> {
    role: &'static str,
    /// `null` when the answer is only function calls, as OpenAI does.
    content: Option<&'a str>,
    refusal: Option<()>,
    annotations: [(); 0],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
}

/// What the answer shows besides the completion itself.
pub struct Shown {
    pub costs: (Option<u64>, Option<String>),
    pub memory: MemoryUse,
    /// The request asked for log probabilities.
    pub logprobs: bool,
}

pub fn unary_response(
    ctx: &Ctx,
    model: &ModelPrice,
    c: &Completion,
    usage: &TokenUsage,
    shown: Shown,
) -> Response<Body> {
    let id = completion_id(c.response_id.as_deref(), &ctx.request_id);
    let choices = c
        .choices()
        .map(|ch| {
            let calls = answer::tool_calls(&choices::calls_base(&id, ch.index), ch.tool_calls);
            ChoiceOut {
                index: ch.index,
                message: MessageOut {
                    role: "assistant",
                    content: (!ch.text.is_empty() || calls.is_empty()).then_some(ch.text),
                    refusal: None,
                    annotations: [],
                    tool_calls: calls,
                },
                logprobs: shown.logprobs.then(|| choices::logprobs_out(ch.logprobs)),
                finish_reason: ch.finish.as_openai(),
                native_finish_reason: ch.finish.native(),
            }
        })
        .collect();
    let out = CompletionOut {
        id: &id,
        object: "chat.completion",
        created: now_ms() / 1000,
        model: &model.id,
        choices,
        usage: UsageOut::new(usage, &model.id, shown.costs, shown.memory),
        output_text: &c.text,
        system_fingerprint: None,
    };
    json(StatusCode::OK, &out)
}
