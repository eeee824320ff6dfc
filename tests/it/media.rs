//! Images (and audio, PDF) in chat turns through the real server: data URLs reach Gemini as
//! `inlineData` and are counted; image URLs are fetched by the gateway from a tiny image server
//! on 127.0.0.1 only when the operator allows it, and every SSRF refusal (loopback, private,
//! metadata, a redirect to loopback), an oversized image and a wrong type is a 400 before any
//! upstream call, with nothing charged; image-heavy calls never exceed their hold or quote.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use vectorway::config::Config;
use vectorway::media::ssrf::Cidr;
use vectorway::payments::sign::Signer;
use vectorway::storage::LedgerKind;

use crate::harness::{Env, W1, fast_knobs, localhost_cert, sse_data};

/// A PNG signature and header: all the simulator (and the gateway's bound) reads.
fn png(w: u32, h: u32) -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    b.extend_from_slice(&w.to_be_bytes());
    b.extend_from_slice(&h.to_be_bytes());
    b.extend_from_slice(&[8, 6, 0, 0, 0, 0x1f, 0x15, 0xc4, 0x89]);
    b
}

fn data_png(w: u32, h: u32) -> String {
    format!("data:image/png;base64,{}", STANDARD.encode(png(w, h)))
}

/// What the image server answers for a path.
#[derive(Clone, Default)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// Close-delimited: no `Content-Length`.
    no_length: bool,
    delay: Duration,
}

fn image(body: Vec<u8>) -> Reply {
    Reply {
        status: 200,
        headers: vec![("content-type", "image/png".into())],
        body,
        ..Reply::default()
    }
}

fn redirect(to: String) -> Reply {
    Reply {
        status: 302,
        headers: vec![("location", to)],
        ..Reply::default()
    }
}

type Route = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

/// A tiny HTTP/1.1 image server (optionally TLS) on `bind`: one request per connection.
struct ImageServer {
    addr: SocketAddr,
    /// Request paths, in arrival order.
    hits: Arc<Mutex<Vec<String>>>,
    /// TCP connections accepted (before any byte is read).
    conns: Arc<AtomicUsize>,
}

impl ImageServer {
    async fn start(
        bind: &str,
        tls: Option<Arc<rustls::ServerConfig>>,
        route: impl Fn(&str) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(AtomicUsize::new(0));
        let route: Route = Arc::new(route);
        let (h, c) = (hits.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let (route, hits, tls) = (route.clone(), h.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(cfg) => {
                            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                            if let Ok(s) = acceptor.accept(tcp).await {
                                serve(s, &route, &hits).await;
                            }
                        }
                        None => serve(tcp, &route, &hits).await,
                    }
                });
            }
        });
        Self { addr, hits, conns }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    route: &Route,
    hits: &Mutex<Vec<String>>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let path = text.split(' ').nth(1).unwrap_or("/").to_string();
    hits.lock().unwrap().push(path.clone());
    let reply = route(&path);
    tokio::time::sleep(reply.delay).await;
    let mut out = format!("HTTP/1.1 {} X\r\nconnection: close\r\n", reply.status);
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !reply.no_length {
        out.push_str(&format!("content-length: {}\r\n", reply.body.len()));
    }
    out.push_str("\r\n");
    let _ = s.write_all(out.as_bytes()).await;
    let _ = s.write_all(&reply.body).await;
    let _ = s.shutdown().await;
}

/// A gateway that fetches `http://` URLs (the test server speaks plain HTTP) and allows the
/// given blocks; 64 KiB per image, 1.5 s per fetch.
async fn gateway(allow: &[&str], tweak: impl FnOnce(&mut Config)) -> Env {
    let ranges: Vec<Cidr> = allow.iter().map(|r| Cidr::parse(r).unwrap()).collect();
    Env::with_knobs(fast_knobs(), move |c| {
        c.media.allow_http = true;
        c.media.policy.allow_ranges = ranges;
        c.media.max_item_bytes = 64 << 10;
        c.media.fetch_timeout = Duration::from_millis(1500);
        tweak(c);
    })
    .await
}

