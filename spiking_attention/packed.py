"""Packed-bit inference for :class:`~spiking_attention.attention.SpikingKWTAAttention`.

The binary query and key codes are packed into uint64 words (:func:`hdc.pack_bits`) and the
winners are chosen by the hdc kernels, through the one backend registry (C / Numba / NumPy,
whichever :mod:`hdc.backends` has selected; ``HDC_BACKEND=numpy`` reaches this path too). The
dense parts (Q/K/V/output projections and the neuron) run through the module's own torch code,
so both paths see bit-identical codes; what this module replaces is the attention core, the
only part that grows with the context length, and it reads only the k winners' value rows.

Score identities (integers, exact):

* ``"hamming"``: ``score = code_bits - 2 * hamming(q, k)`` (the bipolar dot product), so the
  best keys are those at the smallest Hamming distance;
* ``"overlap"``: ``score = popcount(q AND k)``;
* graded codes (spike counts c in 0..L-1, ``levels = L``) are stored as P = ceil(log2 L)
  bit-planes side by side, plane a holding bit a of every count. Their dot product is
  ``sum_ab 2^(a+b) popcount(q_a AND k_b)``, and the centred ``"hamming"`` score
  ``(2q-L+1).(2k-L+1) = 4 q.k - 2(L-1)(|q| + |k|) + (L-1)^2 code_bits`` with ``|q| = sum_a 2^a
  popcount(q_a)``: the bit-plane trick of the HDC classifiers' integer counters.
  When L = 2^P the centred level is ``2q - L + 1 = sum_a 2^a (2 q_a - 1)``, a weighted sum of
  the planes' bipolar codes, so the score is ``(L-1)^2 code_bits - 2 sum_ab 2^(a+b)
  hamming(q_a, k_b)``: affine in one Hamming distance between *expanded* codes (plane a of
  the query and plane b of the key side by side, 2^(a+b) copies of each pair;
  :func:`expand_codes`). The causal top-k kernel then ranks graded codes exactly, ties
  included, on (L-1)^2 times the bits of a binary code. The AND popcount of the same
  expanded codes is the graded overlap ``q.k`` itself, for any L.

Two ways to choose the winners, both exact and tested against the torch path:

* ``"kernel"`` (``"auto"`` whenever it applies: an integer k and no random long-range links):
  :func:`hdc.causal_topk`, one causal scan per (sequence, head) with the model's tie rule
  (equal scores go to the more recent key) built in; the brain prior's local window is its
  ``window`` argument;
* ``"matrix"``: :func:`hdc.hamming_matrix` over blocks of query rows, then NumPy selection
  under the module's allowed-key mask (any prior, fractional k): the plain reference.

Decoding keeps a :class:`KVCache` of packed keys and float values per layer; each new token's
query is scored against the cached keys only.

Example::

    >>> patt = att.packed()                            # att: a trained SpikingKWTAAttention
    >>> y = patt(x)                                    # == att(x) to ~1e-6, (B, T, C)
    >>> y0, cache = patt.prefill(x[:1, :10]); y1 = patt.step(x[:1, 10:11], cache)
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch

import hdc
from hdc import backends as _bk

from .attention import (SCORES, SpikingKWTAAttention, _check_input, allowed_keys, n_planes,
                        packed_code_words, selection_masks)

__all__ = ["pack_codes", "expand_codes", "packed_scores", "select_winners", "aggregate_winners", "kernel_winners",
           "PackedSpikingAttention", "KVCache", "METHODS"]

METHODS = ("auto", "kernel", "matrix")

_NEG = -(1 << 62)  # composite key of a disallowed entry: below every real one


def pack_codes(bits, levels: int = 2) -> np.ndarray:
    """Pack {0,1} codes (torch or numpy) into uint64 words; graded codes (counts 0..levels-1)
    into their bit-planes, plane a's words after plane a-1's.

    Shapes: (..., code_bits) -> (..., n_planes(levels) * n_words).
    """
    if levels == 2:
        bits = _as_numpy(bits)
        return hdc.pack_bits(bits.astype(bool) if bits.dtype != np.bool_ else bits)
    planes = _bit_planes(bits, levels)                                    # (..., P, cb)
    return np.concatenate([hdc.pack_bits(planes[..., a, :]) for a in range(planes.shape[-2])], axis=-1)


def _as_numpy(x) -> np.ndarray:
    return np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x)


def _bit_planes(counts, levels: int) -> np.ndarray:
    """Graded codes (integer counts 0..levels-1, torch or numpy) -> their bit-planes, plane a
    holding bit a of every count; anything else raises. Shapes: (..., cb) -> (..., P, cb) bool."""
    raw = _as_numpy(counts)
    c = raw.astype(np.int64)
    if c.size and (c.min() < 0 or c.max() >= levels or not np.array_equal(c, raw)):
        raise ValueError(f"graded codes must be integer counts in [0, {levels - 1}] for levels={levels}")
    return ((c[..., None, :] >> np.arange(n_planes(levels))[:, None]) & 1).astype(bool)


def expand_codes(counts, levels: int, side: str) -> np.ndarray:
    """Graded codes (counts 0..levels-1) -> the expanded binary codes whose Hamming distance is
    ``sum_ab 2^(a+b) hamming(q_a, k_b)`` (module docstring): for every plane pair (a, b),
    2^(a+b) copies of plane a's bits (``side="query"``) or plane b's (``side="key"``), side by
    side at the bit level, so they pack into ceil((2^P-1)^2 code_bits / 64) words.

    The centred ("hamming") score needs L = 2^P; the AND popcount is the graded overlap for any L.
    Shapes: (..., code_bits) -> (..., (2^P - 1)^2 * code_bits) bool, P = n_planes(levels).
    """
    planes = _bit_planes(counts, levels)                                  # (..., P, cb)
    P, cb = planes.shape[-2:]
    return planes.reshape(*planes.shape[:-2], P * cb)[..., _expansion_index(P, cb, side)]


@functools.lru_cache(maxsize=64)
def _expansion_index(P: int, code_bits: int, side: str) -> np.ndarray:
    """Positions in the planes (P * code_bits, plane-major) of every bit of an expanded code."""
    if side not in ("query", "key"):
        raise ValueError(f"side must be 'query' or 'key', got {side!r}")
    bits = np.arange(code_bits)
    return np.concatenate([(a if side == "query" else b) * code_bits + bits
                           for a in range(P) for b in range(P) for _ in range(1 << (a + b))])


def _to_score(raw: np.ndarray, code_bits: int, score: str, levels: int = 2) -> np.ndarray:
    """Kernel output (Hamming distance, of expanded codes when graded, or AND count) -> the
    model's integer score."""
    raw = raw.astype(np.int64)
    return (levels - 1) ** 2 * code_bits - 2 * raw if score == "hamming" else raw


