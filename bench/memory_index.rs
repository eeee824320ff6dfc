//! Memory index: recall@10 of the HNSW path against exact search, and single-query latency
//! (p50/p99), at 10k and 100k vectors of 768 dimensions.
//!
//! The data imitates text embeddings: 90% of the vectors come from 200 clusters in a
//! 48-dimensional latent space, mapped into 768 dimensions by a fixed random matrix, with
//! isotropic noise; 10% are uniform random unit vectors (points with no real neighbours, which
//! the graph must still route around). The 1,000 queries are fresh draws from the clustered
//! part, so each has a meaningful top 10. Everything is seeded and reproducible.
//!
//! Per size, the bench builds `Index` with the default `IndexParams` (the graph is built at
//! once), computes the exact top 10 of every query by brute force, then times each query
//! alone (criterion reports a mean; the percentiles are computed here), both by the wall clock
//! and by the thread's CPU clock: on a shared two-core machine the wall-clock p99 mostly
//! measures other processes, the CPU-time p99 the search itself. It prints one line per size
//! and writes `target/memory_bench.json`.
//!
//! For `bench/memory_compare.py` (hnswlib on the same data and the same M / ef settings) it
//! also writes the vectors, queries and exact answers to `target/memory_bench/` as raw
//! little-endian arrays described by `meta.json`.
//!
//! Under `cargo test --benches` (criterion's test mode) it runs one small size only and writes
//! nothing.
//!
//! Knobs (environment): `MEMORY_BENCH_SIZES` (e.g. `10000,100000`), `MEMORY_BENCH_M`,
//! `MEMORY_BENCH_EFC`, `MEMORY_BENCH_EF` (override the defaults), `MEMORY_BENCH_EF_SWEEP`
//! (e.g. `16,24,32`: also measure these ef_search values on the same graph).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cpu_time::ThreadTime;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use vectorway::memory::MemoryId;
use vectorway::memory::index::{Index, IndexParams, normalize};

const DIMS: usize = 768;
const LATENT: usize = 48;
const CLUSTERS: usize = 200;
const RANDOM_SHARE: f64 = 0.10;
const K: usize = 10;

/// SplitMix64 with Box–Muller normals.
struct Rng {
    state: u64,
    spare: Option<f64>,
}

impl Rng {
    fn new(seed: u64) -> Self {
        Self {
            state: seed,
            spare: None,
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let (u, v) = (self.unit(), self.unit());
        let r = (-2.0 * u.ln()).sqrt();
        let t = std::f64::consts::TAU * v;
        self.spare = Some(r * t.sin());
        r * t.cos()
    }
}

/// The fixed generative model: latent cluster centres and the latent → 768 map.
struct Model {
    centres: Vec<[f64; LATENT]>,
    map: Vec<[f64; LATENT]>,
}

impl Model {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let centres = (0..CLUSTERS)
            .map(|_| std::array::from_fn(|_| rng.normal()))
            .collect();
        let scale = 1.0 / (LATENT as f64).sqrt();
        let map = (0..DIMS)
            .map(|_| std::array::from_fn(|_| rng.normal() * scale))
            .collect();
        Self { centres, map }
    }

    /// One clustered vector, appended to `out`.
    fn clustered(&self, rng: &mut Rng, out: &mut Vec<f32>) {
        let c = &self.centres[(rng.next_u64() % CLUSTERS as u64) as usize];
        let z: [f64; LATENT] = std::array::from_fn(|i| c[i] + 0.6 * rng.normal());
        let start = out.len();
        out.extend(self.map.iter().map(|row| {
            let x: f64 = row.iter().zip(&z).map(|(a, b)| a * b).sum();
            (x + 0.15 * rng.normal()) as f32
        }));
        normalize(&mut out[start..]);
    }

    /// One uniform random unit vector, appended to `out`.
    fn random(rng: &mut Rng, out: &mut Vec<f32>) {
        let start = out.len();
        out.extend((0..DIMS).map(|_| rng.normal() as f32));
        normalize(&mut out[start..]);
    }
}

fn id(i: usize) -> MemoryId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&(i as u64).to_be_bytes());
    MemoryId::from_bytes(b)
}

fn row_of(id: &MemoryId) -> u32 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&id.as_bytes()[..8]);
    u64::from_be_bytes(b) as u32
}

/// Percentiles of one batch of queries: wall-clock time, and the querying thread's CPU time
/// (which leaves out time spent preempted by other processes on a busy machine).
#[derive(Clone, Copy)]
struct Latency {
    p50: Duration,
    p99: Duration,
    cpu_p50: Duration,
    cpu_p99: Duration,
}

