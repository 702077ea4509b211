"""No silent wrong answer from the core, on every backend and C ISA level (the ``kernel`` fixture).

* ``out=`` aliasing: every operation that takes ``out`` gives the ``out=None`` answer when
  ``out`` is exactly an input, partly overlaps one, or is disjoint from them (the rule in
  hdc/functional.py: overlap -> through a temporary).
* Pad bits: every entry point that takes ``dim`` refuses set pad bits with a ValueError
  naming the argument.
* Overflow: BundleAccumulator raises OverflowError before an int64 counter could wrap.
* Integers: NumPy integers are taken for every int argument (``threads`` included); bool
  and float are refused with a TypeError naming the argument and the value.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import hdc
from hdc.backends import InvalidSetting  # noqa: F401  (public: importable)

DIMS = [1, 63, 64, 65, 200, 513]


def ref(fn, *args, **kw):
    with hdc.use_backend("numpy"):
        return fn(*args, **kw)


# ------------------------------------------------------------------ out= aliasing
def _word_buffer(dim, n_rows, seed):
    """A flat word buffer of 3 * n_rows vectors with zero pad bits, and its row width."""
    w = hdc.n_words_for(dim)
    return hdc.random(3 * n_rows, dim, seed).reshape(-1), w


# offsets of out (in words) from the input view: exact, partial overlaps (one word, one
# row, half, backwards), and disjoint (adjacent and far)
def _offsets(n, w):
    total = n * w
    return {"exact": 0, "word+1": 1, "row+1": w, "half": total // 2, "row-1": -w,
            "adjacent": total, "far": 2 * total}


@pytest.mark.parametrize("dim", [63, 64, 65, 200])
@pytest.mark.parametrize("where", ["exact", "word+1", "row+1", "half", "row-1", "adjacent", "far"])
@pytest.mark.parametrize("aliased", ["a", "b"])
def test_bind_out_aliasing(kernel, dim, where, aliased):
    n = 9
    buf, w = _word_buffer(dim, n, seed=dim)
    a0 = w * n  # inputs start one block in, so negative offsets stay inside the buffer
    off = a0 + _offsets(n, w)[where]
    if where == "far":
        off = 0  # the first block: disjoint, before the input
    a = buf[a0:a0 + n * w].reshape(n, w)
    b = hdc.random(n, dim, 99)
    if aliased == "b":
        a, b = b, a
    want = a ^ b
    out = buf[off:off + n * w].reshape(n, w)
    got = hdc.bind(a, b, out=out)
    assert got is out
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("dim", [63, 64, 65, 200])
@pytest.mark.parametrize("where", ["exact", "row+1", "row-1", "adjacent", "far"])
@pytest.mark.parametrize("shift", [0, 1, 64, -3])
def test_permute_out_aliasing(kernel, dim, where, shift):
    """Offsets are whole rows: a view shifted by one word would expose pad bits as data."""
    n = 7
    buf, w = _word_buffer(dim, n, seed=dim + 1)
    x0 = w * n
    off = x0 + _offsets(n, w)[where] if where != "far" else 0
    x = buf[x0:x0 + n * w].reshape(n, w)
    want = ref(hdc.permute, x.copy(), shift, dim)
    out = buf[off:off + n * w].reshape(n, w)
    assert hdc.permute(x, shift, dim, out=out) is out
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("dim", [64, 65, 200, 1000])
@pytest.mark.parametrize("where", ["exact", "inside", "tail", "adjacent", "x"])
@pytest.mark.parametrize("m", [1, 4, 9])
def test_hamming_matrix_out_aliasing(kernel, dim, where, m):
    """``out`` (int32) laid over the bytes of Q (or X): exact start, inside, overlapping Q's
    end, adjacent (disjoint) and over X."""
    n = 40
    w = hdc.n_words_for(dim)
    buf = np.zeros(4 * (m + n) * w + 8 * m * n, np.uint64)  # room for Q, X and out
    Q = buf[:m * w].reshape(m, w)
    X = buf[m * w:(m + n) * w].reshape(n, w)
    Q[...] = hdc.random(m, dim, 1)
    X[...] = hdc.random(n, dim, 2)
    want = ref(hdc.hamming_matrix, Q.copy(), X.copy())
    as32 = buf.view(np.int32)
    start = {"exact": 0, "inside": m * w, "tail": 2 * m * w - 2,
             "adjacent": 2 * (m + n) * w, "x": 2 * m * w + 6}[where]
    out = as32[start:start + m * n].reshape(m, n)
    assert hdc.hamming_matrix(Q, X, out=out) is out
    np.testing.assert_array_equal(out, want)


def test_issue_aliasing_inputs(kernel):
    """Disjoint out is the caller's array; then the issue's exact aliasing inputs."""
    a, b = hdc.random(5, 300, 1), hdc.random(5, 300, 2)
    out = np.empty_like(a)
    assert hdc.bind(a, b, out=out) is out and np.array_equal(out, a ^ b)
    # the issue's exact inputs
    a, b = hdc.random(10, 200, 3), hdc.random(9, 200, 4)
    want = a[:9] ^ b
    hdc.bind(a[:9], b, out=a[1:])
    np.testing.assert_array_equal(a[1:], want)
    x = hdc.random(4, 130, 4)
    want = ref(hdc.permute, x, 5, 130)
    hdc.permute(x, 5, 130, out=x)
    np.testing.assert_array_equal(x, want)


# ------------------------------------------------------------------ pad bits
def _with_pad(dim, n=3, seed=0):
    x = hdc.random(n, dim, seed)
    x[1, -1] |= np.uint64(1) << np.uint64(dim % 64)  # the first pad bit of vector 1
    return x


PAD_CALLS = {
    "permute": lambda x, d: hdc.permute(x, 5, d),
    "permute_shift0": lambda x, d: hdc.permute(x, 0, d),
    "permute_shift_dim": lambda x, d: hdc.permute(x, d, d),
    "bundle": lambda x, d: hdc.bundle(x, d),
    "bundle_tie": lambda x, d: hdc.bundle(hdc.random(4, d, 1), d, tie=x[1]),
    "weighted_bundle": lambda x, d: hdc.weighted_bundle(x, [1, 2, 3], d),
    "accumulator": lambda x, d: hdc.BundleAccumulator(d).add(x),
    "accumulator_weighted": lambda x, d: hdc.BundleAccumulator(d).add(x, weights=[1, 1, 1]),
    "accumulator_result_tie": lambda x, d: hdc.BundleAccumulator(d).add(x[:1]).result(tie=x[1]),
    "similarity_a": lambda x, d: hdc.similarity(x, x[:1], d),
    "similarity_b": lambda x, d: hdc.similarity(x[:1], x, d),
    "to_bool": lambda x, d: hdc.to_bool(x, d),
    "to_bipolar": lambda x, d: hdc.to_bipolar(x, d),
    "to_bitarray": lambda x, d: hdc.to_bitarray(x[1], d),
    "HV": lambda x, d: hdc.HV(x, d),
    "ItemMemory.add": lambda x, d: hdc.ItemMemory(d, seed=0).add("s", x[1]),
    "ItemMemory.cleanup": lambda x, d: _memory(d).cleanup(x[1]),
}


def _memory(dim):
    im = hdc.ItemMemory(dim, seed=0)
    im.add("s")
    return im

PAD_NAME = {"bundle_tie": "tie", "accumulator_result_tie": "tie", "similarity_b": "b",
            "similarity_a": "a", "to_bitarray": "x", "HV": "words", "ItemMemory.add": "vector",
            "ItemMemory.cleanup": "query"}


@pytest.mark.parametrize("call", sorted(PAD_CALLS))
@pytest.mark.parametrize("dim", [1, 63, 65, 200])
def test_set_pad_bits_refused_everywhere(kernel, call, dim):
    if call == "to_bitarray":
        pytest.importorskip("bitarray")
    x = _with_pad(dim)
    name = PAD_NAME.get(call, "x")
    with pytest.raises(ValueError, match=rf"^{name} has pad bits set past dim={dim}"):
        PAD_CALLS[call](x, dim)


@pytest.mark.parametrize("dim", [64, 128, 512])
def test_no_pad_bits_at_word_multiples(kernel, dim):
    """dim % 64 == 0 has no pad bits: all-ones words are a valid vector."""
    x = np.full((2, dim // 64), np.uint64(2**64 - 1))
    np.testing.assert_array_equal(hdc.permute(x, 0, dim), x)
    np.testing.assert_array_equal(hdc.permute(x, 7, dim), x)
    np.testing.assert_array_equal(hdc.bundle(x, dim), x[0])


def test_permute_shift0_equals_other_shifts_on_pad(kernel):
    """The issue's probe: shift 0 copied pad garbage while other shifts cleared it; now both raise."""
    x = _with_pad(70)
    for shift in (0, 1, 70, -70, 140):
        with pytest.raises(ValueError, match="pad bits"):
            hdc.permute(x, shift, 70)