fn asking(url: &str, stream: bool) -> Value {
    json!({"model": "gemini-2.5-flash", "memory_read": false, "memory_write": false,
           "stream": stream, "max_tokens": 64, "stream_options": {"include_usage": true},
           "messages": [{"role": "user", "content": [
               {"type": "text", "text": "What is in this picture?"},
               {"type": "image_url", "image_url": {"url": url, "detail": "auto"}}]}]})
}

const PARAM: &str = "messages[0].content[1].image_url.url";

/// `url` is refused with `code` naming the part, by key (unary and streamed) and on the x402
/// price path, before any model call, and nothing is held, charged or written to the ledger.
async fn refused(env: &Env, key: &str, url: &str, code: &str) {
    let calls = env.sim.generation_count();
    let before = env.balance(W1);
    let entries = env.ledger(W1).await.len();
    for stream in [false, true] {
        let res = env.chat(key, asking(url, stream)).await;
        let body = String::from_utf8_lossy(&res.body).to_string();
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{url}: {body}");
        let v = res.json();
        assert_eq!(
            (v["error"]["code"].as_str(), v["error"]["param"].as_str()),
            (Some(code), Some(PARAM)),
            "{url}: {body}"
        );
    }
    // Without credentials: a refusal, not a price.
    let res = env
        .send(
            Method::POST,
            "/v1/chat/completions",
            &[],
            asking(url, false).to_string(),
        )
        .await;
    assert_eq!(
        (res.status, res.code()),
        (StatusCode::BAD_REQUEST, code.into()),
        "{url}"
    );
    assert_eq!(env.sim.generation_count(), calls, "{url}: no model call");
    let after = env.balance(W1);
    assert_eq!((after.balance, after.held), (before.balance, 0), "{url}");
    assert_eq!(
        env.ledger(W1).await.len(),
        entries,
        "{url}: nothing in the ledger"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_targets_are_refused_before_any_upstream_call_and_cost_nothing() {
    let server = ImageServer::start("127.0.0.1:0", None, |_| image(png(10, 10))).await;
    // No allowance: the operator has not opened any private range.
    let env = gateway(&[], |_| {}).await;
    let key = env.funded_key(W1, 1_000_000).await;
    let port = server.addr.port();
    for url in [
        server.url("/cat.png"),
        format!("https://127.0.0.1:{port}/cat.png"),
        format!("http://localhost:{port}/cat.png"),
        format!("http://[::ffff:127.0.0.1]:{port}/cat.png"),
        format!("http://[::1]:{port}/cat.png"),
        format!("http://2130706433:{port}/cat.png"),
        "http://10.0.0.1/cat.png".into(),
        "http://192.168.1.1/cat.png".into(),
        "http://100.64.0.1/cat.png".into(),
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/".into(),
        "http://[fd00::1]/cat.png".into(),
        "http://0.0.0.0/cat.png".into(),
    ] {
        refused(&env, &key, &url, "image_url_forbidden").await;
    }
    assert!(server.hits().is_empty(), "the image server was never asked");
    assert_eq!(server.conns.load(Ordering::SeqCst), 0, "nor connected to");
    env.stop().await;

    // `http://` is refused unless the operator allows it, whatever the address.
    let env = Env::start().await;
    let key = env.funded_key(W1, 1_000_000).await;
    refused(
        &env,
        &key,
        "http://example.com/cat.png",
        "image_url_forbidden",
    )
    .await;
    refused(
        &env,
        &key,
        "https://user:pw@example.com/cat.png",
        "image_url_forbidden",
    )
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_server_still_cannot_redirect_inward_or_serve_too_much_or_the_wrong_type() {
    // A listener on another loopback address, outside the allowance: a redirect must not reach it.
    let inner = ImageServer::start("127.0.0.2:0", None, |_| image(png(10, 10))).await;
    let inner_url = inner.url("/cat.png");
    let big = png(10, 10)
        .into_iter()
        .chain(vec![0; 80 << 10])
        .collect::<Vec<u8>>();
    let server = ImageServer::start("127.0.0.1:0", None, move |path| match path {
        "/to-loopback" => redirect(inner_url.clone()),
        "/to-metadata" => redirect("http://169.254.169.254/latest/meta-data/".into()),
        "/to-ipv6-loopback" => redirect("http://[::1]/cat.png".into()),
        "/big.png" => image(big.clone()),
        "/big-unsized.png" => Reply {
            no_length: true,
            ..image(big.clone())
        },
        "/page.html" => Reply {
            headers: vec![("content-type", "text/html".into())],
            ..image(b"<html>not an image</html>".to_vec())
        },
        "/svg" => Reply {
            headers: vec![("content-type", "image/svg+xml".into())],
            ..image(b"<svg/>".to_vec())
        },
        "/gif-as-png.png" => image(b"GIF89a\x0a\x00\x0a\x00".to_vec()),
        "/text-as-png.png" => image(b"hello, not a picture".to_vec()),
        "/loop" => redirect("/loop".into()),
        "/slow.png" => Reply {
            delay: Duration::from_secs(5),
            ..image(png(10, 10))
        },
        _ => Reply {
            status: 404,
            ..Reply::default()
        },
    })
    .await;
    let env = gateway(&["127.0.0.1/32"], |_| {}).await;
    let key = env.funded_key(W1, 1_000_000).await;
    for (path, code) in [
        ("/to-loopback", "image_url_forbidden"),
        ("/to-metadata", "image_url_forbidden"),
        ("/to-ipv6-loopback", "image_url_forbidden"),
        ("/big.png", "image_too_large"),
        ("/big-unsized.png", "image_too_large"),
        ("/page.html", "unsupported_media_type"),
        ("/svg", "unsupported_media_type"),
        ("/gif-as-png.png", "unsupported_media_type"),
        ("/text-as-png.png", "unsupported_media_type"),
        ("/missing.png", "image_fetch_failed"),
        ("/loop", "image_fetch_failed"),
        ("/slow.png", "image_fetch_failed"),
    ] {
        refused(&env, &key, &server.url(path), code).await;
    }
    assert_eq!(
        inner.conns.load(Ordering::SeqCst),
        0,
        "the redirect target was never connected to"
    );
    // The redirect loop stopped at the configured count: 1 + 3 redirects, per attempt (3 attempts).
    let loops = server.hits().iter().filter(|p| *p == "/loop").count();
    assert_eq!(loops, 3 * 4);
    env.stop().await;
}

/// The call's usage object (the usage chunk of a stream).
fn usage_of(res: &crate::harness::Resp, stream: bool) -> Value {
    if stream {
        let events = sse_data(&res.body);
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        let chunk: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
        chunk["usage"].clone()
    } else {
        res.json()["usage"].clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_loopback_image_is_fetched_and_sent_inline() {
    let server = ImageServer::start("127.0.0.1:0", None, |path| match path {
        "/moved" => redirect("/photos/cat.png".into()),
        _ => image(png(1000, 800)),
    })
    .await;
    let env = gateway(&["127.0.0.1/32"], |_| {}).await;
    let key = env.funded_key(W1, 1_000_000).await;
    let text_only = {
        let mut b = asking("", false);
        b["messages"][0]["content"] = json!("What is in this picture?");
        env.chat(&key, b).await.json()["usage"]["prompt_tokens"]
            .as_u64()
            .unwrap()
    };
    for (path, stream) in [("/cat.png", false), ("/moved", true)] {
        let res = env.chat(&key, asking(&server.url(path), stream)).await;
        assert_eq!(
            res.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&res.body)
        );
        let parts = &env.last_generate()["contents"][0]["parts"];
        assert_eq!(parts[0], json!({"text": "What is in this picture?"}));
        assert_eq!(
            parts[1],
            json!({"inlineData": {"mimeType": "image/png", "data": STANDARD.encode(png(1000, 800))}})
        );
        // 1000×800 is 2×2 tiles of 258 tokens, on top of the same text.
        assert_eq!(
            usage_of(&res, stream)["prompt_tokens"].as_u64(),
            Some(text_only + 4 * 258)
        );
    }
    assert_eq!(server.hits(), ["/cat.png", "/moved", "/photos/cat.png"]);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_image_urls_are_verified_against_the_trusted_roots() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, cert_path, key_path) = localhost_cert(dir.path());
    let tls = vectorway::http::server::load_tls(&cert_path, &key_path).unwrap();
    let server = ImageServer::start("127.0.0.1:0", Some(tls), |_| image(png(300, 200))).await;
    let url = format!("https://localhost:{}/cat.png", server.addr.port());
    let allow = ["127.0.0.1/32", "::1/128"];
    // Trusted (the test CA added as `media.ca_file` would): fetched over TLS, by name.
    let der = cert.cert.der().clone();
    let env = gateway(&allow, move |c| c.media.extra_roots = vec![der]).await;
    let key = env.funded_key(W1, 1_000_000).await;
    let res = env.chat(&key, asking(&url, false)).await;
    assert_eq!(
        res.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&res.body)
    );
    assert_eq!(
        env.last_generate()["contents"][0]["parts"][1]["inlineData"]["data"],
        json!(STANDARD.encode(png(300, 200)))
    );
    env.stop().await;
    // A self-signed certificate nobody vouches for: the fetch fails, nothing is charged.
    let env = gateway(&allow, |_| {}).await;
    let key = env.funded_key(W1, 1_000_000).await;
    refused(&env, &key, &url, "image_fetch_failed").await;
    env.stop().await;
    assert_eq!(
        server.hits(),
        ["/cat.png"],
        "the untrusted handshake never got a request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_url_image_reaches_gemini_inline_and_is_counted_like_gemini() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 10_000_000).await;
    for stream in [false, true] {
        let small = env.chat(&key, asking(&data_png(300, 200), stream)).await;
        let large = env.chat(&key, asking(&data_png(2000, 1600), stream)).await;
        assert_eq!(
            (small.status, large.status),
            (StatusCode::OK, StatusCode::OK)
        );
        let part = &env.last_generate()["contents"][0]["parts"][1]["inlineData"];
        assert_eq!(part["mimeType"], "image/png");
        assert_eq!(part["data"], json!(STANDARD.encode(png(2000, 1600))));
        let (s, l) = (usage_of(&small, stream), usage_of(&large, stream));
        // 300×200 is one 258-token image; 2000×1600 is 3×3 tiles.
        assert_eq!(
            l["prompt_tokens"].as_u64().unwrap() - s["prompt_tokens"].as_u64().unwrap(),
            9 * 258 - 258,
            "stream={stream}"
        );
    }
    // A part Gemini does not take, or that lies about itself, is refused before the model.
    let calls = env.sim.generation_count();
    let gif = format!(
        "data:image/png;base64,{}",
        STANDARD.encode(b"GIF89a\x01\x00\x01\x00")
    );
    let res = env.chat(&key, asking(&gif, false)).await;
    assert_eq!(
        (res.status, res.code()),
        (StatusCode::BAD_REQUEST, "unsupported_media_type".into())
    );
    assert_eq!(res.json()["error"]["param"], PARAM);
    let mut system = asking(&data_png(1, 1), false);
    system["messages"][0]["role"] = json!("system");
    let messages = system["messages"].as_array_mut().unwrap();
    messages.push(json!({"role": "user", "content": "hi"}));
    let res = env.chat(&key, system).await;
    assert_eq!(
        (res.status, res.code()),
        (StatusCode::BAD_REQUEST, "invalid_content_part".into())
    );
    assert_eq!(env.sim.generation_count(), calls);
    env.stop().await;
}

/// Every charge of image-heavy calls is the full price of the tokens Gemini reported (a hold
/// below it would cap the debit), the ledger adds up, and no hold is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_heavy_calls_never_exceed_their_hold_or_quote() {
    let server = ImageServer::start("127.0.0.1:0", None, |_| image(png(3000, 2000))).await;
    let env = gateway(&["127.0.0.1/32"], |_| {}).await;
    let grant = 50_000_000;
    let key = env.funded_key(W1, grant).await;
    let images = json!([
        {"type": "text", "text": "Compare these."},
        {"type": "image_url", "image_url": {"url": data_png(4096, 4096)}},
        {"type": "image_url", "image_url": {"url": data_png(100, 100)}},
        {"type": "image_url", "image_url": {"url": server.url("/wide.png")}},
        {"type": "image_url", "image_url": {"url": format!("data:image/jpeg;base64,{}",
            STANDARD.encode(jpeg(5000, 300)))}},
    ]);
    let mut ids = Vec::new();
    for model in ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-3.5-flash"] {
        let price = env.gw().state.config.prices.get(model).unwrap().clone();
        for stream in [false, true] {
            let body = json!({"model": model, "stream": stream, "max_tokens": 32,
                "memory_read": false, "memory_write": false, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": images}]});
            let res = env.chat(&key, body.clone()).await;
            assert_eq!(
                res.status,
                StatusCode::OK,
                "{}",
                String::from_utf8_lossy(&res.body)
            );
            let u = usage_of(&res, stream);
            let (p, c) = (
                u["prompt_tokens"].as_u64().unwrap(),
                u["completion_tokens"].as_u64().unwrap(),
            );
            // 6×6 + 1 + 4×3 + 7×1 tiles: the simulator counted every image.
            assert!(p > (36 + 1 + 12 + 7) * 258, "{model}: {p}");
            assert_eq!(
                u["credit_cost"].as_u64(),
                Some(price.cost(p, c)),
                "{model} stream={stream}: full price"
            );
            ids.push(res.headers["x-request-id"].to_str().unwrap().to_string());

            // x402: the quote covers it too.
            let quote = x402_quote(&env, &body).await;
            assert!(
                quote >= price.cost(p, c),
                "{model}: quote {quote} below the cost"
            );
        }
    }
    assert!(crate::harness::eventually(Duration::from_secs(5), || env.balance(W1).held == 0).await);
    let ledger = env.ledger(W1).await;
    let debits: i64 = ledger
        .iter()
        .filter(|e| e.kind == LedgerKind::Debit)
        .map(|e| e.credits)
        .sum();
    assert_eq!(
        ledger
            .iter()
            .filter(|e| e.kind == LedgerKind::Debit)
            .count(),
        ids.len()
    );
    assert_eq!(
        env.balance(W1).balance as i64,
        grant as i64 + debits,
        "the ledger adds up"
    );
    assert_eq!(env.gw().state.billing.open_holds(), 0);
    env.stop().await;
}

/// A JPEG whose frame header says `w`×`h`.
fn jpeg(w: u16, h: u16) -> Vec<u8> {
    let mut b = vec![0xff, 0xd8, 0xff, 0xc0, 0x00, 0x11, 0x08];
    b.extend_from_slice(&h.to_be_bytes());
    b.extend_from_slice(&w.to_be_bytes());
    b.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1, 0xff, 0xd9]);
    b
}

async fn x402_quote(env: &Env, body: &Value) -> u64 {
    let res = env
        .send(Method::POST, "/v1/chat/completions", &[], body.to_string())
        .await;
    assert_eq!(
        res.status,
        StatusCode::PAYMENT_REQUIRED,
        "{}",
        String::from_utf8_lossy(&res.body)
    );
    res.json()["accepts"][0]["maxAmountRequired"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_count_in_the_hold_and_the_paid_quote() {
    let env = Env::start().await;
    let flash = env
        .gw()
        .state
        .config
        .prices
        .get("gemini-2.5-flash")
        .unwrap()
        .clone();
    let body = asking(&data_png(8000, 8000), false);
    // Held up front: the text (24 bytes + 16) and 11×11 tiles, with 64 completion tokens. A
    // wallet one credit short is refused before the model is called; one with exactly that
    // much is served.
    let need = flash.cost(24 + 16 + 121 * 258, 64);
    let key = env.funded_key(W1, need - 1).await;
    let calls = env.sim.generation_count();
    let res = env.chat(&key, body.clone()).await;
    assert_eq!(
        (res.status, res.code()),
        (StatusCode::PAYMENT_REQUIRED, "insufficient_credits".into())
    );
    assert_eq!(env.sim.generation_count(), calls);
    assert_eq!(env.balance(W1).balance, need - 1);
    let exact = env.funded_key(crate::harness::W2, need).await;
    assert_eq!(env.chat(&exact, body.clone()).await.status, StatusCode::OK);

    // x402: the quote prices the image; a payment of it goes through and keeps the cost.
    let quote = x402_quote(&env, &body).await;
    let plain = x402_quote(&env, &asking(&data_png(10, 10), false)).await;
    assert!(quote > plain, "{quote} vs {plain}");
    let s = Signer::random().unwrap();
    let net = vectorway::config::known_network("base-sepolia").unwrap();
    let pay_to = env.gw().state.config.x402.pay_to;
    let p = s
        .pay(&net, pay_to, quote, vectorway::payments::unix_now(), 300)
        .unwrap();
    let header = p.x_payment().unwrap().to_str().unwrap().to_string();
    let res = env
        .send(
            Method::POST,
            "/v1/chat/completions",
            &[("x-payment", &header)],
            body.to_string(),
        )
        .await;
    assert_eq!(
        res.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&res.body)
    );
    let u = &res.json()["usage"];
    let cost = flash.cost(
        u["prompt_tokens"].as_u64().unwrap(),
        u["completion_tokens"].as_u64().unwrap(),
    );
    assert!(u["prompt_tokens"].as_u64().unwrap() > 121 * 258);
    assert!(cost <= quote);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_with_an_image_reads_and_writes_text_memory() {
    let env = Env::with_knobs(fast_knobs(), |c| c.memory.score_floor = -1.0).await;
    let key = env.funded_key(W1, 10_000_000).await;
    let w = W1.parse().unwrap();
    env.gw()
        .state
        .memory
        .write(w, None, "the cat is called Miso")
        .await
        .unwrap();
    let mut body = asking(&data_png(500, 500), false);
    body["memory_read"] = json!(true);
    body["memory_write"] = json!(true);
    body["memory_write_mode"] = json!("raw");
    let res = env.chat(&key, body).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(
        res.json()["usage"]["memories_used"],
        1,
        "recalled by the turn's text"
    );
    let system = &env.last_generate()["systemInstruction"]["parts"][0]["text"];
    assert!(system.as_str().unwrap().contains("Miso"));
    // The turn is remembered as text: the user's words, never the image's bytes.
    let stored = loop {
        let res = env
            .send(
                Method::GET,
                "/v1/memory?q=picture&k=5",
                &[("x-api-key", &key)],
                "",
            )
            .await;
        let texts: Vec<String> = res.json()["matches"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["text"].as_str().map(String::from))
            .filter(|t| t.starts_with("User:"))
            .collect();
        if let Some(t) = texts.into_iter().next() {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        stored.starts_with("User: What is in this picture?\nAssistant: "),
        "{stored}"
    );
    assert!(!stored.contains(&STANDARD.encode(png(500, 500))[..16]));
    env.stop().await;
}
