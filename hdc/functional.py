"""The functional core: operations of hyperdimensional computing on packed binary words.

A batch of hypervectors is a C-contiguous uint64 array of shape (..., n_words) plus its
``dim`` in bits; bit i lives in word i // 64 at bit i % 64, and the pad bits past ``dim``
are zero after every operation. Each public function validates its inputs once, then
calls the kernel of the backend in use (see :mod:`hdc.backends`), which trusts them.

Two rules hold on every backend and ISA level:

* ``out=`` may share memory with any input (the same array, or a partial overlap): the
  result is computed into a temporary and copied into ``out`` whenever
  ``np.may_share_memory(out, input)``, so it always equals the ``out=None`` result.
* A function that takes ``dim`` refuses inputs whose pad bits (past ``dim`` in the last
  word) are set, with a ValueError naming the argument: such words are not a ``dim``-bit
  vector, and passing them on would make the answer depend on the backend.

Bipolar view: bit 0 <-> +1, bit 1 <-> -1, so XOR is elementwise multiplication and
``dot(a, b) = dim - 2 * hamming(a, b)``.
"""
from __future__ import annotations

import mmap
import numbers
import sys

import numpy as np

from . import backends as _bk
from .packing import WORD_BITS, check_dim, n_words_for, pack_bits, pad_mask, unpack_bits

__all__ = [
    "TIE_SEED",
    "random",
    "bind",
    "bundle",
    "weighted_bundle",
    "BundleAccumulator",
    "permute",
    "hamming",
    "similarity",
    "hamming_matrix",
    "topk",
    "causal_topk",
    "popcount",
    "to_bool",
    "from_bool",
    "to_bipolar",
    "from_bipolar",
    "to_bitarray",
    "from_bitarray",
    "check_words",
    "tie_vector",
]

#: Seed of the default tie-breaker vector used by bundle() when exactly half the inputs set a bit.
TIE_SEED = 0x71E5EED

# hamming_matrix / topk write int32 distances: a distance is at most dim, so dim must fit.
_MAX_DIM_INT32 = 2**31 - 1
_DEFAULT_TOPK_CHUNK_ROWS = 1 << 16  # stored rows per topk chunk (~80 MiB at dim 10,000)
_ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
_MAX_ROWS = 2**62  # the C kernels' row limit; also keeps n * n_words inside int64


# ---------------------------------------------------------------- validation
def check_words(x, name: str = "x", *, dim: int | None = None, min_ndim: int = 1) -> np.ndarray:
    """Return ``x`` if it is a valid word array, else raise naming the problem.

    Valid: a numpy array of native-endian uint64, C-contiguous, aligned, with at least
    ``min_ndim`` axes and (if ``dim`` is given) a last axis of ``n_words_for(dim)`` words.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy uint64 array of packed words, got {type(x).__name__}")
    if x.dtype != np.uint64:
        if x.dtype.kind == "u" and x.dtype.itemsize == 8:
            raise TypeError(f"{name} has byte-swapped dtype {x.dtype.str}; convert with "
                            f".astype(np.uint64)")
        raise TypeError(f"{name} must have dtype uint64 (packed words), got {x.dtype}")
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} axis/axes (..., n_words), got shape {x.shape}")
    if not x.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous; pass np.ascontiguousarray({name})")
    if not x.flags.aligned:
        raise ValueError(f"{name} is not aligned to 8 bytes; pass a copy (np.array({name}))")
    if dim is not None:
        if x.shape[-1] != n_words_for(dim):
            raise ValueError(f"{name} has {x.shape[-1]} words per vector but dim={dim} needs "
                             f"{n_words_for(dim)}")
        _check_pad(x, name, dim)
    return x


def _check_pad(x, name: str, dim: int) -> None:
    """Raise if any bit past ``dim`` is set (one pass over the last word of each vector)."""
    mask = pad_mask(dim)
    if x.size == 0 or mask == _ALL_ONES:
        return
    last = x[..., -1]
    bad = np.flatnonzero(last & ~mask)
    if bad.size:
        where = np.unravel_index(bad[0], last.shape) if last.ndim else ()
        raise ValueError(f"{name} has pad bits set past dim={dim} (vector {tuple(int(i) for i in where)}, "
                         f"last word {int(last.flat[bad[0]]):#x}): bits {dim % WORD_BITS}..63 of the last "
                         f"word must be zero; clear them with {name}[..., -1] &= hdc.pad_mask({dim}) "
                         f"or pass the dim the vectors were made with")


def _check_out(out, shape, dtype, name="out"):
    if out is None:
        return np.empty(shape, dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(out).__name__}")
    if out.dtype != dtype or out.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} and dtype {np.dtype(dtype).name}, "
                         f"got {out.shape} {out.dtype}")
    if not out.flags.c_contiguous or not out.flags.writeable or not out.flags.aligned:
        raise ValueError(f"{name} must be C-contiguous, aligned and writeable")
    return out


def _check_int(value, name: str) -> int:
    """``value`` as a Python int; Python and NumPy integers pass, bool and float do not."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int (Python or NumPy integer), got {value!r} "
                        f"of type {type(value).__name__}")
    return int(value)


