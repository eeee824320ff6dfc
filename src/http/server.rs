//! The accept loop: HTTP/1.1 and h2 on one port (optionally behind rustls), timeouts, graceful drain.
//!
//! `serve` owns the listener until its shutdown future resolves; then it stops accepting (new
//! connections are refused because the listener is dropped), asks every open connection to finish
//! its in-flight requests (open streams run to their end), and waits up to the grace period.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use super::Body;

/// Connection-level settings.
#[derive(Clone)]
pub struct ServeOptions {
    /// Time a client has to send a complete request head; on HTTP/1.1 this also bounds how long
    /// an idle keep-alive connection waits for its next request.
    pub header_read_timeout: Duration,
    /// HTTP/2 keep-alive: ping interval; a peer that does not answer within it is dropped.
    pub idle_timeout: Duration,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How long open connections may take to finish after shutdown begins.
    pub grace: Duration,
    /// The h2 streams one connection may have open at once (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub max_concurrent_streams: u32,
}

impl ServeOptions {
    pub fn plain(grace: Duration) -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            tls: None,
            grace,
            max_concurrent_streams: 1024,
        }
    }
}

/// Loads a PEM certificate chain and private key into a rustls server config with ALPN h2 + h1.
pub fn load_tls(cert: &Path, key: &Path) -> std::io::Result<Arc<rustls::ServerConfig>> {
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(std::fs::File::open(cert)?))
        .collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(std::fs::File::open(key)?))?
        .ok_or_else(|| invalid(format!("no private key in {}", key.display())))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| invalid(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serves connections from `listener` with `handler` until `shutdown` resolves, then drains.
pub async fn serve<H, F>(
    listener: TcpListener,
    opts: ServeOptions,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(opts.idle_timeout)
        .keep_alive_timeout(opts.idle_timeout)
        .max_concurrent_streams(opts.max_concurrent_streams);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let tls = opts.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let handler = handler.clone();
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let fut = handler(req, peer);
            async move { Ok::<_, Infallible>(fut.await) }
        });
        match &tls {
            None => {
                let conn = builder
                    .serve_connection(TokioIo::new(tcp), svc)
                    .into_owned();
                let conn = graceful.watch(conn);
                #[expect(
                    clippy::disallowed_methods,
                    reason = "connection tasks are owned by the accept loop"
                )]
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%e, %peer, "connection ended");
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let builder = builder.clone();
                let watcher = graceful.watcher();
                let handshake_timeout = opts.header_read_timeout;
                #[expect(
                    clippy::disallowed_methods,
                    reason = "connection tasks are owned by the accept loop"
                )]
                tokio::spawn(async move {
                    let stream =
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => return tracing::debug!(%e, %peer, "tls handshake failed"),
                            Err(_) => return tracing::debug!(%peer, "tls handshake timed out"),
                        };
                    let conn = builder
                        .serve_connection(TokioIo::new(stream), svc)
                        .into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(%e, %peer, "connection ended");
                    }
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(opts.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?opts.grace, "connections still open after the grace period");
    }
}
