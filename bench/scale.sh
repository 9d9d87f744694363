#!/usr/bin/env bash
# Scale: memcr -n -p on tests/targets/manyvmas.c with many VMAs or many threads. For each case:
# checkpoint and restore time, the page scan, read-and-write and drop phases, image size and
# memcr's peak RSS; the many-VMA cases next to the same data in one VMA ("flat").
#
#   bench/scale.sh
#   MEMCR_ARGS=-z bench/scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
[ -x artifacts/bin/memcr ] || ./build.sh >/dev/null
work=$(mktemp -d /var/tmp/memcr-scale.XXXXXX)
target=
cleanup() { [ -n "$target" ] && kill -9 "$target" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
gcc -O2 -pthread -o "$work/manyvmas" tests/targets/manyvmas.c

printf '%-26s %8s %11s %9s %10s %12s %8s %9s %11s\n' case VMAs checkpoint "page scan" "read+write" drop restore image "memcr peak"
one() { # one LABEL MB THREADS [flat|sparse]
    local label=$1
    start_fifo_target "$work" "$work/manyvmas" "${@:2}"
    local vmas; vmas=$(wc -l < "/proc/$target/maps")
    # shellcheck disable=SC2086
    local peak; peak=$(python3 -c 'import resource, subprocess, sys
with open(sys.argv[1], "w") as log:
    subprocess.run(sys.argv[2:], stdout=log, stderr=log, check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)' "$work/log" artifacts/bin/memcr -n --verbose -p "$target" -d "$work" ${MEMCR_ARGS:-})
    lap() { grep -oP "\] $1: \K[0-9.]+" "$work/log" | head -1; }
    check_target "after $label"
    printf '%-26s %8s %8s ms %6s ms %7s ms %9s ms %5s ms %6s MB %8s kB\n' "$label" "$vmas" \
        "$(grep -oP 'download took \K[0-9]+' "$work/log")" "$(lap 'page scan')" "$(lap 'read and write')" "$(lap drop)" \
        "$(grep -oP 'upload took \K[0-9]+' "$work/log")" "$(grep -oP 'image \K[0-9]+(?= kB:)' "$work/log" | awk '{print int($1/1024)}')" "$peak"
    echo EXIT >&"$cmd"
    target=
}
one "2 MiB, 1,000 VMAs" 4 0
one "4 MiB, one VMA" 4 0 flat
one "40 MiB, 10,000 VMAs" 40 0
one "40 MiB, one VMA" 40 0 flat
one "240 MiB, 60,000 VMAs" 240 0
one "240 MiB, one VMA" 240 0 flat
one "240 MiB, 30,000 apart" 240 0 sparse
one "16 MiB, 1 thread" 16 1 flat
one "16 MiB, 100 threads" 16 100 flat
one "16 MiB, 500 threads" 16 500 flat
one "16 MiB, 2,000 threads" 16 2000 flat
one "240 MiB, 60,000 VMAs, 500 threads" 240 500