/// What one size measured; `sweep` holds the same for other ef_search values.
struct Figures {
    n: usize,
    build: Duration,
    recall: f64,
    latency: Latency,
    exact_p50: Duration,
    sweep: Vec<(usize, f64, Latency)>,
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// `IndexParams::default()`, with `MEMORY_BENCH_M`, `MEMORY_BENCH_EFC` and `MEMORY_BENCH_EF`
/// overriding M, ef_construction and ef_search (for tuning the defaults).
fn bench_params() -> IndexParams {
    let d = IndexParams::default();
    IndexParams {
        exact_threshold: 1,
        max_connections: env_usize("MEMORY_BENCH_M").unwrap_or(d.max_connections),
        ef_construction: env_usize("MEMORY_BENCH_EFC").unwrap_or(d.ef_construction),
        ef_search: env_usize("MEMORY_BENCH_EF").unwrap_or(d.ef_search),
    }
}

/// Recall@K against `truth` and the per-query latencies of `ix.search`.
fn run_queries(ix: &Index, qs: &[f32], truth: &[Vec<u32>]) -> (f64, Latency) {
    let mut hits = 0usize;
    let mut wall = Vec::with_capacity(truth.len());
    let mut cpu = Vec::with_capacity(truth.len());
    for (q, t) in qs.chunks_exact(DIMS).zip(truth) {
        let (started, cpu_started) = (Instant::now(), ThreadTime::now());
        let found = black_box(ix.search(black_box(q), K));
        cpu.push(cpu_started.elapsed());
        wall.push(started.elapsed());
        hits += found
            .iter()
            .filter(|(id, _)| t.contains(&row_of(id)))
            .count();
    }
    wall.sort();
    cpu.sort();
    let latency = Latency {
        p50: percentile(&wall, 0.50),
        p99: percentile(&wall, 0.99),
        cpu_p50: percentile(&cpu, 0.50),
        cpu_p99: percentile(&cpu, 0.99),
    };
    (hits as f64 / (K * truth.len()) as f64, latency)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The exact top-K rows of every query, on both cores.
fn exact_answers(ix: &Index, queries: &[f32]) -> Vec<Vec<u32>> {
    let qs: Vec<&[f32]> = queries.chunks_exact(DIMS).collect();
    let half = qs.len().div_ceil(2);
    std::thread::scope(|s| {
        let parts: Vec<_> = qs
            .chunks(half)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|q| {
                            ix.search_exact(q, K)
                                .iter()
                                .map(|(id, _)| row_of(id))
                                .collect()
                        })
                        .collect::<Vec<Vec<u32>>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| panic!("exact search thread panicked"))
            })
            .collect()
    })
}

