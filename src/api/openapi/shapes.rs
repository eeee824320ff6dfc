//! What each route takes and gives, for the OpenAPI document: query parameters, the request body
//! schema, the success answer, and the error codes the route adds to those its access implies.
//!
//! The schemas say exactly what the handlers accept: every optional body field also takes
//! `null` (serde reads it as absent), bounds are the handlers' own, and enums come from the live
//! config (models, chain ids, embedding dimensions). `/openapi.json` is fuzzed against the running
//! gateway (tests/py/test_schemathesis.py), so a schema that drifts from its handler fails there.

use serde_json::{Value, json};

use crate::api::describe::{PROTOCOL_VERSIONS, price_text};
use crate::api::routes::RouteId;
use crate::config::Config;

/// An EVM address as `Wallet::from_str` reads it.
pub const WALLET: &str = "^0[xX][0-9a-fA-F]{40}$";

/// A query or header parameter.
pub struct Param {
    pub name: &'static str,
    pub location: &'static str,
    pub required: bool,
    pub schema: Value,
    pub description: &'static str,
}

/// The success answer of a route.
pub enum Answer {
    /// A JSON body with this status.
    Json(u16, Value),
    /// A JSON body, or an SSE stream when the request asks for `"stream": true`.
    JsonOrStream(Value),
    /// A JSON body, or SSE events of this schema when the request asks for `"stream": true`.
    JsonOrEvents(Value, Value),
    /// A text document of this media type.
    Text(&'static str),
}

/// One route's shape.
pub struct Shape {
    pub params: Vec<Param>,
    pub body: Option<Value>,
    /// The body is read with serde into a typed struct: syntax is 400 `invalid_json`, shape 422.
    pub typed_body: bool,
    pub answer: Answer,
    /// Error codes beyond those implied by the route's access, body and flags, by status.
    pub errors: Vec<(u16, &'static [&'static str])>,
    /// Non-error alternatives beside the success answer: status, description, JSON schema.
    pub also: Vec<(u16, &'static str, Value)>,
}

impl Shape {
    fn new(answer: Answer) -> Self {
        Self {
            params: Vec::new(),
            body: None,
            typed_body: false,
            answer,
            errors: Vec::new(),
            also: Vec::new(),
        }
    }
    fn body(mut self, schema: Value) -> Self {
        self.body = Some(schema);
        self.typed_body = true;
        self
    }
    fn header(mut self, name: &'static str, schema: Value, d: &'static str) -> Self {
        self.params.push(Param {
            name,
            location: "header",
            required: false,
            schema,
            description: d,
        });
        self
    }
    fn query(mut self, name: &'static str, required: bool, schema: Value, d: &'static str) -> Self {
        self.params.push(Param {
            name,
            location: "query",
            required,
            schema,
            description: d,
        });
        self
    }
    fn errors(mut self, status: u16, codes: &'static [&'static str]) -> Self {
        self.errors.push((status, codes));
        self
    }
    fn also(mut self, status: u16, description: &'static str, schema: Value) -> Self {
        self.also.push((status, description, schema));
        self
    }
}

/// A reference to a component schema.
pub fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// `schema` or `null`, written the flattest way (cheaper for generators than a nested `anyOf`).
pub(super) fn opt(mut schema: Value) -> Value {
    if let Some(Value::String(t)) = schema.get("type").cloned() {
        schema["type"] = json!([t, "null"]);
        if let Some(Value::Array(e)) = schema.get_mut("enum") {
            e.push(Value::Null);
        }
    } else if let Some(Value::Array(e)) = schema.get_mut("enum") {
        e.push(Value::Null);
    } else if let Some(c) = schema.get("const").cloned() {
        schema = json!({"enum": [c, null]});
    } else if let Some(Value::Array(any)) = schema.get_mut("anyOf") {
        any.push(json!({"type": "null"}));
    } else {
        schema = json!({"anyOf": [schema, {"type": "null"}]});
    }
    schema
}

