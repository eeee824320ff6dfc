//! Memory tests: persistence across a reopen, deletes, wallet and namespace isolation, the lazy
//! load racing writes, graph building in the background, validation, and Gemini embeddings
//! through the simulator.

use std::time::{Duration, Instant};

use super::*;
use crate::config::Config;
use crate::simulate::Simulator;
use crate::storage::Store;

const DIMS: usize = 256;
const ALICE: Wallet = Wallet([0xa1; 20]);
const BOB: Wallet = Wallet([0xb0; 20]);

fn memory(dir: &std::path::Path, exact_threshold: usize) -> Memory {
    let store = Store::open_when_free(dir).unwrap();
    let params = IndexParams {
        exact_threshold,
        max_connections: 16,
        ef_construction: 64,
        ef_search: 64,
    };
    Memory::new(store, Embedder::Local(LocalEmbedder::new(DIMS)), params)
}

fn texts_of(matches: &[Match]) -> Vec<&str> {
    matches.iter().map(|m| m.text.as_str()).collect()
}

/// The loaded index of a slot, if any (for looking inside).
fn loaded(m: &Memory, wallet: Wallet, ns: Option<&str>) -> Option<Shared<Index>> {
    let slot = m.existing_slot(wallet, ns)?;
    let st = lock(&slot.state);
    match &*st {
        SlotState::Ready(ix) => Some(ix.clone()),
        _ => None,
    }
}

/// Polls `cond` for up to 10 s (background graph work).
async fn eventually(mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(10), "timed out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn write_then_search_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let m = memory(dir.path(), 2_000);
        let id = m
            .write(
                ALICE,
                None,
                "the nightly load test hit 4k requests per second",
            )
            .await
            .unwrap();
        m.write(ALICE, None, "remember to buy basil and garlic")
            .await
            .unwrap();
        let found = m.search(ALICE, None, "load test results", 5).await.unwrap();
        assert_eq!(found[0].id, id.to_string());
        assert_eq!(found.len(), 2);
        assert!(found[0].score > found[1].score);
        id
    };
    // Memory and Store are gone; a new process-equivalent opens the same directory.
    let m = memory(dir.path(), 2_000);
    assert!(
        loaded(&m, ALICE, None).is_none(),
        "nothing is loaded before first use"
    );
    let found = m.search(ALICE, None, "load test results", 1).await.unwrap();
    assert_eq!(found[0].id, id.to_string());
    assert_eq!(
        found[0].text,
        "the nightly load test hit 4k requests per second"
    );
    assert!(found[0].score > 0.3 && found[0].score <= 1.0);
    assert_eq!(loaded(&m, ALICE, None).unwrap().read().unwrap().live(), 2);
}

#[tokio::test]
async fn delete_is_immediate_and_durable() {
    let dir = tempfile::tempdir().unwrap();
    let text = "deploy window is Tuesday at noon";
    let id = {
        let m = memory(dir.path(), 2_000);
        let id = m.write(ALICE, None, text).await.unwrap();
        m.write(ALICE, None, "another note").await.unwrap();
        assert_eq!(m.search(ALICE, None, text, 5).await.unwrap().len(), 2);
        assert!(m.delete(ALICE, &id.to_string()).await.unwrap());
        assert!(
            !m.delete(ALICE, &id.to_string()).await.unwrap(),
            "already gone"
        );
        let left = m.search(ALICE, None, text, 5).await.unwrap();
        assert_eq!(texts_of(&left), ["another note"]);
        id
    };
    let m = memory(dir.path(), 2_000);
    let left = m.search(ALICE, None, text, 5).await.unwrap();
    assert!(left.iter().all(|x| x.id != id.to_string()));
    assert_eq!(left.len(), 1);
}

