#!/usr/bin/env bash
# Lazy restore against eager restore, side by side in the same run.
#
#   bench/lazy.sh [SIZE_MB ...]        (default: 64 1024)
#   RUNS=5 DUMP_DIR=/var/tmp bench/lazy.sh 1024
#
# For each size it starts one lazytest target (tests/targets/lazytest.c) and, RUNS times each,
# checkpoints it with `memcr -p` and presses Enter with and without --lazy. Figures, medians in ms
# (latencies in us):
#   resume     Enter to the target's first good memory check after the freeze, timed by the target
#              (CLOCK_REALTIME of that check minus the moment Enter was written);
#   all back   memcr's own figure: "upload took" (eager), "restore complete ... in M ms" (lazy);
#   touch      the target's first 1000 touches of random pages of its region after resume, sent
#              with Enter: p50, p99 and max of each touch's time;
#   memcr RSS  the largest VmRSS of memcr seen between Enter and its exit (sampled every 10 ms);
#   lazy/eager the median over the runs of each run's lazy "all back" over the eager one made just
#              before it: the disk's speed here drifts by 10-20% from one minute to the next, and
#              the ratio of a pair is steadier than the ratio of two medians.
# The target checks all of its memory after every run.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
[ -x artifacts/bin/memcr ] || ./build.sh >/dev/null
runs=${RUNS:-5}
dump=${DUMP_DIR:-/var/tmp}
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(64 1024)
work=$(mktemp -d /var/tmp/memcr-bench.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
gcc -O2 -pthread -o "$work/lazytest" tests/targets/lazytest.c

ask() { echo "$1" >&"$cmd"; local line; read -r line <&"$report"; echo "$line"; }
field() { grep -oP "(?<= $1=)[0-9-]+" <<<"$2"; }

# run MODE [ARGS...]: one checkpoint and restore; figures appended to $work/MODE.*.
run() {
    local mode=$1 out="$work/out" enter="$work/enter" t0 mpid rss=0 r line
    shift
    rm -f "$enter"; mkfifo "$enter"
    artifacts/bin/memcr -p "$pid" -d "$dump" "$@" <"$enter" >"$out" 2>&1 &
    mpid=$!
    exec {e}>"$enter"
    until grep -q "press enter" "$out"; do sleep 0.01; done
    t0=${EPOCHREALTIME/./}000
    echo >&"$e"
    echo "TOUCH 1000" >&"$cmd"
    while kill -0 "$mpid" 2>/dev/null; do
        r=$(awk '/^VmRSS/ {print $2}' "/proc/$mpid/status" 2>/dev/null || echo 0)
        [ "${r:-0}" -gt "$rss" ] && rss=$r
        sleep 0.01
    done
    wait "$mpid" || { echo "bench: memcr failed:" >&2; cat "$out" >&2; exit 1; }
    exec {e}>&-
    read -r line <&"$report"
    [[ $line == *"ok=1"* ]] || { echo "bench: touches after $mode saw damage: $line" >&2; exit 1; }
    field p50_us "$line" >>"$work/$mode.p50"
    field p99_us "$line" >>"$work/$mode.p99"
    field max_us "$line" >>"$work/$mode.max"
    line=$(ask RESUMED)
    echo $((($(field resumed_ns "$line") - t0) / 1000000)) >>"$work/$mode.resume"
    if [ "$mode" = lazy ]; then
        grep -oP 'restore complete: [0-9]+ MiB in \K[0-9]+' "$out" >>"$work/$mode.back"
    else
        grep -oP 'upload took \K[0-9]+' "$out" >>"$work/$mode.back"
    fi
    echo "$rss" >>"$work/$mode.rss"
    line=$(ask CHECK)
    [[ $line == *"ok=1"* ]] || { echo "bench: target damaged after $mode: $line" >&2; exit 1; }
}

printf '%-8s %-6s %10s %10s %9s %9s %9s %11s %11s\n' size mode "resume" "all back" "p50 us" "p99 us" "max us" "memcr kB" "lazy/eager"
for size in "${sizes[@]}"; do
    rm -f "$work"/*.resume "$work"/*.back "$work"/*.p50 "$work"/*.p99 "$work"/*.max "$work"/*.rss
    mkdir -p "$work/t"; rm -f "$work/t/feed"; mkfifo "$work/t/feed"
    start_fifo_target "$work/t" "$work/lazytest" "$size"
    pid=$target
    for ((i = 0; i < runs; i++)); do
        run eager
        run lazy --lazy
    done
    ratio=$(paste "$work/lazy.back" "$work/eager.back" | awk '{printf "%.3f\n", $1 / $2}' | median)
    for mode in eager lazy; do
        printf '%-8s %-6s %10s %10s %9s %9s %9s %11s %11s\n' "${size}M" "$mode" \
            "$(median whole <"$work/$mode.resume")" "$(median whole <"$work/$mode.back")" \
            "$(median whole <"$work/$mode.p50")" "$(median whole <"$work/$mode.p99")" \
            "$(median whole <"$work/$mode.max")" "$(median whole <"$work/$mode.rss")" \
            "$([ "$mode" = lazy ] && echo "$ratio" || echo -)"
    done
    echo EXIT >&"$cmd"
    pid=
done
