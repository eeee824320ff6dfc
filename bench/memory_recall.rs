//! Semantic recall of wallet memory: recall@1, recall@5 and MRR of each embedder on the labelled set bench/data/recall.jsonl.
//!
//! The set is 260 pairs of (memory an agent stored, a later question that should recall it) over
//! 20 topics, written so that no question shares a content word with its memory
//! (bench/check_recall_set.py enforces it): recall here needs meaning, not keywords.
//!
//! Per embedder the bench runs what the gateway runs: it builds the configuration the way
//! `vectorway serve` does (`RawConfig::load` with the process's `VECTORWAY_*` variables and
//! `GEMINI_API_KEY`, plus `memory.embedder` set to the embedder's name), opens a `Store` in a fresh
//! temporary directory, makes `Memory::from_config`, writes every memory
//! of the set into one wallet and one namespace (so all 260 are distractors for each other), then
//! asks `Memory::search` each question with k = 100 (the gateway's largest) and finds the rank of
//! the relevant memory. recall@k: the share of questions whose memory is in the first k; MRR: the
//! mean of 1/rank (0 when not in the first 100). Chance level for recall@5 is 5/260 ≈ 0.019.
//!
//! Embedders are named as `memory.embedder` names them: `local` (feature hashing), `local-model`
//! (all-MiniLM-L6-v2 in process; it loads from `memory.model_dir`: `VECTORWAY_MEMORY__MODEL_DIR`,
//! else `VECTORWAY_MODEL_DIR` as the model tests use it, else the configured data directory's
//! `models/`) and `gemini` (needs `GEMINI_API_KEY`; `VECTORWAY_UPSTREAM__BASE_URL` may point it at
//! `vectorway simulate`, whose vectors carry no meaning, to try the plumbing). `RECALL_EMBEDDERS`
//! (comma-separated) picks them; by default all three, and an embedder that this build or this
//! environment cannot make (no key, no model) is reported as skipped. One named in
//! `RECALL_EMBEDDERS` that cannot be made is an error. The figures go to stdout and to
//! `target/memory_recall.json`. bench/recall_minilm.py computes the same figures for the model
//! with an independent numpy implementation, as a cross-check.
//!
//!     cargo bench --bench memory_recall
//!     RECALL_EMBEDDERS=local-model VECTORWAY_MEMORY__MODEL_DIR=/path/to/model cargo bench --bench memory_recall
//!
//! Under `cargo test --benches` (no `--bench` argument) it runs feature hashing only, checks the
//! plumbing (every memory's own text finds it first, every rank is computed) and writes nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;
use vectorway::config::RawConfig;
use vectorway::memory::{MAX_K, Memory};
use vectorway::storage::Store;
use vectorway::upstream::Gemini;
use vectorway::wallet::Wallet;

const NAMESPACE: &str = "recall-bench";
const WALLET: Wallet = Wallet([0x5e; 20]);
const ALL: [&str; 3] = ["local", "local-model", "gemini"];

#[derive(Debug, Deserialize)]
struct Pair {
    id: String,
    topic: String,
    memory: String,
    query: String,
}

