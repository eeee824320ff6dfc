//! `GET /v1/models`: the OpenAI list shape, with per-1M-token prices (list and charged).

use http::{Response, StatusCode};
use serde::Serialize;

use super::State;
use crate::billing::pricing::format_usd_micros;
use crate::http::{Body, json};

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelEntry<'a>>,
}

#[derive(Serialize)]
struct ModelEntry<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
    /// The agent-router fields.
    name: &'a str,
    provider: &'static str,
    #[serde(rename = "contextLength")]
    context_length: u64,
    aliases: &'a [String],
    max_output_tokens: u32,
    /// Google's list price, USD per 1M tokens.
    #[serde(rename = "promptPricePer1MTokens")]
    prompt_list: f64,
    #[serde(rename = "completionPricePer1M")]
    completion_list: f64,
    /// What this gateway charges: credits (= atomic USDC) per 1M tokens, markup included.
    pricing: Pricing,
}

#[derive(Serialize)]
struct Pricing {
    input_credits_per_1m: u64,
    output_credits_per_1m: u64,
    input_usd_per_1m: String,
    output_usd_per_1m: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    long_context: Option<LongContext>,
}

#[derive(Serialize)]
struct LongContext {
    above_prompt_tokens: u64,
    input_credits_per_1m: u64,
    output_credits_per_1m: u64,
}

pub fn list(state: &State) -> Response<Body> {
    let data = state
        .config
        .prices
        .all()
        .iter()
        .map(|m| ModelEntry {
            id: &m.id,
            object: "model",
            created: 1_750_000_000,
            owned_by: "google",
            name: &m.id,
            provider: "gemini",
            context_length: m.context_length,
            aliases: &m.aliases,
            max_output_tokens: m.max_output_tokens,
            // Display only: list prices as JSON numbers, the way the agent-router shows them.
            prompt_list: m.list_input as f64 / 1e6,
            completion_list: m.list_output as f64 / 1e6,
            pricing: Pricing {
                input_credits_per_1m: m.input,
                output_credits_per_1m: m.output,
                input_usd_per_1m: format_usd_micros(m.input),
                output_usd_per_1m: format_usd_micros(m.output),
                long_context: m.long.map(|(t, i, o)| LongContext {
                    above_prompt_tokens: t,
                    input_credits_per_1m: i,
                    output_credits_per_1m: o,
                }),
            },
        })
        .collect();
    json(
        StatusCode::OK,
        &ModelList {
            object: "list",
            data,
        },
    )
}
