"""Encoders: turn symbols, numbers, records, sequences, sets and graphs into packed hypervectors.

Functional core first (``level_vectors``, ``record``, ``ngram``, ``encode_set``,
``encode_graph``), then scikit-learn transformers that delegate to it (``LevelEncoder``,
``RecordEncoder``, ``RandomProjectionEncoder``, ``NGramEncoder``). Everything is seeded:
the same seed gives the same vectors on every run and platform. Bundles are bitwise
majorities (ties take :func:`hdc.tie_vector`, as :func:`hdc.bundle` does); the n-gram and
record bundles run in compiled bit-sliced kernels (:mod:`hdc._ngram`).

Example::

    enc = NGramEncoder(n=4, dim=10_000, alphabet="abcdefghijklmnopqrstuvwxyz ")
    H = enc.transform(["the cat sat", "le chat"])        # (2, 157) uint64
"""
from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from . import _ngram
from .functional import bind, bundle, check_words, permute, tie_vector
from .memory import ItemMemory
from .packing import check_dim, n_words_for, pack_bits

__all__ = [
    "item_memory",
    "level_vectors",
    "value_to_level",
    "record",
    "unbind",
    "ngram",
    "encode_set",
    "encode_graph",
    "LevelEncoder",
    "RecordEncoder",
    "RandomProjectionEncoder",
    "NGramEncoder",
]

LEVEL_KINDS = ("linear", "thermometer", "circular")


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def _check_features(X, name="X", *, owner=None, fitting=False, n_features_in=None):
    """X as a float64 (n, F) array, F >= 1, finite; raises naming the argument, value and what is allowed.

    ``owner`` (the estimator's class name) goes into the messages; ``fitting`` also asks n >= 1
    (a range cannot be learnt from no samples); ``n_features_in`` (after fit) asks for that many
    features. The phrases scikit-learn's conformance suite looks for ("sparse", "Complex data not
    supported", "Reshape your data", "0 feature(s) (shape=..., 0)) while a minimum of 1 is
    required", "is expecting N features") are part of the messages, so its checks recognise them.
    """
    who = owner or "this encoder"
    if sp.issparse(X):
        raise TypeError(f"{name} is a sparse {type(X).__name__}, but {who} takes dense arrays only "
                        f"(sparse input is not supported): pass {name}.toarray()")
    if not isinstance(X, np.ndarray):
        X = np.asarray(X)
    if X.dtype.kind == "c":
        raise ValueError(f"Complex data not supported: {name} has dtype {X.dtype}; {who} encodes real numbers")
    if X.dtype.kind == "O":
        try:  # numbers stored as Python objects are numbers; anything else is refused below
            X = X.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} has dtype object with an entry that is not a number ({exc}); "
                            f"{who} encodes real numbers") from exc
    if X.dtype.kind not in "iufb":
        raise TypeError(f"{name} must be numeric (int, float or bool), got dtype {X.dtype}")
    X = X.astype(np.float64, copy=False)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}; Reshape your "
                         f"data: {name}.reshape(-1, 1) if it holds one feature, {name}.reshape(1, -1) if "
                         f"it holds one sample")
    if X.shape[1] < 1:
        raise ValueError(f"{name} has shape {X.shape}: no features to encode (0 feature(s) (shape={X.shape}) "
                         f"while a minimum of 1 is required)")
    if fitting and X.shape[0] < 1:
        raise ValueError(f"{name} has shape {X.shape}: {who}.fit needs at least 1 sample to learn the "
                         f"range of each feature (0 sample(s) given)")
    if n_features_in is not None and X.shape[1] != n_features_in:
        raise ValueError(f"{name} has {X.shape[1]} features, but {who} is expecting {n_features_in} "
                         f"features as input (the number it was fitted on)")
    bad = ~np.isfinite(X)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(f"{name} contains NaN or infinite values (first at sample {i}, feature {j}); "
                         f"impute or drop them before encoding")
    return X


def _encoder_tags(tags):
    """Tags shared by the feature encoders: the output is packed uint64 words whatever the input
    dtype, so no input dtype is preserved."""
    tags.transformer_tags.preserves_dtype = []
    tags.input_tags.sparse = False
    tags.input_tags.allow_nan = False
    return tags


