#!/usr/bin/env bash
# Checkpoint/restore benchmark on a memtest target holding SIZE MiB of memory.
#
#   bench/bench.sh [SIZE_MB ...]        (default: 64 1024)
#   RUNS=5 MEMCR_ARGS="-m" DUMP_DIR=/var/tmp bench/bench.sh 1024
#   FILL=program MEMCR_ARGS="-z zstd -e" bench/bench.sh 1024
#
# FILL=random (default) fills the memory with incompressible data; FILL=program with memory that
# looks like a program's (half the 64-byte lines zero, small integers, pointers, some text).
# For each size it starts one target, checkpoints and restores it RUNS times with `memcr -n`,
# has the target verify its memory after every run, and prints the median checkpoint ("download")
# and restore ("upload") times, RSS before / during / after and the image size.
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
gcc -O2 -pthread -o "$work/memtest" tests/targets/memtest.c

printf '%-8s %-7s %-16s %10s %10s %12s %12s %12s %10s\n' size fill memcr-args checkpoint restore "RSS before" "RSS during" "RSS after" image
for size in "${sizes[@]}"; do
    start_fifo_target "$work" "$work/memtest" "$size" "${FILL:-random}"
    pid=$target
    : >"$work/down"; : >"$work/up"
    for ((i = 0; i < runs; i++)); do
        # shellcheck disable=SC2086
        out=$(artifacts/bin/memcr -p "$pid" -n -d "$dump" ${MEMCR_ARGS:-})
        grep -oP 'download took \K[0-9]+' <<<"$out" >>"$work/down"
        grep -oP 'upload took \K[0-9]+' <<<"$out" >>"$work/up"
        before=$(grep -oP 'VmRSS +\K[0-9]+' <<<"$out")
        during=$(grep -oP 'VmRSS +[0-9]+ kB -> \K[0-9]+' <<<"$out")
        image=$(grep -oP 'image \K[0-9]+(?= kB)' <<<"$out")
        check_target "after run $i"
    done
    after=$(grep -oP '^VmRSS:\s+\K[0-9]+' "/proc/$pid/status")
    printf '%-8s %-7s %-16s %8s ms %8s ms %9s kB %9s kB %9s kB %7s MB\n' "${size}MiB" "${FILL:-random}" "${MEMCR_ARGS:--}" \
        "$(median whole <"$work/down")" "$(median whole <"$work/up")" "$before" "$during" "$after" "$((image / 1024))"
    kill -9 "$pid"; pid=
    exec 3>&- 4>&-
done
