"""A toy model family, registered from outside models/ to show what a new family costs: this
one file and the one ``register(Family(...))`` call at its end (tests/test_family_registry.py).

``toy`` is a bigram language model through a bottleneck: the logits of the next character
depend on the current character only, via an embedding of ``d_hidden`` numbers. Its field is
deliberately not named ``n_embd``, so the comparison presets' transformer shapes leave it
alone; ``block_size`` and ``vocab_size`` are what the harness needs of every Config.

Shapes:
    idx (B, T) int64 -> logits (B, T, vocab_size); loss a scalar when targets (B, T) are given.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from models import Family, register
from models.base import check_int, sample_next


@dataclass
class ToyConfig:
    vocab_size: int = 65
    block_size: int = 16
    d_hidden: int = 8

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "d_hidden"):
            check_int(name, getattr(self, name))


class ToyBigramLM(nn.Module):
    def __init__(self, config: ToyConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_hidden)
        self.out = nn.Linear(config.d_hidden, config.vocab_size)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        logits = self.out(self.embed(idx))                                   # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if non_embedding else n

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -1:])                                     # (B, 1, V)
            idx = torch.cat((idx, sample_next(logits[:, -1, :], temperature, top_k, generator)), dim=1)
        return idx


TOY = register(Family(
    "toy", ToyConfig, ToyBigramLM,
    variants={"narrow": {"d_hidden": 2}, "wide": {"d_hidden": 16}},
    bench=("narrow",), select=("narrow", "wide"),
    description="test-only bigram LM through a d_hidden bottleneck"))
