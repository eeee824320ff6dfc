//! `POST /mcp`: MCP over Streamable HTTP (stateless, JSON response mode), tools that re-enter REST.
//!
//! Every tool is a translation, never a second implementation: `tools/call` builds the REST
//! request the tool stands for (`chat` → `POST /v1/chat/completions`, `memory_search` →
//! `GET /v1/memory`, …) with the caller's own credentials and sends it through `api::serve`, the
//! same authorization, rate limits, holds, charges, x402 verification, settlement, change and
//! usage recording as a REST call. x402 over MCP follows the tool-result binding of the x402
//! `transports-v2/mcp.md` spec: an unpaid `chat` is a tool result with `isError: true` and the
//! `PaymentRequired` object; the payment comes back in `params._meta["x402/payment"]` and the
//! settlement goes out in `result._meta["x402/payment-response"]`.

use std::future::Future;
use std::pin::Pin;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, ORIGIN};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use serde_json::{Map, Value, json};

use super::describe::{PROTOCOL_VERSIONS, base_url};
use super::{Ctx, ReqBody, find_route, serve};
use crate::error::{Error, RequestError};
use crate::http::{Body, JSON, bytes_response, empty, read_body};

/// The `_meta` keys of the x402 MCP binding.
pub const PAYMENT_META: &str = "x402/payment";
pub const RECEIPT_META: &str = "x402/payment-response";

/// JSON-RPC error codes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;

/// Headers of the inner REST answer worth passing on to the MCP client.
const PASSED_ON: &[&str] = &[
    "x-model-used",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "retry-after",
    "x-payment-method",
    "x-payer-address",
];

/// Handles one JSON-RPC message.
pub async fn handle(ctx: &Ctx, req: Request<ReqBody>) -> Result<Response<Body>, Error> {
    check_origin(ctx, req.headers())?;
    if let Some(v) = req.headers().get("mcp-protocol-version") {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        if !PROTOCOL_VERSIONS.contains(&v.as_str()) {
            return Err(RequestError::UnsupportedProtocolVersion(v).into());
        }
    }
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts.headers, body, ctx.state.config.chat_body_limit()).await?;
    let msg: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            let err = rpc_error(Value::Null, PARSE_ERROR, &format!("parse error: {e}"));
            return Ok(reply(StatusCode::BAD_REQUEST, &err));
        }
    };
    let Value::Object(msg) = msg else {
        let err = rpc_error(
            Value::Null,
            INVALID_REQUEST,
            "one JSON-RPC message per request (batches are not supported)",
        );
        return Ok(reply(StatusCode::BAD_REQUEST, &err));
    };
    let id = msg.get("id").cloned();
    let method = msg.get("method").and_then(Value::as_str);
    let (Some(id), Some(method)) = (id, method) else {
        // A notification, or a response to us (we never ask): accepted, nothing to say.
        return Ok(accepted(&msg));
    };
    if msg.get("jsonrpc").and_then(Value::as_str) != Some("2.0") || !valid_id(&id) {
        let err = rpc_error(id, INVALID_REQUEST, "not a JSON-RPC 2.0 request");
        return Ok(reply(StatusCode::BAD_REQUEST, &err));
    }
    let params = msg.get("params").cloned().unwrap_or(Value::Null);
    let mut extra = HeaderMap::new();
    let answer = match method {
        "initialize" => Ok(initialize(ctx, &params)),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({ "tools": tools(ctx) })),
        "tools/call" => call(ctx, &parts.headers, &params, &mut extra).await,
        other => Err((
            METHOD_NOT_FOUND,
            format!("method '{other}' is not supported"),
        )),
    };
    let body = match answer {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err((code, message)) => rpc_error(id, code, &message),
    };
    let mut res = reply(StatusCode::OK, &body);
    res.headers_mut().extend(extra);
    Ok(res)
}

fn valid_id(id: &Value) -> bool {
    id.is_string() || id.is_i64() || id.is_u64()
}

