//! OpenAI chat request parsing and validation (pure, fuzzable), and the call it becomes.
//!
//! `parse_chat` turns body bytes into a validated `ChatRequest` with simd-json; JSON syntax errors
//! are 400 `invalid_json`, shape and range errors 422 `validation_error` naming the field.
//! Unknown fields are ignored (the one rule, see `crate::openai::surface`); the fields the
//! gateway cannot honour are refused there by name.

use serde::Deserialize;
use serde_json::Value;

use super::num::Int;
use crate::billing::pricing::ModelPrice;
use crate::error::RequestError;
use crate::openai::content::{self, Accepts, Piece, RawContent};
use crate::openai::history::{self, CallIn, CallIndex, RawToolCall};
use crate::openai::object;
use crate::openai::surface::{self, RawResponseFormat, RawSurface, Surface};
use crate::openai::tools::{self, RawTool, RawToolChoice, ToolSpec};
use crate::upstream::{ChatCall, GenParams, Part, Role, Thinking, Turn};

/// The model used when a request names none (Vectorway reference).
pub const DEFAULT_MODEL: &str = "gemini-2.5-flash";

#[derive(Debug, Deserialize)]
struct RawChat {
    model: Option<String>,
    models: Option<Vec<String>>,
    #[serde(default, deserialize_with = "object::opt_vec")]
    messages: Option<Vec<RawMessage>>,
    stream: Option<bool>,
    #[serde(default, deserialize_with = "object::opt")]
    stream_options: Option<RawStreamOptions>,
    max_tokens: Option<Int<i64>>,
    max_completion_tokens: Option<Int<i64>>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    stop: Option<StopField>,
    n: Option<Int<i64>>,
    seed: Option<Int<i64>>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    #[serde(default, deserialize_with = "object::opt")]
    response_format: Option<RawResponseFormat>,
    logprobs: Option<bool>,
    top_logprobs: Option<Int<i64>>,
    metadata: Option<Value>,
    user: Option<String>,
    service_tier: Option<String>,
    prediction: Option<Value>,
    audio: Option<Value>,
    modalities: Option<Value>,
    logit_bias: Option<Value>,
    web_search_options: Option<Value>,
    reasoning_effort: Option<String>,
    #[serde(default, deserialize_with = "object::opt_vec")]
    tools: Option<Vec<RawTool>>,
    tool_choice: Option<RawToolChoice>,
    parallel_tool_calls: Option<bool>,
    memory_read: Option<bool>,
    memory_write: Option<bool>,
    memory_write_mode: Option<String>,
    memory_max_chars: Option<Int<i64>>,
    k: Option<Int<i64>>,
    /// A namespace within the wallet's memory (one wallet, many agents).
    memory_namespace: Option<String>,
}

object::named!(RawMessage => "messages[]", RawStreamOptions => "stream_options");