# ------------------------------------------------------------------ overflow
M = hdc.BundleAccumulator.MAX_COUNT


def _snapshot(acc):
    return acc.counts.copy(), int(acc.total), acc.n_added


def _unchanged(acc, snap):
    np.testing.assert_array_equal(acc.counts, snap[0])
    assert int(acc.total) == snap[1] and acc.n_added == snap[2]


@pytest.mark.parametrize("weights", [
    [M, 1], [2**62, 0], [-M, -1], np.array([2**63 + 1], np.uint64), np.array([2**62], np.uint64),
    np.array([2.0**62]), np.array([-(2**63)], np.int64), [M // 2 + 1, M // 2 + 1],
])
def test_accumulator_weights_past_the_limit_raise(kernel, weights):
    x = np.full((len(weights), 2), np.uint64(2**64 - 1))  # every bit set: counts get every weight
    acc = hdc.BundleAccumulator(128)
    snap = _snapshot(acc)
    with pytest.raises(OverflowError, match=r"2\*\*61"):
        acc.add(x, weights=weights)
    _unchanged(acc, snap)


def test_accumulator_limit_is_exact(kernel):
    """Up to the limit the counters are exact; one more raises before anything changes."""
    x = np.full((2, 2), np.uint64(2**64 - 1))
    acc = hdc.BundleAccumulator(128).add(x, weights=[M - 3, 1])
    assert int(acc.total) == M - 2 and int(acc.counts.max()) == M - 2
    acc.add(x[:2])  # unweighted: +2 reaches the limit exactly
    assert int(acc.total) == M and int(acc.counts.min()) == M
    np.testing.assert_array_equal(acc.bipolar_sum(), np.full(128, -M))  # exact: no wrap in 2 * counts
    snap = _snapshot(acc)
    with pytest.raises(OverflowError, match="adding 1 vectors"):
        acc.add(x[:1])
    _unchanged(acc, snap)
    acc.add(x[:1], weights=[-5])  # moving back down is fine
    assert int(acc.total) == M - 5


def test_accumulator_merge_overflow(kernel):
    x = np.full((1, 2), np.uint64(2**64 - 1))
    a = hdc.BundleAccumulator(128).add(x, weights=[M // 2 + 1])
    b = hdc.BundleAccumulator(128).add(x, weights=[M // 2 + 1])
    snap = _snapshot(a)
    with pytest.raises(OverflowError, match="merging"):
        a.merge(b)
    _unchanged(a, snap)
    c = hdc.BundleAccumulator(128).add(x, weights=[M // 2 - 1])
    a.merge(c)
    assert int(a.total) == M


def test_accumulator_many_small_weights_sum_exactly(kernel):
    """Many weights whose int64 sum would wrap: the growth is summed exactly and refused."""
    w = np.full(8, 2**60, np.int64)  # sum 2**63 wraps int64
    x = np.full((8, 1), np.uint64(1))
    with pytest.raises(OverflowError):
        hdc.BundleAccumulator(1).add(x, weights=w)
    acc = hdc.BundleAccumulator(1).add(x[:2], weights=w[:2])  # 2**61: exactly the limit
    assert int(acc.counts[0]) == M


# ------------------------------------------------------------------ integers
NP_INTS = [np.int64(2), np.int32(2), np.uint8(2), np.intp(2)]


@pytest.mark.parametrize("t", NP_INTS, ids=lambda v: type(v).__name__)
def test_numpy_ints_accepted_for_threads(kernel, t):
    x, y = hdc.random(6, 300, 1), hdc.random(40, 300, 2)
    np.testing.assert_array_equal(hdc.bind(x, x, threads=t), np.zeros_like(x))
    np.testing.assert_array_equal(hdc.popcount(x, threads=t), ref(hdc.popcount, x))
    np.testing.assert_array_equal(hdc.hamming(x, x[::-1].copy(), threads=t), ref(hdc.hamming, x, x[::-1].copy()))
    np.testing.assert_array_equal(hdc.hamming_matrix(x, y, threads=t), ref(hdc.hamming_matrix, x, y))
    np.testing.assert_array_equal(hdc.topk(x, y, t, threads=t)[1], ref(hdc.topk, x, y, int(t))[1])
    np.testing.assert_array_equal(hdc.permute(x, t, np.int64(300), threads=t), ref(hdc.permute, x, 2, 300))
    np.testing.assert_array_equal(hdc.bundle(x, 300, axis=np.int64(0), threads=t), ref(hdc.bundle, x, 300))
    hdc.BundleAccumulator(300).add(x, threads=t)
    hdc.similarity(x, x, 300, threads=t)
    before = hdc.get_num_threads()
    try:
        hdc.set_num_threads(t)
        assert hdc.get_num_threads() == 2 and type(hdc.get_num_threads()) is int
    finally:
        hdc.set_num_threads(before)


@pytest.mark.parametrize("bad", [True, np.bool_(True), 2.0, np.float64(2), "2"], ids=repr)
def test_bool_and_float_threads_refused(kernel, bad):
    x = hdc.random(3, 100, 1)
    with pytest.raises(TypeError, match=rf"threads must be a positive int .*got {re.escape(repr(bad))}"):
        hdc.hamming_matrix(x, x, threads=bad)
    with pytest.raises(TypeError, match="threads"):
        hdc.bind(x, x, threads=bad)
    with pytest.raises(TypeError, match="number of threads"):
        hdc.set_num_threads(bad)


@pytest.mark.parametrize("bad", [True, 2.0, np.float32(2), "2"], ids=repr)
def test_bool_and_float_ints_refused(bad):
    x = hdc.random(3, 100, 1)
    for name, call in [("k", lambda: hdc.topk(x, x, bad)), ("shift", lambda: hdc.permute(x, bad, 100)),
                       ("dim", lambda: hdc.random(1, bad)), ("n", lambda: hdc.random(bad, 10)),
                       ("axis", lambda: hdc.bundle(x, 100, axis=bad)),
                       ("chunk_rows", lambda: hdc.topk(x, x, 1, chunk_rows=bad))]:
        with pytest.raises(TypeError, match=rf"^{name} must be an int"):
            call()


@pytest.mark.parametrize("n, dim, match", [
    (1, 2**70, r"dim must be at most 2\*\*62 bits, got 1180591620717411303424"),
    (1, 2**62 + 1, r"dim must be at most 2\*\*62 bits"),
    (2**70, 10, r"n must be in 0..2\*\*62 vectors, got 1180591620717411303424"),
    (-1, 10, r"n must be in 0..2\*\*62 vectors, got -1"),
    (1, 0, r"dim must be >= 1 bit, got 0"),
])
def test_random_size_messages(n, dim, match):
    with pytest.raises(ValueError, match=match):
        hdc.random(n, dim)


# ------------------------------------------------------------------ topk on 0-word vectors
@pytest.mark.parametrize("m, n, k", [(3, 5, 2), (1, 1, 1), (4, 7, 7)])
def test_topk_zero_words_same_everywhere(kernel, m, n, k):
    """0-bit vectors: every distance is 0, ties to the lower index; the same on every backend."""
    q, x = np.zeros((m, 0), np.uint64), np.zeros((n, 0), np.uint64)
    d, i = hdc.topk(q, x, k)
    np.testing.assert_array_equal(d, np.zeros((m, k), np.int32))
    np.testing.assert_array_equal(i, np.tile(np.arange(k), (m, 1)))
    np.testing.assert_array_equal(hdc.hamming_matrix(q, x), np.zeros((m, n), np.int32))
    np.testing.assert_array_equal(hdc.popcount(q), np.zeros(m))
    np.testing.assert_array_equal(hdc.hamming(q, q), np.zeros(m))
    np.testing.assert_array_equal(hdc.hamming(q[0], x), np.zeros(n))


# ------------------------------------------------------------------ settings (in subprocesses)
def _import_hdc(env_over, code="import hdc; hdc.hamming_matrix(hdc.random(2, 70, 0), hdc.random(3, 70, 1)); "
                                  "print(hdc.get_backend_name())"):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("HDC_BACKEND", "HDC_ISA", "HDC_NUM_THREADS")}
    env.update(env_over)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("env, message", [
    ({"HDC_ISA": "avx1024"}, "HDC_ISA='avx1024' is not an ISA level; valid values: auto, avx512, avx2, x86-64-v2, sve, neon, "
     "portable"),
    ({"HDC_ISA": "avx1024", "HDC_BACKEND": "c"}, "HDC_ISA='avx1024' is not an ISA level; valid values"),
    ({"HDC_ISA": "avx1024", "HDC_BACKEND": "numba"}, "HDC_ISA='avx1024' is not an ISA level"),
    ({"HDC_BACKEND": "cuda"}, "HDC_BACKEND='cuda' is not a backend; valid values: auto, c, numba, numpy"),
    ({"HDC_BACKEND": "nunpy"}, "HDC_BACKEND='nunpy' is not a backend"),
    ({"HDC_NUM_THREADS": "two"}, "HDC_NUM_THREADS must be a positive integer, got 'two'"),
    ({"HDC_NUM_THREADS": "0"}, "HDC_NUM_THREADS must be >= 1, got 0"),
])
def test_invalid_setting_raises_at_import(env, message):
    """A typo raises at ``import hdc`` with the valid values, never a silent fallback (before:
    HDC_ISA=avx1024 ran on Numba; with HDC_BACKEND=c it said to reinstall with a compiler)."""
    p = _import_hdc(env, code="import hdc")
    assert p.returncode != 0
    assert "InvalidSetting" in p.stderr and message in p.stderr, p.stderr[-1500:]
    assert "compiler" not in p.stderr


# HDC_ISA=avx2 on a CPU with a better level: auto takes Numba (compiled for the whole CPU),
# since C pinned below the CPU's best level is not the fastest path; HDC_BACKEND=c still pins C.
@pytest.mark.parametrize("env, backend", [
    ({"HDC_ISA": "AVX2 ", "HDC_BACKEND": "c"}, "c"), ({"HDC_ISA": "auto"}, "c"), ({"HDC_BACKEND": "NumPy"}, "numpy"),
    ({"HDC_BACKEND": "numba", "HDC_ISA": "portable"}, "numba"), ({}, "c"),
])
def test_valid_settings_import(env, backend):
    import hdc

    if "c" not in hdc.available_backends():
        pytest.skip("C backend not built")
    p = _import_hdc(env)
    assert p.returncode == 0, p.stderr[-1500:]
    assert p.stdout.split() == [backend]
