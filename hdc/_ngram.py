"""Compiled kernels of the n-gram text encoder and per-sample bit counters (Numba).

An n-gram of symbols c_1..c_n is ``permute(c_1, n-1) ^ permute(c_2, n-2) ^ ... ^ c_n`` (XOR
bind of rotated item vectors). The kernels take ``table[p, s] = permute(item[s], n-1-p)``,
so one n-gram costs n row loads and XORs. Counting is bit-sliced: per word, bit plane p of
a counter holds bit p of 64 lanes' counts, and grams are added four at a time through a
carry-save adder tree (Harley-Seal), which costs a few word operations per gram instead of
64 increments. The plain NumPy versions (``*_ref``) define what the kernels must return and
the tests compare them bit for bit.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .functional import permute
from .packing import n_words_for, pack_bits, unpack_bits

__all__ = ["gram_table", "ngram_majority", "ngram_counts", "record_majority", "ngram_majority_ref",
           "ngram_counts_ref", "record_majority_ref", "distinct_gram_counts", "weighted_gram_counts"]


def gram_table(items: np.ndarray, n: int, dim: int) -> np.ndarray:
    """``table[p, s] = permute(items[s], n - 1 - p, dim)``. Shapes: (S, W) -> (n, S, W)."""
    return np.ascontiguousarray(np.stack([permute(items, n - 1 - p, dim) for p in range(n)]))


# ---------------------------------------------------------------- compiled kernels
@njit(cache=True, nogil=True, inline="always")
def _gram(codes, pos, m, table, buf):
    """buf = XOR of table[n-m+p, codes[pos+p]] for p < m (m < n only for texts shorter than n)."""
    n = table.shape[0]
    W = table.shape[2]
    r0 = n - m
    s = codes[pos]
    for w in range(W):
        buf[w] = table[r0, s, w]
    for p in range(1, m):
        s = codes[pos + p]
        for w in range(W):
            buf[w] ^= table[r0 + p, s, w]


@njit(cache=True, nogil=True, inline="always")
def _csa4(planes, g1, g2, g3, g4):
    """Add four words per lane into bit-sliced ``planes`` (P, W); g1, g2 are clobbered."""
    W = planes.shape[1]
    P = planes.shape[0]
    for w in range(W):
        # two carry-save adders into the ones plane, one into the twos plane
        o = planes[0, w]
        a = g1[w]
        b = g2[w]
        u = o ^ a
        ca = (o & a) | (u & b)
        o = u ^ b
        a = g3[w]
        b = g4[w]
        u = o ^ a
        cb = (o & a) | (u & b)
        planes[0, w] = u ^ b
        g1[w] = ca
        g2[w] = cb
    if P > 1:
        for w in range(W):
            t = planes[1, w]
            ca = g1[w]
            cb = g2[w]
            u = t ^ ca
            g1[w] = (t & ca) | (u & cb)
            planes[1, w] = u ^ cb
        # ripple the fours carry up; plane-major loops so each pass vectorises over words
        for p in range(2, P):
            for w in range(W):
                t = planes[p, w]
                c = g1[w]
                planes[p, w] = t ^ c
                g1[w] = t & c


@njit(cache=True, nogil=True, inline="always")
def _add_one(planes, g, n_planes):
    """Add one vector g into the bit-sliced counters: a ripple-carry add across the planes."""
    for w in range(g.shape[0]):
        carry = g[w]
        for p in range(n_planes):
            t = planes[p, w]
            planes[p, w] = t ^ carry
            carry = t & carry


@njit(cache=True, nogil=True)
def _add_grams(codes, start, n_grams, table, planes, g1, g2, g3, g4):
    """Add the n-grams starting at codes[start : start + n_grams] into bit-sliced ``planes``.

    planes (P, W) must be able to hold the final counts (2**P > count); carries out of the
    top plane are dropped.
    """
    n = table.shape[0]
    P = planes.shape[0]
    i = 0
    while i + 4 <= n_grams:
        _gram(codes, start + i, n, table, g1)
        _gram(codes, start + i + 1, n, table, g2)
        _gram(codes, start + i + 2, n, table, g3)
        _gram(codes, start + i + 3, n, table, g4)
        _csa4(planes, g1, g2, g3, g4)
        i += 4
    while i < n_grams:
        _gram(codes, start + i, n, table, g1)
        _add_one(planes, g1, P)
        i += 1


@njit(cache=True, nogil=True)
def _bit_length(x):
    b = 0
    while x > 0:
        b += 1
        x >>= 1
    return b


@njit(cache=True, nogil=True, inline="always")
def _majority_row(planes, T, even, tie, out):
    """out = lanes whose bit-sliced count exceeds T, plus tie bits where count == T and even."""
    P = planes.shape[0]
    W = planes.shape[1]
    # bit-sliced comparison of each lane's count with T, from the top plane down
    for w in range(W):
        gt = np.uint64(0)
        eq = ~np.uint64(0)
        for p in range(P - 1, -1, -1):
            b = planes[p, w]
            if (T >> p) & 1:
                eq &= b
            else:
                gt |= eq & b
                eq &= ~b
        if even:
            gt |= eq & tie[w]
        out[w] = gt


@njit(parallel=True, cache=True, nogil=True)
def _ngram_majority(codes, offsets, table, tie, out):
    n = table.shape[0]
    W = table.shape[2]
    for t in prange(out.shape[0]):
        start = offsets[t]
        length = offsets[t + 1] - start
        g1 = np.empty(W, np.uint64)
        g2 = np.empty(W, np.uint64)
        g3 = np.empty(W, np.uint64)
        g4 = np.empty(W, np.uint64)
        if length < n:  # one shorter gram: the text itself
            _gram(codes, start, length, table, g1)
            for w in range(W):
                out[t, w] = g1[w]
            continue
        G = length - n + 1
        P = _bit_length(G)
        planes = np.zeros((P, W), np.uint64)
        _add_grams(codes, start, G, table, planes, g1, g2, g3, g4)
        _majority_row(planes, G // 2, G % 2 == 0, tie, out[t])


@njit(cache=True, nogil=True)
def _flush(planes, counts, dim):
    """counts[j] += (bit-sliced count of lane j); clears the planes (:func:`_flush_weighted`, shift 0)."""
    _flush_weighted(planes, counts, dim, 0)


_FLUSH_PLANES = 12  # a group's running counter holds up to 4,095 grams before it is flushed


@njit(parallel=True, cache=True, nogil=True)
def _ngram_counts(codes, offsets, table, group_starts, order, dim, counts, totals):
    """counts[g, j] += #grams with bit j set over the texts order[group_starts[g]:group_starts[g+1]]."""
    n = table.shape[0]
    W = table.shape[2]
    limit = (1 << _FLUSH_PLANES) - 1
    for g in prange(counts.shape[0]):
        planes = np.zeros((_FLUSH_PLANES, W), np.uint64)
        g1 = np.empty(W, np.uint64)
        g2 = np.empty(W, np.uint64)
        g3 = np.empty(W, np.uint64)
        g4 = np.empty(W, np.uint64)
        running = 0
        total = 0
        for k in range(group_starts[g], group_starts[g + 1]):
            t = order[k]
            start = offsets[t]
            length = offsets[t + 1] - start
            if length < n:
                if running + 1 > limit:
                    _flush(planes, counts[g], dim)
                    running = 0
                _gram(codes, start, length, table, g1)
                _add_one(planes, g1, _FLUSH_PLANES)
                running += 1
                total += 1
                continue
            G = length - n + 1
            done = 0
            while done < G:
                take = min(G - done, limit - running)
                if take == 0:
                    _flush(planes, counts[g], dim)
                    running = 0
                    continue
                _add_grams(codes, start + done, take, table, planes, g1, g2, g3, g4)
                running += take
                done += take
            total += G
        _flush(planes, counts[g], dim)
        totals[g] += total