#[tokio::test]
async fn wallets_never_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let m = memory(dir.path(), 2_000);
    let text = "the launch code is in the blue folder";
    let a = m.write(ALICE, None, text).await.unwrap();
    let b = m.write(BOB, None, text).await.unwrap();
    let for_alice = m.search(ALICE, None, text, 10).await.unwrap();
    let for_bob = m.search(BOB, None, text, 10).await.unwrap();
    assert_eq!(for_alice.len(), 1);
    assert_eq!(for_alice[0].id, a.to_string());
    assert_eq!(for_bob.len(), 1);
    assert_eq!(for_bob[0].id, b.to_string());
    // Bob cannot delete Alice's memory, even knowing its id.
    assert!(!m.delete(BOB, &a.to_string()).await.unwrap());
    assert_eq!(m.search(ALICE, None, text, 10).await.unwrap().len(), 1);
    assert!(m.delete(BOB, &b.to_string()).await.unwrap());
    assert_eq!(
        m.search(ALICE, None, text, 10).await.unwrap()[0].id,
        a.to_string()
    );
    assert!(m.search(BOB, None, text, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn namespaces_are_separate() {
    let dir = tempfile::tempdir().unwrap();
    let m = memory(dir.path(), 2_000);
    m.write(ALICE, Some("work"), "quarterly planning notes")
        .await
        .unwrap();
    let home = m
        .write(ALICE, Some("home"), "quarterly planning notes")
        .await
        .unwrap();
    m.write(ALICE, None, "quarterly planning notes")
        .await
        .unwrap();
    for ns in [Some("work"), Some("home"), None] {
        let found = m.search(ALICE, ns, "planning", 10).await.unwrap();
        assert_eq!(found.len(), 1, "{ns:?}");
    }
    assert_eq!(
        m.search(ALICE, Some(""), "planning", 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        m.search(ALICE, Some("other"), "planning", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(m.delete(ALICE, &home.to_string()).await.unwrap());
    assert!(
        m.search(ALICE, Some("home"), "planning", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        m.search(ALICE, Some("work"), "planning", 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn empty_namespaces_are_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    let m = memory(dir.path(), 2_000);
    assert!(
        m.search(ALICE, Some("nothing"), "x", 5)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(m.existing_slot(ALICE, Some("nothing")).is_none());
    m.write(ALICE, Some("nothing"), "now something")
        .await
        .unwrap();
    assert_eq!(
        m.search(ALICE, Some("nothing"), "something", 5)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_racing_the_first_load_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let m = memory(dir.path(), 100_000);
        for i in 0..300 {
            m.write(ALICE, None, &format!("old note number {i}"))
                .await
                .unwrap();
        }
    }
    let m = Arc::new(memory(dir.path(), 100_000));
    let searches = (0..4).map(|_| {
        let m = m.clone();
        async move { m.search(ALICE, None, "note", 3).await.map(|v| v.len()) }
    });
    let writes = (0..40).map(|i| {
        let m = m.clone();
        async move {
            m.write(ALICE, None, &format!("new note number {i}"))
                .await
                .map(|_| 3)
        }
    });
    let (searched, written) = tokio::join!(
        futures_util::future::join_all(searches),
        futures_util::future::join_all(writes)
    );
    assert!(searched.into_iter().chain(written).all(|r| r.unwrap() == 3));
    assert_eq!(loaded(&m, ALICE, None).unwrap().read().unwrap().live(), 340);
    let found = m
        .search(ALICE, None, "new note number 39", 1)
        .await
        .unwrap();
    assert_eq!(found[0].text, "new note number 39");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_past_the_threshold_gets_a_graph() {
    let dir = tempfile::tempdir().unwrap();
    let m = memory(dir.path(), 20);
    m.write(ALICE, None, "seed").await.unwrap();
    m.search(ALICE, None, "seed", 1).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..60 {
        let id = m
            .write(ALICE, None, &format!("incident {i}: disk {i} filled up"))
            .await
            .unwrap();
        ids.push(id);
    }
    let ix = loaded(&m, ALICE, None).unwrap();
    eventually(|| ix.read().unwrap().graph_points() >= 20).await;
    let found = m
        .search(ALICE, None, "incident 42: disk 42 filled up", 1)
        .await
        .unwrap();
    assert_eq!(found[0].id, ids[42].to_string());
    assert!(m.delete(ALICE, &ids[42].to_string()).await.unwrap());
    let found = m
        .search(ALICE, None, "incident 42: disk 42 filled up", 3)
        .await
        .unwrap();
    assert!(found.iter().all(|x| x.id != ids[42].to_string()));
    drop(ix);
    drop(m);
    // A reopened wallet past the threshold builds its graph right after loading.
    let m = memory(dir.path(), 20);
    m.search(ALICE, None, "seed", 1).await.unwrap();
    let ix = loaded(&m, ALICE, None).unwrap();
    eventually(|| ix.read().unwrap().graph_points() == 60).await;
}

#[tokio::test]
async fn validation_errors_and_their_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let m = memory(dir.path(), 2_000);
    let bad_ns = "x".repeat(65);
    for (result, param) in [
        (
            m.write(ALICE, Some("no spaces"), "t").await.err(),
            "namespace",
        ),
        (m.write(ALICE, Some(&bad_ns), "t").await.err(), "namespace"),
        (m.write(ALICE, None, "   ").await.err(), "text"),
        (m.search(ALICE, None, "", 5).await.err(), "q"),
        (m.search(ALICE, None, "q", 0).await.err(), "k"),
        (m.search(ALICE, None, "q", MAX_K + 1).await.err(), "k"),
        (m.embed(&[]).await.err(), "input"),
        (m.embed(&["ok".into(), String::new()]).await.err(), "input"),
    ] {
        let e = result.unwrap();
        assert_eq!(
            (e.status(), e.code(), e.param()),
            (422, "validation_error", Some(param))
        );
    }
    assert!(validate_namespace(Some(&"a".repeat(64))).is_ok());
    assert!(validate_namespace(Some("proj-1.v2_x")).is_ok());
    assert!(
        !m.delete(ALICE, "not-a-uuid").await.unwrap(),
        "an unknown id, not an error"
    );

    let cases: [(MemoryError, u16, &str); 7] = [
        (MemoryError::NotFound("x".into()), 404, "not_found"),
        (
            UpstreamError::RateLimited {
                retry_after: None,
                message: "q".into(),
            }
            .into(),
            429,
            "upstream_rate_limited",
        ),
        (UpstreamError::Timeout("t").into(), 504, "upstream_timeout"),
        (
            UpstreamError::ModelNotFound("m".into()).into(),
            404,
            "model_not_found",
        ),
        (
            UpstreamError::Credentials("k".into()).into(),
            502,
            "upstream_error",
        ),
        (
            StorageError::Sled("io".into()).into(),
            500,
            "internal_error",
        ),
        (MemoryError::Internal("x".into()), 500, "internal_error"),
    ];
    for (e, status, code) in cases {
        assert_eq!((e.status(), e.code()), (status, code), "{e}");
    }
}

#[tokio::test]
async fn past_the_cap_the_oldest_records_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let texts: Vec<String> = (0..6)
        .map(|i| format!("note number {i} about herons"))
        .collect();
    {
        // Unloaded while written: the first search loads all six and trims to four.
        let m = memory(dir.path(), 2_000).with_cap(4);
        for t in &texts {
            m.write(ALICE, None, t).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        m.write(BOB, None, &texts[0]).await.unwrap();
        let got = m.search(ALICE, None, "herons", 10).await.unwrap();
        let mut got = texts_of(&got);
        got.sort_unstable();
        assert_eq!(
            got,
            texts[2..].iter().map(String::as_str).collect::<Vec<_>>()
        );
        // Loaded: every further write forgets the oldest one.
        m.write(ALICE, None, "the newest note about herons")
            .await
            .unwrap();
        let got = m.search(ALICE, None, "herons", 10).await.unwrap();
        assert_eq!(got.len(), 4);
        assert!(
            !texts_of(&got).contains(&texts[2].as_str()),
            "the oldest went first"
        );
        assert!(texts_of(&got).contains(&"the newest note about herons"));
        assert_eq!(
            m.search(BOB, None, "herons", 10).await.unwrap().len(),
            1,
            "per wallet"
        );
    }
    // Forgotten records are gone from sled too.
    let m = memory(dir.path(), 2_000);
    assert_eq!(m.search(ALICE, None, "herons", 10).await.unwrap().len(), 4);
}

#[test]
fn memory_ids_print_and_parse_as_uuids() {
    let id = MemoryId::now_v7();
    let s = id.to_string();
    assert_eq!(s.len(), 36);
    assert_eq!(&s[14..15], "7", "version 7: time-ordered");
    std::thread::sleep(Duration::from_millis(2));
    assert!(
        MemoryId::now_v7().0 > id.0,
        "later ids sort after earlier ones"
    );
    assert_eq!(s.parse::<MemoryId>().unwrap(), id);
    assert_eq!(s.to_uppercase().parse::<MemoryId>().unwrap(), id);
    assert_eq!(s.replace('-', "").parse::<MemoryId>().unwrap(), id);
    for bad in [
        "",
        "a1b2c3d4-1111-2222-3333-44445555666",
        "a1b2c3d4x1111-2222-3333-444455556666",
        "zz",
    ] {
        assert!(bad.parse::<MemoryId>().is_err(), "{bad}");
    }
    assert_ne!(MemoryId::now_v7(), id);
    assert_eq!(
        serde_json::to_value(Match {
            id: s.clone(),
            text: "t".into(),
            score: 0.5
        })
        .unwrap(),
        serde_json::json!({"id": s, "text": "t", "score": 0.5})
    );
}

#[tokio::test]
async fn gemini_embeddings_are_batched_and_renormalized() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::for_tests(dir.path(), "http://127.0.0.1:9");
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), cfg.simulator, None)
        .await
        .unwrap();
    let http = crate::upstream::client::build(Duration::from_secs(2), 4);
    let gemini = Gemini::new(http, sim.base_url(), &cfg.upstream);
    let store = Store::open(dir.path()).unwrap();
    let mut mem_cfg = cfg.memory.clone();
    mem_cfg.embedder = crate::config::EmbedderKind::Gemini;
    mem_cfg.dims = 768;
    let m = Memory::from_config(store, &mem_cfg, gemini).unwrap();
    assert_eq!(m.model(), "gemini-embedding-001");

    let texts: Vec<String> = (0..250).map(|i| format!("text number {i}")).collect();
    let vectors = m.embed(&texts).await.unwrap();
    assert_eq!(vectors.len(), 250);
    for v in &vectors {
        assert_eq!(v.len(), 768);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    }
    let alone = m.embed(&texts[249..]).await.unwrap();
    assert!(
        index::dot(&alone[0], &vectors[249]) > 0.9999,
        "order is kept across batches"
    );
    let batches: Vec<usize> = sim
        .requests()
        .iter()
        .filter(|r| r.path.ends_with(":batchEmbedContents"))
        .map(|r| r.body["requests"].as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(batches.iter().take(3).sum::<usize>(), 250);
    assert!(batches.iter().all(|n| *n <= 100), "{batches:?}");

    let id = m.write(ALICE, None, "gemini remembers this").await.unwrap();
    let found = m
        .search(ALICE, None, "gemini remembers this", 1)
        .await
        .unwrap();
    assert_eq!(found[0].id, id.to_string());

    // Upstream errors pass through with the generation mapping.
    let mut bad_cfg = mem_cfg.clone();
    bad_cfg.embed_model = "no-such-model".into();
    let http = crate::upstream::client::build(Duration::from_secs(2), 4);
    let gemini = Gemini::new(http, sim.base_url(), &cfg.upstream);
    let other_dir = tempfile::tempdir().unwrap();
    let store = Store::open(other_dir.path()).unwrap();
    let bad = Memory::from_config(store, &bad_cfg, gemini).unwrap();
    let e = bad.embed(&texts[..1]).await.unwrap_err();
    assert_eq!((e.status(), e.code()), (404, "model_not_found"));
    sim.stop().await;
}

/// A handler-shaped caller: borrowed arguments, several awaits.
async fn nested(m: &Memory, ns: Option<&str>, q: &str) -> usize {
    let a = m.search(ALICE, ns, q, 5).await.map_or(0, |v| v.len());
    let b = m.embed(&[q.to_string()]).await.map_or(0, |v| v.len());
    let c = m.write(ALICE, ns, q).await.map_or(0, |_| 1);
    a + b + c
}

#[test]
fn the_futures_can_be_spawned() {
    fn is_send<F: std::future::Future + Send + 'static>(f: F) -> F {
        f
    }
    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(memory(dir.path(), 2_000));
    let (ns, q) = (Some("ns".to_string()), "query".to_string());
    // Built (not run): the point is that this compiles, as `tokio::spawn` requires.
    drop(is_send(async move { nested(&m, ns.as_deref(), &q).await }));
}

/// Ids keep creation order within a millisecond too: a load inserts in id order and the cap
/// forgets the lowest id first, so both must be the oldest.
#[test]
fn memory_ids_made_in_one_millisecond_keep_their_order() {
    let ids: Vec<MemoryId> = (0..10_000).map(|_| MemoryId::now_v7()).collect();
    for pair in ids.windows(2) {
        assert!(pair[0] < pair[1], "{:?} then {:?}", pair[0], pair[1]);
    }
    // Far more ids than milliseconds: many share one.
    let ms = |id: &MemoryId| id.as_bytes()[..6].to_vec();
    assert!(ids.windows(2).any(|p| ms(&p[0]) == ms(&p[1])));
}

/// Records of another embedder are never searched; a load re-embeds them in the background,
/// in place (same ids), resuming from whatever a previous run left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_embedders_records_are_re_embedded_not_mixed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let old = Memory::new(
        store.clone(),
        Embedder::Local(LocalEmbedder::new(64)),
        IndexParams::default(),
    );
    let mut ids = Vec::new();
    for i in 0..150 {
        ids.push(
            old.write(ALICE, None, &format!("old note {i} about the orbit"))
                .await
                .unwrap(),
        );
    }
    // One record of the new space already, as a half-finished earlier run would leave.
    let new = Memory::new(
        store.clone(),
        Embedder::Local(LocalEmbedder::new(DIMS)),
        IndexParams::default(),
    );
    let fresh = new
        .write(ALICE, None, "new note about the orbit")
        .await
        .unwrap();
    // A deleted record must stay deleted: `replace` never brings it back.
    assert!(new.delete(ALICE, &ids[0].to_string()).await.unwrap());
    assert!(
        store
            .memory_log()
            .replace(&ALICE, ids[0].as_bytes(), b"x")
            .unwrap()
            .is_none()
    );

    let fp_new = new.fingerprint.clone();
    let on_disk = || -> Vec<String> {
        store
            .memories_of(&ALICE)
            .map(|r| {
                RecordView::parse(&r.unwrap().1)
                    .unwrap()
                    .embedder
                    .to_string()
            })
            .collect()
    };
    // Each result comes from the new space, whatever the re-embed has reached.
    let first = new.search(ALICE, None, "orbit", 100).await.unwrap();
    for m in &first {
        let id: MemoryId = m.id.parse().unwrap();
        let bytes = store.get_memory(&ALICE, id.as_bytes()).unwrap().unwrap();
        assert_eq!(RecordView::parse(&bytes).unwrap().embedder, fp_new);
    }
    assert!(first.iter().any(|m| m.id == fresh.to_string()));
    eventually(|| on_disk().iter().all(|fp| *fp == fp_new) && new.reembedding.is_empty()).await;
    assert_eq!(
        on_disk().len(),
        150,
        "149 re-embedded + 1 new; the deleted one stays gone"
    );
    let all = new
        .search(ALICE, None, "old note 7 about the orbit", 100)
        .await
        .unwrap();
    assert_eq!(all.len(), 100);
    assert_eq!(all[0].text, "old note 7 about the orbit");
    let vector = LocalEmbedder::new(DIMS).embed_one("old note 7 about the orbit");
    let rec = MemoryRecord::decode(
        &store
            .get_memory(&ALICE, ids[7].as_bytes())
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (rec.vector.len(), rec.text.as_str()),
        (DIMS, "old note 7 about the orbit")
    );
    assert!(
        index::dot(&rec.vector, &vector) > 0.9999,
        "the new embedder's vector, same id"
    );
}
