//! The gateway's fetch of an image URL, built against SSRF: the host is resolved here, every
//! address is checked against `ssrf::Policy`, and the connection goes to a checked address (no
//! second lookup a DNS rebinding could answer differently). Each redirect is a new URL, parsed,
//! resolved and checked the same way. `https://` only unless the operator allows `http://`;
//! no credentials in URLs; a size cap per item and per request (`Budget`); a connect time-out
//! and a time-out over the whole fetch; the response's `Content-Type` must be an image type
//! Gemini takes (the bytes are sniffed again by `Media::new`).
//!
//! One connection per hop, HTTP/1.1 (hyper's client connection, driven in this task, never
//! spawned), TLS by rustls against the Mozilla roots plus `media.ca_file`.

use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::header::{
    ACCEPT, ACCEPT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HOST, LOCATION, USER_AGENT,
};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::IMAGE_MIMES;
use crate::config::MediaConfig;
use crate::error::MediaFault;

const USER_AGENT_VALUE: &str = concat!("vectorway-image-fetch/", env!("CARGO_PKG_VERSION"));
const ACCEPT_VALUE: &str = "image/png, image/jpeg, image/webp, image/heic, image/heif";

/// Why a fetch failed, with the fault it is reported as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError {
    pub fault: MediaFault,
    pub message: String,
}

fn err(fault: MediaFault, message: impl Into<String>) -> FetchError {
    FetchError {
        fault,
        message: message.into(),
    }
}

fn failed(message: impl Into<String>) -> FetchError {
    err(MediaFault::FetchFailed, message)
}

/// The bytes of media one request may still take (shared by its parts and concurrent fetches).
#[derive(Debug)]
pub struct Budget(AtomicUsize);

impl Budget {
    pub fn new(bytes: usize) -> Self {
        Self(AtomicUsize::new(bytes))
    }

    /// Takes `n` bytes, or returns false (taking nothing) when fewer are left.
    pub fn take(&self, n: usize) -> bool {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(n)
            })
            .is_ok()
    }
}

/// A fetched image: its bytes and the `Content-Type` it was served with.
#[derive(Debug)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub content_type: String,
}

/// Where one hop goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    https: bool,
    /// Lower case, without IPv6 brackets.
    host: String,
    port: u16,
    /// The `Host` header: the URL's authority.
    authority: String,
    path: String,
}

