//! x402 verifications per second: the verifier pipeline under concurrent load versus raw `crypto::recover`.
//!
//! Groups (one element = one payment):
//! * `recover_raw`: `crypto::recover` on precomputed EIP-712 digests in a loop on one thread, the
//!   floor cost of a verification (secp256k1 public-key recovery plus one Keccak).
//! * `check_raw`: `payments::verify::check` on one thread: the digest (three Keccaks), recovery
//!   and the requirement checks, with no queue and no nonce claim.
//! * `pipeline_N_threads`: every payment submitted to `payments::Pipeline` from 8 tokio tasks with
//!   up to 64 submissions each in flight, on a multi-thread runtime; `N` verifier threads pop, check,
//!   claim the nonce in a temporary sled store, and answer through oneshots. The time is the wall
//!   time until every answer arrived. Each payment carries a fresh nonce (signed before the clock
//!   starts), so every verification claims for real.
//!
//! After the criterion groups a short fixed run (`RATIO_RUN` payments) prints payments per second
//! for raw recovery and for the pipeline with 1 and 2 threads, and their ratio, on stderr.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use futures_util::StreamExt;
use vectorway::config::{X402Config, known_network};
use vectorway::crypto::recover;
use vectorway::payments::header::{DecodedPayment, decode_value};
use vectorway::payments::sign::{DEV_KEY_0, DEV_KEY_1, Signer};
use vectorway::payments::verify::{check, transfer_digest};
use vectorway::payments::{HeaderKind, Pipeline, unix_now};
use vectorway::storage::{Storage, Store};

/// Submitting tasks, and submissions each keeps in flight.
const TASKS: usize = 8;
const IN_FLIGHT_PER_TASK: usize = 64;
/// Payments in the fixed ratio run.
const RATIO_RUN: usize = 4_000;
const QUOTE: u64 = 1_000;
const RESOURCE: &str = "http://127.0.0.1:8080/v1/chat/completions";

fn cfg(threads: usize) -> X402Config {
    X402Config {
        networks: known_network("base-sepolia").into_iter().collect(),
        pay_to: Signer::from_hex(DEV_KEY_1)
            .unwrap_or_else(|| panic!("dev key 1"))
            .address(),
        facilitator_url: None,
        own: None,
        allow_simulated_facilitator_with_real_upstream: false,
        min_quote: QUOTE,
        max_timeout_s: 300,
        verifier_threads: threads,
        settle_concurrency: 8,
        settle_timeout: Duration::from_secs(5),
        settle_retries: 0,
        settle_pending_wait: Duration::from_secs(1),
    }
}

/// `n` honestly signed v2 payments from dev key 0, decoded as the API would decode them.
fn payments(n: usize) -> Vec<DecodedPayment> {
    let signer = Signer::from_hex(DEV_KEY_0).unwrap_or_else(|| panic!("dev key 0"));
    let cfg = cfg(1);
    let net = &cfg.networks[0];
    (0..n)
        .map(|_| {
            let signed = signer
                .pay(net, cfg.pay_to, QUOTE, unix_now(), 3_600)
                .unwrap_or_else(|e| panic!("sign: {e}"));
            let header = signed
                .payment_signature()
                .unwrap_or_else(|e| panic!("encode: {e}"));
            decode_value(HeaderKind::PaymentSignature, header.as_bytes())
                .unwrap_or_else(|e| panic!("decode: {e}"))
        })
        .collect()
}

/// Verifies every payment through the pipeline from `TASKS` concurrent tasks; returns the wall time.
fn run_pipeline(
    rt: &tokio::runtime::Runtime,
    pipeline: &Arc<Pipeline>,
    all: Vec<DecodedPayment>,
) -> Duration {
    let now = unix_now();
    let per_task = all.len().div_ceil(TASKS).max(1);
    let mut chunks: Vec<Vec<DecodedPayment>> = Vec::new();
    let mut rest = all;
    while !rest.is_empty() {
        let tail = rest.split_off(per_task.min(rest.len()));
        chunks.push(std::mem::replace(&mut rest, tail));
    }
    rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let pipeline = pipeline.clone();
                rt.spawn(async move {
                    futures_util::stream::iter(chunk)
                        .map(|p| {
                            let pipeline = pipeline.clone();
                            async move { pipeline.verify(p, QUOTE, RESOURCE, now).await }
                        })
                        .buffer_unordered(IN_FLIGHT_PER_TASK)
                        .filter(|r| std::future::ready(r.is_err()))
                        .count()
                        .await
                })
            })
            .collect();
        for t in tasks {
            let failed = t.await.unwrap_or_else(|e| panic!("task: {e}"));
            assert_eq!(failed, 0, "every payment must verify");
        }
        start.elapsed()
    })
}

fn benches(c: &mut Criterion, rt: &tokio::runtime::Runtime, dir: &std::path::Path) {
    let sample = payments(1_024);
    let cfg1 = cfg(1);
    let net = &cfg1.networks[0];
    let digests: Vec<([u8; 32], [u8; 65])> = sample
        .iter()
        .map(|p| (transfer_digest(net, &p.authorization), p.signature))
        .collect();

    let mut g = c.benchmark_group("x402_verify");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("recover_raw", |b| {
        b.iter(|| {
            let (d, s) = &digests[i % digests.len()];
            i += 1;
            black_box(recover(black_box(d), black_box(s)).ok())
        })
    });
    let now = unix_now();
    g.bench_function("check_raw", |b| {
        b.iter(|| {
            let p = &sample[i % sample.len()];
            i += 1;
            black_box(check(&cfg1, black_box(p), QUOTE, now).ok())
        })
    });
    for threads in [1usize, 2] {
        let store = Store::open(&dir.join(format!("bench-{threads}")))
            .unwrap_or_else(|e| panic!("store: {e}"));
        let pipeline = Arc::new(Pipeline::start(
            Arc::new(cfg(threads)),
            Storage::embedded(store),
            4_096,
        ));
        g.bench_function(format!("pipeline_{threads}_threads"), |b| {
            b.iter_custom(|iters| run_pipeline(rt, &pipeline, payments(iters as usize)))
        });
    }
    g.finish();
}

/// A fixed run outside criterion: payments per second for each path, and the ratios.
fn ratio_report(rt: &tokio::runtime::Runtime, dir: &std::path::Path) {
    let all = payments(RATIO_RUN);
    let cfg1 = cfg(1);
    let net = &cfg1.networks[0];
    let start = Instant::now();
    for p in &all {
        black_box(recover(&transfer_digest(net, &p.authorization), &p.signature).ok());
    }
    let raw = RATIO_RUN as f64 / start.elapsed().as_secs_f64();
    eprintln!("x402_verify ratio run: {RATIO_RUN} payments");
    eprintln!("  raw digest+recover, 1 thread : {raw:>9.0} /s");
    for threads in [1usize, 2] {
        let store = Store::open(&dir.join(format!("ratio-{threads}")))
            .unwrap_or_else(|e| panic!("store: {e}"));
        let pipeline = Arc::new(Pipeline::start(
            Arc::new(cfg(threads)),
            Storage::embedded(store),
            4_096,
        ));
        let took = run_pipeline(rt, &pipeline, all.clone());
        let rate = RATIO_RUN as f64 / took.as_secs_f64();
        eprintln!(
            "  pipeline, {threads} verifier thread(s): {rate:>9.0} /s  (ratio to raw: {:.2})",
            rate / raw
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, &rt, dir.path());
    ratio_report(&rt, dir.path());
    c.final_summary();
}