# ---------------------------------------------------------------- public wrappers
def _check(codes, offsets, table):
    if codes.dtype != np.int32 or offsets.dtype != np.int64 or table.dtype != np.uint64:
        raise TypeError("codes must be int32, offsets int64, table uint64")
    if offsets.ndim != 1 or offsets.size < 1 or offsets[0] != 0 or offsets[-1] != codes.size:
        raise ValueError("offsets must start at 0 and end at len(codes)")
    if np.any(np.diff(offsets) < 1):
        raise ValueError("every text needs at least one symbol (empty text)")
    if codes.size and (codes.min() < 0 or codes.max() >= table.shape[1]):
        raise ValueError("symbol code out of range of the item table")


def ngram_majority(codes, offsets, table, tie, dim):
    """Bitwise majority of each text's n-grams (ties take ``tie``); texts shorter than n
    give their single shorter gram.

    Shapes: codes (N,) int32, offsets (T+1,) int64, table (n, S, W), tie (W,) -> (T, W) uint64.
    """
    _check(codes, offsets, table)
    out = np.empty((offsets.size - 1, n_words_for(dim)), np.uint64)
    if out.shape[0]:
        _ngram_majority(codes, offsets, table, tie, out)
    return out


def ngram_counts(codes, offsets, table, groups, n_groups, dim):
    """Per group: how many of its texts' n-grams set each bit, and how many grams it has.

    Shapes: groups (T,) int64 in [0, n_groups) -> counts (n_groups, dim) int64, totals (n_groups,) int64.
    """
    _check(codes, offsets, table)
    groups = np.asarray(groups, np.int64)
    if groups.shape != (offsets.size - 1,):
        raise ValueError(f"groups must have one entry per text ({offsets.size - 1}), got {groups.shape}")
    order = np.argsort(groups, kind="stable").astype(np.int64)
    group_starts = np.searchsorted(groups[order], np.arange(n_groups + 1)).astype(np.int64)
    counts = np.zeros((n_groups, dim), np.int64)
    totals = np.zeros(n_groups, np.int64)
    _ngram_counts(codes, offsets, table, group_starts, order, dim, counts, totals)
    return counts, totals


