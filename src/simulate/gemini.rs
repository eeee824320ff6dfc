//! The simulator's Gemini endpoints: generation (unary and SSE), embeddings, models, errors.
//!
//! Generation follows the reference's wire shapes (§1.3 unary, §1.7 SSE with CRLF framing and
//! running usage, §1.8 errors). What a request is answered with is planned in `plan.rs`:
//! function calls, tool-result turns and thought signatures in `agent.rs`, schema-satisfying
//! values for call arguments and structured output in `schema.rs`, media prompt tokens in
//! `media.rs`; each file's doc comment states its rules and where they follow the reference.
//! None of it shares code with the gateway's translation: a gateway bug cannot agree with itself.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{FaultPlan, SimState};
use crate::http::{Body, BodyError, bytes_response};
use plan::{CandPlan, Plan};

mod agent;
mod logprobs;
mod media;
mod plan;
mod schema;
#[cfg(test)]
mod surface_tests;
#[cfg(test)]
mod tests;

/// Models the simulator knows (generation and embedding).
const MODELS: &[(&str, &str)] = &[
    ("gemini-2.5-pro", "generateContent"),
    ("gemini-2.5-flash", "generateContent"),
    ("gemini-2.5-flash-lite", "generateContent"),
    ("gemini-3.1-flash-lite", "generateContent"),
    ("gemini-3.1-pro-preview", "generateContent"),
    ("gemini-3-flash-preview", "generateContent"),
    ("gemini-3.5-flash", "generateContent"),
    ("gemini-embedding-001", "embedContent"),
];

const WORDS: &[&str] = &[
    "the",
    "agent",
    "memory",
    "vector",
    "gateway",
    "stream",
    "token",
    "credit",
    "wallet",
    "model",
    "answer",
    "quickly",
    "reliable",
    "signal",
    "payment",
    "cache",
    "index",
    "search",
    "result",
    "plan",
    "simulation",
    "latency",
    "budget",
    "summary",
    "context",
    "recall",
    "fleet",
    "request",
    "batch",
    "proof",
];

/// A Gemini error body (pretty-printed, as Google sends it).
pub fn error(status: StatusCode, grpc: &str, message: &str) -> Response<Body> {
    error_with_details(status, grpc, message, Value::Array(Vec::new()))
}

fn error_with_details(
    status: StatusCode,
    grpc: &str,
    message: &str,
    details: Value,
) -> Response<Body> {
    let mut err = json!({"code": status.as_u16(), "message": message, "status": grpc});
    if details.as_array().is_some_and(|d| !d.is_empty()) {
        err["details"] = details;
    }
    let body = serde_json::to_vec_pretty(&json!({ "error": err })).unwrap_or_default();
    bytes_response(
        status,
        HeaderValue::from_static("application/json; charset=UTF-8"),
        body,
    )
}

fn grpc_name(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        500 => "INTERNAL",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    }
}

fn fault_response(status: u16, retry_delay_s: Option<f64>) -> Response<Body> {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (message, details) = match status {
        429 => {
            let delay = retry_delay_s.unwrap_or(2.0);
            (
                format!("You exceeded your current quota, please check your plan and billing details. Please retry in {delay}s."),
                json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{delay}s")}]),
            )
        }
        503 => ("The model is overloaded. Please try again later.".to_string(), json!([])),
        500 => ("An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting".to_string(), json!([])),
        _ => (format!("Simulated failure {status}."), json!([])),
    };
    error_with_details(code, grpc_name(status), &message, details)
}

/// `x-goog-api-key` or `?key=`; missing → 403, wrong (when a key is configured) → 400.
pub(super) fn authenticate(st: &SimState, req: &Request<Incoming>) -> Option<Response<Body>> {
    let from_header = req
        .headers()
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let from_query = crate::http::query_pairs(req.uri().query())
        .into_iter()
        .find(|(k, _)| k == "key")
        .map(|(_, v)| v);
    let Some(key) = from_header.or(from_query) else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
        ));
    };
    match &st.api_key {
        Some(expected) if *expected != key => Some(error_with_details(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
            json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]),
        )),
        _ => None,
    }
}

pub fn list_models() -> Response<Body> {
    let models: Vec<Value> = MODELS
        .iter()
        .map(|(id, method)| {
            json!({"name": format!("models/{id}"), "version": "001", "displayName": id,
                   "inputTokenLimit": 1_048_576, "outputTokenLimit": 65_536,
                   "supportedGenerationMethods": [method, "countTokens"]})
        })
        .collect();
    crate::http::json(StatusCode::OK, &json!({ "models": models }))
}

