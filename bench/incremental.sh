#!/usr/bin/env bash
# Incremental checkpoints against full ones, side by side in the same run.
#
#   bench/incremental.sh [SIZE_MB ...]        (default: 1024)
#   RUNS=5 PERMILLE=10 DUMP_DIR=/var/tmp bench/incremental.sh 1024
#
# For each size it starts one lazytest target (tests/targets/lazytest.c) and, RUNS times, runs
# `memcr -p PID -n` (full checkpoint and restore), then `memcr -p PID -n --incremental` twice
# with PERMILLE/1000 of the target's pages rewritten (WRITE) before the second: the first makes
# and keeps a full image, the second saves only what was written; then the same two with --lazy
# too (writes tracked from the moment the process resumes). Figures, medians:
#   checkpoint  memcr's "download took" (ms): scan, read, write, check of the image, before the drop;
#   restore     memcr's "upload took" (ms); for --lazy, "resumed in" / "restore complete ... in" (ms);
#   image       the image's size (kB) as memcr reports it.
# The target checks all of its memory after every run.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
[ -x artifacts/bin/memcr ] || ./build.sh >/dev/null
runs=${RUNS:-5}
permille=${PERMILLE:-10}
dump=${DUMP_DIR:-/var/tmp}
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1024)
work=$(mktemp -d /var/tmp/memcr-bench.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; artifacts/bin/memcr -p "${pid:-1}" -d "$dump" --forget >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
gcc -O2 -pthread -o "$work/lazytest" tests/targets/lazytest.c

ask() { echo "$1" >&"$cmd"; local line; read -r line <&"$report"; echo "$line"; }

# run MODE [ARGS...]: one memcr -p -n; figures appended to $work/MODE.*.
run() {
    local mode=$1 out="$work/out" line
    shift
    artifacts/bin/memcr -p "$pid" -d "$dump" -n "$@" >"$out" 2>&1 || { echo "bench: memcr failed:" >&2; cat "$out" >&2; exit 1; }
    grep -oP 'download took \K[0-9]+' "$out" >>"$work/$mode.ckpt"
    grep -oP 'upload took \K[0-9]+' "$out" >>"$work/$mode.rest" || true
    grep -oP 'resumed in \K[0-9.]+' "$out" >>"$work/$mode.resume" || true
    grep -oP 'restore complete: [0-9]+ MiB in \K[0-9]+' "$out" >>"$work/$mode.rest" || true
    grep -oP 'image \K[0-9]+(?= kB:)' "$out" >>"$work/$mode.size"
    line=$(ask CHECK)
    [[ $line == *"ok=1"* ]] || { echo "bench: target damaged after $mode: $line" >&2; exit 1; }
}

printf '%-8s %-12s %12s %10s %12s\n' size mode "checkpoint" "restore" "image kB"
for size in "${sizes[@]}"; do
    rm -f "$work"/*.ckpt "$work"/*.rest "$work"/*.size "$work"/*.resume
    mkdir -p "$work/t"; rm -f "$work/t/feed"; mkfifo "$work/t/feed"
    start_fifo_target "$work/t" "$work/lazytest" "$size"
    pid=$target
    pages=$((size * 256 * permille / 1000))
    for ((i = 0; i < runs; i++)); do
        run full
        run kept --incremental
        ask "WRITE $pages" >/dev/null
        run incremental --incremental
        artifacts/bin/memcr -p "$pid" -d "$dump" --forget >/dev/null
        run kept-lazy --incremental --lazy
        ask "WRITE $pages" >/dev/null
        run incr-lazy --incremental --lazy
        artifacts/bin/memcr -p "$pid" -d "$dump" --forget >/dev/null
    done
    for mode in full incremental kept-lazy incr-lazy; do
        rest=$(median whole <"$work/$mode.rest")
        [ -s "$work/$mode.resume" ] && rest="$(median <"$work/$mode.resume")/$rest"
        printf '%-8s %-12s %12s %10s %12s\n' "${size}M" "$mode" \
            "$(median whole <"$work/$mode.ckpt")" "$rest" "$(median whole <"$work/$mode.size")"
    done
    echo "($pages pages of $((size * 256)) rewritten before each incremental checkpoint)"
    echo EXIT >&"$cmd"
    pid=
done
