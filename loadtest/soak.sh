#!/usr/bin/env bash
# loadtest/soak.sh — a 10-minute mixed agent-fleet soak (k6 fleet.js) that records the gateway's
# resident memory (VmRSS from /proc/PID/status) every second and, every 10 s, the wallet's held
# credits (GET /admin/balance?wallet=… with x-admin-secret from <data_dir>/admin.secret), keeps
# recording for 60 s after the load stops, and fails when RSS grows steadily under load or
# credits stay held after the load has stopped. Writes loadtest/results/soak-<stamp>.{csv,md,json}
# and soak-<stamp>.rss.csv (the per-second RSS).
#
#   loadtest/soak.sh [DURATION]      (default 10m; e.g. 2m for a shorter check)
#
# Env: VUS (default 20), CHAT_MEMORY=off and FLEET_MEMORY=skip (leave wallet memory out),
# SOAK_MAX_GROWTH_KB_PER_MIN (default 512: the RSS slope that counts as steady growth; Theil-Sen
# over the per-second RSS from 30 % of the load to its end), SIM_ARGS.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/env.sh
source "$HERE/lib/env.sh"
DURATION="${1:-10m}"
[[ "$DURATION" =~ ^[0-9]+[sm]$ ]] || vw_die "DURATION must look like 600s or 10m"
secs="${DURATION%[sm]}"
[[ "$DURATION" == *m ]] && secs=$((secs * 60))

vw_require_binary
vw_k6
vw_init
# shellcheck disable=SC2086
vw_start_sim ${SIM_ARGS:-}
vw_start_gateway
vw_fund

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="$HERE/results/soak-$STAMP"
mkdir -p "$HERE/results"
CSV="$OUT.csv"
echo "t_s,phase,rss_kb,credits,held,available" >"$CSV"

fleet_memory="${FLEET_MEMORY:-require}"
code="$(curl -s -o /dev/null -w '%{http_code}' -H "x-api-key: $API_KEY" "$GW_URL/v1/memory?q=probe&k=5")"
if [[ "$code" == 404 || "$code" == 405 ]]; then
    vw_log "GET /v1/memory answered $code: this binary has no memory search; the fleet runs without it"
    fleet_memory=skip
fi

sample() { # sample PHASE T0
    local bal
    bal="$(curl -s --max-time 5 -H "x-admin-secret: $ADMIN_SECRET" "$GW_URL/admin/balance?wallet=$VW_WALLET")"
    python3 -c 'import json,sys; b=json.loads(sys.argv[1]); print(",".join(str(b[k]) for k in ("credits","held","available")))' "$bal" \
        | sed "s/^/$(( $(date +%s) - $2 )),$1,$(vw_rss_kb "$GW_PID"),/" >>"$CSV"
}

T0="$(date +%s)"
RSS_CSV="$OUT.rss.csv"
echo "t_s,rss_kb" >"$RSS_CSV"
# Every second: the memory index works in cycles of tens of seconds (rows grow, a rebuild gives
# them back), and samples 10 s apart alias such a cycle into slow, spurious trends.
(while kill -0 "$GW_PID" 2>/dev/null; do
    echo "$(( $(date +%s) - T0 )),$(vw_rss_kb "$GW_PID")" >>"$RSS_CSV"
    sleep 1
done) &
VW_PIDS+=("$!")
sample idle "$T0"
vw_log "fleet load for $DURATION with ${VUS:-20} VUs (memory: $fleet_memory)"
"$K6" run --quiet --no-usage-report --summary-trend-stats "avg,min,med,max,p(90),p(95),p(99)" --summary-export "$OUT.json" \
    -e "BASE_URL=$GW_URL" -e "API_KEY=$API_KEY" -e "DURATION=$DURATION" -e "VUS=${VUS:-20}" \
    -e "FLEET_MEMORY=$fleet_memory" -e "CHAT_MEMORY=${CHAT_MEMORY:-on}" "$HERE/fleet.js" >"$VW_TMP/k6.out" 2>&1 &
K6_PID=$!
VW_PIDS+=("$K6_PID")
end=$((T0 + secs + 40))
while kill -0 "$K6_PID" 2>/dev/null && [[ $(date +%s) -lt $end ]]; do
    sleep 10
    sample load "$T0"
