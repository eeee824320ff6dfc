//! What every self-description says alike: the base URL, the route groups, the auth texts and
//! security requirements, the request examples, prices in words and the MCP protocol revisions.
//!
//! A leaf: it reads the route table, the config and the price table, and no other `api` module,
//! so the discovery documents, the OpenAPI document and MCP share it without importing each other.

use serde_json::{Value, json};

use super::routes::{Access, RouteId};
use crate::billing::pricing::{ModelPrice, format_usd_micros};
use crate::config::Config;

/// The MCP protocol revisions this server speaks, newest first (the default).
pub const PROTOCOL_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// Where clients reach the gateway: `server.public_base_url`, else `http://<SIWE domain>`.
pub(crate) fn base_url(c: &Config) -> String {
    c.public_base_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", c.auth.siwe_domain))
}

/// The group a route is documented under, and whether agents see it at all.
pub(crate) fn group(id: RouteId) -> Option<&'static str> {
    Some(match id {
        RouteId::Chat | RouteId::Responses | RouteId::Mcp => "Inference",
        RouteId::AgentOnboard
        | RouteId::SiweChallenge
        | RouteId::SiweVerify
        | RouteId::Refresh
        | RouteId::Revoke => "Auth (SIWE + JWT, agent-first)",
        RouteId::Me | RouteId::Usage | RouteId::UsageSummary => "Accounts",
        RouteId::CreditsPurchase | RouteId::CreditsMe | RouteId::Ledger | RouteId::Topup => {
            "Credits & Billing"
        }
        RouteId::ApiKeyCreate | RouteId::ApiKeyList | RouteId::ApiKeyRevoke => "API Key Management",
        RouteId::MemorySearch
        | RouteId::MemoryNamespaces
        | RouteId::MemoryList
        | RouteId::MemoryDelete
        | RouteId::Embeddings => "Memory",
        RouteId::Models => "Models",
        RouteId::AuthKeysCreate
        | RouteId::AuthKeysList
        | RouteId::AuthKeysRevoke
        | RouteId::UsageWallet => "Agent-router compatibility",
        RouteId::Health | RouteId::Healthz | RouteId::Readyz | RouteId::Status => "Operations",
        RouteId::LlmsTxt
        | RouteId::LlmsFull
        | RouteId::DocsMd
        | RouteId::SkillMd
        | RouteId::OpenApi
        | RouteId::DocsHtml
        | RouteId::Assets => "Discovery",
        RouteId::AgentRegister
        | RouteId::AgentBalance
        | RouteId::AgentTransactions
        | RouteId::AgentModels => "LLM-for-Agents compatibility",
        RouteId::Metrics
        | RouteId::AdminGrant
        | RouteId::AdminCreateKey
        | RouteId::AdminBalance
        | RouteId::AdminStats
        | RouteId::AdminTopWallets
        | RouteId::AdminConfig
        | RouteId::Console => return None,
    })
}

pub(crate) const GROUPS: &[&str] = &[
    "Inference",
    "Auth (SIWE + JWT, agent-first)",
    "Accounts",
    "Credits & Billing",
    "API Key Management",
    "Memory",
    "Models",
    "Agent-router compatibility",
    "LLM-for-Agents compatibility",
    "Operations",
    "Discovery",
];

pub(crate) fn auth_text(a: Access) -> &'static str {
    match a {
        Access::Public => "No authentication.",
        Access::Payer => {
            "Dual-auth: an x402 payment (`PAYMENT-SIGNATURE` or `X-PAYMENT`) to pay per call, or `x-api-key` / `Authorization: Bearer vw_…` to debit credits. Never both. With neither, the answer is 402 with the price."
        }
        Access::X402 => {
            "An x402 payment (`PAYMENT-SIGNATURE` or `X-PAYMENT`); without one, the answer is 402 with the price."
        }
        Access::ApiKey => "`x-api-key: vw_…` (or `Authorization: Bearer vw_…`).",
        Access::Jwt => "`Authorization: Bearer <JWT>` from SIWE sign-in.",
        Access::KeyOrJwt => {
            "`x-api-key` or `Authorization: Bearer <JWT>`; the wallet comes from the credential."
        }
        Access::Siwe => "A SIWE `message` and `signature` in the body (or the query for GET).",
        Access::KeyJwtOrSiwe => {
            "`x-api-key`, a JWT, or a SIWE `message` and `signature` in the query."
        }
        Access::Admin => "Operator secret (`X-Admin-Secret`).",
        Access::Mcp => {
            "`initialize` and `tools/list` are open. `tools/call` authenticates as the REST route the tool stands for: `x-api-key` or `Authorization: Bearer vw_…`; `chat` may instead be paid with x402 in `params._meta[\"x402/payment\"]`."
        }
    }
}