# ---------------------------------------------------------------- NumPy references
def _grams_ref(codes, table, dim):
    """All n-grams of one text as bools (G, dim), built from the table by plain XOR."""
    n = table.shape[0]
    L = len(codes)
    if L < n:
        g = np.bitwise_xor.reduce(table[n - L + np.arange(L), codes], axis=0)[None]
    else:
        G = L - n + 1
        g = table[0, codes[:G]].copy()
        for p in range(1, n):
            g ^= table[p, codes[p:p + G]]
    return unpack_bits(g, dim)


def ngram_majority_ref(codes, offsets, table, tie, dim):
    """NumPy reference of :func:`ngram_majority`."""
    tie_bits = unpack_bits(tie, dim)
    out = []
    for t in range(offsets.size - 1):
        bits = _grams_ref(codes[offsets[t]:offsets[t + 1]], table, dim)
        c = bits.sum(0, dtype=np.int64)
        G = bits.shape[0]
        out.append((2 * c > G) | ((2 * c == G) & tie_bits))
    return pack_bits(np.array(out).reshape(-1, dim))


def ngram_counts_ref(codes, offsets, table, groups, n_groups, dim):
    """NumPy reference of :func:`ngram_counts`."""
    counts = np.zeros((n_groups, dim), np.int64)
    totals = np.zeros(n_groups, np.int64)
    for t in range(offsets.size - 1):
        bits = _grams_ref(codes[offsets[t]:offsets[t + 1]], table, dim)
        counts[groups[t]] += bits.sum(0, dtype=np.int64)
        totals[groups[t]] += bits.shape[0]
    return counts, totals


# ---------------------------------------------------------------- records: bundle of key ^ level
@njit(cache=True, nogil=True, inline="always")
def _pair(keys, levels, f, lv, buf):
    W = keys.shape[1]
    for w in range(W):
        buf[w] = keys[f, w] ^ levels[lv, w]


@njit(parallel=True, cache=True, nogil=True)
def _record_majority(keys, levels, idx, tie, out):
    """out[i] = majority over fields f of keys[f] ^ levels[idx[i, f]] (ties take ``tie``)."""
    F = keys.shape[0]
    W = keys.shape[1]
    P = _bit_length(F)
    T = F // 2
    even = F % 2 == 0
    for i in prange(idx.shape[0]):
        planes = np.zeros((P, W), np.uint64)
        g1 = np.empty(W, np.uint64)
        g2 = np.empty(W, np.uint64)
        g3 = np.empty(W, np.uint64)
        g4 = np.empty(W, np.uint64)
        f = 0
        while f + 4 <= F:
            _pair(keys, levels, f, idx[i, f], g1)
            _pair(keys, levels, f + 1, idx[i, f + 1], g2)
            _pair(keys, levels, f + 2, idx[i, f + 2], g3)
            _pair(keys, levels, f + 3, idx[i, f + 3], g4)
            _csa4(planes, g1, g2, g3, g4)
            f += 4
        while f < F:
            _pair(keys, levels, f, idx[i, f], g1)
            _add_one(planes, g1, P)
            f += 1
        _majority_row(planes, T, even, tie, out[i])


