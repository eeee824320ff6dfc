//! The component schemas of the OpenAPI document: every JSON answer the handlers build, field by
//! field, with the fields they always send marked required.

use serde_json::{Map, Value, json};

use super::shapes::{all, array, boolean, object, opt, r, string, uint, wallet};

fn int() -> Value {
    json!({"type": "integer"})
}

/// A wallet as `Wallet` serializes it: lower-case hex.
fn hex_wallet() -> Value {
    json!({"type": "string", "pattern": "^0x[0-9a-f]{40}$"})
}

fn page(event: Value) -> Value {
    all(json!({
        "wallet_address": wallet(), "events": array(event), "next_cursor": opt(uint()),
        "has_more": boolean(), "total": uint(),
    }))
}

/// `choices[i].logprobs`: `null` unless the request set `logprobs: true`.
fn logprobs() -> Value {
    let number = json!({"type": "number", "maximum": 0});
    let bytes = array(json!({"type": "integer", "minimum": 0, "maximum": 255}));
    let top = all(json!({"token": string(), "logprob": number, "bytes": bytes}));
    let token = all(
        json!({"token": string(), "logprob": number, "bytes": bytes, "top_logprobs": array(top)}),
    );
    opt(all(
        json!({"content": array(token), "refusal": {"type": "null"}}),
    ))
}

/// A tool call of an answer: `call_…` id, the function's name and its arguments as a JSON string;
/// `extra_content.google.thought_signature` on Gemini 3 (send it back unchanged).
fn tool_call(streamed: bool) -> Value {
    let function =
        json!({"type": "object", "properties": {"name": string(), "arguments": string()}});
    let mut props = json!({"id": string(), "type": {"const": "function"}, "function": function,
                           "extra_content": {"type": "object"}});
    if streamed {
        // The id, type and name come on a call's first delta, arguments after; `index` on each.
        props["index"] = uint();
        return object(&["index"], props);
    }
    object(&["id", "type", "function"], props)
}

fn chat_completion() -> Value {
    let message = object(
        &["role", "content", "refusal", "annotations"],
        json!({
            "role": {"const": "assistant"},
            "content": {"type": ["string", "null"], "description": "`null` when the answer is only tool calls."},
            "refusal": {"type": "null"},
            "annotations": {"type": "array", "maxItems": 0},
            "tool_calls": {"type": "array", "items": tool_call(false), "minItems": 1},
        }),
    );
    let choice = all(json!({
        "index": uint(), "message": message, "logprobs": logprobs(), "finish_reason": string(),
    }));
    all(json!({
        "id": string(), "object": {"const": "chat.completion"}, "created": uint(), "model": string(),
        "choices": {"type": "array", "items": choice, "minItems": 1, "maxItems": 8,
                    "description": "One choice per `n`, by `index`."},
        "usage": r("ChatUsage"), "output_text": string(), "system_fingerprint": {"type": "null"},
    }))
}

/// One server-sent event of a streamed chat: a chunk, the final usage chunk, `[DONE]`, an
/// OpenAI error (a failure mid-stream), or the x402 receipt (`event: x402-receipt`).
fn chat_event() -> Value {
    let mut data = string();
    data["if"] = json!({"const": "[DONE]"});
    data["else"] = json!({"contentMediaType": "application/json",
        "contentSchema": {"anyOf": [r("ChatCompletionChunk"), r("Error")]}});
    object(
        &["data"],
        json!({"event": {"enum": ["message", "x402-receipt"]}, "data": data}),
    )
}

fn chat_chunk() -> Value {
    let delta = json!({"type": "object", "properties": {"role": {"const": "assistant"},
        "content": {"type": ["string", "null"]}, "tool_calls": array(tool_call(true))}});
    let choice = all(json!({
        "index": uint(), "delta": delta, "logprobs": logprobs(), "finish_reason": opt(string()),
    }));
    let mut chunk = object(
        &["object", "choices"],
        json!({
            "id": string(), "object": {"const": "chat.completion.chunk"}, "created": uint(),
            "model": string(), "choices": {"type": "array", "items": choice, "maxItems": 1},
            "usage": opt(r("ChatUsage")),
        }),
    );
    chunk["description"] = json!(
        "A chunk; with `choices: []` the usage chunk or (with `transaction`, `payer`, `amount`, `kept`) the x402 receipt."
    );
    chunk
}

