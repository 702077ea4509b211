"""Every operation on every backend and every C ISA level equals the NumPy reference, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import hdc
from strategies import HUGE_DIM, assert_pad_zero, batch, dims, seeds

#: word boundaries, pinned (hypothesis above draws them only sometimes)
PINNED_DIMS = [1, 63, 64, 65, 127, 128, 129, 511, 512, 513]


def ref(fn, *args, **kw):
    with hdc.use_backend("numpy"):
        return fn(*args, **kw)


@given(dim=dims, n=batch, seed=seeds)
def test_bind(kernel, dim, n, seed):
    a, b = hdc.random(n, dim, seed), hdc.random(n, dim, seed + 1)
    got = hdc.bind(a, b)
    np.testing.assert_array_equal(got, ref(hdc.bind, a, b))
    np.testing.assert_array_equal(got, a ^ b)
    assert_pad_zero(got, dim)


@given(dim=dims, n=batch, seed=seeds)
def test_popcount_and_hamming_rows(kernel, dim, n, seed):
    a, b = hdc.random(n, dim, seed), hdc.random(n, dim, seed + 1)
    np.testing.assert_array_equal(hdc.popcount(a), ref(hdc.popcount, a))
    np.testing.assert_array_equal(hdc.hamming(a, b), ref(hdc.hamming, a, b))


@given(dim=dims, m=batch, n=batch, seed=seeds)
def test_hamming_broadcast(kernel, dim, m, n, seed):
    q = hdc.random(1, dim, seed)[0]
    x = hdc.random(n, dim, seed + 1)
    np.testing.assert_array_equal(hdc.hamming(q, x), ref(hdc.hamming, q, x))
    np.testing.assert_array_equal(hdc.hamming(x, q), ref(hdc.hamming, x, q))
    y = hdc.random(m, dim, seed + 2)
    got = hdc.hamming(y[:, None, :], x[None, :, :])  # (m, n) by broadcasting
    assert got.shape == (m, n)
    np.testing.assert_array_equal(got, ref(hdc.hamming_matrix, y, x).astype(np.int64))


@given(dim=dims, m=batch, n=st.integers(0, 40), seed=seeds)
def test_hamming_matrix(kernel, dim, m, n, seed):
    q, x = hdc.random(m, dim, seed), hdc.random(n, dim, seed + 1)
    got = hdc.hamming_matrix(q, x)
    assert got.dtype == np.int32 and got.shape == (m, n)
    np.testing.assert_array_equal(got, ref(hdc.hamming_matrix, q, x))


@given(dim=dims, m=st.integers(0, 20), n=st.integers(1, 70), seed=seeds, data=st.data())
def test_topk(kernel, dim, m, n, seed, data):
    k = data.draw(st.integers(1, n))
    q, x = hdc.random(m, dim, seed), hdc.random(n, dim, seed + 1)
    if n > 3 and dim > 1:  # duplicates force ties, which must go to the lower index
        x[n // 2] = x[1]
        x[-1] = x[0]
    d, i = hdc.topk(q, x, k)
    rd, ri = ref(hdc.topk, q, x, k)
    np.testing.assert_array_equal(d, rd)
    np.testing.assert_array_equal(i, ri)
    # chunking over the database must not change the answer
    chunk = data.draw(st.integers(1, n))
    d2, i2 = hdc.topk(q, x, k, chunk_rows=chunk)
    np.testing.assert_array_equal(d2, rd)
    np.testing.assert_array_equal(i2, ri)


@given(dim=dims, n=batch, seed=seeds, shift=st.integers(-20000, 20000))
def test_permute(kernel, dim, n, seed, shift):
    x = hdc.random(n, dim, seed)
    got = hdc.permute(x, shift, dim)
    np.testing.assert_array_equal(got, ref(hdc.permute, x, shift, dim))
    assert_pad_zero(got, dim)
    np.testing.assert_array_equal(hdc.permute(got, -shift, dim), x)


@given(dim=dims, n=st.integers(1, 12), seed=seeds)
def test_bundle(kernel, dim, n, seed):
    x = hdc.random(n, dim, seed)
    got = hdc.bundle(x, dim)
    np.testing.assert_array_equal(got, ref(hdc.bundle, x, dim))
    assert_pad_zero(got, dim)
    acc = hdc.BundleAccumulator(dim).add(x)
    np.testing.assert_array_equal(acc.result(), got)
    np.testing.assert_array_equal(acc.counts, hdc.to_bool(x, dim).sum(axis=0))


def test_huge_dim_all_ops(kernel):
    """Vectors past 64 KiB (600,001 bits): a 16-bit index anywhere would wrap here."""
    dim = HUGE_DIM
    q, x = hdc.random(3, dim, 1), hdc.random(9, dim, 2)
    x[4] = q[1]  # an exact match
    np.testing.assert_array_equal(hdc.hamming_matrix(q, x), ref(hdc.hamming_matrix, q, x))
    d, i = hdc.topk(q, x, 3)
    rd, ri = ref(hdc.topk, q, x, 3)
    np.testing.assert_array_equal(d, rd)
    np.testing.assert_array_equal(i, ri)
    assert d[1, 0] == 0 and i[1, 0] == 4
    for shift in (1, 64, 65, dim - 1, 300_007):
        np.testing.assert_array_equal(hdc.permute(x, shift, dim), ref(hdc.permute, x, shift, dim))
    np.testing.assert_array_equal(hdc.bundle(x[:8], dim), ref(hdc.bundle, x[:8], dim))
    np.testing.assert_array_equal(hdc.popcount(x), ref(hdc.popcount, x))
    np.testing.assert_array_equal(hdc.hamming(q, x[:3]), ref(hdc.hamming, q, x[:3]))


def test_threads_do_not_change_results(kernel):
    q, x = hdc.random(13, 1000, 3), hdc.random(301, 1000, 4)
    base = hdc.hamming_matrix(q, x, threads=1)
    for t in (2, 3, 8):
        np.testing.assert_array_equal(hdc.hamming_matrix(q, x, threads=t), base)
        np.testing.assert_array_equal(hdc.topk(q, x, 5, threads=t)[1], hdc.topk(q, x, 5, threads=1)[1])


@pytest.mark.parametrize("dim", PINNED_DIMS)
def test_every_operation_at_word_boundaries(kernel, dim):
    """Every operation at every pinned boundary dim equals the reference, pad bits stay zero."""
    q, x = hdc.random(5, dim, dim), hdc.random(37, dim, dim + 1)
    x[20] = x[3]  # a tie for topk
    got = hdc.bind(q, x[:5])
    np.testing.assert_array_equal(got, q ^ x[:5])
    assert_pad_zero(got, dim)
    np.testing.assert_array_equal(hdc.popcount(x), ref(hdc.popcount, x))
    np.testing.assert_array_equal(hdc.popcount(x), hdc.to_bool(x, dim).sum(-1))
    np.testing.assert_array_equal(hdc.hamming(q, x[:5]), ref(hdc.hamming, q, x[:5]))
    np.testing.assert_array_equal(hdc.hamming(q[0], x), ref(hdc.hamming, q[0], x))
    np.testing.assert_array_equal(hdc.hamming_matrix(q, x), ref(hdc.hamming_matrix, q, x))
    for k in (1, 5, 37):
        d, i = hdc.topk(q, x, k)
        rd, ri = ref(hdc.topk, q, x, k)
        np.testing.assert_array_equal(d, rd)
        np.testing.assert_array_equal(i, ri)
    for shift in sorted({0, 1, 63, 64, 65, dim - 1, dim, -1, -65}):
        got = hdc.permute(x, shift, dim)
        np.testing.assert_array_equal(got, ref(hdc.permute, x, shift, dim), err_msg=f"shift {shift}")
        np.testing.assert_array_equal(hdc.to_bool(got, dim), np.roll(hdc.to_bool(x, dim), shift, -1))
        assert_pad_zero(got, dim)
    for n in (1, 2, 15, 16, 17, 36):
        got = hdc.bundle(x[:n], dim)
        np.testing.assert_array_equal(got, ref(hdc.bundle, x[:n], dim), err_msg=f"n {n}")
        assert_pad_zero(got, dim)
    acc = hdc.BundleAccumulator(dim).add(x)
    np.testing.assert_array_equal(acc.counts, hdc.to_bool(x, dim).sum(0))
    np.testing.assert_array_equal(hdc.similarity(q, x[:5], dim), ref(hdc.similarity, q, x[:5], dim))