pub(crate) fn security(a: Access) -> Value {
    match a {
        Access::Public | Access::Siwe => json!([]),
        Access::Mcp => json!([{}, {"apiKey": []}, {"apiKeyBearer": []}, {"jwt": []}]),
        Access::Payer => {
            json!([{"x402": []}, {"x402v1": []}, {"apiKey": []}, {"apiKeyBearer": []}])
        }
        Access::X402 => json!([{"x402": []}, {"x402v1": []}]),
        Access::ApiKey => json!([{"apiKey": []}, {"apiKeyBearer": []}]),
        Access::Jwt => json!([{"jwt": []}]),
        Access::KeyOrJwt | Access::KeyJwtOrSiwe => {
            json!([{"apiKey": []}, {"apiKeyBearer": []}, {"jwt": []}])
        }
        Access::Admin => json!([{"admin": []}]),
    }
}

pub(crate) fn example(id: RouteId) -> Option<&'static str> {
    Some(match id {
        RouteId::Chat => {
            r#"{"messages":[{"role":"user","content":"Summarize our last run"}],"model":"gemini-2.5-flash","memory_read":true,"memory_write":true,"memory_write_mode":"auto","memory_max_chars":1200,"k":5,"temperature":0.3,"stream":false}"#
        }
        RouteId::Responses => {
            r#"{"model":"gemini-2.5-flash","instructions":"Answer in one line.","input":"Summarize our last run","stream":false}"#
        }
        RouteId::AgentOnboard => {
            r#"{"wallet_address":"0xabc...","credits":5000000,"key_name":"agent-prod"}"#
        }
        RouteId::SiweChallenge => r#"{"wallet_address":"0xabc...","chain_id":1}"#,
        RouteId::SiweVerify => {
            r#"{"wallet_address":"0xabc...","message":"<challenge message>","signature":"0x..."}"#
        }
        RouteId::Refresh | RouteId::Revoke => r#"{"refresh_token":"eyJ..."}"#,
        RouteId::CreditsPurchase => r#"{"wallet_address":"0xabc...","credits":5000000}"#,
        RouteId::Topup => r#"{"amount":5}"#,
        RouteId::AgentRegister => r#"{"name":"my-agent"}"#,
        RouteId::ApiKeyCreate => r#"{"wallet_address":"0xabc...","key_name":"my-agent"}"#,
        RouteId::AuthKeysCreate => {
            r#"{"message":"<siwe message>","signature":"0x...","label":"my-app"}"#
        }
        RouteId::AuthKeysRevoke => r#"{"message":"<siwe message>","signature":"0x..."}"#,
        RouteId::Embeddings => {
            r#"{"model":"gemini-embedding-001","input":["text one","text two"],"encoding_format":"float"}"#
        }
        _ => return None,
    })
}

/// True for the LLM-for-Agents aliases (`/api/v1/*`), which speak that document's error codes.
pub(crate) fn seed_alias(id: RouteId) -> bool {
    matches!(
        id,
        RouteId::AgentRegister
            | RouteId::AgentBalance
            | RouteId::AgentTransactions
            | RouteId::AgentModels
    )
}

