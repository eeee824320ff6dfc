//! `POST /v1/chat/completions`: parse → price → hold → Gemini → answer → commit → usage event.
//!
//! The hold is a guard: whatever happens after it is taken (an upstream error, the client going
//! away, a panic), it ends exactly once. Streaming answers are relayed frame by frame by
//! `stream::ChatStream`, which owns the hold and settles it when the stream ends or is dropped.

pub mod stream;

/// Status recorded for a call whose client disconnected (nginx's convention).
pub const CLIENT_CLOSED: u16 = 499;

use std::sync::Arc;
use std::time::Instant;

use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde::Serialize;

use super::types::{ChatRequest, parse_chat};
use super::{Ctx, ReqBody, State};
use crate::auth::{AuthError, AuthMode};
use crate::billing::pricing::ModelPrice;
use crate::error::{Error, RequestError};
use crate::http::{Body, EVENT_STREAM, json, read_body};
use crate::storage::journal::JournalOp;
use crate::storage::{UsageEvent, now_ms};
use crate::upstream::{Completion, GeminiStream, TokenUsage, UpstreamError};
use crate::wallet::Wallet;

/// Records the usage event of one call, whatever its outcome.
#[derive(Clone)]
pub struct Meter {
    state: Arc<State>,
    wallet: Wallet,
    key_id: Option<String>,
    mode: AuthMode,
    request_id: String,
    started: Instant,
    model: Option<String>,
}

impl Meter {
    /// Journals the event (group commit; never blocks the answer).
    pub fn record(&self, status: u16, credits: u64, usage: Option<&TokenUsage>) {
        let seq = match self.state.store.next_seq() {
            Ok(s) => s,
            Err(e) => return tracing::error!(%e, "usage event lost: no sequence number"),
        };
        let ev = UsageEvent {
            seq,
            ts_ms: now_ms(),
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            status,
            latency_ms: self.started.elapsed().as_millis() as u64,
            credits,
            usd_cost: None,
            model: self.model.clone(),
            prompt_tokens: usage.map_or(0, |u| u.prompt),
            completion_tokens: usage.map_or(0, |u| u.completion),
            memory_read: false,
            memory_write: false,
            memories_used: 0,
            key_id: self.key_id.clone(),
            auth_mode: self.mode.as_str().into(),
            request_id: self.request_id.clone(),
        };
        if let Some(u) = usage {
            metrics::counter!("vectorway_tokens_total", "kind" => "prompt").increment(u.prompt);
            metrics::counter!("vectorway_tokens_total", "kind" => "completion")
                .increment(u.completion);
        }
        self.state
            .billing
            .journal()
            .push(JournalOp::Usage(self.wallet, Box::new(ev)));
    }
}

/// The Vectorway `usage` object: OpenAI's fields plus memory and cost fields.
#[derive(Debug, Serialize)]
pub struct UsageOut<'a> {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub prompt_tokens_details: CachedDetails,
    pub completion_tokens_details: ReasoningDetails,
    pub memories_used: u32,
    pub memory_read: bool,
    pub memory_write: bool,
    pub model: &'a str,
    pub summarize_prompt_tokens: u64,
    pub summarize_completion_tokens: u64,
    pub credit_cost: Option<u64>,
    pub usd_cost: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct CachedDetails {
    pub cached_tokens: u64,
}

#[derive(Debug, Serialize)]
pub struct ReasoningDetails {
    pub reasoning_tokens: u64,
}

impl<'a> UsageOut<'a> {
    pub fn new(u: &TokenUsage, model: &'a str, credit_cost: u64) -> Self {
        Self {
            prompt_tokens: u.prompt,
            completion_tokens: u.completion,
            total_tokens: u.total(),
            prompt_tokens_details: CachedDetails {
                cached_tokens: u.cached,
            },
            completion_tokens_details: ReasoningDetails {
                reasoning_tokens: u.reasoning,
            },
            memories_used: 0,
            memory_read: false,
            memory_write: false,
            model,
            summarize_prompt_tokens: 0,
            summarize_completion_tokens: 0,
            credit_cost: Some(credit_cost),
            usd_cost: None,
        }
    }
}

#[derive(Serialize)]
struct CompletionOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChoiceOut<'a>; 1],
    usage: UsageOut<'a>,
    output_text: &'a str,
    system_fingerprint: Option<&'static str>,
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    index: u32,
    message: MessageOut<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct MessageOut<'a> {
    role: &'static str,
    content: &'a str,
    refusal: Option<()>,
    annotations: [(); 0],
}

/// A completion id: Gemini's response id when it gave one.
pub fn completion_id(response_id: Option<&str>, request_id: &str) -> String {
    match response_id {
        Some(r) if !r.is_empty() => format!("chatcmpl-{r}"),
        _ => format!("chatcmpl-{}", request_id.trim_start_matches("req_")),
    }
}

pub async fn completions(ctx: Ctx, req: Request<ReqBody>) -> Result<Response<Body>, Error> {
    let principal = ctx.principal.clone().ok_or(AuthError::MissingCredentials)?;
    let state = ctx.state.clone();
    let meter = Meter {
        state: state.clone(),
        wallet: principal.wallet,
        key_id: principal.key_id.clone(),
        mode: principal.mode,
        request_id: ctx.request_id.clone(),
        started: ctx.started,
        model: None,
    };
    // If the client goes away, hyper drops this future; the guard still records the call.
    let mut guard = Unfinished { meter: Some(meter) };
    let result = match guard.meter.as_mut() {
        Some(meter) => run(&ctx, meter, req).await,
        None => return Err(AuthError::MissingCredentials.into()),
    };
    if let (Err(e), Some(meter)) = (&result, guard.meter.as_ref()) {
        meter.record(e.status().as_u16(), 0, None);
    }
    guard.meter = None;
    result
}

