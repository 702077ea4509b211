"""Fuzzing every C entry point with hostile arrays: each call gives the NumPy reference's answer or
raises TypeError/ValueError naming the problem; never a crash or a silent wrong answer.

Shapes: 0 rows, 1 word, sizes off every tile. Layouts: non-contiguous, misaligned (offset views
into a byte buffer), read-only, byte-swapped, wrong dtype, wrong ndim, Fortran order. Run these
tests under the sanitizer build too (csrc/run_sanitized_tests.sh): no read past a buffer.
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
except BackendUnavailable as exc:  # pragma: no cover
    pytest.skip(f"C backend not built: {exc}", allow_module_level=True)

MUTATIONS = ["none", "noncontig", "misaligned", "readonly", "byteswap", "int64", "uint32",
             "ndim1", "ndim3", "fortran", "list"]
BAD_INPUT = (TypeError, ValueError)
TYPE_ERRORS = ("byteswap", "int64", "uint32", "list", "ndim1", "ndim3")  # must always raise for 2-D kernels


def mutate(a: np.ndarray, how: str):
    """A version of ``a`` with the same values but a hostile layout or type."""
    if how == "none":
        return a
    if how == "noncontig":
        big = np.zeros(a.shape[:-1] + (a.shape[-1] * 2,), a.dtype) if a.ndim else a
        big[..., ::2] = a
        return big[..., ::2]
    if how == "misaligned":  # same bytes, starting 3 bytes into a buffer
        buf = np.zeros(a.nbytes + 8, np.uint8)
        v = buf[3:3 + a.nbytes].view(a.dtype).reshape(a.shape) if a.nbytes else buf[3:3].view(a.dtype)
        if a.nbytes:
            v[...] = a
        return v.reshape(a.shape)
    if how == "readonly":
        r = a.copy()
        r.flags.writeable = False
        return r
    if how == "byteswap":
        return a.astype(a.dtype.newbyteorder())
    if how == "int64":
        return a.view(np.int64) if a.dtype == np.uint64 else a.astype(np.int64)
    if how == "uint32":
        return a.astype(np.uint32)
    if how == "ndim1":
        return a.reshape(-1)
    if how == "ndim3":
        return a.reshape((1,) + a.shape)
    if how == "fortran":
        return np.asfortranarray(a)
    if how == "list":
        return a.tolist()
    raise AssertionError(how)


def words(rng, n, dim):
    x = rng.integers(0, 2**64, size=(n, n_words_for(dim)), dtype=np.uint64)
    if x.size:
        x[:, -1] &= pad_mask(dim)
    return x


def check(call, want_fn, out_arrays, ref_arrays):
    """Run call(); it must raise a clear error or leave out_arrays equal to the reference."""
    try:
        call()
    except BAD_INPUT as exc:
        assert str(exc), "error without a message"
        return "raised"
    want_fn()
    for got, want in zip(out_arrays, ref_arrays):
        np.testing.assert_array_equal(np.asarray(got), want)
    return "ok"


shapes = st.tuples(st.one_of(st.sampled_from([0, 1, 3, 4, 5, 31, 32, 33]), st.integers(0, 80)),
                   st.one_of(st.sampled_from([1, 63, 64, 65, 511, 513]), st.integers(1, 2000)))
muts = st.sampled_from(MUTATIONS)
isas = st.sampled_from(C.isa_levels())


@settings(max_examples=150)
@given(shape=shapes, m=st.integers(0, 9), which=st.integers(0, 2), how=muts, isa=isas, th=st.integers(1, 4),
       seed=st.integers(0, 2**32 - 1))
def test_fuzz_hamming_matrix_and_topk(shape, m, which, how, isa, th, seed):
    n, dim = shape
    rng = np.random.default_rng(seed)
    q, x = words(rng, m, dim), words(rng, n, dim)
    want = np.zeros((m, n), np.int32)
    args = [q, x, np.zeros((m, n), np.int32)]
    args[which] = mutate(args[which], how)
    with C.use_isa(isa):
        outcome = check(lambda: C.hamming_matrix(args[0], args[1], args[2], th),
                        lambda: R.hamming_matrix(q, x, want), [args[2]], [want])
        if how == "none" or (how == "readonly" and which < 2):
            assert outcome == "ok"  # read-only inputs are fine
        if how in TYPE_ERRORS or (how == "readonly" and which == 2):
            assert outcome == "raised"
        if n == 0:
            with pytest.raises(ValueError):
                C.topk(q, x, 1, np.zeros((m, 1), np.int32), np.zeros((m, 1), np.int64), th)
            return
        k = int(rng.integers(1, n + 1))
        d1, i1 = np.zeros((m, k), np.int32), np.zeros((m, k), np.int64)
        d2, i2 = d1.copy(), i1.copy()
        targs = [q, x, d1, i1]
        targs[which] = mutate(targs[which], how) if which < 2 else targs[which]
        outcome = check(lambda: C.topk(targs[0], targs[1], k, targs[2], targs[3], th),
                        lambda: R.topk(q, x, k, d2, i2), [targs[2], targs[3]], [d2, i2])
        if how == "none":
            assert outcome == "ok"


@settings(max_examples=150)
@given(shape=shapes, which=st.integers(0, 2), how=muts, isa=isas, th=st.integers(1, 4),
       seed=st.integers(0, 2**32 - 1))
def test_fuzz_rowwise(shape, which, how, isa, th, seed):
    n, dim = shape
    rng = np.random.default_rng(seed)
    a, b = words(rng, n, dim), words(rng, n, dim)
    with C.use_isa(isa):
        args = [a, b, np.zeros_like(a)]
        args[which] = mutate(args[which], how)
        outcome = check(lambda: C.bind(args[0], args[1], args[2], th), lambda: None, [args[2]], [a ^ b])
        if how == "none" or (how == "readonly" and which < 2):
            assert outcome == "ok"
        if how in ("byteswap", "int64", "uint32", "list") or (how == "readonly" and which == 2):
            assert outcome == "raised"
        want = np.zeros(n, np.int64)
        hargs = [a, b, np.zeros(n, np.int64)]
        if which < 2:
            hargs[which] = mutate(hargs[which], how)
        outcome = check(lambda: C.hamming_rows(hargs[0], hargs[1], hargs[2], th),
                        lambda: R.hamming_rows(a, b, want), [hargs[2]], [want])
        want2 = np.zeros(n, np.int64)
        pa = mutate(a, how) if which == 0 else a
        check(lambda: C.popcount(pa, hargs[2], th), lambda: R.popcount(a, want2), [hargs[2]], [want2])


@settings(max_examples=150)
@given(shape=shapes, sfrac=st.floats(0, 1), which=st.integers(0, 1), how=muts, isa=isas,
       th=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_fuzz_permute(shape, sfrac, which, how, isa, th, seed):
    n, dim = shape
    rng = np.random.default_rng(seed)
    x = words(rng, n, dim)
    shift = min(dim - 1, int(sfrac * dim))
    want = np.zeros_like(x)
    args = [x, np.zeros_like(x)]
    args[which] = mutate(args[which], how)
    with C.use_isa(isa):
        outcome = check(lambda: C.permute(args[0], shift, dim, args[1], th),
                        lambda: R.permute(x, shift, dim, want), [args[1]], [want])
    if how == "none" or (how == "readonly" and which == 0):
        assert outcome == "ok"
    if how in TYPE_ERRORS or (how == "readonly" and which == 1):
        assert outcome == "raised"


@settings(max_examples=150)
@given(shape=shapes, which=st.integers(0, 2), how=muts, isa=isas, th=st.integers(1, 4),
       seed=st.integers(0, 2**32 - 1))
def test_fuzz_bit_counts_and_bundle(shape, which, how, isa, th, seed):
    n, dim = shape
    rng = np.random.default_rng(seed)
    x = words(rng, n, dim)
    with C.use_isa(isa):
        counts, want = np.zeros(dim, np.int64), np.zeros(dim, np.int64)
        cargs = [x, counts]
        if which < 2:
            cargs[which] = mutate(cargs[which], how)
        outcome = check(lambda: C.bit_counts(cargs[0], dim, cargs[1], th),
                        lambda: R.bit_counts(x, dim, want), [cargs[1]], [want])
        if how == "none":
            assert outcome == "ok"
        if n == 0:
            with pytest.raises(ValueError, match="at least one row"):
                C.bundle_majority(x, dim, np.zeros(x.shape[1], np.uint64), np.zeros(x.shape[1], np.uint64), th)
            return
        tie = words(rng, 1, dim)[0]
        want_b = np.zeros(x.shape[1], np.uint64)
        bargs = [x, tie, np.zeros(x.shape[1], np.uint64)]
        bargs[which] = mutate(bargs[which], how)
        outcome = check(lambda: C.bundle_majority(bargs[0], dim, bargs[1], bargs[2], th),
                        lambda: R.bundle_majority(x, dim, tie, want_b), [bargs[2]], [want_b])
        if how == "none":
            assert outcome == "ok"


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", None])
def test_bad_threads(bad):
    a = np.zeros((2, 2), np.uint64)
    with pytest.raises(BAD_INPUT):
        C.bind(a, a, np.zeros_like(a), bad)


def test_bad_scalars():
    x = np.zeros((3, 2), np.uint64)
    out = np.zeros_like(x)
    with pytest.raises(ValueError, match="words"):
        C.permute(x, 1, 200, out, 1)  # 200 bits need 4 words
    with pytest.raises(ValueError, match="shift"):
        C.permute(x, 100, 100, out, 1)
    with pytest.raises(ValueError, match="shift"):
        C.permute(x, -1, 100, out, 1)
    with pytest.raises(TypeError, match="shift"):
        C.permute(x, 1.0, 100, out, 1)
    with pytest.raises(ValueError, match="dim"):
        C.bit_counts(x, 0, np.zeros(0, np.int64), 1)
    with pytest.raises(TypeError, match="dim"):
        C.bit_counts(x, 100.0, np.zeros(100, np.int64), 1)
    with pytest.raises(ValueError, match="k must be"):
        C.topk(x, x, 4, np.zeros((3, 4), np.int32), np.zeros((3, 4), np.int64), 1)
    with pytest.raises(ValueError, match="k must be"):
        C.topk(x, x, 0, np.zeros((3, 0), np.int32), np.zeros((3, 0), np.int64), 1)
    with pytest.raises(ValueError, match="same number of words"):
        C.hamming_matrix(x, np.zeros((3, 3), np.uint64), np.zeros((3, 3), np.int32), 1)
    with pytest.raises(ValueError, match="shape"):
        C.hamming_matrix(x, x, np.zeros((3, 4), np.int32), 1)
    with pytest.raises(ValueError, match="C-contiguous"):
        C.hamming_matrix(x, x, np.zeros((3, 3), np.int32).T, 1)  # transposed: strided items


def test_int32_limit_raises_instead_of_wrapping():
    """Distances are int32: n_words >= 2**25 (dim >= 2**31) must raise, not wrap."""
    W = C.MAX_WORDS_DISTANCE
    # a zero-stride view makes the huge row without allocating 256 MiB
    q = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint64), shape=(1, W), strides=(0, 0))
    with pytest.raises((OverflowError, ValueError)):
        C.hamming_matrix(q, q, np.zeros((1, 1), np.int32), 1)
    rc = C.lib.hdc_hamming_matrix(C.ffi.NULL, 0, C.ffi.NULL, 0, W, C.ffi.NULL, 0, 1)
    assert rc == -3


def test_c_level_argument_checks():
    """The C entry points themselves reject bad sizes and NULL buffers (return codes, no crash)."""
    lib, NULL = C.lib, C.ffi.NULL
    assert lib.hdc_bind(NULL, NULL, NULL, -1, 2, 1) == -1
    assert lib.hdc_bind(NULL, NULL, NULL, 3, 2, 1) == -1
    assert lib.hdc_bind(NULL, NULL, NULL, 0, 2, 1) == 0
    assert lib.hdc_hamming_matrix(NULL, 2, NULL, 2, 1, NULL, 2, 1) == -1
    assert lib.hdc_hamming_matrix(NULL, 1, NULL, 4, 1, NULL, 3, 1) == -1  # stride < n
    assert lib.hdc_topk(NULL, 1, NULL, 3, 1, 4, NULL, NULL, 1) == -1  # k > n
    assert lib.hdc_permute(NULL, 1, 1, 64, 64, NULL, 1) == -1  # shift == dim
    assert lib.hdc_permute(NULL, 1, 2, 64, 0, NULL, 1) == -1  # words do not match dim
    assert lib.hdc_bit_counts(NULL, 0, 1, 64, NULL, 1) == -1  # NULL counts
    assert lib.hdc_bundle_majority(NULL, 0, 1, 64, NULL, NULL, 1) == -1  # no rows
    assert lib.hdc_set_isa(7) == -1
    assert lib.hdc_popcount(NULL, 1 << 61, 1 << 10, NULL, 1) == -1  # rows * words overflows
