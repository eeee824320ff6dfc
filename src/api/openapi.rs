//! The OpenAPI 3.1 document served at `/openapi.json`, generated from the route table and the
//! live config.
//!
//! Each operation documents its parameters, request body and success answer (`shapes`), and every
//! error status it can give with the exact `error.code`s: those implied by the route's access, its
//! body and its flags (rate class, `Idempotency-Key`), plus those its shape adds. Response schemas
//! are in `components`.

mod components;
mod shapes;

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::discovery::{auth_text, base_url, example, group, security};
use super::routes::{Access, ROUTES, Route};
use crate::config::Config;
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
    if route.idempotent {
        add(&mut codes, 409, &["idempotency_conflict"]);
        add(&mut codes, 422, &["validation_error"]);
    }
    for (status, list) in &s.errors {
        add(&mut codes, *status, list);
    }
    // Everything but the stateless public reads touches the store.
    if a != Access::Public || s.body.is_some() {
        add(&mut codes, 500, &["internal_error"]);
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

fn operation(route: &Route, s: &Shape) -> Value {
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
        op["requestBody"] = json!({"required": true, "content": {"application/json": media}});
    }
    op
}

/// The document, pretty-printed.
pub fn document(c: &Config) -> String {
    let mut paths = Map::new();
    for route in ROUTES {
        let s = shape(route.id, c);
        let path = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        path[route.method.to_ascii_lowercase()] = operation(route, &s);
    }
    let spec = json!({
        "openapi": "3.1.0",
        "info": {"title": "Vectorway", "version": env!("CARGO_PKG_VERSION"), "description": "OpenAI-compatible Gemini gateway with x402, credits and wallet memory."},
        "servers": [{"url": base_url(c)}],
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
}
