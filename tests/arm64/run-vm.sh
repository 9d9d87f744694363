#!/usr/bin/env bash
# Boots an arm64 Linux in qemu and runs the memcr-mode scenarios of tests/arm64/init.sh there with
# artifacts/bin/linux-arm64/memcr (./build.sh --arch arm64); prints the VM's console, where each
# scenario has an "ARM64-RESULT <scenario> PASS|FAIL ..." line. Exits 0 once the VM ran to its
# end (ARM64-DONE), whatever the scenarios said.
#
# Needs (.ci/run installs them): qemu-system-aarch64 (qemu-system-arm), aarch64-linux-gnu-gcc
# (gcc-aarch64-linux-gnu, libc6-dev-arm64-cross), cpio, and dpkg's arm64 architecture, through
# which Debian's arm64 kernel, busybox-static and libc6 are downloaded (apt-get download) into
# MEMCR_ARM64_CACHE (/var/cache/memcr-arm64), once.
set -euo pipefail
cd "$(dirname "$0")/../.."
cache=${MEMCR_ARM64_CACHE:-/var/cache/memcr-arm64}
bin=artifacts/bin/linux-arm64
fail() { echo "run-vm.sh: $*" >&2; exit 1; }

for tool in qemu-system-aarch64 aarch64-linux-gnu-gcc cpio gzip dpkg-deb; do
    command -v "$tool" >/dev/null || fail "$tool is missing (apt-get install qemu-system-arm gcc-aarch64-linux-gnu libc6-dev-arm64-cross cpio)"
done
[ -x "$bin/memcr" ] && [ -x "$bin/memcr-client" ] || fail "$bin/memcr is missing: run ./build.sh --arch arm64"

# The packages, downloaded once: the newest Debian 6.1 arm64 kernel that linux-image-arm64 names.
mkdir -p "$cache"
deb() { compgen -G "$cache/$1_*_arm64.deb" | sort -V | tail -1; }
if [ -z "$(deb 'linux-image-6.*-arm64')" ] || [ -z "$(deb busybox-static)" ] || [ -z "$(deb libc6)" ] || [ -z "$(deb libssl3)" ]; then
    dpkg --print-foreign-architectures | grep -qx arm64 || fail "dpkg lacks the arm64 architecture: dpkg --add-architecture arm64 && apt-get update"
    kernel=$(apt-cache depends linux-image-arm64:arm64 | grep -oP 'Depends: \Klinux-image-6\S+?(?=(:arm64)?$)' | head -1)
    [ -n "$kernel" ] || fail "apt knows no arm64 kernel (apt-get update?)"
    (cd "$cache" && chmod 777 . && apt-get download -q "$kernel:arm64" busybox-static:arm64 libc6:arm64 libssl3:arm64 >/dev/null) \
        || fail "cannot download the arm64 packages into $cache"
fi

work=$(mktemp -d /tmp/memcr-arm64.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,lib,proc,sys,dev,tmp,opt/memcr,opt/targets} "$work/x"
for pkg in 'linux-image-6.*-arm64' busybox-static libc6 libssl3; do
    dpkg-deb -x "$(deb "$pkg")" "$work/x"
done
cp "$work/x/bin/busybox" "$root/bin/"
ln -s busybox "$root/bin/sh"
cp -L "$work/x/lib/ld-linux-aarch64.so.1" "$root/lib/"
mkdir -p "$root/lib/aarch64-linux-gnu"
for lib in lib/aarch64-linux-gnu/libc.so.6 lib/aarch64-linux-gnu/libm.so.6 usr/lib/aarch64-linux-gnu/libssl.so.3 usr/lib/aarch64-linux-gnu/libcrypto.so.3; do
    cp -L "$work/x/$lib" "$root/lib/aarch64-linux-gnu/" # libssl for -e (AES-GCM through OpenSSL)
done
cp "$bin/memcr" "$bin/memcr-client" "$root/opt/memcr/"
for target in memtest sleeper suspender; do
    aarch64-linux-gnu-gcc -O2 -pthread -o "$root/opt/targets/$target" "tests/targets/$target.c"
done
install -m 755 tests/arm64/init.sh "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.gz"
kernel=$(compgen -G "$work/x/boot/vmlinuz-*" | head -1)

# -cpu max: every arm64 feature qemu emulates, with pointer authentication by qemu's own cheap
# algorithm (the architected one, QARMA, makes every function return several times slower under
# emulation); 2 CPUs so that threads of a target really run side by side. The VM powers itself off at the end (-no-reboot turns that into qemu's exit).
timeout "${MEMCR_ARM64_TIMEOUT:-540}" qemu-system-aarch64 -M virt -cpu max,pauth-impdef=on -smp 2 -m 1024 -nographic -no-reboot \
    -kernel "$kernel" -initrd "$work/initrd.gz" -append "console=ttyAMA0 rdinit=/init panic=-1 quiet" \
    </dev/null | tee "$work/console" | tr -d '\r'
grep -q '^ARM64-DONE' <(tr -d '\r' <"$work/console") || fail "the VM did not run to its end (timeout or crash: see above)"
