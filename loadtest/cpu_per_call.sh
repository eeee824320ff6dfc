#!/usr/bin/env bash
# loadtest/cpu_per_call.sh — the gateway's CPU per non-streaming chat call: starts the simulator
# (zero delay) and the release gateway on 127.0.0.1, drives wrk -t1 -c32 (3 s warm-up, then
# ROUNDS rounds of 6 s, memory off), and divides the gateway's utime+stime (/proc/PID/stat)
# during each round by the requests wrk completed. With STRACE=1 it also counts the gateway's
# syscalls for 3 s of load (strace -c -f) and prints them per call.
#
#   loadtest/cpu_per_call.sh            (needs wrk; STRACE=1 needs strace)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/env.sh
source "$HERE/lib/env.sh"
vw_require_binary
command -v wrk >/dev/null || vw_die "wrk is missing: apt-get install -y wrk"
vw_init
vw_start_sim --ttft-ms 0 --tokens-per-sec 1000000 --chunk-tokens 3 --reply-tokens 48
vw_start_gateway
vw_fund
body='{"model":"gemini-2.5-flash","max_tokens":1024,"memory_read":false,"memory_write":false,"messages":[{"role":"user","content":"Summarize the last simulation run in one sentence."}]}'
printf 'wrk.method="POST"\nwrk.body=[==[%s]==]\nwrk.headers["Content-Type"]="application/json"\nwrk.headers["x-api-key"]="%s"\n' \
    "$body" "$API_KEY" >"$VW_TMP/chat.lua"
url="$GW_URL/v1/chat/completions"
ticks() { awk '{print $14 + $15}' "/proc/$GW_PID/stat"; }
hz="$(getconf CLK_TCK)"
wrk -t1 -c32 -d3s -s "$VW_TMP/chat.lua" "$url" >/dev/null
for round in $(seq "${ROUNDS:-3}"); do
    t0="$(ticks)"
    out="$(wrk -t1 -c32 -d6s -s "$VW_TMP/chat.lua" "$url")"
    t1="$(ticks)"
    n="$(awk '/requests in/ {print $1}' <<<"$out")"
    rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
    echo "round $round: $rps req/s, gateway CPU $(( (t1 - t0) * 1000000000 / hz / n )) ns per call ($n calls)"
done
if [[ "${STRACE:-0}" == 1 ]]; then
    # strace attached for exactly one wrk run, so the counts divide by that run's calls.
    strace -c -f -p "$GW_PID" -o "$VW_TMP/strace.txt" 2>/dev/null &
    strace_pid=$!
    sleep 1
    out="$(wrk -t1 -c32 -d3s -s "$VW_TMP/chat.lua" "$url")"
    kill -INT "$strace_pid"
    wait "$strace_pid" || true # not a bare `wait`: the simulator and the gateway are children too
    n="$(awk '/requests in/ {print $1}' <<<"$out")"
    echo "syscalls per call under strace ($n calls):"
    awk -v n="$n" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" {printf "  %-14s %.2f\n", $NF, $4 / n}' \
        "$VW_TMP/strace.txt" | sort -k2 -rn | head -8
fi
