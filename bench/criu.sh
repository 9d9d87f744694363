#!/usr/bin/env bash
# CRIU mode benchmark: memcr dump and memcr restore, wall clock of the whole command, median of
# RUNS runs (default 5), on the programs CRIU's own figures were taken with.
#
#   bench/criu.sh [counter] [tree] [1g] [cow]     (default: all four)
#   RUNS=5 DUMP_DIR=/var/tmp SIZE_MB=1024 bench/criu.sh 1g
#   COLD=1 bench/criu.sh 1g      # drop the page cache before each restore (images read from disk)
#
# counter: tests/fixtures/criu-images/programs/counter.c, detached. tree: programs/tree.c (frozen
# time as the dump reports it). 1g: memtest with SIZE_MB of random memory and its threads, which
# checks every byte after each restore. cow: a parent with SIZE_MB of random heap and a forked
# child sharing it copy-on-write (bench/cow.c); the child's Pss after the restore shows whether
# the pages are shared again (about half its Rss) or copied (all of it).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
[ -x artifacts/bin/memcr ] || ./build.sh >/dev/null
memcr=$PWD/artifacts/bin/memcr
runs=${RUNS:-5}
size=${SIZE_MB:-1024}
base=${DUMP_DIR:-/var/tmp}
work=$(mktemp -d "$base/memcr-criu-bench.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; exec 3>&- 4>&- 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(counter tree 1g cow)

now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
# A dumped tree's pids are free once its zombies are reaped (by init, in its own time).
wait_free() { for p in "$@"; do while [ -d "/proc/$p" ]; do sleep 0.01; done; done; }
wait_line() { for _ in $(seq 500); do grep -q "$2" "$1" 2>/dev/null && return; sleep 0.01; done; echo "bench: $1 never got '$2'" >&2; exit 1; }
cold() { if [ -n "${COLD:-}" ]; then sync; echo 3 >/proc/sys/vm/drop_caches; fi; }

# dump_restore NAME ROOT PIDS...: RUNS rounds of dump (the tree is killed) and restore -d; each
# round dumps what the one before restored.
# Fills $work/NAME.{dump,frozen,restore,image}.
dump_restore() {
    local name=$1 root=$2; shift 2
    local ids=("$@") images=$work/$name-images
    : >"$work/$name.dump"; : >"$work/$name.frozen"; : >"$work/$name.restore"; : >"$work/$name.image"
    for ((i = 0; i < runs; i++)); do
        rm -rf "$images"; mkdir "$images"
        local t0 t1 t2 out
        t0=$(now)
        out=$("$memcr" dump -t "$root" -D "$images" -v3 2>&1) || { echo "$out" >&2; exit 1; }
        t1=$(now)
        ms "$t0" "$t1" >>"$work/$name.dump"
        grep -oP 'frozen \K[0-9.]+(?= ms)' <<<"$out" | tail -1 >>"$work/$name.frozen"
        du -sk "$images" | cut -f1 >>"$work/$name.image"
        wait_free "${ids[@]}"
        cold
        t1=$(now)
        "$memcr" restore -D "$images" -d || exit 1
        t2=$(now)
        ms "$t1" "$t2" >>"$work/$name.restore"
        after_restore "$name"
    done
}
after_restore() { :; }
report() {
    printf '%-8s dump %7s ms   frozen %8s ms   restore %7s ms   image %8s MB%s\n' "$1" "$(median <"$work/$1.dump")" \
        "$(median <"$work/$1.frozen")" "$(median <"$work/$1.restore")" "$(( $(median <"$work/$1.image" | cut -d. -f1) / 1024 ))" "${2:-}"
}

gcc -O2 -pthread -o "$work/counter" tests/fixtures/criu-images/programs/counter.c
gcc -O2 -pthread -o "$work/tree" tests/fixtures/criu-images/programs/tree.c
gcc -O2 -pthread -o "$work/memtest" tests/targets/memtest.c
gcc -O2 -o "$work/cow" bench/cow.c
echo "runs: $runs, images in $base${COLD:+, page cache dropped before each restore}"

for s in "${scenarios[@]}"; do
    case $s in
    counter)
        # Its stdout is a file, so block-buffered: the pid comes from the shell it replaces.
        setsid -f sh -c "echo \$\$ >'$work/counter.pid'; exec '$work/counter' </dev/null >'$work/counter.out' 2>&1"
        wait_line "$work/counter.pid" "[0-9]"
        pid=$(cat "$work/counter.pid"); pids+=("$pid")
        dump_restore counter "$pid" "$pid"
        report counter
        ;;
    tree)
        mkdir -p "$work/treedir"
        setsid -f sh -c "cd '$work/treedir' && exec '$work/tree' '$work/treedir' </dev/null >'$work/treedir/tree.stdout' 2>&1"
        wait_line "$work/treedir/tree.stdout" READY
        read -r _ parent _ child <"$work/treedir/tree.stdout"; pids+=("$parent" "$child")
        wait_line "$work/treedir/tree.log" "parent $parent tick 1 "
        dump_restore tree "$parent" "$parent" "$child"
        report tree
        ;;
    1g)
        start_fifo_target "$work" "$work/memtest" "$size" random
        pid=$target; pids+=("$pid")
        after_restore() {
            echo "CHECK 0" >&"$cmd"
            read -r r <&"$report"
            [[ $r == *"bad=none"* && $r == *"worker_errors=0"* ]] || { echo "bench: memory damaged after restore: $r" >&2; exit 1; }
        }
        dump_restore 1g "$pid" "$pid"
        after_restore() { :; }
        # Its threads keep checking their memory: it must not take the CPU from what comes next.
        kill -9 "$pid"; wait_free "$pid"
        report 1g " (${size} MiB, every byte checked)"
        ;;
    cow)
        setsid -f sh -c "exec '$work/cow' $size </dev/null >'$work/cow.out' 2>&1"
        wait_line "$work/cow.out" READY
        read -r _ parent child <"$work/cow.out"; pids+=("$parent" "$child")
        dump_restore cow "$parent" "$parent" "$child"
        pss=$(awk '/^Pss:/ {print $2}' "/proc/$child/smaps_rollup"); rss=$(awk '/^Rss:/ {print $2}' "/proc/$child/smaps_rollup")
        report cow " (child Pss $((pss / 1024)) MB of Rss $((rss / 1024)) MB after restore)"
        ;;
    *) echo "bench: unknown scenario $s" >&2; exit 2 ;;
    esac
done
