//! `POST /v1/chat/completions`: parse → price → pay (hold or x402) → Gemini → answer → settle →
//! usage event.
//!
//! The payment is a guard: whatever happens after it is taken (an upstream error, the client
//! going away, a panic), it ends exactly once. Streaming answers are relayed frame by frame by
//! `stream::ChatStream`, which owns the payment and settles it when the stream ends or is dropped.
//! A request with an API key pays from credits; one with an x402 header pays per call; one with
//! neither gets the 402 price.

pub mod payer;
pub mod render;
pub mod stream;

/// The route, as x402 requirements name it.
pub const PATH: &str = "/v1/chat/completions";
const DESCRIPTION: &str = "vectorway chat completion (Gemini), priced at its worst case";

/// The route a chat call came in on: what its x402 requirements and usage events name. Chat
/// completions and the Responses API (`api::responses`) serve one pipeline under two surfaces.
#[derive(Debug, Clone, Copy)]
pub struct Surface {
    pub path: &'static str,
    pub description: &'static str,
}

/// `POST /v1/chat/completions`.
pub const CHAT: Surface = Surface {
    path: PATH,
    description: DESCRIPTION,
};

/// Status recorded for a call whose client disconnected (nginx's convention).
pub const CLIENT_CLOSED: u16 = 499;

use std::sync::Arc;
use std::time::Instant;

use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Request, Response};
use http_body_util::BodyExt;
use serde::Serialize;

use super::memory::{self, Remember};
use super::types::{ChatRequest, parse_chat_owned};
use super::{Ctx, ReqBody, State, journal_usage, pay, settle};
use crate::auth::{AuthError, AuthMode};
use crate::billing::pricing::ModelPrice;
use crate::error::{Error, RequestError};
use crate::http::{Body, EVENT_STREAM, read_body};
use crate::memory::QueryEmbedding;
use crate::ratelimit::RateClass;
use crate::storage::UsageEvent;
use crate::storage::intents::IntentPurpose;
use crate::upstream::{Completion, GeminiStream, TokenUsage, UpstreamError};
use crate::wallet::Wallet;
use payer::{Payer, X402};

/// What memory did for a call (reported in `usage` and the usage event).
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryUse {
    pub used: u32,
    pub read: bool,
    pub write: bool,
}

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
    memory: MemoryUse,
    /// The route the call came in on.
    path: &'static str,
}

impl Meter {
    fn new(
        ctx: &Ctx,
        wallet: Wallet,
        key_id: Option<String>,
        mode: AuthMode,
        model: &str,
        path: &'static str,
    ) -> Self {
        Self {
            path,
            state: ctx.state.clone(),
            wallet,
            key_id,
            mode,
            request_id: ctx.request_id.clone(),
            started: ctx.started,
            model: Some(model.to_string()),
            memory: MemoryUse::default(),
        }
    }

    /// Journals the event (group commit; never blocks the answer). `credits` is what the call
    /// kept: credits on the API-key path, atomic USDC on x402.
    pub fn record(&self, status: u16, credits: u64, usage: Option<&TokenUsage>) {
        self.record_paid(status, credits, usage, None);
    }

    /// `record` for an x402 call, naming the transaction its payment settled in.
    pub fn record_paid(
        &self,
        status: u16,
        credits: u64,
        usage: Option<&TokenUsage>,
        transaction: Option<String>,
    ) {
        let ev = UsageEvent {
            method: "POST".into(),
            path: self.path.into(),
            status,
            latency_ms: self.started.elapsed().as_millis() as u64,
            credits,
            usd_cost: (self.mode == AuthMode::X402 && credits > 0).then(|| pay::usd(credits)),
            model: self.model.clone(),
            prompt_tokens: usage.map_or(0, |u| u.prompt),
            completion_tokens: usage.map_or(0, |u| u.completion),
            memory_read: self.memory.read,
            memory_write: self.memory.write,
            memories_used: self.memory.used,
            key_id: self.key_id.clone(),
            auth_mode: self.mode.as_str().into(),
            request_id: self.request_id.clone(),
            transaction,
            ..UsageEvent::default()
        };
        if let Some(u) = usage {
            metrics::counter!("vectorway_tokens_total", "kind" => "prompt").increment(u.prompt);
            metrics::counter!("vectorway_tokens_total", "kind" => "completion")
                .increment(u.completion);
        }
        journal_usage(&self.state, self.wallet, ev);
    }
}

