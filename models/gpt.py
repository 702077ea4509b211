"""Family ``gpt``: the dense softmax twin (nanoGPT) and its two sparse controls, as config values.

``attention`` picks the variant; everything else is the shared trunk (:mod:`models.base`):

- ``"dense"``: full causal softmax attention, the twin every other family is judged against;
- ``"topk"``: Explicit Sparse Transformer (Zhao et al. 2019, arXiv 1912.11637): the ``k``
  largest ``q.k / sqrt(hs)`` of each row among the causal keys, softmax over them (ties at the
  k-th score go to the more recent key, the spiking layer's rule);
- ``"window"``: the ``k`` most recent keys (the query and the k - 1 before it), a recency
  control with top-k's density;
- ``"topk"`` with ``local_window=w``: every key of the local window of w plus the ``k`` best
  older keys by float score: the real-valued twin of the spiking brain-prior variant.

Shapes:
    idx (B, T) int64 -> logits (B, T, vocab_size); loss a scalar when targets (B, T) are given.

Example:
    >>> m = GPT(GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128))
    >>> logits, loss = m(torch.zeros(2, 8, dtype=torch.long))
    >>> logits.shape
    torch.Size([2, 8, 65])
"""
from __future__ import annotations

from dataclasses import dataclass

import torch  # noqa: F401  (used in the docstring example)

from spiking_attention.attention import DenseCausalAttention, TopKSoftmaxAttention

from .base import TransformerLM, TrunkConfig, check_choice, check_int

ATTENTIONS = ("dense", "topk", "window")


@dataclass
class GPTConfig(TrunkConfig):
    attention: str = "dense"   # "dense" | "topk" | "window"
    k: int = 8                 # kept keys per query for "topk" / window length for "window"
    local_window: int | None = None   # "topk" only: every key of this local window + the k best older keys

    def _check(self) -> None:
        check_choice("attention", self.attention, ATTENTIONS)
        check_int("k", self.k)
        if self.local_window is not None:
            check_int("local_window", self.local_window)
            if self.attention != "topk":
                raise ValueError(f"local_window applies to attention='topk' (dense local keys + top-k far keys), "
                                 f"got attention={self.attention!r}")


def make_attention(config: GPTConfig):
    common = dict(max_seq_len=config.block_size, dropout=config.dropout, bias=config.bias)
    if config.attention == "topk":
        return TopKSoftmaxAttention(config.n_embd, config.n_head, config.k, local_window=config.local_window,
                                    **common)
    window = config.k if config.attention == "window" else None
    return DenseCausalAttention(config.n_embd, config.n_head, window=window, **common)


class GPT(TransformerLM):
    """The dense twin (and its top-k / window controls)."""

    def __init__(self, config: GPTConfig):
        super().__init__(config, lambda i: make_attention(config))