fn accepted(msg: &Map<String, Value>) -> Response<Body> {
    tracing::trace!(method = ?msg.get("method"), "mcp notification");
    let mut res = Response::new(empty());
    *res.status_mut() = StatusCode::ACCEPTED;
    res
}

fn reply(status: StatusCode, body: &Value) -> Response<Body> {
    bytes_response(status, JSON, serde_json::to_vec(body).unwrap_or_default())
}

fn rpc_error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// DNS-rebinding guard: a browser page may only call us from our own origin or from loopback.
fn check_origin(ctx: &Ctx, headers: &HeaderMap) -> Result<(), Error> {
    let Some(origin) = headers.get(ORIGIN) else {
        return Ok(());
    };
    let origin = String::from_utf8_lossy(origin.as_bytes()).into_owned();
    let own = base_url(&ctx.state.config);
    let host = origin
        .split_once("://")
        .map_or("", |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or("");
    let host_only = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let loopback = matches!(host_only, "localhost" | "127.0.0.1" | "[::1]");
    if loopback || origin.trim_end_matches('/') == own.trim_end_matches('/') {
        Ok(())
    } else {
        Err(RequestError::OriginNotAllowed(origin).into())
    }
}

fn initialize(ctx: &Ctx, params: &Value) -> Value {
    let asked = params.get("protocolVersion").and_then(Value::as_str);
    let version = asked
        .filter(|v| PROTOCOL_VERSIONS.contains(v))
        .unwrap_or(PROTOCOL_VERSIONS[0]);
    let base = base_url(&ctx.state.config);
    json!({
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": false}},
        "serverInfo": {"name": "vectorway", "version": env!("CARGO_PKG_VERSION")},
        "instructions": format!(
            "Vectorway: Gemini chat billed per token, with wallet-scoped vector memory. \
             `chat` is paid: send an API key (x-api-key or Bearer) for prepaid credits, or call it \
             without one, read the x402 PaymentRequired in the error result, and retry with the \
             signed payment in params._meta[\"{PAYMENT_META}\"]. The other tools are free and need \
             an API key. Full reference: {base}/llms.txt"
        ),
    })
}

/// The tool list, built from the live configuration (models and prices).
pub fn tools(ctx: &Ctx) -> Value {
    let c = &ctx.state.config;
    let models: Vec<&str> = c.prices.all().iter().map(|m| m.id.as_str()).collect();
    let prices: Vec<String> = c
        .prices
        .all()
        .iter()
        .map(|m| {
            format!(
                "{} (${}/${} per 1M tokens in/out)",
                m.id,
                crate::billing::pricing::format_usd_micros(m.input),
                crate::billing::pricing::format_usd_micros(m.output)
            )
        })
        .collect();
    let message = json!({
        "type": "object",
        "properties": {
            "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
            "content": {"type": ["string", "array", "null"], "description": "Text, or OpenAI content parts."},
            "tool_calls": {"type": "array", "description": "An assistant message's function calls, as the chat tool returned them (keep extra_content: it carries Gemini 3 thought signatures)."},
            "tool_call_id": {"type": "string", "description": "A tool message: the id of the call it answers."}
        },
        "required": ["role"]
    });
    let function = json!({
        "type": "object",
        "properties": {
            "type": {"const": "function"},
            "function": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "description": {"type": "string"},
                    "parameters": {"type": "object"},
                    "strict": {"type": "boolean"}
                },
                "required": ["name"]
            }
        },
        "required": ["type", "function"]
    });
    let namespace = json!({"type": "string", "description": "Memory namespace (one agent of the wallet); default: the wallet's shared memory."});
    json!([
        {
            "name": "chat",
            "title": "Chat completion",
            "description": format!(
                "One Gemini chat completion (non-streaming) with the same holds and charges as \
                 POST /v1/chat/completions. Paid per token: an API key, or x402 via \
                 _meta[\"{PAYMENT_META}\"]. Models: {}.", prices.join(", ")
            ),
            "inputSchema": {
                "type": "object",
                "properties": {
                    "messages": {"type": "array", "items": message, "minItems": 1},
                    "model": {"type": "string", "enum": models},
                    "models": {"type": "array", "items": {"type": "string", "enum": models}, "minItems": 2, "maxItems": 3, "uniqueItems": true,
                               "description": "Fallback list, tried in order; priced at the dearest."},
                    "max_tokens": {"type": "integer", "minimum": 1},
                    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                    "memory_read": {"type": "boolean", "description": "Recall relevant memories into the prompt (default true)."},
                    "memory_write": {"type": "boolean", "description": "Remember this exchange (default true)."},
                    "memory_namespace": namespace,
                    "tools": {"type": "array", "items": function, "description": "Functions the model may call (OpenAI chat `tools`); calls come back in structuredContent.tool_calls with finish_reason tool_calls."},
                    "tool_choice": {"description": "auto, none, required, or {\"type\":\"function\",\"function\":{\"name\":…}}."},
                    "parallel_tool_calls": {"type": "boolean"},
                    "response_format": {"type": "object", "description": "OpenAI response_format: json_object, or json_schema with a JSON Schema the answer follows."},
                    "reasoning_effort": {"type": "string", "enum": ["none", "minimal", "low", "medium", "high"]}
                },
                "required": ["messages"],
                "additionalProperties": false
            },
            "annotations": {"readOnlyHint": false, "openWorldHint": true}
        },
        {
            "name": "memory_search",
            "title": "Search memory",
            "description": "Nearest memories of the caller's wallet to a query (GET /v1/memory; q at most 8 KiB). The query's embedding is billed per token like POST /v1/embeddings; needs an API key.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "q": {"type": "string", "minLength": 1},
                    "k": {"type": "integer", "minimum": 1, "maximum": 100},
                    "namespace": namespace
                },
                "required": ["q"],
                "additionalProperties": false
            },
            "annotations": {"readOnlyHint": true}
        },
        {
            "name": "memory_delete",
            "title": "Delete a memory",
            "description": "Delete one memory of the caller's wallet by id (DELETE /v1/memory/{id}). Free; needs an API key.",
            "inputSchema": {
                "type": "object",
                "properties": {"id": {"type": "string", "minLength": 1}},
                "required": ["id"],
                "additionalProperties": false
            },
            "annotations": {"readOnlyHint": false, "destructiveHint": true, "idempotentHint": true}
        },
        {
            "name": "credits_balance",
            "title": "Credit balance",
            "description": "The caller's credit balance, held and available credits (GET /v1/credits/me). Free; needs an API key.",
            "inputSchema": {"type": "object", "properties": {}, "additionalProperties": false},
            "annotations": {"readOnlyHint": true}
        },
        {
            "name": "usage_recent",
            "title": "Recent usage",
            "description": "The caller's most recent API calls, newest first (GET /v1/usage). Free; needs an API key.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "limit": {"type": "integer", "minimum": 1, "maximum": 100},
                    "filter": {"type": "string", "enum": ["all", "errors"]}
                },
                "additionalProperties": false
            },
            "annotations": {"readOnlyHint": true}
        }
    ])
}

