"""Packed-bit inference for :class:`~spiking_attention.attention.SpikingKWTAAttention`.

The binary query and key codes are packed into uint64 words (:func:`hdc.pack_bits`); scores
come from the hdc popcount kernels (C / Numba / NumPy, whichever :mod:`hdc.backends` picks);
the winners are chosen with the same rule as :func:`spiking_attention.kwta.kwta_mask` (k largest
integer scores, ties to the more recent key); the values of the winners are aggregated in
NumPy. The dense parts (the Q/K/V/output projections and the neuron) run through the module's
own torch code, so both paths see bit-identical codes; what this module replaces is the
attention core, the only part that changes with the context length.

Event-driven: a query with no spike (an all-zero code) never enters a pairwise kernel in any
method: its scores follow from the key popcounts alone (``hamming(0, k) = |k|``,
``|0 AND k| = 0``). The matrix method also drops silent keys from the pairwise kernel; the
compiled kernels keep them, because XOR with an all-zero word already yields ``|q|`` and a
branch per key would cost more than it saves. ``last_info`` reports how many pairs needed
the XOR-popcount. (With the default init and training, codes fire ~50% of bits, so silent
codes are rare: the saving is in the k-sparse reading of values, not here.)

Score identities (integers, exact):

* ``"hamming"``: ``score = code_bits - 2 * hamming(q, k)`` (bipolar dot product);
* ``"overlap"``: ``|q AND k| = (|q| + |k| - hamming(q, k)) / 2``, which lets the Hamming
  (XOR + popcount) kernels compute the AND count without a kernel of its own.

Prefill methods (``method=``, all exact, all tested against the torch path):

* ``"causal_kernel"`` (``"auto"`` for an int k): one compiled Numba pass per head: for each
  query, a vectorised XOR-popcount over the keys it may see, then a running top-k scanned in
  time order, so the recency tie rule is a ``>=``; the brain prior's window bounds the scan.
* ``"fused_topk"``: the hdc kernels: :func:`hdc.topk` (C / Numba) on the past keys in
  *reverse* order, so its "lower index wins" tie rule becomes "more recent key wins", plus a
  Hamming matrix on the causal diagonal block, merged exactly (Hamming score, no prior).
* ``"matrix"``: :func:`hdc.hamming_matrix` blocks and NumPy selection: the plain reference.

Decoding (one new query against the cache) uses :func:`hdc.topk` on the newest-first keys
where the score is Hamming and there is no prior, and the matrix path otherwise.

Public API::

    pack_codes(bits) -> uint64 words                         # (..., code_bits) {0,1} -> (..., n_words)
    packed_scores(q_words, k_words, code_bits, score) -> (scores int64 (m, n), info)
    select_winners(scores, k, allowed) -> (idx int64 (m, kmax), valid bool (m, kmax))
    causal_topk(q_words, k_words, code_bits, score, k, window=, random_frac=, seed=)
        -> (scores, idx, valid, info)                         # one compiled causal pass (Numba)
    PackedSpikingAttention(att, method="auto")                # wraps a trained module
        .forward(x (B, T, C) torch) -> y (B, T, C) torch      # == att(x) within float tolerance
        .winners(x) -> list over (b, h) of (idx, valid)       # the chosen keys
        .core_from_codes(qw, kw, v) -> (y (B, nh, T, hs), winners)  # the core alone, from packed codes
        .prefill(x (1, T, C)) -> (y, cache);  .step(x_t (1, 1, C), cache) -> y_t   # decoding
        .new_cache(capacity); .append(cache, k_words, v); .step_core(q_words, cache)
    packed_model(model)                                       # context manager: a model's spiking
                                                              # attention layers run packed

Example::

    >>> patt = PackedSpikingAttention(att)            # att: a SpikingKWTAAttention
    >>> y = patt.forward(x)                            # same as att(x) to ~1e-6
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch
from numba import njit, types
from numba.extending import intrinsic

import hdc
from hdc.packing import n_words_for

from .attention import SpikingKWTAAttention, allowed_keys

__all__ = ["pack_codes", "packed_scores", "select_winners", "aggregate_winners", "causal_topk",
           "PackedSpikingAttention", "DecodeCache", "packed_model", "PACKED_CALLS", "METHODS"]

#: Counts kernel calls of the packed path (proof that the packed kernels ran, for tests and benches).
PACKED_CALLS = {"hamming_matrix": 0, "topk": 0, "popcount": 0, "causal_kernel": 0}

_NEG = -(1 << 62)  # composite key of a disallowed entry: below every real one, safe to negate

#: Prefill methods: "causal_kernel" (one compiled pass: causal scan, popcount, running top-k),
#: "fused_topk" (hdc.topk on past keys + Hamming matrix on the diagonal block), "matrix"
#: (hdc.hamming_matrix blocks + NumPy selection: the plain reference of the three).
METHODS = ("auto", "causal_kernel", "fused_topk", "matrix")


@intrinsic
def _popc(typingctx, x):
    """Population count of one uint64 through LLVM's ctpop (POPCNT)."""
    if x != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.int64(types.uint64), codegen


