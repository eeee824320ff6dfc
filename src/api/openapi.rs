//! The OpenAPI 3.1 document served at `/openapi.json`, generated from the route table and the
//! live config.
//!
//! Each operation documents its parameters, request body and success answer (`shapes`), and every
//! error status it can give with the exact `error.code`s: those implied by the route's access, its
//! body and its flags (rate class, `Idempotency-Key`), plus those its shape adds. Response schemas
//! are in `components`.
//!
//! The live terms are in the document too: the chat body's `model` field lists each model's
//! price, the root extensions `x-vectorway-pricing`, `x-vectorway-x402` and `x-vectorway-limits`
//! carry the prices, the payment networks, `payTo` and asset, and the body cap, and every request
//! body states that cap.

mod components;
mod console;
mod responses;
mod shapes;

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::describe::{auth_text, base_url, example, group, price_text, route_code, security};
use super::routes::{Access, ROUTES, Route, RouteId};
use crate::billing::pricing::format_usd_micros;
use crate::config::Config;
use crate::crypto::to_checksum;
use crate::ratelimit::RateClass;
pub use shapes::shape;
use shapes::{Answer, Shape, r};

/// Error codes by status.
type Codes = BTreeMap<u16, Vec<&'static str>>;

fn add(codes: &mut Codes, status: u16, list: &[&'static str]) {
    let have = codes.entry(status).or_default();
    for code in list {
        if !have.contains(code) {
            have.push(code);
        }
    }
}

/// True for routes that take an x402 payment.
fn takes_payment(a: Access) -> bool {
    matches!(a, Access::Payer | Access::X402)
}

/// Every error code a route can answer with, by status.
pub fn error_codes(route: &Route, s: &Shape) -> Codes {
    let mut codes = Codes::new();
    let a = route.access;
    if s.typed_body {
        add(&mut codes, 400, &["invalid_json", "invalid_body"]);
        add(&mut codes, 413, &["body_too_large"]);
        add(&mut codes, 422, &["validation_error"]);
    }
    // `x-api-key` and a different `Bearer vw_…` key are ambiguous.
    if matches!(
        a,
        Access::Payer | Access::ApiKey | Access::KeyOrJwt | Access::KeyJwtOrSiwe
    ) {
        add(&mut codes, 400, &["ambiguous_payment"]);
        add(&mut codes, 401, &["invalid_api_key"]);
    }
    if matches!(a, Access::ApiKey | Access::Jwt | Access::KeyOrJwt) {
        add(&mut codes, 401, &["missing_credentials"]);
    }
    if matches!(a, Access::Jwt | Access::KeyOrJwt | Access::KeyJwtOrSiwe) {
        add(&mut codes, 401, &["invalid_token"]);
    }
    if a == Access::Admin {
        add(&mut codes, 401, &["invalid_admin_secret"]);
    }
    if takes_payment(a) {
        add(
            &mut codes,
            400,
            &[
                "invalid_payment_header",
                "ambiguous_payment",
                "x402_authorization_expired",
            ],
        );
        add(&mut codes, 409, &["x402_nonce_reused"]);
        add(&mut codes, 502, &["x402_facilitator_error"]);
        add(
            &mut codes,
            503,
            &["x402_verifier_busy", "x402_verifier_unavailable"],
        );
    }
    if a == Access::X402 {
        add(&mut codes, 429, &["rate_limited"]);
    }
    if route.class != RateClass::None {
        add(&mut codes, 429, &["rate_limited"]);
    }
    // A request that reaches the router without a caller draws from its client IP's bucket.
    if !matches!(
        a,
        Access::Admin | Access::ApiKey | Access::Jwt | Access::KeyOrJwt
    ) {
        add(&mut codes, 429, &["rate_limited"]);
    }
    if route.idempotent {
        add(&mut codes, 409, &["idempotency_conflict"]);
        add(&mut codes, 422, &["validation_error"]);
    }
    for (status, list) in &s.errors {
        add(&mut codes, *status, list);
    }
    // A route that reads a body (and so can refuse a large one) also times out a slow one.
    if codes.contains_key(&413) {
        add(&mut codes, 408, &["request_timeout"]);
    }
    // Everything but the stateless public reads touches the store (which, on PostgreSQL, may be
    // out of reach for a while).
    if a != Access::Public || s.body.is_some() {
        add(&mut codes, 500, &["internal_error"]);
        add(&mut codes, 503, &["store_unavailable"]);
    }
    // The LLM-for-Agents aliases name some errors as that document does.
    for list in codes.values_mut() {
        for code in list.iter_mut() {
            *code = route_code(route.id, code);
        }
    }
    codes
}

/// An error response whose `error.code` is one of `codes`.
fn error_response(status: u16, codes: &[&str]) -> Value {
    let list = codes
        .iter()
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let schema = json!({"allOf": [r("Error"), {"properties": {"error": {"properties": {"code": {"enum": codes}}}}}]});
    let mut res = json!({
        "description": format!("Error (OpenAI shape), `error.code` one of {list}."),
        "content": {"application/json": {"schema": schema}},
    });
    if status == 429 {
        res["headers"] = json!({"Retry-After": {"required": true, "description": "Seconds to wait.",
            "schema": {"type": "integer", "minimum": 1}}});
    }
    res
}

fn parameters(route: &Route, s: &Shape) -> Vec<Value> {
    let mut params: Vec<Value> = route
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            let schema = if name == "wallet" {
                json!({"type": "string", "pattern": shapes::WALLET})
            } else {
                json!({"type": "string", "minLength": 1})
            };
            json!({"name": name, "in": "path", "required": true, "schema": schema})
        })
        .collect();
    for p in &s.params {
        params.push(
            json!({"name": p.name, "in": p.location, "required": p.required,
                           "schema": p.schema, "description": p.description}),
        );
    }
    if route.idempotent {
        params.push(json!({"name": "Idempotency-Key", "in": "header", "required": false,
            "description": "Replays the first answer for the same key and body; another body is 409.",
            "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"}}));
    }
    params
}