type RpcResult = Result<Value, (i64, String)>;

/// The REST call a tool stands for.
struct Inner {
    method: Method,
    path: String,
    body: Option<Vec<u8>>,
}

async fn call(ctx: &Ctx, outer: &HeaderMap, params: &Value, extra: &mut HeaderMap) -> RpcResult {
    let name = params.get("name").and_then(Value::as_str).ok_or((
        INVALID_PARAMS,
        "params.name (the tool) is required".to_string(),
    ))?;
    let args = match params.get("arguments") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err((INVALID_PARAMS, "params.arguments must be an object".into())),
    };
    let inner = match translate(name, &args) {
        Ok(Some(inner)) => inner,
        Ok(None) => return Err((INVALID_PARAMS, format!("unknown tool '{name}'"))),
        // A bad argument is the model's to fix: a tool error it can read, not a protocol fault.
        Err(e) => return Ok(tool_error(&Error::from(e))),
    };
    let payment = match params.get("_meta").and_then(|m| m.get(PAYMENT_META)) {
        Some(p) if name == "chat" => Some(payment_header(p)),
        _ => None,
    };
    let res = forward(ctx, outer, inner, payment).await;
    let (parts, body) = res.into_parts();
    for name in PASSED_ON {
        if let Some(v) = parts.headers.get(*name) {
            extra.insert(HeaderName::from_static(name), v.clone());
        }
    }
    let bytes = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(tool_failure(
                json!({"error": {"message": format!("the answer was cut short: {e}"), "code": "upstream_error"}}),
            ));
        }
    };
    Ok(result_of(name, parts.status, &parts.headers, &bytes))
}

