"""Family ``spiking_rwkv``: a SpikeGPT-style spiking RWKV language model (Zhu et al. 2023, arXiv 2302.13939).

Binarised token embeddings (a Heaviside with an ATan surrogate) feed ``n_layer`` RWKV-v4 blocks
(Peng et al. 2023, arXiv 2305.13048), each

    x = x + LIF(TimeMix(LN(x)))       token mixing: the WKV linear recurrence
    x = x + LIF(ChannelMix(LN(x)))    channel mixing: squared ReLU with a sigmoid receptance

with LIF neurons (tau 2, v_th 1, hard reset, ATan surrogate) run along the token axis, so every
block adds spikes to the residual stream; a final LayerNorm and an untied output layer give the
logits. The components live in :mod:`spiking_attention.rwkv`.

Cost: training runs the WKV chunk by chunk (``chunk`` tokens: an L x L matrix per channel
inside a chunk, the recurrent state between chunks; never T x T); generation runs the
recurrence with O(1) state per layer and token (token-shift inputs, the WKV's (a, b, p) and two
LIF membranes: 7 vectors of ``n_embd`` numbers per layer) through :meth:`SpikingRWKV.decoder`.
There is no position embedding, so the decoder may run past ``block_size`` (the training context);
``forward`` refuses longer inputs like every family.

``n_head`` is part of the shared trunk config but unused (WKV is per channel).

Shapes:
    idx (B, T) int64 -> logits (B, T, vocab_size); loss a scalar when targets (B, T) are given.

Example:
    >>> m = SpikingRWKV(RWKVConfig(vocab_size=65, block_size=32, n_layer=2, n_embd=32))
    >>> logits, loss = m(torch.zeros(1, 8, dtype=torch.long))
    >>> m.generate(torch.zeros(1, 1, dtype=torch.long), 5).shape
    torch.Size([1, 6])
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from spiking_attention.rwkv import BinaryEmbedding, ChannelMix, TimeMix
from spiking_attention.stats import reporting_layers
from spiking_attention.surrogate import SURROGATES

from .base import (RecurrentDecoder, TrunkConfig, adamw_decay_matrices, check_choice, check_idx, check_int,
                   generate_with_decoder, run_blocks)


@dataclass
class RWKVConfig(TrunkConfig):
    ffn_mult: float = 3.5       # ChannelMix hidden width = round(ffn_mult * n_embd); 3.5 matches gpt/dense's params
    chunk: int = 16             # tokens per chunk of the training form of WKV
    surrogate: str = "atan"     # surrogate of the LIF neurons and the binarised embedding

    def _check(self) -> None:
        if not (isinstance(self.ffn_mult, (int, float)) and not isinstance(self.ffn_mult, bool)
                and self.ffn_mult > 0):
            raise ValueError(f"ffn_mult must be a number > 0, got {self.ffn_mult!r}")
        if round(self.ffn_mult * self.n_embd) < 1:
            raise ValueError(f"ffn_mult * n_embd = {self.ffn_mult * self.n_embd} leaves no hidden unit")
        check_int("chunk", self.chunk)
        check_choice("surrogate", self.surrogate, sorted(SURROGATES))

    @property
    def d_hidden(self) -> int:
        return int(round(self.ffn_mult * self.n_embd))


class RWKVBlock(nn.Module):
    """``x += LIF(TimeMix(LN x)); x += LIF(ChannelMix(LN x))``. Shapes: (B, T, C) -> (B, T, C)."""

    def __init__(self, config: RWKVConfig, layer_id: int):
        super().__init__()
        C = config.n_embd
        self.ln_1 = nn.LayerNorm(C, bias=config.bias)
        self.att = TimeMix(C, layer_id=layer_id, n_layer=config.n_layer, chunk=config.chunk, bias=config.bias,
                           surrogate=config.surrogate)
        self.ln_2 = nn.LayerNorm(C, bias=config.bias)
        self.ffn = ChannelMix(C, config.d_hidden, layer_id=layer_id, n_layer=config.n_layer, bias=config.bias,
                              surrogate=config.surrogate)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, state: dict | None = None, mode: str = "chunked"):
        state = state or {}
        s, att_state = self.att(self.ln_1(x), state.get("att"), mode)
        x = x + self.drop(s)
        s, ffn_state = self.ffn(self.ln_2(x), state.get("ffn"))
        x = x + self.drop(s)
        return x, {"att": att_state, "ffn": ffn_state}


class SpikingRWKV(nn.Module):
    """The SpikeGPT-style model. See the module docstring."""

    def __init__(self, config: RWKVConfig):
        super().__init__()
        self.config = config
        self.emb = BinaryEmbedding(config.vocab_size, config.n_embd, surrogate=config.surrogate)
        self.blocks = nn.ModuleList([RWKVBlock(config, i) for i in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        nn.init.normal_(self.lm_head.weight, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.emb.weight.numel() if non_embedding else n

    def hidden(self, idx: torch.Tensor, states: list | None = None, mode: str = "chunked", start: int = 0):
        """Run the blocks from ``states`` (None: rest); ``start`` (the first token's position) is
        unused: there is no position embedding. Shapes: (B, T) -> logits (B, T, V), new states."""
        x = self.emb(idx)                                                     # (B, T, C) in {0, 1}
        x, new = run_blocks(self.blocks, x, states, mode)
        return self.lm_head(self.ln_f(x)), new

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        check_idx(idx, self.config.block_size)
        logits, _ = self.hidden(idx)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def layer_stats(self) -> list[dict]:
        return [m.layer_stats() for _, m in reporting_layers(self)]

    def configure_optimizer(self, weight_decay: float, lr: float, betas=(0.9, 0.99)):
        """AdamW; decay on matrices only (not decays, bonuses, mixes, norms)."""
        return adamw_decay_matrices(self, weight_decay, lr, betas)

    def decoder(self) -> RecurrentDecoder:
        """Incremental decoding: ``prefill(idx) -> (logits, state)``, ``step(token, state) -> logits``."""
        return RecurrentDecoder(self)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample ``max_new_tokens`` tokens after ``idx`` with the recurrent state (O(1) per token).

        Shapes: idx (B, T0) -> (B, T0 + max_new_tokens).
        """
        return generate_with_decoder(self, idx, max_new_tokens, temperature, top_k, generator)
