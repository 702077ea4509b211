"""The shared trunk of the transformer families: the shape fields of every Config and nanoGPT's body.

:class:`TrunkConfig` holds the fields every language model here has (vocabulary, context,
depth, width, heads, dropout, bias) and runs the one validation pass of a config, at
construction (``__post_init__``); a family's Config subclasses it and adds its own fields and
checks in ``_check``. :class:`TransformerLM` is nanoGPT's decoder (Radford et al. 2019 as
written in karpathy/nanoGPT: token + position embeddings, pre-LayerNorm blocks of causal
attention and a 4x GELU MLP, weight-tied head) with the attention module supplied per layer,
so the dense twin and the spiking model differ in exactly one module.

Shapes:
    idx (B, T) int64 -> logits (B, T, vocab_size); loss a scalar when targets (B, T) are given.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Callable

import torch
import torch.nn as nn
from torch.nn import functional as F

from spiking_attention.stats import reporting_layers

__all__ = ["TrunkConfig", "MLP", "Block", "TransformerLM", "RecurrentDecoder", "check_int", "check_choice",
           "check_idx", "generate_with_decoder"]


def check_int(name: str, value, low: int = 1) -> None:
    """``value`` must be an int (not bool) >= ``low``; else ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


@dataclass
class TrunkConfig:
    """Shape fields shared by every transformer family; validated once, when the config is made."""

    vocab_size: int = 65
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            check_int(name, getattr(self, name))
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        self._check()

    def _check(self) -> None:
        """A family's own field checks (override)."""

    @classmethod
    def from_dict(cls, config: dict):
        """A validated config from a plain dict (what checkpoints store); unknown keys raise."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}; allowed: {sorted(names)}")
        return cls(**config)


class MLP(nn.Module):
    def __init__(self, config: TrunkConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))  # (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm transformer block around any causal attention module (B, T, C) -> (B, T, C)."""

    def __init__(self, config: TrunkConfig, attn: nn.Module):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = attn
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class TransformerLM(nn.Module):
    """nanoGPT's decoder body with the attention module supplied by ``make_attn(layer_index)``.

    nanoGPT's initialisation (N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layer))
    is applied to everything except attention modules that set ``own_init = True`` (spiking
    attention initialises its own projections and neuron parameters).
    """

    def __init__(self, config: TrunkConfig, make_attn: Callable[[int], nn.Module]):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, make_attn(i)) for i in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        skip = {id(p) for blk in self.transformer.h if getattr(blk.attn, "own_init", False)
                for p in blk.attn.parameters()}
        for pn, p in self.named_parameters():
            if id(p) in skip:
                continue
            if pn.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
            elif p.dim() >= 2:
                nn.init.normal_(p, mean=0.0, std=0.02)
            elif pn.endswith("bias"):
                nn.init.zeros_(p)

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def embed(self, idx: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Token + position embeddings of ``idx`` at positions ``start ..``. Shapes: (B, T) -> (B, T, C)."""
        pos = torch.arange(start, start + idx.size(1), dtype=torch.long, device=idx.device)  # (T,)
        return self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Final LayerNorm and the tied output layer. Shapes: (B, T, C) -> (B, T, V)."""
        return self.lm_head(self.transformer.ln_f(x))

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        if idx.dim() != 2:
            raise ValueError(f"idx must be (B, T), got shape {tuple(idx.shape)}")
        B, T = idx.size()
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
        x = self.embed(idx)                                                      # (B, T, C)
        for block in self.transformer.h:
            x = block(x)
        logits = self.head(x)                                                    # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
            # layers with a training objective of their own (e.g. a firing-rate target) add it here
            for blk in self.transformer.h:
                aux = getattr(blk.attn, "aux_loss", None)
                if aux is not None:
                    loss = loss + aux
        return logits, loss

    def layer_stats(self) -> list[dict]:
        """What each reporting layer (stats protocol) measured in the last forward pass."""
        return [m.layer_stats() for _, m in reporting_layers(self)]

    def configure_optimizer(self, weight_decay: float, lr: float, betas=(0.9, 0.99)):
        """AdamW; weight decay on matrices and embeddings only (not norms, biases, thresholds)."""
        return adamw_decay_matrices(self, weight_decay, lr, betas)

    def packed(self, **kw):
        """An inference model whose attention layers run on packed binary codes with a packed KV
        cache (:class:`models.packed.PackedLM`); raises if a layer has no packed form."""
        from models.packed import PackedLM
        return PackedLM(self, **kw)

    def decoder(self, **kw):
        """Incremental decoding with a KV cache in every layer (packed codes where a layer has
        them): ``prefill(idx (1, T)) -> (logits, caches)``, ``step(token (1, 1), caches) -> logits (1, V)``."""
        from models.packed import IncrementalLM
        return IncrementalLM(self, **kw)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None,
                 use_cache: bool = True) -> torch.Tensor:
        """Sample ``max_new_tokens`` tokens after ``idx`` (B, T0), cropping the context to block_size.

        One sequence (B = 1) decodes incrementally with a KV cache (:meth:`decoder`) unless
        ``use_cache=False`` or a layer has no incremental form; a batch runs the full forward at
        every step (the reference).
        Shapes: idx (B, T0) -> (B, T0 + max_new_tokens).
        """
        check_generate_args(idx, temperature)
        if use_cache and idx.size(0) == 1 and all(hasattr(b.attn, "decoder") for b in self.transformer.h):
            was_training = self.training
            self.eval()
            try:
                return self.decoder().generate(idx, max_new_tokens, temperature, top_k, generator)
            finally:
                self.train(was_training)
        was_training = self.training
        self.eval()
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -self.config.block_size:])
            idx = torch.cat((idx, sample_next(logits[:, -1, :], temperature, top_k, generator)), dim=1)
        self.train(was_training)
        return idx


