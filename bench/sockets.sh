#!/usr/bin/env bash
# CRIU mode with TCP connections: what a client sees, and what many connections cost.
#
#   bench/sockets.sh [web] [conns]        (default: both)
#   RUNS=5 PAUSE=1 CONNS=1000 bench/sockets.sh
#
# web: tests/targets/tcpserver.py streams a line every 10 ms to a client outside the tree; the
# server is dumped (--tcp-established), left dumped PAUSE seconds, restored. Downtime is what the
# client measures: from the last byte before the dump to the first byte after the restore. It
# includes the wait for the dumped pid to be free again: the killed server is a zombie until its
# parent (init here) reaps it, which this VM's init does about once a second; "reap" shows it.
# conns: a Python server holding CONNS established loopback connections (their clients in
# another process): memcr dump and restore of it, wall clock of the whole commands.
# Medians of RUNS rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
[ -x artifacts/bin/memcr ] || ./build.sh >/dev/null
memcr=$PWD/artifacts/bin/memcr
runs=${RUNS:-5}
pause=${PAUSE:-1}
conns=${CONNS:-1000}
work=$(mktemp -d /var/tmp/memcr-sockets-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(web conns)

now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
wait_free() { for p in "$@"; do while [ -d "/proc/$p" ]; do sleep 0.01; done; done; }
wait_line() { for _ in $(seq 1000); do grep -q "$2" "$1" 2>/dev/null && return; sleep 0.01; done; echo "bench: $1 never got '$2'" >&2; exit 1; }
# start NAME CMD...: a detached program whose pid is the shell's it replaces.
start() {
    local name=$1; shift
    setsid -f sh -c "echo \$\$ >'$work/$name.pid'; exec $* </dev/null >'$work/$name.out' 2>&1"
    wait_line "$work/$name.pid" "[0-9]"
    pids+=("$(cat "$work/$name.pid")")
}

for s in "${scenarios[@]}"; do
    case $s in
    web)
        start web python3 tests/targets/tcpserver.py 18180
        wait_line "$work/web.out" ready
        pid=$(cat "$work/web.pid")
        : >"$work/web.down"; : >"$work/web.dump"; : >"$work/web.restore"; : >"$work/web.reap"
        for ((i = 0; i < runs; i++)); do
            # The client prints the longest silence it saw, once it has seen data flow again for a second.
            start client python3 -c "'
import socket, time
s = socket.create_connection((\"127.0.0.1\", 18180)); s.sendall(b\"GET /ticks HTTP/1.0\\r\\n\\r\\n\")
print(\"connected\", flush=True)
last = time.monotonic(); gap = 0.0; since = None
while True:
    if not s.recv(4096): break
    t = time.monotonic(); g = t - last; last = t
    if g > 0.2: gap = max(gap, g); since = t
    if since is not None and t - since > 1: break
print(\"gap\", int(gap * 1000), flush=True)
'"
            wait_line "$work/client.out" connected
            sleep 0.5
            rm -rf "$work/web-images"; mkdir "$work/web-images"
            t0=$(now)
            "$memcr" dump -t "$pid" -D "$work/web-images" --tcp-established
            t1=$(now)
            ms "$t0" "$t1" >>"$work/web.dump"
            wait_free "$pid"
            ms "$t1" "$(now)" >>"$work/web.reap"
            sleep "$pause"
            t1=$(now)
            "$memcr" restore -D "$work/web-images" --tcp-established -d
            t2=$(now)
            ms "$t1" "$t2" >>"$work/web.restore"
            wait_line "$work/client.out" gap
            grep -oP 'gap \K[0-9]+' "$work/client.out" >>"$work/web.down"
        done
        printf 'web      downtime seen by the client %6s ms = dump %5s ms + reap %5s ms + pause %s s + restore %5s ms\n' \
            "$(median <"$work/web.down")" "$(median <"$work/web.dump")" "$(median <"$work/web.reap")" "$pause" "$(median <"$work/web.restore")"
        ;;
    conns)
        start many python3 -c "'
import socket, time
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind((\"127.0.0.1\", 18181)); l.listen(4096)
print(\"listening\", flush=True)
held = [l.accept()[0] for _ in range($conns)]
print(\"ready\", len(held), flush=True)
while True: time.sleep(1000)
'"
        wait_line "$work/many.out" listening
        start clients python3 -c "'
import socket, time
c = [socket.create_connection((\"127.0.0.1\", 18181)) for _ in range($conns)]
print(\"ready\", flush=True)
while True: time.sleep(1000)
'"
        wait_line "$work/many.out" ready
        pid=$(cat "$work/many.pid")
        : >"$work/many.dump"; : >"$work/many.restore"; : >"$work/many.frozen"
        for ((i = 0; i < runs; i++)); do
            rm -rf "$work/many-images"; mkdir "$work/many-images"
            t0=$(now)
            out=$("$memcr" dump -t "$pid" -D "$work/many-images" --tcp-established -v3 2>&1) || { echo "$out" >&2; exit 1; }
            t1=$(now)
            ms "$t0" "$t1" >>"$work/many.dump"
            grep -oP 'frozen \K[0-9.]+(?= ms)' <<<"$out" | tail -1 >>"$work/many.frozen"
            wait_free "$pid"
            t1=$(now)
            "$memcr" restore -D "$work/many-images" --tcp-established -d
            t2=$(now)
            ms "$t1" "$t2" >>"$work/many.restore"
        done
        printf 'conns    %s connections: dump %5s ms   frozen %5s ms   restore %5s ms   %s tcp-stream images\n' "$conns" \
            "$(median <"$work/many.dump")" "$(median <"$work/many.frozen")" "$(median <"$work/many.restore")" "$(ls "$work/many-images" | grep -c tcp-stream)"
        ;;
    *) echo "bench/sockets.sh: unknown scenario $s (web, conns)" >&2; exit 2 ;;
    esac
done