# ---------------------------------------------------------------- symbols and levels
def item_memory(symbols, dim: int, seed: int = 0) -> ItemMemory:
    """Random, quasi-orthogonal vectors for ``symbols`` (order matters for reproducibility).

    Example: ``im = item_memory("abc", 10_000, seed=1); im["a"]``
    """
    return ItemMemory(dim, seed=_check_seed(seed), symbols=list(symbols))


def level_vectors(n_levels: int, dim: int, *, kind: str = "linear", seed: int = 0) -> np.ndarray:
    """Correlated level hypervectors for ``n_levels`` ordered values.

    kind ``'linear'``: level 0 is random and each step flips the next ``dim / (2 (n-1))``
    bits of a seeded random order, so distance grows linearly with the level difference
    and the two ends are orthogonal (distance dim/2).
    ``'thermometer'``: level i has the first ``i * dim / (n-1)`` bits of a seeded random
    order set (level 0 all zero, the last all one: the ends are opposite).
    ``'circular'``: for values on a circle (angles, hours): flips run up to half a turn and
    back, so the distance is proportional to the circular distance and the last level is
    a neighbour of the first.

    Shapes: -> (n_levels, n_words) uint64.
    Example: ``L = level_vectors(16, 10_000, kind="circular", seed=0)``
    """
    dim = check_dim(dim)
    if isinstance(n_levels, bool) or not isinstance(n_levels, numbers.Integral) or n_levels < 2:
        raise ValueError(f"n_levels must be an int >= 2, got {n_levels!r}")
    if kind not in LEVEL_KINDS:
        raise ValueError(f"kind must be one of {LEVEL_KINDS}, got {kind!r}")
    rng = np.random.default_rng([_check_seed(seed), 0x1E7E1])
    order = rng.permutation(dim)
    n = int(n_levels)
    bits = np.zeros((n, dim), bool)
    if kind == "linear":
        base = rng.integers(0, 2, dim).astype(bool)
        for i in range(n):
            k = int(round(i * (dim // 2) / (n - 1)))
            row = base.copy()
            row[order[:k]] ^= True
            bits[i] = row
    elif kind == "thermometer":
        for i in range(n):
            bits[i, order[: int(round(i * dim / (n - 1)))]] = True
    else:  # circular: n points on a circle, half a turn flips dim/2 bits
        base = rng.integers(0, 2, dim).astype(bool)
        half = dim // 2
        for i in range(n):
            lo = 0 if 2 * i <= n else int(round((2 * i - n) * half / n))
            hi = int(round(min(2 * i, n) * half / n))
            row = base.copy()
            row[order[lo:hi]] ^= True
            bits[i] = row
    return pack_bits(bits)


def value_to_level(x, low, high, n_levels: int, *, circular: bool = False) -> np.ndarray:
    """Map values to level indices: ``round((x - low) / (high - low) * (n - 1))``, clipped.

    With ``circular`` the range wraps: ``high`` is the same point as ``low``, and the
    n levels split the circle evenly. NaN raises. Shapes: any -> same shape, int32.
    """
    x = np.asarray(x, np.float64)
    if np.isnan(x).any():
        raise ValueError("values contain NaN; impute or drop them before encoding")
    low = np.asarray(low, np.float64)
    high = np.asarray(high, np.float64)
    span = np.where(high > low, high - low, 1.0)
    t = (x - low) / span
    if circular:
        return (np.floor(np.mod(t, 1.0) * n_levels + 0.5).astype(np.int64) % n_levels).astype(np.int32)
    return np.clip(np.rint(np.clip(t, 0.0, 1.0) * (n_levels - 1)), 0, n_levels - 1).astype(np.int32)


# ---------------------------------------------------------------- records, sets, graphs
def record(keys: np.ndarray, values: np.ndarray, dim: int, *, tie=None) -> np.ndarray:
    """Record (key-value) encoding: ``bundle_f(keys[f] ^ values[f])``.

    Shapes: keys (F, W), values (F, W) or (n, F, W) -> (W,) or (n, W).
    Example: ``r = record(im.get_many(["name", "age"]), vals, dim)``
    """
    dim = check_dim(dim)
    check_words(keys, "keys", dim=dim, min_ndim=2)
    check_words(values, "values", dim=dim, min_ndim=2)
    if values.shape[-2] != keys.shape[0]:
        raise ValueError(f"{keys.shape[0]} keys but {values.shape[-2]} values per record")
    return bundle(bind(values, keys), dim, axis=values.ndim - 2, tie=tie)


def unbind(composite: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Recover a noisy value from a record: XOR binding is its own inverse."""
    return bind(composite, key)


def encode_set(vectors: np.ndarray, dim: int, *, tie=None) -> np.ndarray:
    """A set: the majority bundle of its members' vectors. Shapes: (n, W) -> (W,)."""
    return bundle(vectors, dim, axis=0, tie=tie)


def encode_graph(edges, memory: ItemMemory, *, directed: bool = False, tie=None) -> np.ndarray:
    """A graph: the bundle of its edges, an edge (u, v) being ``u ^ v`` (undirected) or
    ``u ^ permute(v, 1)`` (directed, so (u, v) differs from (v, u)).

    Nodes are looked up in (and must be stored in) ``memory``. Shapes: -> (W,).
    Example: ``g = encode_graph([("a", "b"), ("b", "c")], im)``
    """
    edges = list(edges)
    if not edges:
        raise ValueError("a graph needs at least one edge")
    u = memory.get_many([e[0] for e in edges])
    v = memory.get_many([e[1] for e in edges])
    if directed:
        v = permute(v, 1, memory.dim)
    return bundle(bind(u, v), memory.dim, axis=0, tie=tie)


def ngram(symbols, memory: ItemMemory, n: int) -> np.ndarray:
    """The n-gram encoding of one sequence (plain NumPy, for clarity and as a reference):
    majority over its n-grams of ``permute(s_1, n-1) ^ ... ^ permute(s_{n-1}, 1) ^ s_n``.

    Shapes: a sequence of symbols stored in ``memory`` -> (W,).
    """
    seq = list(symbols)
    if not seq:
        raise ValueError("cannot encode an empty sequence")
    dim = memory.dim
    vecs = memory.get_many(seq)
    m = min(n, len(vecs))
    count = len(vecs) - m + 1
    grams = np.zeros((count, n_words_for(dim)), np.uint64)
    for p in range(m):
        grams ^= permute(np.ascontiguousarray(vecs[p:p + count]), m - 1 - p, dim)
    return bundle(grams, dim, axis=0)


GRAM_WEIGHTS = ("count", "sqrt")


def _gram_weight(weight):
    """The n-gram weighting as a function of the occurrence counts (int64 -> int64)."""
    if callable(weight):
        return weight
    if weight == "count":
        return lambda c: c
    if weight == "sqrt":
        # x16 keeps the rounding of sqrt fine-grained; any common factor leaves the cosines unchanged
        return lambda c: np.rint(16.0 * np.sqrt(c)).astype(np.int64)
    raise ValueError(f"weight must be one of {GRAM_WEIGHTS} or a function of the counts, got {weight!r}")


def _select_texts(codes, offsets, which):
    """codes/offsets of the texts ``which`` only."""
    lengths = np.diff(offsets)[which]
    sub = np.concatenate([codes[offsets[t]:offsets[t + 1]] for t in which]).astype(np.int32)
    off = np.zeros(which.size + 1, np.int64)
    np.cumsum(lengths, out=off[1:])
    return sub, off


# ---------------------------------------------------------------- scikit-learn transformers
class _Encoder(TransformerMixin, BaseEstimator):
    @property
    def n_words(self) -> int:
        return n_words_for(self.dim)

    def __sklearn_tags__(self):
        return _encoder_tags(super().__sklearn_tags__())


def _feature_bounds(value, name, n_features, default):
    """``low``/``high``: None (the training ``default``), one number, or one per feature -> (F,) float64."""
    if value is None:
        return np.asarray(default, np.float64)
    v = np.asarray(value)
    if v.dtype.kind not in "iuf" or v.ndim > 1 or (v.ndim == 1 and v.shape[0] != n_features):
        raise ValueError(f"{name} must be None, a number or {n_features} numbers (one per feature), "
                         f"got {value!r}")
    v = np.broadcast_to(v.astype(np.float64), (n_features,)).copy()
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


class LevelEncoder(_Encoder):
    """Numbers -> level hypervectors, one feature or many.

    Each feature's value picks one of ``n_levels`` level vectors (``kind`` as in
    :func:`level_vectors`) over that feature's own [low, high] (``low``/``high``: one number,
    one per feature, or None for the training minimum/maximum of each feature). With several
    features the level of feature f is bound (XOR) to the key of feature f and the bound
    vectors are bundled by majority (ties take :func:`hdc.tie_vector`): the record encoding of
    Rahimi et al. (2016, "Hyperdimensional biosignal processing: a case study for EMG-based
    hand gesture recognition"). Feature 0's key is the all-zero vector, the identity of XOR, so
    a single feature encodes as its level vector itself; the other keys are random.

    Shapes: X (n, F) -> (n, W) uint64.
    Example: ``LevelEncoder(dim=10_000, n_levels=32).fit(X).transform(X)``
    """

    def __init__(self, dim=10_000, n_levels=64, kind="linear", low=None, high=None, seed=0):
        self.dim = dim
        self.n_levels = n_levels
        self.kind = kind
        self.low = low
        self.high = high
        self.seed = seed

    def fit(self, X, y=None):
        X = _check_features(X, owner="LevelEncoder", fitting=True)
        seed = _check_seed(self.seed)
        dim = check_dim(self.dim)
        F = X.shape[1]
        self.levels_ = level_vectors(self.n_levels, dim, kind=self.kind, seed=seed)
        self.low_ = _feature_bounds(self.low, "low", F, X.min(axis=0))
        self.high_ = _feature_bounds(self.high, "high", F, X.max(axis=0))
        keys = np.zeros((F, n_words_for(dim)), np.uint64)
        if F > 1:
            keys[1:] = ItemMemory(dim, seed=seed + 1, symbols=range(1, F)).vectors
        self.keys_ = keys
        self.n_features_in_ = F
        return self

    def transform(self, X):
        check_is_fitted(self, "levels_")
        X = _check_features(X, owner="LevelEncoder", n_features_in=self.n_features_in_)
        idx = value_to_level(X, self.low_, self.high_, self.n_levels, circular=self.kind == "circular")
        if self.n_features_in_ == 1:  # key 0 is zero: the level vector itself, no bundle needed
            return np.ascontiguousarray(self.levels_[idx[:, 0]])
        return _ngram.record_majority(self.keys_, self.levels_, idx, tie_vector(self.dim))


class RecordEncoder(_Encoder):
    """Feature vectors as records: ``bundle_f(key_f ^ level(x_f))`` (position x level).

    Keys are random per feature, levels shared by all features (``kind`` as in
    :func:`level_vectors`); each feature's [low, high] comes from the training data
    (``per_feature=True``) or from the whole training matrix.

    Shapes: X (n, F) -> (n, W) uint64.
    """

    def __init__(self, dim=10_000, n_levels=32, kind="linear", per_feature=False, seed=0):
        self.dim = dim
        self.n_levels = n_levels
        self.kind = kind
        self.per_feature = per_feature
        self.seed = seed

    def fit(self, X, y=None):
        X = _check_features(X, owner="RecordEncoder", fitting=True)
        if self.per_feature:
            self.low_, self.high_ = X.min(axis=0), X.max(axis=0)
        else:
            self.low_, self.high_ = np.full(X.shape[1], X.min()), np.full(X.shape[1], X.max())
        seed = _check_seed(self.seed)
        self.keys_ = ItemMemory(self.dim, seed=seed, symbols=range(X.shape[1])).vectors.copy()
        self.levels_ = level_vectors(self.n_levels, self.dim, kind=self.kind, seed=seed + 1)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        check_is_fitted(self, "keys_")
        X = _check_features(X, owner="RecordEncoder", n_features_in=self.n_features_in_)
        idx = value_to_level(X, self.low_, self.high_, self.n_levels, circular=self.kind == "circular")
        return _ngram.record_majority(self.keys_, self.levels_, idx, tie_vector(self.dim))


class RandomProjectionEncoder(_Encoder):
    """Random-projection encoder: bit j = ``cos(gamma * w_j . x + b_j) < 0`` (bipolar sign of a
    random Fourier feature, Rahimi & Recht 2007), on each sample scaled to unit norm.

    ``center=True`` also subtracts each sample's mean over its features first: right for
    homogeneous features such as the pixels of an image (it removes brightness; Fashion-MNIST
    gains from it), wrong for a few heterogeneous features (with two features every centred
    sample is a multiple of (1, -1), one bit of information), so it is off by default.

    ``kind='sign'`` drops the cosine (bit j = ``w_j . x < 0``, a SimHash). W is seeded
    Gaussian, b uniform in [0, 2 pi). This encoder, retrained, beats position x level
    records on Fashion-MNIST (MODELS.md).

    Shapes: X (n, F) -> (n, W) uint64.
    """

    def __init__(self, dim=10_000, gamma=1.5, kind="cos", center=False, seed=0, batch_size=2048):
        self.dim = dim
        self.gamma = gamma
        self.kind = kind
        self.center = center
        self.seed = seed
        self.batch_size = batch_size

    def _check_params(self):
        if self.kind not in ("cos", "sign"):
            raise ValueError(f"kind must be 'cos' or 'sign', got {self.kind!r}")
        g = self.gamma
        if isinstance(g, bool) or not isinstance(g, numbers.Real) or not (np.isfinite(g) and g > 0):
            raise ValueError(f"gamma must be a finite number > 0 (the projection's frequency), got {g!r}")
        b = self.batch_size
        if isinstance(b, bool) or not isinstance(b, numbers.Integral) or b < 1:
            raise ValueError(f"batch_size must be an int >= 1 (samples projected per step), got {b!r}")

    def fit(self, X, y=None):
        X = _check_features(X, owner="RandomProjectionEncoder", fitting=True)
        self._check_params()
        dim = check_dim(self.dim)
        self.n_features_in_ = X.shape[1]
        rng = np.random.default_rng([_check_seed(self.seed), 0x5EED])
        self.proj_ = rng.standard_normal((X.shape[1], dim), dtype=np.float32)
        self.bias_ = rng.uniform(0, 2 * np.pi, dim).astype(np.float32)
        return self

    def _prep(self, X):
        """Rows centred and scaled to unit norm, float32. Shapes: (b, F) float64 -> (b, F)."""
        # The result does not depend on a row's scale, so first bring each row's largest |x| into
        # [0.5, 1) by a power of two. That is exact in floating point (results for ordinary
        # inputs are unchanged, bit for bit), and float32 can then neither overflow (a value past
        # 3.4e38, or x**2 in the norm past 1.8e19) nor underflow (x**2 below 1e-45) for any
        # finite input: such rows used to encode as the bias alone (or all zeros) with a warning.
        _, exp = np.frexp(np.abs(X).max(axis=1, keepdims=True))  # (b, 1)
        X = np.ldexp(X, -exp).astype(np.float32)
        if self.center:
            X = X - X.mean(axis=1, keepdims=True)
        norm = np.linalg.norm(X, axis=1, keepdims=True)
        return X / np.where(norm > 0, norm, 1.0)

    def transform(self, X):
        return self.transform_gammas(X, [self.gamma])[0]

    def transform_gammas(self, X, gammas):
        """X encoded at each of several ``gammas`` from one projection: a list of (n, W) arrays,
        bit for bit ``set_params(gamma=g).transform(X)`` for each g.

        The projection ``W x`` (a matrix product) is most of an encoding's cost and does not
        depend on gamma, so models that want different gammas (a centroid and a retrained
        perceptron peak at different ones) can share it.
        """
        check_is_fitted(self, "proj_")
        self._check_params()  # again: set_params() may follow fit
        gs = list(gammas)
        for g in gs:
            if isinstance(g, bool) or not isinstance(g, numbers.Real) or not (np.isfinite(g) and g > 0):
                raise ValueError(f"gammas must be finite numbers > 0 (the projection's frequencies), got {g!r}")
        if not gs:
            raise ValueError("gammas is empty: give at least one gamma")
        X = _check_features(X, owner="RandomProjectionEncoder", n_features_in=self.n_features_in_)
        outs = [np.empty((X.shape[0], n_words_for(self.dim)), np.uint64) for _ in gs]
        for s in range(0, X.shape[0], self.batch_size):
            proj = self._prep(X[s:s + self.batch_size]) @ self.proj_  # (b, dim)
            for g, out in zip(gs, outs):
                if self.kind == "cos":
                    z = proj * np.float32(g)
                    z += self.bias_
                    np.cos(z, out=z)
                else:
                    z = proj
                out[s:s + z.shape[0]] = pack_bits(z < 0)
        return outs


class NGramEncoder(_Encoder):
    """Texts -> the majority bundle of their letter n-grams (the classic HDC text encoder).

    An n-gram c_1..c_n is ``permute(c_1, n-1) ^ ... ^ permute(c_{n-1}, 1) ^ c_n`` with
    random item vectors per symbol (``ItemMemory(dim, seed)`` in alphabet order); order
    matters, so "ab" and "ba" give unrelated grams. A text shorter than n is one shorter
    gram. Unknown symbols: ``'error'`` (default) raises, ``'skip'`` drops them, ``'extra'``
    maps them all to one reserved vector. The alphabet is given, or learnt (sorted) by fit.

    Shapes: transform(list of T str) -> (T, W) uint64; class_counts -> (K, dim) int64.
    Example: ``NGramEncoder(n=4, dim=10_000, alphabet="abc ").transform(["a cab"])``
    """

    def __init__(self, n=4, dim=10_000, alphabet=None, unknown="error", seed=0):
        self.n = n
        self.dim = dim
        self.alphabet = alphabet
        self.unknown = unknown
        self.seed = seed

    def __sklearn_tags__(self):
        # texts in, not a 2-D array: scikit-learn's conformance suite (which feeds 2-D float
        # arrays) has no checks for such an estimator and says so
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = []
        return tags

    # -- set-up
    def _build(self, alphabet):
        if isinstance(self.n, bool) or not isinstance(self.n, numbers.Integral) or self.n < 1:
            raise ValueError(f"n must be a positive int, got {self.n!r}")
        if self.unknown not in ("error", "skip", "extra"):
            raise ValueError(f"unknown must be 'error', 'skip' or 'extra', got {self.unknown!r}")
        dim = check_dim(self.dim)
        symbols = list(dict.fromkeys(alphabet))  # keep order, drop repeats
        if not symbols or not all(isinstance(c, str) and len(c) == 1 for c in symbols):
            raise ValueError("alphabet must be a non-empty string or sequence of single characters")
        self.alphabet_ = "".join(symbols)
        mem = ItemMemory(dim, seed=_check_seed(self.seed), symbols=symbols)
        if self.unknown == "extra":
            mem.add(None)  # the reserved vector of every unknown symbol
        self.memory_ = mem
        self.table_ = _ngram.gram_table(np.ascontiguousarray(mem.vectors), int(self.n), dim)
        cps = np.array([ord(c) for c in symbols])
        lut = np.full(int(cps.max()) + 1, -1, np.int32)
        lut[cps] = np.arange(len(symbols), dtype=np.int32)
        self._lut = lut
        return self

    def fit(self, X, y=None):
        """Fix the alphabet (the given one, or every character of the texts, sorted)."""
        texts = self._check_texts(X)
        alphabet = self.alphabet if self.alphabet is not None else sorted(set("".join(texts)))
        return self._build(alphabet)

    def _ensure(self):
        if not hasattr(self, "table_"):
            if self.alphabet is None:
                from sklearn.exceptions import NotFittedError

                raise NotFittedError("NGramEncoder has no alphabet: pass alphabet=... or call fit(texts)")
            self._build(self.alphabet)

    @staticmethod
    def _check_texts(X):
        if isinstance(X, str):
            raise TypeError("pass a list of texts, not one string (wrap it: [text])")
        texts = list(X)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"text {i} is {type(t).__name__}, expected str")
        return texts

    # -- text -> symbol codes
    def codes(self, texts):
        """Symbol codes of all texts, concatenated, and the text offsets.

        Shapes: -> codes (N,) int32, offsets (T+1,) int64.
        """
        self._ensure()
        texts = self._check_texts(texts)
        lengths = np.fromiter((len(t) for t in texts), np.int64, len(texts))
        joined = "".join(texts)
        lut = self._lut
        try:  # one byte per character: index a 256-entry table with the bytes directly
            cp = np.frombuffer(joined.encode("latin-1"), np.uint8)
            lut256 = np.full(256, -1, np.int32)
            lut256[: min(256, lut.size)] = lut[:256]
            codes = lut256[cp]
        except UnicodeEncodeError:
            cp = np.frombuffer(joined.encode("utf-32-le"), np.uint32).astype(np.int64)
            codes = np.full(cp.shape, -1, np.int32)
            inside = cp < lut.size
            codes[inside] = lut[cp[inside]]
        bad = np.flatnonzero(codes < 0)
        if bad.size:
            ends = np.cumsum(lengths)
            if self.unknown == "error":
                pos = int(bad[0])
                text_i = int(np.searchsorted(ends, pos, side="right"))
                raise ValueError(f"unknown symbol {chr(int(cp[pos]))!r} in text {text_i} (not in the "
                                 f"alphabet {self.alphabet_!r}); use unknown='skip' or 'extra'")
            if self.unknown == "extra":
                codes[bad] = len(self.alphabet_)
            else:  # skip: drop them and shorten their texts
                owner = np.searchsorted(ends, bad, side="right")
                lengths = lengths - np.bincount(owner, minlength=len(texts))
                codes = np.delete(codes, bad)
        empty = np.flatnonzero(lengths == 0)
        if empty.size:
            raise ValueError(f"text {int(empty[0])} is empty (after dropping unknown symbols); "
                             f"an empty text has no n-grams")
        offsets = np.zeros(len(texts) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return codes, offsets

    def transform(self, X):
        """Each text -> the majority of its n-grams. Shapes: T texts -> (T, W) uint64."""
        codes, offsets = self.codes(X)
        return _ngram.ngram_majority(codes, offsets, self.table_, tie_vector(self.dim), self.dim)

    def counts(self, X, groups, n_groups: int, *, weight="count"):
        """Per group, the (weighted) number of its texts' n-grams setting each bit, and the weight total.

        The distinct n-grams of each group are counted first and each distinct gram's vector is
        added once per set bit of its weight (:func:`hdc._ngram.weighted_gram_counts`): the
        same counts as adding every occurrence, with far fewer vector additions. ``weight``:
        ``'count'`` (a gram counts as often as it occurs), ``'sqrt'`` (``round(16 sqrt(count))``,
        a sublinear term weight as in Salton & Buckley 1988, "Term-weighting approaches in
        automatic text retrieval": frequent grams dominate less), or a function from the (E,)
        int64 occurrence counts to non-negative int64 weights. A text shorter than n adds its one
        shorter gram with weight 1.

        Shapes: groups (T,) ints in [0, n_groups) -> (n_groups, dim) int64, (n_groups,) int64.
        """
        codes, offsets = self.codes(X)
        groups = np.asarray(groups)
        if groups.shape != (offsets.size - 1,):
            raise ValueError(f"groups must give one group per text ({offsets.size - 1}), got {groups.shape}")
        if groups.size and (groups.min() < 0 or groups.max() >= n_groups):
            raise ValueError(f"groups must lie in [0, {n_groups})")
        wfun = _gram_weight(weight)
        n = int(self.n)
        g, sym, cnt = _ngram.distinct_gram_counts(codes, offsets, groups, n_groups, n, self.table_.shape[1])
        w = wfun(cnt)
        if not (isinstance(w, np.ndarray) and w.shape == cnt.shape and w.dtype.kind in "iu"
                and (w.size == 0 or w.min() >= 0)):
            raise ValueError(f"weight must map the occurrence counts to as many non-negative integers, "
                             f"got {type(w).__name__} {getattr(w, 'shape', '')} {getattr(w, 'dtype', '')}")
        counts, totals = _ngram.weighted_gram_counts(g, sym, w.astype(np.int64), n_groups, self.table_, self.dim)
        short = np.flatnonzero(np.diff(offsets) < n)
        if short.size:  # their one shorter gram each, through the occurrence kernel
            sc, st = _ngram.ngram_counts(*_select_texts(codes, offsets, short), self.table_,
                                         groups[short], n_groups, self.dim)
            counts += sc
            totals += st
        return counts, totals

    def class_counters(self, X, y, *, weight="count"):
        """Integer class counters: the (weighted) bipolar sum of all n-grams of each class's texts.

        ``weight`` as in :meth:`counts`. Returns (classes (K,), counters (K, dim) int64), ready for
        ``CentroidClassifier.from_counters``.
        """
        y = np.asarray(y)
        if y.shape != (len(X),):
            raise ValueError(f"y must give one label per text ({len(X)}), got shape {y.shape}")
        classes, idx = np.unique(y, return_inverse=True)
        counts, totals = self.counts(X, idx, len(classes), weight=weight)
        return classes, totals[:, None] - 2 * counts

    def get_config(self) -> dict:
        """What reproduces this encoder (for saving)."""
        self._ensure()
        return {"type": "NGramEncoder", "n": int(self.n), "dim": int(self.dim),
                "alphabet": self.alphabet_, "unknown": self.unknown, "seed": int(self.seed)}
