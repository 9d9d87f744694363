#!/usr/bin/env bash
# Publishes the NativeAOT binaries of this machine's architecture to artifacts/bin/.
#
#   ./build.sh [--arch arm64] [dotnet publish options...]
#
# --arch arm64 (or MEMCR_ARCH=arm64) also cross-publishes them for arm64 to
# artifacts/bin/linux-arm64/: that takes clang, lld, gcc-aarch64-linux-gnu and
# libc6-dev-arm64-cross (Debian packages), which clang finds the arm64 libraries through.
set -euo pipefail
cd "$(dirname "$0")"
extra=${MEMCR_ARCH:-}
args=()
while (($#)); do
    case "$1" in
        --arch) extra=$2; shift 2 ;;
        --arch=*) extra=${1#--arch=}; shift ;;
        *) args+=("$1"); shift ;;
    esac
done
case "$(uname -m)" in
    x86_64) native=x64 ;;
    aarch64) native=arm64 ;;
    *) echo "build.sh: unsupported machine $(uname -m)" >&2; exit 1 ;;
esac
case "$extra" in
    "" | "$native") extra= ;;
    arm64 | aarch64) extra=arm64 ;;
    *) echo "build.sh: --arch: arm64 is the one other architecture built (not '$extra')" >&2; exit 1 ;;
esac

# publish RID OUT [options...]
publish() {
    local rid=$1 out=$2
    shift 2
    rm -rf "artifacts/publish-$rid"
    for project in Memcr.Cli Memcr.ClientCli; do
        dotnet publish "src/$project/$project.csproj" -c Release -r "$rid" -o "artifacts/publish-$rid" -nologo -v quiet "$@" ${args[@]+"${args[@]}"}
    done
    mkdir -p "$out"
    install -m 755 "artifacts/publish-$rid/memcr" "artifacts/publish-$rid/memcr-client" "$out/"
    ls -l "$out/memcr" "$out/memcr-client"
}

publish "linux-$native" artifacts/bin
if [ -n "$extra" ]; then
    for tool in clang ld.lld aarch64-linux-gnu-gcc; do
        command -v "$tool" >/dev/null || { echo "build.sh: --arch arm64 needs $tool (apt-get install clang lld gcc-aarch64-linux-gnu libc6-dev-arm64-cross)" >&2; exit 1; }
    done
    publish linux-arm64 artifacts/bin/linux-arm64 -p:CppCompilerAndLinker=clang -p:LinkerFlavor=lld
fi