/// Records a call that never finished (the client disconnected mid-request) as status 499.
struct Unfinished {
    meter: Option<Meter>,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(m) = self.meter.take() {
            m.record(CLIENT_CLOSED, 0, None);
        }
    }
}

/// The models to try, in order; every one must exist and accept `max_tokens`.
fn resolve(state: &State, req: &ChatRequest) -> Result<Vec<ModelPrice>, Error> {
    let mut out = Vec::with_capacity(req.models.len());
    for id in &req.models {
        let model = match state.config.prices.get(id) {
            Some(m) => m,
            None if req.fallback => {
                return Err(RequestError::validation(
                    "models",
                    format!("unknown model '{id}'; GET /v1/models lists them"),
                )
                .into());
            }
            None => return Err(RequestError::ModelNotFound(id.clone()).into()),
        };
        if let Some(max) = req.max_tokens
            && max > model.max_output_tokens
        {
            return Err(RequestError::validation(
                "max_tokens",
                format!(
                    "{} allows at most {} output tokens",
                    model.id, model.max_output_tokens
                ),
            )
            .into());
        }
        out.push(model.clone());
    }
    Ok(out)
}

/// Upstream failures after which the next model of a fallback list is tried.
fn try_next_model(e: &UpstreamError) -> bool {
    matches!(
        e,
        UpstreamError::RateLimited { .. }
            | UpstreamError::Unavailable { .. }
            | UpstreamError::Connect(_)
            | UpstreamError::Timeout(_)
    )
}

/// What the upstream gave back.
enum Answer {
    Whole(Completion),
    Stream(GeminiStream),
}

async fn run(ctx: &Ctx, meter: &mut Meter, req: Request<ReqBody>) -> Result<Response<Body>, Error> {
    let state = &ctx.state;
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts.headers, body, state.config.body_limit).await?;
    let chat = parse_chat(&bytes)?;
    let models = resolve(state, &chat)?;
    let default_max = state.config.default_max_tokens;
    // A fallback list holds the most expensive model's worst case.
    let worst = models
        .iter()
        .map(|m| chat.worst_case(m, default_max))
        .max()
        .unwrap_or(0);
    meter.model = models.first().map(|m| m.id.clone());
    let hold = state.billing.reserve(meter.wallet, worst)?;
    for (i, model) in models.iter().enumerate() {
        meter.model = Some(model.id.clone());
        let call = chat.to_call(model, default_max);
        let started = Instant::now();
        let answer = if chat.stream {
            let r = state.gemini.stream(&call).await.map(Answer::Stream);
            metrics::histogram!("vectorway_upstream_first_byte_seconds")
                .record(started.elapsed().as_secs_f64());
            r
        } else {
            let r = state.gemini.generate(&call).await.map(Answer::Whole);
            metrics::histogram!("vectorway_upstream_duration_seconds")
                .record(started.elapsed().as_secs_f64());
            r
        };
        match answer {
            Ok(Answer::Stream(upstream)) => {
                let id = completion_id(None, &ctx.request_id);
                let body = stream::ChatStream::new(
                    upstream,
                    hold,
                    meter.clone(),
                    model.clone(),
                    id,
                    chat.include_usage,
                );
                let mut res = Response::new(body.boxed_unsync());
                res.headers_mut().insert(CONTENT_TYPE, EVENT_STREAM);
                res.headers_mut().insert(
                    HeaderName::from_static("cache-control"),
                    HeaderValue::from_static("no-cache"),
                );
                stamp(&mut res, model);
                return Ok(res);
            }
            Ok(Answer::Whole(completion)) => {
                let cost = model.cost(completion.usage.prompt, completion.usage.completion);
                let charged = hold.commit(cost, Some(ctx.request_id.clone()));
                meter.record(200, charged, Some(&completion.usage));
                let mut res = unary_response(ctx, model, &completion, charged);
                stamp(&mut res, model);
                return Ok(res);
            }
            Err(e) if try_next_model(&e) && i + 1 < models.len() => {
                metrics::counter!("vectorway_model_fallbacks_total").increment(1);
                tracing::info!(model = %model.id, error = %e, "falling back to the next model");
            }
            // On error the hold drops: released, nothing charged.
            Err(e) => return Err(e.into()),
        }
    }
    Err(RequestError::validation("models", "no model to try").into())
}

fn stamp(res: &mut Response<Body>, model: &ModelPrice) {
    if let Ok(v) = HeaderValue::from_str(&model.id) {
        res.headers_mut()
            .insert(HeaderName::from_static("x-model-used"), v);
    }
}

fn unary_response(ctx: &Ctx, model: &ModelPrice, c: &Completion, charged: u64) -> Response<Body> {
    let id = completion_id(c.response_id.as_deref(), &ctx.request_id);
    let out = CompletionOut {
        id: &id,
        object: "chat.completion",
        created: now_ms() / 1000,
        model: &model.id,
        choices: [ChoiceOut {
            index: 0,
            message: MessageOut {
                role: "assistant",
                content: &c.text,
                refusal: None,
                annotations: [],
            },
            logprobs: None,
            finish_reason: c.finish.as_openai(),
        }],
        usage: UsageOut::new(&c.usage, &model.id, charged),
        output_text: &c.text,
        system_fingerprint: None,
    };
    json(StatusCode::OK, &out)
}
