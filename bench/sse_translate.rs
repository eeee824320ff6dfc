//! Throughput (bytes/s) of the Gemini SSE decode path: `SseDecoder` framing + `decode_chunk`.
//!
//! The stream is built here in the exact wire shape of `gemini-openai-wire.md` §1.7 (one
//! `data: <JSON>` line per event, `": "`/`","` spacing as Google sends it, `\r\n\r\n` after every
//! event, no `[DONE]`, `usageMetadata` with running totals on every chunk, `finishReason` only on
//! the last one). It is fed (a) as one buffer, (b) in 64-byte reads and (c) in 7-byte reads (the
//! worst case: almost every read splits a line, and many split the `\r\n` pair). The decoded
//! events are checked once before measuring, so the bench cannot silently measure an error path.
//!
//! Groups:
//! * `gemini_sse_translate`: framing + JSON decode into `StreamEvent`s (what `GeminiStream` does).
//! * `gemini_sse_framing`: `SseDecoder` alone, to show how the time splits.
//!
//! Not measured: the OpenAI side (`chat.completion.chunk` frame building). It lives in
//! `api::chat::stream::ChatStream`, whose `chunk`/`text_delta` are private and whose only
//! constructor needs a live `GeminiStream` (hyper `Incoming` body), a `Hold` and a `Meter` (no
//! public constructor), so it cannot be reached from a bench without a whole server. Only the
//! decode side is benched.

use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use vectorway::upstream::gemini::sse::SseDecoder;
use vectorway::upstream::gemini::translate::decode_chunk;
use vectorway::upstream::{Finish, StreamEvent, TokenUsage};

/// Events in the recorded stream.
const EVENTS: usize = 200;
const PROMPT_TOKENS: u64 = 1_187;
const THOUGHT_TOKENS: u64 = 412;
const RESPONSE_ID: &str = "wzCjaPa4As7shMIP2Mei0AI";

/// Words the deltas are made of: plain prose, markdown, code, an escaped quote, non-ASCII.
const WORDS: &[&str] = &[
    "the",
    "gateway",
    "streams",
    "tokens",
    "as",
    "they",
    "arrive,",
    "and",
    "**bold**",
    "`code`",
    "\"quoted\"",
    "naïve",
    "café",
    "—",
    "über",
    "42",
    "ms.",
    "\n\n",
    "\n* ",
    "Paris",
    "is",
    "a",
    "city",
    "of",
    "{\"k\": 1}",
    "tab\there",
    "→",
    "emoji 🙂",
];

/// A deterministic text delta of roughly 40–240 bytes (xorshift, so the bench is reproducible).
fn delta_text(i: usize, rng: &mut u64) -> String {
    let mut next = || {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    };
    let target = 40 + (next() % 200) as usize;
    let mut s = String::with_capacity(target + 16);
    if i == 0 {
        s.push_str("Sure");
    }
    while s.len() < target {
        s.push(' ');
        s.push_str(WORDS[(next() % WORDS.len() as u64) as usize]);
    }
    s
}

/// The recorded stream and what decoding it must yield.
struct Recording {
    wire: Vec<u8>,
    text: String,
    usage: TokenUsage,
}

fn record() -> Recording {
    let mut rng = 0x9E37_79B9_7F4A_7C15_u64;
    let mut wire = Vec::new();
    let mut text = String::new();
    let mut candidates = 0u64;
    for i in 0..EVENTS {
        let delta = delta_text(i, &mut rng);
        text.push_str(&delta);
        // ~4 bytes per token, like English prose.
        candidates += (delta.len() as u64).div_ceil(4);
        let escaped =
            serde_json::to_string(&delta).unwrap_or_else(|e| panic!("escaping a delta: {e}"));
        let last = i + 1 == EVENTS;
        let finish = if last {
            ",\"finishReason\": \"STOP\""
        } else {
            ""
        };
        let candidate_details = if last {
            format!(
                ",\"candidatesTokensDetails\": [{{\"modality\": \"TEXT\",\"tokenCount\": {candidates}}}]"
            )
        } else {
            String::new()
        };
        let total = PROMPT_TOKENS + candidates + THOUGHT_TOKENS;
        let event = format!(
            "data: {{\"candidates\": [{{\"content\": {{\"parts\": [{{\"text\": {escaped}}}],\"role\": \"model\"}}{finish}}}],\
             \"usageMetadata\": {{\"promptTokenCount\": {PROMPT_TOKENS},\"candidatesTokenCount\": {candidates},\
             \"totalTokenCount\": {total},\"promptTokensDetails\": [{{\"modality\": \"TEXT\",\"tokenCount\": {PROMPT_TOKENS}}}]\
             {candidate_details},\"thoughtsTokenCount\": {THOUGHT_TOKENS}}},\
             \"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"{RESPONSE_ID}\"}}\r\n\r\n"
        );
        wire.extend_from_slice(event.as_bytes());
    }
    let usage = TokenUsage {
        prompt: PROMPT_TOKENS,
        completion: candidates + THOUGHT_TOKENS,
        reasoning: THOUGHT_TOKENS,
        cached: 0,
    };
    Recording { wire, text, usage }
}

