"""Numba backend: compiled kernels with ``llvm.ctpop`` popcount, parallel over rows.

Public functions here follow the kernel protocol of :mod:`hdc.backends` and dispatch to
private ``@njit`` kernels (the stumpy pattern: a thin wrapper around ``_kernel``).
Loop indices are plain int64 (a uint16 index would wrap past 65,535 bytes, the bug
pynndescent shipped), and the tests use vectors longer than 64 KiB.

Python threads: Numba's ``workqueue`` threading layer (what it uses without OpenMP or TBB,
or with ``NUMBA_THREADING_LAYER=workqueue``) is not thread safe: two Python threads in
parallel kernels at once abort the process. Under that layer every parallel kernel runs
under one lock (:func:`_parallel`); ``omp`` and ``tbb`` run concurrent calls freely.
"""
from __future__ import annotations

import contextlib
import threading

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

NAME = "numba"

# Tile sizes for the matrix kernels: a tile of stored rows is reused by every query of a
# block while it sits in L2 (64 rows x 1,256 B = 80 KiB at dim 10,000).
_ROW_TILE = 64
_QUERY_BLOCK = 64


@intrinsic
def _popc(typingctx, x):
    """Population count of one uint64 through LLVM's ctpop (one VPOPCNTQ/POPCNT)."""
    if x != types.uint64:
        return None
    sig = types.int64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return sig, codegen


@njit(cache=True, nogil=True, inline="always")
def _dist(q, i, x, r):
    acc = 0
    for w in range(q.shape[1]):
        acc += _popc(q[i, w] ^ x[r, w])
    return acc


@njit(parallel=True, cache=True, nogil=True)
def _bind(a, b, out):
    for r in prange(a.shape[0]):
        for w in range(a.shape[1]):
            out[r, w] = a[r, w] ^ b[r, w]


@njit(parallel=True, cache=True, nogil=True)
def _popcount(x, out):
    for r in prange(x.shape[0]):
        acc = 0
        for w in range(x.shape[1]):
            acc += _popc(x[r, w])
        out[r] = acc


@njit(parallel=True, cache=True, nogil=True)
def _hamming_rows(a, b, out):
    for r in prange(a.shape[0]):
        out[r] = _dist(a, r, b, r)


@njit(cache=True, nogil=True)
def _tile(q, i0, i1, x, r0, r1, out, o0):
    """Distances of queries [i0, i1) to stored rows [r0, r1) into out[i - i0, o0 + r - r0].

    The main loop computes 4 queries x 4 rows at once: 16 independent popcount sums over
    the word axis, which LLVM vectorises (8 words per zmm) with VPOPCNTQ. Each loaded query
    word is reused 4 times and each stored word 4 times, so the loop is not load bound
    (1.25 cycles per 512-bit pair-slice on one Zen 5 core vs ~5 for one pair at a time).
    """
    n_words = q.shape[1]
    i = i0
    while i + 4 <= i1:
        r = r0
        while r + 4 <= r1:
            a00 = 0; a01 = 0; a02 = 0; a03 = 0; a10 = 0; a11 = 0; a12 = 0; a13 = 0
            a20 = 0; a21 = 0; a22 = 0; a23 = 0; a30 = 0; a31 = 0; a32 = 0; a33 = 0
            for w in range(n_words):
                q0 = q[i, w]; q1 = q[i + 1, w]; q2 = q[i + 2, w]; q3 = q[i + 3, w]
                x0 = x[r, w]; x1 = x[r + 1, w]; x2 = x[r + 2, w]; x3 = x[r + 3, w]
                a00 += _popc(q0 ^ x0); a01 += _popc(q0 ^ x1); a02 += _popc(q0 ^ x2); a03 += _popc(q0 ^ x3)
                a10 += _popc(q1 ^ x0); a11 += _popc(q1 ^ x1); a12 += _popc(q1 ^ x2); a13 += _popc(q1 ^ x3)
                a20 += _popc(q2 ^ x0); a21 += _popc(q2 ^ x1); a22 += _popc(q2 ^ x2); a23 += _popc(q2 ^ x3)
                a30 += _popc(q3 ^ x0); a31 += _popc(q3 ^ x1); a32 += _popc(q3 ^ x2); a33 += _popc(q3 ^ x3)
            c = o0 + r - r0
            oi = i - i0
            out[oi, c] = a00; out[oi, c + 1] = a01; out[oi, c + 2] = a02; out[oi, c + 3] = a03
            out[oi + 1, c] = a10; out[oi + 1, c + 1] = a11; out[oi + 1, c + 2] = a12; out[oi + 1, c + 3] = a13
            out[oi + 2, c] = a20; out[oi + 2, c + 1] = a21; out[oi + 2, c + 2] = a22; out[oi + 2, c + 3] = a23
            out[oi + 3, c] = a30; out[oi + 3, c + 1] = a31; out[oi + 3, c + 2] = a32; out[oi + 3, c + 3] = a33
            r += 4
        for rr in range(r, r1):  # row tail
            for ii in range(i, i + 4):
                out[ii - i0, o0 + rr - r0] = _dist(q, ii, x, rr)
        i += 4
    for ii in range(i, i1):  # query tail
        for rr in range(r0, r1):
            out[ii - i0, o0 + rr - r0] = _dist(q, ii, x, rr)