/// The REST request for a tool call; `Ok(None)` for an unknown tool.
fn translate(name: &str, args: &Map<String, Value>) -> Result<Option<Inner>, RequestError> {
    let allow = |keys: &[&str]| -> Result<(), RequestError> {
        match args.keys().find(|k| !keys.contains(&k.as_str())) {
            Some(k) => Err(RequestError::Validation {
                param: None,
                message: format!("unknown argument '{k}' for tool '{name}'"),
            }),
            None => Ok(()),
        }
    };
    let inner = match name {
        "chat" => {
            allow(&[
                "messages",
                "model",
                "models",
                "max_tokens",
                "temperature",
                "memory_read",
                "memory_write",
                "memory_namespace",
                "tools",
                "tool_choice",
                "parallel_tool_calls",
                "response_format",
                "reasoning_effort",
            ])?;
            let mut body = args.clone();
            body.insert("stream".into(), Value::Bool(false));
            Inner {
                method: Method::POST,
                path: super::chat::PATH.into(),
                body: Some(serde_json::to_vec(&body).unwrap_or_default()),
            }
        }
        "memory_search" => {
            allow(&["q", "k", "namespace"])?;
            let q = string_arg(args, "q")?
                .ok_or_else(|| RequestError::validation("q", "q (the query text) is required"))?;
            let mut path = format!("/v1/memory?q={}", encode(&q));
            if let Some(k) = args.get("k") {
                let k = k
                    .as_u64()
                    .ok_or_else(|| RequestError::validation("k", "k must be a positive integer"))?;
                path.push_str(&format!("&k={k}"));
            }
            if let Some(ns) = string_arg(args, "namespace")? {
                path.push_str(&format!("&namespace={}", encode(&ns)));
            }
            get(path)
        }
        "memory_delete" => {
            allow(&["id"])?;
            let id = string_arg(args, "id")?
                .filter(|id| !id.is_empty())
                .ok_or_else(|| RequestError::validation("id", "id (the memory id) is required"))?;
            Inner {
                method: Method::DELETE,
                path: format!("/v1/memory/{}", encode(&id)),
                body: None,
            }
        }
        "credits_balance" => {
            allow(&[])?;
            get("/v1/credits/me".into())
        }
        "usage_recent" => {
            allow(&["limit", "filter"])?;
            let limit = match args.get("limit") {
                None => 20,
                Some(v) => v.as_u64().ok_or_else(|| {
                    RequestError::validation("limit", "limit must be a positive integer")
                })?,
            };
            let mut path = format!("/v1/usage?limit={limit}");
            if let Some(f) = string_arg(args, "filter")? {
                path.push_str(&format!("&filter={}", encode(&f)));
            }
            get(path)
        }
        _ => return Ok(None),
    };
    Ok(Some(inner))
}

fn get(path: String) -> Inner {
    Inner {
        method: Method::GET,
        path,
        body: None,
    }
}

fn string_arg(
    args: &Map<String, Value>,
    key: &'static str,
) -> Result<Option<String>, RequestError> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(RequestError::validation(
            key,
            format!("{key} must be a string"),
        )),
    }
}

