"""Bit packing: bool bits <-> uint64 words.

Layout (the library's one convention): bit ``i`` of a ``dim``-bit vector lives in
word ``i // 64`` at bit position ``i % 64`` (least significant bit first). Words
past ``dim`` are padded with zero bits, always.
"""
from __future__ import annotations

import sys

import numpy as np

__all__ = ["WORD_BITS", "MAX_DIM", "n_words_for", "pad_mask", "pack_bits", "unpack_bits", "check_dim"]

WORD_BITS = 64
# Word arrays are viewed as bytes in little-endian order below.
_LITTLE = sys.byteorder == "little"


#: the largest dim: 2**56 words, the C kernels' per-vector limit (and far past any memory)
MAX_DIM = 2**62


def check_dim(dim) -> int:
    """Return ``dim`` as an int, or raise naming the problem (dims count bits, 1..2**62)."""
    if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, (int, np.integer)):
        raise TypeError(f"dim must be an int (number of bits; Python or NumPy integer), got {dim!r} "
                        f"of type {type(dim).__name__}")
    dim = int(dim)
    if dim < 1:
        raise ValueError(f"dim must be >= 1 bit, got {dim}")
    if dim > MAX_DIM:
        raise ValueError(f"dim must be at most 2**62 bits, got {dim}")
    return dim


def n_words_for(dim: int) -> int:
    """Number of uint64 words that hold ``dim`` bits."""
    dim = check_dim(dim)
    return (dim + WORD_BITS - 1) // WORD_BITS


def pad_mask(dim: int) -> np.uint64:
    """Mask of the valid bits in the last word of a ``dim``-bit vector."""
    r = check_dim(dim) % WORD_BITS
    return np.uint64(0xFFFFFFFFFFFFFFFF) if r == 0 else np.uint64((1 << r) - 1)


def pack_bits(bits) -> np.ndarray:
    """Pack a bool array of shape (..., dim) into uint64 words of shape (..., n_words).

    Shapes: (..., dim) bool -> (..., ceil(dim / 64)) uint64.
    Example: ``pack_bits(np.array([1, 0, 1], bool))`` -> ``array([5], dtype=uint64)``.
    """
    bits = np.asarray(bits)
    if bits.ndim == 0:
        raise ValueError("pack_bits needs at least one axis (the bit axis)")
    if bits.dtype != np.bool_:
        if not np.issubdtype(bits.dtype, np.integer) or (bits.size and (bits.min() < 0 or bits.max() > 1)):
            raise ValueError(f"pack_bits expects bool or 0/1 values, got dtype {bits.dtype}")
        bits = bits.astype(np.bool_)
    dim = check_dim(bits.shape[-1])
    nw = n_words_for(dim)
    packed = np.packbits(bits, axis=-1, bitorder="little")  # (..., ceil(dim/8)) bytes
    nbytes = nw * 8
    if packed.shape[-1] != nbytes:
        padded = np.zeros(bits.shape[:-1] + (nbytes,), np.uint8)
        padded[..., : packed.shape[-1]] = packed
        packed = padded
    words = np.ascontiguousarray(packed).view("<u8")
    return words.astype(np.uint64) if not _LITTLE else words.view(np.uint64)


def unpack_bits(words, dim: int) -> np.ndarray:
    """Unpack uint64 words of shape (..., n_words) into bools of shape (..., dim)."""
    dim = check_dim(dim)
    words = np.asarray(words)
    if words.dtype != np.uint64:
        raise TypeError(f"expected uint64 words, got dtype {words.dtype}")
    if words.ndim == 0 or words.shape[-1] != n_words_for(dim):
        raise ValueError(f"expected last axis of {n_words_for(dim)} words for dim={dim}, "
                         f"got shape {words.shape}")
    as_bytes = np.ascontiguousarray(words.astype("<u8", copy=False)).view(np.uint8)
    bits = np.unpackbits(as_bytes, axis=-1, bitorder="little")
    return bits[..., :dim].astype(np.bool_)
