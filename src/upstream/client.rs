//! The pooled outbound HTTP client: hyper-util's legacy pool over rustls (h2 via ALPN on https),
//! spread over several independent pools so that one host gets several h2 connections.
//!
//! hyper-util's pool keeps one h2 connection per host and never opens a second when that one
//! reaches the server's `SETTINGS_MAX_CONCURRENT_STREAMS` (RFC 9113 §9.1 says a client should
//! not; hyperium/hyper#2197, #3623): further requests wait for a free stream. Google's front ends
//! allow about 100 streams per connection, so one pool would cap a gateway at ~100 Gemini calls
//! in flight, however many agents wait. `HttpClient` holds `connections` pools and hands
//! requests to them in turn, for `connections` × the server's limit.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;

type Pool = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The client every outbound call uses: one or more pools, used in turn. Cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    pools: Arc<[Pool]>,
    next: Arc<AtomicUsize>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("pools", &self.pools.len())
            .finish()
    }
}

impl HttpClient {
    /// Sends a request on the next pool in turn.
    pub fn request(&self, req: http::Request<Full<Bytes>>) -> ResponseFuture {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.pools.len();
        self.pools[i].request(req)
    }
}

/// How to build an `HttpClient`.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    /// Idle connections kept per host, over all pools.
    pub max_idle_per_host: usize,
    /// Independent pools, so up to this many h2 connections per host (at least 1).
    pub connections: usize,
    /// Trusted besides the Mozilla root set (a private endpoint's CA).
    pub extra_roots: Vec<CertificateDer<'static>>,
}

/// One pool against the public roots. Plain `http://` (the simulator, test fakes) speaks
/// HTTP/1.1; `https://` negotiates h2 or HTTP/1.1 by ALPN against the Mozilla root set.
pub fn build(connect_timeout: Duration, max_idle_per_host: usize) -> HttpClient {
    build_with(&ClientOptions {
        connect_timeout,
        max_idle_per_host,
        connections: 1,
        extra_roots: Vec::new(),
    })
}

/// Builds the client `opts` describes.
pub fn build_with(opts: &ClientOptions) -> HttpClient {
    let n = opts.connections.max(1);
    let idle = opts.max_idle_per_host.div_ceil(n);
    let pools: Vec<Pool> = (0..n).map(|_| pool(opts, idle)).collect();
    HttpClient {
        pools: pools.into(),
        next: Arc::new(AtomicUsize::new(0)),
    }
}

/// Reads every certificate of a PEM file (`upstream.ca_file`).
pub fn load_roots(path: &Path) -> std::io::Result<Vec<CertificateDer<'static>>> {
    let file = std::fs::File::open(path)?;
    let certs =
        rustls_pemfile::certs(&mut std::io::BufReader::new(file)).collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: no PEM certificate in it", path.display()),
        ));
    }
    Ok(certs)
}

fn pool(opts: &ClientOptions, max_idle_per_host: usize) -> Pool {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(opts.connect_timeout));
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in &opts.extra_roots {
        if let Err(e) = roots.add(cert.clone()) {
            tracing::warn!(%e, "an upstream CA certificate was refused");
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    let tls = match tls {
        Ok(cfg) => cfg,
        Err(e) => {
            // The ring provider always supports the default versions; this is unreachable in practice.
            tracing::error!(%e, "rustls refused the default protocol versions");
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        }
    };
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_timer(TokioTimer::new())
        .pool_max_idle_per_host(max_idle_per_host)
        .timer(TokioTimer::new())
        .build(https)
}