def _may_alias(out, *inputs) -> bool:
    """Whether ``out`` may share memory with an input (the bounds test: cheap, conservative)."""
    return any(np.may_share_memory(out, a) for a in inputs)


def _same_words(a, b):
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"word counts differ: {a.shape[-1]} vs {b.shape[-1]} words per vector "
                         f"(different dims?)")


def _rows(x):
    """View (..., W) as (N, W) without copying (x is C-contiguous; W may be 0)."""
    return x.reshape(int(np.prod(x.shape[:-1])), x.shape[-1])


# ---------------------------------------------------------------- creation
def random(n: int, dim: int, seed=None) -> np.ndarray:
    """``n`` random hypervectors of ``dim`` bits, i.i.d. fair bits, pad bits zero.

    Shapes: -> (n, n_words) uint64. The same ``seed`` gives the same words on every
    platform and backend (NumPy's PCG64 bit stream).
    Example: ``hdc.random(3, 10_000, seed=1)``
    """
    n = _check_int(n, "n")
    if not 0 <= n <= _MAX_ROWS:
        raise ValueError(f"n must be in 0..2**62 vectors, got {n}")
    dim = check_dim(dim)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    words = rng.integers(0, 2**64, size=(n, n_words_for(dim)), dtype=np.uint64, endpoint=False)
    words[:, -1] &= pad_mask(dim)
    return words


def tie_vector(dim: int, seed: int = TIE_SEED) -> np.ndarray:
    """The tie-breaker vector bundle() uses by default: ``random(1, dim, seed)[0]``."""
    return random(1, dim, seed)[0]


# ---------------------------------------------------------------- bind
def bind(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None, *, threads: int | None = None):
    """Bind by XOR (self-inverse: ``bind(bind(a, b), b) == a``). Broadcasts over leading axes.

    ``out`` may be ``a`` or ``b`` or overlap them: the result is as if it were a fresh array.

    Shapes: (..., W) and (..., W) -> broadcast (..., W).
    Example: ``c = hdc.bind(key, value)``
    """
    check_words(a, "a")
    check_words(b, "b")
    _same_words(a, b)
    shape = np.broadcast_shapes(a.shape, b.shape)
    if a.shape != shape:
        a = np.ascontiguousarray(np.broadcast_to(a, shape))
    if b.shape != shape:
        b = np.ascontiguousarray(np.broadcast_to(b, shape))
    threads = _bk.resolve_threads(threads)
    out = _check_out(out, shape, np.uint64)
    if not a.size:
        return out
    # XOR is elementwise: out exactly equal to an input is safe in place on every backend;
    # any other overlap would read words another row (or thread) already overwrote.
    if any(_may_alias(out, t) and not _same_buffer(out, t) for t in (a, b)):
        out[...] = bind(a, b, threads=threads)
        return out
    _bk.get_backend().bind(_rows(a), _rows(b), _rows(out), threads)
    return out


