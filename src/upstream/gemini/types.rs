//! Gemini REST wire structs (v1beta), private to `upstream::gemini`. Every response field is optional.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

// === request ===

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GenerateRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_instruction: Option<Content<'a>>,
    pub contents: Vec<Content<'a>>,
    pub generation_config: GenerationConfig<'a>,
}

#[derive(Debug, Serialize)]
pub(super) struct Content<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    pub parts: Vec<PartOut<'a>>,
}

#[derive(Debug, Serialize)]
pub(super) struct PartOut<'a> {
    pub text: &'a str,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GenerationConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    pub max_output_tokens: u32,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_config: Option<ThinkingConfig>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ThinkingConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_budget: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_level: Option<&'static str>,
}

// === embeddings ===

/// `batchEmbedContents` body: one request per text, each naming the path model again.
#[derive(Debug, Serialize)]
pub(super) struct BatchEmbedRequest<'a> {
    pub requests: Vec<EmbedRequest<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct EmbedRequest<'a> {
    /// The resource name, `models/{model}`.
    pub model: &'a str,
    pub content: Content<'a>,
    pub output_dimensionality: usize,
}

/// `{"embeddings":[{"values":[...]}, ...]}`, in request order.
#[derive(Debug, Default, Deserialize)]
pub(super) struct BatchEmbedResponse {
    #[serde(default)]
    pub embeddings: Vec<EmbeddingValues>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct EmbeddingValues {
    #[serde(default)]
    pub values: Vec<f32>,
}

// === response ===

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GenerateResponse<'a> {
    #[serde(default, borrow)]
    pub candidates: Vec<Candidate<'a>>,
    #[serde(default)]
    pub usage_metadata: Option<UsageMetadata>,
    #[serde(default, borrow)]
    pub response_id: Option<Cow<'a, str>>,
    #[serde(default)]
    pub prompt_feedback: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    pub error: Option<ErrorObject>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Candidate<'a> {
    #[serde(default, borrow)]
    pub content: Option<CandidateContent<'a>>,
    #[serde(default, borrow)]
    pub finish_reason: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct CandidateContent<'a> {
    #[serde(default, borrow)]
    pub parts: Vec<PartIn<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct PartIn<'a> {
    #[serde(default, borrow)]
    pub text: Option<Cow<'a, str>>,
    #[serde(default)]
    pub thought: Option<bool>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct UsageMetadata {
    #[serde(default)]
    pub prompt_token_count: u64,
    #[serde(default)]
    pub candidates_token_count: u64,
    #[serde(default)]
    pub thoughts_token_count: u64,
    #[serde(default)]
    pub tool_use_prompt_token_count: u64,
    #[serde(default)]
    pub cached_content_token_count: u64,
}

/// `{"error":{"code","message","status","details"}}`
#[derive(Debug, Deserialize)]
pub(super) struct ErrorEnvelope {
    pub error: ErrorObject,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct ErrorObject {
    #[serde(default)]
    pub code: u16,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub details: Vec<ErrorDetail>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ErrorDetail {
    #[serde(default, rename = "@type")]
    pub kind: String,
    #[serde(default)]
    pub retry_delay: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}
