"""Family ``bigram``: the bigram baseline, one table of next-token logits per token.

``logits[t] = table[idx[t]]``: the next token depends on the current one only (V x V
parameters). It is the floor a graph model over token pairs must clear: the SiFu family
(:mod:`models.sifu`) is judged by how far it beats this row (the issue's target: 0.3 nats/char).

``init="tinyshakespeare"`` starts the table at the log of the add-``smoothing`` bigram counts
of the harness's training split (the maximum-likelihood bigram model, 2.482 nats/char on the
validation split with smoothing 1), so the baseline is the best bigram model there is, not an
under-trained one; the harness's AdamW steps then only fine-tune it (no weight decay).
``init="zeros"`` learns the table from scratch.

Shapes:
    idx (B, T) int64 -> logits (B, T, vocab_size); loss a scalar when targets (B, T) are given.

Example:
    >>> m = BigramLM(BigramConfig(vocab_size=65))
    >>> m(torch.zeros(1, 4, dtype=torch.long))[0].shape
    torch.Size([1, 4, 65])
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from .base import check_choice, check_generate_args, check_int, sample_next

__all__ = ["BigramConfig", "BigramLM"]


@dataclass
class BigramConfig:
    vocab_size: int = 65
    block_size: int = 64        # evaluation context only; the model's size does not depend on it
    init: str = "tinyshakespeare"   # "tinyshakespeare": log smoothed counts of the train split; "zeros"
    smoothing: float = 1.0      # add-this-much to every count before the log

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size"):
            check_int(name, getattr(self, name))
        check_choice("init", self.init, ("tinyshakespeare", "zeros"))
        if not self.smoothing > 0:
            raise ValueError(f"smoothing must be > 0 (a count added to every pair), got {self.smoothing!r}")


class BigramLM(nn.Module):
    def __init__(self, config: BigramConfig):
        super().__init__()
        self.config = config
        self.table = nn.Embedding(config.vocab_size, config.vocab_size)
        nn.init.zeros_(self.table.weight)
        if config.init == "tinyshakespeare":
            from .sifu import tinyshakespeare_bigram_counts

            counts = tinyshakespeare_bigram_counts()
            if counts.shape[0] != config.vocab_size:
                raise ValueError(f"init='tinyshakespeare' has a vocabulary of {counts.shape[0]} characters "
                                 f"but vocab_size={config.vocab_size}; use init='zeros' for another text")
            with torch.no_grad():
                # torch.tensor copies: the cached counts are read-only (shared by every caller)
                self.table.weight.copy_(torch.log(torch.tensor(counts, dtype=torch.float64) + config.smoothing).float())

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        if idx.dim() != 2:
            raise ValueError(f"idx must be (B, T), got shape {tuple(idx.shape)}")
        logits = self.table(idx)                                             # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def num_params(self, non_embedding: bool = False) -> int:
        return 0 if non_embedding else self.table.weight.numel()

    def configure_optimizer(self, weight_decay: float, lr: float, betas=(0.9, 0.99)):
        return torch.optim.AdamW(self.parameters(), lr=lr, betas=betas, weight_decay=0.0)

    def decoder(self) -> "BigramDecoder":
        return BigramDecoder(self)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        check_generate_args(idx, temperature)
        for _ in range(max_new_tokens):
            logits = self.table(idx[:, -1])                                  # (B, V)
            idx = torch.cat((idx, sample_next(logits, temperature, top_k, generator)), dim=1)
        return idx


class BigramDecoder:
    """The state is nothing: ``prefill(idx) -> (logits, None)``; ``step(token, None) -> logits (B, V)``."""

    def __init__(self, model: BigramLM):
        self.m = model

    @torch.no_grad()
    def prefill(self, idx: torch.Tensor):
        return self.m(idx)[0], None

    @torch.no_grad()
    def step(self, token: torch.Tensor, state) -> torch.Tensor:
        return self.m.table(token.reshape(-1))