pub(super) fn int(min: i128, max: i128) -> Value {
    json!({"type": "integer", "minimum": number(min), "maximum": number(max)})
}

/// An integer as a JSON number (every bound used here fits an `i64` or a `u64`).
fn number(v: i128) -> Value {
    match (u64::try_from(v), i64::try_from(v)) {
        (Ok(u), _) => json!(u),
        (_, Ok(i)) => json!(i),
        _ => Value::Null,
    }
}

pub(super) fn num(min: f64, max: f64) -> Value {
    json!({"type": "number", "minimum": min, "maximum": max})
}

pub(super) fn string() -> Value {
    json!({"type": "string"})
}

pub(super) fn wallet() -> Value {
    json!({"type": "string", "pattern": WALLET})
}

/// A name of 1 to 128 characters.
fn name() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": 128})
}

/// A text the memory layer accepts: not blank, at most 32 KiB.
fn text() -> Value {
    json!({"type": "string", "pattern": "\\S", "maxLength": crate::memory::MAX_TEXT_BYTES})
}

pub(super) fn uint() -> Value {
    json!({"type": "integer", "minimum": 0})
}

pub(super) fn boolean() -> Value {
    json!({"type": "boolean"})
}

pub(super) fn array(items: Value) -> Value {
    json!({"type": "array", "items": items})
}

/// Every field of `properties`, required.
pub(super) fn all(properties: Value) -> Value {
    let names: Vec<&str> = properties
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    object(&names, properties.clone())
}

pub(super) fn object(required: &[&str], properties: Value) -> Value {
    json!({"type": "object", "required": required, "properties": properties})
}

/// A string matching any of `words`, ignoring ASCII case.
fn any_case(words: &[&str]) -> String {
    let alternatives: Vec<String> = words
        .iter()
        .map(|w| {
            w.chars()
                .map(|c| format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase()))
                .collect()
        })
        .collect();
    format!("^(?:{})$", alternatives.join("|"))
}

/// `limit` and `cursor` of the paged lists.
fn paged(s: Shape) -> Shape {
    s.query(
        "limit",
        false,
        int(1, 100),
        "Events per page, 1 to 100 (default 50).",
    )
    .query(
        "cursor",
        false,
        int(0, i128::from(u64::MAX)),
        "The offset from a previous page's `next_cursor`; omit for the first page.",
    )
    .errors(422, &["validation_error"])
}

/// SIWE `message` and `signature` in the query (agent-router).
fn siwe_query(s: Shape, required: bool) -> Shape {
    s.query("message", required, string(), "A signed SIWE message.")
        .query(
            "signature",
            required,
            string(),
            "The wallet's EIP-191 signature of `message`.",
        )
}

const UPSTREAM: &[(u16, &[&str])] = &[
    (400, &["upstream_rejected"]),
    (404, &["model_not_found"]),
    (429, &["upstream_rate_limited"]),
    (502, &["upstream_error"]),
    (504, &["upstream_timeout"]),
];

fn upstream(mut s: Shape) -> Shape {
    s.errors.extend_from_slice(UPSTREAM);
    s
}

/// `models`, a fallback list: canonical ids only. An alias is accepted there too, but a list
/// naming one model twice (`<id>` and `gemini/<id>`) is a 422, which `uniqueItems` over aliases
/// could not express; so the document describes the alias-free lists, all of which are valid.
pub(super) fn fallback_models(c: &Config) -> Value {
    let ids: Vec<&str> = c.prices.all().iter().map(|m| m.id.as_str()).collect();
    json!({"type": "array", "items": {"type": "string", "enum": ids}, "minItems": 2, "maxItems": 3,
           "uniqueItems": true,
           "description": "A fallback list of 2 or 3 distinct models, tried in order; instead of `model`. Aliases (`gemini/<id>`) are accepted too, but two entries naming the same model are a 422."})
}