fn operation(route: &Route, s: &Shape, body_limit: usize) -> Value {
    let mut responses = Map::new();
    let (status, ok) = match &s.answer {
        Answer::Json(status, schema) => (
            *status,
            json!({"description": "Success", "content": {"application/json": {"schema": schema}}}),
        ),
        Answer::JsonOrStream(schema) => (
            200,
            json!({"description": "Success: JSON, or server-sent events with `\"stream\": true`.",
                   "content": {"application/json": {"schema": schema},
                               "text/event-stream": {"schema": r("ChatStreamEvent")}}}),
        ),
        Answer::JsonOrEvents(schema, events) => (
            200,
            json!({"description": "Success: JSON, or typed server-sent events with `\"stream\": true`.",
                   "content": {"application/json": {"schema": schema},
                               "text/event-stream": {"schema": events}}}),
        ),
        Answer::Text(media) => (
            200,
            json!({"description": "The document", "content": {*media: {"schema": {"type": "string"}}}}),
        ),
    };
    responses.insert(status.to_string(), ok);
    for (status, description, schema) in &s.also {
        let mut res = json!({ "description": description });
        if !schema.is_null() {
            res["content"] = json!({"application/json": {"schema": schema}});
        }
        responses.insert(status.to_string(), res);
    }
    let codes = error_codes(route, s);
    for (status, list) in &codes {
        let error = error_response(*status, list);
        match responses.get_mut(&status.to_string()) {
            // A status that is also a non-error answer: either body.
            Some(other) => {
                let both = json!({"anyOf": [other["content"]["application/json"]["schema"].take(),
                    error["content"]["application/json"]["schema"].clone()]});
                other["content"]["application/json"]["schema"] = both;
            }
            None => {
                responses.insert(status.to_string(), error);
            }
        }
    }
    if takes_payment(route.access) {
        let challenge = r("X402Challenge");
        let mut res = json!({
            "description": "Payment required: x402 requirements (v1 body, v2 `PAYMENT-REQUIRED` header).",
            "content": {"application/json": {"schema": challenge}},
        });
        match codes.get(&402) {
            // An API-key caller out of credits gets an OpenAI error instead.
            Some(list) => {
                res["content"]["application/json"]["schema"] = json!({"anyOf": [
                    r("X402Challenge"), error_response(402, list)["content"]["application/json"]["schema"].clone()]});
            }
            None => {
                res["headers"] = json!({"PAYMENT-REQUIRED": {"required": true,
                    "description": "The v2 payment requirements, base64 JSON.", "schema": {"type": "string"}}});
            }
        }
        responses.insert("402".into(), res);
    }
    let mut op = json!({
        "operationId": route.name,
        "summary": route.summary,
        "description": auth_text(route.access),
        "tags": [group(route.id).unwrap_or("Operator")],
        "security": security(route.access),
        "responses": responses,
    });
    let params = parameters(route, s);
    if !params.is_empty() {
        op["parameters"] = Value::Array(params);
    }
    if let Some(body) = &s.body {
        let mut media = json!({ "schema": body });
        if let Some(ex) = example(route.id).and_then(|e| serde_json::from_str::<Value>(e).ok()) {
            media["example"] = ex;
        }
        op["requestBody"] = json!({"required": true, "content": {"application/json": media},
            "description": format!("At most {body_limit} bytes; a larger body is 413 `body_too_large`.")});
    }
    op
}