def _same_buffer(x, y) -> bool:
    """Same memory, same layout: element i of x is element i of y."""
    return (x.__array_interface__["data"][0] == y.__array_interface__["data"][0]
            and x.shape == y.shape and x.strides == y.strides)


# ---------------------------------------------------------------- bundle
def _resolve_tie(tie, dim):
    if tie is None:
        return tie_vector(dim)
    if isinstance(tie, numbers.Integral) and not isinstance(tie, (bool, np.bool_)):
        return tie_vector(dim, int(tie))
    tie = check_words(tie, "tie", dim=dim)
    if tie.ndim != 1:
        raise ValueError(f"tie must be one vector of shape ({n_words_for(dim)},), got {tie.shape}")
    return tie


def bundle(x: np.ndarray, dim: int, *, axis: int = 0, tie=None, threads: int | None = None):
    """Bitwise majority over ``axis``.

    Tie rule (only possible for an even count): where exactly half the vectors set a bit,
    the result takes that bit of the tie-breaker: ``tie`` may be a vector, an int seed, or
    None for ``tie_vector(dim)`` (seed :data:`TIE_SEED`). Deterministic on every backend.

    Shapes: (..., n, ..., W) -> the same with ``axis`` removed.
    Example: ``s = hdc.bundle(hdc.random(5, 1000, seed=0), 1000)``
    """
    dim = check_dim(dim)
    check_words(x, "x", dim=dim, min_ndim=2)
    axis = _check_int(axis, "axis")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis {axis} is out of range for shape {x.shape}")
    axis %= x.ndim
    if axis == x.ndim - 1:
        raise ValueError("cannot bundle over the word axis (the last axis)")
    n = x.shape[axis]
    if n == 0:
        raise ValueError("cannot bundle an empty batch (0 vectors along axis)")
    tie = _resolve_tie(tie, dim)
    moved = np.moveaxis(x, axis, -2)  # (..., n, W)
    lead = moved.shape[:-2]
    stacks = np.ascontiguousarray(moved).reshape(-1, n, x.shape[-1])
    out = np.empty((stacks.shape[0], x.shape[-1]), np.uint64)
    kern = _bk.get_backend()
    threads = _bk.resolve_threads(threads)
    for i in range(stacks.shape[0]):
        kern.bundle_majority(stacks[i], dim, tie, out[i], threads)
    return out.reshape(lead + (x.shape[-1],))


def weighted_bundle(x: np.ndarray, weights, dim: int, *, tie=None) -> np.ndarray:
    """Weighted majority: bit j is set where ``sum_i w_i * (+1 if bit set else -1) > 0``.

    Exactly zero takes the tie-breaker bit (see :func:`bundle`). Integer and float weights
    both work; negative weights subtract a vector.

    Shapes: x (n, W), weights (n,) -> (W,).
    """
    dim = check_dim(dim)
    check_words(x, "x", dim=dim, min_ndim=2)
    if x.ndim != 2:
        raise ValueError(f"weighted_bundle expects x of shape (n, n_words), got {x.shape}")
    float_weights = np.asarray(weights).dtype.kind == "f"
    acc = BundleAccumulator(dim, dtype=np.float64 if float_weights else np.int64)
    acc.add(x, weights=weights)
    return acc.result(tie=tie)