# Words per vector register of the widest target (8 x 64 bits in a zmm): LLVM vectorises the
# word loop of _tile by this many and finishes the remaining n_words % 8 words one at a time,
# 16 scalar (XOR, POPCNT, ADD) per word for a 4 x 4 tile. At dim 10,000 (157 words: 19 vectors
# + 5 words) that tail cost ~20% of the tile; copying the tile's rows and queries into
# zero-padded buffers (zeros add nothing to a Hamming distance) makes the trip count a multiple
# of 8, so the scalar tail never runs. The copies cost 2 x 64 rows per 64 x 64 x n_words tile.
_PAD_WORDS = 8


@njit(cache=True, nogil=True)
def _padded_rows(src, r0, r1, n_padded):
    buf = np.zeros((r1 - r0, n_padded), np.uint64)
    n_words = src.shape[1]
    for r in range(r1 - r0):
        for w in range(n_words):
            buf[r, w] = src[r0 + r, w]
    return buf


@njit(parallel=True, cache=True, nogil=True)
def _hamming_matrix(q, x, out):
    m, n = q.shape[0], x.shape[0]
    n_words = q.shape[1]
    n_padded = (n_words + _PAD_WORDS - 1) // _PAD_WORDS * _PAD_WORDS
    pad = n_padded != n_words
    n_tiles = (n + _ROW_TILE - 1) // _ROW_TILE
    n_qblocks = (m + _QUERY_BLOCK - 1) // _QUERY_BLOCK
    # one task = (row tile, query block); tasks are independent, so any split is exact
    for t in prange(n_tiles * n_qblocks):
        tile = t // n_qblocks
        qb = t - tile * n_qblocks
        r0 = tile * _ROW_TILE
        i0 = qb * _QUERY_BLOCK
        r1 = min(r0 + _ROW_TILE, n)
        i1 = min(i0 + _QUERY_BLOCK, m)
        if pad:
            qt = _padded_rows(q, i0, i1, n_padded)
            xt = _padded_rows(x, r0, r1, n_padded)
            _tile(qt, 0, i1 - i0, xt, 0, r1 - r0, out[i0:], r0)
        else:
            _tile(q, i0, i1, x, r0, r1, out[i0:], r0)


@njit(cache=True, nogil=True, inline="always")
def _insert(dist_row, idx_row, k, d, r):
    """Insert (d, r) into a sorted top-k row; equal distances keep the earlier index first."""
    pos = k - 1
    while pos > 0 and dist_row[pos - 1] > d:
        dist_row[pos] = dist_row[pos - 1]
        idx_row[pos] = idx_row[pos - 1]
        pos -= 1
    dist_row[pos] = d
    idx_row[pos] = r