impl Target {
    fn parse(url: &str, allow_http: bool) -> Result<Self, FetchError> {
        let url = url.split('#').next().unwrap_or_default();
        let uri: Uri = url
            .parse()
            .map_err(|_| err(MediaFault::Invalid, "the image URL is not a valid URL"))?;
        let https = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("https") => true,
            Some("http") if allow_http => false,
            Some("http") => {
                return Err(err(
                    MediaFault::Forbidden,
                    "http:// image URLs are not fetched; send an https:// or data: URL",
                ));
            }
            _ => {
                return Err(err(
                    MediaFault::Invalid,
                    "an image URL must be https:// or a data: URL",
                ));
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| err(MediaFault::Invalid, "the image URL has no host"))?;
        if authority.as_str().contains('@') {
            return Err(err(
                MediaFault::Forbidden,
                "image URLs with credentials (user@host) are not fetched",
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if host.is_empty() {
            return Err(err(MediaFault::Invalid, "the image URL has no host"));
        }
        Ok(Self {
            https,
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            authority: authority.as_str().to_string(),
            host,
            path: uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
        })
    }

    /// The absolute URL a `Location` header names, relative to this hop.
    fn join(&self, location: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        let absolute = location.split_once("://").is_some_and(|(s, _)| {
            !s.is_empty()
                && s.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
        });
        if absolute {
            location.to_string()
        } else if location.starts_with("//") {
            format!("{scheme}:{location}")
        } else if location.starts_with('/') {
            format!("{scheme}://{}{location}", self.authority)
        } else {
            let path = self.path.split('?').next().unwrap_or("/");
            let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
            format!("{scheme}://{}{dir}{location}", self.authority)
        }
    }
}

/// What one hop answered.
enum Hop {
    Redirect(String),
    Body(Fetched),
}

/// Fetches image URLs under the `media` config. Cheap to share.
#[derive(Clone)]
pub struct Fetcher {
    cfg: Arc<MediaConfig>,
    tls: TlsConnector,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher").finish_non_exhaustive()
    }
}

impl Fetcher {
    pub fn new(cfg: &MediaConfig) -> Self {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for cert in &cfg.extra_roots {
            if let Err(e) = roots.add(cert.clone()) {
                tracing::warn!(%e, "a media.ca_file certificate was refused");
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
        let mut tls = match tls {
            Ok(c) => c,
            Err(e) => {
                // The ring provider always supports the default versions.
                tracing::error!(%e, "rustls refused the default protocol versions");
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth()
            }
        };
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self {
            cfg: Arc::new(cfg.clone()),
            tls: TlsConnector::from(Arc::new(tls)),
        }
    }

    /// Fetches `url` (following at most `max_redirects` redirects), taking its bytes from
    /// `budget`; everything within `fetch_timeout`.
    pub async fn fetch(&self, url: &str, budget: &Budget) -> Result<Fetched, FetchError> {
        match tokio::time::timeout(self.cfg.fetch_timeout, self.follow(url, budget)).await {
            Ok(r) => r,
            Err(_) => Err(failed(format!(
                "fetching the image took longer than {} ms",
                self.cfg.fetch_timeout.as_millis()
            ))),
        }
    }

    async fn follow(&self, url: &str, budget: &Budget) -> Result<Fetched, FetchError> {
        let mut target = Target::parse(url, self.cfg.allow_http)?;
        for hop in 0..=self.cfg.max_redirects {
            let result = match self.resolve(&target).await {
                Ok(addrs) => self.exchange(&target, &addrs, budget).await,
                Err(e) => Err(e),
            };
            let next = match result {
                Ok(Hop::Body(f)) => return Ok(f),
                Ok(Hop::Redirect(location)) => {
                    let next = target.join(&location);
                    Target::parse(&next, self.cfg.allow_http).map(|t| (t, next))
                }
                Err(e) => Err(e),
            };
            match next {
                Ok((t, _)) => target = t,
                Err(e) if hop == 0 => return Err(e),
                Err(e) => {
                    return Err(FetchError {
                        fault: e.fault,
                        message: format!("after a redirect: {}", e.message),
                    });
                }
            }
        }
        Err(failed(format!(
            "the image URL redirected more than {} times",
            self.cfg.max_redirects
        )))
    }

    /// Every address of the host, each allowed by the policy (one refused address refuses the
    /// host: a name that mixes public and private answers is not fetched).
    async fn resolve(&self, t: &Target) -> Result<Vec<SocketAddr>, FetchError> {
        let addrs: Vec<SocketAddr> = match t.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, t.port)],
            Err(_) => tokio::net::lookup_host((t.host.as_str(), t.port))
                .await
                .map_err(|e| failed(format!("cannot resolve {}: {e}", t.host)))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(failed(format!("{} has no address", t.host)));
        }
        for a in &addrs {
            self.cfg.policy.check(&t.host, a.ip()).map_err(|why| {
                err(
                    MediaFault::Forbidden,
                    format!(
                        "{} is {} ({why}): the gateway does not fetch images from it",
                        t.host,
                        a.ip()
                    ),
                )
            })?;
        }
        Ok(addrs)
    }

    async fn connect(&self, addrs: &[SocketAddr]) -> Result<TcpStream, FetchError> {
        let mut last = String::new();
        for a in addrs {
            match tokio::time::timeout(self.cfg.connect_timeout, TcpStream::connect(a)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Ok(Err(e)) => last = format!("cannot connect to {a}: {e}"),
                Err(_) => last = format!("connecting to {a} timed out"),
            }
        }
        Err(failed(last))
    }

    async fn exchange(
        &self,
        t: &Target,
        addrs: &[SocketAddr],
        budget: &Budget,
    ) -> Result<Hop, FetchError> {
        let tcp = self.connect(addrs).await?;
        if !t.https {
            return self.http1(TokioIo::new(tcp), t, budget).await;
        }
        let name = ServerName::try_from(t.host.clone()).map_err(|_| {
            err(
                MediaFault::Invalid,
                "the image URL's host is not a valid name",
            )
        })?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| failed(format!("TLS with {} failed: {e}", t.host)))?;
        self.http1(TokioIo::new(tls), t, budget).await
    }