/// The `model` field (every id and alias, with prices in words) and the largest output cap of
/// the configured models; chat and responses describe them alike.
pub(super) fn model_and_max_output(c: &Config) -> (Value, u32) {
    let mut models: Vec<Value> = Vec::new();
    for m in c.prices.all() {
        models.push(json!(m.id));
        models.extend(m.aliases.iter().map(|a| json!(a)));
    }
    let max_out = c
        .prices
        .all()
        .iter()
        .map(|m| m.max_output_tokens)
        .max()
        .unwrap_or(1);
    let prices: Vec<String> = c.prices.all().iter().map(price_text).collect();
    let model = json!({"type": "string", "enum": models, "description": format!(
        "A model id or one of its aliases. Prices: {}.",
        prices.join("; ")
    )});
    (model, max_out)
}

fn chat_body(c: &Config) -> Value {
    let (model, max_out) = model_and_max_output(c);
    let tokens = int(1, i128::from(max_out));
    let stop = json!({"type": "string", "minLength": 1});
    let part = object(
        &["type", "text"],
        json!({"type": {"const": "text"}, "text": string()}),
    );
    let message = object(
        &["role"],
        json!({
            "role": {"enum": ["system", "developer", "user", "assistant"]},
            "content": opt(json!({"anyOf": [string(), {"type": "array", "items": part}]})),
        }),
    );
    let user =
        json!({"type": "object", "required": ["role"], "properties": {"role": {"const": "user"}}});
    let mut body = object(
        &["messages"],
        json!({
            // Not `maxItems`: with `contains` it makes generators build 10,000-item arrays.
            "messages": {"type": "array", "minItems": 1, "items": message, "contains": user,
                         "description": "1 to 10,000 messages, at least one from the user. Assistant `tool_calls` and `tool` messages (tool calling, see the README) are accepted and not described here, and so are `image_url` (a base64 `data:` URL or an `https://` URL the gateway fetches), `input_audio` (wav, mp3) and `file` (PDF `file_data`) parts in user messages."},
            "model": opt(model.clone()),
            "models": opt(fallback_models(c)),
            "stream": opt(json!({"type": "boolean"})),
            "stream_options": opt(json!({"type": "object", "properties": {"include_usage": opt(json!({"type": "boolean"}))}})),
            "max_tokens": opt(tokens.clone()),
            "max_completion_tokens": opt(tokens),
            "temperature": opt(num(0.0, 2.0)),
            "top_p": opt(num(0.0, 1.0)),
            "stop": opt(json!({"anyOf": [stop, {"type": "array", "items": stop, "maxItems": 5}]})),
            "n": opt(json!({"type": "integer", "minimum": 1, "maximum": 8, "description": "Choices (Gemini `candidateCount`), billed and held for each; Gemini 3 models give one."})),
            "logprobs": opt(json!({"type": "boolean"})),
            "top_logprobs": opt(int(0, 20)),
            "metadata": opt(json!({"type": "object", "maxProperties": 16, "propertyNames": {"maxLength": 64},
                                   "additionalProperties": {"type": "string", "maxLength": 512},
                                   "description": "Kept here, never sent upstream."})),
            "user": opt(string()),
            "service_tier": opt(json!({"type": "string", "description": "Accepted and ignored (`x-vectorway-warning: ignored: service_tier`)."})),
            "seed": opt(int(i128::from(i64::MIN), i128::from(i64::MAX))),
            "presence_penalty": opt(num(-2.0, 2.0)),
            "frequency_penalty": opt(num(-2.0, 2.0)),
            "response_format": opt(response_format()),
            "reasoning_effort": opt(json!({"enum": ["none", "minimal", "low", "medium", "high"]})),
            "tools": opt(json!({"type": "array", "items": function_tool(), "maxItems": 1, "description": "Function tools (Gemini function declarations). Several are accepted when their names are distinct (a name declared twice is a 400 `invalid_tool`), which JSON Schema cannot say, so this document describes lists of one. A bad tool is a 400 `invalid_tool` or `invalid_schema` naming the path."})),
            "tool_choice": opt(json!({"enum": ["auto", "none", "required"], "description": "`auto`, `none`, `required` (needs `tools`), or `{\"type\": \"function\", \"function\": {\"name\": …}}` naming a declared tool (accepted; not described here, as a schema cannot tie the name to `tools`)."})),
            "parallel_tool_calls": opt(json!({"type": "boolean", "description": "`false` keeps the first call of an answer."})),
            "memory_read": opt(json!({"type": "boolean", "default": true})),
            "memory_write": opt(json!({"type": "boolean", "default": true})),
            "memory_write_mode": opt(json!({"enum": ["auto", "raw", "summary"], "default": "auto"})),
            "memory_max_chars": opt(int(1, 100_000)),
            "k": opt(int(1, 50)),
            "memory_namespace": opt(namespace()),
        }),
    );
    // `model` and `models` exclude each other (a null one is absent).
    body["not"] = json!({"required": ["model", "models"],
        "properties": {"model": {"type": "string"}, "models": {"type": "array"}}});
    // `n > 1` needs models that give several candidates (not Gemini 3), and `top_logprobs`
    // needs `logprobs: true`.
    let one = json!({"properties": {"n": {"enum": [1, null]}}});
    let gemini3 = json!({"type": "string", "pattern": "^(gemini/)?gemini-3"});
    body["allOf"] = json!([
        {"if": {"required": ["model"], "properties": {"model": gemini3}}, "then": one},
        {"if": {"required": ["models"], "properties": {"models": {"type": "array", "contains": gemini3}}}, "then": one},
        {"if": {"required": ["top_logprobs"], "properties": {"top_logprobs": {"type": "integer"}}},
         "then": {"required": ["logprobs"], "properties": {"logprobs": {"const": true}}}},
        // `tool_choice: required` needs a tool to call.
        {"if": {"required": ["tool_choice"], "properties": {"tool_choice": {"const": "required"}}},
         "then": {"required": ["tools"], "properties": {"tools": {"type": "array", "minItems": 1}}}},
    ]);
    body
}

