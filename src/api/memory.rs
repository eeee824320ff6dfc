//! Wallet memory over HTTP: search and delete, OpenAI-shaped embeddings, and the chat hooks that
//! read memories into a call and write the exchange back after the answer.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use base64::Engine;
use http::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json as j;

use super::num::Int;
use super::types::{ChatRequest, MemoryWriteMode, MessageRole};
use super::{Ctx, ReqBody, State, journal_usage, parse_json};
use crate::auth::Principal;
use crate::error::{Error, RequestError};
use crate::http::{Body, json, query_pairs, read_body};
use crate::memory::{MAX_TEXT_BYTES, QueryEmbedding, RECALL_HEADER, RECALL_ITEM};
use crate::storage::UsageEvent;
use crate::upstream::{ChatCall, Role, Turn};
use crate::wallet::Wallet;

/// Longest `q` of a memory search, in bytes. Gemini's embedding model reads at most 2,048 tokens
/// (about 8 KiB of text) and silently drops the rest, so a longer query buys nothing.
pub const MAX_QUERY_BYTES: usize = 8 * 1024;

/// `GET /v1/memory?q=&k=&namespace=` → `{"matches":[{id,text,score}]}` (no score floor).
///
/// The query's embedding is paid like `POST /v1/embeddings` (whichever embedder is configured):
/// its price is held before the embedder is called (402 `insufficient_credits` when the wallet
/// cannot pay), charged once the search is answered, and recorded as a usage event with its
/// tokens and cost.
pub async fn search(ctx: &Ctx, req: &Request<ReqBody>) -> Result<Response<Body>, Error> {
    let p = ctx.caller()?.clone();
    let q: HashMap<String, String> = query_pairs(req.uri().query()).into_iter().collect();
    let query = q
        .get("q")
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| RequestError::validation("q", "q (the query text) is required"))?;
    if query.len() > MAX_QUERY_BYTES {
        return Err(RequestError::validation(
            "q",
            format!("q is longer than {MAX_QUERY_BYTES} bytes"),
        )
        .into());
    }
    let k = match q.get("k") {
        None => 5,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| RequestError::validation("k", "k must be an integer"))?,
    };
    if !(1..=crate::memory::MAX_K).contains(&k) {
        let max = crate::memory::MAX_K;
        return Err(RequestError::validation("k", format!("k must be between 1 and {max}")).into());
    }
    let namespace = q.get("namespace").cloned();
    crate::memory::validate_namespace(namespace.as_deref())?;
    let state = &ctx.state;
    let tokens = embed_tokens(std::slice::from_ref(query));
    let cost = state.embedding_price().cost(tokens, 0);
    let hold = state.billing.reserve(p.wallet, cost).await?;
    // On an error the hold is dropped, which releases it.
    let matches = search_send(state, p.wallet, namespace, query.clone(), k).await?;
    let charged = hold.commit(cost, Some(ctx.request_id.clone()));
    record(
        state,
        &p,
        ("GET", SEARCH_PATH),
        charged,
        tokens,
        &ctx.request_id,
    );
    Ok(json(StatusCode::OK, &j!({ "matches": matches })))
}

/// The search route's path, as usage events name it.
const SEARCH_PATH: &str = "/v1/memory";

/// A memory search as a boxed `Send` future (`search_send`, `recall_send`).
type SearchFuture<'a> = Pin<
    Box<
        dyn Future<Output = Result<Vec<crate::memory::Match>, crate::memory::MemoryError>>
            + Send
            + 'a,
    >,
>;

/// `Memory::search` behind a boxed `Send` future with owned arguments: the borrowed-argument
/// future trips rustc's "`Send` is not general enough" when it is nested in a spawned task.
fn search_send(
    state: &State,
    wallet: Wallet,
    namespace: Option<String>,
    query: String,
    k: usize,
) -> SearchFuture<'_> {
    Box::pin(async move {
        state
            .memory
            .search(wallet, namespace.as_deref(), &query, k)
            .await
    })
}

/// `GET /v1/memory/namespaces` → `{"object":"list","data":[{namespace,records,newest_at}]}`:
/// the caller's namespaces only (`namespace: null` is the default one).
pub async fn namespaces(ctx: &Ctx) -> Result<Response<Body>, Error> {
    let wallet = ctx.caller()?.wallet;
    let list = ctx.state.memory.namespaces(wallet).await?;
    let data: Vec<_> = list
        .into_iter()
        .map(|n| j!({"namespace": n.namespace, "records": n.records, "newest_at": iso_ms(n.newest_at_ms)}))
        .collect();
    Ok(json(StatusCode::OK, &j!({"object": "list", "data": data})))
}

