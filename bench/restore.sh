#!/usr/bin/env bash
# Eager restore against its floors: the disk's own read time for the image and the page-fault
# time of writing that much memory, side by side with the original memcr in the same run.
#
#   bench/restore.sh [SIZE_MB ...]            (default: 1024 4096)
#   ORIG=/path/to/original/memcr RUNS=5 bench/restore.sh 1024
#   FILL=program MEMCR_ARGS="-z" bench/restore.sh 1024
#
# For each size it starts one memtest target and, RUNS times each, checkpoints and restores it
# with `memcr -n` (MEMCR_ARGS), with `memcr -n --keep-cache` and, when ORIG names the original
# memcr's binary, with `ORIG -n -m` (without MEMCR_ARGS); the target checks all of its memory
# after every run. Floors, measured in the same run: `dd iflag=direct` of a file as large as our
# image (the disk read time) and bench/faults.c writing SIZE MiB into fresh pages (the page-fault
# time). Prints medians in ms.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
[ -x artifacts/bin/memcr ] || ./build.sh >/dev/null
runs=${RUNS:-5}
dump=${DUMP_DIR:-/var/tmp}
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1024 4096)
work=$(mktemp -d /var/tmp/memcr-bench.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$work"; rm -f "$dump/memcr-bench-floor"; }
trap cleanup EXIT
gcc -O2 -pthread -o "$work/memtest" tests/targets/memtest.c
gcc -O2 -o "$work/faults" bench/faults.c

# run NAME COMMAND...: one checkpoint/restore, times appended to $work/NAME.down and NAME.up.
run() {
    local name=$1 out
    shift
    out=$("$@" -p "$pid" -n -d "$dump")
    grep -oP 'download took \K[0-9]+' <<<"$out" >>"$work/$name.down"
    grep -oP 'upload took \K[0-9]+' <<<"$out" >>"$work/$name.up"
    [ "$name" != memcr ] || grep -oP 'image \K[0-9]+(?= kB)' <<<"$out" >"$work/image"
    check_target "after $name"
}

printf '%-8s %-7s %-12s %-14s %10s %10s %10s %10s\n' size fill memcr-args tool checkpoint restore "disk read" "faults"
for size in "${sizes[@]}"; do
    rm -f "$work"/*.down "$work"/*.up "$work/disk" "$work/faults.ms"
    start_fifo_target "$work" "$work/memtest" "$size" "${FILL:-random}"
    pid=$target
    tools=(memcr memcr-keep-cache)
    [ -n "${ORIG:-}" ] && tools+=(original-m)
    for ((i = 0; i < runs; i++)); do
        # shellcheck disable=SC2086
        run memcr artifacts/bin/memcr ${MEMCR_ARGS:-}
        # shellcheck disable=SC2086
        run memcr-keep-cache artifacts/bin/memcr --keep-cache ${MEMCR_ARGS:-}
        [ -n "${ORIG:-}" ] && run original-m "$ORIG" -m
        if [ $i -eq 0 ]; then
            dd if=/dev/urandom of="$dump/memcr-bench-floor" bs=1M count=$(($(cat "$work/image") / 1024)) oflag=direct status=none
        fi
        sync; echo 3 >/proc/sys/vm/drop_caches
        dd if="$dump/memcr-bench-floor" of=/dev/null bs=4M iflag=direct 2>&1 | grep -oP ', \K[0-9.]+(?= s,)' \
            | awk '{print int($1 * 1000)}' >>"$work/disk"
        "$work/faults" "$size" >>"$work/faults.ms"
    done
    for tool in "${tools[@]}"; do
        printf '%-8s %-7s %-12s %-14s %7s ms %7s ms %7s ms %7s ms\n' "${size}MiB" "${FILL:-random}" "${MEMCR_ARGS:--}" "$tool" \
            "$(median whole <"$work/$tool.down")" "$(median whole <"$work/$tool.up")" "$(median whole <"$work/disk")" "$(median whole <"$work/faults.ms")"
    done
    kill -9 "$pid"; pid=
    exec 3>&- 4>&-
    rm -f "$dump/memcr-bench-floor"
done
