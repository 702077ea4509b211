"""``HV``: a thin convenience class over (words, dim). Every method delegates to hdc.functional."""
from __future__ import annotations

import numpy as np

from . import functional as F
from .packing import check_dim

__all__ = ["HV"]


class HV:
    """A batch of ``dim``-bit hypervectors held as packed words (..., n_words).

    Example::

        a, b = HV.random(2, 10_000, seed=0)
        c = a * b            # bind (XOR)
        (c * b).hamming(a)   # -> 0
    """

    __slots__ = ("words", "dim")

    def __init__(self, words: np.ndarray, dim: int):
        self.dim = check_dim(dim)
        self.words = F.check_words(words, "words", dim=self.dim)

    @classmethod
    def random(cls, n: int, dim: int, seed=None) -> "HV":
        return cls(F.random(n, dim, seed), dim)

    @classmethod
    def from_bool(cls, bits) -> "HV":
        bits = np.asarray(bits)
        return cls(F.from_bool(bits), bits.shape[-1])

    def __repr__(self) -> str:
        return f"HV(shape={self.shape}, dim={self.dim})"

    @property
    def shape(self) -> tuple:
        return self.words.shape[:-1]

    def __len__(self) -> int:
        return self.shape[0] if self.shape else 1

    def __getitem__(self, idx) -> "HV":
        w = self.words[idx]
        if w.ndim == 0 or w.shape[-1] != self.words.shape[-1]:
            raise IndexError("index the vector axes only, not the word axis")
        return HV(np.ascontiguousarray(w), self.dim)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def _other(self, other) -> np.ndarray:
        if not isinstance(other, HV):
            raise TypeError(f"expected an HV, got {type(other).__name__}")
        if other.dim != self.dim:
            raise ValueError(f"dims differ: {self.dim} vs {other.dim}")
        return other.words

    def bind(self, other: "HV") -> "HV":
        return HV(F.bind(self.words, self._other(other)), self.dim)

    __mul__ = bind
    __xor__ = bind

    def permute(self, shift: int) -> "HV":
        return HV(F.permute(self.words, shift, self.dim), self.dim)

    def bundle(self, axis: int = 0, tie=None) -> "HV":
        return HV(F.bundle(self.words, self.dim, axis=axis, tie=tie), self.dim)

    def hamming(self, other: "HV") -> np.ndarray:
        return F.hamming(self.words, self._other(other))

    def similarity(self, other: "HV") -> np.ndarray:
        return F.similarity(self.words, self._other(other), self.dim)

    def popcount(self) -> np.ndarray:
        return F.popcount(self.words)

    def to_bool(self) -> np.ndarray:
        return F.to_bool(self.words, self.dim)

    def to_bipolar(self) -> np.ndarray:
        return F.to_bipolar(self.words, self.dim)

    def __eq__(self, other) -> bool:
        return isinstance(other, HV) and other.dim == self.dim and np.array_equal(self.words, other.words)

    __hash__ = None
