//! The Gemini REST client: `generateContent`, `streamGenerateContent?alt=sse`,
//! `batchEmbedContents`, with timeouts.

mod candidates;
pub mod sse;
mod tools;
pub mod translate;
mod types;

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::time::Sleep;

use super::client::HttpClient;
use super::{ChatCall, Completion, StreamEvent, UpstreamError};
use crate::config::UpstreamConfig;
use sse::{SseDecoder, SseItem};

/// Largest unary answer read into memory.
const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// A Gemini endpoint (Google's or the simulator) and how to talk to it.
#[derive(Clone)]
pub struct Gemini {
    http: HttpClient,
    base: String,
    key: Option<String>,
    first_byte_timeout: Duration,
    idle_read_timeout: Duration,
}

impl std::fmt::Debug for Gemini {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gemini").field("base", &self.base).finish()
    }
}

impl Gemini {
    pub fn new(http: HttpClient, base: String, cfg: &UpstreamConfig) -> Self {
        Self {
            http,
            base,
            key: cfg.api_key.clone(),
            first_byte_timeout: cfg.first_byte_timeout,
            idle_read_timeout: cfg.idle_read_timeout,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn request(
        &self,
        model: &str,
        method: &str,
        body: Vec<u8>,
    ) -> Result<Request<Full<Bytes>>, UpstreamError> {
        let uri = format!("{}/v1beta/models/{model}:{method}", self.base);
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::ACCEPT,
                if method.contains("alt=sse") {
                    "text/event-stream"
                } else {
                    "application/json"
                },
            );
        if let Some(k) = &self.key {
            req = req.header("x-goog-api-key", k);
        }
        req.body(Full::new(Bytes::from(body)))
            .map_err(|e| UpstreamError::Protocol(e.to_string()))
    }

    /// Sends a request and waits for the response head; non-2xx answers become errors.
    async fn send(
        &self,
        req: Request<Full<Bytes>>,
        model: &str,
    ) -> Result<http::Response<Incoming>, UpstreamError> {
        let res = match tokio::time::timeout(self.first_byte_timeout, self.http.request(req)).await
        {
            Err(_) => return Err(UpstreamError::Timeout("waiting for response headers")),
            Ok(Err(e)) if e.is_connect() => return Err(UpstreamError::Connect(error_chain(&e))),
            Ok(Err(e)) => return Err(UpstreamError::Connect(error_chain(&e))),
            Ok(Ok(res)) => res,
        };
        if res.status().is_success() {
            return Ok(res);
        }
        let status = res.status().as_u16();
        let body = read_limited(res.into_body(), 64 << 10, self.idle_read_timeout)
            .await
            .unwrap_or_default();
        Err(translate::decode_error(status, &body, model))
    }

    /// Cheap reachability check: lists one model (free on Google's side).
    pub async fn probe(&self) -> Result<(), UpstreamError> {
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(format!("{}/v1beta/models?pageSize=1", self.base));
        if let Some(k) = &self.key {
            req = req.header("x-goog-api-key", k);
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        let res = match tokio::time::timeout(Duration::from_secs(2), self.http.request(req)).await {
            Err(_) => return Err(UpstreamError::Timeout("probe")),
            Ok(Err(e)) => return Err(UpstreamError::Connect(error_chain(&e))),
            Ok(Ok(res)) => res,
        };
        let status = res.status().as_u16();
        let body = read_limited(res.into_body(), 64 << 10, Duration::from_secs(2))
            .await
            .unwrap_or_default();
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(translate::decode_error(status, &body, ""))
        }
    }

    /// One whole answer.
    pub async fn generate(&self, call: &ChatCall) -> Result<Completion, UpstreamError> {
        let req = self.request(
            &call.model,
            "generateContent",
            translate::encode_request(call),
        )?;
        let res = self.send(req, &call.model).await?;
        let body =
            read_limited(res.into_body(), MAX_RESPONSE_BYTES, self.idle_read_timeout).await?;
        translate::decode_response(&body)
    }

    /// Opens a stream; returns once Gemini has answered 200 (errors before that are returned).
    pub async fn stream(&self, call: &ChatCall) -> Result<GeminiStream, UpstreamError> {
        let req = self.request(
            &call.model,
            "streamGenerateContent?alt=sse",
            translate::encode_request(call),
        )?;
        let res = self.send(req, &call.model).await?;
        Ok(GeminiStream::new(res.into_body(), self.idle_read_timeout))
    }

    /// Embeds `texts` with `batchEmbedContents`: at most 100 texts per call, a few calls in
    /// flight, vectors in input order, `dims` values each, re-normalized to unit length.
    /// Errors map as for generation (`translate::decode_error`).
    pub async fn embed(
        &self,
        model: &str,
        texts: &[String],
        dims: usize,
    ) -> Result<Vec<Vec<f32>>, UpstreamError> {
        // Batches run one after another: a `buffered` stream of borrowing futures is not provably
        // `Send` inside the request handler (a rustc limitation), and one batch holds 100 texts.
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(translate::EMBED_BATCH) {
            out.extend(self.embed_batch(model, batch, dims).await?);
        }
        Ok(out)
    }

    /// One `batchEmbedContents` call of at most `translate::EMBED_BATCH` texts.
    async fn embed_batch(
        &self,
        model: &str,
        texts: &[String],
        dims: usize,
    ) -> Result<Vec<Vec<f32>>, UpstreamError> {
        let req = self.request(
            model,
            "batchEmbedContents",
            translate::encode_embed_request(model, texts, dims),
        )?;
        let res = self.send(req, model).await?;
        let body =
            read_limited(res.into_body(), MAX_RESPONSE_BYTES, self.idle_read_timeout).await?;
        translate::decode_embed_response(&body, texts.len(), dims)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

async fn read_limited(
    mut body: Incoming,
    limit: usize,
    idle: Duration,
) -> Result<Vec<u8>, UpstreamError> {
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(UpstreamError::Timeout("reading the response body")),
            Ok(None) => return Ok(out),
            Ok(Some(Err(e))) => return Err(UpstreamError::Interrupted(error_chain(&e))),
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    out.extend_from_slice(data);
                    if out.len() > limit {
                        return Err(UpstreamError::Protocol(format!(
                            "response larger than {limit} bytes"
                        )));
                    }
                }
            }
        }
    }
}

