"""Item memory: a codebook from symbols to random hypervectors, with cleanup."""
from __future__ import annotations

from collections.abc import Hashable, Iterable

import numpy as np

from .functional import check_words, topk
from .packing import check_dim, n_words_for, pad_mask

__all__ = ["ItemMemory"]


class ItemMemory:
    """Symbol -> hypervector codebook. Cleanup returns the nearest stored vector.

    Each symbol's vector is drawn from its own stream ``default_rng([seed, index])``, so the
    codebook is reproducible and growing it never changes earlier vectors.

    Example::

        im = ItemMemory(10_000, seed=0)
        a = im.add("a")
        sym, dist = im.cleanup(noisy_a)   # -> ["a"], [small distance]
    """

    def __init__(self, dim: int, seed: int = 0, symbols: Iterable[Hashable] = ()):
        self.dim = check_dim(dim)
        self.n_words = n_words_for(self.dim)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.seed = int(seed)
        self._index: dict[Hashable, int] = {}
        self._symbols: list[Hashable] = []
        self._words = np.zeros((0, self.n_words), np.uint64)
        for s in symbols:
            self.add(s)

    def __len__(self) -> int:
        return len(self._symbols)

    def __contains__(self, symbol) -> bool:
        return symbol in self._index

    @property
    def symbols(self) -> list:
        return list(self._symbols)

    @property
    def vectors(self) -> np.ndarray:
        """All stored vectors, (len(self), n_words) uint64 (read-only view)."""
        v = self._words[: len(self._symbols)]
        v.flags.writeable = False
        return v

    def _new_vector(self, i: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, i])
        w = rng.integers(0, 2**64, size=self.n_words, dtype=np.uint64)
        w[-1] &= pad_mask(self.dim)
        return w

    def add(self, symbol: Hashable, vector: np.ndarray | None = None) -> np.ndarray:
        """Store ``symbol`` (with a fresh random vector, or the given one); return its vector."""
        if symbol in self._index:
            if vector is not None:
                raise ValueError(f"symbol {symbol!r} is already stored")
            return self._words[self._index[symbol]]
        if vector is None:
            vector = self._new_vector(len(self._symbols))
        else:
            check_words(vector, "vector", dim=self.dim)
            if vector.ndim != 1:
                raise ValueError(f"vector must have shape ({self.n_words},), got {vector.shape}")
            if vector[-1] & ~pad_mask(self.dim):
                raise ValueError("vector has pad bits set past dim")
        n = len(self._symbols)
        if n == self._words.shape[0]:  # grow geometrically: amortised O(1) adds
            grown = np.zeros((max(8, 2 * n), self.n_words), np.uint64)
            grown[:n] = self._words[:n]
            self._words = grown
        self._words[n] = vector
        self._index[symbol] = n
        self._symbols.append(symbol)
        return self._words[n]

    def __getitem__(self, symbol: Hashable) -> np.ndarray:
        try:
            return self._words[self._index[symbol]]
        except KeyError:
            raise KeyError(f"unknown symbol {symbol!r} (not in this ItemMemory)") from None

    def get_many(self, symbols: Iterable[Hashable], *, add_missing: bool = False) -> np.ndarray:
        """Vectors of several symbols, (len, n_words); unknown symbols raise unless add_missing."""
        rows = [self.add(s) if add_missing else self[s] for s in symbols]
        return np.array(rows, np.uint64).reshape(len(rows), self.n_words)

    def cleanup(self, query: np.ndarray, k: int = 1):
        """Nearest stored symbols of each query vector.

        Shapes: query (W,) or (m, W) -> (symbols, distances), each (m,) for k == 1,
        else (m, k). Ties go to the symbol stored first.
        """
        if not self._symbols:
            raise ValueError("cleanup on an empty ItemMemory")
        check_words(query, "query", dim=self.dim)
        q = query.reshape(-1, self.n_words)
        dist, idx = topk(q, np.ascontiguousarray(self._words[: len(self._symbols)]), k)
        syms = np.empty(idx.shape, object)
        for pos, i in np.ndenumerate(idx):
            syms[pos] = self._symbols[i]
        if k == 1:
            return syms[:, 0], dist[:, 0]
        return syms, dist
