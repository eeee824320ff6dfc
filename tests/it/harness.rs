//! Test harness: start a simulator and a gateway in-process, fund wallets, make HTTP calls.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tempfile::TempDir;
use vectorway::app::{self, Running};
use vectorway::config::{Config, SimulatorKnobs};
use vectorway::simulate::Simulator;
use vectorway::storage::LedgerKind;
use vectorway::wallet::Wallet;

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

/// A self-signed certificate for `localhost`, also written into `dir` as `cert.pem` and
/// `key.pem`; returns it with the two paths.
pub fn localhost_cert(
    dir: &std::path::Path,
) -> (
    rcgen::CertifiedKey<rcgen::KeyPair>,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    (cert, cert_path, key_path)
}

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http()
}

/// Reads one HTTP/1.1 request (head and `Content-Length` body) from a raw socket, for the tests'
/// hand-written upstreams; returns the head, lowercased, or `None` if the peer left first.
pub async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 64 << 10];
    let mut got = Vec::new();
    loop {
        let n = sock.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return Some(head);
            }
        }
    }
}

/// Fast simulator knobs: answers in a few milliseconds.
pub fn fast_knobs() -> SimulatorKnobs {
    SimulatorKnobs {
        ttft: Duration::from_millis(1),
        tokens_per_sec: 100_000,
        chunk_tokens: 4,
        reply_tokens: 24,
    }
}

pub struct Env {
    pub sim: Simulator,
    pub gw: Option<Running>,
    _dir: TempDir,
    pub client: TestClient,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl Env {
    /// The body of the last `generateContent` / `streamGenerateContent` request the simulator
    /// received.
    pub fn last_generate(&self) -> Value {
        self.sim
            .requests()
            .into_iter()
            .rev()
            .find(|r| r.path.contains("enerateContent"))
            .map(|r| r.body)
            .unwrap_or_else(|| panic!("no generate request reached the simulator"))
    }

    /// How many generate requests reached the simulator (answered or refused).
    pub fn generate_requests(&self) -> usize {
        self.sim
            .requests()
            .iter()
            .filter(|r| r.path.contains("enerateContent"))
            .count()
    }

    pub async fn start() -> Self {
        Self::with_knobs(fast_knobs(), |_| {}).await
    }

    pub async fn with_knobs(knobs: SimulatorKnobs, tweak: impl FnOnce(&mut Config)) -> Self {
        let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), knobs, None)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_tests(dir.path(), &sim.base_url());
        backend_for_tests(&mut config).await;
        tweak(&mut config);
        let gw = app::start(config).await.unwrap();
        Self {
            sim,
            gw: Some(gw),
            _dir: dir,
            client: client(),
        }
    }

    /// A gateway whose upstream is `upstream_base_url` (a dead port, say) rather than the
    /// simulator, which still runs but receives nothing.
    pub async fn against(upstream_base_url: &str, tweak: impl FnOnce(&mut Config)) -> Self {
        let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), fast_knobs(), None)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_tests(dir.path(), upstream_base_url);
        backend_for_tests(&mut config).await;
        tweak(&mut config);
        let gw = app::start(config).await.unwrap();
        Self {
            sim,
            gw: Some(gw),
            _dir: dir,
            client: client(),
        }
    }

    pub fn gw(&self) -> &Running {
        self.gw.as_ref().unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gw().base_url())
    }

    /// Grants credits and creates a key; returns the raw key.
    pub async fn funded_key(&self, wallet: &str, credits: u64) -> String {
        let w: Wallet = wallet.parse().unwrap();
        let state = &self.gw().state;
        if credits > 0 {
            state
                .billing
                .credit(w, credits, LedgerKind::Grant, None, None)
                .await
                .unwrap();
        }
        state.keys.create(w, "test").await.unwrap().0
    }

    pub fn balance(&self, wallet: &str) -> vectorway::billing::Balance {
        self.gw().state.billing.balance(&wallet.parse().unwrap())
    }

    /// A wallet's ledger, newest first, once the journal has written everything pushed so far.
    pub async fn ledger(&self, wallet: &str) -> Vec<vectorway::storage::LedgerEntry> {
        let state = &self.gw().state;
        state.billing.journal().sync().await;
        state
            .store
            .ledger_of(&wallet.parse().unwrap())
            .await
            .unwrap()
            .into_iter()
            .collect()
    }

    /// A wallet's usage events, newest first, once the journal has written them.
    pub async fn usage(&self, wallet: &str) -> Vec<vectorway::storage::UsageEvent> {
        let state = &self.gw().state;
        state.billing.journal().sync().await;
        state
            .store
            .usage_of(&wallet.parse().unwrap())
            .await
            .unwrap()
            .into_iter()
            .collect()
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Resp {
        let res = self.open(method, path, headers, body).await;
        let (parts, body) = res.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub async fn open(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> http::Response<Incoming> {
        let mut req = Request::builder().method(method).uri(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body.into())).unwrap();
        self.client.request(req).await.unwrap()
    }

    pub async fn chat(&self, key: &str, body: Value) -> Resp {
        self.send(
            Method::POST,
            "/v1/chat/completions",
            &[("x-api-key", key), ("content-type", "application/json")],
            body.to_string(),
        )
        .await
    }

    pub async fn stop(mut self) {
        if let Some(gw) = self.gw.take() {
            gw.shutdown().await;
        }
    }
}

/// With `VECTORWAY_TEST_BACKEND=postgres`, a fresh database in the shared test cluster
/// (`pg::Postgres`) becomes the gateway's store; otherwise the embedded default stays.
pub async fn backend_for_tests(config: &mut Config) {
    if crate::pg::wanted() {
        let url = crate::pg::Postgres::shared().fresh_db().await;
        config.backend = vectorway::config::StoreBackend::Postgres(crate::pg::pg_config(&url));
    }
}

/// Splits an SSE body into its `data:` payloads.
pub fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|ev| {
            ev.lines()
                .find_map(|l| l.strip_prefix("data: "))
                .map(str::to_string)
        })
        .collect()
}