/// What a call that reported no usage is billed at: the prompt's bound (what its hold or quote
/// was priced at, recalled memories included) and at most the completion cap.
#[derive(Debug, Clone, Copy)]
pub struct UsageBound {
    pub prompt: u64,
    pub completion: u64,
}

/// The usage a call that reached the model (Gemini answered 200) is billed at: the last usage
/// Gemini reported, thinking included; when it reported none (a prompt is never 0 tokens), the
/// prompt at its bound and the completion at one token per 4 bytes of text and thoughts
/// received, at most the completion cap. Never 0, and never more than the hold.
pub fn billed_usage(
    reported: Option<TokenUsage>,
    bound: &UsageBound,
    text_bytes: u64,
    thought_bytes: u64,
) -> TokenUsage {
    match reported {
        Some(u) if u.prompt > 0 => u,
        _ => {
            let completion = (text_bytes + thought_bytes)
                .div_ceil(4)
                .min(bound.completion);
            TokenUsage {
                prompt: bound.prompt,
                completion,
                reasoning: thought_bytes.div_ceil(4).min(completion),
                cached: 0,
            }
        }
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
    pub fn new(
        u: &TokenUsage,
        model: &'a str,
        (credit_cost, usd_cost): (Option<u64>, Option<String>),
        mem: MemoryUse,
    ) -> Self {
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
            memories_used: mem.used,
            memory_read: mem.read,
            memory_write: mem.write,
            model,
            summarize_prompt_tokens: 0,
            summarize_completion_tokens: 0,
            credit_cost,
            usd_cost,
        }
    }
}

/// A completion id: Gemini's response id when it gave one.
pub fn completion_id(response_id: Option<&str>, request_id: &str) -> String {
    match response_id {
        Some(r) if !r.is_empty() => format!("chatcmpl-{r}"),
        _ => format!("chatcmpl-{}", request_id.trim_start_matches("req_")),
    }
}

pub async fn completions(ctx: Ctx, req: Request<ReqBody>) -> Result<Response<Body>, Error> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts.headers, body, ctx.state.config.chat_body_limit()).await?;
    let mut chat = parse_chat_owned(bytes)?;
    serve(ctx, &parts, &mut chat, CHAT).await
}