fn write_f32(path: &Path, values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn write_u32(path: &Path, values: &[u32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Generates, builds, measures one size; `export` writes the data set for the Python side.
fn measure(c: &mut Criterion, n: usize, queries: usize, export: Option<&Path>) -> Figures {
    let model = Model::new(42);
    let mut rng = Rng::new(1_000 + n as u64);
    let mut vectors = Vec::with_capacity(n * DIMS);
    for _ in 0..n {
        if rng.unit() <= RANDOM_SHARE {
            Model::random(&mut rng, &mut vectors);
        } else {
            model.clustered(&mut rng, &mut vectors);
        }
    }
    let mut qrng = Rng::new(7_000 + n as u64);
    let mut qs = Vec::with_capacity(queries * DIMS);
    for _ in 0..queries {
        model.clustered(&mut qrng, &mut qs);
    }

    let params = bench_params();
    let mut ix = Index::new(DIMS, params);
    for (i, v) in vectors.chunks_exact(DIMS).enumerate() {
        ix.insert(id(i), v);
    }
    let started = Instant::now();
    ix.maintain_now();
    let build = started.elapsed();
    assert_eq!(ix.graph_points(), n);

    let truth = exact_answers(&ix, &qs);
    let mut sweep = Vec::new();
    let efs: Vec<usize> = std::env::var("MEMORY_BENCH_EF_SWEEP")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_default();
    for ef in efs {
        ix.set_ef_search(ef);
        let (recall, latency) = run_queries(&ix, &qs, &truth);
        sweep.push((ef, recall, latency));
    }
    ix.set_ef_search(params.ef_search);
    let (recall, latency) = run_queries(&ix, &qs, &truth);
    let mut exact_times: Vec<Duration> = qs
        .chunks_exact(DIMS)
        .take(100)
        .map(|q| {
            let started = Instant::now();
            black_box(ix.search_exact(black_box(q), K));
            started.elapsed()
        })
        .collect();
    exact_times.sort();

    let mut g = c.benchmark_group("memory_index");
    let mut next = 0usize;
    g.bench_function(format!("search_k10/{n}"), |b| {
        b.iter(|| {
            let q = &qs[next * DIMS..(next + 1) * DIMS];
            next = (next + 1) % queries;
            black_box(ix.search(black_box(q), K))
        })
    });
    g.finish();

    if let Some(dir) = export {
        write_f32(&dir.join(format!("vectors_{n}.f32")), &vectors);
        write_f32(&dir.join(format!("queries_{n}.f32")), &qs);
        let flat: Vec<u32> = truth.iter().flatten().copied().collect();
        write_u32(&dir.join(format!("truth_{n}.u32")), &flat);
    }
    Figures {
        n,
        build,
        recall,
        latency,
        exact_p50: percentile(&exact_times, 0.50),
        sweep,
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

#[expect(clippy::print_stdout, reason = "the bench reports its figures")]
fn report(figures: &[Figures], params: IndexParams, out: &Path) {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    for f in figures {
        let l = f.latency;
        println!(
            "memory_index n={} dims={DIMS}: recall@10 {:.4}, search p50 {:.0} µs, p99 {:.0} µs \
             (thread CPU p50 {:.0} µs, p99 {:.0} µs; exact scan p50 {:.0} µs), build {:.1} s",
            f.n,
            f.recall,
            us(l.p50),
            us(l.p99),
            us(l.cpu_p50),
            us(l.cpu_p99),
            us(f.exact_p50),
            f.build.as_secs_f64()
        );
        for (ef, recall, l) in &f.sweep {
            println!(
                "memory_index n={} ef_search={ef}: recall@10 {recall:.4}, p50 {:.0} µs, p99 {:.0} µs \
                 (thread CPU p50 {:.0} µs, p99 {:.0} µs)",
                f.n,
                us(l.p50),
                us(l.p99),
                us(l.cpu_p50),
                us(l.cpu_p99)
            );
        }
    }
    let lat = |l: &Latency| {
        json!({
            "p50_us": us(l.p50),
            "p99_us": us(l.p99),
            "cpu_p50_us": us(l.cpu_p50),
            "cpu_p99_us": us(l.cpu_p99),
        })
    };
    let doc = json!({
        "machine": {
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "cpu_model": cpu_model(),
            "load_average": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        },
        "params": {
            "M": params.max_connections,
            "ef_construction": params.ef_construction,
            "ef_search": params.ef_search,
            "k": K,
            "dims": DIMS,
        },
        "results": figures.iter().map(|f| {
            let mut r = lat(&f.latency);
            r["n"] = json!(f.n);
            r["recall_at_10"] = json!(f.recall);
            r["exact_scan_p50_us"] = json!(us(f.exact_p50));
            r["build_s"] = json!(f.build.as_secs_f64());
            r["ef_sweep"] = f.sweep.iter().map(|(ef, recall, l)| {
                let mut e = lat(l);
                e["ef_search"] = json!(ef);
                e["recall_at_10"] = json!(recall);
                e
            }).collect();
            r
        }).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    std::fs::write(out, text).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    println!("memory_index: wrote {}", out.display());
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn memory_index(c: &mut Criterion) {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not (criterion's test mode).
    let full = std::env::args().any(|a| a == "--bench");
    if !full {
        let f = measure(c, 2_000, 50, None);
        assert!(f.recall >= 0.9, "recall@10 {}", f.recall);
        return;
    }
    let sizes: Vec<usize> = std::env::var("MEMORY_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000]);
    let queries = 1_000;
    let data_dir = target_dir().join("memory_bench");
    std::fs::create_dir_all(&data_dir).unwrap_or_else(|e| panic!("{}: {e}", data_dir.display()));
    let figures: Vec<Figures> = sizes
        .iter()
        .map(|n| measure(c, *n, queries, Some(&data_dir)))
        .collect();
    let params = bench_params();
    let meta = json!({
        "dims": DIMS,
        "k": K,
        "queries": queries,
        "M": params.max_connections,
        "ef_construction": params.ef_construction,
        "ef_search": params.ef_search,
        "sizes": sizes,
        "files": "vectors_{n}.f32, queries_{n}.f32 (little-endian f32, row-major), truth_{n}.u32 (exact top-10 row numbers per query)",
    });
    let meta_path = data_dir.join("meta.json");
    std::fs::write(
        &meta_path,
        serde_json::to_string_pretty(&meta).unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", meta_path.display()));
    report(&figures, params, &target_dir().join("memory_bench.json"));
}

criterion_group!(benches, memory_index);
criterion_main!(benches);