class BundleAccumulator:
    """Streaming bundler: per-bit weighted counters, bounded memory, mergeable.

    ``add`` batches of any size (processed in chunks), ``merge`` another accumulator, and
    read the majority with ``result()``; ``counts`` holds ``sum_i w_i * bit_ij`` and
    ``total`` holds ``sum_i w_i``, so the bipolar sum is ``total - 2 * counts``.

    Limit (int64 counters): ``|counts|`` and ``|total|`` stay within :attr:`MAX_COUNT`
    (2**61), so ``total - 2 * counts`` is exact too; an ``add`` or ``merge`` that could pass
    it raises OverflowError before any counter changes.

    Example::

        acc = hdc.BundleAccumulator(10_000)
        for batch in batches:
            acc.add(batch)
        prototype = acc.result()
    """

    CHUNK_ROWS = 1 << 14
    #: bound on |counts| and |total| of int64 counters: 3 * 2**61 < 2**63 keeps the bipolar sum exact
    MAX_COUNT = 2**61

    def __init__(self, dim: int, *, dtype=np.int64):
        self.dim = check_dim(dim)
        self.n_words = n_words_for(self.dim)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.int64), np.dtype(np.float64)):
            raise TypeError("BundleAccumulator counters are int64 (integer weights) or float64")
        self.counts = np.zeros(self.dim, self.dtype)
        self.total = self.dtype.type(0)
        self.n_added = 0
        # cheap bounds lo <= every counter and total <= hi, as Python ints; the exact values
        # are computed (O(dim)) only when a bound would pass MAX_COUNT
        self._lo = self._hi = 0

    def _reserve(self, down: int, up: int, what: str) -> None:
        """Raise OverflowError unless every counter can move by -down..+up (both >= 0)."""
        if self.dtype != np.int64:
            return
        lo, hi = self._lo - down, self._hi + up
        if -self.MAX_COUNT <= lo and hi <= self.MAX_COUNT:
            self._lo, self._hi = lo, hi
            return
        total = int(self.total)
        lo = min(total, int(self.counts.min())) - down
        hi = max(total, int(self.counts.max())) + up
        if lo < -self.MAX_COUNT or hi > self.MAX_COUNT:
            raise OverflowError(
                f"{what} could take an int64 counter to {hi if hi > self.MAX_COUNT else lo}; the limit "
                f"is |count| <= 2**61 = {self.MAX_COUNT} (so that total - 2 * counts stays exact). "
                f"Use smaller weights, or BundleAccumulator(dim, dtype=np.float64)")
        self._lo, self._hi = lo, hi

    def add(self, x: np.ndarray, weights=None, *, threads: int | None = None) -> "BundleAccumulator":
        """Add vectors x (n, W) or (W,), each with weight 1 or ``weights[i]``."""
        check_words(x, "x", dim=self.dim)
        rows = _rows(x)
        n = rows.shape[0]
        if weights is None:
            self._reserve(0, n, f"adding {n} vectors")
            kern = _bk.get_backend()
            threads = _bk.resolve_threads(threads)
            tmp = self.counts if self.dtype == np.int64 else np.zeros(self.dim, np.int64)
            for s in range(0, n, self.CHUNK_ROWS):
                kern.bit_counts(rows[s:s + self.CHUNK_ROWS], self.dim, tmp, threads)
            if tmp is not self.counts:
                self.counts += tmp
            self.total += n
        else:
            w = np.asarray(weights)
            if w.ndim == 0:
                w = np.full(n, w)
            if w.shape != (n,):
                raise ValueError(f"weights must have shape ({n},) to match x, got {w.shape}")
            if w.dtype.kind not in "iuf" or (w.dtype.kind == "f" and not np.all(np.isfinite(w))):
                raise ValueError("weights must be finite real numbers")
            if w.dtype.kind == "f" and self.dtype == np.int64:
                if not np.all(w == np.round(w)):
                    raise TypeError("fractional weights need BundleAccumulator(dim, dtype=np.float64)")
            if self.dtype == np.int64 and n:
                self._reserve(*self._weight_range(w), "weights")
            w = w.astype(self.dtype)
            for s in range(0, n, self.CHUNK_ROWS):
                bits = unpack_bits(rows[s:s + self.CHUNK_ROWS], self.dim)  # (chunk, dim) bool
                self.counts += w[s:s + self.CHUNK_ROWS] @ bits.astype(self.dtype)
            self.total += w.sum()
        self.n_added += n
        return self

    def _weight_range(self, w) -> tuple[int, int]:
        """How far any counter can move down and up by adding weights ``w``: exact (-sum w-, sum w+)."""
        lo, hi = w.min(), w.max()
        if not (-self.MAX_COUNT <= lo and hi <= self.MAX_COUNT):  # compared before any cast
            bad = hi if hi > self.MAX_COUNT else lo
            raise OverflowError(f"weights must lie in -2**61..2**61 for int64 counters, got {int(bad)} "
                                f"(or use BundleAccumulator(dim, dtype=np.float64))")
        w = w.astype(np.int64)  # exact now: every weight fits
        if max(int(hi), -int(lo)) * w.size <= self.MAX_COUNT:  # int64 sums cannot wrap
            return -int(w[w < 0].sum()), int(w[w > 0].sum())
        return -sum(int(v) for v in w if v < 0), sum(int(v) for v in w if v > 0)

    def merge(self, other: "BundleAccumulator") -> "BundleAccumulator":
        """Add another accumulator's counters into this one (same dim)."""
        if not isinstance(other, BundleAccumulator):
            raise TypeError(f"can only merge a BundleAccumulator, got {type(other).__name__}")
        if other.dim != self.dim:
            raise ValueError(f"cannot merge accumulators of dims {self.dim} and {other.dim}")
        if other.dtype != self.dtype:
            raise TypeError(f"cannot merge {other.dtype} counters into {self.dtype} counters")
        if self.dtype == np.int64:
            total = int(other.total)
            self._reserve(max(0, -min(total, int(other.counts.min()))),
                          max(0, total, int(other.counts.max())), "merging")
        self.counts += other.counts
        self.total += other.total
        self.n_added += other.n_added
        return self

    def bipolar_sum(self) -> np.ndarray:
        """``sum_i w_i * bipolar(x_i)``, shape (dim,): +1 for a 0 bit, -1 for a 1 bit."""
        return self.total - 2 * self.counts

    def result(self, *, tie=None) -> np.ndarray:
        """The weighted majority vector (W,); ties take the tie-breaker bit (see bundle())."""
        if self.n_added == 0:
            raise ValueError("BundleAccumulator is empty: add vectors before reading the result")
        tie_bits = unpack_bits(_resolve_tie(tie, self.dim), self.dim)
        twice = 2 * self.counts
        return pack_bits((twice > self.total) | ((twice == self.total) & tie_bits))


