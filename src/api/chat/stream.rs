//! The streaming answer body: Gemini events in, OpenAI `chat.completion.chunk` frames out, no
//! buffering beyond the events of one upstream read. It owns the payment and ends it exactly once:
//! at the clean end, on an upstream error, or in `Drop` when the client goes away mid-stream.
//! Gemini answered 200 before this body exists, so the prompt was processed: every ending is
//! billed at the last usage Gemini reported (thinking included), or, when it reported none, at
//! the prompt's bound and the text and thoughts seen so far (`chat::billed_usage`).
//!
//! On x402 the clean end waits for the settlement: success sends `data: [DONE]` and then the
//! receipt as `event: x402-receipt`; a refused settlement ends the stream with an error event.
//!
//! With `n > 1` each candidate's deltas carry its `index` (Gemini's `candidates[].index`); each
//! choice opens with `role: assistant` and ends with its own finish chunk, in index order, before
//! the usage chunk. Log probabilities ride on the chunk of the text they describe.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http_body::Frame;
use std::fmt::Write as _;

use super::super::memory::Remember;
use super::payer::{self, Payer, X402};
use super::{CLIENT_CLOSED, Meter, UsageBound, UsageOut, billed_usage, pay, settle};
use crate::billing::pricing::ModelPrice;
use crate::crypto::to_checksum;
use crate::error::Error;
use crate::http::BodyError;
use crate::openai::{answer, choices};
use crate::payments::{PaymentError, Settlement, SettlementHandle, Verified};
use crate::storage::now_ms;
use crate::upstream::{
    Finish, GeminiStream, StreamEvent, TokenLogprob, TokenUsage, ToolCall, UpstreamError,
};

/// The delta that opens a choice without content.
const OPEN: &str = "{\"role\":\"assistant\",\"content\":\"\"}";

/// Choices a stream tracks at most (`surface::MAX_N`); a candidate index beyond is ignored.
const MAX_CHOICES: usize = crate::openai::surface::MAX_N as usize;

/// One choice's progress.
#[derive(Default)]
struct ChoiceState {
    /// Its first delta (with the role) was sent.
    sent_first: bool,
    /// Function calls sent; with `parallel` false, calls after the first are dropped.
    calls: usize,
    finish: Option<Finish>,
    /// Log probabilities waiting for the chunk of their text.
    logprobs: Vec<TokenLogprob>,
}

/// An x402 stream whose content is done, waiting for its settlement.
struct Awaiting {
    verified: Verified,
    settlement: Pin<Box<SettlementHandle>>,
    kept: u64,
    usage: TokenUsage,
}

pub struct ChatStream {
    upstream: GeminiStream,
    payer: Option<Payer>,
    awaiting: Option<Awaiting>,
    meter: Meter,
    model: ModelPrice,
    /// `data: {"id":…,"object":"chat.completion.chunk","created":…,"model":…,"choices":` — shared
    /// by every chunk.
    prefix: Bytes,
    include_usage: bool,
    events: Vec<StreamEvent>,
    /// Per choice, by index (`n` of them at least).
    choices: Vec<ChoiceState>,
    usage: Option<TokenUsage>,
    /// What the call is billed at when Gemini reports no usage.
    bound: UsageBound,
    /// Bytes of visible text and of thoughts received.
    text_bytes: u64,
    thought_bytes: u64,
    /// The completion id, the base of the tool-call ids.
    id: String,
    parallel: bool,
    done: bool,
    /// The memory write after a clean end, with the answer text collected so far (bounded).
    remember: Option<Remember>,
    answer: String,
}