/// `{type: function, function: {name, description?, parameters?, strict?}}`, constrained as far
/// as the gateway checks it: Gemini's name rule, and parameters that are an object schema whose
/// top the gateway's schema check reads (as in `response_format`).
fn function_tool() -> Value {
    object(
        &["type", "function"],
        json!({"type": {"const": "function"}, "function": object(&["name"], function_fields())}),
    )
}

/// The Responses API's flat function tool: `{type: function, name, description?, parameters?,
/// strict?}`, the same rules.
pub(super) fn flat_function_tool() -> Value {
    let mut fields = function_fields();
    fields["type"] = json!({"const": "function"});
    object(&["type", "name"], fields)
}

/// A function's `name`, `description`, `parameters` and `strict`.
fn function_fields() -> Value {
    json!({
            "name": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}$",
                     "description": "Gemini's rule: a letter or `_`, then letters, digits, `_ . : -`; at most 64."},
            "description": opt(string()),
            "parameters": opt(json_schema_top(json!({"const": "object"}))),
            "strict": {"description": "Accepted and ignored, whatever it holds: Gemini has no such switch."},
    })
}

/// The top of a JSON Schema as the gateway's schema check reads it: `type` as `kind`, a
/// subschema (an object or a boolean) per property, and the names in `required`.
fn json_schema_top(kind: Value) -> Value {
    let types = json!([
        "string", "number", "integer", "boolean", "array", "object", "null"
    ]);
    let any = json!({"anyOf": [{"enum": types}, {"type": "array", "items": {"enum": types}}]});
    let property =
        json!({"anyOf": [{"type": "object", "properties": {"type": any}}, {"type": "boolean"}]});
    json!({"type": "object", "properties": {
        "type": kind,
        "properties": {"type": "object", "additionalProperties": property},
        "required": {"type": "array", "items": string()}}})
}

