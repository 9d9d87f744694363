#!/usr/bin/env bash
# memcr's own memory. For each target: a memcr service (memcr -l) idle before any request, its
# peak (VmHWM) over a checkpoint and a restore, and its RSS one second after the restore; then a
# single `memcr -n -p` (checkpoint and restore at once) and its peak RSS.
#
#   bench/footprint.sh                       256 MiB and 1 GiB memtest, 60,000-VMA manyvmas
#   MEMCR_ARGS="--buffer-budget 32M" bench/footprint.sh
#   ORIG=/path/to/original/memcr bench/footprint.sh     the original side by side (its service
#       forks a worker for each checkpoint: only the service itself is measured)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
[ -x artifacts/bin/memcr-client ] || ./build.sh >/dev/null
work=$(mktemp -d /var/tmp/memcr-footprint.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
gcc -O2 -pthread -o "$work/memtest" tests/targets/memtest.c
gcc -O2 -pthread -o "$work/manyvmas" tests/targets/manyvmas.c
kb() { grep -oP "^$2:\s+\K[0-9]+" "/proc/$1/status"; }

service() { # service MEMCR CLIENT: idle, peak, after (kB)
    local memcr=$1 client=$2 sock="$work/svc.sock"
    rm -f "$sock"
    # shellcheck disable=SC2086
    "$memcr" -l "$sock" -d "$work" ${MEMCR_ARGS:-} >"$work/svc.log" 2>&1 &
    local d=$!
    until [ -S "$sock" ]; do sleep 0.05; done
    sleep 1
    local idle; idle=$(kb "$d" VmRSS)
    "$client" -l "$sock" -p "$target" -c >/dev/null
    "$client" -l "$sock" -p "$target" -r >/dev/null
    sleep 1
    echo "$idle $(kb "$d" VmHWM) $(kb "$d" VmRSS)"
    kill "$d"; wait "$d" 2>/dev/null || true
}

single() { # single MEMCR: peak RSS of memcr -n -p (kB), with its children
    # shellcheck disable=SC2086
    python3 -c 'import resource, subprocess, sys
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if r.returncode == 0 else "failed")' \
        "$1" -n -p "$target" -d "$work" ${MEMCR_ARGS:-}
    check_target "after memcr -p"
}

printf '%-22s %-9s %12s %12s %12s %14s\n' target memcr "service idle" "peak" "1 s after" "memcr -p peak"
run() { # run LABEL TARGET-COMMAND...
    local label=$1; shift
    start_fifo_target "$work/t$((${#pids[@]}))" "$@"
    pids+=("$target")
    read -r idle peak after < <(service artifacts/bin/memcr artifacts/bin/memcr-client)
    check_target "after the service"
    printf '%-22s %-9s %9s kB %9s kB %9s kB %11s kB\n' "$label" ours "$idle" "$peak" "$after" "$(single artifacts/bin/memcr)"
    if [ -n "${ORIG:-}" ]; then
        read -r idle peak after < <(service "$ORIG" "$(dirname "$ORIG")/memcr-client")
        check_target "after the original's service"
        printf '%-22s %-9s %9s kB %9s kB %9s kB %11s kB\n' "$label" original "$idle" "$peak" "$after" "$(timeout 120 bash -c "$(declare -f single check_target); target=$target cmd=$cmd report=$report work=$work single $ORIG" || echo 'did not finish')"
    fi
    echo EXIT >&"$cmd"
}
run "256 MiB" "$work/memtest" 256
run "1 GiB" "$work/memtest" 1024
run "60,000 VMAs (240 MiB)" "$work/manyvmas" 240
