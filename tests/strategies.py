"""Hypothesis strategies and helpers shared by the core tests."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

import hdc

#: dims that hit word boundaries, plus random ones
BOUNDARY_DIMS = [1, 2, 63, 64, 65, 127, 128, 129, 511, 512, 513]
#: past 64 KiB per vector (524,288 bits): catches 16-bit index wrap-around
HUGE_DIM = 600_001

dims = st.one_of(st.sampled_from(BOUNDARY_DIMS), st.integers(1, 5000))
batch = st.integers(0, 9)
seeds = st.integers(0, 2**32 - 1)


def assert_pad_zero(words: np.ndarray, dim: int) -> None:
    """The invariant: every bit past ``dim`` in the last word is zero."""
    assert words.shape[-1] == hdc.n_words_for(dim)
    if words.size:
        assert not np.any(words[..., -1] & ~hdc.pad_mask(dim)), "pad bits set past dim"


def naive_hamming(a_bits: np.ndarray, b_bits: np.ndarray) -> np.ndarray:
    """The plainest definition: count differing bools."""
    return (a_bits != b_bits).sum(axis=-1)