/// An agent account, by its UUID or its account id.
fn agent_ref() -> Value {
    json!({"type": "string", "description": "The agent's UUID (from POST /api/v1/agents/register) or its account id (0x…).",
           "pattern": "^(?:0[xX][0-9a-fA-F]{40}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$"})
}

/// `text`, `json_object`, or `json_schema` with a name and a schema. The schema may be any JSON
/// Schema Gemini can take (see the README); this document describes the top of it, as checked.
fn response_format() -> Value {
    // Only what the gateway checks is constrained here: a type word (or a list of them), a
    // subschema (an object or a boolean) per property, and property names in `required`.
    let types = json!([
        "string", "number", "integer", "boolean", "array", "object", "null"
    ]);
    let kind = json!({"anyOf": [{"enum": types}, {"type": "array", "items": {"enum": types}}]});
    let schema = json_schema_top(kind);
    let json_schema = object(
        &["name"],
        json!({"name": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
               "description": opt(string()), "strict": opt(json!({"type": "boolean"})), "schema": opt(schema)}),
    );
    json!({"anyOf": [
        object(&["type"], json!({"type": {"enum": ["text", "json_object"]}})),
        object(&["type", "json_schema"], json!({"type": {"const": "json_schema"}, "json_schema": json_schema})),
    ]})
}

fn namespace() -> Value {
    json!({"type": "string", "pattern": format!("^[A-Za-z0-9_.-]{{0,{}}}$", crate::memory::MAX_NAMESPACE_LEN)})
}

/// `POST /mcp`: one JSON-RPC 2.0 message. A request (it has `id` and a string `method`) must be
/// well formed; anything else is a notification, accepted with 202. Protocol errors are JSON-RPC
/// error objects (400 before dispatch, 200 after); tool results carry the REST route's outcome.
fn mcp() -> Shape {
    let mut body = json!({"type": "object", "properties": {
        "jsonrpc": {"description": "\"2.0\""},
        "method": {"description": "`initialize`, `ping`, `tools/list` or `tools/call`."},
        "params": {"description": "The method's parameters; `tools/call` takes `name` and `arguments`."},
        "id": {"description": "A string or an integer; without one the message is a notification."},
    }});
    body["if"] =
        json!({"required": ["id", "method"], "properties": {"method": {"type": "string"}}});
    body["then"] = object(
        &["jsonrpc"],
        json!({"jsonrpc": {"const": "2.0"}, "id": {"type": ["string", "integer"]}}),
    );
    let mut s = Shape::new(Answer::Json(200, r("JsonRpcResponse")))
        .header(
            "Mcp-Protocol-Version",
            json!({"enum": PROTOCOL_VERSIONS}),
            "A protocol revision this server speaks; another is 400.",
        )
        .header(
            "Origin",
            string(),
            "Browsers only from this server's own origin or loopback; another is 403.",
        )
        .errors(400, &["unsupported_protocol_version", "invalid_body"])
        .errors(403, &["origin_not_allowed"])
        .errors(413, &["body_too_large"])
        .also(
            202,
            "Accepted: a notification (no `id` or no `method`).",
            Value::Null,
        )
        .also(
            400,
            "A JSON-RPC error: the body is not JSON, or not one JSON-RPC 2.0 request.",
            r("JsonRpcResponse"),
        );
    s.body = Some(body);
    s
}

fn doc(media: &'static str) -> Shape {
    let mut s = Shape::new(Answer::Text(media));
    s.params.push(Param {
        name: "If-None-Match",
        location: "header",
        required: false,
        schema: string(),
        description: "The document's `ETag`: answered 304 when it is unchanged.",
    });
    s.also(
        304,
        "Not modified (the `If-None-Match` ETag is current).",
        Value::Null,
    )
}

