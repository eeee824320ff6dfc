//! `POST /v1/responses`: the OpenAI Responses API, served by the chat pipeline.
//!
//! The request is translated to a chat request (`openai::responses::translate`) and parsed by
//! `parse_chat`, whose errors are renamed to the Responses request's paths; `chat::serve` then
//! prices, pays (API-key hold or x402, the 402 naming this route), recalls, calls Gemini and
//! settles exactly as for chat. A unary 200 answer is rewritten into a Response object; a stream
//! is relayed through `ResponsesBody`, which turns chat chunks into typed `response.*` events
//! (`openai::responses::EventStream`). Everything else (402 challenges, errors) is chat's own
//! answer, unchanged. The chat stream inside still owns the payment: a client that leaves drops
//! it, and it settles as a chat stream does.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;

use super::chat::{self, Surface};
use super::types::parse_chat_owned;
use super::{Ctx, ReqBody};
use crate::error::Error;
use crate::http::{Body, BodyError, read_body};
use crate::openai::responses::{self, EventStream, Translated};
use crate::storage::now_ms;
use crate::upstream::gemini::sse::SseDecoder;

/// The route, as x402 requirements and usage events name it.
pub const PATH: &str = "/v1/responses";

const SURFACE: Surface = Surface {
    path: PATH,
    description: "vectorway response (OpenAI Responses API over Gemini), priced at its worst case",
};

pub async fn create(ctx: Ctx, req: Request<ReqBody>) -> Result<Response<Body>, Error> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts.headers, body, ctx.state.config.chat_body_limit()).await?;
    let mut t = responses::translate(&bytes)?;
    drop(bytes); // translated: the chat body below is the one copy kept
    let mut chat = parse_chat_owned(std::mem::take(&mut t.chat).into()).map_err(|e| t.remap(e))?;
    let base = ctx.request_id.trim_start_matches("req_").to_string();
    let res = chat::serve(ctx, &parts, &mut chat, SURFACE)
        .await
        .map_err(|e| remap(&t, e))?;
    if res.status() != StatusCode::OK {
        // A 402 challenge or a refused payment: chat's answer, naming this route.
        return Ok(res);
    }
    let now = now_ms() / 1000;
    let (head, body) = res.into_parts();
    let streamed = head
        .headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if streamed {
        let model = head
            .headers
            .get("x-model-used")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let events = EventStream::new(&base, model, now, &t.echo);
        let body = ResponsesBody::new(body, events);
        return Ok(Response::from_parts(head, body.boxed_unsync()));
    }
    // A unary answer is one in-memory frame.
    let chat_json = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            tracing::error!(%e, "a unary chat answer could not be read");
            Bytes::new()
        }
    };
    let out = responses::response(&chat_json, &t.echo, now);
    Ok(Response::from_parts(head, crate::http::full(out)))
}

/// A pipeline error on the Responses request's paths.
fn remap(t: &Translated, e: Error) -> Error {
    match e {
        Error::Request(r) => Error::Request(t.remap(r)),
        other => other,
    }
}

/// The chat SSE body, re-framed as `response.*` events.
struct ResponsesBody {
    inner: Body,
    decoder: SseDecoder,
    events: EventStream,
    started: bool,
    done: bool,
}

impl ResponsesBody {
    fn new(inner: Body, events: EventStream) -> Self {
        Self {
            inner,
            decoder: SseDecoder::new(),
            events,
            started: false,
            done: false,
        }
    }

    /// Translates what the decoder holds.
    fn drain(&mut self, out: &mut Vec<u8>) {
        while let Some(data) = self.decoder.next_event() {
            self.events.feed(&data, out);
        }
    }
}

impl http_body::Body for ResponsesBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let mut out = Vec::new();
        if !this.started {
            this.started = true;
            this.events.start(&mut out);
            return Poll::Ready(Some(Ok(Frame::data(out.into()))));
        }
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        if this.decoder.feed(&data).is_err() {
                            this.events.finish(&mut out);
                        } else {
                            this.drain(&mut out);
                        }
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!(%e, "the chat stream under a response failed");
                    this.events.finish(&mut out);
                }
                Poll::Ready(None) => {
                    this.drain(&mut out);
                    this.events.finish(&mut out);
                }
            }
            if this.events.is_closed() {
                this.done = true;
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(out.into()))));
            }
            if this.done {
                return Poll::Ready(None);
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}