done
k6_status=0
wait "$K6_PID" || k6_status=$?
LOAD_END=$(( $(date +%s) - T0 ))
tail -n 30 "$VW_TMP/k6.out"
for _ in 1 2 3 4 5 6; do
    sleep 10
    sample after "$T0"
done

python3 - "$CSV" "$OUT.md" "$k6_status" "${SOAK_MAX_GROWTH_KB_PER_MIN:-512}" "$DURATION" "$RSS_CSV" "$LOAD_END" <<'PY'
import csv, statistics, sys
path, md, k6_status, max_growth, duration = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
rss_path, load_end = sys.argv[6], int(sys.argv[7])
rows = list(csv.DictReader(open(path)))
load = [r for r in rows if r["phase"] == "load"]
after = [r for r in rows if r["phase"] == "after"]

def theil_sen(xs, ys):
    pairs = sorted((ys[j] - ys[i]) / (xs[j] - xs[i])
                   for i in range(len(xs)) for j in range(i + 1, len(xs)) if xs[j] != xs[i])
    return (pairs[len(pairs) // 2] + pairs[(len(pairs) - 1) // 2]) / 2 if pairs else 0.0

def least_squares(xs, ys):
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0

# Steady growth is judged by the Theil-Sen slope (the median of every pairwise slope) of the
# per-second RSS from 30 % of the load to its end: the first 30 % is warm-up (the wallet's index
# filling to memory.max_records). Not the second half alone: RSS also swings by ~10 MB over
# minutes (the index's rebuild cycle beating with the memory log's compactions), and five
# minutes cannot tell such a swing from a trend, while seven can. A transient spike moves a
# median of slopes by nothing. The per-minute medians of the second half are printed, and the
# 10 s samples' least-squares slope over it, for comparison with older runs.
per_s = [(int(r["t_s"]), int(r["rss_kb"])) for r in csv.DictReader(open(rss_path)) if r["rss_kb"] not in ("", "0")]
judged = [(t / 60, v) for t, v in per_s if 0.3 * load_end <= t < load_end]
slope = theil_sen([x for x, _ in judged], [y for _, y in judged]) if len(judged) >= 3 else 0.0
minutes = []
m = load_end / 2
while m + 60 <= load_end:
    window = [v for t, v in per_s if m <= t < m + 60]
    if window:
        minutes.append(statistics.median(window))
    m += 60
half = load[len(load) // 2:]
lsq = least_squares([int(r["t_s"]) / 60 for r in half], [int(r["rss_kb"]) for r in half]) if len(half) >= 3 else 0.0
held_after = [int(r["held"]) for r in after[1:]]  # allow the first 10 s after load to settle
failures = []
if k6_status != 0:
    failures.append(f"k6 exited {k6_status} (thresholds or checks failed)")
if slope > max_growth:
    failures.append(f"RSS grows {slope:.0f} kB/min after the warm-up (limit {max_growth:.0f})")
if any(h > 0 for h in held_after):
    failures.append(f"credits still held after the load stopped: {held_after}")
rss = [int(r["rss_kb"]) for r in rows]
lines = [f"# soak: fleet.js for {duration}", "",
         f"- verdict: {'PASS' if not failures else 'FAIL: ' + '; '.join(failures)}",
         f"- RSS: idle {rss[0] / 1024:.1f} MB, peak {max(rss) / 1024:.1f} MB, end of load "
         f"{int(load[-1]['rss_kb']) / 1024 if load else 0:.1f} MB, 60 s after {int(after[-1]['rss_kb']) / 1024 if after else 0:.1f} MB",
         f"- RSS slope from 30 % of the load to its end: {slope:+.0f} kB/min (Theil-Sen over {len(judged)} per-second samples; limit {max_growth:.0f})",
         f"- second half of the load: per-minute median RSS " + ", ".join(f"{y / 1024:.1f}" for y in minutes) + f" MB; least squares of the 10 s samples {lsq:+.0f} kB/min",
         f"- held credits after the load: {held_after}",
         f"- credits spent: {int(rows[0]['credits']) - int(rows[-1]['credits']):,}",
         f"- samples: `{path.split('/')[-1]}` (every 10 s), `{rss_path.split('/')[-1]}` (RSS every second)"]
open(md, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
sys.exit(1 if failures else 0)
PY
