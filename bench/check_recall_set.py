#!/usr/bin/env python3
"""Checks bench/data/recall.jsonl, the labelled memory-recall set: paraphrases with no shared content word.

Each line is {"id", "topic", "memory", "query"}: `memory` is what an agent stored about its user,
`query` a later question that should recall it, written with none of its words. A pair fails when
a content word of the query and one of the memory have the same stem, or when one stem is a prefix
of the other and both are at least 4 letters ("cook" / "cookies", "work" / "workout"). Words are
lower-cased, apostrophes dropped ("user's" → "users"), split at anything that is not a letter or
digit, and stopwords (function words, pronouns, auxiliaries) removed; the stemmer strips common
English suffixes, erring towards over-stemming, which makes the check stricter. The set must also
have at least 240 pairs, at least 12 topics of at least 12 pairs each, unique ids, and no
memory or query text twice.

Standard library only. `python3 bench/check_recall_set.py` checks the committed set;
`--self-test` first shows that the checker catches what it must (shared words, inflections,
duplicates), so a checker that passes everything cannot go unnoticed. Exit status 1 on any failure.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

SET = Path(__file__).resolve().parent / "data" / "recall.jsonl"
MIN_PAIRS = 240
MIN_TOPICS = 12
MIN_PER_TOPIC = 12

STOPWORDS = frozenset(
    """
    a an the and or but nor so yet if then than that this these those there here
    i me my mine myself we us our ours ourselves you your yours yourself yourselves
    he him his himself she her hers herself it its itself they them their theirs themselves
    what which who whom whose when where why how whatever whenever wherever
    is am are was were be been being do does did doing done have has had having
    will would shall should can could may might must ought
    not no nor only own same too very just also even ever again still already
    of at by for with about against between into through during before after above below
    to from up down in out on off over under once further
    all any both each few more most other some such every either neither
    as because until while whether although though since unless
    s t d ll m re ve don doesn didn isn aren wasn weren hasn haven hadn won wouldn shouldn
    couldn can't cannot
    """.split()
)

_SUFFIXES = (
    "ational", "ization", "fulness", "ousness", "iveness", "ements", "ement",
    "ations", "ation", "ings", "ing", "ities", "ity", "ness", "ments", "ment",
    "ively", "ive", "ably", "able", "ibly", "ible", "ously", "ous", "fully", "ful",
    "ists", "ist", "isms", "ism", "ers", "er", "ies", "ied", "ly", "ed", "es", "s", "y", "e",
)


def stem(word: str) -> str:
    """Strips one common suffix (keeping at least 3 letters), then a doubled final consonant."""
    for suf in _SUFFIXES:
        if word.endswith(suf) and len(word) - len(suf) >= 3:
            word = word[: -len(suf)]
            break
    if len(word) >= 4 and word[-1] == word[-2] and word[-1] not in "aeiou":
        word = word[:-1]
    return word


def content_stems(text: str) -> dict[str, str]:
    """stem → the first word of `text` that produced it."""
    words = re.split(r"[^0-9a-z]+", text.lower().replace("'", "").replace("\u2019", ""))
    out: dict[str, str] = {}
    for w in words:
        if w and w not in STOPWORDS:
            out.setdefault(stem(w), w)
    return out


def overlaps(memory: str, query: str) -> list[tuple[str, str]]:
    """The (memory word, query word) pairs that share a stem or a long stem prefix."""
    m, q = content_stems(memory), content_stems(query)
    hits = []
    for sm, wm in m.items():
        for sq, wq in q.items():
            short, long_ = sorted((sm, sq), key=len)
            if sm == sq or (len(short) >= 4 and long_.startswith(short)):
                hits.append((wm, wq))
    return hits


def check(pairs: list[dict]) -> list[str]:
    errors = []
    ids = Counter(p.get("id") for p in pairs)
    errors += [f"duplicate id {i!r}" for i, n in ids.items() if n > 1]
    for field in ("memory", "query"):
        texts = Counter(p.get(field, "").strip().lower() for p in pairs)
        errors += [f"{field} text appears {n} times: {t!r}" for t, n in texts.items() if n > 1]
    for p in pairs:
        missing = [k for k in ("id", "topic", "memory", "query") if not str(p.get(k, "")).strip()]
        if missing:
            errors.append(f"{p.get('id', '?')}: missing {missing}")
            continue
        shared = overlaps(p["memory"], p["query"])
        if shared:
            errors.append(f"{p['id']}: shared content words {shared}")
    topics = Counter(p.get("topic") for p in pairs)
    if len(pairs) < MIN_PAIRS:
        errors.append(f"{len(pairs)} pairs, at least {MIN_PAIRS} required")
    big = [t for t, n in topics.items() if n >= MIN_PER_TOPIC]
    if len(big) < MIN_TOPICS:
        errors.append(
            f"{len(big)} topics with >= {MIN_PER_TOPIC} pairs ({dict(topics)}), "
            f"at least {MIN_TOPICS} required"
        )
    return errors


def load(path: Path) -> list[dict]:
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                pairs.append(json.loads(line))
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{n}: not JSON: {e}")
    return pairs


def self_test() -> int:
    """Cases the checker must flag, and cases it must let through; returns the failure count."""
    must_flag = [
        ("User prefers window seats.", "Which seat do they like?"),  # plural
        ("Booked flights to Rome.", "Where is the flight headed?"),  # plural
        ("She is cooking dinner.", "Who cooked?"),  # -ing / -ed
        ("Goes running daily.", "How often does she run?"),  # doubled consonant
        ("Loves baking cookies.", "Any favourite cookie?"),  # -ies / prefix
        ("Weekly workout at 6.", "When do they work?"),  # prefix of 4+ letters
        ("The user's dentist", "Which users?"),  # apostrophe
        ("Budget is 500 dollars", "Is it under 500?"),  # digits count as words
    ]
    must_pass = [
        ("User prefers window seats on long-haul flights.", "Where do they like to sit on planes?"),
        ("Allergic to peanuts.", "Which foods make them ill?"),
    ]
    failures = 0
    for memory, query in must_flag:
        if not overlaps(memory, query):
            print(f"self-test FAILED: not flagged: {memory!r} / {query!r}")
            failures += 1
    for memory, query in must_pass:
        if overlaps(memory, query):
            print(f"self-test FAILED: flagged {overlaps(memory, query)}: {memory!r} / {query!r}")
            failures += 1
    good = [
        {"id": f"t{i}", "topic": f"topic{i % MIN_TOPICS}", "memory": f"m{i}", "query": f"q{i}"}
        for i in range(MIN_PAIRS)
    ]
    if check(good):
        print(f"self-test FAILED: a valid set was refused: {check(good)[:3]}")
        failures += 1
    dup = good + [dict(good[0])]
    if not any("duplicate id" in e for e in check(dup)):
        print("self-test FAILED: a duplicate id went through")
        failures += 1
    if not any("at least" in e for e in check(good[:MIN_PAIRS - 1])):
        print("self-test FAILED: a short set went through")
        failures += 1
    cases = len(must_flag) + len(must_pass) + 3
    print(f"checker self-test: {cases - failures} passed, {failures} failed")
    return failures


def main() -> None:
    failures = self_test() if "--self-test" in sys.argv[1:] else 0
    args = [a for a in sys.argv[1:] if a != "--self-test"]
    path = Path(args[0]) if args else SET
    pairs = load(path)
    errors = check(pairs)
    for e in errors:
        print(e)
    topics = Counter(p.get("topic") for p in pairs)
    print(f"{path.name}: {len(pairs)} pairs over {len(topics)} topics, {len(errors)} problems")
    sys.exit(1 if errors or failures else 0)


if __name__ == "__main__":
    main()
