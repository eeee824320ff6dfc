//! Embedding throughput: the local model one query at a time, in batches, and through its
//! batching queue under concurrent callers, each as a ratio to feature hashing in the same run.
//!
//! `cargo bench --bench embed_model` measures (the model from `$VECTORWAY_MODEL_DIR`, else
//! fetched into `target/bench-model/`); without `--bench` (as `cargo test --benches` runs it)
//! it embeds a few texts once, as a smoke test.

#![expect(
    clippy::unwrap_used,
    reason = "a bench: any failure should stop it loudly"
)]

use std::path::PathBuf;
use std::time::Instant;

use vectorway::memory::LocalEmbedder;
use vectorway::memory::model::{self, MiniLm, ModelEmbedder, fetch};

/// Short chat-like queries and memory-sized texts, like recall sees.
fn texts(n: usize) -> Vec<String> {
    let subjects = [
        "my flight",
        "the quarterly report",
        "our cat",
        "the database",
        "a recipe",
    ];
    let verbs = [
        "leaves at nine",
        "needs a review",
        "sleeps all day",
        "migrates tonight",
        "uses basil",
    ];
    (0..n)
        .map(|i| {
            let s = subjects[i % subjects.len()];
            let v = verbs[(i / subjects.len()) % verbs.len()];
            if i % 3 == 0 {
                format!("User: remind me that {s} {v}, number {i}\nAssistant: noted, {s} {v}; I will keep it in mind for next week's planning.")
            } else {
                format!("{s} {v} ({i})")
            }
        })
        .collect()
}

fn model_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VECTORWAY_MODEL_DIR") {
        return PathBuf::from(d);
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-model/all-MiniLM-L6-v2");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(fetch::fetch(&fetch::FetchOptions::new(dir.clone())))
        .unwrap();
    dir
}

/// Texts per second of `f` over `n` texts.
fn rate(n: usize, f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    n as f64 / t.elapsed().as_secs_f64()
}

/// Median and 99th percentile of `f`'s wall time over `n` calls, in milliseconds.
fn latency(n: usize, mut f: impl FnMut()) -> (f64, f64) {
    let mut ms: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    (ms[n / 2], ms[(n * 99 / 100).min(n - 1)])
}

fn main() {
    // The gateway's own thread setting (candle otherwise parses /proc/cpuinfo per product).
    if let Some(e) = model::set_threads_and_reexec() {
        eprintln!("cannot re-execute with {}=1: {e}", model::THREADS_VAR);
    }
    let measure = std::env::args().any(|a| a == "--bench");
    let n = if measure { 512 } else { 8 };
    let texts = texts(n);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let dir = model_dir();

    let hashing = LocalEmbedder::new(model::DIMS);
    let hashing_rate = rate(n, || {
        for t in &texts {
            std::hint::black_box(hashing.embed_one(t));
        }
    });

    let m = MiniLm::load(&dir).unwrap();
    let _ = m.embed_batch(&refs[..1]).unwrap(); // warm-up
    let single = rate(n, || {
        for t in &refs {
            std::hint::black_box(m.embed_batch(&[t]).unwrap());
        }
    });
    // One text per call at three lengths: a short chat query, a prompt, a stored turn.
    let reps = if measure { 200 } else { 2 };
    let lengths: Vec<(usize, f64, f64)> = [
        "my flight leaves at 9",
        "Summarize the last simulation run in one sentence.",
        refs[0],
    ]
    .iter()
    .map(|t| {
        let tokens = m.token_count(t);
        let (p50, p99) = latency(reps, || {
            std::hint::black_box(m.embed_batch(&[t]).unwrap());
        });
        (tokens, p50, p99)
    })
    .collect();
    let batched = rate(n, || {
        std::hint::black_box(model::embed_sorted(&m, &refs).unwrap());
    });

    // Concurrent callers, one text each, through the queue (what chat recalls do).
    let queue = ModelEmbedder::start(m).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let callers = 32;
    let rounds_before = queue.rounds();
    let concurrent = rate(n, || {
        rt.block_on(async {
            let mut tasks = Vec::new();
            for c in 0..callers {
                let (q, mine): (ModelEmbedder, Vec<String>) = (
                    queue.clone(),
                    texts.iter().skip(c).step_by(callers).cloned().collect(),
                );
                #[expect(clippy::disallowed_methods, reason = "bench callers")]
                tasks.push(tokio::spawn(async move {
                    for t in mine {
                        std::hint::black_box(q.embed(vec![t]).await.unwrap());
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
    });
    let rounds = queue.rounds() - rounds_before;

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    eprintln!(
        "embedding throughput, {n} texts, {cores} cores (texts/s; ratio to feature hashing in this run)"
    );
    eprintln!("  feature hashing            {hashing_rate:>10.0}  1.0");
    for (name, r) in [
        ("model, one text per call", single),
        ("model, sorted batches of 16", batched),
        ("model, queue, 32 callers", concurrent),
    ] {
        eprintln!("  {name:<26} {r:>10.0}  {:.5}", r / hashing_rate);
    }
    eprintln!(
        "  queue rounds for {n} single-text calls: {rounds} (mean {:.1} texts per round)",
        n as f64 / rounds.max(1) as f64
    );
    for (tokens, p50, p99) in &lengths {
        eprintln!("  one text of {tokens:>3} tokens: p50 {p50:.2} ms, p99 {p99:.2} ms");
    }
    eprintln!(
        "  batched / single = {:.2}x, queue / single = {:.2}x",
        batched / single,
        concurrent / single
    );
}
