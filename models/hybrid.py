"""Family ``hybrid``: a SpikingBrain-style hybrid-linear spiking language model (arXiv 2509.05276).

Pre-LayerNorm blocks ``x += mixer(LN x); x += ffn(LN x)`` over token embeddings (tied to the
output layer). Positions (``pos_emb``): ``"rotary"`` (default) adds no position embedding: the
window layers rotate q and k (the linear layers are ordered by their gates); ``"learned"`` adds
the dense twin's learned position embedding (``block_size`` rows) to the token embedding and the
window layers do not rotate: the config that holds a converted ``gpt`` model
(:func:`models.convert.to_hybrid`), whose generation past ``block_size`` reruns the last
``block_size`` tokens as the twin's does. ``layout`` picks the mixers (components in
:mod:`spiking_attention.linear_attention`):

- ``"alternate"``: gated linear attention in even layers, sliding-window softmax attention
  (``window`` tokens) in odd layers (SpikingBrain-7B's inter-layer hybrid);
- ``"parallel"``: both in every layer, summed before one output projection (SpikingBrain-76B's
  intra-layer hybrid);
- ``"linear"``: gated linear attention only (an ablation);
- ``"window"``: sliding-window attention only (an ablation; with a window covering the context
  and no spike coding, a converted dense twin in this layout computes the twin itself, which is
  how tests/test_convert.py checks the weight mapping of :func:`models.convert.to_hybrid`).

The FFN is SwiGLU (``ffn="swiglu"``) or the trunk's GELU MLP (``"mlp"``), hidden width
``round(ffn_mult * n_embd)``; with ``moe_experts = n`` it is a :class:`spiking_attention.moe.MoEFFN`
(a shared expert + n routed experts, top-1), built from a trained dense model by :func:`upcycle`.
The training loss then adds ``moe_aux_weight`` x the mean load-balancing loss.

Spikes: with ``spike_coding="adaptive"`` every projection of the mixers and FFNs takes its input
as SpikingBrain's adaptive-threshold integer spike counts (threshold ``mean|x| / spike_k`` per
token, straight-through; :mod:`spiking_attention.spike_coding`), so its matrix products are
accumulates; :meth:`HybridLM.spike_report` gives sparsity, spikes per channel, the count histogram
and the packed memory of the binary / ternary / bitwise spike trains. ``"none"`` is the float
control with the same weights.

Decoding (:meth:`HybridLM.decoder`): the linear layers keep a (n_head, hs, hs) state, the window
layers a KV cache of window - 1 tokens, so a generated token costs the same at any context length.

Shapes:
    idx (B, T) int64 -> logits (B, T, vocab_size); loss a scalar when targets (B, T) are given.

Example:
    >>> m = HybridLM(HybridConfig(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=32, window=8))
    >>> logits, loss = m(torch.zeros(1, 8, dtype=torch.long))
    >>> m.generate(torch.zeros(1, 1, dtype=torch.long), 5).shape
    torch.Size([1, 6])
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from spiking_attention.linear_attention import GatedLinearAttention, ParallelHybridAttention, SlidingWindowAttention
from spiking_attention.moe import FFNS, MoEFFN
from spiking_attention.spike_coding import CODINGS, SpikeCodedLinear, count_stats, trains_memory
from spiking_attention.stats import reporting_layers

from .base import (RecurrentDecoder, TrunkConfig, adamw_decay_matrices, check_choice, check_generate_args,
                   check_idx, check_int, generate_with_decoder, run_blocks, sample_next)

LAYOUTS = ("alternate", "parallel", "linear", "window")
POS_EMBS = ("rotary", "learned")


@dataclass
class HybridConfig(TrunkConfig):
    layout: str = "alternate"       # "alternate" | "parallel" | "linear" | "window"
    window: int = 16                # sliding-window length (the query and window - 1 before it)
    chunk: int = 16                 # tokens per chunk of the training form of GLA
    gate_rank: int = 16             # rank of GLA's gate projection
    ffn: str = "swiglu"             # "swiglu" | "mlp"
    ffn_mult: float = 2.6875        # FFN hidden = round(ffn_mult * n_embd); 2.6875 -> 344 at width 128
    spike_coding: str = "adaptive"  # "adaptive" (integer spike counts into every projection) | "none"
    spike_k: float = 3.0            # threshold = mean|x| / spike_k per token
    moe_experts: int = 0            # 0: dense FFN; n: shared expert + n routed experts (top-1)
    moe_aux_weight: float = 0.01    # weight of the load-balancing loss in the training loss
    pos_emb: str = "rotary"         # "rotary" (window layers rotate q, k) | "learned" (a gpt's wpe, no rotation)

    def _check(self) -> None:
        check_choice("layout", self.layout, LAYOUTS)
        check_int("window", self.window)
        check_int("chunk", self.chunk)
        check_int("gate_rank", self.gate_rank)
        check_choice("ffn", self.ffn, tuple(FFNS))
        check_choice("spike_coding", self.spike_coding, CODINGS)
        for name in ("ffn_mult", "spike_k"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"{name} must be a number > 0, got {v!r}")
        if round(self.ffn_mult * self.n_embd) < 1:
            raise ValueError(f"ffn_mult * n_embd = {self.ffn_mult * self.n_embd} leaves no hidden unit")
        check_int("moe_experts", self.moe_experts, low=0)
        if not self.moe_aux_weight >= 0:
            raise ValueError(f"moe_aux_weight must be >= 0, got {self.moe_aux_weight!r}")
        check_choice("pos_emb", self.pos_emb, POS_EMBS)
        if self.layout != "linear" and self.pos_emb == "rotary" and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"the window layers' rotary embeddings need an even head size; "
                             f"n_embd / n_head = {self.n_embd // self.n_head}")

    @property
    def d_hidden(self) -> int:
        return int(round(self.ffn_mult * self.n_embd))

    def mixer_kind(self, layer: int) -> str:
        if self.layout == "alternate":
            return "gla" if layer % 2 == 0 else "window"
        return {"linear": "gla", "window": "window", "parallel": "parallel"}[self.layout]


def make_ffn(config: HybridConfig) -> nn.Module:
    return FFNS[config.ffn](config.n_embd, config.d_hidden, coding=config.spike_coding, spike_k=config.spike_k,
                            bias=config.bias, out_std=0.02 / math.sqrt(2 * config.n_layer))


def make_mixer(config: HybridConfig, layer: int) -> nn.Module:
    common = dict(coding=config.spike_coding, spike_k=config.spike_k, bias=config.bias, n_layer=config.n_layer)
    kind = config.mixer_kind(layer)
    if kind == "gla":
        return GatedLinearAttention(config.n_embd, config.n_head, chunk=config.chunk, gate_rank=config.gate_rank,
                                    **common)
    rotary = config.pos_emb == "rotary"
    if kind == "window":
        return SlidingWindowAttention(config.n_embd, config.n_head, config.window, rotary=rotary, **common)
    return ParallelHybridAttention(config.n_embd, config.n_head, config.window, chunk=config.chunk,
                                   gate_rank=config.gate_rank, rotary=rotary, **common)


class HybridBlock(nn.Module):
    """``x += mixer(LN x); x += ffn(LN x)``. Shapes: (B, T, C) -> (B, T, C)."""

    def __init__(self, config: HybridConfig, layer: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mixer = make_mixer(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        if config.moe_experts:
            self.ffn = MoEFFN(lambda: make_ffn(config), config.n_embd, config.moe_experts)
        else:
            self.ffn = make_ffn(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, state=None, mode: str = "chunked"):
        y, state = self.mixer(self.ln_1(x), state, mode)
        x = x + self.drop(y)
        return x + self.drop(self.ffn(self.ln_2(x))), state


class HybridLM(nn.Module):
    """The hybrid model. See the module docstring."""

    def __init__(self, config: HybridConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd) if config.pos_emb == "learned" else None
        if self.wpe is not None:
            nn.init.normal_(self.wpe.weight, std=0.02)      # nanoGPT's init, as the twin's
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([HybridBlock(config, i) for i in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight   # weight tying, as the dense twin
        nn.init.normal_(self.lm_head.weight, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.wte.weight.numel() if non_embedding else n

    def active_params(self) -> int:
        """Parameters one token uses: all, less the routed experts it is not sent to."""
        idle = sum((b.ffn.n_experts - 1) * sum(p.numel() for p in b.ffn.experts[0].parameters())
                   for b in self.blocks if isinstance(b.ffn, MoEFFN))
        return self.num_params() - idle

    def hidden(self, idx: torch.Tensor, states: list | None = None, mode: str = "chunked", start: int = 0):
        """Run the blocks from ``states`` (None: empty); ``idx`` sits at positions ``start ..`` (used by
        learned position embeddings only). Shapes: (B, T) -> logits (B, T, V), new states."""
        x = self.wte(idx)                                                        # (B, T, C)
        if self.wpe is not None:
            if start + idx.shape[1] > self.config.block_size:
                raise ValueError(f"learned position embeddings cover {self.config.block_size} positions; "
                                 f"tokens at {start}..{start + idx.shape[1] - 1} are past them")
            x = x + self.wpe(torch.arange(start, start + idx.shape[1], device=idx.device))
        x = self.drop(x)
        x, new = run_blocks(self.blocks, x, states, mode)
        return self.lm_head(self.ln_f(x)), new

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        check_idx(idx, self.config.block_size)
        logits, _ = self.hidden(idx)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
            moes = [b.ffn for b in self.blocks if isinstance(b.ffn, MoEFFN)]
            if moes and self.config.moe_aux_weight > 0:
                loss = loss + self.config.moe_aux_weight * torch.stack([m.aux_loss for m in moes]).mean()
        return logits, loss

    def layer_stats(self) -> list[dict]:
        return [m.layer_stats() for _, m in reporting_layers(self)]

    def configure_optimizer(self, weight_decay: float, lr: float, betas=(0.9, 0.99)):
        """AdamW; decay on matrices and embeddings only."""
        return adamw_decay_matrices(self, weight_decay, lr, betas)

    @torch.no_grad()
    def spike_report(self, idx: torch.Tensor) -> dict:
        """One forward pass over ``idx`` (B, T); per spike-coded projection and in total: sparsity
        (fraction of zero counts), spikes per channel, the count histogram, and the bytes of the
        packed binary / ternary / bitwise spike trains beside float32 and int8 storage."""
        coded = [(n, m) for n, m in self.named_modules() if isinstance(m, SpikeCodedLinear) and m.coding != "none"]
        if not coded:
            raise ValueError("spike_report needs spike_coding='adaptive'; this model has no spike-coded layer")
        was = self.training
        self.eval()
        for _, m in coded:
            m.record = True
        try:
            self(idx)
            layers, all_counts = [], []
            for name, m in coded:
                c = m.recorded()["counts"]
                all_counts.append(c.reshape(-1))
                layers.append({"name": name, **count_stats(c), **trains_memory(c)})
        finally:
            for _, m in coded:
                m.record = False
            self.train(was)
        total = {k: sum(layer[k] for layer in layers) for k in layers[0] if k.endswith("_bytes") or k == "n_values"}
        return {"layers": layers, "total": {**count_stats(torch.cat(all_counts)), **total}}

    def decoder(self) -> RecurrentDecoder:
        """Incremental decoding: ``prefill(idx) -> (logits, state)``, ``step(token, state) -> logits``."""
        return RecurrentDecoder(self)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample through the decoder (recurrent state + window KV cache). Shapes: (B, T0) -> (B, T0 + n).

        With learned positions the decoder runs while the text fits in ``block_size``; past it each
        token reruns the last ``block_size`` tokens (positions 0..block_size - 1), as the dense twin's
        ``generate`` does (its positions would shift otherwise).
        """
        if self.wpe is None:
            return generate_with_decoder(self, idx, max_new_tokens, temperature, top_k, generator)
        check_generate_args(idx, temperature)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
        T = self.config.block_size
        n_cached = max(0, min(max_new_tokens, T - idx.shape[1] + 1)) if idx.shape[1] <= T else 0
        if n_cached:
            idx = generate_with_decoder(self, idx, n_cached, temperature, top_k, generator)
        was = self.training
        self.eval()
        try:
            for _ in range(max_new_tokens - n_cached):
                logits, _ = self(idx[:, -T:])
                idx = torch.cat((idx, sample_next(logits[:, -1], temperature, top_k, generator)), dim=1)
        finally:
            self.train(was)
        return idx


