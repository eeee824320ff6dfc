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
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_config: Option<ToolConfig<'a>>,
}

/// `{"functionDeclarations":[...]}`
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ToolOut<'a> {
    pub function_declarations: Vec<FunctionDeclOut<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct FunctionDeclOut<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    /// JSON Schema (reference §1.2; mutually exclusive with the OpenAPI-subset `parameters`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters_json_schema: Option<JsonSchemaOut<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ToolConfig<'a> {
    pub function_calling_config: FunctionCallingConfig<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct FunctionCallingConfig<'a> {
    pub mode: &'static str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub allowed_function_names: &'a [String],
}

#[derive(Debug, Serialize)]
pub(super) struct Content<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    pub parts: Vec<PartOut<'a>>,
}

/// One part: text, a function call or a function response, with an optional signature.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PartOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_call: Option<FunctionCallOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_response: Option<FunctionResponseOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inline_data: Option<InlineDataOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thought_signature: Option<&'a str>,
}

/// `{"mimeType": …, "data": <base64>}` (reference §1.1).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct InlineDataOut<'a> {
    pub mime_type: &'a str,
    pub data: &'a str,
}

impl<'a> PartOut<'a> {
    pub fn text(text: &'a str) -> Self {
        Self {
            text: Some(text),
            ..Self::default()
        }
    }
}

#[derive(Debug, Serialize)]
pub(super) struct FunctionCallOut<'a> {
    pub name: &'a str,
    pub args: &'a serde_json::Value,
}

#[derive(Debug, Serialize)]
pub(super) struct FunctionResponseOut<'a> {
    pub name: &'a str,
    pub response: &'a serde_json::Value,
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
    /// JSON Schema (mutually exclusive with the OpenAPI-subset `responseSchema`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_json_schema: Option<JsonSchemaOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_logprobs: Option<bool>,
    /// Alternatives per token, 0 to 20; only with `responseLogprobs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u32>,
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
    /// Absent for candidate 0 (proto3 JSON omits zero values).
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub logprobs_result: Option<LogprobsResult>,
}

/// `{"topCandidates":[{"candidates":[…]}],"chosenCandidates":[…]}`, one entry per decoding step.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct LogprobsResult {
    #[serde(default)]
    pub top_candidates: Vec<TopCandidates>,
    #[serde(default)]
    pub chosen_candidates: Vec<LogprobCandidate>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct TopCandidates {
    #[serde(default)]
    pub candidates: Vec<LogprobCandidate>,
}

/// `{"token":…,"tokenId":…,"logProbability":…}`; a 0 probability is omitted on the wire.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct LogprobCandidate {
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub log_probability: f64,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct CandidateContent<'a> {
    #[serde(default, borrow)]
    pub parts: Vec<PartIn<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PartIn<'a> {
    #[serde(default, borrow)]
    pub text: Option<Cow<'a, str>>,
    #[serde(default)]
    pub thought: Option<bool>,
    #[serde(default)]
    pub function_call: Option<FunctionCallIn>,
    #[serde(default, borrow)]
    pub thought_signature: Option<Cow<'a, str>>,
}

/// `{"name":…,"args":{…}}`; `args` may be absent for a function without parameters.
#[derive(Debug, Default, Deserialize)]
pub(super) struct FunctionCallIn {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub args: Option<serde_json::Value>,
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

/// A JSON Schema as Gemini's `parametersJsonSchema` / `responseJsonSchema` get it: the root
/// `$schema` (the dialect URI zod, the Vercel AI SDK and pydantic emit; Gemini's schema messages
/// have no such field and refuse it with "Unknown name \"$schema\"") is left out, everything else
/// is sent as is — `$id`, `$defs`, `$ref` and `$anchor` are keywords Gemini's JSON Schema support
/// lists, and a `$ref` may resolve against the root `$id`. Serialized without copying the schema.
#[derive(Debug, Clone, Copy)]
pub(super) struct JsonSchemaOut<'a>(pub &'a serde_json::Value);

impl Serialize for JsonSchemaOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self.0 {
            serde_json::Value::Object(m) if m.contains_key("$schema") => {
                let mut map = s.serialize_map(Some(m.len() - 1))?;
                for (k, v) in m.iter().filter(|(k, _)| *k != "$schema") {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            v => v.serialize(s),
        }
    }
}