#[derive(Debug, Deserialize)]
struct RawStreamOptions {
    include_usage: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StopField {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct RawMessage {
    role: String,
    content: Option<RawContent>,
    #[serde(default, deserialize_with = "object::opt_vec")]
    tool_calls: Option<Vec<RawToolCall>>,
    tool_call_id: Option<String>,
}

/// A message after validation: system/developer, user, assistant (with its tool calls) or tool
/// (with the name of the function it answers), with its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: MessageRole,
    /// All the text of the message (a user message's text parts, never its media).
    pub text: String,
    /// A user message with media: its text and media pieces in order (`crate::openai::content`);
    /// empty for text-only content.
    pub pieces: Vec<Piece>,
    /// An assistant message's function calls.
    pub calls: Vec<CallIn>,
    /// A tool message: the function it answers (found by `tool_call_id`).
    pub tool_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageRole {
    System,
    User,
    Assistant,
    Tool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryWriteMode {
    Auto,
    Raw,
    Summary,
}

/// The Vectorway memory options of a chat request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryOptions {
    pub read: bool,
    pub write: bool,
    pub mode: MemoryWriteMode,
    pub max_chars: u32,
    pub k: u32,
}

/// A validated chat request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The model, or the fallback list (2–3 ids, tried in order).
    pub models: Vec<String>,
    /// True when the request used `models` (a fallback list).
    pub fallback: bool,
    pub messages: Vec<Message>,
    pub stream: bool,
    pub include_usage: bool,
    pub max_tokens: Option<u32>,
    /// The larger of `max_tokens` and `max_completion_tokens`: both must fit the model.
    pub max_tokens_asked: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    /// `n`, `logprobs`, the `json_schema` format and ignored fields (`crate::openai::surface`).
    pub surface: Surface,
    pub reasoning_effort: Option<&'static str>,
    pub memory: MemoryOptions,
    pub memory_namespace: Option<String>,
    /// Declared functions, `tool_choice` and `parallel_tool_calls` (`crate::openai::tools`).
    pub tools: ToolSpec,
}

fn invalid(param: &'static str, msg: impl Into<String>) -> RequestError {
    RequestError::validation(param, msg)
}

/// Parses and validates a chat request body (simd-json parses in place, so this copies it).
pub fn parse_chat(body: &[u8]) -> Result<ChatRequest, RequestError> {
    parse_chat_mut(&mut body.to_vec())
}

/// Parses and validates a body that `read_body` returned, in place when nothing else shares its
/// buffer: a media-sized body (up to `Config::chat_body_limit`) is not copied a second time.
pub fn parse_chat_owned(body: bytes::Bytes) -> Result<ChatRequest, RequestError> {
    match body.try_into_mut() {
        Ok(mut owned) => parse_chat_mut(&mut owned),
        Err(shared) => parse_chat(&shared),
    }
}

fn parse_chat_mut(buf: &mut [u8]) -> Result<ChatRequest, RequestError> {
    let raw: RawChat = simd_json::serde::from_slice(buf).map_err(|e| {
        // simd-json counts "nested too deep" (past 1024 levels) as a data error; it is a
        // property of the JSON text, not of the chat schema.
        if e.is_data() && *e.error() != simd_json::ErrorType::DepthLimitExceeded {
            let text = e.to_string();
            if let Some(field) = object::param_of(&text, object::NAMES) {
                return invalid(field, format!("{field} must be a JSON object: {text}"));
            }
            invalid(
                "body",
                format!("request body does not match the chat schema: {e}"),
            )
        } else {
            RequestError::InvalidJson(e.to_string())
        }
    })?;
    validate(raw)
}

fn range(
    param: &'static str,
    v: Option<f64>,
    lo: f64,
    hi: f64,
) -> Result<Option<f64>, RequestError> {
    match v {
        Some(x) if !(x.is_finite() && (lo..=hi).contains(&x)) => Err(invalid(
            param,
            format!("{param} must be between {lo} and {hi}"),
        )),
        other => Ok(other),
    }
}

fn validate(raw: RawChat) -> Result<ChatRequest, RequestError> {
    let models = match (raw.model, raw.models) {
        (Some(_), Some(_)) => return Err(invalid("models", "send model or models, not both")),
        (Some(m), None) if m.trim().is_empty() => {
            return Err(invalid("model", "model must not be empty"));
        }
        (Some(m), None) => vec![m],
        (None, None) => vec![DEFAULT_MODEL.to_string()],
        (None, Some(list)) => {
            if !(2..=3).contains(&list.len()) {
                return Err(invalid(
                    "models",
                    "models lists 2 or 3 model ids, tried in order",
                ));
            }
            for (i, m) in list.iter().enumerate() {
                if m.trim().is_empty() || list[..i].contains(m) {
                    return Err(invalid(
                        "models",
                        "model ids in models must be non-empty and distinct",
                    ));
                }
            }
            list
        }
    };
    let raw_messages = raw
        .messages
        .ok_or_else(|| invalid("messages", "messages is required"))?;
    if raw_messages.is_empty() {
        return Err(invalid("messages", "messages must not be empty"));
    }
    if raw_messages.len() > 10_000 {
        return Err(invalid("messages", "at most 10000 messages"));
    }
    let mut messages = Vec::with_capacity(raw_messages.len());
    let mut call_index = CallIndex::default();
    for (i, m) in raw_messages.into_iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => MessageRole::System,
            "user" => MessageRole::User,
            "assistant" => MessageRole::Assistant,
            "tool" => MessageRole::Tool,
            "function" => {
                return Err(invalid(
                    "messages",
                    "the deprecated 'function' role is not supported; send 'tool' messages",
                ));
            }
            other => {
                return Err(invalid(
                    "messages",
                    format!("unknown message role '{other}'"),
                ));
            }
        };
        let accepts = match role {
            MessageRole::User => Accepts::Everything,
            MessageRole::Assistant => Accepts::Answer,
            MessageRole::System | MessageRole::Tool => Accepts::Text,
        };
        let content::Content { text, pieces } = content::parse(i, accepts, m.content)?;
        let calls = match (role, m.tool_calls) {
            (MessageRole::Assistant, Some(raw)) => call_index.assistant(i, raw)?,
            _ => Vec::new(),
        };
        let tool_name = match role {
            MessageRole::Tool => Some(call_index.tool(i, m.tool_call_id.as_deref())?),
            _ => None,
        };
        messages.push(Message {
            role,
            text,
            pieces,
            calls,
            tool_name,
        });
    }
    if !messages.iter().any(|m| m.role == MessageRole::User) {
        return Err(invalid(
            "messages",
            "messages must include at least one user message",
        ));
    }
    let tools = tools::parse_tools(raw.tools, raw.tool_choice, raw.parallel_tool_calls)?;
    let surface = surface::parse(RawSurface {
        n: raw.n.map(|n| n.0),
        logprobs: raw.logprobs,
        top_logprobs: raw.top_logprobs.map(|k| k.0),
        response_format: raw.response_format,
        metadata: raw.metadata,
        user: raw.user,
        service_tier: raw.service_tier,
        prediction: raw.prediction,
        audio: raw.audio,
        modalities: raw.modalities,
        logit_bias: raw.logit_bias,
        web_search_options: raw.web_search_options,
    })?;
    // Both spellings are validated; `max_completion_tokens` is the one used when both are sent.
    let tokens = |param: &'static str, v: Option<Int<i64>>| match v {
        None => Ok(None),
        Some(Int(v)) if (1..=1_000_000).contains(&v) => Ok(u32::try_from(v).ok()),
        Some(_) => Err(invalid(
            param,
            format!("{param} must be between 1 and 1000000"),
        )),
    };
    let completion = tokens("max_completion_tokens", raw.max_completion_tokens)?;
    let legacy = tokens("max_tokens", raw.max_tokens)?;
    let max_tokens = completion.or(legacy);
    let max_tokens_asked = completion.max(legacy);
    let stop = match raw.stop {
        None => Vec::new(),
        Some(StopField::One(s)) => vec![s],
        Some(StopField::Many(v)) => v,
    };
    if stop.len() > 5 || stop.iter().any(String::is_empty) {
        return Err(invalid("stop", "stop takes at most 5 non-empty strings"));
    }
    let reasoning_effort = match raw.reasoning_effort.as_deref() {
        None => None,
        Some("none") => Some("none"),
        Some("minimal") => Some("minimal"),
        Some("low") => Some("low"),
        Some("medium") => Some("medium"),
        Some("high") => Some("high"),
        Some(other) => {
            return Err(invalid(
                "reasoning_effort",
                format!("reasoning_effort '{other}': want none|minimal|low|medium|high"),
            ));
        }
    };
    let mode = match raw.memory_write_mode.as_deref() {
        None | Some("auto") => MemoryWriteMode::Auto,
        Some("raw") => MemoryWriteMode::Raw,
        Some("summary") => MemoryWriteMode::Summary,
        Some(other) => {
            return Err(invalid(
                "memory_write_mode",
                format!("'{other}': want auto|raw|summary"),
            ));
        }
    };
    let max_chars = match raw.memory_max_chars.map(|v| v.0) {
        None => 1200,
        Some(v) if (1..=100_000).contains(&v) => u32::try_from(v).unwrap_or(1200),
        Some(_) => {
            return Err(invalid(
                "memory_max_chars",
                "memory_max_chars must be between 1 and 100000",
            ));
        }
    };
    let k = match raw.k.map(|v| v.0) {
        None => 5,
        Some(v) if (1..=50).contains(&v) => u32::try_from(v).unwrap_or(5),
        Some(_) => return Err(invalid("k", "k must be between 1 and 50")),
    };
    Ok(ChatRequest {
        fallback: models.len() > 1,
        models,
        messages,
        stream: raw.stream.unwrap_or(false),
        include_usage: raw
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        max_tokens,
        max_tokens_asked,
        temperature: range("temperature", raw.temperature, 0.0, 2.0)?,
        top_p: range("top_p", raw.top_p, 0.0, 1.0)?,
        stop,
        seed: raw.seed.map(|s| s.0),
        presence_penalty: range("presence_penalty", raw.presence_penalty, -2.0, 2.0)?,
        frequency_penalty: range("frequency_penalty", raw.frequency_penalty, -2.0, 2.0)?,
        surface,
        reasoning_effort,
        memory_namespace: crate::memory::validate_namespace(raw.memory_namespace.as_deref())
            .map_err(|e| RequestError::validation("memory_namespace", e.to_string()))?
            .map(str::to_string),
        memory: MemoryOptions {
            read: raw.memory_read.unwrap_or(true),
            write: raw.memory_write.unwrap_or(true),
            mode,
            max_chars,
            k,
        },
        tools,
    })
}

