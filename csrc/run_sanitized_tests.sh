#!/usr/bin/env bash
# Build csrc/ with AddressSanitizer + UndefinedBehaviorSanitizer into .asan/ (never over the
# installed extension) and run the C kernel tests against that build.
#
#   csrc/run_sanitized_tests.sh [extra pytest args]      (from any directory; PYTHON= to override)
#
# The Python interpreter is not built with ASan, so the ASan runtime is preloaded; leak checking
# is off (CPython keeps interned objects alive until exit). Any out-of-bounds access or UB in
# the kernels aborts the run with a report, i.e. a non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
CC=${CC:-gcc}
rm -rf .asan
mkdir -p .asan
if ! HDC_SANITIZE=1 "$PY" csrc/build_ffi.py --outdir .asan >.asan/build.log 2>&1; then
    cat .asan/build.log
    echo "sanitizer build failed" >&2
    exit 1
fi
# the standalone self-test (every kernel at every level against a bit-by-bit C reference)
# under the same sanitizers, without Python in between
"$CC" -O1 -g -std=gnu11 -fno-strict-aliasing -pthread -fsanitize=address,undefined -fno-sanitize-recover=undefined \
    -fno-omit-frame-pointer -Icsrc csrc/selftest.c csrc/hdc_core.c csrc/hdc_avx2.c csrc/hdc_avx512.c \
    csrc/hdc_x86v2.c csrc/hdc_neon.c csrc/hdc_sve.c -o .asan/selftest
ASAN_OPTIONS="detect_leaks=1:halt_on_error=1" .asan/selftest "${HDC_SELFTEST_SEED:-1}" 3
EXT=$(ls .asan/hdc/_hdc_c*.so | head -n1)
PRELOAD="$($CC -print-file-name=libasan.so):$($CC -print-file-name=libubsan.so)"
echo "sanitized extension: $EXT"
LD_PRELOAD="$PRELOAD" \
ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:allocator_may_return_null=1:verify_asan_link_order=0" \
UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
HDC_C_EXT="$EXT" HDC_EXPECT_SANITIZED=1 OMP_NUM_THREADS=1 \
    "$PY" -m pytest tests/test_c_backend.py tests/test_c_fuzz.py tests/test_c_threads.py tests/test_causal_topk.py \
        tests/test_core_safety.py -q -p no:cacheprovider "$@"