/// Percent-encodes a query or path component (RFC 3986 unreserved characters pass).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The HTTP header an MCP payment becomes: the `PaymentPayload` object as base64 JSON, under the
/// header of its protocol version (a string is taken as an already encoded header value).
fn payment_header(p: &Value) -> (HeaderName, Vec<u8>) {
    let v1 = p.get("x402Version").and_then(Value::as_u64) == Some(1);
    let name = if v1 { "x-payment" } else { "payment-signature" };
    let value = match p {
        Value::String(s) => s.as_bytes().to_vec(),
        other => base64::engine::general_purpose::STANDARD
            .encode(serde_json::to_vec(other).unwrap_or_default())
            .into_bytes(),
    };
    (HeaderName::from_static(name), value)
}

/// Sends the tool's REST request through the gateway's own pipeline, with the caller's
/// credentials (and the payment, if any) and nothing else of the outer request.
fn forward<'a>(
    ctx: &'a Ctx,
    outer: &'a HeaderMap,
    inner: Inner,
    payment: Option<(HeaderName, Vec<u8>)>,
) -> Pin<Box<dyn Future<Output = Response<Body>> + Send + 'a>> {
    Box::pin(async move {
        let path_only = inner.path.split('?').next().unwrap_or("").to_string();
        let (route, params) = match find_route(&inner.method, &path_only) {
            Ok((route, params)) => (route, params.into_iter().map(str::to_string).collect()),
            Err(e) => return super::error_response(&Error::from(e)),
        };
        let mut builder = Request::builder()
            .method(inner.method)
            .uri(inner.path.as_str());
        for name in ["x-api-key", "authorization"] {
            if let Some(v) = outer.get(name) {
                builder = builder.header(name, v.clone());
            }
        }
        if let Some((name, value)) = payment {
            match HeaderValue::from_bytes(&value) {
                Ok(v) => builder = builder.header(name, v),
                Err(_) => {
                    return super::error_response(&Error::from(RequestError::validation(
                        "_meta",
                        "the x402 payment is not a valid header value",
                    )));
                }
            }
        }
        let body = Bytes::from(inner.body.unwrap_or_default());
        if !body.is_empty() {
            builder = builder.header(CONTENT_TYPE, JSON);
        }
        let req = match builder.body(Either::Right(Full::new(body))) {
            Ok(r) => r,
            Err(e) => {
                return super::error_response(&Error::from(RequestError::validation(
                    "arguments",
                    e.to_string(),
                )));
            }
        };
        serve(
            &ctx.state,
            route,
            params,
            req,
            &ctx.request_id,
            ctx.started,
            None,
        )
        .await
    })
}