impl ChatRequest {
    /// Upper bound of prompt tokens: UTF-8 bytes of all message text, tool calls (name, arguments,
    /// signature), tool declarations and the response schema + 16 per message, per function and
    /// for the schema (DESIGN §10). Media count at the larger of the model families' rules;
    /// `prompt_bound_for` is exact per model.
    pub fn prompt_token_bound(&self) -> u64 {
        self.text_token_bound()
            .saturating_add(self.media_tokens(None))
    }

    /// Upper bound of prompt tokens on `upstream_model`: text as above, media by that model's rule.
    pub fn prompt_bound_for(&self, upstream_model: &str) -> u64 {
        self.text_token_bound()
            .saturating_add(self.media_tokens(Some(upstream_model)))
    }

    /// The media's share of the prompt bound (`crate::media`): for `model`, or for any model.
    fn media_tokens(&self, model: Option<&str>) -> u64 {
        content::media_tokens(self.messages.iter().flat_map(|m| &m.pieces), model)
    }

    fn text_token_bound(&self) -> u64 {
        let messages: u64 = self
            .messages
            .iter()
            .map(|m| {
                m.text.len() as u64
                    + 16
                    + m.calls.iter().map(CallIn::bound_bytes).sum::<u64>()
                    + m.tool_name.as_ref().map_or(0, |n| n.len() as u64)
            })
            .sum();
        messages + self.tools.bound_bytes + self.surface.bound_bytes
    }

