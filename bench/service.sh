#!/usr/bin/env bash
# Service benchmark: N small targets (tests/targets/idle.c, MB MiB each) checkpointed all at once
# through one memcr service, then restored all at once; prints wall-clock time for each wave.
#
#   bench/service.sh [N] [MB]            (default: 64 16)
#   MEMCR_ARGS="-z" bench/service.sh 64 16
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
[ -x artifacts/bin/memcr-client ] || ./build.sh >/dev/null
n=${1:-64}
mb=${2:-16}
work=$(mktemp -d /var/tmp/memcr-svcbench.XXXXXX)
pids=()
daemon=
cleanup() {
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT
gcc -O2 -pthread -o "$work/idle" tests/targets/idle.c
for ((i = 0; i < n; i++)); do
    start_fifo_target "$work/t$i" "$work/idle" "$mb"
    pids+=("$target")
done
# shellcheck disable=SC2086
artifacts/bin/memcr -l "$work/memcr.sock" -d "$work" ${MEMCR_ARGS:-} >"$work/daemon.log" 2>&1 &
daemon=$!
until [ -S "$work/memcr.sock" ]; do sleep 0.05; done
rss() { local t=0; for p in "${pids[@]}"; do t=$((t + $(grep -oP '^VmRSS:\s+\K[0-9]+' "/proc/$p/status"))); done; echo "$t"; }
before=$(rss)
now() { date +%s%N; }
wave() {
    local flag=$1 start; start=$(now)
    printf '%s\n' "${pids[@]}" | xargs -P "$n" -I{} artifacts/bin/memcr-client -l "$work/memcr.sock" -p {} "$flag" >"$work/out" 2>&1 || true
    local ok; ok=$(grep -c 'OK status' "$work/out" || true)
    echo "$(( ($(now) - start) / 1000000 )) ms, $ok/$n OK"
}
down=$(wave -c)
during=$(rss)
up=$(wave -r)
after=$(rss)
echo "$n targets of $mb MiB, memcr ${MEMCR_ARGS:--}:"
echo "  checkpoint all at once: $down"
echo "  restore all at once:    $up"
echo "  total RSS before / during / after: $before / $during / $after kB"