# ---------------------------------------------------------------- permute
def permute(x: np.ndarray, shift: int, dim: int, out: np.ndarray | None = None, *,
            threads: int | None = None) -> np.ndarray:
    """Cyclic rotation of the ``dim`` bits by ``shift``: bit j moves to bit (j + shift) % dim.

    Any int shift (negative too); ``permute(permute(x, s, d), -s, d) == x``. ``out`` may be
    ``x`` or overlap it (computed through a temporary then). Pad bits of ``x`` must be zero.
    Shapes: (..., W) -> (..., W).
    """
    shift = _check_int(shift, "shift")
    dim = check_dim(dim)
    check_words(x, "x", dim=dim)
    threads = _bk.resolve_threads(threads)
    out = _check_out(out, x.shape, np.uint64)
    shift %= dim
    if x.size and _may_alias(out, x):  # a rotation reads other words of the row
        out[...] = permute(x, shift, dim, threads=threads)
    elif x.size:
        if shift == 0:
            np.copyto(out, x)
        else:
            _bk.get_backend().permute(_rows(x), shift, dim, _rows(out), threads)
    return out


# ---------------------------------------------------------------- distances
def popcount(x: np.ndarray, *, threads: int | None = None) -> np.ndarray:
    """Number of set bits per vector. Shapes: (..., W) -> (...) int64."""
    check_words(x, "x")
    out = np.zeros(x.shape[:-1], np.int64)
    if out.size and x.shape[-1]:  # 0-word vectors count 0 (the C kernels take no empty rows)
        _bk.get_backend().popcount(_rows(x), out.reshape(-1), _bk.resolve_threads(threads))
    return out


