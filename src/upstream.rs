//! Outbound model calls: provider-neutral call and result types, and the Gemini implementation.
//!
//! The API layer speaks OpenAI to clients and `ChatCall` / `Completion` / `StreamEvent` to this
//! module; Gemini's wire structs never leave `upstream/gemini`.

pub mod client;
pub mod gemini;

use std::time::Duration;

pub use gemini::{Gemini, GeminiStream};

/// Who said a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Model,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub role: Role,
    pub text: String,
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
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
    ContentFilter,
}

impl Finish {
    pub fn as_openai(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::ContentFilter => "content_filter",
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

/// A whole answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    pub finish: Finish,
    pub usage: TokenUsage,
    pub response_id: Option<String>,
}

/// What one upstream stream chunk says.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Delta(String),
    /// Bytes of thought-summary text (never shown): generated output a cut stream may have to
    /// be billed for when no usage was reported.
    Thought(u64),
    Finish(Finish),
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
