//! The streaming answer body: Gemini events in, OpenAI `chat.completion.chunk` frames out, no
//! buffering beyond the events of one upstream read. It owns the hold and settles it exactly once:
//! at the clean end (actual usage), on an upstream error (usage seen so far, or nothing if no
//! frame reached the client), or in `Drop` when the client goes away mid-stream.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http_body::Frame;

use super::{CLIENT_CLOSED, Meter, UsageOut};
use crate::billing::Hold;
use crate::billing::pricing::ModelPrice;
use crate::error::Error;
use crate::http::BodyError;
use crate::storage::now_ms;
use crate::upstream::{Finish, GeminiStream, StreamEvent, TokenUsage, UpstreamError};

pub struct ChatStream {
    upstream: GeminiStream,
    hold: Option<Hold>,
    meter: Meter,
    model: ModelPrice,
    /// `data: {"id":…,"object":"chat.completion.chunk","created":…,"model":…,"choices":[` — shared
    /// by every chunk.
    prefix: Bytes,
    include_usage: bool,
    events: Vec<StreamEvent>,
    sent_first: bool,
    usage: Option<TokenUsage>,
    finish: Option<Finish>,
    done: bool,
}

impl ChatStream {
    pub fn new(
        upstream: GeminiStream,
        hold: Hold,
        meter: Meter,
        model: ModelPrice,
        id: String,
        include_usage: bool,
    ) -> Self {
        let head = serde_json::json!({"id": id, "object": "chat.completion.chunk", "created": now_ms() / 1000, "model": model.id});
        // `{"id":…,"model":…}` → `data: {"id":…,"model":…,"choices":`
        let mut prefix = b"data: ".to_vec();
        let head = head.to_string();
        prefix.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
        prefix.extend_from_slice(b",\"choices\":");
        Self {
            upstream,
            hold: Some(hold),
            meter,
            model,
            prefix: Bytes::from(prefix),
            include_usage,
            events: Vec::with_capacity(4),
            sent_first: false,
            usage: None,
            finish: None,
            done: false,
        }
    }

    fn chunk(&self, out: &mut BytesMut, delta: &str, finish: Option<Finish>) {
        out.put_slice(&self.prefix);
        out.put_slice(b"[{\"index\":0,\"delta\":");
        out.put_slice(delta.as_bytes());
        out.put_slice(b",\"logprobs\":null,\"finish_reason\":");
        match finish {
            Some(f) => {
                out.put_u8(b'"');
                out.put_slice(f.as_openai().as_bytes());
                out.put_u8(b'"');
            }
            None => out.put_slice(b"null"),
        }
        out.put_slice(if self.include_usage {
            b"}],\"usage\":null}\n\n"
        } else {
            b"}]}\n\n"
        });
    }

    fn text_delta(&mut self, out: &mut BytesMut, text: &str) {
        let escaped = serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into());
        let delta = if self.sent_first {
            format!("{{\"content\":{escaped}}}")
        } else {
            format!("{{\"role\":\"assistant\",\"content\":{escaped}}}")
        };
        self.chunk(out, &delta, None);
        self.sent_first = true;
    }

    /// Settles the hold from the usage seen so far; returns the credits charged.
    fn settle(&mut self) -> u64 {
        let Some(hold) = self.hold.take() else {
            return 0;
        };
        match (self.sent_first, self.usage) {
            (true, Some(u)) => hold.commit(
                self.model.cost(u.prompt, u.completion),
                Some(self.meter_ref()),
            ),
            _ => {
                hold.release();
                0
            }
        }
    }

    fn meter_ref(&self) -> String {
        self.meter.request_id.clone()
    }

    /// The clean end: final chunk, usage chunk, `[DONE]`.
    fn finish_frames(&mut self, out: &mut BytesMut) {
        if !self.sent_first {
            // An answer with no visible text (all thinking, blocked, empty) still opens with the
            // assistant role, and is charged like any other complete answer.
            self.chunk(out, "{\"role\":\"assistant\",\"content\":\"\"}", None);
            self.sent_first = true;
        }
        let charged = self.settle();
        let usage = self.usage.unwrap_or_default();
        self.chunk(out, "{}", Some(self.finish.unwrap_or(Finish::Stop)));
        if self.include_usage {
            let u = UsageOut::new(&usage, &self.model.id, charged);
            out.put_slice(&self.prefix);
            out.put_slice(b"[],\"usage\":");
            out.put_slice(&serde_json::to_vec(&u).unwrap_or_else(|_| b"null".to_vec()));
            out.put_slice(b"}\n\n");
        }
        out.put_slice(b"data: [DONE]\n\n");
        self.meter.record(200, charged, Some(&usage));
    }

    /// A mid-stream failure: an OpenAI error event, then the end (no fake `stop`, no `[DONE]`).
    fn error_frame(&mut self, out: &mut BytesMut, e: UpstreamError) {
        let charged = self.settle();
        let err = Error::from(e);
        out.put_slice(b"data: ");
        out.put_slice(&serde_json::to_vec(&err.body()).unwrap_or_default());
        out.put_slice(b"\n\n");
        let usage = self.usage;
        self.meter
            .record(err.status().as_u16(), charged, usage.as_ref());
    }
}

impl http_body::Body for ChatStream {
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
        let mut events = std::mem::take(&mut this.events);
        let polled = this.upstream.poll_events(cx, &mut events);
        let mut out = BytesMut::new();
        let result = match polled {
            Poll::Pending => {
                this.events = events;
                return Poll::Pending;
            }
            Poll::Ready(r) => r,
        };
        for ev in events.drain(..) {
            match ev {
                StreamEvent::Delta(text) => this.text_delta(&mut out, &text),
                StreamEvent::Usage(u) => this.usage = Some(u),
                StreamEvent::Finish(f) => this.finish = Some(f),
            }
        }
        this.events = events;
        match result {
            Some(Ok(())) => {}
            None => {
                this.done = true;
                this.finish_frames(&mut out);
            }
            Some(Err(e)) => {
                this.done = true;
                this.error_frame(&mut out, e);
            }
        }
        if out.is_empty() {
            // Usage-only or finish-only upstream chunks produce no frame yet; poll again.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Some(Ok(Frame::data(out.freeze()))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

impl Drop for ChatStream {
    fn drop(&mut self) {
        if self.hold.is_some() {
            // The client went away mid-stream: charge what it was sent (usage seen so far).
            let charged = self.settle();
            let usage = self.usage;
            self.meter.record(CLIENT_CLOSED, charged, usage.as_ref());
        }
    }
}
