"""The C backend at every ISA level this machine has equals the NumPy reference, bit for bit.

Dims 1, 63, 64, 65, 127, 128, 129, 511, 512, 513 (pinned every run), random 1..5000 and one past 524,288 bits; batches 0 and 1
included; thread counts 1..3 (results must not depend on them). A call counter proves the
kernel ran at the pinned level, not a silent fallback.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hdc.backends import BackendUnavailable, load_backend
from hdc.backends import numpy_ref as R
from hdc.packing import n_words_for, pad_mask

try:
    C = load_backend("c")
except BackendUnavailable as exc:  # pragma: no cover - exercised on machines without a compiler
    pytest.skip(f"C backend not built: {exc}", allow_module_level=True)

ISAS = C.isa_levels()
BOUNDARY = [1, 63, 64, 65, 127, 128, 129, 511, 512, 513]
HUGE_DIM = 524_288 + 4_099  # past 64 KiB per vector, not a multiple of 64
dims = st.one_of(st.sampled_from(BOUNDARY), st.integers(1, 5000))
rows = st.one_of(st.sampled_from([0, 1]), st.integers(0, 70))
threads = st.integers(1, 3)


@pytest.fixture(params=ISAS)
def isa(request):
    prev = C.get_isa()
    C.set_isa(request.param)
    yield request.param
    C.set_isa(prev)


def words(rng, n, dim):
    """Random (n, n_words) rows with zero pad bits."""
    x = rng.integers(0, 2**64, size=(n, n_words_for(dim)), dtype=np.uint64)
    if x.size:
        x[:, -1] &= pad_mask(dim)
    return x


def ran_at(kernel, isa, before):
    return C.call_count(kernel, isa) == before + 1


def test_levels_detected():
    assert ISAS[-1] == "portable"
    assert C.get_isa() in ISAS or C.get_isa() == C.detected_isa()
    with pytest.raises(ValueError, match="unknown ISA"):
        C.set_isa("sse9")
    for lvl in C.ISA_NAMES:
        if lvl not in ISAS:
            with pytest.raises(ValueError, match="not supported"):
                C.set_isa(lvl)


def test_this_machine_has_fast_path():
    """The dev/CI machine is AVX-512 VPOPCNTDQ: the build must have picked it up."""
    flags = open("/proc/cpuinfo").read() if __import__("os").path.exists("/proc/cpuinfo") else ""
    if "avx512_vpopcntdq" not in flags:
        pytest.skip("CPU has no AVX-512 VPOPCNTDQ")
    if not C.lib.hdc_simd_compiled():
        pytest.skip("extension built without the x86 SIMD levels (-DHDC_PORTABLE_ONLY)")
    assert C.detected_isa() == "avx512"
    assert ISAS == ["avx512", "avx2", "x86-64-v2", "portable"]


@settings(max_examples=30)
@given(dim=dims, m=rows, n=rows, th=threads, seed=st.integers(0, 2**32 - 1))
def test_hamming_matrix(isa, dim, m, n, th, seed):
    rng = np.random.default_rng(seed)
    q, x = words(rng, m, dim), words(rng, n, dim)
    got = np.full((m, n), -7, np.int32)
    want = np.zeros((m, n), np.int32)
    before = C.call_count("hamming_matrix", isa)
    C.hamming_matrix(q, x, got, th)
    assert ran_at("hamming_matrix", isa, before)
    R.hamming_matrix(q, x, want)
    np.testing.assert_array_equal(got, want)


@settings(max_examples=30)
@given(dim=st.one_of(st.sampled_from([1, 2, 5] + BOUNDARY), st.integers(1, 3000)),
       m=st.integers(0, 13), n=st.integers(1, 300), kfrac=st.floats(0, 1), th=threads,
       seed=st.integers(0, 2**32 - 1))
def test_topk(isa, dim, m, n, kfrac, th, seed):
    """Small dims make many ties: the tie rule (lower index first) is exercised."""
    rng = np.random.default_rng(seed)
    q, x = words(rng, m, dim), words(rng, n, dim)
    k = max(1, min(n, int(round(kfrac * n))))
    d1, i1 = np.zeros((m, k), np.int32), np.zeros((m, k), np.int64)
    d2, i2 = d1.copy(), i1.copy()
    before = C.call_count("topk", isa)
    C.topk(q, x, k, d1, i1, th)
    assert ran_at("topk", isa, before)
    R.topk(q, x, k, d2, i2)
    np.testing.assert_array_equal(d1, d2)
    np.testing.assert_array_equal(i1, i2)


@pytest.mark.parametrize("k", [1, 10, 128, 129, 1000])
@pytest.mark.parametrize("dim", [7, 10_000])
def test_topk_fused_and_counting_paths(isa, k, dim):
    """k <= 128 with >= 4 queries takes the fused AVX-512 path; larger k the counting select."""
    rng = np.random.default_rng(k + dim)
    q, x = words(rng, 9, dim), words(rng, 1000, dim)
    x[500:520] = x[10]  # exact duplicates: equal distances at many indices
    d1, i1 = np.zeros((9, k), np.int32), np.zeros((9, k), np.int64)
    d2, i2 = d1.copy(), i1.copy()
    C.topk(q, x, k, d1, i1, 2)
    R.topk(q, x, k, d2, i2)
    np.testing.assert_array_equal(d1, d2)
    np.testing.assert_array_equal(i1, i2)


@settings(max_examples=30)
@given(dim=dims, n=rows, th=threads, seed=st.integers(0, 2**32 - 1))
def test_rowwise_kernels(isa, dim, n, th, seed):
    rng = np.random.default_rng(seed)
    a, b = words(rng, n, dim), words(rng, n, dim)
    out = np.empty_like(a)
    before = C.call_count("bind", isa)
    C.bind(a, b, out, th)
    assert ran_at("bind", isa, before)
    np.testing.assert_array_equal(out, a ^ b)
    got, want = np.full(n, -1, np.int64), np.zeros(n, np.int64)
    C.popcount(a, got, th)
    R.popcount(a, want)
    np.testing.assert_array_equal(got, want)
    C.hamming_rows(a, b, got, th)
    R.hamming_rows(a, b, want)
    np.testing.assert_array_equal(got, want)


@settings(max_examples=40)
@given(dim=dims, n=rows, sfrac=st.floats(0, 1), th=threads, seed=st.integers(0, 2**32 - 1))
def test_permute(isa, dim, n, sfrac, th, seed):
    rng = np.random.default_rng(seed)
    x = words(rng, n, dim)
    shift = min(dim - 1, int(sfrac * dim))
    got, want = np.full_like(x, 0xAB), np.zeros_like(x)
    C.permute(x, shift, dim, got, th)
    R.permute(x, shift, dim, want)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dim", [1, 63, 64, 65, 127, 128, 129, 200, 513])
def test_permute_every_shift(isa, dim):
    x = words(np.random.default_rng(dim), 3, dim)
    for shift in range(dim):
        got, want = np.empty_like(x), np.empty_like(x)
        C.permute(x, shift, dim, got, 1)
        R.permute(x, shift, dim, want)
        np.testing.assert_array_equal(got, want, err_msg=f"shift {shift}")


@settings(max_examples=30)
@given(dim=dims, n=st.one_of(st.sampled_from([1, 2, 15, 16, 17, 31, 32, 33]), st.integers(1, 300)),
       th=threads, seed=st.integers(0, 2**32 - 1), dense=st.booleans())
def test_bit_counts_and_bundle(isa, dim, n, th, seed, dense):
    rng = np.random.default_rng(seed)
    x = words(rng, n, dim)
    if dense:  # mostly-ones rows make every counter plane carry
        x |= words(rng, n, dim) | words(rng, n, dim)
    counts, want = np.arange(dim, dtype=np.int64), np.arange(dim, dtype=np.int64)
    C.bit_counts(x, dim, counts, th)
    R.bit_counts(x, dim, want)
    np.testing.assert_array_equal(counts, want)
    tie = words(rng, 1, dim)[0]
    got, ref = np.full(x.shape[1], 0xFF, np.uint64), np.zeros(x.shape[1], np.uint64)
    before = C.call_count("bundle_majority", isa)
    C.bundle_majority(x, dim, tie, got, th)
    assert ran_at("bundle_majority", isa, before)
    R.bundle_majority(x, dim, tie, ref)
    np.testing.assert_array_equal(got, ref)


def test_bit_counts_zero_rows(isa):
    counts = np.arange(70, dtype=np.int64)
    C.bit_counts(np.zeros((0, 2), np.uint64), 70, counts, 2)
    np.testing.assert_array_equal(counts, np.arange(70))


def test_huge_dim_every_kernel(isa):
    """Vectors past 64 KiB: catches 16-bit index wrap-around."""
    rng = np.random.default_rng(7)
    dim = HUGE_DIM
    q, x = words(rng, 5, dim), words(rng, 6, dim)
    got, want = np.zeros((5, 6), np.int32), np.zeros((5, 6), np.int32)
    C.hamming_matrix(q, x, got, 2)
    R.hamming_matrix(q, x, want)
    np.testing.assert_array_equal(got, want)
    d1, i1 = np.zeros((5, 3), np.int32), np.zeros((5, 3), np.int64)
    d2, i2 = d1.copy(), i1.copy()
    C.topk(q, x, 3, d1, i1, 2)
    R.topk(q, x, 3, d2, i2)
    np.testing.assert_array_equal(d1, d2)
    np.testing.assert_array_equal(i1, i2)
    for shift in (1, 64, 70_001, dim - 1):
        p1, p2 = np.empty_like(x), np.empty_like(x)
        C.permute(x, shift, dim, p1, 2)
        R.permute(x, shift, dim, p2)
        np.testing.assert_array_equal(p1, p2)
    c1, c2 = np.zeros(dim, np.int64), np.zeros(dim, np.int64)
    C.bit_counts(x, dim, c1, 2)
    R.bit_counts(x, dim, c2)
    np.testing.assert_array_equal(c1, c2)
    tie = words(rng, 1, dim)[0]
    b1, b2 = np.empty(x.shape[1], np.uint64), np.empty(x.shape[1], np.uint64)
    C.bundle_majority(x, dim, tie, b1, 2)
    R.bundle_majority(x, dim, tie, b2)
    np.testing.assert_array_equal(b1, b2)
    h1, h2 = np.zeros(6, np.int64), np.zeros(6, np.int64)
    C.hamming_rows(x, x[::-1].copy(), h1, 2)
    R.hamming_rows(x, x[::-1].copy(), h2)
    np.testing.assert_array_equal(h1, h2)


def test_hamming_matrix_into_column_slice(isa):
    rng = np.random.default_rng(3)
    q, x = words(rng, 6, 300), words(rng, 40, 300)
    big = np.full((6, 50), -1, np.int32)
    C.hamming_matrix(q, x, big[:, 4:44], 2)
    want = np.zeros((6, 40), np.int32)
    R.hamming_matrix(q, x, want)
    np.testing.assert_array_equal(big[:, 4:44], want)
    assert (big[:, :4] == -1).all() and (big[:, 44:] == -1).all()


def test_large_matrix_all_levels_agree():
    """A block-sized workload (many 32-row tiles, 2 threads) gives the same answer at each level."""
    rng = np.random.default_rng(11)
    q, x = words(rng, 37, 10_000), words(rng, 1_003, 10_000)
    want = np.zeros((37, 1003), np.int32)
    R.hamming_matrix(q, x, want)
    prev = C.get_isa()
    try:
        for lvl in ISAS:
            C.set_isa(lvl)
            for th in (1, 2):
                got = np.zeros_like(want)
                C.hamming_matrix(q, x, got, th)
                np.testing.assert_array_equal(got, want, err_msg=f"{lvl} threads={th}")
    finally:
        C.set_isa(prev)


def test_inplace_bind_and_permute(isa):
    rng = np.random.default_rng(5)
    a, b = words(rng, 4, 200), words(rng, 4, 200)
    want = a ^ b
    C.bind(a, b, a, 1)
    np.testing.assert_array_equal(a, want)
    ref = np.empty_like(a)
    R.permute(a, 17, 200, ref)
    C.permute(a, 17, 200, a, 1)
    np.testing.assert_array_equal(a, ref)


def test_sanitizer_build_in_use_when_expected():
    """csrc/run_sanitized_tests.sh sets HDC_EXPECT_SANITIZED=1: the ASan build must be the one loaded."""
    import os

    if os.environ.get("HDC_EXPECT_SANITIZED") != "1":
        pytest.skip("not a sanitizer run (csrc/run_sanitized_tests.sh)")
    assert C.sanitized()


def test_topk_many_queries_chunked(isa):
    """More than 4096 queries: the fused path works through query chunks."""
    rng = np.random.default_rng(9)
    q, x = words(rng, 4_101, 70), words(rng, 50, 70)
    d1, i1 = np.zeros((4_101, 5), np.int32), np.zeros((4_101, 5), np.int64)
    d2, i2 = d1.copy(), i1.copy()
    C.topk(q, x, 5, d1, i1, 2)
    R.topk(q, x, 5, d2, i2)
    np.testing.assert_array_equal(d1, d2)
    np.testing.assert_array_equal(i1, i2)


@pytest.mark.parametrize("level", ["portable", "avx2", "avx512", "x86-64-v2", "neon", "sve"])
def test_env_override_pins_level(level):
    """HDC_ISA=<level> at import pins the level (or raises for a level the CPU lacks)."""
    import subprocess
    import sys

    code = ("from hdc.backends import c_backend as C; import numpy as np; "
            "q = np.zeros((5, 3), np.uint64); o = np.zeros((5, 5), np.int32); "
            "C.hamming_matrix(q, q, o, 1); print(C.get_isa(), C.call_count('hamming_matrix', C.get_isa()))")
    env = dict(__import__("os").environ, HDC_ISA=level)
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if level in ISAS:
        assert p.returncode == 0, p.stderr
        assert p.stdout.split() == [level, "1"]
    else:
        assert p.returncode != 0 and "not supported" in p.stderr


def test_env_override_typo_raises():
    import os
    import subprocess
    import sys

    env = dict(os.environ, HDC_ISA="avx-512")
    p = subprocess.run([sys.executable, "-c", "import hdc.backends.c_backend"], env=env, capture_output=True, text=True)
    assert p.returncode != 0 and "HDC_ISA='avx-512' is not an ISA level" in p.stderr


def _every_kernel_call(dim=1_000, m=9, n=70):
    """(kernel name, zero-arg call) for every C kernel and every driver path of hmat/topk."""
    rng = np.random.default_rng(21)
    q, x = words(rng, m, dim), words(rng, n, dim)
    tie = words(rng, 1, dim)[0]
    W = x.shape[1]
    return [
        ("bind", lambda: C.bind(x, x[::-1].copy(), np.empty_like(x), 1)),
        ("popcount", lambda: C.popcount(x, np.empty(n, np.int64), 1)),
        ("hamming_rows", lambda: C.hamming_rows(x, x[::-1].copy(), np.empty(n, np.int64), 1)),
        ("hamming_matrix", lambda: C.hamming_matrix(q, x, np.empty((m, n), np.int32), 1)),  # many queries
        ("hamming_matrix", lambda: C.hamming_matrix(q[:2], x, np.empty((2, n), np.int32), 1)),  # few
        ("topk", lambda: C.topk(q, x, 5, np.empty((m, 5), np.int32), np.empty((m, 5), np.int64), 1)),  # fused
        ("topk", lambda: C.topk(q[:2], x, 5, np.empty((2, 5), np.int32), np.empty((2, 5), np.int64), 1)),
        ("permute", lambda: C.permute(x, 77, dim, np.empty_like(x), 1)),
        ("bit_counts", lambda: C.bit_counts(x, dim, np.zeros(dim, np.int64), 1)),
        ("bundle_majority", lambda: C.bundle_majority(x, dim, tie, np.empty(W, np.uint64), 1)),
        ("causal_topk", lambda: C.causal_topk(q, x, 5, n - m, None, 0, False, np.empty((m, 5), np.int32),
                                              np.empty((m, 5), np.int64), 1)),
        ("causal_topk", lambda: C.causal_topk(q, x, 5, n - m, 8, 2, True, np.empty((m, 5), np.int32),
                                              np.empty((m, 5), np.int64), 1)),
    ]


def test_every_kernel_runs_at_the_pinned_level(isa):
    """Counted inside the level's code (HDC_RAN), not at dispatch: each kernel's body of the
    pinned level ran, and no SIMD level above it did (a portable remainder is allowed)."""
    for name, call in _every_kernel_call():
        before = {lv: C.ran_count(name, lv) for lv in ISAS}
        call()
        after = {lv: C.ran_count(name, lv) for lv in ISAS}
        assert after[isa] > before[isa], f"{name}: no {isa} kernel body ran"
        above = [lv for lv in ISAS if C.ISA_NAMES.index(lv) > C.ISA_NAMES.index(isa)]
        assert all(after[lv] == before[lv] for lv in above), f"{name} at {isa} ran {after} (was {before})"


def test_ran_count_is_not_the_dispatch_count():
    """The two counters are separate: a dispatch alone (0 rows) runs no kernel body."""
    before_ran, before_calls = C.ran_count("popcount"), C.call_count("popcount")
    C.popcount(np.zeros((0, 3), np.uint64), np.zeros(0, np.int64), 1)
    assert C.call_count("popcount") == before_calls + 1
    assert C.ran_count("popcount") == before_ran


@pytest.mark.parametrize("dim", BOUNDARY)
def test_word_boundary_dims_every_kernel(isa, dim):
    """The word-boundary dims, pinned (not left to hypothesis): every kernel at this level
    equals the reference, and each kernel's body at this level ran (``ran_count``: counted
    inside the level's code, so a silent fallback to another level fails here)."""
    rng = np.random.default_rng(dim)
    ran = {kern: C.ran_count(kern, isa) for kern in C.KERNELS}
    q, x = words(rng, 9, dim), words(rng, 45, dim)  # >= 4 queries: the tiled and fused paths
    got, want = np.zeros((9, 45), np.int32), np.zeros((9, 45), np.int32)
    C.hamming_matrix(q, x, got, 2)
    R.hamming_matrix(q, x, want)
    np.testing.assert_array_equal(got, want)
    for k in (1, 7, 45):
        d1, i1 = np.zeros((9, k), np.int32), np.zeros((9, k), np.int64)
        d2, i2 = d1.copy(), i1.copy()
        C.topk(q, x, k, d1, i1, 2)
        R.topk(q, x, k, d2, i2)
        np.testing.assert_array_equal(d1, d2)
        np.testing.assert_array_equal(i1, i2)
    b1 = np.empty_like(x)
    C.bind(x, x[::-1].copy(), b1, 1)
    np.testing.assert_array_equal(b1, x ^ x[::-1])
    p1, p2 = np.zeros(45, np.int64), np.zeros(45, np.int64)
    C.popcount(x, p1, 1)
    R.popcount(x, p2)
    np.testing.assert_array_equal(p1, p2)
    C.hamming_rows(x, x[::-1].copy(), p1, 1)
    R.hamming_rows(x, x[::-1].copy(), p2)
    np.testing.assert_array_equal(p1, p2)
    s1, s2 = np.empty_like(x), np.empty_like(x)
    C.permute(x, dim // 3, dim, s1, 1)
    R.permute(x, dim // 3, dim, s2)
    np.testing.assert_array_equal(s1, s2)
    c1, c2 = np.zeros(dim, np.int64), np.zeros(dim, np.int64)
    C.bit_counts(x, dim, c1, 1)
    R.bit_counts(x, dim, c2)
    np.testing.assert_array_equal(c1, c2)
    tie = words(rng, 1, dim)[0]
    m1, m2 = np.empty(x.shape[1], np.uint64), np.empty(x.shape[1], np.uint64)
    C.bundle_majority(x[:44], dim, tie, m1, 1)
    R.bundle_majority(x[:44], dim, tie, m2)
    np.testing.assert_array_equal(m1, m2)
    for overlap in (False, True):
        o1, j1 = np.zeros((9, 5), np.int32), np.zeros((9, 5), np.int64)
        o2, j2 = o1.copy(), j1.copy()
        C.causal_topk(q, x, 5, 30, 20, 1, overlap, o1, j1, 1)
        R.causal_topk(q, x, 5, 30, 20, 1, overlap, o2, j2)
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_array_equal(j1, j2)
    # the bit-sliced counters take word columns in groups of the level's vector width (up to 8
    # words at avx512) and the remainder columns one word at a time on the portable code: rows
    # narrower than 8 words may run bit_counts/bundle_majority on the portable remainder only
    exempt = ("bit_counts", "bundle_majority") if x.shape[1] < 8 else ()
    not_run = [kern for kern in C.KERNELS if C.ran_count(kern, isa) == ran[kern] and kern not in exempt]
    assert not not_run, f"kernels whose {isa} code never ran: {not_run}"
