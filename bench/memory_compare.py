#!/usr/bin/env python3
"""hnswlib on the memory_index bench's data: recall@10 and single-query p50/p99, side by side.

Run `cargo bench --bench memory_index` first: it writes the vectors, the queries and the exact
top-10 answers to target/memory_bench/ (described by meta.json) and its own figures to
target/memory_bench.json. This script builds an hnswlib index over the same vectors with the same
M, ef_construction and ef_search, queries it one query at a time (as the gateway does), and
prints both sets of figures and their ratio.

    python3 -m venv /tmp/vw-bench-venv
    /tmp/vw-bench-venv/bin/pip install -r bench/requirements.txt
    /tmp/vw-bench-venv/bin/python bench/memory_compare.py

Both sides report wall-clock and thread-CPU percentiles: on a shared machine the wall-clock
p99 mostly measures other processes. Notes on fairness: the per-query time here includes the
Python call into hnswlib (a few microseconds), which the Rust side does not pay; and hnswlib's
setup.py compiles with -march=native, while cargo builds for baseline x86-64 unless RUSTFLAGS
sets a target CPU.
"""

import json
import os
import sys
import time
from pathlib import Path

import hnswlib
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
DATA = TARGET / "memory_bench"


def load(meta, n):
    dims, k = meta["dims"], meta["k"]
    vectors = np.fromfile(DATA / f"vectors_{n}.f32", dtype="<f4").reshape(-1, dims)
    queries = np.fromfile(DATA / f"queries_{n}.f32", dtype="<f4").reshape(-1, dims)
    truth = np.fromfile(DATA / f"truth_{n}.u32", dtype="<u4").reshape(-1, k)
    assert vectors.shape[0] == n, (vectors.shape, n)
    return vectors, queries, truth


def measure(meta, n):
    vectors, queries, truth = load(meta, n)
    dims, k = meta["dims"], meta["k"]
    index = hnswlib.Index(space="ip", dim=dims)  # unit vectors: inner product = cosine
    index.init_index(max_elements=n, M=meta["M"], ef_construction=meta["ef_construction"], random_seed=1)
    index.set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    index.add_items(vectors, np.arange(n))
    build_s = time.perf_counter() - started
    index.set_ef(meta["ef_search"])
    index.set_num_threads(1)

    for q in queries[:50]:  # warm the caches and the interpreter path
        index.knn_query(q, k=k)
    wall, cpu, hits = [], [], 0
    for q, t in zip(queries, truth):
        started, cpu_started = time.perf_counter_ns(), time.thread_time_ns()
        labels, _ = index.knn_query(q, k=k)
        cpu.append(time.thread_time_ns() - cpu_started)
        wall.append(time.perf_counter_ns() - started)
        hits += len(set(labels[0].tolist()) & set(t.tolist()))
    wall, cpu = np.array(wall) / 1e3, np.array(cpu) / 1e3
    return {
        "n": n,
        "recall_at_10": hits / (k * len(queries)),
        "p50_us": float(np.percentile(wall, 50)),
        "p99_us": float(np.percentile(wall, 99)),
        "cpu_p50_us": float(np.percentile(cpu, 50)),
        "cpu_p99_us": float(np.percentile(cpu, 99)),
        "build_s": build_s,
    }


def main():
    meta_path = DATA / "meta.json"
    if not meta_path.exists():
        sys.exit(f"{meta_path} is missing: run `cargo bench --bench memory_index` first")
    meta = json.loads(meta_path.read_text())
    rust = {}
    rust_path = TARGET / "memory_bench.json"
    if rust_path.exists():
        rust = {r["n"]: r for r in json.loads(rust_path.read_text())["results"]}

    results = []
    print(f"M={meta['M']} ef_construction={meta['ef_construction']} ef_search={meta['ef_search']} "
          f"dims={meta['dims']} queries={meta['queries']} cpus={os.cpu_count()} "
          f"load average {os.getloadavg()[0]:.2f}")
    cols = ("p50_us", "p99_us", "cpu_p50_us", "cpu_p99_us", "build_s")
    print(f"{'n':>7} {'engine':<10} {'recall@10':>9} {'p50 µs':>8} {'p99 µs':>8} "
          f"{'cpu p50':>8} {'cpu p99':>8} {'build s':>8}")
    for n in meta["sizes"]:
        h = measure(meta, n)
        results.append(h)
        rows = [("hnswlib", h)]
        if n in rust:
            rows.insert(0, ("vectorway", rust[n]))
        for name, r in rows:
            print(f"{n:>7} {name:<10} {r['recall_at_10']:>9.4f} "
                  + " ".join(f"{r.get(c, float('nan')):>8.{1 if c == 'build_s' else 0}f}" for c in cols))
        if n in rust:
            r = rust[n]
            print(f"{n:>7} {'ratio':<10} {'':>9} "
                  + " ".join(f"{r.get(c, float('nan')) / h[c]:>7.2f}x" for c in cols)
                  + "   (vectorway / hnswlib)")
    out = TARGET / "memory_bench_hnswlib.json"
    out.write_text(json.dumps({"hnswlib": hnswlib.__version__ if hasattr(hnswlib, "__version__") else "0.8.0",
                               "params": {k: meta[k] for k in ("M", "ef_construction", "ef_search")},
                               "results": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