    async fn http1<I>(&self, io: I, t: &Target, budget: &Budget) -> Result<Hop, FetchError>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (mut send, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io)
            .await
            .map_err(|e| failed(format!("HTTP with {} failed: {e}", t.host)))?;
        let req = Request::get(t.path.as_str())
            .header(HOST, t.authority.as_str())
            .header(USER_AGENT, USER_AGENT_VALUE)
            .header(ACCEPT, ACCEPT_VALUE)
            .header(ACCEPT_ENCODING, "identity")
            .body(Empty::new())
            .map_err(|_| err(MediaFault::Invalid, "the image URL is not a valid URL"))?;
        let cap = self.cfg.max_item_bytes;
        let work = async move {
            let res = send
                .send_request(req)
                .await
                .map_err(|e| failed(format!("the image server did not answer: {e}")))?;
            let status = res.status();
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                return match res.headers().get(LOCATION).and_then(|v| v.to_str().ok()) {
                    Some(l) => Ok(Hop::Redirect(l.to_string())),
                    None => Err(failed(format!(
                        "the image server answered {status} without a Location"
                    ))),
                };
            }
            if status != StatusCode::OK {
                return Err(failed(format!("the image server answered {status}")));
            }
            let content_type = res
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| {
                    v.split(';')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_ascii_lowercase()
                })
                .unwrap_or_default();
            if !(IMAGE_MIMES.contains(&content_type.as_str()) || content_type == "image/jpg") {
                return Err(err(
                    MediaFault::UnsupportedType,
                    format!(
                        "the image URL served '{content_type}'; accepted: {}",
                        IMAGE_MIMES.join(", ")
                    ),
                ));
            }
            let declared = res
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > cap as u64) {
                return Err(too_large_item(cap));
            }
            let mut body = res.into_body();
            let mut bytes = Vec::with_capacity(declared.map_or(0, |n| n as usize));
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| failed(format!("reading the image failed: {e}")))?;
                if let Ok(data) = frame.into_data() {
                    if bytes.len() + data.len() > cap {
                        return Err(too_large_item(cap));
                    }
                    if !budget.take(data.len()) {
                        return Err(err(
                            MediaFault::TooLarge,
                            "the request's media exceed the gateway's total size cap",
                        ));
                    }
                    bytes.extend_from_slice(&data);
                }
            }
            Ok(Hop::Body(Fetched {
                bytes,
                content_type,
            }))
        };
        let mut work = pin!(work);
        let mut conn = pin!(conn);
        tokio::select! {
            biased;
            r = &mut work => r,
            c = &mut conn => match c {
                // Closed after the answer: what it delivered is still read.
                Ok(()) => work.await,
                Err(e) => Err(failed(format!("the connection to {} failed: {e}", t.host))),
            },
        }
    }
}

fn too_large_item(cap: usize) -> FetchError {
    err(
        MediaFault::TooLarge,
        format!("the image is larger than the gateway's {cap}-byte cap"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_strictly() {
        let t = Target::parse("https://Example.COM/a/b.png?x=1#frag", false).unwrap();
        assert_eq!(
            (t.https, t.host.as_str(), t.port, t.path.as_str()),
            (true, "example.com", 443, "/a/b.png?x=1")
        );
        let t = Target::parse("https://[::1]:8443/x", false).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8443));
        let forbidden = |u: &str, http| Target::parse(u, http).unwrap_err().fault;
        assert_eq!(
            forbidden("http://example.com/a.png", false),
            MediaFault::Forbidden
        );
        assert!(Target::parse("http://example.com/a.png", true).is_ok());
        assert_eq!(
            forbidden("https://user:pw@example.com/", false),
            MediaFault::Forbidden
        );
        assert_eq!(
            forbidden("ftp://example.com/a.png", true),
            MediaFault::Invalid
        );
        assert_eq!(forbidden("file:///etc/passwd", true), MediaFault::Invalid);
        assert_eq!(forbidden("not a url", true), MediaFault::Invalid);
    }

    #[test]
    fn redirects_resolve_against_the_current_hop() {
        let t = Target::parse("https://a.example:8443/img/x.png?q=1", false).unwrap();
        assert_eq!(t.join("https://b.example/y"), "https://b.example/y");
        assert_eq!(t.join("//c.example/z"), "https://c.example/z");
        assert_eq!(t.join("/root.png"), "https://a.example:8443/root.png");
        assert_eq!(t.join("sib.png"), "https://a.example:8443/img/sib.png");
        assert_eq!(
            t.join("/p?u=http://x"),
            "https://a.example:8443/p?u=http://x"
        );
    }

    #[test]
    fn the_budget_is_never_overdrawn() {
        let b = Budget::new(10);
        assert!(b.take(6));
        assert!(!b.take(5));
        assert!(b.take(4));
        assert!(!b.take(1));
    }
}
