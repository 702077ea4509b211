"""Conversions (bool, bipolar, bitarray, torch), the torch ops, ItemMemory, HV and the registry."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from bitarray import bitarray
from hypothesis import given

import hdc
from hdc import torch_ops as T
from strategies import HUGE_DIM, assert_pad_zero, dims, seeds


@given(dim=dims, seed=seeds)
def test_bool_bipolar_bitarray_roundtrips(dim, seed):
    x = hdc.random(3, dim, seed)
    np.testing.assert_array_equal(hdc.from_bool(hdc.to_bool(x, dim)), x)
    bip = hdc.to_bipolar(x, dim)
    assert bip.dtype == np.int8 and set(np.unique(bip)) <= {-1, 1}
    np.testing.assert_array_equal(hdc.from_bipolar(bip), x)
    # the bipolar dot product is dim - 2 * hamming
    dots = bip.astype(np.int64) @ bip[0].astype(np.int64)
    np.testing.assert_array_equal(dots, dim - 2 * hdc.hamming(x, x[0]))
    ba = hdc.to_bitarray(x[1], dim)
    assert len(ba) == dim and ba.tolist() == hdc.to_bool(x[1], dim).tolist()
    np.testing.assert_array_equal(hdc.from_bitarray(ba), x[1])
    assert (ba ^ hdc.to_bitarray(x[2], dim)).count() == hdc.hamming(x[1], x[2])


def test_bitarray_big_endian_input():
    ba = bitarray("1101" * 50, endian="big")
    w = hdc.from_bitarray(ba)
    assert_pad_zero(w, 200)
    assert hdc.to_bitarray(w, 200).tolist() == ba.tolist()


@given(dim=dims, seed=seeds)
def test_torch_ops_match_numpy(dim, seed):
    x = hdc.random(5, dim, seed)
    t = T.to_torch(x)
    assert t.dtype == torch.int64
    np.testing.assert_array_equal(T.from_torch(t), x)
    np.testing.assert_array_equal(T.from_torch(T.bind(t[:2], t[2:4])), hdc.bind(x[:2], x[2:4]))
    np.testing.assert_array_equal(T.popcount(t).numpy(), hdc.popcount(x))
    np.testing.assert_array_equal(T.hamming_matrix(t, t).numpy(), hdc.hamming_matrix(x, x))
    # tiny blocks exercise the bounded-memory blocking of both operands
    np.testing.assert_array_equal(T.hamming_matrix(t, t[1:], max_temp_words=7).numpy(),
                                  hdc.hamming_matrix(x, x[1:]))
    for shift in (1, seed % (2 * dim) - dim, 64, 65):
        np.testing.assert_array_equal(T.from_torch(T.permute(t, shift, dim)), hdc.permute(x, shift, dim))


def test_torch_huge_dim_and_errors():
    x = hdc.random(2, HUGE_DIM, 3)
    t = T.to_torch(x)
    np.testing.assert_array_equal(T.hamming(t[0], t[1]).numpy(), hdc.hamming(x[0], x[1]))
    np.testing.assert_array_equal(T.from_torch(T.permute(t, 12345, HUGE_DIM)), hdc.permute(x, 12345, HUGE_DIM))
    with pytest.raises(TypeError, match="int64"):
        T.popcount(t.float())
    with pytest.raises(TypeError, match="shift must be an int"):
        T.permute(t, 1.5, HUGE_DIM)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_torch_ops_on_gpu():
    x = hdc.random(64, 1000, 0)
    t = T.to_torch(x, device="cuda")
    np.testing.assert_array_equal(T.hamming_matrix(t, t).cpu().numpy(), hdc.hamming_matrix(x, x))
    np.testing.assert_array_equal(T.from_torch(T.permute(t, 77, 1000)), hdc.permute(x, 77, 1000))


def test_item_memory_cleanup_and_reproducibility():
    im = hdc.ItemMemory(4096, seed=3, symbols="abcdefgh")
    assert len(im) == 8 and "c" in im
    again = hdc.ItemMemory(4096, seed=3, symbols="abcdefghij")
    np.testing.assert_array_equal(again.vectors[:8], im.vectors)  # growing keeps old vectors
    noisy = im["e"].copy()
    flip = hdc.pack_bits(np.random.default_rng(0).random(4096) < 0.3)  # flip 30% of the bits
    sym, dist = im.cleanup(noisy ^ flip)
    assert sym[0] == "e" and 0.25 * 4096 < dist[0] < 0.35 * 4096
    syms, dists = im.cleanup(np.stack([im["a"], im["h"]]), k=2)
    assert syms.shape == (2, 2) and syms[0, 0] == "a" and syms[1, 0] == "h"


def test_hv_class_delegates():
    a, b = hdc.HV.random(2, 1000, seed=0)
    c = a * b
    assert (c * b) == a
    assert c.hamming(b * a) == 0
    assert a.permute(5).permute(-5) == a
    s = hdc.HV(np.stack([a.words, b.words, c.words]), 1000).bundle()
    assert s.dim == 1000 and s.words.shape == (16,)
    with pytest.raises(ValueError, match="dims differ"):
        a.bind(hdc.HV.random(1, 64, seed=0)[0])


def test_registry_and_backend_info(monkeypatch):
    info = hdc.backend_info()
    assert info["backend"] in info["available"] and "numpy" in info["available"]
    with hdc.use_backend("numpy"):
        assert hdc.get_backend_name() == "numpy"
    assert hdc.get_backend_name() == info["backend"]
    # the automatic choice is the fastest available backend
    assert info["backend"] == info["available"][0]
