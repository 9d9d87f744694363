#!/usr/bin/env bash
# Builds the NativeAOT binaries (also for arm64) and runs every test (unit and integration, and the
# arm64 scenarios in a qemu VM). Run as root: the integration tests ptrace real processes and mount
# small tmpfs file systems. .ci/run installs what a fresh Debian machine lacks for it.
set -euo pipefail
cd "$(dirname "$0")"
./build.sh --arch arm64 >/dev/null
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
dotnet test memcr.slnx -nologo 2>&1 | tee "$log" || status=$?
# One closing line for all test assemblies: "N passed, N failed".
awk '/^(Passed|Failed)!/ { for (i = 1; i <= NF; i++) { if ($i == "Passed:") p += $(i+1); if ($i == "Failed:") f += $(i+1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