/// `info.description`: what the gateway is and its live terms, for readers of the spec alone.
fn summary(c: &Config) -> String {
    let prices: Vec<String> = c.prices.all().iter().map(price_text).collect();
    let networks: Vec<String> = c
        .x402
        .networks
        .iter()
        .map(|n| format!("`{}` (USDC `{}`)", n.caip2, to_checksum(&n.asset)))
        .collect();
    format!(
        "OpenAI-compatible Gemini gateway with x402, credits and wallet memory.\n\nPrices (1 credit = 1 atomic USDC = $0.000001): {}.\n\nx402: pay `{}` on {}. Request bodies: at most {} bytes ({} on the chat, responses and MCP routes, for media).",
        prices.join("; "),
        to_checksum(&c.x402.pay_to),
        networks.join(", "),
        c.body_limit,
        c.chat_body_limit()
    )
}

/// `x-vectorway-pricing`: every model with its marked-up price per 1M tokens, in USD and credits.
fn pricing(c: &Config) -> Value {
    let models: Vec<Value> = c
        .prices
        .all()
        .iter()
        .map(|m| {
            let mut v = json!({
                "id": m.id, "aliases": m.aliases,
                "inputUsdPer1M": format_usd_micros(m.input), "outputUsdPer1M": format_usd_micros(m.output),
                "inputCreditsPer1M": m.input, "outputCreditsPer1M": m.output,
                "contextLength": m.context_length, "maxOutputTokens": m.max_output_tokens,
            });
            if let Some((above, input, output)) = m.long {
                v["longContext"] = json!({"aboveTokens": above,
                    "inputUsdPer1M": format_usd_micros(input), "outputUsdPer1M": format_usd_micros(output),
                    "inputCreditsPer1M": input, "outputCreditsPer1M": output});
            }
            v
        })
        .collect();
    json!({"unit": "1 credit = 1 atomic USDC = $0.000001; a call costs ceil((prompt·input + completion·output) / 1e6) credits",
           "models": models})
}

/// `x-vectorway-x402`: where x402 payments go, on which networks, in which asset.
fn x402_terms(c: &Config) -> Value {
    let networks: Vec<Value> = c
        .x402
        .networks
        .iter()
        .map(|n| {
            json!({"name": &*n.name, "network": &*n.caip2, "chainId": n.chain_id,
                   "asset": to_checksum(&n.asset), "extra": {"name": &*n.eip712_name, "version": &*n.eip712_version}})
        })
        .collect();
    json!({"scheme": "exact", "payTo": to_checksum(&c.x402.pay_to), "networks": networks,
           "minQuoteAtomic": c.x402.min_quote.to_string()})
}