/// An open `streamGenerateContent` answer, polled for neutral events.
pub struct GeminiStream {
    body: Incoming,
    decoder: SseDecoder,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    finished: bool,
    saw_finish: bool,
    done: bool,
}

impl GeminiStream {
    fn new(body: Incoming, idle: Duration) -> Self {
        Self {
            body,
            decoder: SseDecoder::new(),
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            finished: false,
            saw_finish: false,
            done: false,
        }
    }

    fn decode(&mut self, data: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), UpstreamError> {
        let before = out.len();
        translate::decode_chunk(data, out)?;
        self.saw_finish |= out[before..]
            .iter()
            .any(|e| matches!(e, StreamEvent::Finish(_)));
        Ok(())
    }

    /// Appends the next events to `out`. `Ready(Some(Ok(())))`: events were appended;
    /// `Ready(None)`: the stream ended cleanly (after a finish reason); errors end it too.
    pub fn poll_events(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<StreamEvent>,
    ) -> Poll<Option<Result<(), UpstreamError>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            while let Some(data) = self.decoder.next_event() {
                if let Err(e) = self.decode(&data, out) {
                    self.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(())));
            }
            if self.finished {
                self.done = true;
                let result = match self.decoder.finish() {
                    Some(SseItem::Data(d)) => self.decode(&d, out),
                    Some(SseItem::Raw(raw)) => Err(translate::decode_stream_tail(&raw)),
                    None => Ok(()),
                };
                return Poll::Ready(match result {
                    Err(e) => Some(Err(e)),
                    Ok(()) if !self.saw_finish => Some(Err(UpstreamError::Interrupted(
                        "the stream ended before a finish reason".into(),
                    ))),
                    Ok(()) if out.is_empty() => None,
                    Ok(()) => {
                        // Hand over the last events now; the next poll reports the end.
                        Some(Ok(()))
                    }
                });
            }
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        if self.decoder.feed(data).is_err() {
                            self.done = true;
                            return Poll::Ready(Some(Err(UpstreamError::Protocol(
                                "stream event too large".into(),
                            ))));
                        }
                        let next = tokio::time::Instant::now() + self.idle;
                        self.deadline.as_mut().reset(next);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(UpstreamError::Interrupted(error_chain(&e)))));
                }
                Poll::Ready(None) => self.finished = true,
                Poll::Pending => {
                    ready!(self.deadline.as_mut().poll(cx));
                    self.done = true;
                    return Poll::Ready(Some(Err(UpstreamError::Timeout("stream stalled"))));
                }
            }
        }
    }
}