/// The shape of every route: an exhaustive match, so a new route does not compile until it is
/// described.
pub fn shape(id: RouteId, c: &Config) -> Shape {
    use Answer::{Json, JsonOrStream, Text};
    let ok = |schema: Value| Shape::new(Json(200, schema));
    let siwe = |s: Shape| {
        s.errors(
            401,
            &[
                "siwe_message_invalid",
                "siwe_domain_mismatch",
                "siwe_nonce_invalid",
                "siwe_expired",
                "siwe_chain_invalid",
                "siwe_signature_invalid",
            ],
        )
        .errors(429, &["rate_limited"])
    };
    let purchase = |wallet_credits: Value| {
        object(
            &["wallet_address", "credits"],
            json!({"wallet_address": wallet(), "credits": wallet_credits}),
        )
    };
    let credits = || json!({"type": "integer", "minimum": 500_000, "maximum": 1_000_000_000});
    match id {
        RouteId::Health | RouteId::Healthz => ok(r("Live")),
        RouteId::Readyz => ok(r("Ready")).also(503, "Not ready: the store or the upstream is unusable.", r("Ready")),
        RouteId::Status => ok(r("Status")).also(503, "Degraded: the store is unusable.", r("Status")),
        RouteId::Metrics => Shape::new(Text("text/plain")),
        RouteId::Models => ok(r("ModelList")),
        RouteId::Chat => upstream(Shape::new(JsonOrStream(r("ChatCompletion"))).body(chat_body(c)))
            .errors(400, &["invalid_tool", "invalid_schema", "unsupported_parameter"])
            .errors(402, &["insufficient_credits"])
            .errors(422, &["validation_error"]),
        RouteId::Responses => upstream(
            Shape::new(Answer::JsonOrEvents(r("Response"), r("ResponseStreamEvent")))
                .body(super::responses::body(c)),
        )
        .errors(400, &["invalid_tool", "invalid_schema", "unsupported_parameter"])
        .errors(402, &["insufficient_credits"])
        .errors(422, &["validation_error"]),
        RouteId::SiweChallenge => ok(r("Challenge"))
            .body(object(
                &["wallet_address"],
                json!({"wallet_address": wallet(), "chain_id": opt(json!({"enum": c.auth.chain_ids, "default": 1}))}),
            ))
            .errors(401, &["siwe_chain_invalid"])
            .errors(429, &["rate_limited", "siwe_challenges_exhausted"]),
        RouteId::SiweVerify => siwe(ok(r("SignIn")).body(object(
            &["wallet_address", "message", "signature"],
            json!({"wallet_address": wallet(), "message": string(), "signature": string()}),
        )))
        .errors(403, &["wallet_mismatch"]),
        RouteId::Refresh => ok(r("TokenPair"))
            .body(object(&["refresh_token"], json!({"refresh_token": string()})))
            .errors(401, &["invalid_token", "refresh_token_reused"]),
        RouteId::Revoke => ok(object(&["status"], json!({"status": {"const": "revoked"}})))
            .body(object(&["refresh_token"], json!({"refresh_token": string()})))
            .errors(401, &["invalid_token"]),
        RouteId::Me => ok(r("Account")),
        RouteId::CreditsMe => ok(r("Balance")),
        RouteId::Ledger => paged(ok(r("LedgerPage"))).query(
            "kind",
            false,
            json!({"type": "string", "pattern": any_case(&["topup", "debit", "refund", "grant"])}),
            "Only movements of this kind: topup, debit, refund or grant (any case).",
        ),
        RouteId::Usage => paged(ok(r("UsagePage"))).query(
            "filter",
            false,
            json!({"type": "string", "pattern": "^(?:all|errors|/.*)$", "default": "all"}),
            "`all`, `errors` (status ≥ 400), or an exact request path such as `/v1/chat/completions`.",
        ),
        RouteId::ApiKeyCreate => Shape::new(Json(201, r("CreatedKey")))
            .body(object(
                &["wallet_address", "key_name"],
                json!({"wallet_address": wallet(), "key_name": name()}),
            ))
            .errors(403, &["wallet_mismatch"]),
        RouteId::ApiKeyList => ok(json!({"type": "array", "items": r("KeyMetadata")})),
        RouteId::ApiKeyRevoke => ok(object(
            &["status", "key_id"],
            json!({"status": {"const": "revoked"}, "key_id": string()}),
        ))
        .errors(404, &["not_found"]),
        RouteId::AuthKeysCreate => siwe(Shape::new(Json(201, r("RouterKey"))).body(object(
            &["message", "signature"],
            json!({"message": string(), "signature": string(), "label": opt(json!({"type": "string", "maxLength": 128}))}),
        ))),
        RouteId::AuthKeysList => siwe(siwe_query(ok(r("RouterKeyList")), true))
            .errors(401, &["missing_credentials"]),
        RouteId::AuthKeysRevoke => siwe(
            ok(object(&["revoked"], json!({"revoked": {"const": true}}))).body(object(
                &["message", "signature"],
                json!({"message": string(), "signature": string()}),
            )),
        )
        .errors(404, &["not_found"]),
        RouteId::UsageWallet => siwe(siwe_query(ok(r("RouterUsage")), false))
            .errors(403, &["wallet_mismatch"])
            .errors(422, &["validation_error"]),
        RouteId::AdminGrant => {
            let mut body = object(
                &["wallet", "credits"],
                json!({"wallet": wallet(), "credits": int(1, i128::from(crate::billing::MAX_BALANCE)), "note": opt(string())}),
            );
            body["additionalProperties"] = json!(false);
            ok(r("Grant")).body(body)
        }
        RouteId::AdminCreateKey => {
            let mut body = object(&["wallet"], json!({"wallet": wallet(), "name": opt(string())}));
            body["additionalProperties"] = json!(false);
            Shape::new(Json(201, r("AdminKey"))).body(body)
        }
        RouteId::AdminBalance => ok(r("AdminBalance"))
            .query("wallet", true, wallet(), "The wallet whose balance is read.")
            .errors(422, &["validation_error"]),
        RouteId::AgentOnboard => ok(r("Onboarded")).body(object(
            &["wallet_address", "credits"],
            json!({"wallet_address": wallet(), "credits": credits(), "key_name": opt(name())}),
        )),
        RouteId::CreditsPurchase => {
            let mut body = purchase(credits());
            body["required"] = json!(["credits"]);
            body["properties"]["wallet_address"] = opt(wallet());
            body["properties"]["agent"] = opt(agent_ref());
            // Exactly one of the two names the account credited (a null one is absent).
            body["oneOf"] = json!([
                {"required": ["wallet_address"], "properties": {"wallet_address": {"type": "string"}, "agent": {"type": "null"}}},
                {"required": ["agent"], "properties": {"agent": {"type": "string"}, "wallet_address": {"type": "null"}}},
            ]);
            ok(r("Account")).body(body).errors(404, &["not_found", "agent_not_found"])
        }
        RouteId::Topup => ok(r("Topup"))
            .body(object(
                &["amount"],
                json!({"amount": {"type": "number", "minimum": 1, "maximum": 1000, "multipleOf": 0.000001,
                                  "description": "US dollars, at most 6 decimals."},
                       "agent": opt(agent_ref())}),
            ))
            .errors(404, &["agent_not_found"]),
        RouteId::AgentRegister => Shape::new(Json(201, r("AgentRegistered")))
            .body(object(
                &["name"],
                json!({"name": {"type": "string", "minLength": 1, "maxLength": 100,
                                "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$",
                                "description": "1 to 100 characters, no control characters."}}),
            ))
            .errors(429, &["rate_limited"])
            .errors(503, &["agent_capacity_reached"]),
        RouteId::AgentBalance => ok(r("AgentBalance")),
        RouteId::AgentTransactions => ok(r("TransactionPage"))
            .query("limit", false, int(1, 100), "Transactions per page, 1 to 100 (default 50).")
            .query("offset", false, int(0, i128::from(u64::MAX)), "How many to skip (default 0).")
            .query(
                "type",
                false,
                json!({"type": "string", "pattern": any_case(&["deposit", "charge", "grant", "refund", "topup", "debit"])}),
                "Only this type: deposit (x402 money in), charge (calls), grant (operator) or refund (x402 change); topup and debit are accepted too.",
            )
            .errors(422, &["validation_error"]),
        RouteId::AgentModels => ok(r("ModelList")),
        RouteId::MemorySearch => upstream(
            ok(r("MemoryMatches"))
                .query("q", true, text(), "The query text (not blank, at most 8 KiB); its embedding is billed per token like POST /v1/embeddings.")
                .query("k", false, int(1, crate::memory::MAX_K as i128), "How many matches, 1 to 100 (default 5).")
                .query("namespace", false, namespace(), "A namespace within the wallet's memory."),
        )
        .errors(402, &["insufficient_credits"])
        .errors(422, &["validation_error"]),
        RouteId::MemoryNamespaces => ok(r("MemoryNamespaces")),
        RouteId::MemoryList => ok(r("MemoryRecords"))
            .query("namespace", false, namespace(), "The namespace to list (absent or empty: the default one).")
            .query("limit", false, int(1, crate::memory::MAX_LIST as i128), "Records per page, 1 to 100 (default 20).")
            .query("before", false, json!({"type": "string", "pattern": "^([0-9A-Fa-f]{32}|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})$"}), "Only records older than this memory id (the previous page's `next_before`).")
            .errors(422, &["validation_error"]),
        RouteId::MemoryDelete => ok(object(
            &["status", "memory_id"],
            json!({"status": {"const": "deleted"}, "memory_id": string()}),
        ))
        .errors(404, &["not_found"]),
        RouteId::Embeddings => {
            let input = json!({"anyOf": [text(), {"type": "array", "items": text(), "minItems": 1,
                                                   "maxItems": crate::memory::MAX_EMBED_INPUTS}]});
            upstream(ok(r("Embeddings")).body(object(
                &["input"],
                json!({"input": input, "model": opt(string()),
                       "encoding_format": opt(json!({"enum": ["float", "base64"]})),
                       "dimensions": opt(int(1, c.memory.dims as i128))}),
            )))
            .errors(402, &["insufficient_credits"])
        }
        RouteId::LlmsTxt => doc("text/plain"),
        RouteId::LlmsFull | RouteId::DocsMd | RouteId::SkillMd => doc("text/markdown"),
        RouteId::OpenApi => {
            let mut s = doc("application/json");
            s.answer = Json(200, json!({"type": "object", "required": ["openapi", "paths"]}));
            s
        }
        RouteId::DocsHtml => doc("text/html"),
        RouteId::Assets => doc("text/*").errors(404, &["not_found"]),
        RouteId::Mcp => mcp(),
        RouteId::UsageSummary => ok(r("UsageSummary"))
            .query("bucket", false, json!({"enum": ["hour", "day"], "default": "hour"}), "Bucket width: `hour` (UTC hours; kept for the last 35 days) or `day` (UTC days).")
            .query("buckets", false, int(1, i128::from(crate::console::rollup::MAX_BUCKETS)), "How many buckets, ending with the one that holds `to` (default 24 hours or 30 days).")
            .query("to", false, int(0, i128::from(crate::api::console::MAX_TO_S)), "The end of the range, in Unix seconds (default now).")
            .query("wallet", false, wallet(), "The caller's own wallet (optional); another wallet is 403.")
            .errors(403, &["wallet_mismatch"])
            .errors(422, &["validation_error"]),
        RouteId::AdminStats => ok(r("AdminStats")),
        RouteId::AdminTopWallets => ok(r("TopWallets"))
            .query("limit", false, int(1, 100), "How many wallets (default 10).")
            .errors(422, &["validation_error"]),
        RouteId::AdminConfig => ok(r("AdminConfig")),
        RouteId::Console => doc("text/html"),
    }
}
