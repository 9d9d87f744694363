#!/usr/bin/env bash
# Checkpoints a sample process with memcr, shows its RSS before / during / after, restores it and
# has it verify every byte of its memory. Run as root after ./build.sh.
set -euo pipefail
cd "$(dirname "$0")"
[ -x artifacts/bin/memcr ] || ./build.sh
work=$(mktemp -d /var/tmp/memcr-demo.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

gcc -O2 -pthread -o "$work/memtest" tests/targets/memtest.c
mkfifo "$work/cmd" "$work/report"
exec 3<>"$work/report" 4<>"$work/cmd"
setsid -f "$work/memtest" "$work" 256
read -r _ pid <&3
rss() { grep -E '^(VmRSS|RssAnon|RssFile)' "/proc/$pid/status" | tr -s ' \t' ' ' | paste -sd' ' -; }
states() { awk '{print $3}' /proc/"$pid"/task/*/stat | sort | uniq -c | xargs; }

echo "== sample process: pid $pid, 256 MiB malloc'ed + 16 MiB static, 8 threads verifying their memory"
echo "before:  $(rss)   thread states: $(states)"
coproc MEMCR { exec artifacts/bin/memcr -p "$pid" -d "$work"; }
memcr_pid=$MEMCR_PID
while IFS= read -r line <&"${MEMCR[0]}"; do
    echo "  memcr | $line"
    [[ $line == *"press enter"* ]] && break
done
echo "during:  $(rss)   thread states: $(states)"
echo "image:   $(du -h "$work/pages-$pid.img" | cut -f1) in $work"
echo >&"${MEMCR[1]}"
while IFS= read -r line <&"${MEMCR[0]}"; do echo "  memcr | $line"; done
wait "$memcr_pid"
echo "CHECK 0" >&4
read -r report <&3
echo "after:   $(rss)   thread states: $(states)"
echo "target:  $report"
[[ $report == *"ok=1"* ]] || { echo "demo: the target reports damage" >&2; exit 1; }
echo "== restored intact"