/// Serves a parsed chat request that came in on `surface`: price → pay → recall → model(s) →
/// answer → settle. `parts` are the request's head (its payment headers).
pub async fn serve(
    ctx: Ctx,
    parts: &http::request::Parts,
    chat: &mut ChatRequest,
    surface: Surface,
) -> Result<Response<Body>, Error> {
    let state = ctx.state.clone();
    let (path, description) = (surface.path, surface.description);
    let models = resolve(&state, chat)?;
    // An authenticated (and rate-limited) caller's memory query is embedded while media, the
    // credit hold and the upstream request are prepared; an x402 caller's only once its payment
    // is verified, so that an unpaid request makes the model do nothing.
    let early = ctx.principal.is_some();
    let mut query = if early {
        memory::start_recall(&state, chat)
    } else {
        None
    };
    // Image URLs are fetched (and every media part checked) before anything is priced or paid.
    super::media::prepare(&state, chat).await?;
    let chat: &ChatRequest = chat;
    let first = models.first().map(|m| m.id.clone()).unwrap_or_default();
    let (payer, meter) = match ctx.principal.clone() {
        Some(p) => {
            let meter = Meter::new(&ctx, p.wallet, p.key_id, p.mode, &first, path);
            // Held without memories; `run` grows the hold by the block recall returns.
            match state
                .billing
                .reserve(p.wallet, cost_bound(&state, chat, &models, 0))
                .await
            {
                Ok(hold) => (Payer::Credits(hold), meter),
                Err(e) => {
                    // The usage record gets the status the client gets.
                    let e = Error::from(e);
                    meter.record(e.status().as_u16(), 0, None);
                    return Err(e);
                }
            }
        }
        None => {
            // Asked before the payer (and so its memories) is known: it covers the most recall
            // can inject.
            let worst = cost_bound(&state, chat, &models, chat.recall_token_bound());
            let quote = state.payments.quote(worst);
            let verified = match pay::verify(&state, &parts.headers, quote, path, description).await
            {
                Ok(Some(v)) => v,
                Ok(None) => return Ok(pay::challenge(&state, quote, path, description, None)),
                Err(refused) => return Ok(refused),
            };
            let meter = Meter::new(&ctx, verified.payer, None, AuthMode::X402, &first, path);
            // The payment is verified but not settled: a limited caller is not charged.
            if let Err(e) = state
                .limiter
                .check(verified.payer, RateClass::Runtime)
                .await
            {
                meter.record(429, 0, None);
                state.payments.release_nonce(&verified).await; // it may be sent again later
                return Err(e.into());
            }
            // The facilitator vouches for the payment (balance, authorization state) before the
            // model runs and before a stream's first byte; a payer whose stream settlement
            // failed streams nothing until a payment of theirs settles.
            if let Err(e) = settle::preflight(&state, &verified, chat.stream).await {
                meter.record(e.status(), 0, None);
                // `/verify` moves no money: the same payment may be sent again.
                state.payments.release_nonce(&verified).await;
                let failed = Err(e.clone());
                let mut res = pay::refusal(&state, quote, path, description, e);
                pay::stamp_receipt(&mut res, &verified, &failed);
                return Ok(res);
            }
            let purpose = IntentPurpose::Call {
                request_id: ctx.request_id.clone(),
                kept: None,
            };
            let settlement = match settle::start(&state, &verified, purpose).await {
                Ok(s) => s,
                Err(e) => {
                    meter.record(e.status(), 0, None);
                    return Err(e.into());
                }
            };
            (
                Payer::X402(Box::new(X402 {
                    verified,
                    settlement,
                })),
                meter,
            )
        }
    };
    if !early {
        query = memory::start_recall(&state, chat);
    }
    // If the client goes away, hyper drops this future; the guards still record the call and end
    // the payment (release the hold, or credit an x402 payment back once it settles).
    let mut guard = Unfinished { meter: Some(meter) };
    let pay = PayGuard {
        payer: Some(payer),
        state: state.clone(),
    };
    let result = run(&ctx, &mut guard, pay, chat, &models, surface, query).await;
    if let (Err(e), Some(meter)) = (&result, guard.meter.as_ref()) {
        meter.record(e.status().as_u16(), 0, None);
    }
    guard.meter = None;
    result
}

/// The most a call can cost at the dearest model of its list, with `recalled` prompt tokens of
/// memory.
fn cost_bound(state: &State, chat: &ChatRequest, models: &[ModelPrice], recalled: u64) -> u64 {
    let default_max = state.config.default_max_tokens;
    models
        .iter()
        .map(|m| chat.cost_bound(m, default_max, recalled))
        .max()
        .unwrap_or(0)
}

/// Records a call that never finished (the client disconnected mid-request) as status 499,
/// unless something else owes its usage event by then (a unary x402 settlement, `payer::Owed`).
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

/// Ends an unused payment if the request is dropped or fails before an answer.
struct PayGuard {
    payer: Option<Payer>,
    state: Arc<State>,
}

impl PayGuard {
    fn take(&mut self) -> Option<Payer> {
        self.payer.take()
    }

