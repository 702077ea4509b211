"""Exact bipolar dot products of packed queries with integer counters, through bit-planes.

Integer class counters are split into bit-planes, each a packed vector, so a query's dot
product with a class is ``sum_p 2**p * popcount(query AND plane_p)`` (plus an offset term),
computed from the backend's ``hamming_matrix`` and ``popcount``. Prediction
(:mod:`hdc.classifiers`) and packed retraining (:mod:`hdc._train`) share these functions, so
training sees the very scores prediction computes.
"""
from __future__ import annotations

import numpy as np

from . import functional as F
from .packing import n_words_for, pack_bits

__all__ = ["counter_planes", "planes_dot", "cosine_scores"]

_QUERY_CHUNK = 4096  # queries scored per hamming_matrix call: bounds the (m, K*B) scratch


def counter_planes(C: np.ndarray, dim: int):
    """Split integer counters into packed bit-planes of ``C - offset`` (offset = row minimum).

    Shapes: C (K, dim) int -> planes (K, B, W) uint64, offsets (K,) int64, with
    ``C[k, j] = offsets[k] + sum_p 2**p * bit j of planes[k, p]``.
    """
    C = np.asarray(C, np.int64)
    offsets = C.min(axis=1)
    U = C - offsets[:, None]  # (K, dim) >= 0
    n_planes = max(1, int(U.max()).bit_length())
    if n_planes > 52:
        raise ValueError(f"class counters need {n_planes} bit-planes; scores would overflow int64 "
                         f"(quantize the counters, e.g. bits=16)")
    planes = np.empty((C.shape[0], n_planes, n_words_for(dim)), np.uint64)
    for p in range(n_planes):
        planes[:, p] = pack_bits(((U >> p) & 1).astype(bool))
    return planes, offsets


def planes_dot(Q: np.ndarray, planes: np.ndarray, offsets: np.ndarray, sums: np.ndarray) -> np.ndarray:
    """Exact bipolar dot products of packed queries with integer class counters.

    With bit 1 <-> -1: ``dot(q, C_k) = sum_j C_kj - 2 * sum_{j: q_j=1} C_kj``, and
    ``sum_{j: q_j=1} C_kj = offsets[k] * popcount(q) + sum_p 2**p * popcount(q & plane_kp)``
    where ``popcount(q & x) = (popcount(q) + popcount(x) - hamming(q, x)) / 2``.

    Shapes: Q (m, W), planes (K, B, W), offsets (K,), sums (K,) = C.sum(1) -> (m, K) int64.
    """
    K, B, W = planes.shape
    flat = planes.reshape(K * B, W)
    pc_planes = F.popcount(flat)  # (K*B,)
    weights = np.left_shift(np.int64(1), np.arange(B, dtype=np.int64))  # (B,)
    out = np.empty((Q.shape[0], K), np.int64)
    H = None
    for s in range(0, Q.shape[0], _QUERY_CHUNK):
        q = Q[s:s + _QUERY_CHUNK]
        if H is None or H.shape[0] != q.shape[0]:
            H = np.empty((q.shape[0], K * B), np.int32)
        F.hamming_matrix(q, flat, out=H)
        pc_q = F.popcount(q)  # (m,)
        both = (pc_q[:, None] + pc_planes[None, :] - H) >> 1  # (m, K*B) popcount(q & plane)
        masked = both.reshape(-1, K, B) @ weights  # (m, K)
        masked += offsets[None, :] * pc_q[:, None]
        out[s:s + q.shape[0]] = sums[None, :] - 2 * masked
    return out


def cosine_scores(dots: np.ndarray, norms: np.ndarray, dim: int) -> np.ndarray:
    """Cosine of bipolar queries (norm sqrt(dim)) with classes of the given norms; 0 for a zero class."""
    with np.errstate(divide="ignore", invalid="ignore"):
        s = dots / (norms[None, :] * np.sqrt(dim))
    return np.where(norms[None, :] > 0, s, 0.0)