@njit(cache=True, nogil=True)
def _topk_block(q, i0, i1, x, r0, r1, k, dist, idx):
    """Running top-k of queries [i0, i1) over stored rows [r0, r1), in row tiles.

    dist/idx rows (i - i0) must be pre-filled with (int64 max, -1). Rows are visited in
    increasing index order and a candidate must beat the current k-th distance strictly,
    so among equal distances the lower index stays: the library's tie rule.
    """
    buf = np.empty((i1 - i0, _ROW_TILE), np.int64)
    for t0 in range(r0, r1, _ROW_TILE):
        t1 = min(t0 + _ROW_TILE, r1)
        _tile(q, i0, i1, x, t0, t1, buf, 0)
        for a in range(i1 - i0):
            worst = dist[a, k - 1]
            for c in range(t1 - t0):
                d = buf[a, c]
                if d < worst:
                    _insert(dist[a], idx[a], k, d, t0 + c)
                    worst = dist[a, k - 1]


@njit(parallel=True, cache=True, nogil=True)
def _topk_by_query(q, x, k, out_dist, out_idx):
    m, n = q.shape[0], x.shape[0]
    n_qblocks = (m + 3) // 4
    for b in prange(n_qblocks):
        i0 = b * 4
        _topk_block(q, i0, min(i0 + 4, m), x, 0, n, k, out_dist[i0:], out_idx[i0:])


@njit(parallel=True, cache=True, nogil=True)
def _topk_by_rows(q, x, k, n_parts, part_dist, part_idx):
    """Few queries: split the stored rows into n_parts ranges; top-k of each range."""
    m, n = q.shape[0], x.shape[0]
    step = (n + n_parts - 1) // n_parts
    for p in prange(n_parts):
        r0 = p * step
        _topk_block(q, 0, m, x, r0, min(r0 + step, n), k, part_dist[p], part_idx[p])


@njit(cache=True, nogil=True)
def _read_bits(x, row, start, length, n_words):
    """``length`` (1..64) bits of ``x[row]`` starting at bit ``start``, as the low bits."""
    w0 = start >> 6
    b = start & 63
    v = x[row, w0] >> np.uint64(b)
    if b != 0 and w0 + 1 < n_words:
        v |= x[row, w0 + 1] << np.uint64(64 - b)
    if length < 64:
        v &= (np.uint64(1) << np.uint64(length)) - np.uint64(1)
    return v


@njit(parallel=True, cache=True, nogil=True)
def _permute(x, shift, dim, out):
    n_words = x.shape[1]
    for row in prange(x.shape[0]):
        for o in range(n_words):
            length = min(64, dim - o * 64)  # valid bits in this output word
            start = (o * 64 - shift) % dim  # source position of output bit o*64
            first = min(length, dim - start)  # bits before the source wraps at dim
            v = _read_bits(x, row, start, first, n_words)
            if first < length:
                v |= _read_bits(x, row, 0, length - first, n_words) << np.uint64(first)
            out[row, o] = v


@njit(parallel=True, cache=True, nogil=True)
def _bit_counts(x, dim, counts):
    n, n_words = x.shape
    for w in prange(n_words):
        nbits = min(64, dim - w * 64)
        local = np.zeros(64, np.int64)
        for r in range(n):
            v = x[r, w]
            for b in range(64):
                local[b] += (v >> np.uint64(b)) & np.uint64(1)
        for b in range(nbits):
            counts[w * 64 + b] += local[b]


@njit(cache=True, nogil=True)
def _majority(counts, n, dim, tie, out):
    for w in range(out.shape[0]):
        v = np.uint64(0)
        for b in range(min(64, dim - w * 64)):
            c2 = 2 * counts[w * 64 + b]
            bit = c2 > n or (c2 == n and ((tie[w] >> np.uint64(b)) & np.uint64(1)) == 1)
            if bit:
                v |= np.uint64(1) << np.uint64(b)
        out[w] = v


# ---------------------------------------------------------------- causal top-k
# A running list costs O(k) per insertion; past this k a row is sorted instead.
_CAUSAL_LIST_MAX = 128
_CAUSAL_QUERY_BLOCK = 8