fn chat_usage() -> Value {
    all(json!({
        "prompt_tokens": uint(), "completion_tokens": uint(), "total_tokens": uint(),
        "prompt_tokens_details": all(json!({"cached_tokens": uint()})),
        "completion_tokens_details": all(json!({"reasoning_tokens": uint()})),
        "memories_used": uint(), "memory_read": boolean(), "memory_write": boolean(), "model": string(),
        "summarize_prompt_tokens": uint(), "summarize_completion_tokens": uint(),
        "credit_cost": opt(uint()), "usd_cost": opt(string()),
    }))
}

fn model() -> Value {
    let long = all(json!({
        "above_prompt_tokens": uint(), "input_credits_per_1m": uint(), "output_credits_per_1m": uint(),
    }));
    let mut pricing = all(json!({
        "input_credits_per_1m": uint(), "output_credits_per_1m": uint(),
        "input_usd_per_1m": string(), "output_usd_per_1m": string(),
    }));
    pricing["properties"]["long_context"] = long;
    all(json!({
        "id": string(), "object": {"const": "model"}, "created": uint(), "owned_by": string(),
        "name": string(), "provider": string(), "contextLength": uint(), "aliases": array(string()),
        "max_output_tokens": uint(), "promptPricePer1MTokens": {"type": "number"},
        "completionPricePer1M": {"type": "number"}, "pricing": pricing,
    }))
}

fn x402_challenge() -> Value {
    let mut requirement = all(json!({
        "scheme": string(), "network": string(), "maxAmountRequired": {"type": "string", "pattern": "^[0-9]+$"},
        "resource": string(), "description": string(), "mimeType": string(), "payTo": string(),
        "maxTimeoutSeconds": uint(), "asset": string(),
    }));
    requirement["properties"]["extra"] = json!({"type": "object"});
    let mut challenge = all(json!({
        "x402Version": {"const": 1}, "error": string(), "accepts": array(requirement),
    }));
    challenge["description"] = json!(
        "x402 v1 payment requirements; the v2 requirements are in the base64 `PAYMENT-REQUIRED` header."
    );
    challenge
}

