"""Torch interop: packed words as int64 tensors on any device, with bind, permute and
Hamming computed in torch so GPU users are not forced through NumPy.

A uint64 word array and an int64 tensor share the same 64 bits (two's complement), so
conversion is a zero-copy view on the CPU. torch has no popcount op, so popcount is
the classic SWAR bit count on int64, which is exact for every bit pattern.
"""
from __future__ import annotations

import numpy as np

from .packing import WORD_BITS, check_dim, n_words_for

try:
    import torch
except ImportError as exc:  # pragma: no cover - torch is a core dependency
    raise ImportError("hdc.torch_ops needs torch: pip install torch") from exc

__all__ = ["to_torch", "from_torch", "bind", "permute", "popcount", "hamming", "hamming_matrix"]

_M1 = 0x5555555555555555
_M2 = 0x3333333333333333
_M4 = 0x0F0F0F0F0F0F0F0F
_H01 = 0x0101010101010101


def _check(t, name="x"):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of int64 words, got {type(t).__name__}")
    if t.dtype != torch.int64:
        raise TypeError(f"{name} must have dtype torch.int64 (packed words), got {t.dtype}")
    if t.dim() < 1:
        raise ValueError(f"{name} must have a word axis (..., n_words), got a scalar")
    return t


def to_torch(words: np.ndarray, device=None) -> "torch.Tensor":
    """uint64 words (..., W) -> int64 tensor (..., W), bit-identical (a view on the CPU)."""
    from .functional import check_words

    check_words(words, "words")
    t = torch.from_numpy(words.view(np.int64))
    return t if device is None else t.to(device)


def from_torch(t: "torch.Tensor") -> np.ndarray:
    """int64 tensor (..., W) on any device -> C-contiguous uint64 numpy words."""
    _check(t, "t")
    return np.ascontiguousarray(t.detach().cpu().numpy()).view(np.uint64)


def bind(a, b):
    """XOR binding of int64 word tensors (broadcasting)."""
    _check(a, "a"), _check(b, "b")
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"word counts differ: {a.shape[-1]} vs {b.shape[-1]}")
    return torch.bitwise_xor(a, b)


def popcount(t):
    """Set bits per vector: (..., W) int64 -> (...) int64 (SWAR count, any device)."""
    x = _check(t)
    x = x - ((x >> 1) & _M1)  # arithmetic >> is harmless: the masks clear the sign-filled bits
    x = (x & _M2) + ((x >> 2) & _M2)
    x = (x + (x >> 4)) & _M4
    x = (x * _H01) >> 56  # byte sums gather in the top byte (wrapping multiply), value <= 64
    return (x & 0xFF).sum(dim=-1)


def hamming(a, b):
    """popcount(a ^ b), broadcasting: (..., W), (..., W) -> (...) int64."""
    return popcount(bind(a, b))


def hamming_matrix(q, x, *, max_temp_words: int = 1 << 24):
    """All pairs (m, W) x (n, W) -> (m, n) int64.

    Computed in (query, stored) blocks whose XOR temporary holds at most ``max_temp_words``
    words (128 MiB by default), so memory stays bounded whatever m and n are.
    """
    _check(q, "q"), _check(x, "x")
    if q.dim() != 2 or x.dim() != 2 or q.shape[1] != x.shape[1]:
        raise ValueError(f"expected (m, W) and (n, W) with equal W, got {tuple(q.shape)}, {tuple(x.shape)}")
    m, n, n_words = q.shape[0], x.shape[0], max(1, q.shape[1])
    out = torch.empty((m, n), dtype=torch.int64, device=q.device)
    rows_x = max(1, min(n, max_temp_words // n_words))
    rows_q = max(1, max_temp_words // (rows_x * n_words))
    for j in range(0, n, rows_x):
        xs = x[None, j:j + rows_x, :]
        for i in range(0, m, rows_q):
            out[i:i + rows_q, j:j + rows_x] = hamming(q[i:i + rows_q, None, :], xs)
    return out


def _shl(x, s):
    return x << s if s else x


def _lshr(x, s):
    """Logical right shift of int64 words (torch's >> is arithmetic)."""
    if s == 0:
        return x
    return (x >> s) & ((1 << (WORD_BITS - s)) - 1)


def permute(t, shift: int, dim: int):
    """Cyclic rotation of the ``dim`` valid bits by ``shift`` (bit j -> (j + shift) % dim).

    Same result as :func:`hdc.permute`: (x << s) | (x >> (dim - s)) over the whole
    multi-word vector, then the pad bits cleared.
    """
    if isinstance(shift, bool) or not isinstance(shift, (int, np.integer)):
        raise TypeError(f"shift must be an int, got {type(shift).__name__}")
    dim = check_dim(dim)
    x = _check(t)
    nw = n_words_for(dim)
    if x.shape[-1] != nw:
        raise ValueError(f"expected {nw} words for dim={dim}, got {x.shape[-1]}")
    s = int(shift) % dim
    if s == 0:
        return x.clone()
    out = _shift_left(x, s, nw) | _shift_right(x, dim - s, nw)
    r = dim % WORD_BITS
    if r:  # the left shift pushed bits past dim into the pad: clear them
        out[..., -1] &= (1 << r) - 1
    return out


def _shift_left(x, s, nw):
    """Multi-word logical shift toward higher bit indices, truncated to nw words."""
    ws, bs = divmod(s, WORD_BITS)
    out = torch.zeros_like(x)
    if ws < nw:
        src = x[..., : nw - ws]
        shifted = _shl(src, bs)
        if bs:
            carry = _lshr(src[..., :-1], WORD_BITS - bs)
            shifted[..., 1:] |= carry
        out[..., ws:] = shifted
    return out


def _shift_right(x, s, nw):
    ws, bs = divmod(s, WORD_BITS)
    out = torch.zeros_like(x)
    if ws < nw:
        src = x[..., ws:]
        shifted = _lshr(src, bs)
        if bs:
            carry = _shl(src[..., 1:], WORD_BITS - bs)
            shifted[..., :-1] |= carry
        out[..., : nw - ws] = shifted
    return out