@njit(cache=True, nogil=True, inline="always")
def _causal_insert(cost_row, idx_row, cnt, k, c, j):
    """Insert (c, j) into a row sorted by cost ascending. j is larger than every kept index,
    so it goes before the kept keys of equal cost (``>=``): the recency tie rule."""
    p = cnt if cnt < k else k - 1
    while p > 0 and cost_row[p - 1] >= c:
        cost_row[p] = cost_row[p - 1]
        idx_row[p] = idx_row[p - 1]
        p -= 1
    cost_row[p] = c
    idx_row[p] = j
    return cnt + 1 if cnt < k else cnt


@njit(cache=True, nogil=True)
def _causal_rows(q, kt, j0, k, q_start, window, skip, overlap, i0, i1, out_s, out_i, buf):
    """Queries [i0, i1): costs of each query's allowed keys into buf, then its top-k.

    kt: (W, span) word-major keys j0 .. j0 + span - 1, so the cost loop runs over contiguous
    keys (vectorised, VPOPCNTQ). Cost = distance, or 64 W - overlap: smaller is better either
    way; the scan runs in increasing j, so ``<=`` against the k-th cost keeps the recency rule.
    """
    W = q.shape[1]
    top = 64 * W
    for i in range(i0, i1):
        p = q_start + i
        hi = p - skip + 1  # exclusive
        lo = max(0, p - window + 1) if window > 0 else 0
        cnt = hi - lo
        ks = 0
        if cnt > 0:
            b = lo - j0
            if W == 0:
                buf[:cnt] = 0
            for w in range(W):
                qv = q[i, w]
                krow = kt[w, b:b + cnt]  # contiguous: the loops below vectorise
                if overlap:
                    if w == 0:
                        for r in range(cnt):
                            buf[r] = top - _popc(qv & krow[r])
                    else:
                        for r in range(cnt):
                            buf[r] -= _popc(qv & krow[r])
                elif w == 0:
                    for r in range(cnt):
                        buf[r] = _popc(qv ^ krow[r])
                else:
                    for r in range(cnt):
                        buf[r] += _popc(qv ^ krow[r])
            ks = min(k, cnt)
            if ks <= _CAUSAL_LIST_MAX:
                n_kept = 0
                thr = np.int64(1) << 62
                for r in range(cnt):
                    c = buf[r]
                    if c <= thr:
                        n_kept = _causal_insert(out_s[i], out_i[i], n_kept, ks, c, lo + r)
                        if n_kept == ks:
                            thr = out_s[i, ks - 1]
            else:
                # unique composite: cost first, then the larger j (smaller cnt - 1 - r) first;
                # cost < 2**31 and cnt <= n keys, so it fits int64 for any n < 2**32
                comp = buf[:cnt] * cnt + (cnt - 1 - np.arange(cnt))
                order = np.argsort(comp)[:ks]
                for t in range(ks):
                    out_s[i, t] = buf[order[t]]
                    out_i[i, t] = lo + order[t]
            if overlap:
                for t in range(ks):
                    out_s[i, t] = top - out_s[i, t]
        for t in range(ks, k):
            out_s[i, t] = -1
            out_i[i, t] = -1