@njit(cache=True, nogil=True, inline="always")
def _mix32(x):
    # the same integer mix as spiking_attention.attention._hash_u32 (values stay < 2^32)
    m = 0xFFFFFFFF
    x = x & m
    x = (((x >> 16) ^ x) * 0x045D9F3B) & m
    x = (((x >> 16) ^ x) * 0x045D9F3B) & m
    return (x >> 16) ^ x


@njit(cache=True, nogil=True, inline="always")
def _row_hamming(qw, kwT, i, j0, n, buf):
    """buf[j] = hamming(q_i, k_j) for j in [j0, n), keys word-major (kwT[w, j]): every inner loop
    runs over contiguous words of many keys, which the compiler vectorises (VPOPCNTQ)."""
    W = qw.shape[1]
    q0 = qw[i, 0]
    for j in range(j0, n):
        buf[j] = _popc(q0 ^ kwT[0, j])
    for w in range(1, W):
        qv = qw[i, w]
        for j in range(j0, n):
            buf[j] += _popc(qv ^ kwT[w, j])


@njit(cache=True, nogil=True, inline="always")
def _row_scores(qw, kwT, q_pop, k_pop, code_bits, overlap, i, j0, n, buf):
    """buf[j] = integer score of (q_i, k_j); returns 1 if the XOR-popcount ran, 0 for a silent query."""
    qp = q_pop[i]
    ran = 0
    if qp == 0:
        for j in range(j0, n):  # hamming(0, y) = |y|: no pairwise work for a silent query
            buf[j] = k_pop[j]
    else:
        _row_hamming(qw, kwT, i, j0, n, buf)
        ran = 1
    if overlap:
        for j in range(j0, n):
            buf[j] = (qp + k_pop[j] - buf[j]) // 2  # |q AND k| = (|q| + |k| - hamming) / 2
    else:
        for j in range(j0, n):
            buf[j] = code_bits - 2 * buf[j]
    return ran


@njit(cache=True, nogil=True, inline="always")
def _insert(out_s, out_i, i, cnt, k, sc, j):
    """Insert (sc, j) into row i's kept list (sorted by score desc, newest first on ties)."""
    p = cnt if cnt < k else k - 1
    while p > 0 and out_s[i, p - 1] <= sc:
        out_s[i, p] = out_s[i, p - 1]
        out_i[i, p] = out_i[i, p - 1]
        p -= 1
    out_s[i, p] = sc
    out_i[i, p] = j
    return cnt + 1 if cnt < k else cnt


@njit(cache=True, nogil=True)
def _causal_topk_kernel(qw, kwT, q_pop, k_pop, code_bits, overlap, k, out_s, out_i, out_n):
    """For each query i: the k best keys j <= i by (score desc, j desc). Plain causal mask.

    Two passes per row: (1) the scores of keys 0..i into a buffer; (2) a running top-k in
    increasing j. Because j only grows, a new key beats every kept key with the same score, so
    the recency tie rule is the insertion test ``s >= kept``. Returns (XOR-popcount pairs, pairs).
    """
    T = qw.shape[0]
    buf = np.empty(T, np.int64)
    n_xor = 0
    n_seen = 0
    for i in range(T):
        n = i + 1
        n_seen += n
        n_xor += n * _row_scores(qw, kwT, q_pop, k_pop, code_bits, overlap, i, 0, n, buf)
        cnt = 0
        thr = -(1 << 62)
        for j in range(n):
            sc = buf[j]
            if sc >= thr:
                cnt = _insert(out_s, out_i, i, cnt, k, sc, j)
                if cnt == k:
                    thr = out_s[i, k - 1]
        out_n[i] = cnt
    return n_xor, n_seen