/// One embedder's outcome on the set.
#[derive(Debug)]
struct Run {
    embedder: String,
    model: String,
    dims: usize,
    /// 1-based rank of each pair's memory for its query; 0: not in the first `MAX_K`.
    ranks: Vec<usize>,
    /// The same for each memory's own text (must be 1 for every embedder).
    self_ranks: Vec<usize>,
    write_time: Duration,
    search_time: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Figures {
    recall_1: f64,
    recall_5: f64,
    mrr: f64,
}

fn figures(ranks: &[usize]) -> Figures {
    let n = ranks.len().max(1) as f64;
    let within = |k: usize| ranks.iter().filter(|r| (1..=k).contains(*r)).count() as f64 / n;
    Figures {
        recall_1: within(1),
        recall_5: within(5),
        mrr: ranks
            .iter()
            .filter(|r| **r > 0)
            .map(|r| 1.0 / *r as f64)
            .sum::<f64>()
            / n,
    }
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn load_set() -> Result<Vec<Pair>, String> {
    let path = root().join("bench/data/recall.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("recall.jsonl:{}: {e}", i + 1)))
        .collect()
}

/// `Memory::from_config` gives a `Memory`, or a `Result` once it can fail (loading a local model
/// whose files are missing or corrupt): the bench accepts either.
trait IntoMemory {
    fn into_memory(self) -> Result<Memory, String>;
}

impl IntoMemory for Memory {
    fn into_memory(self) -> Result<Memory, String> {
        Ok(self)
    }
}

impl<E: std::fmt::Display> IntoMemory for Result<Memory, E> {
    fn into_memory(self) -> Result<Memory, String> {
        self.map_err(|e| e.to_string())
    }
}

/// Makes the embedder `name` as `vectorway serve` would, over a store in `dir`; `Ok(Err(why))`
/// when this build or this environment cannot make it (unknown name, no key, no model).
fn memory_for(name: &str, dir: &Path) -> Result<Result<Memory, String>, String> {
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("VECTORWAY_") || k == "GEMINI_API_KEY")
        // Not configuration keys: the model tests' directory, and the one this bench sets.
        .filter(|(k, _)| k != "VECTORWAY_MODEL_DIR" && k != "VECTORWAY_MEMORY__EMBEDDER")
        .collect();
    env.push(("VECTORWAY_MEMORY__EMBEDDER".into(), name.into()));
    env.push(("VECTORWAY_MEMORY__MAX_RECORDS".into(), "0".into()));
    // The model tests name the model's directory with VECTORWAY_MODEL_DIR; without
    // `memory.model_dir` set, the model is looked for where that directory says.
    if name == "local-model"
        && std::env::var_os("VECTORWAY_MEMORY__MODEL_DIR").is_none()
        && let Ok(dir) = std::env::var("VECTORWAY_MODEL_DIR")
    {
        env.push(("VECTORWAY_MEMORY__MODEL_DIR".into(), dir));
    }
    // No payment is taken here: with a Gemini key and no facilitator configured, validation
    // would refuse the simulated facilitator that the bench never starts.
    env.push((
        "VECTORWAY_X402__ALLOW_SIMULATED_FACILITATOR_WITH_REAL_UPSTREAM".into(),
        "true".into(),
    ));
    let raw = match RawConfig::load(None, env) {
        Ok(raw) => raw,
        Err(e) => return Ok(Err(format!("configuration: {e}"))),
    };
    let config = match raw.validate() {
        Ok(c) => c,
        Err(e) => return Ok(Err(format!("configuration: {e}"))),
    };
    let base_url = match (&config.upstream.base_url, name) {
        (Some(url), _) => url.clone(),
        (None, "gemini") => return Ok(Err("GEMINI_API_KEY is not set".into())),
        // Not used by the local embedders.
        (None, _) => "http://127.0.0.1:9".into(),
    };
    let http = vectorway::upstream::client::build(config.upstream.connect_timeout, 4);
    let gemini = Gemini::new(http, base_url, &config.upstream);
    // The store (the memory log) lives in the fresh `dir`; the configured data directory is only
    // where the local model's files are looked for by default.
    let store = Store::open(dir).map_err(|e| format!("store at {}: {e}", dir.display()))?;
    Ok(Memory::from_config(store, &config.memory, gemini).into_memory())
}

/// 1-based position of `id` among `hits`, 0 when absent.
fn rank_of(hits: &[vectorway::memory::Match], id: &str) -> usize {
    hits.iter().position(|m| m.id == id).map_or(0, |p| p + 1)
}

async fn run(name: &str, memory: Memory, set: &[Pair], self_check: bool) -> Result<Run, String> {
    let started = Instant::now();
    let mut ids = Vec::with_capacity(set.len());
    for p in set {
        let id = memory
            .write(WALLET, Some(NAMESPACE), &p.memory)
            .await
            .map_err(|e| format!("{name}: write {}: {e}", p.id))?;
        ids.push(id.to_string());
    }
    let write_time = started.elapsed();
    let started = Instant::now();
    let mut ranks = Vec::with_capacity(set.len());
    for (p, id) in set.iter().zip(&ids) {
        let hits = memory
            .search(WALLET, Some(NAMESPACE), &p.query, MAX_K)
            .await
            .map_err(|e| format!("{name}: search {}: {e}", p.id))?;
        ranks.push(rank_of(&hits, id));
    }
    let search_time = started.elapsed();
    let mut self_ranks = Vec::new();
    if self_check {
        for (p, id) in set.iter().zip(&ids) {
            let hits = memory
                .search(WALLET, Some(NAMESPACE), &p.memory, 1)
                .await
                .map_err(|e| format!("{name}: search {}: {e}", p.id))?;
            self_ranks.push(rank_of(&hits, id));
        }
    }
    Ok(Run {
        embedder: name.to_string(),
        model: memory.model().to_string(),
        dims: memory.dims(),
        ranks,
        self_ranks,
        write_time,
        search_time,
    })
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

#[expect(clippy::print_stdout, reason = "the bench reports its figures")]
fn report(set: &[Pair], runs: &[Run], skipped: &[(String, String)]) {
    println!(
        "memory_recall: {} pairs, {} topics, one namespace; chance recall@5 = {:.3}",
        set.len(),
        set.iter()
            .map(|p| p.topic.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        5.0 / set.len().max(1) as f64
    );
    println!(
        "{:<12} {:<28} {:>5} {:>9} {:>9} {:>7} {:>12}",
        "embedder", "model", "dims", "recall@1", "recall@5", "MRR", "ms per text"
    );
    for r in runs {
        let f = figures(&r.ranks);
        let texts = 2 * r.ranks.len().max(1);
        let per_text = (r.write_time + r.search_time).as_secs_f64() * 1e3 / texts as f64;
        println!(
            "{:<12} {:<28} {:>5} {:>9.3} {:>9.3} {:>7.3} {:>12.2}",
            r.embedder, r.model, r.dims, f.recall_1, f.recall_5, f.mrr, per_text
        );
        let mut by_topic: HashMap<&str, Vec<usize>> = HashMap::new();
        for (p, rank) in set.iter().zip(&r.ranks) {
            by_topic.entry(p.topic.as_str()).or_default().push(*rank);
        }
        let mut topics: Vec<_> = by_topic.into_iter().collect();
        topics.sort_by(|a, b| a.0.cmp(b.0));
        let line: Vec<String> = topics
            .iter()
            .map(|(t, ranks)| format!("{t} {:.2}", figures(ranks).recall_5))
            .collect();
        println!("    recall@5 by topic: {}", line.join(", "));
    }
    for (name, why) in skipped {
        println!("{name:<12} skipped: {why}");
    }
}

fn write_json(set: &[Pair], runs: &[Run], skipped: &[(String, String)]) -> Result<PathBuf, String> {
    let out = target_dir().join("memory_recall.json");
    let body = json!({
        "pairs": set.len(),
        "chance_recall_at_5": 5.0 / set.len().max(1) as f64,
        "runs": runs.iter().map(|r| {
            let f = figures(&r.ranks);
            json!({
                "embedder": r.embedder, "model": r.model, "dims": r.dims,
                "recall_at_1": f.recall_1, "recall_at_5": f.recall_5, "mrr": f.mrr,
                "write_s": r.write_time.as_secs_f64(), "search_s": r.search_time.as_secs_f64(),
                "ranks": set.iter().zip(&r.ranks).map(|(p, k)| json!([p.id, k])).collect::<Vec<_>>(),
            })
        }).collect::<Vec<_>>(),
        "skipped": skipped.iter().map(|(n, w)| json!({"embedder": n, "reason": w})).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&body).map_err(|e| e.to_string())?;
    std::fs::write(&out, text).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(out)
}

async fn main_async() -> Result<(), String> {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let set = load_set()?;
    let requested = std::env::var("RECALL_EMBEDDERS").ok();
    let names: Vec<String> = match (&requested, bench_mode) {
        (Some(list), true) => list.split(',').map(|s| s.trim().to_string()).collect(),
        (None, true) => ALL.iter().map(|s| (*s).to_string()).collect(),
        (_, false) => vec!["local".into()],
    };
    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    for name in &names {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        match memory_for(name, dir.path())? {
            Ok(memory) => runs.push(run(name, memory, &set, !bench_mode).await?),
            Err(why) if requested.is_some() => return Err(format!("{name}: {why}")),
            Err(why) => skipped.push((name.clone(), why)),
        }
    }
    report(&set, &runs, &skipped);
    if bench_mode {
        let out = write_json(&set, &runs, &skipped)?;
        report_path(&out);
        return Ok(());
    }
    // Test mode: the plumbing must be sound whatever the embedder's quality.
    for r in &runs {
        if r.ranks.len() != set.len() {
            return Err(format!(
                "{}: {} ranks for {} pairs",
                r.embedder,
                r.ranks.len(),
                set.len()
            ));
        }
        if let Some((p, rank)) = set.iter().zip(&r.self_ranks).find(|(_, k)| **k != 1) {
            return Err(format!(
                "{}: {}'s own text ranks it {rank}",
                r.embedder, p.id
            ));
        }
    }
    Ok(())
}

#[expect(clippy::print_stdout, reason = "the bench reports its figures")]
fn report_path(out: &Path) {
    println!("memory_recall: wrote {}", out.display());
}

fn main() {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("memory_recall: runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(main_async()) {
        eprintln!("memory_recall: {e}");
        std::process::exit(1);
    }
}
