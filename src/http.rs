//! HTTP plumbing shared by the gateway and the simulators: body type, builders, capped reads.
//!
//! This layer never imports `api`: it knows bytes, headers and status codes, not products.

pub mod server;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};
use serde::Serialize;

use crate::error::RequestError;

/// Errors a response body may end with (they abort the connection's current message).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// The response body type for every handler. `UnsyncBoxBody` lets streaming state be `!Sync`.
pub type Body = UnsyncBoxBody<Bytes, BodyError>;

pub const JSON: HeaderValue = HeaderValue::from_static("application/json");
pub const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream; charset=utf-8");

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A response with the given status and pre-serialized body bytes.
pub fn bytes_response(
    status: StatusCode,
    content_type: HeaderValue,
    bytes: impl Into<Bytes>,
) -> Response<Body> {
    let mut res = Response::new(full(bytes));
    *res.status_mut() = status;
    res.headers_mut().insert(CONTENT_TYPE, content_type);
    res
}

/// Serializes `value` as a JSON response.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => bytes_response(status, JSON, bytes),
        Err(e) => {
            tracing::error!(%e, "response serialization failed");
            bytes_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                JSON,
                r#"{"error":{"message":"internal error","type":"server_error","param":null,"code":"internal_error"}}"#,
            )
        }
    }
}

/// How much of a refused body is read and dropped before answering. Closing a connection with
/// unread request bytes makes the kernel reset it, and a client still sending (most SDKs send the
/// whole body first) then loses the 413 to the reset; draining lets it read the answer.
const DRAIN_BYTES: u64 = 8 << 20;
/// The longest a refused body is drained.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads a whole request body, refusing anything larger than `limit` bytes with 413. A declared
/// `Content-Length` over the limit is refused without buffering a byte; what the client sends of
/// a refused body is read and dropped, up to `DRAIN_BYTES` (twice the limit when that is more)
/// and `DRAIN_TIME`, so that the client sees the answer instead of a reset.
pub async fn read_body<B>(
    headers: &http::HeaderMap,
    body: B,
    limit: usize,
) -> Result<Bytes, RequestError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Display + Into<BodyError>,
{
    let mut body = std::pin::pin!(body);
    // A route with a large limit (chat's, for media) drains up to twice it, so a client that
    // sends a photo too many gets the 413 too; still within `DRAIN_TIME`, and nothing is kept.
    let drain_cap = DRAIN_BYTES.max((limit as u64).saturating_mul(2));
    if let Some(len) = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()) {
        match len.parse::<u64>() {
            Ok(n) if n > limit as u64 => {
                if n <= drain_cap {
                    drain(body.as_mut(), drain_cap).await;
                }
                return Err(RequestError::BodyTooLarge { limit });
            }
            Ok(_) => {}
            Err(_) => return Err(RequestError::BodyRead("invalid Content-Length".into())),
        }
    }
    match Limited::new(body.as_mut(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            drain(body, drain_cap).await;
            Err(RequestError::BodyTooLarge { limit })
        }
        Err(e) if e.is::<BodyTimeout>() => Err(RequestError::BodyTimeout(e.to_string())),
        Err(e) => Err(RequestError::BodyRead(e.to_string())),
    }
}

/// Why a `TimedBody` gave up.
#[derive(Debug, thiserror::Error)]
pub enum BodyTimeout {
    #[error("no part of the body arrived for {0:?}")]
    Idle(Duration),
    #[error("the body took longer than {0:?}")]
    Deadline(Duration),
}

/// A request body that must arrive whole within `total` of the request head and may not stall
/// longer than `idle` between two frames; past either it ends with `BodyTimeout`, which
/// `read_body` answers with 408 `request_timeout`. A client that trickles a byte every few
/// seconds would otherwise hold its connection (and the task reading it) for ever. The timer is
/// armed only while a read waits, and re-armed without allocating.
pub struct TimedBody<B> {
    inner: B,
    total: Duration,
    deadline: tokio::time::Instant,
    idle: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The timer is set for the current wait (cleared by every frame).
    armed: bool,
}

impl<B> TimedBody<B> {
    pub fn new(inner: B, total: Duration, idle: Duration) -> Self {
        Self {
            inner,
            total,
            deadline: tokio::time::Instant::now() + total,
            idle,
            timer: None,
            armed: false,
        }
    }

    fn timeout(&self) -> BodyError {
        let now = tokio::time::Instant::now();
        Box::new(if now >= self.deadline {
            BodyTimeout::Deadline(self.total)
        } else {
            BodyTimeout::Idle(self.idle)
        })
    }
}

impl<B> http_body::Body for TimedBody<B>
where
    B: http_body::Body + Unpin,
    B::Error: Into<BodyError>,
{
    type Data = B::Data;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.armed = false;
            return Poll::Ready(match frame {
                // Frames that keep coming do not stretch the deadline.
                Some(Ok(_)) if tokio::time::Instant::now() >= this.deadline => {
                    Some(Err(this.timeout()))
                }
                other => other.map(|r| r.map_err(Into::into)),
            });
        }
        if !this.armed {
            let at = (tokio::time::Instant::now() + this.idle).min(this.deadline);
            match &mut this.timer {
                Some(t) => t.as_mut().reset(at),
                None => this.timer = Some(Box::pin(tokio::time::sleep_until(at))),
            }
            this.armed = true;
        }
        match this.timer.as_mut().map(|t| t.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Some(Err(this.timeout()))),
            _ => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Reads and drops the rest of a refused body, within `cap` bytes and `DRAIN_TIME`.
