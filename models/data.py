"""Character-level data for the language-model experiments: tiny-shakespeare and a tokenizer.

The corpus is read from ``<data dir>/tinyshakespeare/input.txt`` (the one data setting,
:func:`hdc.datasets.data_dir`: ``$HDSPIKE_DATA``, default ``<repo>/../shared/data``), checked against its SHA-256, and split by position:
the first 90% of the characters train, the last 10% validate (nanoGPT's split).

Shapes:
    ``get_batch`` returns ``x, y``: (B, T) int64, ``y`` is ``x`` shifted left by one.

Example:
    >>> text = load_tinyshakespeare()                     # doctest: +SKIP
    >>> tok = CharTokenizer.from_text(text)               # doctest: +SKIP
    >>> train, val = split_train_val(tok.encode(text))    # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from hdc.datasets import DatasetCorrupt, DatasetMissing, data_dir
from hdc.io import write_json

TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TINYSHAKESPEARE_UPSTREAM = (
    "https://github.com/karpathy/char-rnn (data/tinyshakespeare/input.txt; raw: "
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt)"
)


def tinyshakespeare_path(root: str | os.PathLike | None = None) -> Path:
    return Path(root if root is not None else data_dir()) / "tinyshakespeare" / "input.txt"


def load_tinyshakespeare(root: str | os.PathLike | None = None, *, verify: bool = True) -> str:
    """Return the tiny-shakespeare text (1,115,394 characters), SHA-256 checked.

    Raises :class:`hdc.datasets.DatasetMissing` (a FileNotFoundError) naming the upstream
    address when the file is missing, and :class:`hdc.datasets.DatasetCorrupt` (a ValueError)
    when its checksum differs (a different or truncated copy).
    """
    path = tinyshakespeare_path(root)
    if not path.is_file():
        raise DatasetMissing(
            f"tiny-shakespeare not found at {path}; download input.txt from {TINYSHAKESPEARE_UPSTREAM} "
            f"into <HDSPIKE_DATA>/tinyshakespeare/ (HDSPIKE_DATA is currently {data_dir()})"
        )
    raw = path.read_bytes()
    if verify:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != TINYSHAKESPEARE_SHA256:
            raise DatasetCorrupt(f"{path}: SHA-256 {digest} != expected {TINYSHAKESPEARE_SHA256} "
                             f"(get the original from {TINYSHAKESPEARE_UPSTREAM})")
    return raw.decode("utf-8")


class CharTokenizer:
    """A character-level tokenizer: one id per distinct character, ids in sorted character order.

    Example:
        >>> tok = CharTokenizer.from_text("hello")
        >>> tok.decode(tok.encode("hole"))
        'hole'
    """

    def __init__(self, chars: list[str]):
        if len(chars) == 0:
            raise ValueError("CharTokenizer needs at least one character")
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ValueError("CharTokenizer chars must be distinct single characters")
        self.chars = list(chars)
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """Text -> (len(text),) int64 ids; an unknown character raises ValueError."""
        try:
            return np.fromiter((self.stoi[c] for c in text), dtype=np.int64, count=len(text))
        except KeyError as exc:
            raise ValueError(f"character {exc.args[0]!r} is not in the tokenizer's vocabulary") from None

    def decode(self, ids) -> str:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"token id out of range [0, {self.vocab_size})")
        return "".join(self.chars[i] for i in ids.tolist())

    def to_dict(self) -> dict:
        return {"type": "char", "chars": self.chars}

    @classmethod
    def from_dict(cls, d: dict) -> "CharTokenizer":
        if d.get("type") != "char" or not isinstance(d.get("chars"), list):
            raise ValueError("not a CharTokenizer description (expected {'type': 'char', 'chars': [...]})")
        return cls(d["chars"])

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as JSON, atomically."""
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CharTokenizer":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def __eq__(self, other) -> bool:
        return isinstance(other, CharTokenizer) and self.chars == other.chars


def split_train_val(ids: np.ndarray, train_frac: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """First ``train_frac`` of the ids train, the rest validate (a split by position, no shuffling)."""
    if not 0.0 < train_frac < 1.0:
        raise ValueError(f"train_frac must be in (0, 1), got {train_frac}")
    n = int(len(ids) * train_frac)
    return ids[:n], ids[n:]


def get_batch(data: torch.Tensor, block_size: int, batch_size: int,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``batch_size`` random windows of ``block_size`` (+1 target) characters.

    The start positions come from ``generator`` alone, so every model trained with the same
    generator seed sees exactly the same tokens.

    Shapes: data (N,) int64 -> x, y (B, T) int64.
    """
    if len(data) < block_size + 2:
        raise ValueError(f"data of {len(data)} tokens is too short for block_size {block_size}")
    ix = torch.randint(len(data) - block_size - 1, (batch_size,), generator=generator)
    offs = torch.arange(block_size)
    x = data[ix[:, None] + offs]        # (B, T)
    y = data[ix[:, None] + offs + 1]    # (B, T)
    return x, y


def eval_chunks(data: torch.Tensor, block_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Split ``data`` into non-overlapping (input, target) chunks covering every token once.

    Each of the ``len(data) - 1`` targets is predicted exactly once; the last chunk may be shorter.
    """
    n_targets = len(data) - 1
    out = []
    for s in range(0, n_targets, block_size):
        e = min(s + block_size, n_targets)
        out.append((data[s:e], data[s + 1:e + 1]))
    return out
