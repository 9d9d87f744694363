#!/usr/bin/env bash
# Publishes the NativeAOT binaries to artifacts/bin/.
set -euo pipefail
cd "$(dirname "$0")"
case "$(uname -m)" in
    x86_64) rid=linux-x64 ;;
    aarch64) rid=linux-arm64 ;;
    *) echo "build.sh: unsupported machine $(uname -m)" >&2; exit 1 ;;
esac
rm -rf artifacts/publish
dotnet publish src/Memcr.Cli/Memcr.Cli.csproj -c Release -r "$rid" -o artifacts/publish -nologo -v quiet "$@"
dotnet publish src/Memcr.ClientCli/Memcr.ClientCli.csproj -c Release -r "$rid" -o artifacts/publish -nologo -v quiet "$@"
mkdir -p artifacts/bin
install -m 755 artifacts/publish/memcr artifacts/publish/memcr-client artifacts/bin/
ls -l artifacts/bin/
