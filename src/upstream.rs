//! Outbound model calls: provider-neutral call and result types, and the Gemini implementation.
//!
//! The API layer speaks OpenAI to clients and `ChatCall` / `Completion` / `StreamEvent` to this
//! module; Gemini's wire structs never leave `upstream/gemini`.

pub mod client;
pub mod gemini;

use std::time::Duration;

pub use gemini::{Gemini, GeminiStream};

/// True for Gemini 3.x models: thinking levels, thought signatures, media_resolution counts
/// and a single candidate.
pub fn gemini3(upstream_model: &str) -> bool {
    upstream_model.starts_with("gemini-3")
}

/// Who said a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Model,
}

/// One turn of the conversation: text, media (user turns), tool calls (model turns) and tool
/// results (user turns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub role: Role,
    pub parts: Vec<Part>,
}

impl Turn {
    /// A turn of plain text.
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            parts: vec![Part::Text(text.into())],
        }
    }
}

/// A piece of a turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(String),
    /// A function call the model made (model turns).
    Call(ToolCall),
    /// What a called function returned (user turns).
    Result(ToolResult),
    /// An image, audio clip or document sent inline (user turns).
    Media(Blob),
}

/// Inline media: its MIME type and its bytes as standard base64 (shared, not copied per call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub mime: String,
    pub data: std::sync::Arc<str>,
}

/// A function call: name, arguments (a JSON object) and the opaque thought signature Gemini 3
/// attached to it, which must reach it again on the next turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub name: String,
    pub args: serde_json::Value,
    pub signature: Option<String>,
}

/// A function's result, sent back under the function's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResult {
    pub name: String,
    pub response: serde_json::Value,
}

/// A function the model may call; `parameters` is a JSON Schema already checked by the API layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionDecl {
    pub name: String,
    pub description: Option<String>,
    pub parameters: Option<serde_json::Value>,
}

/// Whether the model may, must or must not call functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolMode {
    Auto,
    None,
    /// Must call one (of `allowed`, when it is not empty).
    Any,
}

/// The functions of a call and how they may be used; empty when the request declared none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tools {
    pub functions: Vec<FunctionDecl>,
    /// `None`: the provider's default (auto).
    pub mode: Option<ToolMode>,
    pub allowed: Vec<String>,
}

/// How hard the model may think.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thinking {
    /// Gemini 2.5: a token budget (0 = off, -1 = dynamic).
    Budget(i32),
    /// Gemini 3.x: a level word.
    Level(&'static str),
}

/// Sampling and length settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenParams {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Vec<String>,
    pub max_output_tokens: u32,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub json_mode: bool,
    /// JSON Schema the answer must satisfy (`responseJsonSchema`; implies `json_mode`).
    pub response_schema: Option<serde_json::Value>,
    /// Candidates asked for (`candidateCount`); 0 and 1 both mean one.
    pub candidates: u32,
    /// `Some(k)`: log probabilities of the chosen tokens with `k` alternatives each.
    pub logprobs: Option<u32>,
    pub thinking: Option<Thinking>,
}

/// One generation request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatCall {
    /// Upstream model id.
    pub model: String,
    pub system: Option<String>,
    pub turns: Vec<Turn>,
    pub params: GenParams,
    pub tools: Tools,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
    ContentFilter,
    /// The answer ends with function calls.
    ToolCalls,
    /// The model failed at function calling (see `ToolFailure`).
    ToolFailure(ToolFailure),
}

/// Gemini's function-calling finish reasons, which OpenAI has no word for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFailure {
    Malformed,
    Unexpected,
    TooMany,
    MissingSignature,
}

impl Finish {
    pub fn as_openai(self) -> &'static str {
        match self {
            Finish::Stop | Finish::ToolFailure(_) => "stop",
            Finish::Length => "length",
            Finish::ContentFilter => "content_filter",
            Finish::ToolCalls => "tool_calls",
        }
    }

    /// The provider's own reason, shown beside `finish_reason` when OpenAI's word hides it.
    pub fn native(self) -> Option<&'static str> {
        match self {
            Finish::ToolFailure(f) => Some(match f {
                ToolFailure::Malformed => "MALFORMED_FUNCTION_CALL",
                ToolFailure::Unexpected => "UNEXPECTED_TOOL_CALL",
                ToolFailure::TooMany => "TOO_MANY_TOOL_CALLS",
                ToolFailure::MissingSignature => "MISSING_THOUGHT_SIGNATURE",
            }),
            Finish::Stop | Finish::Length | Finish::ContentFilter | Finish::ToolCalls => None,
        }
    }

    /// A clean stop after function calls is `ToolCalls` (Gemini ends them with `STOP`).
    pub fn with_calls(self, calls: usize) -> Self {
        match self {
            Finish::Stop if calls > 0 => Finish::ToolCalls,
            other => other,
        }
    }
}