/// `GET /v1/memory/records?namespace=&limit=&before=` → one namespace's records newest first
/// (`{"object":"list","data":[{id,namespace,text,created_at}],"has_more","next_before"}`).
pub async fn list(ctx: &Ctx, req: &Request<ReqBody>) -> Result<Response<Body>, Error> {
    let wallet = ctx.caller()?.wallet;
    let q: HashMap<String, String> = query_pairs(req.uri().query()).into_iter().collect();
    let limit = super::account::limit(&q, 20)?;
    let before = match q.get("before").map(String::as_str) {
        None => None,
        Some(v) => Some(v.parse::<crate::memory::MemoryId>().map_err(|_| {
            RequestError::validation("before", "before must be a memory id (a UUID)")
        })?),
    };
    let namespace = q.get("namespace").map(String::as_str);
    let page = ctx
        .state
        .memory
        .list(wallet, namespace, limit, before)
        .await?;
    let next = page
        .has_more
        .then(|| page.records.last().map(|r| r.id.to_string()))
        .flatten();
    let data: Vec<_> = page
        .records
        .into_iter()
        .map(|r| j!({"id": r.id, "namespace": r.namespace, "text": r.text, "created_at": iso_ms(r.created_at_ms)}))
        .collect();
    Ok(json(
        StatusCode::OK,
        &j!({"object": "list", "data": data, "has_more": page.has_more, "next_before": next}),
    ))
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds (`2026-12-07T21:20:16.123Z`).
fn iso_ms(ms: u64) -> String {
    let secs = crate::auth::siwe::format_rfc3339((ms / 1000) as i64);
    match secs.strip_suffix('Z') {
        Some(head) => format!("{head}.{:03}Z", ms % 1000),
        None => secs,
    }
}

/// `DELETE /v1/memory/{memory_id}`: another wallet's id (or an unknown one) is 404.
pub async fn delete(ctx: &Ctx) -> Result<Response<Body>, Error> {
    let p = ctx.caller()?;
    let id = ctx.params.first().map(String::as_str).unwrap_or_default();
    if ctx.state.memory.delete(p.wallet, id).await? {
        Ok(json(
            StatusCode::OK,
            &j!({"status": "deleted", "memory_id": id}),
        ))
    } else {
        Err(RequestError::NotFound {
            method: "DELETE".into(),
            path: format!("/v1/memory/{id}"),
        }
        .into())
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
    Tokens(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct EmbeddingsBody {
    input: Input,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<Int<usize>>,
}

/// Input tokens as this gateway bills them for embeddings (Gemini reports none): one per 4 bytes,
/// rounded up, at least one per input.
fn embed_tokens(texts: &[String]) -> u64 {
    texts
        .iter()
        .map(|t| (t.len() as u64).div_ceil(4).max(1))
        .sum()
}

/// `POST /v1/embeddings` (OpenAI shape; `float` or `base64` little-endian f32), billed per input
/// token at the embedding model's price.
pub async fn embeddings(ctx: &Ctx, req: Request<ReqBody>) -> Result<Response<Body>, Error> {
    let p = ctx.caller()?.clone();
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts.headers, body, ctx.state.config.body_limit).await?;
    let b: EmbeddingsBody = parse_json(&bytes)?;
    let texts = match b.input {
        Input::One(s) => vec![s],
        Input::Many(v) => v,
        Input::Tokens(_) => {
            return Err(RequestError::validation(
                "input",
                "input must be a string or an array of strings (token ids are not supported)",
            )
            .into());
        }
    };
    let base64 = match b.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(RequestError::validation(
                "encoding_format",
                format!("'{other}': want float or base64"),
            )
            .into());
        }
    };
    let state = &ctx.state;
    let dims = state.memory.dims();
    let want = b.dimensions.map_or(dims, |d| d.0);
    if want == 0 || want > dims {
        return Err(RequestError::validation(
            "dimensions",
            format!("dimensions must be between 1 and {dims}"),
        )
        .into());
    }
    let tokens = embed_tokens(&texts);
    let price = state.embedding_price();
    let cost = price.cost(tokens, 0);
    let hold = state.billing.reserve(p.wallet, cost).await?;
    let vectors = state.memory.embed(&texts).await?;
    let charged = hold.commit(cost, Some(ctx.request_id.clone()));
    record(
        state,
        &p,
        ("POST", "/v1/embeddings"),
        charged,
        tokens,
        &ctx.request_id,
    );
    let local = state.memory.model() == "local-feature-hashing";
    let data: Vec<serde_json::Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, mut v)| {
            if want < v.len() {
                if local {
                    // Feature hashing spreads features over every coordinate: fold them.
                    let mut folded = vec![0f32; want];
                    for (i, x) in v.iter().enumerate() {
                        folded[i % want] += x;
                    }
                    v = folded;
                } else {
                    // Gemini vectors are Matryoshka-trained: keep the leading dimensions.
                    v.truncate(want);
                }
                // Either way, back to unit length.
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                if n > 0.0 {
                    v.iter_mut().for_each(|x| *x /= n);
                }
            }
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                j!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                j!(v)
            };
            j!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let model = b.model.unwrap_or_else(|| state.memory.model().to_string());
    Ok(json(
        StatusCode::OK,
        &j!({"object": "list", "data": data, "model": model,
             "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "credit_cost": charged}}),
    ))
}

/// Journals a paid embedding call (embeddings or a search's query) with its tokens and cost.
fn record(
    state: &State,
    p: &Principal,
    (method, path): (&str, &str),
    credits: u64,
    tokens: u64,
    request_id: &str,
) {
    let ev = UsageEvent {
        method: method.into(),
        path: path.into(),
        status: 200,
        credits,
        prompt_tokens: tokens,
        key_id: p.key_id.clone(),
        auth_mode: p.mode.as_str().into(),
        request_id: request_id.to_string(),
        ..UsageEvent::default()
    };
    journal_usage(state, p.wallet, ev);
}

/// The last user turn, which memory is searched with and stored from.
pub fn last_user_text(chat: &ChatRequest) -> Option<&str> {
    chat.messages
        .iter()
        .rev()
        .find(|m| m.role == MessageRole::User)
        .map(|m| m.text.as_str())
}

/// Starts embedding the query of a chat call's memory read, before the payer is known (the
/// vector does not depend on the wallet): `recall` finishes it once the hold is in place, so
/// the payment and the embedding overlap. `None` when the call reads no memory.
pub fn start_recall(state: &State, chat: &ChatRequest) -> Option<QueryEmbedding> {
    if !chat.memory.read {
        return None;
    }
    let query = last_user_text(chat).filter(|q| !q.trim().is_empty())?;
    Some(state.memory.start_embed(query))
}

/// The search of `recall` behind a boxed `Send` future with owned arguments (see `search_send`).
fn recall_send(
    state: &State,
    wallet: Wallet,
    namespace: Option<String>,
    query: QueryEmbedding,
    k: usize,
) -> SearchFuture<'_> {
    Box::pin(async move {
        let vector = state.memory.finish_embed(query).await?;
        state
            .memory
            .search_vector(wallet, namespace.as_deref(), &vector, k)
            .await
    })
}

/// Memory read for a chat call (its query embedding begun by `start_recall`): the top-k
/// memories above the score floor as one system block, and how many there are. Failures are
/// logged, never fatal.
pub async fn recall(
    state: &State,
    wallet: Wallet,
    chat: &ChatRequest,
    query: Option<QueryEmbedding>,
) -> (Option<String>, u32) {
    let Some(query) = query else {
        return (None, 0);
    };
    let matches = match recall_send(
        state,
        wallet,
        chat.memory_namespace.clone(),
        query,
        chat.memory.k as usize,
    )
    .await
    {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(%e, %wallet, "memory read failed; answering without memories");
            return (None, 0);
        }
    };
    let floor = state.config.memory.score_floor;
    let used: Vec<_> = matches
        .into_iter()
        .filter(|m| m.score >= floor)
        .take(chat.memory.k as usize)
        .collect();
    if used.is_empty() {
        return (None, 0);
    }
    let mut block = String::from(RECALL_HEADER);
    for m in &used {
        block.push_str(RECALL_ITEM);
        // Records are written at most `MAX_TEXT_BYTES` long; cutting here keeps the block inside
        // `block_bound_bytes` whatever the log holds, so the price asked up front covers it.
        let mut cut = m.text.len().min(MAX_TEXT_BYTES);
        while !m.text.is_char_boundary(cut) {
            cut -= 1;
        }
        block.push_str(&m.text[..cut]);
    }
    (Some(block), used.len() as u32)
}

