"""SpikingTransformerLM: a character language model whose attention is spiking k-winner-take-all.

The model is the dense twin (:mod:`models.dense_gpt`: nanoGPT's embeddings, pre-LayerNorm
blocks, 4x GELU MLP and weight-tied head) with every attention layer replaced by
:class:`spiking_attention.attention.SpikingKWTAAttention`: queries and keys are binary spike
codes of ``code_bits`` bits per head (a learned projection followed by a spiking neuron with a
surrogate gradient), a score is the overlap of two codes (bipolar Hamming similarity or
popcount of AND), k-WTA keeps the ``k`` best causal keys of each query, and the output
aggregates the winners' values. With ``code_bits = n_embd / n_head`` the Q/K projections have
the twin's shapes, so the parameter counts match.

Shapes:
    idx (B, T) int64 -> logits (B, T, vocab_size); loss a scalar when targets (B, T) are given.

Example:
    >>> cfg = SpikingConfig(vocab_size=65, block_size=64, n_layer=2, n_head=4, n_embd=64, code_bits=16)
    >>> m = SpikingTransformerLM(cfg)                                   # doctest: +SKIP
    >>> logits, loss = m(torch.zeros(1, 8, dtype=torch.long))           # doctest: +SKIP
    >>> m.generate(torch.zeros(1, 1, dtype=torch.long), 20).shape       # doctest: +SKIP
    torch.Size([1, 21])
"""
from __future__ import annotations

from dataclasses import dataclass

from models.dense_gpt import TransformerLM, validate_common

SCORES = ("hamming", "overlap")


@dataclass
class SpikingConfig:
    vocab_size: int = 65
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False
    code_bits: int = 32            # bits of each binary query/key code, per head
    k: int = 8                     # winners (attended keys) per query
    score: str = "hamming"         # "hamming" (bipolar codes) | "overlap" (popcount of AND)
    neuron: str | None = None      # spiking neuron for the codes; None = the attention module's default
    surrogate: str = "atan"
    output: str = "softmax"        # how the winners' values are aggregated
    prior_window: int | None = None      # brain-prior mask: local window ...
    prior_random_frac: float = 0.0       # ... plus this fraction of random long-range keys
    prior_seed: int = 0

    def validate(self) -> None:
        validate_common(self)
        if not isinstance(self.code_bits, int) or self.code_bits < 1:
            raise ValueError(f"code_bits must be a positive integer, got {self.code_bits!r}")
        if not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be an integer >= 1, got {self.k!r}")
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {self.score!r}")
        if self.prior_window is not None and self.prior_window < 1:
            raise ValueError(f"prior_window must be >= 1 or None, got {self.prior_window}")
        if not 0.0 <= self.prior_random_frac <= 1.0:
            raise ValueError(f"prior_random_frac must be in [0, 1], got {self.prior_random_frac}")


def make_spiking_attention(config: SpikingConfig):
    """One SpikingKWTAAttention layer built from the model config."""
    from spiking_attention.attention import SpikingKWTAAttention  # the components engineer's module

    kwargs = dict(max_seq_len=config.block_size, score=config.score, surrogate=config.surrogate,
                  output=config.output, prior_window=config.prior_window,
                  prior_random_frac=config.prior_random_frac, prior_seed=config.prior_seed,
                  bias=config.bias, n_layer=config.n_layer)
    if config.neuron is not None:
        kwargs["neuron"] = config.neuron
    attn = SpikingKWTAAttention(config.n_embd, config.n_head, config.code_bits, config.k, **kwargs)
    attn.own_init = True  # keep the module's own initialisation of projections and thresholds
    return attn


class SpikingTransformerLM(TransformerLM):
    """The k-WTA spiking attention transformer (the dense twin with spiking attention)."""

    def __init__(self, config: SpikingConfig):
        config.validate()
        # different prior seeds per layer, so the random long-range links differ between layers
        super().__init__(config, lambda i: make_spiking_attention(
            _replace(config, prior_seed=config.prior_seed + i)))


def _replace(config: SpikingConfig, **changes) -> SpikingConfig:
    from dataclasses import replace
    return replace(config, **changes)