def packed_scores(q_words: np.ndarray, k_words: np.ndarray, code_bits: int, score: str, *,
                  levels: int = 2, threads: int | None = None) -> np.ndarray:
    """Integer scores of every (query, key) pair from packed codes (the plain matrix path).

    ``overlap`` uses ``|q AND k| = (|q| + |k| - hamming(q, k)) / 2``, so the one Hamming kernel
    serves both scores; graded codes sum it over bit-plane pairs (module docstring).
    Shapes: q_words (m, P*W), k_words (n, P*W) -> (m, n) int64, P = n_planes(levels).
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    if levels == 2:
        ham = hdc.hamming_matrix(q_words, k_words, threads=threads).astype(np.int64)     # (m, n)
        if score == "hamming":
            return code_bits - 2 * ham
        q_pop, k_pop = hdc.popcount(q_words), hdc.popcount(k_words)
        return (q_pop[:, None] + k_pop[None, :] - ham) // 2
    P = n_planes(levels)
    W = q_words.shape[-1] // P
    qp = [np.ascontiguousarray(q_words[:, a * W:(a + 1) * W]) for a in range(P)]   # (m, W) per plane
    kp = [np.ascontiguousarray(k_words[:, b * W:(b + 1) * W]) for b in range(P)]   # (n, W) per plane
    q_pop = [hdc.popcount(x).astype(np.int64) for x in qp]
    k_pop = [hdc.popcount(x).astype(np.int64) for x in kp]
    dot = np.zeros((q_words.shape[0], k_words.shape[0]), np.int64)
    for a in range(P):
        for b in range(P):
            ham = hdc.hamming_matrix(qp[a], kp[b], threads=threads).astype(np.int64)
            dot += (q_pop[a][:, None] + k_pop[b][None, :] - ham) // 2 << (a + b)
    if score == "overlap":
        return dot
    c = levels - 1
    q_sum = sum(q_pop[a] << a for a in range(P))                                    # (m,) sum of counts
    k_sum = sum(k_pop[b] << b for b in range(P))
    return 4 * dot - 2 * c * (q_sum[:, None] + k_sum[None, :]) + c * c * code_bits


def _k_row(k, n_allowed: np.ndarray) -> np.ndarray:
    """numpy mirror of :func:`spiking_attention.kwta.resolve_k` (validated there)."""
    if isinstance(k, (int, np.integer)) and not isinstance(k, bool):
        return np.minimum(n_allowed, int(k))
    kr = np.maximum(np.ceil(n_allowed.astype(np.float64) * float(k)).astype(np.int64), 1)
    return np.minimum(kr, n_allowed)


def select_winners(scores: np.ndarray, k, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k best allowed keys per row, best first; ties go to the higher (more recent) index.

    The rule of :func:`~spiking_attention.kwta.kwta_mask`, made exact by ranking the unique
    composite ``score * n + j`` (integer scores only).

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


def kernel_winners(q_words: np.ndarray, k_words: np.ndarray, code_bits: int, score: str, k: int, *,
                   window: int | None = None, skip_recent: int = 0, threads: int | None = None,
                   levels: int = 2):
    """Causal k-WTA on packed codes through :func:`hdc.causal_topk` (queries = the last positions).

    Shapes: q_words (m, W), k_words (n, W) uint64 -> scores (m, k) int64 (the model's score),
    idx (m, k) int64, valid (m, k) bool (False where a row had fewer than k allowed keys).
    """
    metric = "hamming" if score == "hamming" else "overlap"
    raw, idx = hdc.causal_topk(q_words, k_words, k, window=window, skip_recent=skip_recent, metric=metric,
                               threads=threads)
    valid = idx >= 0
    return np.where(valid, _to_score(raw, code_bits, score, levels), 0), np.where(valid, idx, 0), valid


def aggregate_winners(scores: np.ndarray, idx: np.ndarray, valid: np.ndarray, v: np.ndarray,
                      scale) -> np.ndarray:
    """Softmax over the winners' scaled scores, times their values (rows with no winner give 0).

    ``scale`` is a float or one factor per row. Shapes: scores/idx/valid (m, kmax) gathered at
    the winners, v (n, hs) or (m, n, hs) per row -> (m, hs) float32.
    """
    scale = np.asarray(scale, np.float32).reshape(-1, 1) if np.ndim(scale) else np.float32(scale)
    logits = np.where(valid, scores.astype(np.float32) * scale, np.float32(-np.inf))
    top = logits.max(1, keepdims=True)
    w = np.exp(logits - np.where(np.isfinite(top), top, 0))
    w /= np.maximum(w.sum(1, keepdims=True), np.float32(1e-30))
    vals = v[idx] if v.ndim == 2 else v[np.arange(len(idx))[:, None], idx]   # (m, kmax, hs)
    return np.einsum("mk,mkh->mh", w, vals, dtype=np.float32)


@dataclass
class KVCache:
    """One layer's decoding state: packed keys and float values in time order, LIF membranes."""

    cap: int
    k: np.ndarray            # (nh, cap, W) uint64, key of token t at row t
    v: np.ndarray            # (nh, cap, hs) float32
    n: int = 0
    state: dict = field(default_factory=dict)
    scales: np.ndarray | None = None  # (nh,) score -> logit factors, read from the module at creation


class PackedSpikingAttention:
    """Inference-only packed form of a :class:`SpikingKWTAAttention` (reads its weights live).

    Shapes: forward x (B, T, C) -> (B, T, C); codes packed to (B, nh, T, n_words).
    """

    def __init__(self, att: SpikingKWTAAttention, *, method: str = "auto", block_rows: int = 128,
                 threads: int | None = None):
        if not isinstance(att, SpikingKWTAAttention):
            raise TypeError(f"PackedSpikingAttention wraps a SpikingKWTAAttention, got {type(att).__name__}")
        if att.output != "softmax":
            raise ValueError(f"the packed path implements output='softmax' only, got {att.output!r}")
        if getattr(att, "tie_rule", "recent") != "recent":
            raise ValueError("the packed path implements tie_rule='recent' only (ties to the more recent key)")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if isinstance(block_rows, bool) or not isinstance(block_rows, int) or block_rows < 1:
            raise ValueError(f"block_rows must be a positive int, got {block_rows!r}")
        kernel_ok = att.kernel_ranks()
        if method == "kernel" and not kernel_ok:
            raise ValueError("method='kernel' needs an integer k, no random long-range links, and binary codes, "
                             "graded ones under score='overlap', or graded ones with a power-of-2 number of "
                             "levels under score='hamming' "
                             f"(k={att.k!r}, prior_random_frac={att.prior_random_frac}, levels={att.levels}, "
                             f"score={att.score!r}); use 'matrix' or 'auto'")
        self.att, self.block_rows, self.threads = att, block_rows, threads
        self.method = ("kernel" if kernel_ok else "matrix") if method == "auto" else method
        # words of one code as this path stores it: plane-packed (matrix), expanded (graded kernel)
        self.expanded = self.method == "kernel" and att.levels > 2
        self.n_words = packed_code_words(att.code_bits, att.levels, self.expanded)

    def _scales(self) -> np.ndarray:
        return self.att.score_scale().detach().reshape(-1).cpu().numpy().astype(np.float32)  # (nh,)

    # ------------------------------------------------------------------ winners of one head
    def _kernel_passes(self) -> list[tuple[int, int | None, int]]:
        """The layer's selections as causal_topk calls (k, window, skip_recent): one k-WTA over
        the (windowed) causal keys, or with a local window every local key plus k far ones."""
        att = self.att
        if att.local_window is None:
            return [(att.k, att.prior_window, 0)]
        w = att.local_window
        return [(w, w, 0), (att.k, None, w)]

    def _winners(self, qw: np.ndarray, kw: np.ndarray):
        """Winners of queries at the last m positions against keys 0..n-1 (one head).

        Shapes: qw (m, W), kw (n, W) -> scores, idx, valid (m, kmax)."""
        att = self.att
        if self.method == "kernel":
            parts = [kernel_winners(qw, kw, att.code_bits, att.score, k, window=window, skip_recent=skip,
                                    threads=self.threads, levels=att.levels)
                     for k, window, skip in self._kernel_passes()]
            return tuple(np.concatenate([p[i] for p in parts], axis=1) for i in range(3))
        m, n = qw.shape[0], kw.shape[0]
        out = []
        for r0 in range(0, m, self.block_rows):   # bounded memory: one (rows, keys) block at a time
            r1 = min(m, r0 + self.block_rows)
            n_keys = n - m + r1                   # causal: nothing after the block's last query
            s = packed_scores(qw[r0:r1], kw[:n_keys], att.code_bits, att.score, levels=att.levels,
                              threads=self.threads)
            allowed = allowed_keys(att, r1 - r0, n_keys, device="cpu")
            picks = [select_winners(s, mask.shape[1] if k is None else k, mask.numpy()) for k, mask in
                     selection_masks(att.k, allowed, att.local_window)]
            idx = np.concatenate([p[0] for p in picks], axis=1)
            out.append((np.take_along_axis(s, idx, 1), idx, np.concatenate([p[1] for p in picks], axis=1)))
        kmax = max(o[1].shape[1] for o in out)
        pad = lambda a: np.pad(a, ((0, 0), (0, kmax - a.shape[1])))  # noqa: E731 - zeros / False
        return tuple(np.concatenate([pad(o[i]) for o in out]) for i in range(3))

    # ------------------------------------------------------------------ full sequences
    @torch.no_grad()
    def core(self, x: torch.Tensor):
        """The attention core on packed codes; returns (y before c_proj (B, nh, T, hs) numpy, winners)."""
        q, k, v, _ = self.att.codes(x)                      # (B, nh, T, cb) {0,1}; v (B, nh, T, hs)
        return self.core_from_codes(self.encode(q, "query"), self.encode(k, "key"), v.float().cpu().numpy())

    def encode(self, codes, side: str) -> np.ndarray:
        """Codes (..., code_bits) -> the words this path scores: packed (binary), bit-planes
        (graded, matrix) or expanded bit-planes (graded, kernel). Shapes: -> (..., n_words)."""
        if self.expanded:
            return pack_codes(expand_codes(codes, self.att.levels, side))
        return pack_codes(codes, self.att.levels)

    def core_from_codes(self, qw: np.ndarray, kw: np.ndarray, v: np.ndarray):
        """Causal k-WTA attention core from packed codes (a full sequence, queries = keys = 0..T-1).

        Shapes: qw, kw (B, nh, T, W) uint64; v (B, nh, T, hs) float32 ->
        (y (B, nh, T, hs) float32, winners: list over (b, h) of (idx (T, kmax), valid)).
        """
        B, nh, T, _ = qw.shape
        scales = self._scales()
        y = np.empty((B, nh, T, self.att.head_size), np.float32)
        winners = []
        for b in range(B):
            for h in range(nh):
                s, idx, valid = self._winners(qw[b, h], kw[b, h])
                y[b, h] = aggregate_winners(s, idx, valid, v[b, h], float(scales[h]))
                winners.append((idx, valid))
        return y, winners

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as ``att(x)`` (no stats recorded), computed on packed codes. Shapes: (B, T, C) -> (B, T, C)."""
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
    def new_cache(self, capacity: int | None = None) -> KVCache:
        att = self.att
        capacity = att.max_seq_len if capacity is None else capacity
        if isinstance(capacity, bool) or not isinstance(capacity, int) or not 1 <= capacity <= att.max_seq_len:
            raise ValueError(f"cache capacity must be an int in [1, max_seq_len={att.max_seq_len}], got {capacity!r}")
        nh = att.n_head
        return KVCache(cap=capacity, k=np.zeros((nh, capacity, self.n_words), np.uint64),
                       v=np.zeros((nh, capacity, att.head_size), np.float32), scales=self._scales())

    @torch.no_grad()
    def prefill(self, x: torch.Tensor, capacity: int | None = None):
        """Run a prompt (batch 1) and keep its keys for :meth:`step`. Shapes: x (1, T, C) -> y (1, T, C), cache."""
        if x.dim() != 3 or x.shape[0] != 1:
            raise ValueError(f"prefill takes one sequence (1, T, C), got shape {tuple(x.shape)}")
        _check_input(x, self.att.d_model, self.att.max_seq_len)
        cache = self.new_cache(capacity)
        if x.shape[1] > cache.cap:
            raise ValueError(f"prompt of {x.shape[1]} tokens exceeds the cache capacity {cache.cap}")
        q, k, v, state = self.att.codes(x)
        qw, kw, vn = self.encode(q, "query"), self.encode(k, "key"), v.float().cpu().numpy()
        self.append(cache, kw[0], vn[0], state)
        y, _ = self.core_from_codes(qw, kw, vn)
        B, nh, T, hs = y.shape
        y = torch.from_numpy(y).to(x.dtype).transpose(1, 2).reshape(B, T, nh * hs)
        return self.att.c_proj(y), cache

    def append(self, cache: KVCache, kw: np.ndarray, v: np.ndarray, state: dict | None = None) -> None:
        """Add packed keys (nh, t, W) and values (nh, t, hs) after the cached ones."""
        t, n0 = kw.shape[1], cache.n
        if n0 + t > cache.cap:
            raise ValueError(f"decode cache full: {n0} + {t} tokens exceed capacity {cache.cap}")
        cache.k[:, n0:n0 + t] = kw
        cache.v[:, n0:n0 + t] = v
        cache.n = n0 + t
        cache.state = state or {}

    @torch.no_grad()
    def step(self, x_t: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One decoding step: the new token's query against all cached keys (itself included).

        Shapes: x_t (1, 1, C) -> y_t (1, 1, C). Appends the token's key and value to ``cache``.
        """
        if x_t.dim() != 3 or x_t.shape[:2] != (1, 1):
            raise ValueError(f"step takes one token (1, 1, C), got shape {tuple(x_t.shape)}")
        att = self.att
        q, k, v, state = att.codes(x_t, cache.state)        # (1, nh, 1, cb)
        self.append(cache, self.encode(k[0], "key"), v[0].float().cpu().numpy(), state)
        y = self.step_core(self.encode(q[0, :, 0], "query"), cache)   # (nh, hs)
        return att.c_proj(torch.from_numpy(y).to(x_t.dtype).reshape(1, 1, att.d_model))

    def step_core(self, q_words: np.ndarray, cache: KVCache) -> np.ndarray:
        """Attention core of one decode step. Shapes: q_words (nh, W) -> (nh, hs) float32.

        The kernel path calls the selected backend's ``causal_topk`` directly: the cache's
        arrays are built here with known shapes and dtypes, so the public wrapper's validation
        would only add latency to every generated token.
        """
        att = self.att
        n, nh = cache.n, att.n_head
        if q_words.shape != (nh, self.n_words) or q_words.dtype != np.uint64:
            raise ValueError(f"q_words must be ({nh}, {self.n_words}) uint64, got {q_words.shape} {q_words.dtype}")
        if n < 1:
            raise ValueError("step_core needs at least one cached key (append the token's key first)")
        q_words = np.ascontiguousarray(q_words)
        if self.method == "kernel":
            kern, threads = _bk.get_backend(), _bk.resolve_threads(self.threads)
            overlap = att.score == "overlap"
            parts = []
            for kk, window, skip in self._kernel_passes():
                raw = np.empty((nh, kk), np.int32)
                idx = np.empty((nh, kk), np.int64)
                for h in range(nh):
                    kern.causal_topk(q_words[h:h + 1], cache.k[h, :n], kk, n - 1, window, skip, overlap,
                                     raw[h:h + 1], idx[h:h + 1], threads)
                parts.append((raw, idx))
            raw = np.concatenate([p[0] for p in parts], axis=1)
            idx = np.concatenate([p[1] for p in parts], axis=1)
            valid = idx >= 0
            S, I = np.where(valid, _to_score(raw, att.code_bits, att.score, att.levels), 0), np.where(valid, idx, 0)
        else:
            rows = [self._winners(q_words[h:h + 1], cache.k[h, :n]) for h in range(nh)]
            kmax = max(r[1].shape[1] for r in rows)
            S, I, valid = (np.stack([np.pad(r[i][0], (0, kmax - r[i].shape[1])) for r in rows]) for i in range(3))
        scales = self._scales() if cache.scales is None else cache.scales
        vals = cache.v[:, :n]                               # (nh, n, hs): each head's own values
        return aggregate_winners(S, I, valid, vals, scales)
