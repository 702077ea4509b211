"""The NumPy reference backend: the living definition of every kernel.

Deliberately plain: each kernel is the obvious composition it stands for, and
every fast path (Numba, C at each ISA level, torch) is tested against it bit for
bit. ``threads`` is accepted for protocol compatibility and ignored.
"""
from __future__ import annotations

import numpy as np

from ..packing import pack_bits, unpack_bits

NAME = "numpy"


def bind(a, b, out, threads=1):
    np.bitwise_xor(a, b, out=out)


def popcount(x, out, threads=1):
    out[...] = np.bitwise_count(x).sum(axis=-1, dtype=np.int64)


def hamming_rows(a, b, out, threads=1):
    """``popcount(a ^ b)`` per row."""
    out[...] = np.bitwise_count(a ^ b).sum(axis=-1, dtype=np.int64)


def hamming_matrix(q, x, out, threads=1):
    """``out[i, j] = popcount(q[i] ^ x[j])``, one query row at a time."""
    for i in range(q.shape[0]):
        out[i] = np.bitwise_count(q[i] ^ x).sum(axis=-1, dtype=np.int64)


def topk(q, x, k, out_dist, out_idx, threads=1):
    """The k smallest distances of each query row, ties broken by lower index (stable sort)."""
    for i in range(q.shape[0]):
        d = np.bitwise_count(q[i] ^ x).sum(axis=-1, dtype=np.int64)
        order = np.argsort(d, kind="stable")[:k]
        out_idx[i] = order
        out_dist[i] = d[order]


def permute(x, shift, dim, out, threads=1):
    """Cyclic rotation of the ``dim`` valid bits: bit j moves to bit (j + shift) % dim."""
    out[...] = pack_bits(np.roll(unpack_bits(x, dim), shift, axis=-1))


def bit_counts(x, dim, counts, threads=1):
    """``counts[j] += number of rows with bit j set``."""
    counts += unpack_bits(x, dim).sum(axis=0, dtype=np.int64)


def bundle_majority(x, dim, tie, out, threads=1):
    """Bitwise majority of the rows of x; where exactly half the rows are set, take ``tie``."""
    n = x.shape[0]
    counts = np.zeros(dim, np.int64)
    bit_counts(x, dim, counts)
    tie_bits = unpack_bits(tie, dim)
    out[...] = pack_bits((2 * counts > n) | ((2 * counts == n) & tie_bits))


def causal_topk(q, x, k, q_start, window, skip_recent, overlap, out_score, out_idx, threads=1):
    """For query i at position p = q_start + i: the k best keys j in [lo, p - skip_recent],
    lo = max(0, p - window + 1) (0 when window is None), by score, ties to the larger j.

    Score: ``popcount(q ^ x)`` (smaller is better) or, with ``overlap``, ``popcount(q & x)``
    (larger is better). Rows with fewer than k allowed keys end in (score, idx) = (-1, -1).
    """
    out_score.fill(-1)
    out_idx.fill(-1)
    for i in range(q.shape[0]):
        p = q_start + i
        lo = 0 if window is None else max(0, p - window + 1)
        hi = p - skip_recent
        if hi < lo:
            continue
        j = np.arange(lo, hi + 1)
        keys = x[lo:hi + 1]
        if overlap:
            s = np.bitwise_count(q[i] & keys).sum(axis=-1, dtype=np.int64)
            order = np.lexsort((-j, -s))[:k]  # score descending, then the larger j first
        else:
            s = np.bitwise_count(q[i] ^ keys).sum(axis=-1, dtype=np.int64)
            order = np.lexsort((-j, s))[:k]  # distance ascending, then the larger j first
        out_score[i, :order.size] = s[order]
        out_idx[i, :order.size] = j[order]