def upcycle(dense: HybridLM, n_experts: int, *, noise: float = 0.01, seed: int = 0,
            aux_weight: float | None = None) -> HybridLM:
    """A MoE copy of a trained dense :class:`HybridLM`: every weight copied, each dense FFN turned
    into a shared expert + ``n_experts`` routed copies (noise: ``noise`` x each weight's std) and a
    fresh top-1 router (:meth:`spiking_attention.moe.MoEFFN.upcycle`).
    """
    if dense.config.moe_experts:
        raise ValueError(f"upcycle needs a dense model (moe_experts=0), got moe_experts={dense.config.moe_experts}")
    check_int("n_experts", n_experts)
    values = {**asdict(dense.config), "moe_experts": n_experts}
    if aux_weight is not None:
        values["moe_aux_weight"] = aux_weight
    moe = HybridLM(HybridConfig(**values))
    gen = torch.Generator().manual_seed(seed)
    own = {k: v for k, v in dense.state_dict().items() if ".ffn." not in k}
    missing, unexpected = moe.load_state_dict(own, strict=False)
    assert not unexpected and all(".ffn." in k for k in missing), (missing, unexpected)
    for b_moe, b_dense in zip(moe.blocks, dense.blocks):
        up = MoEFFN.upcycle(b_dense.ffn, dense.config.n_embd, n_experts, noise=noise, generator=gen)
        up.router.weight.data.copy_(torch.randn(up.router.weight.shape, generator=gen) * 0.02)
        b_moe.ffn = up
    return moe