    /// Grows a credit hold to `needed`; an x402 payment was priced for it up front.
    async fn cover(&mut self, needed: u64) -> Result<(), Error> {
        if let Some(Payer::Credits(hold)) = self.payer.as_mut() {
            hold.grow(needed.saturating_sub(hold.amount())).await?;
        }
        Ok(())
    }
}

impl Drop for PayGuard {
    fn drop(&mut self) {
        if let Some(p) = self.payer.take() {
            p.abandon(&self.state);
        }
    }
}

/// The models to try, in order; every one must exist, be listed once (aliases resolved) and
/// accept `max_tokens`.
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
        // Ids are compared after alias resolution: `gemini/<id>` is the same model as `<id>`.
        if out.iter().any(|m: &ModelPrice| m.id == model.id) {
            return Err(RequestError::validation(
                "models",
                format!("'{id}' names {} again; list distinct models", model.id),
            )
            .into());
        }
        // Gemini 3 answers one candidate ("Multiple candidates is not enabled for this model").
        if req.surface.n > 1 && crate::upstream::gemini3(&model.upstream) {
            return Err(RequestError::Unsupported {
                param: "n".into(),
                message: format!(
                    "n > 1 is not available on {}: Gemini 3 models give one candidate",
                    model.id
                ),
            }
            .into());
        }
        if let Some(max) = req.max_tokens_asked
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

