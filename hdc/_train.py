"""One perceptron epoch over stored packed vectors, three ways that must agree exactly.

``perceptron_epoch_packed`` is what :class:`hdc.classifiers.RetrainClassifier` runs: integer
counters, packed queries, the dot products from the bit-plane scores that prediction uses
(:func:`hdc._planes.planes_dot`, i.e. the backend's ``hamming_matrix``/``popcount``).
``perceptron_epoch`` (Numba, unpacked float64 dot products) is the previous implementation and
the one OnlineHD-weighted updates still use; ``perceptron_epoch_ref`` is the plain NumPy
definition. For integer updates all three make the same mistakes in the same order and leave
the same counters, norms and averaging sums (tests/test_packed_training.py).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from . import functional as F
from ._planes import counter_planes, planes_dot
from .packing import unpack_bits

__all__ = ["perceptron_epoch", "perceptron_epoch_ref", "perceptron_epoch_packed"]


@njit(cache=True, nogil=True)
def _unpack_bipolar(x, dim, buf):
    """buf[j] = +1.0 where bit j of x is 0, -1.0 where it is 1 (the bipolar view)."""
    W = x.shape[0]
    for w in range(W):
        word = x[w]
        base = w * 64
        top = min(64, dim - base)
        for b in range(top):
            buf[base + b] = 1.0 - 2.0 * np.float64((word >> np.uint64(b)) & np.uint64(1))


# fastmath lets the dot products vectorise; with integer updates every sum is an exact
# integer (< 2**53), so the order of additions cannot change the result.
@njit(cache=True, nogil=True, fastmath=True)
def _perceptron_epoch(X, y, order, dim, C, norm2, U, step, mode, lr, normalize):
    """One pass over X in ``order``; updates C (K, dim) float64, norm2 (K,), U (K, dim) in place.

    mode 0: perceptron (on a mistake, C[y] += x, C[pred] -= x); mode 1: OnlineHD-style
    (the same, weighted by lr * (1 - cos)). U accumulates step * delta for averaging.
    Returns (mistakes, step).
    """
    K = C.shape[0]
    buf = np.empty(dim, np.float64)
    dots = np.empty(K, np.float64)
    mistakes = 0
    for i in order:
        step += 1
        _unpack_bipolar(X[i], dim, buf)
        for k in range(K):
            acc = 0.0
            for j in range(dim):
                acc += buf[j] * C[k, j]
            dots[k] = acc
        best = 0
        best_s = -1.0e308  # not -inf: fastmath assumes finite values
        for k in range(K):
            if normalize:
                s = dots[k] / np.sqrt(norm2[k]) if norm2[k] > 0 else 0.0
            else:
                s = dots[k]
            if s > best_s:
                best_s = s
                best = k
        t = y[i]
        if best == t:
            continue
        mistakes += 1
        if mode == 0:
            a_t = 1.0
            a_p = 1.0
        else:
            ct = dots[t] / np.sqrt(norm2[t] * dim) if norm2[t] > 0 else 0.0
            cp = dots[best] / np.sqrt(norm2[best] * dim) if norm2[best] > 0 else 0.0
            a_t = lr * (1.0 - ct)
            a_p = lr * (1.0 - cp)
        # |C + a x|^2 = |C|^2 + 2 a (x . C) + a^2 dim, since x is bipolar
        norm2[t] += 2.0 * a_t * dots[t] + a_t * a_t * dim
        norm2[best] += -2.0 * a_p * dots[best] + a_p * a_p * dim
        st = a_t * step
        sp = a_p * step
        for j in range(dim):
            v = buf[j]
            C[t, j] += a_t * v
            C[best, j] -= a_p * v
            U[t, j] += st * v
            U[best, j] -= sp * v
    return mistakes, step


def perceptron_epoch(X, y, order, dim, C, norm2, U, step, *, mode=0, lr=1.0, normalize=True):
    """Run one epoch of the compiled perceptron; see :func:`_perceptron_epoch`."""
    return _perceptron_epoch(X, y.astype(np.int64), order.astype(np.int64), dim, C, norm2, U,
                             np.int64(step), np.int64(mode), float(lr), bool(normalize))


def perceptron_epoch_ref(X, y, order, dim, C, norm2, U, step, *, mode=0, lr=1.0, normalize=True):
    """Plain NumPy definition of one perceptron epoch (same updates, same order)."""
    mistakes = 0
    bip = 1.0 - 2.0 * unpack_bits(X, dim).astype(np.float64)
    for i in order:
        step += 1
        x = bip[i]
        dots = C @ x
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.where(norm2 > 0, dots / np.sqrt(norm2), 0.0) if normalize else dots
        best = int(np.argmax(s))
        t = int(y[i])
        if best == t:
            continue
        mistakes += 1
        if mode == 0:
            a_t = a_p = 1.0
        else:
            ct = dots[t] / np.sqrt(norm2[t] * dim) if norm2[t] > 0 else 0.0
            cp = dots[best] / np.sqrt(norm2[best] * dim) if norm2[best] > 0 else 0.0
            a_t, a_p = lr * (1 - ct), lr * (1 - cp)
        norm2[t] += 2 * a_t * dots[t] + a_t * a_t * dim
        norm2[best] += -2 * a_p * dots[best] + a_p * a_p * dim
        C[t] += a_t * x
        C[best] -= a_p * x
        U[t] += a_t * step * x
        U[best] -= a_p * step * x
    return mistakes, step


# ---------------------------------------------------------------- packed, integer, exact
# The perceptron is sequential: each sample is scored against the counters as left by every
# earlier update. To score a block of B samples with one call of the bit-plane kernels, the
# block is scored against the counters at its start, D = planes_dot(X_block, C), and the scan
# then adds what the updates made inside the block contribute: an update C[t] += x_j changes
# a later sample i's dot product with class t by dot(x_i, x_j) = dim - 2 * hamming(x_i, x_j).
# Those are computed when a mistake happens, for the rows after it only (one hamming_matrix
# call of one row against the rest of the block), so their cost follows the mistakes, not B^2.
# Every quantity is an integer, so the scan reproduces the one-sample-at-a-time result exactly.
@njit(cache=True, nogil=True)
def _scan_to_mistake(D, corr, y, norm2, start, step, dim):
    """Walk the block from row ``start`` until a mistake; D (B, K) int64 dots at the block start,
    corr (B, K) int64 what earlier in-block updates add to them. On a mistake at row i (true class
    t, predicted p) updates norm2 (K,) float64 (exact integers, as the float path keeps them).
    Returns (i, t, p, step), with i = B if the block ended without one.

    No fastmath here: the score ``dot / sqrt(norm2)`` must round exactly as NumPy (and the float
    path) round it, so ties and near-ties break the same way.
    """
    B, K = D.shape
    for i in range(start, B):
        step += 1
        best = 0
        best_s = -1.0e308
        for k in range(K):
            if norm2[k] > 0:
                s = np.float64(D[i, k] + corr[i, k]) / np.sqrt(norm2[k])
            else:
                s = 0.0
            if s > best_s:
                best_s = s
                best = k
        t = y[i]
        if best == t:
            continue
        # |C + x|^2 = |C|^2 + 2 (x . C) + dim for a bipolar x
        norm2[t] += 2.0 * np.float64(D[i, t] + corr[i, t]) + dim
        norm2[best] += -2.0 * np.float64(D[i, best] + corr[i, best]) + dim
        return i, t, best, step
    return B, -1, -1, step


@njit(cache=True, nogil=True)
def _apply_updates(Xb, miss_row, miss_t, miss_p, miss_step, m, dim, C, U):
    """The block's mistakes, in integers: C[t] += x, C[p] -= x, U[t] += step x, U[p] -= step x
    for each mistaken row x (bipolar: +1 for a 0 bit, -1 for a 1 bit), read from its packed words."""
    W = Xb.shape[1]
    for r in range(m):
        x = Xb[miss_row[r]]
        t = miss_t[r]
        p = miss_p[r]
        st = miss_step[r]
        for w in range(W):
            word = x[w]
            base = w * 64
            top = min(64, dim - base)
            for b in range(top):
                v = 1 - 2 * np.int64((word >> np.uint64(b)) & np.uint64(1))
                j = base + b
                C[t, j] += v
                C[p, j] -= v
                U[t, j] += st * v
                U[p, j] -= st * v


def perceptron_epoch_packed(X, y, order, dim, C, norm2, U, step, *, block=512):
    """One perceptron epoch (mode 0: on a mistake ``C[y] += x``, ``C[pred] -= x``) on packed words.

    X (n, W) uint64 packed queries; C (K, dim) int64 counters, norm2 (K,) float64 (their squared
    norms, exact integers), U (K, dim) int64 (``sum step * delta``, for averaging) are updated in
    place. Scores are ``dot / sqrt(norm2)`` (cosine up to the query norm), ties to the first class.
    Returns (mistakes, step), as :func:`perceptron_epoch` does for the same inputs.
    """
    K = C.shape[0]
    y = np.asarray(y, np.int64)
    order = np.asarray(order, np.int64)
    miss_row = np.empty(block, np.int64)
    miss_t = np.empty(block, np.int64)
    miss_p = np.empty(block, np.int64)
    miss_step = np.empty(block, np.int64)
    mistakes = 0
    step = np.int64(step)
    for s in range(0, order.size, block):
        idx = order[s:s + block]
        Xb = np.ascontiguousarray(X[idx])
        yb = y[idx]
        B = idx.size
        planes, offsets = counter_planes(C, dim)
        D = planes_dot(Xb, planes, offsets, C.sum(axis=1))
        corr = np.zeros((B, K), np.int64)
        m = 0
        i = 0
        while True:
            i, t, p, step = _scan_to_mistake(D, corr, yb, norm2, i, step, dim)
            if i >= B:
                break
            miss_row[m], miss_t[m], miss_p[m], miss_step[m] = i, t, p, step
            m += 1
            i += 1
            if i < B:  # what this update adds to the later rows' dot products
                # one row against at most a block: too little work to share between threads
                g = dim - 2 * F.hamming_matrix(Xb[i - 1:i], Xb[i:], threads=1)[0].astype(np.int64)
                corr[i:, t] += g
                corr[i:, p] -= g
        if m:
            _apply_updates(Xb, miss_row, miss_t, miss_p, miss_step, m, dim, C, U)
            mistakes += m
    return mistakes, int(step)