def hamming(a: np.ndarray, b: np.ndarray, *, threads: int | None = None) -> np.ndarray:
    """Hamming distance ``popcount(a ^ b)``, broadcasting over leading axes.

    Shapes: (..., W) and (..., W) -> broadcast (...) int64.
    """
    check_words(a, "a")
    check_words(b, "b")
    _same_words(a, b)
    shape = np.broadcast_shapes(a.shape, b.shape)
    kern = _bk.get_backend()
    threads = _bk.resolve_threads(threads)
    if a.shape != shape or b.shape != shape:
        # one vector against a batch: a 1 x n distance matrix, no broadcast copy
        if a.ndim == 1 and b.ndim == 2 or b.ndim == 1 and a.ndim == 2:
            single, batch = (a, b) if a.ndim == 1 else (b, a)
            d = np.zeros((1, batch.shape[0]), np.int32)
            if d.size and batch.shape[1]:
                kern.hamming_matrix(single.reshape(1, -1), batch, d, threads)
            return d[0].astype(np.int64)
        a = np.ascontiguousarray(np.broadcast_to(a, shape))
        b = np.ascontiguousarray(np.broadcast_to(b, shape))
    out = np.zeros(shape[:-1], np.int64)
    if out.size and shape[-1]:
        kern.hamming_rows(_rows(a), _rows(b), out.reshape(-1), threads)
    return out


def similarity(a: np.ndarray, b: np.ndarray, dim: int, *, threads: int | None = None) -> np.ndarray:
    """Normalised similarity ``1 - 2 * hamming / dim`` in [-1, 1]: the cosine of the bipolar
    vectors (1 = identical, 0 = unrelated random vectors, -1 = complements)."""
    dim = check_dim(dim)
    check_words(a, "a", dim=dim)
    check_words(b, "b", dim=dim)
    return 1.0 - 2.0 * hamming(a, b, threads=threads) / dim


def _check_pair(q, x, names=("Q", "X"), what="distance"):
    """Queries and stored rows: 2-D packed words of one width, within the int32 ``what`` limit."""
    check_words(q, names[0])
    check_words(x, names[1])
    if q.ndim != 2 or x.ndim != 2:
        raise ValueError(f"{names[0]} and {names[1]} must be 2-D (rows, n_words), got shapes {q.shape} "
                         f"and {x.shape}")
    _same_words(q, x)
    if q.shape[1] * WORD_BITS > _MAX_DIM_INT32:
        raise ValueError(f"vectors of {q.shape[1]} words exceed the int32 {what} limit "
                         f"({_MAX_DIM_INT32} bits)")


def hamming_matrix(Q: np.ndarray, X: np.ndarray, out: np.ndarray | None = None, *,
                   threads: int | None = None) -> np.ndarray:
    """All-pairs Hamming distances: ``out[i, j] = popcount(Q[i] ^ X[j])``.

    Shapes: Q (m, W), X (n, W) -> (m, n) int32. Pass a preallocated ``out`` to reuse
    memory (a fresh large output's first touch can cost more than the kernel); an ``out``
    that shares memory with Q or X is filled through a temporary.
    """
    _check_pair(Q, X)
    threads = _bk.resolve_threads(threads)
    out = _check_out(out, (Q.shape[0], X.shape[0]), np.int32)
    if out.size and Q.shape[1] and _may_alias(out, Q, X):  # kernels read Q/X after writing out
        out[...] = hamming_matrix(Q, X, threads=threads)
    elif out.size and Q.shape[1]:
        _bk.get_backend().hamming_matrix(Q, X, out, threads)
    elif out.size:
        out.fill(0)
    return out