fn known(model: &str, method: &str) -> bool {
    MODELS.iter().any(|(id, m)| *id == model && *m == method)
}

/// Reads a field in camelCase or snake_case (Google accepts both).
fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake))
}

fn parts(content: &Value) -> impl Iterator<Item = &Value> {
    content
        .get("parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn texts(content: &Value) -> impl Iterator<Item = &str> {
    parts(content).filter_map(|p| p.get("text")?.as_str())
}

/// The simulator's tokenizer: a token per 4 bytes, rounded up, plus one per content block.
fn count_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

fn usage(plan: &Plan, candidates: u64, first: bool) -> Value {
    let details = plan.prompt_details_json();
    let mut u = if first {
        json!({"promptTokenCount": plan.prompt, "totalTokenCount": plan.prompt,
               "promptTokensDetails": details})
    } else {
        json!({"promptTokenCount": plan.prompt, "candidatesTokenCount": candidates,
               "totalTokenCount": plan.prompt + candidates + plan.thoughts,
               "promptTokensDetails": details,
               "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": candidates}]})
    };
    if plan.thoughts > 0 && !first {
        u["thoughtsTokenCount"] = json!(plan.thoughts);
    }
    if plan.cached > 0 {
        // Part of the prompt count, reported beside it (reference §1.6).
        u["cachedContentTokenCount"] = json!(plan.cached);
        u["cacheTokensDetails"] = json!([{"modality": "TEXT", "tokenCount": plan.cached}]);
    }
    u
}

fn candidate(parts: Vec<Value>, index: usize, finish: Option<&str>) -> Value {
    let mut content = json!({"role": "model"});
    if !parts.is_empty() {
        content["parts"] = Value::Array(parts);
    }
    let mut c = json!({ "content": content, "index": index });
    if let Some(f) = finish {
        c["finishReason"] = json!(f);
    }
    c
}

/// A unary candidate: the segments' text joined into one part, other parts after it, and the
/// `logprobsResult` of all its tokens when asked.
fn whole_candidate(cand: &CandPlan, index: usize, logprobs: Option<u64>) -> Value {
    let mut text = String::new();
    let mut others = Vec::new();
    for p in cand.segments.iter().flat_map(|s| &s.parts) {
        match p.get("text").and_then(Value::as_str) {
            Some(t) => text.push_str(t),
            None => others.push(p.clone()),
        }
    }
    let mut parts = Vec::with_capacity(others.len() + 1);
    if !text.is_empty() {
        parts.push(json!({ "text": text }));
    }
    parts.extend(others);
    let mut c = candidate(parts, index, Some(cand.finish));
    if let Some(k) = logprobs {
        let pieces: Vec<String> = cand
            .segments
            .iter()
            .flat_map(|s| s.pieces.iter().cloned())
            .collect();
        c["logprobsResult"] = logprobs::result(&pieces, index, 0, k);
    }
    c
}

fn response_id(st: &SimState) -> String {
    format!("sim{:012x}", st.served.fetch_add(1, Ordering::Relaxed))
}

pub(super) async fn generate(
    st: &Arc<SimState>,
    model: &str,
    body: &Value,
    stream: bool,
    query: Option<&str>,
) -> Response<Body> {
    if !known(model, "generateContent") {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!(
                "models/{model} is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods."
            ),
        );
    }
    let fault = st.take_fault();
    let knobs = st.knobs();
    if let Some(ms) = fault.stall_before_headers_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(status) = fault.status {
        st.served.fetch_add(1, Ordering::Relaxed);
        return fault_response(status, fault.retry_delay_s);
    }
    let mut plan = match plan::plan(model, body, &knobs) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    plan.cached = fault.cached_tokens.unwrap_or(0).min(plan.prompt);
    let id = response_id(st);
    let per_token = Duration::from_secs_f64(1.0 / f64::from(knobs.tokens_per_sec.max(1)));
    if !stream {
        let out = plan.output();
        pause(knobs.ttft + per_token * u32::try_from(out).unwrap_or(u32::MAX)).await;
        let candidates: Vec<Value> = plan
            .cands
            .iter()
            .enumerate()
            .map(|(i, c)| whole_candidate(c, i, plan.logprobs))
            .collect();
        let mut resp = json!({"candidates": candidates,
                          "usageMetadata": usage(&plan, out, false),
                          "modelVersion": model, "responseId": id});
        if fault.omit_usage {
            strip_usage(&mut resp);
        }
        let body = serde_json::to_vec_pretty(&resp).unwrap_or_default();
        return bytes_response(
            StatusCode::OK,
            HeaderValue::from_static("application/json; charset=UTF-8"),
            body,
        );
    }
    if !query.is_some_and(|q| q.split('&').any(|p| p == "alt=sse")) {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "this simulator only streams with alt=sse",
        );
    }
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BodyError>>(8);
    let model = model.to_string();
    #[expect(
        clippy::disallowed_methods,
        reason = "the simulator writes each stream from its own task"
    )]
    tokio::spawn(write_stream(
        st.clone(),
        tx,
        plan,
        fault,
        knobs.ttft,
        per_token,
        model,
        id,
    ));
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    let mut res = Response::new(StreamBody::new(stream).boxed_unsync());
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    res.headers_mut().insert(
        "content-disposition",
        HeaderValue::from_static("attachment"),
    );
    res
}

