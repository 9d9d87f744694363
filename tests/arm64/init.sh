#!/bin/sh
# /init of the arm64 test VM (tests/arm64/run-vm.sh builds the initramfs around it): runs the
# memcr-mode scenarios on the arm64 kernel, prints one line per scenario on the console,
#   ARM64-RESULT <scenario> PASS|FAIL <detail>
# then ARM64-DONE <passed> <failed> and powers the VM off. The binaries are in /opt/memcr, the
# targets (tests/targets, cross-compiled) in /opt/targets. Everything runs in a tmpfs.
/bin/busybox --install -s /bin
export PATH=/bin:/opt/memcr:/opt/targets
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o size=700m tmpfs /tmp
echo 0 >/proc/sys/kernel/printk 2>/dev/null
echo "ARM64-KERNEL $(uname -r) $(uname -m) $(nproc) cpus"

passed=0
failed=0
work=/tmp/work
mkdir -p "$work"

result() { # result SCENARIO PASS|FAIL DETAIL...
    name=$1 verdict=$2
    shift 2
    echo "ARM64-RESULT $name $verdict $*"
    if [ "$verdict" = PASS ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
}

# start_memtest NAME HEAP_MB: starts tests/targets/memtest talking through FIFOs in $work/NAME;
# sets pid, and fd 3 (its reports) and 4 (its commands) for check_target.
start_memtest() {
    dir=$work/$1
    mkdir -p "$dir"
    rm -f "$dir/cmd" "$dir/report"
    mkfifo "$dir/cmd" "$dir/report"
    exec 3<>"$dir/report" 4<>"$dir/cmd"
    setsid memtest "$dir" "$2" &
    pid=
    read -t 120 -r _ pid <&3
}

# check_target [RT]: asks the target to verify all of its memory; sets report to its answer.
check_target() {
    echo "CHECK ${1:-0}" >&4
    read_report
}

stop_target() {
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    exec 3>&- 4>&-
}

alive() { [ -d "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }

# wait_for FILE TEXT: waits up to 120 s until FILE holds TEXT.
wait_for() {
    i=0
    while ! grep -q "$2" "$1" 2>/dev/null; do
        i=$((i + 1))
        [ $i -gt 1200 ] && return 1
        sleep 0.1
    done
}

# memcr_frozen NAME OPTIONS...: checkpoints $pid with memcr waiting for Enter on the FIFO
# $work/NAME.in (fd 5 here); returns once it says so. Enter with press_enter.
memcr_frozen() {
    log=$work/$1.log in=$work/$1.in
    shift
    rm -f "$in"
    mkfifo "$in"
    memcr -p "$pid" "$@" <"$in" >"$log" 2>&1 &
    mpid=$!
    exec 5>"$in"
    wait_for "$log" "press enter to restore"
}

# start_reporter NAME PROGRAM [ARGS...]: starts one of the targets that only report (sleeper,
# suspender) as PROGRAM $work/NAME ARGS; sets pid, and fd 3 to its reports.
start_reporter() {
    dir=$work/$1 program=$2
    shift 2
    mkdir -p "$dir"
    mkfifo "$dir/report"
    exec 3<>"$dir/report"
    setsid "$program" "$dir" "$@" &
    pid=
    read -t 120 -r _ pid <&3
}

# press_enter: lets the memcr of memcr_frozen restore and waits for it; sets status to its exit.
press_enter() {
    echo >&5
    exec 5>&-
    wait "$mpid"
    status=$?
}

# read_report: sets report to the target's next line on fd 3.
read_report() {
    report=
    read -t 120 -r report <&3 || report="no answer (target gone?)"
}

# Scenario: checkpoint and restore at once (memcr -n) with OPTIONS; the target checks its memory.
roundtrip() {
    name=$1 heap=$2
    shift 2
    start_memtest "$name" "$heap"
    mkdir -p "$work/$name.img"
    if ! out=$(memcr -p "$pid" -n -d "$work/$name.img" "$@" 2>&1); then
        result "$name" FAIL "memcr $*: $(echo "$out" | tail -3 | tr '\n' ' ')"
    else
        check_target
        case "$report" in
            *ok=1*eintr=0*) result "$name" PASS "$(echo "$out" | grep -o 'download took [0-9]* ms'), $(echo "$out" | grep -o 'upload took [0-9]* ms'): $report" ;;
            *) result "$name" FAIL "$report" ;;
        esac
    fi
    stop_target
}

# plain: 64 MiB of heap (the figures of the closing note); the others 16 MiB, to keep the run short.
roundtrip plain 64
roundtrip file-pages 16 -f
roundtrip proc-mem 16 -m
roundtrip zce 16 -z -c -e

# Lazy restore: userfaultfd serves the pages as the target touches them.
start_memtest lazy 16
if out=$(memcr -p "$pid" -n --lazy -d "$work" 2>&1) && check_target && case "$report" in *ok=1*eintr=0*) true ;; *) false ;; esac; then
    result lazy PASS "$(echo "$out" | grep -o 'restore complete.*' | head -1): $report"