def record_majority(keys, levels, idx, tie):
    """Bundle (majority) of ``keys[f] ^ levels[idx[i, f]]`` over f, per sample i.

    Shapes: keys (F, W), levels (L, W), idx (n, F) int32, tie (W,) -> (n, W) uint64.
    """
    idx = np.ascontiguousarray(idx, np.int32)
    if idx.ndim != 2 or idx.shape[1] != keys.shape[0]:
        raise ValueError(f"idx must have shape (n, {keys.shape[0]}), got {idx.shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= levels.shape[0]):
        raise ValueError("level index out of range")
    out = np.empty((idx.shape[0], keys.shape[1]), np.uint64)
    if out.shape[0]:
        _record_majority(keys, levels, idx, tie, out)
    return out


def record_majority_ref(keys, levels, idx, tie, dim):
    """NumPy reference of :func:`record_majority`."""
    tie_bits = unpack_bits(tie, dim)
    F = keys.shape[0]
    out = []
    for i in range(idx.shape[0]):
        c = unpack_bits(keys ^ levels[idx[i]], dim).sum(0, dtype=np.int64)
        out.append((2 * c > F) | ((2 * c == F) & tie_bits))
    return pack_bits(np.array(out).reshape(-1, dim))


# ---------------------------------------------------------------- counting distinct n-grams first
# A language's training text has tens of millions of n-grams but only tens of thousands of
# distinct ones (Zipf). Counting each distinct gram's occurrences first (an integer histogram
# over gram ids) and then adding each distinct gram's vector once per set bit of its count
# (weight c = sum_b 2**b c_b) gives the same per-bit counts with ~15x fewer vector additions on
# the language-recognition data; it also lets the counts be reweighted (e.g. sublinearly, as tf
# weighting does in text retrieval) before any vector is built.
@njit(cache=True, nogil=True)
def _gram_id_hist(codes, offsets, groups, n, S, hist):
    """hist[g, id] += 1 for every full n-gram (id = sum_p codes[pos+p] * S**(n-1-p)) of the texts of
    group g; texts shorter than n are left out (the caller counts their one shorter gram)."""
    for t in range(offsets.size - 1):
        start = offsets[t]
        end = offsets[t + 1]
        if end - start < n:
            continue
        g = groups[t]
        top = 1
        for _ in range(n - 1):
            top *= S
        gid = 0
        for p in range(n - 1):
            gid = gid * S + codes[start + p]
        for pos in range(start + n - 1, end):
            gid = gid * S + codes[pos]
            hist[g, gid] += 1
            gid -= codes[pos - n + 1] * top


@njit(cache=True, nogil=True, inline="always")
def _gram_of(sym, table, buf):
    """buf = XOR of table[p, sym[p]]: one full n-gram from its n symbol codes."""
    n = table.shape[0]
    W = table.shape[2]
    s = sym[0]
    for w in range(W):
        buf[w] = table[0, s, w]
    for p in range(1, n):
        s = sym[p]
        for w in range(W):
            buf[w] ^= table[p, s, w]


@njit(cache=True, nogil=True)
def _flush_weighted(planes, counts, dim, shift):
    """counts[j] += (bit-sliced count of lane j) << shift; clears the planes."""
    P, W = planes.shape
    for p in range(P):
        for w in range(W):
            x = planes[p, w]
            if x == 0:
                continue
            base = w * 64
            top = min(64, dim - base)
            for b in range(top):
                counts[base + b] += np.int64((x >> np.uint64(b)) & np.uint64(1)) << (p + shift)
            planes[p, w] = 0


@njit(parallel=True, cache=True, nogil=True)
def _weighted_gram_counts(sym, weights, group_starts, table, dim, counts):
    """counts[g, j] += sum over the entries e of group g of weights[e] * bit j of gram(sym[e])."""
    W = table.shape[2]
    limit = (1 << _FLUSH_PLANES) - 1
    for g in prange(counts.shape[0]):
        planes = np.zeros((_FLUSH_PLANES, W), np.uint64)
        g1 = np.empty(W, np.uint64)
        g2 = np.empty(W, np.uint64)
        g3 = np.empty(W, np.uint64)
        g4 = np.empty(W, np.uint64)
        lo = group_starts[g]
        hi = group_starts[g + 1]
        top = np.int64(0)
        for e in range(lo, hi):
            top = max(top, weights[e])
        b = 0
        while (top >> b) > 0:
            running = 0
            pend = 0  # grams waiting in g1..g3 for a full group of four
            for e in range(lo, hi):
                if not (weights[e] >> b) & 1:
                    continue
                if running + 4 > limit:
                    _flush_weighted(planes, counts[g], dim, b)
                    running = 0
                if pend == 0:
                    _gram_of(sym[e], table, g1)
                elif pend == 1:
                    _gram_of(sym[e], table, g2)
                elif pend == 2:
                    _gram_of(sym[e], table, g3)
                else:
                    _gram_of(sym[e], table, g4)
                    _csa4(planes, g1, g2, g3, g4)
                    running += 4
                    pend = -1
                pend += 1
            for q in range(pend):
                if q == 0:
                    _add_one(planes, g1, _FLUSH_PLANES)
                elif q == 1:
                    _add_one(planes, g2, _FLUSH_PLANES)
                else:
                    _add_one(planes, g3, _FLUSH_PLANES)
            _flush_weighted(planes, counts[g], dim, b)
            b += 1


@njit(cache=True, nogil=True)
def _gram_keys(codes, offsets, groups, n, S, keys):
    """keys[i] = group * S**n + id of the i-th full n-gram (texts in order); returns how many."""
    top = 1
    for _ in range(n - 1):
        top *= S
    span = top * S
    i = 0
    for t in range(offsets.size - 1):
        start = offsets[t]
        end = offsets[t + 1]
        if end - start < n:
            continue
        base = groups[t] * span
        gid = 0
        for p in range(n - 1):
            gid = gid * S + codes[start + p]
        for pos in range(start + n - 1, end):
            gid = gid * S + codes[pos]
            keys[i] = base + gid
            i += 1
            gid -= codes[pos - n + 1] * top
    return i


_MAX_HIST_CELLS = 1 << 27  # groups x S**n histogram cells (int32: 512 MiB); past it, sort the keys


def distinct_gram_counts(codes, offsets, groups, n_groups, n, n_symbols):
    """How often each distinct full n-gram occurs in each group's texts.

    Returns (group (E,) int64, sym (E, n) int32 symbol codes, count (E,) int64), sorted by group.
    A dense histogram counts them when ``n_groups * n_symbols**n`` cells fit, else the gram keys
    are sorted (``np.unique``). Texts shorter than n are not included.
    """
    groups = np.asarray(groups, np.int64)
    span = n_symbols ** n
    if n_groups * span <= _MAX_HIST_CELLS:
        hist = np.zeros((n_groups, span), np.int32)
        _gram_id_hist(codes, offsets, groups, n, n_symbols, hist)
        g, gid = np.nonzero(hist)
        count = hist[g, gid].astype(np.int64)
        g = g.astype(np.int64)
        gid = gid.astype(np.int64)
    else:
        if n_groups * float(span) >= 2.0 ** 62:
            raise ValueError(f"{n_groups} groups x {n_symbols}**{n} gram ids do not fit int64 keys")
        keys = np.empty(max(0, codes.size), np.int64)
        m = _gram_keys(codes, offsets, groups, n, n_symbols, keys)
        uniq, count = np.unique(keys[:m], return_counts=True)
        g, gid = np.divmod(uniq, span)
        count = count.astype(np.int64)
    sym = np.empty((gid.size, n), np.int32)
    rest = gid.copy()
    for p in range(n - 1, -1, -1):
        sym[:, p] = rest % n_symbols
        rest //= n_symbols
    return g, sym, count


def weighted_gram_counts(group, sym, weights, n_groups, table, dim):
    """Per group: ``sum_e weights[e] * bits(gram(sym[e]))`` over its entries, and ``sum_e weights[e]``.

    Shapes: group (E,) sorted, sym (E, n) int32, weights (E,) int64 >= 0 ->
    counts (n_groups, dim) int64, totals (n_groups,) int64.
    """
    weights = np.ascontiguousarray(weights, np.int64)
    if weights.size and weights.min() < 0:
        raise ValueError("gram weights must be non-negative integers")
    group_starts = np.searchsorted(group, np.arange(n_groups + 1)).astype(np.int64)
    counts = np.zeros((n_groups, dim), np.int64)
    if weights.size:
        _weighted_gram_counts(np.ascontiguousarray(sym, np.int32), weights, group_starts, table, dim, counts)
    totals = np.bincount(group, weights=weights, minlength=n_groups).astype(np.int64)
    return counts, totals