async fn drain<B: http_body::Body<Data = Bytes>>(mut body: std::pin::Pin<&mut B>, cap: u64) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut read = 0u64;
        while read < cap {
            match body.frame().await {
                Some(Ok(frame)) => {
                    read += frame.data_ref().map_or(0, |d| d.len() as u64);
                }
                Some(Err(_)) | None => break,
            }
        }
    })
    .await;
}

/// Parses a query string into decoded `(key, value)` pairs (`+` is a space, `%XX` escapes).
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    let Some(q) = query else { return Vec::new() };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Percent-decoding that never fails: `+` is a space, malformed escapes are kept literally, bad
/// UTF-8 is replaced (the `percent-encoding` crate's lossy decoding).
pub fn percent_decode(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = query_pairs(Some("q=last+simulation&k=5&x=%41%2&empty&y=%zz"));
        assert_eq!(q[0], ("q".into(), "last simulation".into()));
        assert_eq!(q[1], ("k".into(), "5".into()));
        assert_eq!(q[2], ("x".into(), "A%2".into()));
        assert_eq!(q[3], ("empty".into(), "".into()));
        assert_eq!(q[4], ("y".into(), "%zz".into()));
        assert!(query_pairs(None).is_empty());
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
    }

    /// A body of `chunks` 64 KiB frames that counts how many were pulled.
    fn counted(
        chunks: usize,
        pulled: &std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) -> impl http_body::Body<Data = Bytes, Error = BodyError> {
        let pulled = pulled.clone();
        let frames = (0..chunks).map(move |_| {
            pulled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok::<_, BodyError>(http_body::Frame::data(Bytes::from(vec![b'a'; 64 << 10])))
        });
        http_body_util::StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn refused_bodies_are_drained_within_bounds() {
        let limit = 1 << 20;
        let with_length = |n: usize| {
            let mut h = http::HeaderMap::new();
            h.insert(CONTENT_LENGTH, HeaderValue::from(n));
            h
        };
        for (headers, chunks, drained) in [
            // Declared too large: refused unbuffered, and the 2 MiB the client sends are read.
            (with_length(2 << 20), 32, 32),
            // Declared far too large: refused before a byte is read.
            (with_length(1 << 30), 32, 0),
            // Undeclared: cut at the limit, then the rest (3 MiB in all) is read and dropped.
            (http::HeaderMap::new(), 48, 48),
        ] {
            let pulled = std::sync::Arc::default();
            let r = read_body(&headers, counted(chunks, &pulled), limit).await;
            assert!(matches!(r, Err(RequestError::BodyTooLarge { .. })), "{r:?}");
            assert_eq!(pulled.load(std::sync::atomic::Ordering::Relaxed), drained);
        }
        // Within the limit: read whole.
        let pulled = std::sync::Arc::default();
        let r = read_body(&http::HeaderMap::new(), counted(16, &pulled), limit).await;
        assert_eq!(r.map(|b| b.len()).ok(), Some(1 << 20));
    }

    /// A body that sends `pieces` one-byte frames, `gap` apart.
    fn trickle(
        pieces: usize,
        gap: Duration,
    ) -> impl http_body::Body<Data = Bytes, Error = BodyError> + Unpin {
        let frames = futures_util::stream::unfold(0, move |i| async move {
            if i == pieces {
                return None;
            }
            tokio::time::sleep(gap).await;
            Some((
                Ok::<_, BodyError>(http_body::Frame::data(Bytes::from_static(b"x"))),
                i + 1,
            ))
        });
        http_body_util::StreamBody::new(Box::pin(frames))
    }

    #[tokio::test]
    async fn a_stalled_or_trickling_body_times_out() {
        let h = http::HeaderMap::new();
        let ms = Duration::from_millis;
        let (total, idle) = (ms(600), ms(200));
        // A byte every 40 ms: never idle for 200 ms, but 100 bytes would take 4 s.
        let started = tokio::time::Instant::now();
        let body = TimedBody::new(trickle(100, ms(40)), total, idle);
        let r = read_body(&h, body, 1 << 20).await;
        assert!(
            matches!(&r, Err(RequestError::BodyTimeout(m)) if m.contains("longer than")),
            "{r:?}"
        );
        let took = started.elapsed();
        assert!(
            took >= total && took < ms(3000),
            "cut at the deadline: {took:?}"
        );
        // The first byte would come after 300 ms: cut when 200 ms pass without one.
        let started = tokio::time::Instant::now();
        let body = TimedBody::new(trickle(3, ms(300)), total, idle);
        let r = read_body(&h, body, 1 << 20).await;
        assert!(
            matches!(&r, Err(RequestError::BodyTimeout(m)) if m.contains("no part")),
            "{r:?}"
        );
        let took = started.elapsed();
        assert!(took >= idle && took < ms(2000), "cut when idle: {took:?}");
        // Within both limits: read whole.
        let body = TimedBody::new(trickle(5, ms(20)), total, idle);
        assert_eq!(read_body(&h, body, 1 << 20).await.unwrap().len(), 5);
    }
}
