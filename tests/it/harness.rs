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

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http()
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
    pub async fn start() -> Self {
        Self::with_knobs(fast_knobs(), |_| {}).await
    }

    pub async fn with_knobs(knobs: SimulatorKnobs, tweak: impl FnOnce(&mut Config)) -> Self {
        let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), knobs, None)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_tests(dir.path(), &sim.base_url());
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

pub const W1: &str = "0x1111111111111111111111111111111111111111";
pub const W2: &str = "0x2222222222222222222222222222222222222222";