def adamw_decay_matrices(model: nn.Module, weight_decay: float, lr: float, betas=(0.9, 0.99),
                         min_dim: int = 2) -> torch.optim.AdamW:
    """nanoGPT's AdamW: weight decay on the trainable tensors of at least ``min_dim`` dimensions
    (matrices, embeddings), none on the rest (norms, biases, thresholds, decays)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= min_dim], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < min_dim], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def run_blocks(blocks, x: torch.Tensor, states: list | None, mode: str):
    """Run recurrent blocks ``block(x, state, mode) -> (x, state)`` in order from ``states``
    (None: every block at rest). Returns the output and the new per-block states."""
    new = []
    for i, block in enumerate(blocks):
        x, st = block(x, None if states is None else states[i], mode)
        new.append(st)
    return x, new


def check_generate_args(idx: torch.Tensor, temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if idx.dim() != 2 or idx.size(1) < 1:
        raise ValueError(f"generate needs a (B, T0) prompt with T0 >= 1, got shape {tuple(idx.shape)}")


def sample_next(logits: torch.Tensor, temperature: float, top_k: int | None,
                generator: torch.Generator | None) -> torch.Tensor:
    """One sampled token per row from the last-position logits. Shapes: (B, V) -> (B, 1)."""
    logits = logits / temperature
    if top_k is not None:
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits[logits < v[:, [-1]]] = -float("inf")
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)      # (B, 1)


def check_idx(idx: torch.Tensor, block_size: int | None) -> None:
    if idx.dim() != 2 or idx.shape[1] < 1:
        raise ValueError(f"idx must be (B, T) with T >= 1, got shape {tuple(idx.shape)}")
    if block_size is not None and idx.shape[1] > block_size:
        raise ValueError(f"sequence length {idx.shape[1]} exceeds block_size {block_size}")


@torch.no_grad()
def generate_with_decoder(model, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                          top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sampling through ``model.decoder()``: one prefill of the prompt, then one step per token.

    Shapes: idx (B, T0) -> (B, T0 + max_new_tokens).
    """
    check_generate_args(idx, temperature)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    was_training = model.training
    model.eval()
    try:
        dec = model.decoder()
        logits, state = dec.prefill(idx)
        last = logits[:, -1]
        out = [idx]
        for n in range(max_new_tokens):
            nxt = sample_next(last.clone(), temperature, top_k, generator)   # (B, 1)
            out.append(nxt)
            if n + 1 < max_new_tokens:
                last = dec.step(nxt, state)
    finally:
        model.train(was_training)
    return torch.cat(out, dim=1)


class RecurrentDecoder:
    """Incremental decoding of a model with ``hidden(idx, states, mode, start) -> (logits, states)``
    (``mode`` "chunked" for a prompt, "recurrent" for one token; ``start`` the position of idx's
    first token, for a model with learned position embeddings): the per-layer state (recurrent
    sums, LIF membranes, a bounded window cache) is carried between calls and updated in place."""

    def __init__(self, model):
        self.model = model

    @torch.no_grad()
    def prefill(self, idx: torch.Tensor):
        """Shapes: idx (B, T) -> (logits (B, T, V), state)."""
        check_idx(idx, None)
        logits, states = self.model.hidden(idx, None, "chunked")
        return logits, {"layers": states, "pos": idx.shape[1]}

    @torch.no_grad()
    def step(self, token: torch.Tensor, state: dict) -> torch.Tensor:
        """Shapes: token (B, 1) -> logits (B, V); ``state`` advances by one token."""
        if token.dim() != 2 or token.shape[1] != 1:
            raise ValueError(f"step takes one token per row, shape (B, 1); got {tuple(token.shape)}")
        logits, state["layers"] = self.model.hidden(token, state["layers"], "recurrent", start=state["pos"])
        state["pos"] += 1
        return logits[:, -1]
