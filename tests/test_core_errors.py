"""Bad input raises an exception that names the problem; never a crash or a silent answer."""
from __future__ import annotations

import numpy as np
import pytest

import hdc

DIM = 100
X = hdc.random(4, DIM, 0)
Y = hdc.random(4, 200, 1)


@pytest.mark.parametrize("dim", [0, -5])
def test_dim_below_one(dim):
    with pytest.raises(ValueError, match="dim must be >= 1"):
        hdc.random(2, dim, 0)


@pytest.mark.parametrize("dim", [1.5, "10", True, None])
def test_dim_wrong_type(dim):
    with pytest.raises(TypeError, match="dim must be an int"):
        hdc.random(2, dim, 0)


def test_mismatched_word_counts():
    with pytest.raises(ValueError, match="word counts differ"):
        hdc.bind(X, Y)
    with pytest.raises(ValueError, match="word counts differ"):
        hdc.hamming(X, Y)
    with pytest.raises(ValueError, match="word counts differ"):
        hdc.hamming_matrix(X, Y)
    with pytest.raises(ValueError, match="dim=200 needs"):
        hdc.permute(X, 1, 200)
    with pytest.raises(ValueError, match="dim=200 needs"):
        hdc.bundle(X, 200)


@pytest.mark.parametrize("bad", [X.astype(np.int64), X.astype(np.float64), X.astype(">u8"), X.tolist()])
def test_wrong_dtype(bad):
    with pytest.raises(TypeError):
        hdc.hamming_matrix(bad, X)


def test_non_contiguous_and_misaligned():
    wide = hdc.random(4, 256, 0)
    with pytest.raises(ValueError, match="C-contiguous"):
        hdc.hamming_matrix(wide[:, ::2], X[:, :2].copy())
    buf = np.zeros(X.nbytes + 8, np.uint8)
    mis = np.frombuffer(buf[1:1 + X.nbytes].data, np.uint64).reshape(X.shape)
    with pytest.raises(ValueError, match="aligned"):
        hdc.hamming_matrix(mis, X)


def test_shape_errors():
    with pytest.raises(ValueError, match="2-D"):
        hdc.hamming_matrix(X[0], X)
    with pytest.raises(ValueError, match="empty batch"):
        hdc.bundle(X[:0], DIM)
    with pytest.raises(ValueError, match="word axis"):
        hdc.bundle(X, DIM, axis=-1)
    with pytest.raises(ValueError, match="out must have shape"):
        hdc.hamming_matrix(X, X, out=np.empty((4, 3), np.int32))
    with pytest.raises(ValueError, match="writeable"):
        o = np.empty((4, 4), np.int32)
        o.flags.writeable = False
        hdc.hamming_matrix(X, X, out=o)


def test_topk_k_errors():
    with pytest.raises(ValueError, match="larger than the database"):
        hdc.topk(X, X, 5)
    with pytest.raises(ValueError, match="k must be >= 1"):
        hdc.topk(X, X, 0)
    with pytest.raises(TypeError, match="k must be an int"):
        hdc.topk(X, X, 2.0)


@pytest.mark.parametrize("shift", [1.0, "3", None, True, np.float32(2)])
def test_shift_wrong_type(shift):
    with pytest.raises(TypeError, match="shift must be an int"):
        hdc.permute(X, shift, DIM)


def test_bipolar_values():
    with pytest.raises(ValueError, match=r"\+1 or -1"):
        hdc.from_bipolar(np.array([1, 0, -1]))


def test_unknown_backend_and_threads():
    with pytest.raises(ValueError, match="unknown backend"):
        hdc.set_backend("cuda-magic")
    with pytest.raises(ValueError, match="threads"):
        hdc.hamming_matrix(X, X, threads=0)
    with pytest.raises(ValueError, match="positive int"):
        hdc.set_num_threads(-1)


def test_accumulator_errors():
    acc = hdc.BundleAccumulator(DIM)
    with pytest.raises(ValueError, match="empty"):
        acc.result()
    with pytest.raises(ValueError, match="dims 100 and 200"):
        acc.merge(hdc.BundleAccumulator(200))
    with pytest.raises(ValueError, match="weights must have shape"):
        acc.add(X, weights=[1, 2])
    with pytest.raises(ValueError, match="finite"):
        acc.add(X, weights=[1.0, np.nan, 1.0, 1.0])


def test_item_memory_errors():
    im = hdc.ItemMemory(DIM, seed=0)
    with pytest.raises(ValueError, match="empty ItemMemory"):
        im.cleanup(X[0])
    im.add("a")
    with pytest.raises(KeyError, match="unknown symbol 'zz'"):
        im["zz"]
    with pytest.raises(ValueError, match="already stored"):
        im.add("a", X[0])
