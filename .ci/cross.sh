#!/usr/bin/env bash
# The C kernels off x86-64: csrc/selftest.c (every kernel at every level the CPU can run, bit
# for bit against a scalar reference) cross-compiled for arm64 and s390x (big-endian) and run
# under qemu-user. Under emulation only correctness means anything, never speed.
#
#   bash .ci/cross.sh            (installs the cross compilers and qemu-user with apt-get when
#                                 they are missing and this runs as root on Debian/Ubuntu)
#
# arm64 runs three CPUs: cortex-a72 (NEON, no SVE), max with 128-bit SVE and max with 512-bit
# SVE (the SVE loops must not depend on the vector length).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(crossbuild-essential-arm64)
command -v s390x-linux-gnu-gcc >/dev/null || need+=(crossbuild-essential-s390x)
command -v qemu-aarch64 >/dev/null && command -v qemu-s390x >/dev/null || need+=(qemu-user)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "cross.sh: missing ${need[*]} and cannot apt-get them (not root on Debian)" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
SRC="csrc/selftest.c csrc/hdc_core.c csrc/hdc_avx2.c csrc/hdc_avx512.c csrc/hdc_x86v2.c csrc/hdc_neon.c csrc/hdc_sve.c"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
FLAGS="-O2 -std=gnu11 -fno-strict-aliasing -Wall -Wno-unused-function -Werror -pthread -static -Icsrc"
SEED=${HDC_SELFTEST_SEED:-$(date +%s)}
echo "== cross self-test, seed $SEED (HDC_SELFTEST_SEED=$SEED reproduces)"
# shellcheck disable=SC2086
aarch64-linux-gnu-gcc $FLAGS $SRC -o "$OUT/selftest-arm64"
# shellcheck disable=SC2086
s390x-linux-gnu-gcc $FLAGS $SRC -o "$OUT/selftest-s390x"
qemu-aarch64 -cpu cortex-a72 "$OUT/selftest-arm64" "$SEED" 4
qemu-aarch64 -cpu max,sve-default-vector-length=16 "$OUT/selftest-arm64" "$((SEED + 1))" 4
qemu-aarch64 -cpu max,sve-default-vector-length=64 "$OUT/selftest-arm64" "$((SEED + 2))" 4
qemu-s390x "$OUT/selftest-s390x" "$SEED" 4