    /// The completion cap actually sent upstream (per candidate).
    pub fn completion_cap(&self, default_max_tokens: u32) -> u32 {
        self.max_tokens.unwrap_or(default_max_tokens)
    }

    /// The most completion tokens the call can be billed: the cap for each of the `n` choices.
    pub fn completion_bound(&self, default_max_tokens: u32) -> u64 {
        u64::from(self.completion_cap(default_max_tokens)) * u64::from(self.surface.n.max(1))
    }

    /// Upper bound of the prompt tokens memory recall can add: a block of `k` records of the
    /// largest size, counted as one more message; 0 when the request does not read memory.
    pub fn recall_token_bound(&self) -> u64 {
        if self.memory.read {
            crate::memory::block_bound_bytes(self.memory.k) + 16
        } else {
            0
        }
    }

    /// The cost in credits of the largest answer with `recalled` more prompt tokens (the bound of
    /// the memory block actually injected, or of the largest one recall could inject).
    pub fn cost_bound(&self, model: &ModelPrice, default_max_tokens: u32, recalled: u64) -> u64 {
        model.cost(
            self.prompt_bound_for(&model.upstream)
                .saturating_add(recalled),
            self.completion_bound(default_max_tokens),
        )
    }

    /// The worst-case cost in credits, recall included: what an x402 quote asks. (The API-key
    /// path holds `cost_bound(…, 0)` and grows the hold by the block recall actually returned.)
    pub fn worst_case(&self, model: &ModelPrice, default_max_tokens: u32) -> u64 {
        self.cost_bound(model, default_max_tokens, self.recall_token_bound())
    }