@njit(cache=True, nogil=True)
def _prior_topk_kernel(qw, kwT, q_pop, k_pop, code_bits, overlap, k, window, frac_cut, seed,
                       out_s, out_i, out_n):
    """As :func:`_causal_topk_kernel` under the brain prior: key j is allowed for query i when
    ``i - j < window`` or the seeded coin (the integer hash of attention._hash_u32) says so.
    A pure window bounds the scan; the coin is hashed only for keys that would enter the top-k.
    """
    T = qw.shape[0]
    seed_mix = seed * 0x85EBCA77
    buf = np.empty(T, np.int64)
    n_xor = 0
    n_seen = 0
    for i in range(T):
        n = i + 1
        j0 = max(0, i - window + 1) if frac_cut <= 0.0 else 0
        n_seen += n - j0
        n_xor += (n - j0) * _row_scores(qw, kwT, q_pop, k_pop, code_bits, overlap, i, j0, n, buf)
        cnt = 0
        thr = -(1 << 62)
        for j in range(j0, n):
            sc = buf[j]
            if sc < thr:
                continue
            if i - j >= window:
                hsh = _mix32(_mix32(i * 0x9E3779B1 + j) ^ seed_mix)
                if not (np.float64(hsh) < frac_cut):
                    continue
            cnt = _insert(out_s, out_i, i, cnt, k, sc, j)
            if cnt == k:
                thr = out_s[i, k - 1]
        out_n[i] = cnt
    return n_xor, n_seen


def pack_codes(bits) -> np.ndarray:
    """Pack {0,1} codes (torch or numpy) into uint64 words. Shapes: (..., code_bits) -> (..., n_words)."""
    if isinstance(bits, torch.Tensor):
        bits = bits.detach().cpu().numpy()
    bits = np.asarray(bits)
    return hdc.pack_bits(bits.astype(bool) if bits.dtype != np.bool_ else bits)


def _popcount(words: np.ndarray) -> np.ndarray:
    PACKED_CALLS["popcount"] += 1
    return hdc.popcount(words)


def packed_scores(q_words: np.ndarray, k_words: np.ndarray, code_bits: int, score: str, *,
                  q_pop: np.ndarray | None = None, k_pop: np.ndarray | None = None,
                  threads: int | None = None) -> tuple[np.ndarray, dict]:
    """Integer scores of every (query, key) pair from packed codes, event-driven.

    Only queries and keys with at least one spike go through the pairwise Hamming kernel; the
    rest are filled from popcounts. ``info`` reports how many rows, columns and pairs were active.

    Shapes: q_words (m, W), k_words (n, W) -> scores (m, n) int64, info dict.
    """
    if score not in ("hamming", "overlap"):
        raise ValueError(f"score must be 'hamming' or 'overlap', got {score!r}")
    m, n = q_words.shape[0], k_words.shape[0]
    q_pop = _popcount(q_words) if q_pop is None else q_pop
    k_pop = _popcount(k_words) if k_pop is None else k_pop
    aq, ak = q_pop > 0, k_pop > 0
    n_aq, n_ak = int(aq.sum()), int(ak.sum())
    # silent query: hamming = |k|; silent key: hamming = |q|; both silent: 0
    ham = np.broadcast_to(k_pop[None, :], (m, n)).astype(np.int64)
    ham[:, ~ak] = q_pop[:, None]
    if n_aq and n_ak:
        if n_aq == m and n_ak == n:
            sub = hdc.hamming_matrix(q_words, k_words, threads=threads)
            ham = sub.astype(np.int64)
        else:
            sub = hdc.hamming_matrix(np.ascontiguousarray(q_words[aq]), np.ascontiguousarray(k_words[ak]),
                                     threads=threads)
            ham[np.ix_(aq, ak)] = sub
        PACKED_CALLS["hamming_matrix"] += 1
    if score == "hamming":
        s = code_bits - 2 * ham
    else:
        # |q AND k| = (|q| + |k| - hamming(q, k)) / 2: the AND count from the XOR popcount kernel
        s = (q_pop[:, None] + k_pop[None, :] - ham) // 2
    info = {"active_queries": n_aq, "active_keys": n_ak, "pairs_computed": n_aq * n_ak, "pairs_total": m * n}
    return s, info


def _k_row(k, n_allowed: np.ndarray) -> np.ndarray:
    """numpy mirror of :func:`spiking_attention.kwta.resolve_k` (validated there)."""
    if isinstance(k, (int, np.integer)) and not isinstance(k, bool):
        return np.minimum(n_allowed, int(k))
    kr = np.maximum(np.ceil(n_allowed.astype(np.float64) * float(k)).astype(np.int64), 1)
    return np.minimum(kr, n_allowed)


