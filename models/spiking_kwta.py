"""Family ``spiking_kwta``: the k-winner-take-all spiking attention transformer.

The dense twin (:mod:`models.gpt`: the same trunk, embeddings, blocks, MLP and tied head) with
every attention layer replaced by :class:`spiking_attention.attention.SpikingKWTAAttention`:
queries and keys are binary spike codes of ``code_bits`` bits per head (a learned projection
followed by a spiking neuron with a surrogate gradient), a score is the overlap of two codes
(bipolar Hamming similarity or popcount of AND), k-WTA keeps the ``k`` best causal keys of each
query, and the output is a softmax over the winners' scores times real-valued values. With
``code_bits = n_embd / n_head`` the Q/K projections have the twin's shapes, so the parameter
counts match.

Shapes:
    idx (B, T) int64 -> logits (B, T, vocab_size); loss a scalar when targets (B, T) are given.

Example:
    >>> cfg = SpikingConfig(vocab_size=65, block_size=64, n_layer=2, n_head=4, n_embd=64, code_bits=16)
    >>> m = SpikingTransformerLM(cfg)
    >>> logits, loss = m(torch.zeros(1, 8, dtype=torch.long))
    >>> m.generate(torch.zeros(1, 1, dtype=torch.long), 20).shape
    torch.Size([1, 21])
"""
from __future__ import annotations

from dataclasses import dataclass

import torch  # noqa: F401  (used in the docstring example)

from spiking_attention.attention import NEURONS, OUTPUTS, SCORES, SpikingKWTAAttention
from spiking_attention.surrogate import SURROGATES

from .base import TransformerLM, TrunkConfig, check_choice, check_int


@dataclass
class SpikingConfig(TrunkConfig):
    code_bits: int = 32            # bits of each binary query/key code, per head
    k: int = 8                     # winners (attended keys) per query
    score: str = "hamming"         # "hamming" (bipolar codes) | "overlap" (popcount of AND)
    neuron: str = "heaviside"      # spiking neuron of the codes: "heaviside" | "lif"
    surrogate: str = "atan"
    output: str = "softmax"        # how the winners' values are aggregated
    prior_window: int | None = None      # brain-prior mask: local window ...
    prior_random_frac: float = 0.0       # ... plus this fraction of random long-range keys
    prior_seed: int = 0
    local_window: int | None = None      # brain prior: every key of this local window + k-WTA far keys
    proj_dim: int | None = None          # learned Q/K width per head (None: code_bits); a fixed random
                                         # map widens it to code_bits (wider codes, same parameters)
    fire_target: float | None = None     # code firing-rate target in the loss (sparse codes)
    fire_weight: float = 1.0
    levels: int = 2                      # spike-count levels per code bit (2: binary; 4: graded, 2 bit-planes)

    def _check(self) -> None:
        check_int("code_bits", self.code_bits)
        check_int("k", self.k)
        check_choice("score", self.score, SCORES)
        check_choice("neuron", self.neuron, NEURONS)
        check_choice("surrogate", self.surrogate, sorted(SURROGATES))
        check_choice("output", self.output, OUTPUTS)
        if self.prior_window is not None:
            check_int("prior_window", self.prior_window)
        if self.local_window is not None:
            check_int("local_window", self.local_window)
        check_int("levels", self.levels, low=2)
        if self.proj_dim is not None:
            check_int("proj_dim", self.proj_dim)
        if not 0.0 <= self.prior_random_frac <= 1.0:
            raise ValueError(f"prior_random_frac must be in [0, 1], got {self.prior_random_frac!r}")


def make_attention(config: SpikingConfig, layer: int) -> SpikingKWTAAttention:
    """One spiking attention layer; each layer gets its own prior seed, so the random
    long-range links differ between layers."""
    return SpikingKWTAAttention(
        config.n_embd, config.n_head, config.code_bits, config.k, max_seq_len=config.block_size,
        score=config.score, neuron=config.neuron, surrogate=config.surrogate, output=config.output,
        prior_window=config.prior_window, prior_random_frac=config.prior_random_frac,
        prior_seed=config.prior_seed + layer, local_window=config.local_window, proj_dim=config.proj_dim,
        fire_target=config.fire_target, fire_weight=config.fire_weight, levels=config.levels, bias=config.bias, n_layer=config.n_layer)


class SpikingTransformerLM(TransformerLM):
    """The k-WTA spiking attention transformer (the dense twin with spiking attention)."""

    def __init__(self, config: SpikingConfig):
        super().__init__(config, lambda i: make_attention(config, i))
