//! The OpenAI wire beside `upstream/gemini/` (DESIGN §11): request pieces and answer shapes for
//! Chat Completions that are more than a field copy, with pure, fuzzable translators to and from
//! the provider-neutral types of `crate::upstream`.
//!
//! - `tools`: `tools[]`, `tool_choice` and `parallel_tool_calls` → `upstream::Tools`, with the
//!   JSON Schema check that refuses what Gemini cannot take (400 naming the path).
//! - `history`: assistant `tool_calls` and `tool` messages → `functionCall` / `functionResponse`
//!   parts (ids matched to names, arguments parsed, thought signatures carried back).
//! - `content`: a message's `content` string or parts → text and media pieces (`image_url` data
//!   or https URLs, `input_audio`, `file` PDFs), by what each role accepts.
//! - `answer`: function calls → `message.tool_calls[]` and streamed `delta.tool_calls[]`.
//! - `responses`: the Responses API as an adapter over Chat Completions: requests to chat
//!   requests, chat answers and chunks to Response objects and typed `response.*` events.
//! - `schema`: the JSON Schema check shared by tools and structured outputs, and the conversion
//!   of a `response_format` schema to Gemini's `responseJsonSchema`.
//! - `surface`: `n`, `logprobs`, `response_format`, `metadata`, `service_tier` and the refused
//!   fields; `choices`: several choices and log probabilities in answers and streams.

pub mod answer;
pub mod choices;
pub mod content;
pub mod history;
pub mod object;
pub mod responses;
pub mod schema;
pub mod surface;
pub mod tools;