async fn run(
    ctx: &Ctx,
    guard: &mut Unfinished,
    mut pay: PayGuard,
    chat: &ChatRequest,
    models: &[ModelPrice],
    surface: Surface,
    query: Option<QueryEmbedding>,
) -> Result<Response<Body>, Error> {
    let state = &ctx.state;
    let default_max = state.config.default_max_tokens;
    let Some(meter) = guard.meter.as_mut() else {
        return Err(AuthError::MissingCredentials.into());
    };
    // Memory read happens once, before the first model is called.
    let (memory_block, used) = memory::recall(state, meter.wallet, chat, query).await;
    meter.memory = MemoryUse {
        used,
        read: chat.memory.read,
        write: chat.memory.write,
    };
    // The memories join the prompt: the hold must cover them before any model sees them.
    let recalled = memory_block.as_deref().map_or(0, memory::block_tokens);
    pay.cover(cost_bound(state, chat, models, recalled)).await?;
    for (i, model) in models.iter().enumerate() {
        let bound = UsageBound {
            prompt: chat
                .prompt_bound_for(&model.upstream)
                .saturating_add(recalled),
            completion: chat.completion_bound(default_max),
        };
        meter.model = Some(model.id.clone());
        let mut call = chat.to_call(model, default_max);
        if let Some(block) = &memory_block {
            memory::inject(&mut call, block);
        }
        let remember = Remember::from_chat(state, meter.wallet, chat, &model.upstream);
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
                let Some(payer) = pay.take() else { break };
                let x402_payer = match &payer {
                    Payer::X402(x) => Some(x.verified.payer),
                    Payer::Credits(_) => None,
                };
                let id = completion_id(None, &ctx.request_id);
                let body = stream::ChatStream::new(
                    upstream,
                    payer,
                    meter.clone(),
                    model.clone(),
                    id,
                    chat.include_usage,
                    remember,
                    bound,
                    chat.tools.parallel,
                    chat.surface.n,
                );
                let mut res = Response::new(body.boxed_unsync());
                res.headers_mut().insert(CONTENT_TYPE, EVENT_STREAM);
                res.headers_mut().insert(
                    HeaderName::from_static("cache-control"),
                    HeaderValue::from_static("no-cache"),
                );
                if let Some(w) = x402_payer {
                    // The receipt follows `[DONE]`; the payer is known now.
                    res.headers_mut().insert(
                        HeaderName::from_static("x-payment-method"),
                        HeaderValue::from_static("x402"),
                    );
                    if let Ok(v) = HeaderValue::from_str(&crate::crypto::to_checksum(&w)) {
                        res.headers_mut()
                            .insert(HeaderName::from_static("x-payer-address"), v);
                    }
                }
                stamp(&mut res, model, chat);
                return Ok(res);
            }
            Ok(Answer::Whole(mut completion)) => {
                let Some(payer) = pay.take() else { break };
                if !chat.tools.parallel {
                    // Gemini has no switch: one call is kept, the first, in every choice.
                    completion.tool_calls.truncate(1);
                    completion
                        .more
                        .iter_mut()
                        .for_each(|c| c.tool_calls.truncate(1));
                }
                let generated = completion
                    .choices()
                    .map(|c| {
                        c.text.len() as u64
                            + c.tool_calls
                                .iter()
                                .map(|c| (c.name.len() + c.args.to_string().len()) as u64)
                                .sum::<u64>()
                    })
                    .sum();
                let usage = billed_usage(Some(completion.usage), &bound, generated, 0);
                let cost = model.cost_cached(usage.prompt, usage.cached, usage.completion);
                // A refused settlement is answered with a fresh 402 for the same quote, and the
                // failure receipt.
                let paid_with = match &payer {
                    Payer::X402(x) => Some(x.verified.clone()),
                    Payer::Credits(_) => None,
                };
                // From here the settlement owes the call's usage event, whether or not the
                // client stays for it.
                let Some(meter) = guard.meter.take() else {
                    break;
                };
                let mem = meter.memory;
                let (owed, outcome) = payer.settle(state, cost, meter, usage).await;
                return match outcome {
                    Ok(settled) => {
                        owed.record(200);
                        // A step that ends in function calls is not the answer yet: the
                        // agent loop's final answer is what memory keeps.
                        if let Some(r) = remember.filter(|_| completion.tool_calls.is_empty()) {
                            r.spawn(completion.text.clone());
                        }
                        let shown = render::Shown {
                            costs: settled.costs(),
                            memory: mem,
                            logprobs: chat.surface.logprobs.is_some(),
                        };
                        let mut res =
                            render::unary_response(ctx, model, &completion, &usage, shown);
                        if let payer::Settled::X402 {
                            verified, outcome, ..
                        } = &settled
                        {
                            pay::stamp(&mut res, verified, outcome);
                        }
                        stamp(&mut res, model, chat);
                        Ok(res)
                    }
                    Err(e) => {
                        // The settlement was refused: the answer is withheld.
                        owed.record(402);
                        let quote = paid_with.as_ref().map_or(cost, |v| v.quote);
                        let failed = Err(e.clone());
                        let mut res =
                            pay::refusal(state, quote, surface.path, surface.description, e);
                        if let Some(v) = &paid_with {
                            pay::stamp_receipt(&mut res, v, &failed);
                        }
                        Ok(res)
                    }
                };
            }
            Err(e) if try_next_model(&e) && i + 1 < models.len() => {
                metrics::counter!("vectorway_model_fallbacks_total").increment(1);
                tracing::info!(model = %model.id, error = %e, "falling back to the next model");
            }
            // On error the guard ends the payment: hold released, x402 credited back.
            Err(e) => return Err(e.into()),
        }
    }
    Err(RequestError::validation("models", "no model to try").into())
}

/// `x-model-used`, and `x-vectorway-warning: ignored: <fields>` for fields accepted but ignored.
fn stamp(res: &mut Response<Body>, model: &ModelPrice, chat: &ChatRequest) {
    if let Ok(v) = HeaderValue::from_str(&model.id) {
        res.headers_mut()
            .insert(HeaderName::from_static("x-model-used"), v);
    }
    if !chat.surface.ignored.is_empty()
        && let Ok(v) =
            HeaderValue::from_str(&format!("ignored: {}", chat.surface.ignored.join(", ")))
    {
        res.headers_mut()
            .insert(HeaderName::from_static("x-vectorway-warning"), v);
    }
}