/// Every component schema, by name.
pub fn schemas() -> Map<String, Value> {
    let key_metadata = all(json!({
        "key_id": string(), "key_name": string(), "created_at": uint(), "last_used_at": opt(uint()),
    }));
    let ledger_event = all(json!({
        "ts": string(), "kind": {"enum": ["topup", "debit", "refund", "grant"]}, "credits": int(),
        "usd": string(), "ref": opt(string()), "note": opt(string()),
        "transaction": opt(json!({"type": "string", "pattern": "^0x[0-9a-f]{64}$",
                                  "description": "The on-chain transaction of an x402 payment or refund, when the reference is one."})),
    }));
    let usage_event = all(json!({
        "ts": {"type": "number"}, "ts_iso": string(), "method": string(), "path": string(),
        "status": uint(), "latency_ms": uint(), "credits": uint(), "usd_cost": opt(string()),
        "model": opt(string()), "prompt_tokens": uint(), "completion_tokens": uint(),
        "memory_read": boolean(), "memory_write": boolean(), "memories_used": uint(),
        "key_id": opt(string()), "auth_mode": string(), "request_id": string(),
        "transaction": opt(json!({"type": "string", "pattern": "^0x[0-9a-f]{64}$",
                                  "description": "An x402 call's settlement transaction."})),
    }));
    let router_key = all(json!({
        "id": string(), "label": string(), "created_at": string(), "last_used_at": opt(string()),
        "revoked_at": opt(string()),
    }));
    let key_usage = all(json!({
        "api_key_id": string(), "label": string(), "request_count": uint(),
        "total_prompt_tokens": uint(), "total_completion_tokens": uint(), "total_charged_usdc": uint(),
    }));
    let embedding = all(json!({
        "object": {"const": "embedding"}, "index": uint(),
        "embedding": {"anyOf": [array(json!({"type": "number"})), string()],
                      "description": "Floats, or base64 of little-endian f32 with `encoding_format: base64`."},
    }));
    let balance = |who: Value| {
        all(json!({"wallet_address": who, "credits": uint(), "held": uint(), "available": uint()}))
    };
    let mut admin_balance = balance(hex_wallet());
    if let Some(p) = admin_balance["properties"].as_object_mut()
        && let Some(w) = p.remove("wallet_address")
    {
        p.insert("wallet".into(), w);
    }
    admin_balance["required"] = json!(["wallet", "credits", "held", "available"]);
    let entries = [
        ("Error", error()),
        ("JsonRpcResponse", json_rpc()),
        ("X402Challenge", x402_challenge()),
        ("Live", all(json!({"status": {"const": "ok"}}))),
        (
            "Ready",
            all(
                json!({"status": {"enum": ["ready", "not_ready"]}, "store": string(), "upstream": string()}),
            ),
        ),
        (
            "Status",
            all(json!({
                "status": {"enum": ["ok", "degraded"]}, "version": string(), "uptime_seconds": uint(),
                "store": all(json!({"ok": boolean()})), "upstream": all(json!({"simulated": boolean()})),
                "x402": all(json!({"facilitator": all(json!({
                    "simulated": boolean(), "host": opt(string()),
                    "free_credits_buy_real_calls": boolean(),
                    "allow_simulated_facilitator_with_real_upstream": boolean(),
                })), "settlements": all(json!({
                    "open_intents": uint(), "unresolved_intents": uint(),
                    "blocked_payers": uint(), "effects_running": uint(),
                }))})),
            })),
        ),
        (
            "ModelList",
            all(json!({"object": {"const": "list"}, "data": array(model())})),
        ),
        ("ChatCompletion", chat_completion()),
        ("ChatUsage", chat_usage()),
        ("ChatCompletionChunk", chat_chunk()),
        ("ChatStreamEvent", chat_event()),
        (
            "Challenge",
            all(json!({
                "wallet_address": wallet(), "message": string(), "nonce": string(), "expires_in_seconds": uint(),
            })),
        ),
        (
            "TokenPair",
            all(json!({
                "access_token": string(), "refresh_token": string(), "token_type": {"const": "bearer"},
                "expires_in": uint(),
            })),
        ),
        (
            "SignIn",
            all(json!({
                "wallet_address": wallet(), "credits": uint(), "created": boolean(), "tokens": r("TokenPair"),
            })),
        ),
        (
            "Account",
            all(json!({"wallet_address": wallet(), "credits": uint(), "created": boolean()})),
        ),
        ("Balance", balance(wallet())),
        ("LedgerPage", page(ledger_event)),
        ("UsagePage", page(usage_event)),
        ("KeyMetadata", key_metadata),
        (
            "CreatedKey",
            all(json!({"api_key": string(), "metadata": r("KeyMetadata")})),
        ),
        (
            "RouterKey",
            all(
                json!({"id": string(), "key": string(), "label": string(), "created_at": string()}),
            ),
        ),
        ("RouterKeyList", all(json!({"data": array(router_key)}))),
        (
            "RouterUsage",
            all(json!({
                "wallet": wallet(), "balance_usdc": uint(), "locked_usdc": uint(), "available_usdc": uint(),
                "keys": array(key_usage),
            })),
        ),
        (
            "Grant",
            all(json!({"wallet": hex_wallet(), "granted": uint(), "credits": uint()})),
        ),
        (
            "AdminKey",
            all(json!({
                "api_key": string(), "key_id": string(), "wallet": hex_wallet(), "key_name": string(),
                "created_at": uint(),
            })),
        ),
        ("AdminBalance", admin_balance),
        (
            "Onboarded",
            all(json!({
                "wallet_address": wallet(), "credits": uint(), "created": boolean(), "agent_only": {"const": true},
                "tokens": r("TokenPair"), "api_key": string(), "api_key_metadata": r("KeyMetadata"),
            })),
        ),
        (
            "Topup",
            all(json!({"wallet": wallet(), "balance_usdc": uint(), "credited_usdc": uint()})),
        ),
        ("AgentRegistered", agent_registered()),
        ("AgentBalance", agent_balance()),
        ("TransactionPage", transaction_page()),
        (
            "MemoryNamespaces",
            all(
                json!({"object": {"const": "list"}, "data": array(all(json!({
                    "namespace": {"type": ["string", "null"]}, "records": uint(),
                    "newest_at": {"type": "string", "format": "date-time"},
                })))}),
            ),
        ),
        (
            "MemoryRecords",
            all(
                json!({"object": {"const": "list"}, "data": array(all(json!({
                "id": string(), "namespace": {"type": ["string", "null"]}, "text": string(),
                "created_at": {"type": "string", "format": "date-time"},
            }))), "has_more": boolean(), "next_before": {"type": ["string", "null"]}}),
            ),
        ),
        (
            "MemoryMatches",
            all(json!({"matches": array(all(json!({
                "id": string(), "text": string(), "score": {"type": "number"},
            })))})),
        ),
        (
            "Embeddings",
            all(json!({
                "object": {"const": "list"}, "data": array(embedding), "model": string(),
                "usage": all(json!({"prompt_tokens": uint(), "total_tokens": uint(), "credit_cost": uint()})),
            })),
        ),
    ];
    entries
        .into_iter()
        .chain(super::responses::schemas())
        .chain(super::console::schemas())
        .map(|(name, schema)| (name.to_string(), schema))
        .collect()
}

