//! HTTP plumbing shared by the gateway and the simulators: body type, builders, capped reads.
//!
//! This layer never imports `api`: it knows bytes, headers and status codes, not products.

pub mod server;

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
/// a refused body is read and dropped, up to `DRAIN_BYTES` and `DRAIN_TIME`, so that the client
/// sees the answer instead of a reset.
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
    if let Some(len) = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()) {
        match len.parse::<u64>() {
            Ok(n) if n > limit as u64 => {
                if n <= DRAIN_BYTES {
                    drain(body.as_mut()).await;
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
            drain(body).await;
            Err(RequestError::BodyTooLarge { limit })
        }
        Err(e) => Err(RequestError::BodyRead(e.to_string())),
    }
}

/// Reads and drops the rest of a refused body, within `DRAIN_BYTES` and `DRAIN_TIME`.
async fn drain<B: http_body::Body<Data = Bytes>>(mut body: std::pin::Pin<&mut B>) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut read = 0u64;
        while read < DRAIN_BYTES {
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
}