/// The document, pretty-printed.
pub fn document(c: &Config) -> String {
    let mut paths = Map::new();
    for route in ROUTES {
        let s = shape(route.id, c);
        let path = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        let limit = match route.id {
            RouteId::Chat | RouteId::Responses | RouteId::Mcp => c.chat_body_limit(),
            _ => c.body_limit,
        };
        path[route.method.to_ascii_lowercase()] = operation(route, &s, limit);
    }
    let spec = json!({
        "openapi": "3.1.0",
        "info": {"title": "Vectorway", "version": env!("CARGO_PKG_VERSION"), "description": summary(c)},
        "servers": [{"url": base_url(c)}],
        "x-vectorway-pricing": pricing(c),
        "x-vectorway-x402": x402_terms(c),
        "x-vectorway-limits": {"bodyLimitBytes": c.body_limit, "chatBodyLimitBytes": c.chat_body_limit(), "runtimePerMin": c.limits.runtime_per_min,
                               "controlPerMin": c.limits.control_per_min,
                               "ipPerMin": c.limits.ip_per_min, "ipBurst": c.limits.ip_burst,
                               "agentRegistrationsPerMin": c.agents.register_per_min,
                               "agentDepositDeadlineMs": c.agents.deposit_deadline.as_millis() as u64,
                               "bodyReadTimeoutMs": c.body_read_timeout.as_millis() as u64},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "x402": {"type": "apiKey", "in": "header", "name": "PAYMENT-SIGNATURE", "description": "x402 v2 payment (base64 JSON)"},
                "x402v1": {"type": "apiKey", "in": "header", "name": "X-PAYMENT", "description": "x402 v1 payment (base64 JSON)"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "apiKeyBearer": {"type": "http", "scheme": "bearer", "description": "vw_… API key as a bearer token (OpenAI SDKs)"},
                "jwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "admin": {"type": "apiKey", "in": "header", "name": "X-Admin-Secret"},
            },
            "schemas": components::schemas(),
        },
    });
    serde_json::to_string_pretty(&spec).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_and_every_reference_resolves() {
        let c = Config::for_tests(std::path::Path::new("/nonexistent"), "http://127.0.0.1:9");
        let doc = document(&c);
        let spec: Value = serde_json::from_str(&doc).unwrap_or_default();
        for route in ROUTES {
            let op = &spec["paths"][route.path][route.method.to_ascii_lowercase()];
            assert!(
                op["responses"].is_object(),
                "{} {}",
                route.method,
                route.path
            );
            // Every operation that can fail says with which codes.
            let errors = op["responses"].as_object().map_or(0, |r| {
                r.keys()
                    .filter(|k| k.starts_with('4') || k.starts_with('5'))
                    .count()
            });
            let public_read = route.access == Access::Public && route.method == "GET";
            assert!(public_read || errors > 0, "{} {}", route.method, route.path);
        }
        let schemas = components::schemas();
        for (i, _) in doc.match_indices("#/components/schemas/") {
            let name: String = doc[i + 21..]
                .chars()
                .take_while(|ch| ch.is_ascii_alphanumeric())
                .collect();
            assert!(schemas.contains_key(&name), "unknown schema {name}");
        }
    }

    /// Any two distinct entries of a documented `models` list name two distinct models: a list
    /// with a model and its `gemini/` alias is schema-valid nowhere, since the gateway refuses it.
    #[test]
    fn documented_fallback_lists_never_name_one_model_twice() {
        let c = Config::for_tests(std::path::Path::new("/nonexistent"), "http://127.0.0.1:9");
        let spec: Value = serde_json::from_str(&document(&c)).unwrap();
        assert!(c.prices.all().iter().any(|m| !m.aliases.is_empty()));
        for path in ["/v1/chat/completions", "/v1/responses"] {
            let body = &spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"];
            let models = &body["properties"]["models"];
            assert_eq!(models["uniqueItems"], true, "{path}");
            let ids = models["items"]["enum"].as_array().unwrap();
            let resolved: std::collections::HashSet<&str> = ids
                .iter()
                .map(|id| c.prices.get(id.as_str().unwrap()).unwrap().id.as_str())
                .collect();
            assert_eq!(resolved.len(), ids.len(), "{path}: {ids:?}");
            // `model` still takes the aliases.
            let model = body["properties"]["model"]["enum"].as_array().unwrap();
            assert!(model.len() > ids.len(), "{path}");
        }
    }

    #[test]
    fn the_spec_carries_the_live_prices_payment_terms_and_body_cap() {
        let mut c = Config::for_tests(std::path::Path::new("/nonexistent"), "http://127.0.0.1:9");
        c.body_limit = 424_242;
        let spec: Value = serde_json::from_str(&document(&c)).unwrap();
        let listed = spec["x-vectorway-pricing"]["models"].as_array().unwrap();
        let chat = &spec["paths"]["/v1/chat/completions"]["post"]["requestBody"];
        let model =
            chat["content"]["application/json"]["schema"]["properties"]["model"]["description"]
                .as_str()
                .unwrap();
        assert_eq!(listed.len(), c.prices.all().len());
        for m in c.prices.all() {
            let entry = listed.iter().find(|v| v["id"] == m.id.as_str()).unwrap();
            assert_eq!(entry["inputCreditsPer1M"], m.input, "{}", m.id);
            assert_eq!(entry["outputCreditsPer1M"], m.output, "{}", m.id);
            assert_eq!(entry["inputUsdPer1M"], format_usd_micros(m.input).as_str());
            assert!(model.contains(&price_text(m)), "{}", m.id);
        }
        let x402 = &spec["x-vectorway-x402"];
        assert_eq!(x402["payTo"], to_checksum(&c.x402.pay_to).as_str());
        let networks = x402["networks"].as_array().unwrap();
        assert_eq!(networks.len(), c.x402.networks.len());
        for (n, v) in c.x402.networks.iter().zip(networks) {
            assert_eq!(v["network"], *n.caip2);
            assert_eq!(v["asset"], to_checksum(&n.asset).as_str());
        }
        assert_eq!(spec["x-vectorway-limits"]["bodyLimitBytes"], 424_242);
        // The chat routes take media: their own cap, derived from `media.max_total_bytes`.
        let chat_limit = c.chat_body_limit();
        assert_eq!(
            chat_limit,
            (c.media.max_total_bytes.div_ceil(3) * 4) + 424_242
        );
        assert_eq!(spec["x-vectorway-limits"]["chatBodyLimitBytes"], chat_limit);
        assert!(
            chat["description"]
                .as_str()
                .unwrap()
                .contains(&chat_limit.to_string())
        );
        let responses = &spec["paths"]["/v1/responses"]["post"]["requestBody"]["description"];
        assert!(
            responses
                .as_str()
                .unwrap()
                .contains(&chat_limit.to_string())
        );
        let embeddings = &spec["paths"]["/v1/embeddings"]["post"]["requestBody"]["description"];
        assert!(embeddings.as_str().unwrap().contains("424242"));
    }
}