/// The prompt-token bound of a recalled block, counted like one more message (DESIGN §10: bytes
/// + 16), which also covers the separator `inject` adds.
pub fn block_tokens(block: &str) -> u64 {
    block.len() as u64 + 16
}

/// Adds the memory block to a call's system instruction.
pub fn inject(call: &mut ChatCall, block: &str) {
    call.system = Some(match call.system.take() {
        Some(s) => format!("{s}\n\n{block}"),
        None => block.to_string(),
    });
}

/// Trims to at most `max` characters on a character boundary.
fn trim_chars(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// What a finished chat call remembers: the user's turn and the answer, one record.
pub struct Remember {
    pub state: Arc<State>,
    pub wallet: Wallet,
    pub user: String,
    pub mode: MemoryWriteMode,
    pub max_chars: usize,
    pub upstream_model: String,
    pub namespace: Option<String>,
}

impl Remember {
    pub fn from_chat(
        state: &Arc<State>,
        wallet: Wallet,
        chat: &ChatRequest,
        upstream_model: &str,
    ) -> Option<Self> {
        if !chat.memory.write {
            return None;
        }
        Some(Self {
            state: state.clone(),
            wallet,
            user: last_user_text(chat)?.to_string(),
            mode: chat.memory.mode,
            max_chars: chat.memory.max_chars as usize,
            upstream_model: upstream_model.to_string(),
            namespace: chat.memory_namespace.clone(),
        })
    }

    /// Writes the exchange in the background (never delays the answer). `auto` stores the raw
    /// turn when it fits and a model-written summary when it does not; `summary` always
    /// summarizes. The summary call is billed to the wallet's credits and recorded as a usage
    /// event with its token counts.
    pub fn spawn(self, answer: String) {
        // A billed side effect (the summary's charge and usage event): it runs as an effect,
        // off the response path, and outlives the request.
        let effects = self.state.effects.clone();
        drop(effects.spawn("memory write", async move {
            let raw = format!("User: {}\nAssistant: {}", self.user, answer);
            let summarize = match self.mode {
                MemoryWriteMode::Raw => false,
                MemoryWriteMode::Summary => true,
                MemoryWriteMode::Auto => raw.chars().count() > self.max_chars,
            };
            let text = if summarize {
                self.summarize(&raw)
                    .await
                    .unwrap_or_else(|| trim_chars(&raw, self.max_chars))
            } else {
                trim_chars(&raw, self.max_chars)
            };
            let write: Pin<
                Box<
                    dyn Future<Output = Result<crate::memory::MemoryId, crate::memory::MemoryError>>
                        + Send
                        + '_,
                >,
            > = Box::pin(
                self.state
                    .memory
                    .write(self.wallet, self.namespace.as_deref(), &text),
            );
            if let Err(e) = write.await {
                tracing::warn!(%e, wallet = %self.wallet, "memory write failed");
            }
        }));
    }

    /// Asks the model for a summary, paid from credits; `None` when it cannot (no credits,
    /// upstream failure): the caller then stores the trimmed turn.
    async fn summarize(&self, raw: &str) -> Option<String> {
        let state = &self.state;
        let price = state
            .config
            .prices
            .all()
            .iter()
            .find(|m| m.upstream == self.upstream_model)?
            .clone();
        let prompt = format!(
            "Summarize this exchange as a memory for later conversations, in at most {} characters. Keep facts, names, numbers and decisions.\n\n{raw}",
            self.max_chars
        );
        let max_out = (self.max_chars / 2).clamp(32, 2048) as u32;
        let worst = price.cost(prompt.len() as u64 + 16, u64::from(max_out));
        let hold = state.billing.reserve(self.wallet, worst).await.ok()?;
        let call = ChatCall {
            model: price.upstream.clone(),
            system: None,
            turns: vec![Turn::text(Role::User, prompt)],
            params: crate::upstream::GenParams {
                max_output_tokens: max_out,
                ..Default::default()
            },
            tools: crate::upstream::Tools::default(),
        };
        let c = state.gemini.generate(&call).await.ok()?;
        let charged = hold.commit(
            price.cost_cached(c.usage.prompt, c.usage.cached, c.usage.completion),
            Some("memory summary".into()),
        );
        {
            let ev = UsageEvent {
                method: "POST".into(),
                path: "/v1/chat/completions#memory-summary".into(),
                status: 200,
                credits: charged,
                model: Some(price.id.clone()),
                prompt_tokens: c.usage.prompt,
                completion_tokens: c.usage.completion,
                memory_write: true,
                auth_mode: "memory_summary".into(),
                ..UsageEvent::default()
            };
            journal_usage(state, self.wallet, ev);
        }
        Some(trim_chars(&c.text, self.max_chars))
    }
}