/// An instant as the LLM-for-Agents document writes it (RFC 3339 UTC, milliseconds).
fn instant() -> Value {
    json!({"type": "string", "format": "date-time"})
}

fn funding() -> Value {
    all(
        json!({"method": {"const": "POST"}, "path": {"const": "/v1/topup"},
               "body": all(json!({"amount": uint(), "agent": string()})), "payment": string()}),
    )
}

/// `POST /api/v1/agents/register`: the document's fields, then ours.
fn agent_registered() -> Value {
    all(json!({
        "uuid": {"type": "string", "format": "uuid"}, "apiKey": string(), "name": string(),
        "createdAt": instant(), "requestId": string(), "depositDeadline": instant(),
        "depositRequiredWithinMinutes": uint(), "notice": string(),
        "account": wallet(), "keyId": string(), "depositDeadlineMs": uint(), "funding": funding(),
    }))
}

/// `GET /api/v1/balance`: USD as decimal strings, credits as integers; `agent` for agent accounts.
fn agent_balance() -> Value {
    let agent = all(json!({
        "uuid": string(), "name": string(), "createdAt": instant(), "permanent": boolean(),
        "depositDeadline": opt(instant()), "funding": funding(),
    }));
    all(json!({
        "object": {"const": "balance"}, "account": wallet(), "currency": {"const": "USDC"},
        "balance": string(), "available": string(), "held": string(),
        "credits": uint(), "availableCredits": uint(), "heldCredits": uint(), "unit": string(),
        "agent": opt(agent),
    }))
}

/// `GET /api/v1/transactions`: one page of the ledger, newest first.
fn transaction_page() -> Value {
    let tx = all(json!({
        "id": string(), "type": {"enum": ["deposit", "charge", "grant", "refund"]},
        "kind": {"enum": ["topup", "debit", "grant", "refund"]}, "amount": int(),
        "amountUsd": string(), "reference": opt(string()), "note": opt(string()),
        "createdAt": instant(),
    }));
    all(json!({
        "object": {"const": "list"}, "account": wallet(), "data": array(tx), "total": uint(),
        "limit": uint(), "offset": uint(), "hasMore": boolean(),
    }))
}

/// The OpenAI error body; each response narrows `code` to the codes it can carry.
fn error() -> Value {
    all(json!({"error": all(json!({
        "message": string(), "type": string(), "param": opt(string()), "code": string(),
    }))}))
}

/// A JSON-RPC 2.0 response: `result`, or `error` with a code and a message.
fn json_rpc() -> Value {
    let error = all(json!({"code": int(), "message": string()}));
    let mut v = object(
        &["jsonrpc", "id"],
        json!({"jsonrpc": {"const": "2.0"}, "id": {"type": ["string", "integer", "null"]},
               "result": {"type": "object"}, "error": error}),
    );
    v["oneOf"] = json!([{"required": ["result"]}, {"required": ["error"]}]);
    v
}