/// Polls `f` until it is true or the timeout passes.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

/// The real binary (`vectorway serve`) on a data directory, for crash and resource tests.
pub struct Binary {
    pub child: std::process::Child,
    pub base: String,
    pub secret: String,
}

impl Binary {
    /// Starts the binary against `upstream` (Gemini and, under `/facilitator`, x402) with extra
    /// `VECTORWAY_*` variables, and waits for its `server.json`.
    pub fn start(dir: &std::path::Path, upstream: &str, env: &[(&str, &str)]) -> Self {
        let _ = std::fs::remove_file(dir.join("server.json")); // a SIGKILL leaves it behind
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_vectorway"));
        cmd.arg("serve")
            .env_clear()
            .env("VECTORWAY_SERVER__LISTEN", "127.0.0.1:0")
            .env("VECTORWAY_STORE__DATA_DIR", dir)
            .env("VECTORWAY_UPSTREAM__BASE_URL", upstream)
            .env(
                "VECTORWAY_X402__FACILITATOR_URL",
                format!("{upstream}/facilitator"),
            )
            .env("GEMINI_API_KEY", "test")
            .env("VECTORWAY_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(s) = std::fs::read_to_string(dir.join("server.json"))
                && let Ok(v) = serde_json::from_str::<Value>(&s)
            {
                let secret = std::fs::read_to_string(dir.join("admin.secret")).unwrap();
                return Self {
                    child,
                    base: format!("http://{}", v["addr"].as_str().unwrap()),
                    secret: secret.trim().into(),
                };
            }
            assert!(std::time::Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (up to 30 s) until the counter `name`, summed over its labels on `/metrics`,
    /// reaches `at_least`: a test waits for what the gateway did, not for a guessed time.
    pub async fn wait_counter(&self, name: &str, at_least: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let total: u64 = match call(
                Method::GET,
                &format!("{}/metrics", self.base),
                &[("x-admin-secret", &self.secret)],
                Bytes::new(),
            )
            .await
            {
                Some(r) => String::from_utf8_lossy(&r.body)
                    .lines()
                    .filter(|l| l.starts_with(name) && !l.starts_with('#'))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .map(|v| v as u64)
                    .sum(),
                None => 0,
            };
            if total >= at_least {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name} stayed at {total} < {at_least}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Resident set size in KiB (Linux `/proc`).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One HTTP exchange with any server; `None` when the connection failed or broke.
pub async fn call(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Option<Resp> {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = client()
        .request(req.body(Full::new(body.into())).ok()?)
        .await
        .ok()?;
    let (parts, body) = res.into_parts();
    let body = body.collect().await.ok()?.to_bytes();
    Some(Resp {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

pub const W1: &str = "0x1111111111111111111111111111111111111111";
pub const W2: &str = "0x2222222222222222222222222222222222222222";

/// Starts one chat request on its own task (for many at once): its status and JSON answer.
pub fn spawn_chat(
    client: &TestClient,
    url: String,
    key: &str,
    body: &Value,
) -> tokio::task::JoinHandle<(StatusCode, Value)> {
    let (client, key, body) = (client.clone(), key.to_string(), body.to_string());
    tokio::spawn(async move {
        let req = Request::post(url)
            .header("x-api-key", key)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let res = client.request(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    })
}

/// Awaits chats started by `spawn_chat`, each a 200 or a 402 `insufficient_credits`: how many
/// were served and the credits their answers say they cost.
pub async fn served_and_charged(
    calls: Vec<tokio::task::JoinHandle<(StatusCode, Value)>>,
) -> (u64, u64) {
    let (mut served, mut charged) = (0, 0);
    for c in calls {
        let (status, v) = c.await.unwrap();
        match status {
            StatusCode::OK => {
                served += 1;
                charged += v["usage"]["credit_cost"].as_u64().unwrap();
            }
            StatusCode::PAYMENT_REQUIRED => {
                assert_eq!(v["error"]["code"], "insufficient_credits", "{v}")
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }
    (served, charged)
}