/// Turns the REST answer into the tool result.
fn result_of(tool: &str, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Value {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if status == StatusCode::PAYMENT_REQUIRED
        && let Some(required) = headers
            .get("payment-required")
            .and_then(|h| crate::payments::header::decode_base64_json::<Value>(h.as_bytes()).ok())
    {
        return payment_required(tool, required);
    }
    if !status.is_success() {
        let mut out = tool_failure(parsed);
        attach_receipt(&mut out, headers);
        return out;
    }
    let mut out = match tool {
        "chat" => {
            let choice = &parsed["choices"][0];
            let text = choice["message"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let calls = &choice["message"]["tool_calls"];
            let mut structured = json!({
                "id": parsed["id"],
                "model": parsed["model"],
                "text": text,
                "finish_reason": choice["finish_reason"],
                "usage": parsed["usage"],
            });
            let mut content = vec![json!({"type": "text", "text": text})];
            if calls.as_array().is_some_and(|c| !c.is_empty()) {
                // The calls, as the next `chat` call's assistant message must carry them back.
                structured["tool_calls"] = calls.clone();
                content = vec![json!({"type": "text", "text": calls.to_string()})];
                if !text.is_empty() {
                    content.insert(0, json!({"type": "text", "text": text}));
                }
            }
            json!({"content": content, "structuredContent": structured, "isError": false})
        }
        _ => {
            let text = serde_json::to_string(&parsed).unwrap_or_default();
            let structured = if parsed.is_object() {
                parsed
            } else {
                json!({ "result": parsed })
            };
            json!({"content": [{"type": "text", "text": text}], "structuredContent": structured, "isError": false})
        }
    };
    attach_receipt(&mut out, headers);
    out
}

/// The x402 `PaymentRequired` as an MCP tool error: in `structuredContent` and as text.
fn payment_required(tool: &str, mut required: Value) -> Value {
    if let Some(resource) = required.get_mut("resource").and_then(Value::as_object_mut) {
        resource.insert("url".into(), Value::String(format!("mcp://tool/{tool}")));
    }
    let text = serde_json::to_string(&required).unwrap_or_default();
    json!({"content": [{"type": "text", "text": text}], "structuredContent": required, "isError": true})
}

/// The settlement receipt (v2 `PAYMENT-RESPONSE` or v1 `X-PAYMENT-RESPONSE`) as result `_meta`.
fn attach_receipt(out: &mut Value, headers: &HeaderMap) {
    let receipt = ["payment-response", "x-payment-response"]
        .iter()
        .find_map(|h| headers.get(*h))
        .and_then(|h| crate::payments::header::decode_base64_json::<Value>(h.as_bytes()).ok());
    if let Some(r) = receipt {
        out["_meta"] = json!({ RECEIPT_META: r });
    }
}

fn tool_failure(error_body: Value) -> Value {
    let text = match error_body["error"]["message"].as_str() {
        Some(m) => format!(
            "{}: {m}",
            error_body["error"]["code"].as_str().unwrap_or("error")
        ),
        None => serde_json::to_string(&error_body).unwrap_or_default(),
    };
    json!({"content": [{"type": "text", "text": text}], "structuredContent": error_body, "isError": true})
}

fn tool_error(e: &Error) -> Value {
    tool_failure(serde_json::to_value(e.body()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_translate_to_their_rest_calls() {
        let args = |v: Value| v.as_object().cloned().unwrap_or_default();
        let i = translate("memory_search", &args(json!({"q": "a b&c", "k": 3})))
            .unwrap()
            .unwrap();
        assert_eq!(i.path, "/v1/memory?q=a%20b%26c&k=3");
        let i = translate("memory_delete", &args(json!({"id": "m/1"})))
            .unwrap()
            .unwrap();
        assert_eq!(
            (i.method, i.path.as_str()),
            (Method::DELETE, "/v1/memory/m%2F1")
        );
        let i = translate("chat", &args(json!({"messages": []})))
            .unwrap()
            .unwrap();
        let body: Value = serde_json::from_slice(&i.body.unwrap()).unwrap();
        assert_eq!(body["stream"], false, "the tool never streams");
        assert!(translate("chat", &args(json!({"stream": true}))).is_err());
        assert!(translate("usage_recent", &args(json!({"limit": "x"}))).is_err());
        assert!(translate("nope", &Map::new()).unwrap().is_none());
    }

    #[test]
    fn payments_become_the_header_of_their_version() {
        let (n, v) = payment_header(&json!({"x402Version": 2, "payload": {}}));
        assert_eq!(n, "payment-signature");
        let decoded: Value = crate::payments::header::decode_base64_json(&v).unwrap();
        assert_eq!(decoded["x402Version"], 2);
        assert_eq!(payment_header(&json!({"x402Version": 1})).0, "x-payment");
        assert_eq!(payment_header(&json!("abc")).1, b"abc");
    }

    #[test]
    fn a_402_with_requirements_becomes_a_payment_required_tool_error() {
        let required = json!({"x402Version": 2, "resource": {"url": "http://h/v1/chat/completions"}, "accepts": []});
        let mut h = HeaderMap::new();
        let b64 = base64::engine::general_purpose::STANDARD.encode(required.to_string());
        h.insert("payment-required", HeaderValue::from_str(&b64).unwrap());
        let out = result_of("chat", StatusCode::PAYMENT_REQUIRED, &h, b"{}");
        assert_eq!(out["isError"], true);
        assert_eq!(
            out["structuredContent"]["resource"]["url"],
            "mcp://tool/chat"
        );
        let text: Value =
            serde_json::from_str(out["content"][0]["text"].as_str().unwrap()).unwrap();
        assert_eq!(text, out["structuredContent"]);
    }
}