@njit(parallel=True, cache=True, nogil=True)
def _causal_topk(q, kt, j0, k, q_start, window, skip, overlap, out_s, out_i):
    m = q.shape[0]
    span = kt.shape[1]
    nb = (m + _CAUSAL_QUERY_BLOCK - 1) // _CAUSAL_QUERY_BLOCK
    # causal rows grow with i: pair block b with block nb - 1 - b so every task has equal work
    for t in prange((nb + 1) // 2):
        buf = np.empty(span, np.int64)
        i0 = t * _CAUSAL_QUERY_BLOCK
        _causal_rows(q, kt, j0, k, q_start, window, skip, overlap, i0,
                     min(i0 + _CAUSAL_QUERY_BLOCK, m), out_s, out_i, buf)
        b = nb - 1 - t
        if b != t:  # the middle block of an odd count runs once
            i0 = b * _CAUSAL_QUERY_BLOCK
            _causal_rows(q, kt, j0, k, q_start, window, skip, overlap, i0,
                         min(i0 + _CAUSAL_QUERY_BLOCK, m), out_s, out_i, buf)


def _threads(threads: int) -> None:
    t = min(threads, numba.config.NUMBA_NUM_THREADS)
    if numba.get_num_threads() != t:
        numba.set_num_threads(t)


_layer_lock = threading.Lock()  # held while the first parallel call picks the layer
_workqueue_lock = threading.Lock()
_layer: str | None = None


def _parallel(threads: int):
    """Set this thread's kernel threads; return the guard a parallel kernel runs under.

    The layer is only known after Numba's first parallel launch, so that launch (a tiny
    kernel) happens under a lock; then workqueue gets the lock, other layers none.
    """
    global _layer
    if _layer is None:
        with _layer_lock:
            if _layer is None:
                _bind(np.zeros((1, 1), np.uint64), np.zeros((1, 1), np.uint64), np.zeros((1, 1), np.uint64))
                _layer = numba.threading_layer()
    _threads(threads)
    return _workqueue_lock if _layer == "workqueue" else contextlib.nullcontext()


def threading_layer() -> str:
    """The Numba threading layer in use (``omp``, ``tbb`` or ``workqueue``)."""
    _parallel(1)
    return _layer


# ---------------------------------------------------------------- protocol
def bind(a, b, out, threads=1):
    with _parallel(threads):
        _bind(a, b, out)


def popcount(x, out, threads=1):
    with _parallel(threads):
        _popcount(x, out)


def hamming_rows(a, b, out, threads=1):
    with _parallel(threads):
        _hamming_rows(a, b, out)


def hamming_matrix(q, x, out, threads=1):
    with _parallel(threads):
        _hamming_matrix(q, x, out)


def topk(q, x, k, out_dist, out_idx, threads=1):
    with _parallel(threads):
        _topk(q, x, k, out_dist, out_idx, threads)


def _topk(q, x, k, out_dist, out_idx, threads):
    m = q.shape[0]
    big = np.iinfo(np.int64).max
    if m >= 16 * threads:  # enough query blocks to keep every thread busy
        d = np.full((m, k), big, np.int64)
        i = np.full((m, k), -1, np.int64)
        _topk_by_query(q, x, k, d, i)
        out_dist[...] = d
        out_idx[...] = i
        return
    n_parts = max(1, min(4 * threads, x.shape[0] // _ROW_TILE))
    pd = np.full((n_parts, m, k), big, np.int64)
    pi = np.full((n_parts, m, k), -1, np.int64)
    _topk_by_rows(q, x, k, n_parts, pd, pi)
    pd = pd.transpose(1, 0, 2).reshape(m, -1)
    pi = pi.transpose(1, 0, 2).reshape(m, -1)
    # parts cover increasing index ranges; unfilled slots hold (int64 max, -1) and sort last
    order = np.lexsort((pi, pd), axis=-1)[:, :k]
    out_dist[...] = np.take_along_axis(pd, order, axis=1)
    out_idx[...] = np.take_along_axis(pi, order, axis=1)


def permute(x, shift, dim, out, threads=1):
    with _parallel(threads):
        _permute(x, shift, dim, out)


def bit_counts(x, dim, counts, threads=1):
    with _parallel(threads):
        _bit_counts(x, dim, counts)


def bundle_majority(x, dim, tie, out, threads=1):
    counts = np.zeros(x.shape[1] * 64, np.int64)
    with _parallel(threads):
        _bit_counts(x, dim, counts)
    _majority(counts, x.shape[0], dim, tie, out)


def causal_topk(q, x, k, q_start, window, skip_recent, overlap, out_score, out_idx, threads=1):
    _threads(threads)
    m = q.shape[0]
    w = 0 if window is None else window
    # keys any query may see: [j_lo, j_hi); lo and hi only grow with the query position
    j_lo = max(0, q_start - w + 1) if w else 0
    j_hi = max(j_lo, q_start + m - skip_recent)
    keys = x[j_lo:j_hi]
    kt = keys.reshape(1, -1) if x.shape[1] == 1 else np.ascontiguousarray(keys.T)  # (W, span)
    s = np.empty((m, k), np.int64)
    _causal_topk(q, kt, j_lo, k, q_start, w, skip_recent, bool(overlap), s, out_idx)
    out_score[...] = s
