"""Compiled kernels for retraining HDC classifiers (Numba): one perceptron epoch over stored
packed vectors. ``perceptron_epoch_ref`` is the plain NumPy definition the tests compare with.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .packing import unpack_bits

__all__ = ["perceptron_epoch", "perceptron_epoch_ref"]


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