/// The stream's events before faults and pacing: thought events, then one event per segment
/// step carrying every candidate that has a segment at that step (with its `index`).
fn stream_events(plan: &Plan, fault: &FaultPlan, model: &str, id: &str) -> Vec<(Value, u64)> {
    let thought_events = fault.thought_events.unwrap_or(0);
    let steps = plan
        .cands
        .iter()
        .map(|c| c.segments.len())
        .max()
        .unwrap_or(1);
    // Thinking happens before any visible text: optional thought-summary events, then the text.
    let mut events: Vec<(Value, u64)> = Vec::with_capacity(thought_events as usize + steps);
    for j in 0..u64::from(thought_events) {
        let upto = plan.thoughts * (j + 1) / u64::from(thought_events);
        let before = plan.thoughts * j / u64::from(thought_events);
        let words: Vec<&str> = (before..upto)
            .map(|i| WORDS[(i as usize * 7 + 3) % WORDS.len()])
            .collect();
        let event = json!({
            "candidates": [{"content": {"role": "model", "parts": [{"text": format!("**Thinking** {}", words.join(" ")), "thought": true}]}, "index": 0}],
            "usageMetadata": {"promptTokenCount": plan.prompt, "thoughtsTokenCount": upto,
                              "totalTokenCount": plan.prompt + upto,
                              "promptTokensDetails": plan.prompt_details_json()},
            "modelVersion": model,
            "responseId": id,
        });
        events.push((event, words.len() as u64));
    }
    let mut sent = 0u64;
    for step in 0..steps {
        let mut candidates = Vec::new();
        let mut tokens = 0;
        for (i, cand) in plan.cands.iter().enumerate() {
            let Some(seg) = cand.segments.get(step) else {
                continue;
            };
            // This event's tokens follow those of the candidate's earlier segments.
            let steps_before: usize = cand.segments[..step].iter().map(|s| s.pieces.len()).sum();
            tokens += seg.tokens;
            let mut parts = seg.parts.clone();
            if let Some(pad) = fault.pad_event_bytes
                && !parts.iter().any(|p| p.get("functionCall").is_some())
            {
                let filler = "fleet ";
                let mut text = parts
                    .first()
                    .and_then(|p| p.get("text"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                text.push_str(&filler.repeat(pad as usize / filler.len()));
                parts = if text.is_empty() {
                    Vec::new()
                } else {
                    vec![json!({ "text": text })]
                };
            }
            let last = step + 1 == cand.segments.len();
            let mut c = candidate(parts, i, last.then_some(cand.finish));
            if let Some(k) = plan.logprobs.filter(|_| !seg.pieces.is_empty()) {
                c["logprobsResult"] = logprobs::result(&seg.pieces, i, steps_before, k);
            }
            candidates.push(c);
        }
        sent += tokens;
        // The first event carries the prompt count only (as Gemini's does), unless thoughts came
        // first; later ones the running totals, thinking included (it is over before any text).
        let first = step == 0 && step + 1 < steps && thought_events == 0;
        let event = json!({
            "candidates": candidates,
            "usageMetadata": usage(plan, sent, first),
            "modelVersion": model,
            "responseId": id,
        });
        events.push((event, tokens));
    }
    if fault.omit_usage {
        events.iter_mut().for_each(|(e, _)| strip_usage(e));
    }
    events
}

#[expect(clippy::too_many_arguments, reason = "one stream's whole script")]
async fn write_stream(
    st: Arc<SimState>,
    tx: mpsc::Sender<Result<Frame<Bytes>, BodyError>>,
    plan: Plan,
    fault: FaultPlan,
    ttft: Duration,
    per_token: Duration,
    model: String,
    id: String,
) {
    let send = |bytes: Vec<u8>| tx.send(Ok(Frame::data(Bytes::from(bytes))));
    let events = stream_events(&plan, &fault, &model, &id);
    pause(ttft).await;
    for (i, (event, tokens)) in events.into_iter().enumerate() {
        let n = i as u32;
        if fault.cut_after_chunks == Some(n) {
            let _ = tx.send(Err("simulated connection cut".into())).await;
            return;
        }
        if fault.error_after_chunks == Some(n) {
            let status = fault.error_status.unwrap_or(503);
            let tail = json!({"error": {"code": status, "message": "This model is currently experiencing high demand. Spikes in demand are usually temporary. Please try again later.", "status": grpc_name(status)}});
            let _ = send(serde_json::to_vec_pretty(&tail).unwrap_or_default()).await;
            return;
        }
        if fault.stall_after_chunks == Some(n) {
            tokio::time::sleep(Duration::from_millis(fault.stall_ms.unwrap_or(60_000))).await;
        }
        if i > 0 {
            pause(per_token * u32::try_from(tokens).unwrap_or(u32::MAX)).await;
        }
        let mut bytes = b"data: ".to_vec();
        bytes.extend_from_slice(&serde_json::to_vec(&event).unwrap_or_default());
        bytes.extend_from_slice(b"\r\n\r\n");
        if send(bytes).await.is_err() {
            return; // the client went away
        }
        st.stream_events.fetch_add(1, Ordering::Relaxed);
    }
}

/// Removes `usageMetadata` from a response (the `omit_usage` fault).
fn strip_usage(v: &mut Value) {
    if let Some(o) = v.as_object_mut() {
        o.remove("usageMetadata");
    }
}

/// A deterministic embedding: hashed word and character-trigram features. Like Gemini's
/// Matryoshka vectors it is unit length at 3072 dimensions and shorter than unit length when
/// fewer are asked for (so callers must re-normalize); unlike a plain truncation of hashed
/// features, every requested coordinate can carry signal.
pub fn embed_text(text: &str, dims: usize) -> Vec<f32> {
    const FULL: usize = 3072;
    let dims = dims.clamp(1, FULL);
    let mut v = vec![0f32; dims];
    let lower = text.to_lowercase();
    let mut add = |feature: &[u8], weight: f32| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in feature {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
        let idx = (h % dims as u64) as usize;
        v[idx] += if h >> 63 == 0 { weight } else { -weight };
    };
    for w in lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        add(w.as_bytes(), 1.0);
        let b = w.as_bytes();
        for t in b.windows(3) {
            add(t, 0.3);
        }
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        let scale = (dims as f32 / FULL as f32).sqrt() / norm;
        v.iter_mut().for_each(|x| *x *= scale);
    }
    v
}

fn dims_of(req: &Value) -> usize {
    field(req, "outputDimensionality", "output_dimensionality")
        .and_then(Value::as_u64)
        .map_or(3072, |d| d as usize)
}

pub(super) fn batch_embed(model: &str, body: &Value) -> Response<Body> {
    if !known(model, "embedContent") {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!(
                "models/{model} is not found for API version v1beta, or is not supported for batchEmbedContents."
            ),
        );
    }
    let Some(requests) = body.get("requests").and_then(Value::as_array) else {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "* BatchEmbedContentsRequest.requests: requests is required",
        );
    };
    if requests.len() > 100 {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch",
        );
    }
    let mut out = Vec::with_capacity(requests.len());
    for r in requests {
        if r.get("model").and_then(Value::as_str) != Some(&format!("models/{model}")) {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "* BatchEmbedContentsRequest.requests[].model: must match the path model",
            );
        }
        let text: String = r
            .get("content")
            .map(|c| texts(c).collect())
            .unwrap_or_default();
        out.push(json!({ "values": embed_text(&text, dims_of(r)) }));
    }
    crate::http::json(StatusCode::OK, &json!({ "embeddings": out }))
}

pub(super) fn embed_one(model: &str, body: &Value) -> Response<Body> {
    if !known(model, "embedContent") {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("models/{model} is not found for API version v1beta."),
        );
    }
    let text: String = body
        .get("content")
        .map(|c| texts(c).collect())
        .unwrap_or_default();
    crate::http::json(
        StatusCode::OK,
        &json!({ "embedding": { "values": embed_text(&text, dims_of(body)) } }),
    )
}

/// Waits `d` as the simulated model would. tokio's timer has 1 ms ticks, so a shorter wait (the
/// `--ttft-ms 0 --tokens-per-sec 1000000` benchmark setting) would become a whole millisecond
/// and phase-lock every client to the tick; it yields instead.
async fn pause(d: Duration) {
    if d >= Duration::from_millis(1) {
        tokio::time::sleep(d).await;
    } else {
        tokio::task::yield_now().await;
    }
}
