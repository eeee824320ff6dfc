#!/usr/bin/env bash
# fuzz/campaign.sh — runs cargo-fuzz targets for a fixed time each on a scratch copy of their
# seeds (the committed corpus never changes) and prints one markdown row per target: the rows of
# the campaign tables in fuzz/README.md, and the fuzz smoke of .ci/run (--smoke --seconds 5).
#
#   bash fuzz/campaign.sh [--smoke] [--seconds N] [target ...]
#
#   --smoke      unoptimized, no sanitizer (quick to build; what CI runs); default: -O with the
#                address sanitizer, as the recorded campaigns ran
#   --seconds N  fuzzing time per target (default 240)
#   target ...   the targets to run (default: every target of `cargo fuzz list`)
#
# Exits 1 at the first target that crashes, after printing the end of its log.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

mode=(-O)
seconds=240
targets=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --smoke) mode=(--dev -s none); shift ;;
        --seconds) seconds="$2"; shift 2 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done

export RUSTC_BOOTSTRAP=1 # cargo-fuzz needs -Z flags; this is a stable toolchain.
if [[ ${#targets[@]} -eq 1 ]]; then
    cargo fuzz build --fuzz-dir . "${mode[@]}" "${targets[0]}"
else
    cargo fuzz build --fuzz-dir . "${mode[@]}"
fi
if [[ ${#targets[@]} -eq 0 ]]; then
    mapfile -t targets < <(cargo fuzz list --fuzz-dir .)
fi
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

echo "| target | fuzzing time | executions | exec/s | coverage (cov / ft) | corpus grown to | result |"
echo "|---|---|---|---|---|---|---|"
for target in "${targets[@]}"; do
    mkdir -p "$scratch/$target"
    log="$scratch/$target.log"
    if ! cargo fuzz run --fuzz-dir . "${mode[@]}" "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "error: fuzz target $target failed" >&2
        exit 1
    fi
    # A figure the log lacks prints as "?" (these reads never fail the run).
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1 || true)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1 || true)
    took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1 || true)
    cov=$( (grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$log" || true) | tail -1 | sed 's/cov: \([0-9]*\) ft: \([0-9]*\)/\1 \/ \2/')
    corpus=$( (find "$scratch/$target" "corpus/$target" -type f 2>/dev/null || true) | xargs -r sha1sum | cut -d' ' -f1 | sort -u | wc -l)
    echo "| \`$target\` | ${took:-?} s | ${runs:-?} | ${rate:-?} | ${cov:-?} | $corpus inputs | clean |"
done