/// The `error.code` a route answers for an error whose own code is `code`: ours, except on the
/// LLM-for-Agents aliases, which use that document's name for the same error where it has one
/// (no credentials: `missing_api_key`; not enough credits: `insufficient_balance`). The
/// envelope stays ours (`{"error":{message,type,param,code}}`).
pub(crate) fn route_code(id: RouteId, code: &'static str) -> &'static str {
    if !seed_alias(id) {
        return code;
    }
    match code {
        "missing_credentials" => "missing_api_key",
        "insufficient_credits" => "insufficient_balance",
        other => other,
    }
}

/// What a route's reference says beyond its summary and example, if anything.
pub(crate) fn notes(id: RouteId) -> Option<&'static str> {
    Some(match id {
        RouteId::Chat => {
            "OpenAI Chat Completions over Gemini, unary or streamed (`\"stream\": true`, SSE; `stream_options.include_usage` adds the usage chunk). Messages: `system`/`developer`, `user`, `assistant` (with `tool_calls`), `tool` (with the `tool_call_id` of an earlier call; an unknown id is 400 `invalid_tool`). User content parts: `text`, `image_url` (a base64 `data:` URL of PNG, JPEG, WebP, HEIC or HEIF, or an `https://` URL the gateway fetches itself, SSRF-checked, before anything is charged), `input_audio` (wav, mp3) and `file` (a PDF as `file_data`); refusals are 400s naming the part (`image_url_forbidden`, `image_too_large`, `image_fetch_failed`, `unsupported_media_type`, `invalid_content_part`). Tools: `tools` (type `function`, JSON Schema `parameters`, `strict`), `tool_choice` (`auto`, `none`, `required`, or a named function), `parallel_tool_calls`; calls come back as `message.tool_calls` / `delta.tool_calls` with `finish_reason: \"tool_calls\"`, and a Gemini 3 call carries its thought signature in `tool_calls[].extra_content.google.thought_signature`: send the assistant message back unchanged. Structured outputs: `response_format` `json_object`, or `json_schema` (`name`, `schema`, `strict`); a schema Gemini cannot take is 400 `invalid_schema` naming its path. `n` (1 to 8; Gemini 3 models give one), `logprobs` / `top_logprobs` (0 to 20), `stop` (at most 5), `seed`, `temperature`, `top_p`, penalties, `reasoning_effort`; `user` and `metadata` are accepted and not sent upstream; `service_tier` is ignored with `x-vectorway-warning`; `prediction`, `audio`, non-text `modalities`, `logit_bias` and `web_search_options` are 400 `unsupported_parameter`; any other unknown field is ignored. Vectorway fields: `models` (a fallback list of 2 or 3, priced at the dearest), `memory_read`, `memory_write`, `memory_write_mode`, `memory_max_chars`, `k`, `memory_namespace`. The hold (or x402 quote) covers the worst case: prompt text bytes + 16 per message, tool declarations, calls and results, the response schema, media by Gemini's token rules, recalled memory, and `max_tokens` for each of the `n` choices; the answer is billed at Gemini's reported usage (cached prompt tokens at the model's cache rate, thinking at the output rate) and reports `prompt_tokens_details.cached_tokens` and `completion_tokens_details.reasoning_tokens`."
        }
        RouteId::Responses => {
            "The OpenAI Responses API over the chat pipeline: the same models, prices, holds, x402 quotes, memory fields and fallback lists as chat. Stateless: nothing is stored (a Response says `store: false`), so send the whole conversation in `input`; `previous_response_id`, `conversation`, `prompt`, `background: true` and `item_reference` items are 400 `unsupported_parameter`. `input` is a string or items: `message` (roles user, system, developer, assistant; parts `input_text`, `output_text`, `input_image` with an `image_url`, `input_file` with `file_data`), `function_call`, `function_call_output` and `reasoning` (accepted, dropped). `tools` takes flat `function` tools (other types are 400 `invalid_tool`: no hosted tools), with `tool_choice` and `parallel_tool_calls`; `text.format` (`text`, `json_object`, `json_schema`) becomes `response_format`, `reasoning.effort` `reasoning_effort`, `max_output_tokens` the completion cap. A Gemini 3 `function_call` item carries its thought signature in `extra_content.google.thought_signature`: send the item back unchanged (the OpenAI SDKs do). With `\"stream\": true` the answer is typed events (`event:` and `data.type` alike, `sequence_number` from 0): `response.created`, `response.in_progress`, `response.output_item.added`, `response.content_part.added`, `response.output_text.delta`, `response.output_text.done`, `response.content_part.done`, `response.output_item.done`, `response.function_call_arguments.delta` / `.done`, then `response.completed` or `response.incomplete`, or `error` and `response.failed`; a paid x402 stream then ends with `data: [DONE]` and `event: x402-receipt`. `usage` has `input_tokens`, `output_tokens`, their details and the Vectorway cost and memory fields."
        }
        _ => return None,
    })
}

/// One model's price in words: `id: input $a / output $b per 1M tokens`.
pub(crate) fn price_text(m: &ModelPrice) -> String {
    format!(
        "`{}`: input ${} / output ${} per 1M tokens",
        m.id,
        format_usd_micros(m.input),
        format_usd_micros(m.output)
    )
}