    /// The neutral upstream call for `model`.
    pub fn to_call(&self, model: &ModelPrice, default_max_tokens: u32) -> ChatCall {
        let mut system = String::new();
        let mut turns = Vec::with_capacity(self.messages.len());
        for m in &self.messages {
            match m.role {
                MessageRole::System => {
                    if !system.is_empty() {
                        system.push_str("\n\n");
                    }
                    system.push_str(&m.text);
                }
                MessageRole::User => turns.push(Turn {
                    role: Role::User,
                    parts: content::user_parts(&m.text, &m.pieces),
                }),
                MessageRole::Assistant => turns.push(Turn {
                    role: Role::Model,
                    parts: history::model_parts(&m.text, &m.calls),
                }),
                MessageRole::Tool => {
                    let part = history::result_part(m.tool_name.as_deref().unwrap_or(""), &m.text);
                    // Consecutive tool results answer one step: one user turn.
                    match turns.last_mut() {
                        Some(t)
                            if t.role == Role::User
                                && t.parts.iter().all(|p| matches!(p, Part::Result(_))) =>
                        {
                            t.parts.push(part);
                        }
                        _ => turns.push(Turn {
                            role: Role::User,
                            parts: vec![part],
                        }),
                    }
                }
            }
        }
        ChatCall {
            model: model.upstream.clone(),
            system: (!system.is_empty()).then_some(system),
            turns,
            params: GenParams {
                temperature: self.temperature,
                top_p: self.top_p,
                stop: self.stop.clone(),
                max_output_tokens: self.completion_cap(default_max_tokens),
                seed: self.seed,
                presence_penalty: self.presence_penalty,
                frequency_penalty: self.frequency_penalty,
                json_mode: self.surface.json,
                response_schema: self.surface.schema.clone(),
                candidates: self.surface.n,
                logprobs: self.surface.logprobs,
                thinking: self
                    .reasoning_effort
                    .map(|e| thinking_for(&model.upstream, e)),
            },
            tools: self.tools.tools.clone(),
        }
    }
}