/// Framing + translation, the way `GeminiStream::poll_events` drives them; returns the number of
/// events produced.
fn translate(reads: &[&[u8]], events: &mut Vec<StreamEvent>) -> usize {
    let mut decoder = SseDecoder::new();
    let mut n = 0;
    for read in reads {
        if let Err(e) = decoder.feed(read) {
            panic!("feed: {e}");
        }
        while let Some(data) = decoder.next_event() {
            if let Err(e) = decode_chunk(&data, events) {
                panic!("decode_chunk: {e}");
            }
            n += events.len();
            // `ChatStream` drains the events of each upstream read into frames.
            black_box(&mut *events).clear();
        }
    }
    if let Some(tail) = decoder.finish() {
        panic!("unexpected tail after the last event: {tail:?}");
    }
    n
}

/// `SseDecoder` alone; returns the number of payload bytes.
fn frame(reads: &[&[u8]]) -> usize {
    let mut decoder = SseDecoder::new();
    let mut bytes = 0;
    for read in reads {
        if let Err(e) = decoder.feed(read) {
            panic!("feed: {e}");
        }
        while let Some(data) = decoder.next_event() {
            bytes += black_box(data).len();
        }
    }
    if let Some(tail) = decoder.finish() {
        panic!("unexpected tail after the last event: {tail:?}");
    }
    bytes
}

/// Decodes once and checks the result against the recording.
fn check(rec: &Recording, reads: &[&[u8]], label: &str) {
    let mut decoder = SseDecoder::new();
    let mut events = Vec::new();
    for read in reads {
        if let Err(e) = decoder.feed(read) {
            panic!("{label}: feed: {e}");
        }
        while let Some(data) = decoder.next_event() {
            if let Err(e) = decode_chunk(&data, &mut events) {
                panic!("{label}: decode_chunk: {e}");
            }
        }
    }
    if let Some(item) = decoder.finish() {
        panic!("{label}: unexpected tail {item:?}");
    }
    let mut text = String::new();
    let (mut deltas, mut usages, mut finishes) = (0, 0, Vec::new());
    let mut last_usage = None;
    for ev in events {
        match ev {
            StreamEvent::Delta(t) => {
                deltas += 1;
                text.push_str(&t);
            }
            StreamEvent::Usage(u) => {
                usages += 1;
                last_usage = Some(u);
            }
            StreamEvent::Finish(f) => finishes.push(f),
            StreamEvent::Thought(_) => panic!("{label}: the fixture has no thought parts"),
            StreamEvent::ToolCall(_) => panic!("{label}: the fixture has no function calls"),
            StreamEvent::Logprobs(_) | StreamEvent::Indexed(..) => {
                panic!("{label}: the fixture has one candidate and no logprobs")
            }
        }
    }
    assert_eq!(
        (deltas, usages),
        (EVENTS, EVENTS),
        "{label}: one delta and one usage per event"
    );
    assert_eq!(finishes, [Finish::Stop], "{label}: one finish, at the end");
    assert_eq!(last_usage, Some(rec.usage), "{label}: last usage");
    assert!(
        text == rec.text,
        "{label}: the concatenated deltas differ from the recording"
    );
}

/// The three ways of reading the recording.
fn splits(wire: &[u8]) -> [(&'static str, Vec<&[u8]>); 3] {
    [
        ("one_buffer", vec![wire]),
        ("reads_64B", wire.chunks(64).collect()),
        ("reads_7B", wire.chunks(7).collect()),
    ]
}

fn group<'a>(c: &'a mut Criterion, name: &str, bytes: usize) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Bytes(bytes as u64));
    g
}

fn benches(c: &mut Criterion) {
    let rec = record();
    let bytes = rec.wire.len();
    let splits = splits(&rec.wire);
    for (label, reads) in &splits {
        check(&rec, reads, label);
    }

    let mut g = group(c, "gemini_sse_translate", bytes);
    for (label, reads) in &splits {
        let mut events = Vec::with_capacity(4);
        g.bench_function(*label, |b| {
            b.iter(|| translate(black_box(reads), &mut events))
        });
    }
    g.finish();

    let mut g = group(c, "gemini_sse_framing", bytes);
    for (label, reads) in &splits {
        g.bench_function(*label, |b| b.iter(|| frame(black_box(reads))));
    }
    g.finish();
}

criterion_group!(sse, benches);
criterion_main!(sse);