def _madvise():
    """libc's madvise, or None where it is unavailable (non-Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).madvise
        fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        return fn
    except (OSError, AttributeError):
        return None


_MADV_DONTNEED = 4
_MADV_PAGEOUT = 21  # Linux >= 5.4; older kernels answer EINVAL and the pages stay
_madvise_fn = _madvise()


def _release_pages(X, chunk) -> None:
    """Drop a processed chunk of an np.memmap from the resident set.

    Streaming a 12 GB np.memmap otherwise leaves every page it touched in the process's
    resident set. Shared mappings (modes ``r``, ``r+``, ``w+``): MADV_DONTNEED unmaps the
    pages and keeps their data (a written page's dirty bit moves to the page cache).
    Copy-on-write (mode ``c``): DONTNEED would discard the caller's private writes, so
    MADV_PAGEOUT asks the kernel to reclaim the pages instead, which never loses data
    (unwritten pages are dropped, written ones swapped out or kept).
    """
    if _madvise_fn is None or not isinstance(X, np.memmap) or chunk.nbytes < (1 << 20):
        return
    advice = _MADV_PAGEOUT if X.mode == "c" else _MADV_DONTNEED
    start = chunk.ctypes.data // mmap.PAGESIZE * mmap.PAGESIZE
    _madvise_fn(start, chunk.ctypes.data + chunk.nbytes - start, advice)


def topk(Q: np.ndarray, X: np.ndarray, k: int, *, chunk_rows: int | None = None,
         threads: int | None = None):
    """The ``k`` nearest rows of X for each row of Q by Hamming distance.

    Ties are broken by the lower index. X is processed in chunks of ``chunk_rows`` stored
    vectors, so memory stays bounded whatever its size (X may be a np.memmap).

    Shapes: Q (m, W), X (n, W) -> (distances (m, k) int32, indices (m, k) int64), sorted
    by ascending distance.
    """
    _check_pair(Q, X)
    k = _check_int(k, "k")
    m, n = Q.shape[0], X.shape[0]
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k > n:
        raise ValueError(f"k={k} is larger than the database ({n} stored vectors)")
    chunk_rows = _DEFAULT_TOPK_CHUNK_ROWS if chunk_rows is None else _check_int(chunk_rows, "chunk_rows")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    kern = _bk.get_backend()
    threads = _bk.resolve_threads(threads)
    best_d = np.empty((m, k), np.int32)
    best_i = np.empty((m, k), np.int64)
    if m == 0:
        return best_d, best_i
    if Q.shape[1] == 0:  # 0-bit vectors: every distance is 0, ties go to the lower index
        best_d.fill(0)
        best_i[:] = np.arange(k)
        return best_d, best_i
    first = True
    for start in range(0, n, chunk_rows):
        chunk = X[start:start + chunk_rows]
        kc = min(k, chunk.shape[0])
        d = np.empty((m, kc), np.int32)
        i = np.empty((m, kc), np.int64)
        kern.topk(Q, chunk, kc, d, i, threads)
        _release_pages(X, chunk)
        i += start
        if first:
            best_d, best_i, first = d, i, False
            continue
        # merge: earlier chunks hold lower indices, so sorting by (distance, index) keeps the tie rule
        cat_d = np.concatenate([best_d, d], axis=1)
        cat_i = np.concatenate([best_i, i], axis=1)
        order = np.lexsort((cat_i, cat_d), axis=-1)[:, :k]
        best_d = np.take_along_axis(cat_d, order, axis=1)
        best_i = np.take_along_axis(cat_i, order, axis=1)
    return np.ascontiguousarray(best_d), np.ascontiguousarray(best_i)


# ---------------------------------------------------------------- causal top-k
CAUSAL_METRICS = ("hamming", "overlap")


def causal_topk(Q: np.ndarray, K: np.ndarray, k: int, *, window: int | None = None, skip_recent: int = 0,
                metric: str = "hamming", q_start: int | None = None, threads: int | None = None):
    """The ``k`` best earlier keys of each query in a sequence, ties to the more recent key.

    Query row i sits at position ``p = q_start + i`` (default ``q_start = n - m``: the queries
    are the last m positions, so m == n is a prefill and m == 1 one decode step). It may see
    keys ``j`` with ``lo <= j <= p - skip_recent``, where ``lo = max(0, p - window + 1)`` with a
    ``window`` (w keys up to and including its own position) and 0 without. ``skip_recent = w``
    keeps only the keys outside a local window of w (the brain prior's far keys).

    ``metric="hamming"``: score ``popcount(q ^ k)``, smaller is better; ``"overlap"``:
    ``popcount(q & k)``, larger is better. Rows are best first; equal scores go to the larger
    j. A row with fewer than k allowed keys is padded at the end with score = idx = -1.

    Shapes: Q (m, W), K (n, W) uint64 -> (scores (m, k) int32, idx (m, k) int64).
    Example: ``s, j = hdc.causal_topk(codes, codes, 8)`` (causal prefill over T = n positions)
    """
    _check_pair(Q, K, ("Q", "K"), "score")
    m, n = Q.shape[0], K.shape[0]
    k = _check_int(k, "k")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if window is not None:
        window = _check_int(window, "window")
        if window < 1:
            raise ValueError(f"window must be >= 1 (keys up to and including the query's own "
                             f"position) or None for no window, got {window}")
    skip_recent = _check_int(skip_recent, "skip_recent")
    if skip_recent < 0:
        raise ValueError(f"skip_recent must be >= 0, got {skip_recent}")
    if metric not in CAUSAL_METRICS:
        raise ValueError(f"metric must be one of {CAUSAL_METRICS}, got {metric!r}")
    if q_start is None:
        q_start = n - m
        if q_start < 0:
            raise ValueError(f"Q has {m} query rows but K only {n} keys: with the default "
                             f"q_start = n - m the queries must be the last positions, so m <= n")
    else:
        q_start = _check_int(q_start, "q_start")
        if q_start < 0 or q_start + m > n:
            raise ValueError(f"q_start={q_start} puts the {m} queries at positions {q_start}.."
                             f"{q_start + m - 1}, outside the {n} keys: need 0 <= q_start <= "
                             f"{n - m}")
    threads = _bk.resolve_threads(threads)
    scores = np.empty((m, k), np.int32)
    idx = np.empty((m, k), np.int64)
    if m:
        _bk.get_backend().causal_topk(Q, K, k, q_start, window, skip_recent, metric == "overlap",
                                      scores, idx, threads)
    return scores, idx


# ---------------------------------------------------------------- conversions
def to_bool(x: np.ndarray, dim: int) -> np.ndarray:
    """Unpack words to bools. Shapes: (..., W) -> (..., dim) bool."""
    return unpack_bits(check_words(x, "x", dim=check_dim(dim)), dim)


def from_bool(bits) -> np.ndarray:
    """Pack bools (..., dim) into words (..., W); dim = bits.shape[-1]."""
    return pack_bits(bits)


def to_bipolar(x: np.ndarray, dim: int) -> np.ndarray:
    """Words to bipolar int8: bit 0 -> +1, bit 1 -> -1. Shapes: (..., W) -> (..., dim) int8."""
    bits = to_bool(x, dim)
    return (1 - 2 * bits.astype(np.int8)).astype(np.int8)


def from_bipolar(v) -> np.ndarray:
    """Bipolar (+1/-1) values (..., dim) to words (..., W); any other value raises."""
    v = np.asarray(v)
    if v.ndim == 0:
        raise ValueError("from_bipolar needs at least one axis (the bit axis)")
    if v.dtype.kind not in "iuf":
        raise TypeError(f"bipolar values must be numeric, got dtype {v.dtype}")
    bad = (v != 1) & (v != -1)
    if np.any(bad):
        raise ValueError(f"bipolar values must be +1 or -1, found {v[bad].flat[0]!r}")
    return pack_bits(v < 0)


def to_bitarray(x: np.ndarray, dim: int):
    """One vector (W,) to a little-endian ``bitarray.bitarray`` of length dim."""
    from bitarray import bitarray

    check_words(x, "x", dim=check_dim(dim))
    if x.ndim != 1:
        raise ValueError(f"to_bitarray converts one vector of shape (n_words,), got {x.shape}")
    ba = bitarray(endian="little")
    ba.frombytes(x.astype("<u8").tobytes())
    del ba[dim:]
    return ba


def from_bitarray(ba) -> np.ndarray:
    """A ``bitarray.bitarray`` to one word vector (W,), with dim = len(ba)."""
    from bitarray import bitarray

    if not isinstance(ba, bitarray):
        raise TypeError(f"expected a bitarray.bitarray, got {type(ba).__name__}")
    dim = check_dim(len(ba))
    endian = ba.endian() if callable(ba.endian) else ba.endian  # a method before bitarray 3
    if endian != "little":
        ba = bitarray(ba, endian="little")
    raw = ba.tobytes()  # pad bits of the last byte are zero
    buf = np.zeros(n_words_for(dim) * 8, np.uint8)
    buf[: len(raw)] = np.frombuffer(raw, np.uint8)
    return buf.view("<u8").astype(np.uint64)