/// `reasoning_effort` → Gemini thinking (reference §6.3): budgets on 2.5, levels on 3.x.
pub fn thinking_for(upstream_model: &str, effort: &'static str) -> Thinking {
    if crate::upstream::gemini3(upstream_model) {
        return Thinking::Level(match effort {
            "none" | "minimal" => "low",
            other => other,
        });
    }
    let budget = match effort {
        "none" => 0,
        "minimal" => 512,
        "low" => 1024,
        "medium" => 8192,
        _ => 24_576,
    };
    let budget = if upstream_model.contains("pro") {
        budget.clamp(128, 32_768)
    } else if upstream_model.contains("lite") && budget != 0 {
        budget.clamp(512, 24_576)
    } else {
        budget.min(24_576)
    };
    Thinking::Budget(budget)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::RequestError as E;

    fn parse(s: &str) -> Result<ChatRequest, RequestError> {
        parse_chat(s.as_bytes())
    }

    #[test]
    fn minimal_and_defaults() {
        let r = parse(r#"{"messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert_eq!(r.models, [DEFAULT_MODEL]);
        assert!(!r.stream && r.memory.read && r.memory.write);
        assert_eq!((r.memory.k, r.memory.max_chars), (5, 1200));
        assert_eq!(r.prompt_token_bound(), 2 + 16);
    }

    #[test]
    fn recall_is_bounded_by_k_records_of_the_largest_size() {
        let r = parse(r#"{"messages":[{"role":"user","content":"hi"}],"k":50}"#).unwrap();
        let record = crate::memory::MAX_TEXT_BYTES as u64;
        let bound = r.recall_token_bound();
        assert!(bound >= 50 * record && bound < 51 * record, "{bound}");
        assert_eq!(
            bound,
            crate::memory::block_bound_bytes(50) + 16,
            "the block counts as one more message"
        );
        let off =
            parse(r#"{"messages":[{"role":"user","content":"hi"}],"memory_read":false}"#).unwrap();
        assert_eq!(
            off.recall_token_bound(),
            0,
            "no memory read, nothing to add"
        );
    }

    #[test]
    fn content_parts_stop_and_effort() {
        let r = parse(
            r#"{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
            "stop":"END","reasoning_effort":"high","max_completion_tokens":7,"max_tokens":9,"stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        assert_eq!(r.messages[1].text, "ab");
        assert_eq!(r.stop, vec!["END"]);
        assert_eq!(r.max_tokens, Some(7), "max_completion_tokens wins");
        assert!(r.stream && r.include_usage);
    }

    #[test]
    fn syntax_versus_schema_errors() {
        assert!(matches!(parse("{not json"), Err(E::InvalidJson(_))));
        assert!(matches!(parse(""), Err(E::InvalidJson(_))));
        assert!(matches!(
            parse(r#"{"messages":"nope"}"#),
            Err(E::Validation { .. })
        ));
        for (body, param) in [
            (r#"{}"#, "messages"),
            (r#"{"messages":[]}"#, "messages"),
            (
                r#"{"messages":[{"role":"wizard","content":"x"}]}"#,
                "messages",
            ),
            (
                r#"{"messages":[{"role":"system","content":"x"}]}"#,
                "messages",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"temperature":3}"#,
                "temperature",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":0}"#,
                "max_tokens",
            ),
            (r#"{"messages":[{"role":"user","content":"x"}],"n":9}"#, "n"),
            (r#"{"messages":[{"role":"user","content":"x"}],"n":0}"#, "n"),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"reasoning_effort":"max"}"#,
                "reasoning_effort",
            ),
            (r#"{"messages":[{"role":"user","content":"x"}],"k":0}"#, "k"),
            // An invalid `max_tokens` is refused even when `max_completion_tokens` wins.
            (
                r#"{"messages":[{"role":"user","content":"x"}],"max_completion_tokens":5,"max_tokens":0}"#,
                "max_tokens",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"max_completion_tokens":-1,"max_tokens":5}"#,
                "max_completion_tokens",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":2.5}"#,
                "body",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"model":""}"#,
                "model",
            ),
        ] {
            match parse(body) {
                Err(E::Validation { param: Some(p), .. }) => assert_eq!(p, param, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn whole_floats_are_integers_and_both_token_caps_count() {
        let r = parse(
            r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":9.0,"max_completion_tokens":7e0,"k":3.0,"n":1.0,"seed":-2.0,"memory_max_chars":10.0}"#,
        )
        .unwrap();
        assert_eq!((r.max_tokens, r.max_tokens_asked), (Some(7), Some(9)));
        assert_eq!((r.memory.k, r.memory.max_chars, r.seed), (3, 10, Some(-2)));
    }

    #[test]
    fn thinking_mapping_clamps_per_family() {
        assert_eq!(
            thinking_for("gemini-2.5-flash", "low"),
            Thinking::Budget(1024)
        );
        assert_eq!(
            thinking_for("gemini-2.5-pro", "none"),
            Thinking::Budget(128)
        );
        assert_eq!(
            thinking_for("gemini-2.5-flash-lite", "minimal"),
            Thinking::Budget(512)
        );
        assert_eq!(
            thinking_for("gemini-3.5-flash", "medium"),
            Thinking::Level("medium")
        );
        assert_eq!(
            thinking_for("gemini-3.1-flash-lite", "none"),
            Thinking::Level("low")
        );
    }
}

#[cfg(test)]
mod object_tests;
#[cfg(test)]
mod tool_tests;

#[cfg(test)]
mod hostile_tests {
    use super::*;

    #[test]
    fn integers_beyond_64_bits_are_json_not_syntax_errors() {
        // Valid JSON: ignored where unknown, a range error (not `invalid_json`) where known.
        let r = parse_chat(
            br#"{"messages":[{"role":"user","content":"x","meta":{"n":-120330217546217521152}}],"extra":99999999999999999999999}"#,
        );
        assert!(r.is_ok(), "{r:?}");
        let r = parse_chat(
            br#"{"messages":[{"role":"user","content":"x"}],"max_tokens":100000000000000000000}"#,
        );
        assert!(matches!(r, Err(RequestError::Validation { .. })), "{r:?}");
        // Parsed as a float, this literal rounds to i64::MIN: it must be refused, not clamped.
        let r = parse_chat(
            br#"{"messages":[{"role":"user","content":"x"}],"seed":-9223372036854775809}"#,
        );
        assert!(matches!(r, Err(RequestError::Validation { .. })), "{r:?}");
    }

    #[test]
    fn deeply_nested_json_is_refused_without_overflowing_the_stack() {
        for depth in [1_000usize, 100_000, 400_000] {
            let mut body =
                String::from(r#"{"messages":[{"role":"user","content":"x"}],"metadata":"#);
            body.push_str(&"[".repeat(depth));
            body.push_str(&"]".repeat(depth));
            body.push('}');
            // Either outcome is fine; what matters is that this returns.
            let _ = parse_chat(body.as_bytes());
        }
    }

    #[test]
    fn nesting_past_the_depth_limit_is_invalid_json() {
        let parse = |s: &str| parse_chat(s.as_bytes());
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        for field in ["metadata", "tools", "stop"] {
            let body = format!(
                r#"{{"messages":[{{"role":"user","content":"hi"}}],"{field}":{}}}"#,
                deep(100_000)
            );
            let r = parse(&body);
            assert!(
                matches!(r, Err(RequestError::InvalidJson(_))),
                "{field}: {r:?}"
            );
        }
        let body = format!(
            r#"{{"messages":[{{"role":"user","content":{}}}]}}"#,
            deep(100_000)
        );
        assert!(matches!(parse(&body), Err(RequestError::InvalidJson(_))));
        // Within the limit, nesting is only a shape question.
        let body = format!(
            r#"{{"messages":[{{"role":"user","content":{}}}]}}"#,
            deep(1_000)
        );
        assert!(matches!(parse(&body), Err(RequestError::Validation { .. })));
        let body = format!(
            r#"{{"messages":[{{"role":"user","content":"hi"}}],"extra_body_field":{}}}"#,
            deep(1_000)
        );
        assert!(
            parse(&body).is_ok(),
            "unknown fields are ignored at any legal depth"
        );
    }
}