else
    result lazy FAIL "$(echo "$out" | tail -2 | tr '\n' ' ') $report"
fi
stop_target

# Incremental checkpoints need PAGEMAP_SCAN and UFFD_FEATURE_WP_ASYNC (Linux 6.7), which this 6.1
# kernel lacks: refused with a message that says so, the target left running untouched.
start_memtest incremental 16
out=$(memcr -p "$pid" -n --incremental -d "$work" 2>&1)
status=$?
check_target
case "$status $out $report" in
    0\ *) result incremental-refused FAIL "accepted on a kernel without PAGEMAP_SCAN: $(echo "$out" | tail -2 | tr '\n' ' ')" ;;
    *PAGEMAP_SCAN*ok=1*) result incremental-refused PASS "exit $status: $(echo "$out" | grep -o '[^:]*PAGEMAP_SCAN[^:]*' | head -1); $report" ;;
    *) result incremental-refused FAIL "exit $status: $(echo "$out" | tail -2 | tr '\n' ' ') $report" ;;
esac
stop_target

# Signals sent while the target is frozen arrive once it runs again; a thread blocked in read()
# (memtest's command thread) and one in nanosleep() carry on without EINTR.
start_memtest signals 16
memcr_frozen signals -d "$work"
kill -USR2 "$pid"
kill -34 "$pid" # SIGRTMIN as glibc numbers it
sleep 1
press_enter
check_target 1
case "$status $report" in
    "0 "*ok=1*usr2=1*rt=1*) result signals PASS "$report" ;;
    *) result signals FAIL "memcr exit $status: $report $(tail -2 "$log" | tr '\n' ' ')" ;;
esac
stop_target

# The thread blocked in read(): a command written while the target is frozen is read after it runs.
start_memtest blocked-read 16
memcr_frozen blocked-read -d "$work"
echo "CHECK 0" >&4
press_enter
read_report
case "$status $report" in
    "0 "*ok=1*eintr=0*) result blocked-read PASS "$report" ;;
    *) result blocked-read FAIL "memcr exit $status: $report" ;;
esac
stop_target

# A relative sleep of the thread memcr runs its syscalls on, frozen past its deadline: restarted
# with restart_syscall it ends at once (arm64 sets x8 to it only as the thread leaves the stop);
# started over, it would sleep 4 s more.
start_reporter sleeper sleeper 4
begun=$(cut -d. -f1 /proc/uptime)
memcr_frozen sleeper -d "$work"
while [ $(($(cut -d. -f1 /proc/uptime) - begun)) -lt 6 ]; do sleep 0.2; done
press_enter
read_report
exec 3>&-
slept=$(echo "$report" | sed -n 's/.*slept=\([0-9]*\).*/\1/p')
case "$status $report" in
    "0 "*result=0*) if [ "${slept:-99999}" -lt 8000 ]; then result restart-sleep PASS "$report"; else result restart-sleep FAIL "started over: $report"; fi ;;
    *) result restart-sleep FAIL "memcr exit $status: $report $(tail -2 "$log" | tr '\n' ' ')" ;;
esac