impl ChatStream {
    #[expect(
        clippy::too_many_arguments,
        reason = "one stream's whole setup, built in one place"
    )]
    pub fn new(
        upstream: GeminiStream,
        payer: Payer,
        meter: Meter,
        model: ModelPrice,
        id: String,
        include_usage: bool,
        remember: Option<Remember>,
        bound: UsageBound,
        parallel: bool,
        n: u32,
    ) -> Self {
        let head = serde_json::json!({"id": &id, "object": "chat.completion.chunk", "created": now_ms() / 1000, "model": model.id});
        // `{"id":…,"model":…}` → `data: {"id":…,"model":…,"choices":`
        let mut prefix = b"data: ".to_vec();
        let head = head.to_string();
        prefix.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
        prefix.extend_from_slice(b",\"choices\":");
        metrics::gauge!("vectorway_streams_in_flight").increment(1.0);
        Self {
            upstream,
            payer: Some(payer),
            awaiting: None,
            meter,
            model,
            prefix: Bytes::from(prefix),
            include_usage,
            events: Vec::with_capacity(4),
            choices: (0..n.clamp(1, MAX_CHOICES as u32))
                .map(|_| ChoiceState::default())
                .collect(),
            usage: None,
            bound,
            text_bytes: 0,
            thought_bytes: 0,
            id,
            parallel,
            done: false,
            remember,
            answer: String::new(),
        }
    }

    /// One chunk of choice `index`; unless `bare`, it carries (and takes) the choice's waiting
    /// log probabilities.
    fn chunk(
        &mut self,
        out: &mut BytesMut,
        index: usize,
        delta: &str,
        finish: Option<Finish>,
        bare: bool,
    ) {
        out.put_slice(&self.prefix);
        out.put_slice(b"[{\"index\":");
        let _ = write!(out, "{index}");
        out.put_slice(b",\"delta\":");
        out.put_slice(delta.as_bytes());
        out.put_slice(b",\"logprobs\":");
        match self
            .choices
            .get_mut(index)
            .filter(|_| !bare)
            .map(|c| std::mem::take(&mut c.logprobs))
        {
            Some(l) if !l.is_empty() => out.put_slice(
                &serde_json::to_vec(&choices::logprobs_out(Some(&l)))
                    .unwrap_or_else(|_| b"null".to_vec()),
            ),
            _ => out.put_slice(b"null"),
        }
        out.put_slice(b",\"finish_reason\":");
        match finish {
            Some(f) => {
                out.put_u8(b'"');
                out.put_slice(f.as_openai().as_bytes());
                out.put_u8(b'"');
                if let Some(native) = f.native() {
                    out.put_slice(b",\"native_finish_reason\":\"");
                    out.put_slice(native.as_bytes());
                    out.put_u8(b'"');
                }
            }
            None => out.put_slice(b"null"),
        }
        out.put_slice(if self.include_usage {
            b"}],\"usage\":null}\n\n"
        } else {
            b"}]}\n\n"
        });
    }

    /// Whether this choice's next delta is its first (and so carries the role); marks it sent.
    fn opens(&mut self, index: usize) -> bool {
        self.choices
            .get_mut(index)
            .is_some_and(|c| !std::mem::replace(&mut c.sent_first, true))
    }

    fn text_delta(&mut self, out: &mut BytesMut, index: usize, text: &str) {
        self.text_bytes += text.len() as u64;
        let escaped = serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into());
        let with_logprobs = self
            .choices
            .get(index)
            .is_some_and(|c| !c.logprobs.is_empty());
        let delta = if !self.opens(index) {
            format!("{{\"content\":{escaped}}}")
        } else if with_logprobs {
            // Log probabilities never ride on a choice's first chunk: the SDKs' stream helpers
            // build a choice from its first chunk and then add that chunk's log probabilities
            // again (OpenAI opens every choice with an empty role chunk).
            self.chunk(out, index, OPEN, None, true);
            format!("{{\"content\":{escaped}}}")
        } else {
            format!("{{\"role\":\"assistant\",\"content\":{escaped}}}")
        };
        self.chunk(out, index, &delta, None, false);
        if index == 0
            && let Some(r) = &self.remember
        {
            // Memory keeps at most `max_chars` characters; 4 bytes a character is the ceiling.
            let room = (r.max_chars * 4).saturating_sub(self.answer.len());
            let mut cut = text.len().min(room);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            self.answer.push_str(&text[..cut]);
        }
    }

    /// A function call, whole, in one delta (`crate::openai::answer`).
    fn tool_call_delta(&mut self, out: &mut BytesMut, index: usize, call: &ToolCall) {
        let Some(sent) = self.choices.get(index).map(|c| c.calls) else {
            return;
        };
        if !self.parallel && sent > 0 {
            return;
        }
        self.text_bytes += (call.name.len() + call.args.to_string().len()) as u64;
        let first = self.opens(index);
        let base = choices::calls_base(&self.id, index as u32);
        let delta = answer::stream_delta(&base, sent, call, first);
        self.chunk(out, index, &delta, None, true);
        if let Some(c) = self.choices.get_mut(index) {
            c.calls += 1;
        }
    }

    /// Applies one upstream event to choice `index` (0 unless it came `Indexed`).
    fn apply(&mut self, out: &mut BytesMut, index: usize, ev: StreamEvent) {
        if index >= self.choices.len() && index < MAX_CHOICES {
            self.choices.resize_with(index + 1, ChoiceState::default);
        }
        match ev {
            StreamEvent::Delta(text) => self.text_delta(out, index, &text),
            StreamEvent::ToolCall(call) => self.tool_call_delta(out, index, &call),
            StreamEvent::Thought(bytes) => self.thought_bytes += bytes,
            StreamEvent::Usage(u) => self.usage = Some(u),
            StreamEvent::Finish(f) => {
                if let Some(c) = self.choices.get_mut(index) {
                    c.finish = Some(f);
                }
            }
            StreamEvent::Logprobs(l) => {
                if let Some(c) = self.choices.get_mut(index) {
                    c.logprobs.extend(l);
                }
            }
            StreamEvent::Indexed(i, inner) => self.apply(out, i as usize, *inner),
        }
    }

    /// What the call is billed at now.
    fn billed(&self) -> TokenUsage {
        billed_usage(self.usage, &self.bound, self.text_bytes, self.thought_bytes)
    }

    /// Ends the payment of a stream that did not finish cleanly, billed at what was generated so
    /// far, and records the call with `status` (see `Payer::finish_detached`).
    fn settle_partial(&mut self, status: u16) {
        let usage = self.billed();
        let cost = self
            .model
            .cost_cached(usage.prompt, usage.cached, usage.completion);
        if let Some(p) = self.payer.take() {
            p.finish_detached(&self.meter, status, cost, usage);
        }
    }

    /// The clean end of the content: final chunk and usage chunk; then `[DONE]` (credits), or
    /// the wait for the x402 settlement.
    fn finish_frames(&mut self, out: &mut BytesMut) {
        let usage = self.billed();
        let cost = self
            .model
            .cost_cached(usage.prompt, usage.cached, usage.completion);
        let costs = match self.payer.take() {
            Some(Payer::Credits(hold)) => {
                let charged = hold.commit(cost, Some(self.meter.request_id.clone()));
                self.meter.record(200, charged, Some(&usage));
                (Some(charged), None)
            }
            Some(Payer::X402(x)) => {
                let X402 {
                    verified,
                    settlement,
                } = *x;
                let kept = pay::kept(
                    cost,
                    self.meter.state.config.x402.min_quote,
                    verified.amount,
                );
                // The usage event waits for the settlement's outcome (`settled_frames`).
                self.awaiting = Some(Awaiting {
                    verified,
                    settlement: Box::pin(settlement),
                    kept,
                    usage,
                });
                (None, Some(pay::usd(kept)))
            }
            None => (None, None),
        };
        for index in 0..self.choices.len() {
            if self.opens(index) {
                // A choice with no visible text (all thinking, blocked, empty) still opens with
                // the assistant role, and is paid like any other complete answer.
                self.chunk(out, index, OPEN, None, true);
            }
            let c = &self.choices[index];
            let finish = c.finish.unwrap_or(Finish::Stop).with_calls(c.calls);
            self.chunk(out, index, "{}", Some(finish), false);
        }
        if self.include_usage {
            let u = UsageOut::new(&usage, &self.model.id, costs, self.meter.memory);
            out.put_slice(&self.prefix);
            out.put_slice(b"[],\"usage\":");
            out.put_slice(&serde_json::to_vec(&u).unwrap_or_else(|_| b"null".to_vec()));
            out.put_slice(b"}\n\n");
        }
        if self.awaiting.is_none() {
            out.put_slice(b"data: [DONE]\n\n");
            self.done = true;
        }
        // A step that ends in function calls is not the answer yet (see `chat::run`).
        let calls = self.choices.first().map_or(0, |c| c.calls);
        if let Some(r) = self.remember.take().filter(|_| calls == 0) {
            r.spawn(std::mem::take(&mut self.answer));
        }
    }

    /// The x402 settlement finished: `[DONE]` and the receipt, or an error event.
    fn settled_frames(
        &mut self,
        out: &mut BytesMut,
        a: Awaiting,
        outcome: Result<Settlement, PaymentError>,
    ) {
        match &outcome {
            Ok(s) => {
                pay::credit_change_after(
                    self.meter.state.clone(),
                    a.verified.clone(),
                    std::future::ready(Ok(s.clone())),
                    a.kept,
                );
                let receipt = serde_json::json!({
                    "object": "chat.completion.chunk", "choices": [],
                    "transaction": s.transaction, "network": a.verified.network_name(),
                    "amount": a.verified.amount.to_string(), "payer": to_checksum(&s.payer),
                    "kept": a.kept.to_string(),
                });
                out.put_slice(b"data: [DONE]\n\nevent: x402-receipt\ndata: ");
                out.put_slice(receipt.to_string().as_bytes());
                out.put_slice(b"\n\n");
                self.meter.record(200, a.kept, Some(&a.usage));
            }
            Err(e) => {
                // The payment did not go through: cut the stream with an error, no `[DONE]`.
                out.put_slice(b"data: ");
                out.put_slice(
                    &serde_json::to_vec(&Error::from(e.clone()).body()).unwrap_or_default(),
                );
                out.put_slice(b"\n\n");
                self.meter.record(402, 0, Some(&a.usage));
                // Refuses this payer's streams until a payment of theirs settles (before the
                // client can see this event), and ends the payment's intent: forgotten, or
                // recovered if money may have moved.
                settle::finish_refused_stream(
                    self.meter.state.clone(),
                    a.verified.clone(),
                    e.clone(),
                    a.kept,
                );
            }
        }
        self.done = true;
    }

    /// A mid-stream failure: an OpenAI error event, then the end (no fake `stop`, no `[DONE]`).
    fn error_frame(&mut self, out: &mut BytesMut, e: UpstreamError) {
        let err = Error::from(e);
        self.settle_partial(err.status().as_u16());
        out.put_slice(b"data: ");
        out.put_slice(&serde_json::to_vec(&err.body()).unwrap_or_default());
        out.put_slice(b"\n\n");
        self.done = true;
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
        let mut out = BytesMut::new();
        if let Some(a) = this.awaiting.as_mut() {
            let outcome = match a.settlement.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(o) => o,
            };
            if let Some(a) = this.awaiting.take() {
                this.settled_frames(&mut out, a, outcome);
            }
            return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
        }
        let mut events = std::mem::take(&mut this.events);
        let result = match this.upstream.poll_events(cx, &mut events) {
            Poll::Pending => {
                this.events = events;
                return Poll::Pending;
            }
            Poll::Ready(r) => r,
        };
        for ev in events.drain(..) {
            this.apply(&mut out, 0, ev);
        }
        this.events = events;
        match result {
            Some(Ok(())) => {}
            None => this.finish_frames(&mut out),
            Some(Err(e)) => this.error_frame(&mut out, e),
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
        metrics::gauge!("vectorway_streams_in_flight").decrement(1.0);
        if self.payer.is_some() {
            // The client went away mid-stream: it pays for what was generated so far.
            self.settle_partial(CLIENT_CLOSED);
        } else if let Some(a) = self.awaiting.take() {
            // Gone after the whole answer, while the settlement was pending: it still runs; the
            // change is credited and the call recorded after it.
            let settlement =
                payer::recorded(a.settlement, self.meter.clone(), 200, a.kept, a.usage);
            pay::credit_change_after(self.meter.state.clone(), a.verified, settlement, a.kept);
        }
    }
}
