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

python3 "$HERE/lib/soak_judge.py" verdict "$CSV" "$OUT.md" "$k6_status" "${SOAK_MAX_GROWTH_KB_PER_MIN:-512}" "$DURATION" "$RSS_CSV" "$LOAD_END"