# A thread waiting in sigsuspend() with a temporary mask, sent SIGUSR1 while frozen: the handler
# runs and the thread's own mask (SIGUSR1 blocked) is back afterwards, not the temporary one.
start_reporter suspender suspender
memcr_frozen suspender -d "$work"
kill -USR1 "$pid"
press_enter
read_report
exec 3>&-
case "$status $report" in
    "0 "*got=1*blocked=1*) result sigsuspend PASS "$report" ;;
    *) result sigsuspend FAIL "memcr exit $status: $report $(tail -2 "$log" | tr '\n' ' ')" ;;
esac

# A target killed while frozen: memcr says so, exits non-zero and removes the image.
start_memtest killed 16
memcr_frozen killed -d "$work"
kill -9 "$pid"
wait "$mpid"
status=$?
exec 5>&-
if [ $status -ne 0 ] && grep -q "terminated by SIGKILL while checkpointed" "$log" && [ ! -e "$work/pages-$pid.img" ]; then
    result killed PASS "exit $status: $(grep -o 'target pid.*checkpointed' "$log")"
else
    result killed FAIL "exit $status, image $(ls "$work/pages-$pid.img" 2>&1): $(tail -3 "$log" | tr '\n' ' ')"
fi
stop_target

# A damaged image: the restore refuses it, the target is killed (it must not run on dropped memory).
start_memtest damaged 16
memcr_frozen damaged -d "$work"
image=$work/pages-$pid.img
size=$(stat -c %s "$image")
printf '\125' | dd of="$image" bs=1 seek=$((size / 2)) conv=notrunc 2>/dev/null
press_enter
sleep 0.5
if [ $status -ne 0 ] && grep -q "checksum mismatch" "$log" && grep -q "was killed with SIGKILL" "$log" && ! alive "$pid"; then
    result damaged PASS "exit $status: $(grep -o 'checksum mismatch[^:]*' "$log" | head -1)"
else
    result damaged FAIL "exit $status, target alive: $(alive "$pid" && echo yes || echo no): $(tail -3 "$log" | tr '\n' ' ')"
fi
stop_target

# The service with memcr-client: 8 targets checkpointed, then restored, then checked.
mkdir -p "$work/service"
memcr -l "$work/memcr.sock" -d "$work/service" >"$work/service.log" 2>&1 &
spid=$!
i=0
while [ ! -S "$work/memcr.sock" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
pids=
n=0
while [ $n -lt 8 ]; do
    dir=$work/svc$n
    mkdir -p "$dir"
    mkfifo "$dir/cmd" "$dir/report"
    setsid memtest "$dir" 8 &
    n=$((n + 1))
done
bad=
n=0
while [ $n -lt 8 ]; do
    dir=$work/svc$n
    exec 3<>"$dir/report"
    read -t 120 -r _ p <&3
    exec 3>&-
    pids="$pids $p"
    n=$((n + 1))
done
for p in $pids; do memcr-client -l "$work/memcr.sock" -p "$p" -c >/dev/null 2>&1 || bad="$bad checkpoint:$p"; done
frozen=$(ls "$work/service" | grep -c 'pages-.*\.img')
for p in $pids; do memcr-client -l "$work/memcr.sock" -p "$p" -r >/dev/null 2>&1 || bad="$bad restore:$p"; done
n=0
for p in $pids; do
    dir=$work/svc$n
    exec 3<>"$dir/report" 4<>"$dir/cmd"
    check_target
    case "$report" in *ok=1*) ;; *) bad="$bad check:$p($report)" ;; esac
    kill -9 "$p" 2>/dev/null
    exec 3>&- 4>&-
    n=$((n + 1))
done
kill "$spid"
wait "$spid" 2>/dev/null
if [ -z "$bad" ] && [ "$frozen" = 8 ]; then
    result service PASS "8 targets checkpointed (8 images) and restored intact"
else
    result service FAIL "images while frozen: $frozen;$bad $(tail -3 "$work/service.log" | tr '\n' ' ')"
fi

# CRIU mode is x86_64-only for now: it says so instead of failing half-way.
out=$(memcr dump -t 1 -D "$work" 2>&1)
status=$?
case "$status $out" in
    "2 "*"CRIU mode runs on x86_64 only"*) result criu-refused PASS "$out" ;;
    *) result criu-refused FAIL "exit $status: $out" ;;
esac

echo "ARM64-DONE $passed $failed"
sync
poweroff -f