/// Token counts in OpenAI terms (completion includes thinking).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub prompt: u64,
    pub completion: u64,
    pub reasoning: u64,
    pub cached: u64,
}

impl TokenUsage {
    pub fn total(&self) -> u64 {
        self.prompt + self.completion
    }
}

/// One output token's log probability and the most likely alternatives at its step.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f64,
    pub top: Vec<(String, f64)>,
}

/// One candidate of an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub index: u32,
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish: Finish,
    /// Present when the call asked for log probabilities.
    pub logprobs: Option<Vec<TokenLogprob>>,
}

/// A whole answer. `text`, `tool_calls`, `finish` and `logprobs` are the first candidate's (the
/// whole answer of a one-candidate call); `more` holds the others, in index order.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    /// Function calls, in the order the model made them.
    pub tool_calls: Vec<ToolCall>,
    pub finish: Finish,
    pub logprobs: Option<Vec<TokenLogprob>>,
    /// Candidates 1.. of a call that asked for several (`GenParams::candidates`).
    pub more: Vec<Choice>,
    pub usage: TokenUsage,
    pub response_id: Option<String>,
}

impl Completion {
    /// Every candidate, the first one included, in index order.
    pub fn choices(&self) -> impl Iterator<Item = ChoiceRef<'_>> {
        std::iter::once(ChoiceRef {
            index: 0,
            text: &self.text,
            tool_calls: &self.tool_calls,
            finish: self.finish,
            logprobs: self.logprobs.as_deref(),
        })
        .chain(self.more.iter().map(|c| ChoiceRef {
            index: c.index,
            text: &c.text,
            tool_calls: &c.tool_calls,
            finish: c.finish,
            logprobs: c.logprobs.as_deref(),
        }))
    }
}

/// A borrowed view of one candidate (`Completion::choices`).
#[derive(Debug, Clone, Copy)]
pub struct ChoiceRef<'a> {
    pub index: u32,
    pub text: &'a str,
    pub tool_calls: &'a [ToolCall],
    pub finish: Finish,
    pub logprobs: Option<&'a [TokenLogprob]>,
}

/// What one upstream stream chunk says.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Delta(String),
    /// A whole function call (Gemini sends each in one piece).
    ToolCall(ToolCall),
    /// Bytes of thought-summary text (never shown): generated output a cut stream may have to
    /// be billed for when no usage was reported.
    Thought(u64),
    Finish(Finish),
    /// Log probabilities of the tokens of the text that follows (the same upstream chunk).
    Logprobs(Vec<TokenLogprob>),
    /// An event of candidate `index` (> 0) of a call that asked for several; the unwrapped
    /// `Delta`, `ToolCall`, `Logprobs` and `Finish` events are the first candidate's, so a
    /// consumer that ignores this variant sees a one-candidate answer.
    Indexed(u32, Box<StreamEvent>),
    /// Running totals; the last one seen is the answer's usage.
    Usage(TokenUsage),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("the model provider is rate limiting requests: {message}")]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
    #[error("the model provider did not answer in time ({0})")]
    Timeout(&'static str),
    #[error("the model provider rejected the request: {message}")]
    Rejected { message: String },
    #[error("the model provider does not know model '{0}'")]
    ModelNotFound(String),
    #[error("the model provider failed ({status}): {message}")]
    Unavailable { status: u16, message: String },
    #[error("cannot reach the model provider: {0}")]
    Connect(String),
    #[error("the model provider sent something unreadable: {0}")]
    Protocol(String),
    #[error("the gateway's upstream credentials were refused: {0}")]
    Credentials(String),
    #[error("the model provider's stream broke off: {0}")]
    Interrupted(String),
}

impl UpstreamError {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            UpstreamError::RateLimited { .. } => "rate_limited",
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::Rejected { .. } => "rejected",
            UpstreamError::ModelNotFound(_) => "model_not_found",
            UpstreamError::Unavailable { .. } => "unavailable",
            UpstreamError::Connect(_) => "connect",
            UpstreamError::Protocol(_) => "protocol",
            UpstreamError::Credentials(_) => "credentials",
            UpstreamError::Interrupted(_) => "interrupted",
        }
    }
}
