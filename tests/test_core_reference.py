"""The NumPy reference against the plainest possible definitions (bools and Python ints)."""
from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import hdc
from hdc.backends import numpy_ref as R
from strategies import assert_pad_zero, dims, naive_hamming, seeds


@given(dim=dims, seed=seeds)
def test_pack_unpack_layout(dim, seed):
    bits = np.random.default_rng(seed).random((3, dim)) < 0.5
    words = hdc.pack_bits(bits)
    assert words.dtype == np.uint64 and words.shape == (3, hdc.n_words_for(dim))
    assert_pad_zero(words, dim)
    np.testing.assert_array_equal(hdc.unpack_bits(words, dim), bits)
    # bit i lives in word i // 64 at bit i % 64
    for i in np.flatnonzero(bits[0])[:20]:
        i = int(i)
        assert (int(words[0, i // 64]) >> (i % 64)) & 1 == 1


@given(dim=dims, seed=seeds)
def test_reference_kernels_match_bool_definitions(dim, seed):
    a, b = hdc.random(4, dim, seed), hdc.random(4, dim, seed + 1)
    ab, bb = hdc.unpack_bits(a, dim), hdc.unpack_bits(b, dim)
    out = np.empty(4, np.int64)
    R.hamming_rows(a, b, out)
    np.testing.assert_array_equal(out, naive_hamming(ab, bb))
    m = np.empty((4, 4), np.int32)
    R.hamming_matrix(a, b, m)
    np.testing.assert_array_equal(m, naive_hamming(ab[:, None], bb[None]))
    # permute = rotation of the bit sequence, checked on Python ints
    shift = seed % dim
    p = np.empty_like(a)
    R.permute(a, shift, dim, p)
    as_int = int("".join("1" if v else "0" for v in ab[0][::-1]), 2)
    mask = (1 << dim) - 1
    rot = ((as_int << shift) | (as_int >> (dim - shift))) & mask if shift else as_int
    got = int("".join("1" if v else "0" for v in hdc.unpack_bits(p, dim)[0][::-1]), 2)
    assert got == rot


@given(dim=dims, n=st.integers(1, 10), seed=seeds)
def test_reference_bundle_is_majority_with_tie_vector(dim, n, seed):
    x = hdc.random(n, dim, seed)
    tie = hdc.tie_vector(dim)
    out = np.empty(hdc.n_words_for(dim), np.uint64)
    R.bundle_majority(x, dim, tie, out)
    count = hdc.unpack_bits(x, dim).sum(axis=0)
    expect = (2 * count > n) | ((2 * count == n) & hdc.unpack_bits(tie, dim))
    np.testing.assert_array_equal(hdc.unpack_bits(out, dim), expect)