def select_winners(scores: np.ndarray, k, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k best allowed keys per row, best first; ties go to the higher (more recent) index.

    The same rule as :func:`~spiking_attention.kwta.kwta_mask`, made exact by ranking the
    unique composite ``score * n + j`` (integer scores only).

    Shapes: scores (m, n) int, allowed (m, n) bool or None -> idx (m, kmax) int64, valid (m, kmax) bool,
    where kmax = the largest per-row k; ``valid`` is False on the padding of rows with fewer winners.
    """
    m, n = scores.shape
    allowed = np.ones((m, n), bool) if allowed is None else allowed
    k_row = _k_row(k, allowed.sum(1))
    kmax = int(k_row.max()) if m else 0
    if kmax == 0:
        return np.zeros((m, 0), np.int64), np.zeros((m, 0), bool)
    comp = scores.astype(np.int64) * n + np.arange(n, dtype=np.int64)[None, :]
    comp = np.where(allowed, comp, _NEG)
    if kmax < n:
        part = np.argpartition(-comp, kmax - 1, axis=1)[:, :kmax]
    else:
        part = np.broadcast_to(np.arange(n), (m, n)).copy()
    order = np.argsort(-np.take_along_axis(comp, part, 1), axis=1)
    idx = np.take_along_axis(part, order, 1)
    valid = np.arange(kmax)[None, :] < k_row[:, None]
    return idx, valid


def causal_topk(q_words: np.ndarray, k_words: np.ndarray, code_bits: int, score: str, k: int, *,
                window: int | None = None, random_frac: float = 0.0, seed: int = 0):
    """Causal k-WTA on packed codes in one compiled pass (queries = keys = positions 0..T-1).

    Same winners as :func:`select_winners` on :func:`packed_scores` under the causal (and
    brain-prior) mask, best first, ties to the more recent key.

    Shapes: q_words, k_words (T, W) uint64 -> scores (T, kk) int64, idx (T, kk) int64,
    valid (T, kk) bool, info, where kk = min(k, T) and info counts the pairs scanned
    (``pairs_total``) and those that needed the XOR-popcount (``pairs_computed``; the others
    had a silent query).
    """
    if score not in ("hamming", "overlap"):
        raise ValueError(f"score must be 'hamming' or 'overlap', got {score!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"causal_topk needs an int k >= 1, got {k!r}")
    qw = hdc.check_words(q_words, "q_words", dim=code_bits)
    kw = hdc.check_words(k_words, "k_words", dim=code_bits)
    if qw.ndim != 2 or qw.shape != kw.shape:
        raise ValueError(f"q_words and k_words must both be (T, W), got {qw.shape} and {kw.shape}")
    T = qw.shape[0]
    kk = min(int(k), T)
    q_pop = np.bitwise_count(qw).sum(1, dtype=np.int64)
    k_pop = np.bitwise_count(kw).sum(1, dtype=np.int64)
    out_s = np.zeros((T, kk), np.int64)
    out_i = np.zeros((T, kk), np.int64)
    out_n = np.zeros(T, np.int64)
    n_xor = n_seen = 0
    kwT = np.ascontiguousarray(kw.T)  # (W, T): word-major, so the score loop runs over contiguous keys
    if T:
        if window is None:
            n_xor, n_seen = _causal_topk_kernel(qw, kwT, q_pop, k_pop, int(code_bits), score == "overlap", kk,
                                                out_s, out_i, out_n)
        else:
            n_xor, n_seen = _prior_topk_kernel(qw, kwT, q_pop, k_pop, int(code_bits), score == "overlap", kk,
                                               int(window), float(random_frac) * 4294967296.0, int(seed),
                                               out_s, out_i, out_n)
    PACKED_CALLS["causal_kernel"] += 1
    valid = np.arange(kk)[None, :] < out_n[:, None]
    info = {"active_queries": int((q_pop > 0).sum()), "active_keys": int((k_pop > 0).sum()),
            "pairs_computed": int(n_xor), "pairs_total": int(n_seen)}
    return out_s, out_i, valid, info


def aggregate_winners(scores: np.ndarray, idx: np.ndarray, valid: np.ndarray, v: np.ndarray,
                      scale: float) -> np.ndarray:
    """Softmax over the winners' scaled scores, times their values.

    Shapes: scores (m, n) int or (m, kmax) already gathered, idx/valid (m, kmax), v (n, hs) -> (m, hs).
    """
    s = scores if scores.shape == idx.shape else np.take_along_axis(scores, idx, 1)
    logits = np.where(valid, s.astype(np.float32) * np.float32(scale), np.float32(-np.inf))
    logits -= logits.max(1, keepdims=True)
    w = np.exp(logits)
    w /= w.sum(1, keepdims=True)
    return np.einsum("mk,mkh->mh", w, v[idx], dtype=np.float32)


@dataclass
class DecodeCache:
    """Per-layer decoding state: packed keys newest-first, their popcounts, values, LIF membranes.

    Keys are stored from the end of a preallocated buffer backwards, so ``k_rev[:, cap-n:]`` lists
    the keys newest first: exactly the order in which :func:`hdc.topk`'s "lower index wins"
    tie rule means "more recent key wins".
    """

    cap: int
    k_rev: np.ndarray        # (nh, cap, W) uint64, key t at row cap - 1 - t
    kpop_rev: np.ndarray     # (nh, cap) int64
    v: np.ndarray            # (nh, cap, hs) float32, value t at row t
    n: int = 0
    state: dict = field(default_factory=dict)
    scales: np.ndarray | None = None  # (nh,) score -> logit factors, read from the module at creation


class PackedSpikingAttention:
    """Inference-only packed form of a :class:`SpikingKWTAAttention` (reads its weights live).

    Shapes: forward x (B, T, C) -> (B, T, C); codes packed to (B, nh, T, n_words).
    """

    def __init__(self, att: SpikingKWTAAttention, *, block_rows: int = 128, threads: int | None = None,
                 method: str = "auto"):
        if not isinstance(att, SpikingKWTAAttention):
            raise TypeError(f"PackedSpikingAttention wraps a SpikingKWTAAttention, got {type(att).__name__}")
        if att.output != "softmax":
            raise ValueError(f"the packed path implements output='softmax' only, got {att.output!r}")
        if getattr(att, "tie_rule", "recent") != "recent":
            raise ValueError("the packed path implements tie_rule='recent' only (ties to the more recent key)")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if not (isinstance(block_rows, int) and block_rows >= 1):
            raise ValueError(f"block_rows must be a positive int, got {block_rows!r}")
        self.att, self.block_rows, self.threads, self.method = att, block_rows, threads, method
        self.n_words = n_words_for(att.code_bits)
        self.last_info: dict = {}

    # ------------------------------------------------------------------ helpers
    def _scales(self) -> np.ndarray:
        return self.att.score_scale().detach().reshape(-1).cpu().numpy().astype(np.float32)  # (nh,)

    @property
    def _fused_ok(self) -> bool:
        return self.att.score == "hamming" and self.att.prior_window is None

    def prefill_method(self) -> str:
        """The prefill method that runs: ``auto`` picks the causal kernel for an int k, else matrix."""
        int_k = isinstance(self.att.k, int)
        if self.method == "auto":
            return "causal_kernel" if int_k else "matrix"
        if self.method == "causal_kernel" and not int_k:
            return "matrix"
        if self.method == "fused_topk" and not (self._fused_ok and int_k):
            return "matrix"
        return self.method

    @property
    def fused(self) -> bool:
        """Whether decoding may use the fused hdc.topk kernel (every method but "matrix")."""
        return self.method != "matrix"

    def _head_winners(self, qw, kw, T0: int, allowed_fn):
        """Scores and winners of queries at absolute positions T0..T0+m-1 against keys 0..n-1.

        Rows are processed in blocks; a block's queries only need the keys up to its last row.
        Returns (scores gathered at idx (m, kmax), idx, valid, info totals).
        """
        att = self.att
        m, n = qw.shape[0], kw.shape[0]
        q_pop, k_pop = _popcount(qw), _popcount(kw)
        out_s, out_i, out_v = [], [], []
        tot = {"active_queries": 0, "active_keys": 0, "pairs_computed": 0, "pairs_total": 0}
        for r0 in range(0, m, self.block_rows):
            r1 = min(m, r0 + self.block_rows)
            n_keys = min(n, T0 + r1)  # causal: nothing after the block's last query
            s, info = packed_scores(qw[r0:r1], kw[:n_keys], att.code_bits, att.score,
                                    q_pop=q_pop[r0:r1], k_pop=k_pop[:n_keys], threads=self.threads)
            allowed = allowed_fn(T0 + r0, T0 + r1, n_keys)
            idx, valid = select_winners(s, att.k, allowed)
            out_s.append(np.take_along_axis(s, idx, 1))
            out_i.append(idx)
            out_v.append(valid)
            tot["pairs_computed"] += info["pairs_computed"]
            tot["pairs_total"] += info["pairs_total"]
        tot["active_queries"], tot["active_keys"] = int((q_pop > 0).sum()), int((k_pop > 0).sum())
        kmax = max(i.shape[1] for i in out_i)
        pad = lambda a, fill: np.pad(a, ((0, 0), (0, kmax - a.shape[1])), constant_values=fill)  # noqa: E731
        return (np.concatenate([pad(a, 0) for a in out_s]), np.concatenate([pad(a, 0) for a in out_i]),
                np.concatenate([pad(a, False) for a in out_v]), tot)

    def _head_winners_fused(self, qw, kw):
        """Prefill winners with the fused top-k kernel (Hamming score, causal, int k).

        For a block of query rows [r0, r1): the keys before r0 are all allowed, so the fused
        :func:`hdc.topk` runs on them in newest-first order (its lower-index tie rule is then the
        recency rule); the causal diagonal block [r0, r1) x [r0, r1) goes through the Hamming
        matrix; the two candidate lists are merged by the same exact composite key.
        """
        att = self.att
        T, cb, k = qw.shape[0], att.code_bits, att.k
        q_pop, k_pop = _popcount(qw), _popcount(kw)
        k_rev = np.ascontiguousarray(kw[::-1])  # key j at row T - 1 - j
        kk = min(k, T)
        out_s = np.zeros((T, kk), np.int64)
        out_i = np.zeros((T, kk), np.int64)
        out_v = np.zeros((T, kk), bool)
        pairs = considered = 0
        for r0 in range(0, T, self.block_rows):
            r1 = min(T, r0 + self.block_rows)
            m = r1 - r0
            s_d, info = packed_scores(qw[r0:r1], kw[r0:r1], cb, att.score, q_pop=q_pop[r0:r1],
                                      k_pop=k_pop[r0:r1], threads=self.threads)
            pairs += info["pairs_computed"]
            considered += info["pairs_total"] + m * r0
            idx_d, val_d = select_winners(s_d, k, np.tril(np.ones((m, m), bool)))
            cand_s, cand_i, cand_v = [np.take_along_axis(s_d, idx_d, 1)], [idx_d + r0], [val_d]
            if r0 > 0:
                kp = min(k, r0)
                ps = np.empty((m, kp), np.int64)
                pi = np.empty((m, kp), np.int64)
                aq = q_pop[r0:r1] > 0
                if aq.any():
                    dist, ridx = hdc.topk(np.ascontiguousarray(qw[r0:r1][aq]), k_rev[T - r0:], kp,
                                          threads=self.threads)
                    PACKED_CALLS["topk"] += 1
                    pairs += int(aq.sum()) * r0
                    ps[aq] = cb - 2 * dist.astype(np.int64)
                    pi[aq] = r0 - 1 - ridx  # newest-first row -> time index
                if not aq.all():
                    # silent queries: hamming(0, key) = |key|, no pairwise work at all
                    s_sil = (cb - 2 * k_pop[:r0])[None, :]
                    i_sil, _ = select_winners(s_sil, kp)
                    ps[~aq] = np.take_along_axis(s_sil, i_sil, 1)
                    pi[~aq] = i_sil
                cand_s.append(ps)
                cand_i.append(pi)
                cand_v.append(np.ones((m, kp), bool))
            cs, ci, cv = (np.concatenate(c, 1) for c in (cand_s, cand_i, cand_v))
            comp = np.where(cv, cs * T + ci, _NEG)
            order = np.argsort(-comp, axis=1, kind="stable")[:, :kk]
            out_s[r0:r1] = np.take_along_axis(cs, order, 1)
            out_i[r0:r1] = np.take_along_axis(ci, order, 1)
            out_v[r0:r1] = np.take_along_axis(cv, order, 1)
        info = {"active_queries": int((q_pop > 0).sum()), "active_keys": int((k_pop > 0).sum()),
                "pairs_computed": pairs, "pairs_total": considered}
        return out_s, out_i, out_v, info

    def _allowed_fn(self):
        att = self.att

        def fn(q0, q1, n_keys):
            return allowed_keys(att, q1 - q0, q1, device="cpu")[:, :n_keys].numpy()
        return fn

    # ------------------------------------------------------------------ full sequences
    @torch.no_grad()
    def core(self, x: torch.Tensor):
        """The attention core on packed codes; returns (y before c_proj (B, nh, T, hs) numpy, winners)."""
        q, k, v, _ = self.att.codes(x)                      # (B, nh, T, cb) {0,1}; v (B, nh, T, hs)
        return self.core_from_codes(pack_codes(q), pack_codes(k), v.float().cpu().numpy())

    def core_from_codes(self, qw: np.ndarray, kw: np.ndarray, v: np.ndarray):
        """Causal k-WTA attention core from packed codes (a full sequence, queries = keys = 0..T-1).

        Shapes: qw, kw (B, nh, T, W) uint64; v (B, nh, T, hs) float32 ->
        (y (B, nh, T, hs) float32, winners: list over (b, h) of (idx (T, kmax), valid)).
        """
        att = self.att
        B, nh, T, _ = qw.shape
        scales = self._scales()
        y = np.empty((B, nh, T, att.head_size), np.float32)
        winners = []
        totals = {"active_queries": 0, "active_keys": 0, "pairs_computed": 0, "pairs_total": 0}
        allowed_fn = self._allowed_fn()
        method = self.prefill_method()
        for b in range(B):
            for h in range(nh):
                if method == "causal_kernel":
                    s, idx, valid, info = causal_topk(qw[b, h], kw[b, h], att.code_bits, att.score, att.k,
                                                      window=att.prior_window,
                                                      random_frac=att.prior_random_frac, seed=att.prior_seed)
                elif method == "fused_topk":
                    s, idx, valid, info = self._head_winners_fused(qw[b, h], kw[b, h])
                else:
                    s, idx, valid, info = self._head_winners(qw[b, h], kw[b, h], 0, allowed_fn)
                y[b, h] = aggregate_winners(s, idx, valid, v[b, h], float(scales[h]))
                winners.append((idx, valid))
                for key in totals:
                    totals[key] += info[key]
        # pairs_total: pairs the blocks considered; pairs_computed: those a pairwise kernel evaluated
        # (the rest involved a silent code); causal_pairs: what a causal dense attention evaluates
        totals["causal_pairs"] = B * nh * T * (T + 1) // 2
        totals["method"] = method
        self.last_info = totals
        return y, winners

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as ``att(x)`` (no stats recorded), computed on packed codes. Shapes: (B, T, C) -> (B, T, C)."""
        from .attention import _check_input
        _check_input(x, self.att.d_model, self.att.max_seq_len)
        B, T, C = x.shape
        y, _ = self.core(x)
        y = torch.from_numpy(y).to(x.dtype).transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.att.c_proj(y)

    __call__ = forward

    @torch.no_grad()
    def winners(self, x: torch.Tensor):
        """The winning key indices per (batch, head), in order b-major: list of (idx (T, kmax), valid)."""
        return self.core(x)[1]

    # ------------------------------------------------------------------ decoding
    def new_cache(self, capacity: int) -> DecodeCache:
        att = self.att
        if capacity > att.max_seq_len:
            raise ValueError(f"cache capacity {capacity} exceeds max_seq_len {att.max_seq_len}")
        nh = att.n_head
        return DecodeCache(cap=capacity, k_rev=np.zeros((nh, capacity, self.n_words), np.uint64),
                           kpop_rev=np.zeros((nh, capacity), np.int64),
                           v=np.zeros((nh, capacity, att.head_size), np.float32), scales=self._scales())

    @torch.no_grad()
    def prefill(self, x: torch.Tensor, capacity: int | None = None):
        """Run a prompt (batch 1) and keep its keys for :meth:`step`. Shapes: x (1, T, C) -> y (1, T, C), cache."""
        if x.dim() != 3 or x.shape[0] != 1:
            raise ValueError(f"prefill takes one sequence (1, T, C), got {tuple(x.shape)}")
        att = self.att
        T = x.shape[1]
        cache = self.new_cache(att.max_seq_len if capacity is None else capacity)
        if T > cache.cap:
            raise ValueError(f"prompt of {T} tokens exceeds the cache capacity {cache.cap}")
        q, k, v, state = att.codes(x)
        self.append(cache, pack_codes(k[0]), v[0].float().numpy(), state)
        y = self.forward(x)
        return y, cache

    def append(self, cache: DecodeCache, kw: np.ndarray, v: np.ndarray, state: dict | None = None) -> None:
        """Add packed keys (nh, t, W) and values (nh, t, hs) after the cached ones (k_rev stays newest first)."""
        t = kw.shape[1]
        n0, cap = cache.n, cache.cap
        if n0 + t > cap:
            raise ValueError(f"decode cache full: {n0} + {t} tokens exceed capacity {cap}")
        # key n0 + i goes to row cap - 1 - (n0 + i): reversed time order
        cache.k_rev[:, cap - n0 - t:cap - n0] = kw[:, ::-1]
        cache.kpop_rev[:, cap - n0 - t:cap - n0] = hdc.popcount(np.ascontiguousarray(kw[:, ::-1]))
        cache.v[:, n0:n0 + t] = v
        cache.n = n0 + t
        cache.state = state or {}

    @torch.no_grad()
    def step(self, x_t: torch.Tensor, cache: DecodeCache) -> torch.Tensor:
        """One decoding step: the new token's query against all cached keys (itself included).

        Shapes: x_t (1, 1, C) -> y_t (1, 1, C). Appends the token's key and value to ``cache``.
        """
        att = self.att
        q, k, v, state = att.codes(x_t, cache.state)        # (1, nh, 1, cb)
        self.append(cache, pack_codes(k[0]), v[0].float().numpy(), state)
        y = self.step_core(pack_codes(q[0, :, 0]), cache)   # (nh, hs)
        y = torch.from_numpy(y).to(x_t.dtype).reshape(1, 1, att.d_model)
        return att.c_proj(y)

    def step_core(self, q_words: np.ndarray, cache: DecodeCache) -> np.ndarray:
        """Attention core of one decode step. Shapes: q_words (nh, W) -> (nh, hs) float32.

        The hot loop calls the backend's top-k kernel directly: its inputs are built here with
        known shapes and dtypes, so the public wrapper's validation would only add latency.
        """
        att = self.att
        n, cap, nh, cb = cache.n, cache.cap, att.n_head, att.code_bits
        if q_words.shape != (nh, self.n_words) or q_words.dtype != np.uint64:
            raise ValueError(f"q_words must be ({nh}, {self.n_words}) uint64, got {q_words.shape} {q_words.dtype}")
        if n < 1:
            raise ValueError("step_core needs at least one cached key")
        q_words = np.ascontiguousarray(q_words)
        q_pop = np.bitwise_count(q_words).sum(1)            # (nh,): a few words, cheaper than a kernel call
        kmax = int(_k_row(att.k, np.array([n]))[0])
        S = np.zeros((nh, kmax), np.int64)
        I = np.zeros((nh, kmax), np.int64)
        valid = np.ones((nh, kmax), bool)
        if self.fused and self._fused_ok:
            kern = hdc.backends.get_backend()
            threads = hdc.backends.resolve_threads(self.threads)
            d = np.empty((1, kmax), np.int32)
            ri = np.empty((1, kmax), np.int64)
            for h in range(nh):
                keys = cache.k_rev[h, cap - n:]             # (n, W), newest first, contiguous
                if q_pop[h] > 0:
                    # smallest Hamming distance = largest bipolar score; newest-first order turns
                    # topk's "lower index wins" into "more recent key wins"
                    kern.topk(q_words[h:h + 1], keys, kmax, d, ri, threads)
                    PACKED_CALLS["topk"] += 1
                    S[h] = cb - 2 * d[0].astype(np.int64)
                    I[h] = n - 1 - ri[0]
                else:  # silent query: hamming(0, key) = |key|, no pairwise work
                    s_row = (cb - 2 * cache.kpop_rev[h, cap - n:][::-1])[None, :]
                    idx, _ = select_winners(s_row, att.k)
                    S[h], I[h] = s_row[0, idx[0]], idx[0]
        else:
            allowed = allowed_keys(att, 1, n, device="cpu").numpy()
            for h in range(nh):
                keys = cache.k_rev[h, cap - n:]
                s_rev, _ = packed_scores(q_words[h:h + 1], keys, cb, att.score, q_pop=q_pop[h:h + 1],
                                         k_pop=cache.kpop_rev[h, cap - n:], threads=self.threads)
                s_full = s_rev[:, ::-1]                     # (1, n) time order
                idx, val = select_winners(s_full, att.k, allowed)
                w = idx.shape[1]
                S[h, :w], I[h, :w], valid[h, :w] = np.take_along_axis(s_full, idx, 1)[0], idx[0], val[0]
                valid[h, w:] = False
        # all heads at once: softmax over each head's winners, weighted sum of their values
        scales = self._scales() if cache.scales is None else cache.scales
        logits = np.where(valid, S.astype(np.float32) * scales[:, None], np.float32(-np.inf))
        logits -= logits.max(1, keepdims=True)
        w = np.exp(logits)
        w /= w.sum(1, keepdims=True)
        vals = cache.v[np.arange(nh)[:, None], I]           # (nh, kmax, hs)
        return np.einsum("hk,hkd->hd", w, vals, dtype=np.float32)


@contextlib.contextmanager
def packed_model(model: torch.nn.Module, **kw):
    """Within the block, every :class:`SpikingKWTAAttention` in ``model`` runs on the packed path.

    Example: ``with packed_model(lm): logits, _ = lm(idx)``.
    """
    swapped = []
    for mod in model.modules():
        if isinstance(mod, SpikingKWTAAttention):
            p = PackedSpikingAttention(mod, **kw)
            swapped.append((mod, mod.__dict__.get("forward")))
            mod.forward = p.forward  # instance attribute shadows the class method
    try:
        yield model
    finally:
        for mod, old in swapped:
            if old is None:
                del mod.forward
            else:
                mod.forward = old
