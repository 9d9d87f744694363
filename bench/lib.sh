# What the bench scripts share; sourced by them, not run.

# median [whole]: the median of the numbers on standard input, one per line (for an even count,
# the mean of the middle two; cut to a whole number with "whole").
median() { sort -n | awk -v whole="${1:-}" '{a[NR]=$1} END {m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2; print whole ? int(m) : m}'; }

# start_fifo_target DIR PROGRAM [ARGS...]: starts one of tests/targets (memtest, idle, manyvmas)
# in a session of its own, talking through the FIFOs DIR/cmd and DIR/report (made here); once it
# is ready, sets target to its pid and cmd and report to descriptors of the FIFOs.
start_fifo_target() {
    local dir=$1; shift
    mkdir -p "$dir"; rm -f "$dir/cmd" "$dir/report"; mkfifo "$dir/cmd" "$dir/report"
    exec {report}<>"$dir/report" {cmd}<>"$dir/cmd"
    setsid -f "$1" "$dir" "${@:2}"
    read -r _ target <&"$report"
}

# check_target WHEN: has the target started last verify its memory; exits if it is damaged.
check_target() {
    local line
    echo "CHECK 0" >&"$cmd"
    read -r line <&"$report"
    [[ $line == *"ok=1"* ]] || { echo "bench: target damaged $1: $line" >&2; exit 1; }
}
