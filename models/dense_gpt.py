"""The dense softmax twin: a nanoGPT-style character language model, plus two sparse controls.

``GPT`` is nanoGPT's decoder (token + position embeddings, pre-LayerNorm blocks of causal
self-attention and a 4x GELU MLP, weight-tied head). ``attention`` picks the arm:

- ``"dense"``: full causal softmax attention (the twin the spiking model is judged against);
- ``"topk"``: Explicit Sparse Transformer (Zhao et al. 2019): keep the ``k`` largest scores
  of each row of QK^T/sqrt(hs) among the causal-allowed keys, set the rest to -inf, softmax.
  The gradient reaches only the kept scores (the others are constants -inf). Selection is
  :func:`spiking_attention.kwta.kwta` (ties at the k-th score go to the more recent key);
- ``"window"``: the ``k`` most recent keys (the query itself and the k-1 before it), a
  recency control with the same density as top-k.

The pieces shared with :class:`spiking_attention.model.SpikingTransformerLM` live here
(:class:`MLP`, :class:`Block`, :class:`TransformerLM`): the spiking model *is* this model with
its attention module swapped, which is what makes it a twin.

Shapes:
    idx (B, T) int64 -> logits (B, T, vocab_size); loss a scalar when targets (B, T) are given.

Example:
    >>> m = GPT(GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128))
    >>> logits, loss = m(torch.zeros(2, 8, dtype=torch.long))
    >>> logits.shape
    torch.Size([2, 8, 65])
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
from torch.nn import functional as F

ATTENTIONS = ("dense", "topk", "window")


@dataclass
class GPTConfig:
    vocab_size: int = 65
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False
    attention: str = "dense"   # "dense" | "topk" | "window"
    k: int = 8                 # kept keys per query for "topk" / window length for "window"

    def validate(self) -> None:
        validate_common(self)
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")


def validate_common(cfg) -> None:
    """Checks shared by every model config (vocab, context, depth, width, heads, dropout)."""
    for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if cfg.n_embd % cfg.n_head != 0:
        raise ValueError(f"n_embd ({cfg.n_embd}) must be divisible by n_head ({cfg.n_head})")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {cfg.dropout}")


def allowed_mask(T: int, attention: str, k: int, device=None) -> torch.Tensor:
    """(T, T) bool: which keys each query may see. Causal for "dense"/"topk", the last k for "window"."""
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)[None, :]
    mask = j <= i
    if attention == "window":
        mask &= j > i - k
    return mask


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: dense softmax, top-k softmax or a recency window."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.n_embd = config.n_head, config.n_embd
        self.attention, self.k = config.attention, config.k
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        self.last_stats: dict = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        nh, hs = self.n_head, C // self.n_head
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        drop = self.dropout if self.training else 0.0
        if self.attention == "dense":
            # fast path: fused kernel; the explicit path below computes the same softmax
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
            kept = allowed_mask(T, "dense", self.k, x.device)
        elif self.attention == "window":
            kept = allowed_mask(T, "window", self.k, x.device)           # (T, T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=kept, dropout_p=drop)
        else:  # "topk": readable explicit path
            # imported here, not at the top: spiking_attention imports this module (the twin)
            from spiking_attention.kwta import kwta
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))     # (B, nh, T, T)
            # k largest causal scores kept, the rest -inf (zero gradient); ties -> recent key
            att = kwta(att, self.k, mode="sparse", causal=True)          # (B, nh, T, T)
            kept = torch.isfinite(att)
            att = F.softmax(att, dim=-1)
            att = F.dropout(att, p=drop, training=self.training)
            y = att @ v                                                  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)                 # (B, T, C)
        self.last_stats = _density_stats(kept.detach(), T)
        return self.resid_dropout(self.c_proj(y))


def _density_stats(kept: torch.Tensor, T: int) -> dict:
    """Attended keys per query and density against the causal-allowed entries (not T^2)."""
    n_allowed = T * (T + 1) / 2
    kept_f = kept.float()
    per_query = kept_f.sum(-1)                                            # (..., T)
    return {
        "attn_density": float(kept_f.sum(dim=(-2, -1)).mean() / n_allowed),
        "attended_per_query": float(per_query.mean()),
    }


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))  # (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm transformer block around any causal attention module (B, T, C) -> (B, T, C)."""

    def __init__(self, config, attn: nn.Module):
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

    def __init__(self, config, make_attn: Callable[[int], nn.Module]):
        super().__init__()
        config.validate()
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

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        if idx.dim() != 2:
            raise ValueError(f"idx must be (B, T), got shape {tuple(idx.shape)}")
        B, T = idx.size()
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
        pos = torch.arange(0, T, dtype=torch.long, device=idx.device)           # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)                                                 # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def layer_stats(self) -> list[dict]:
        """The detached statistics each attention module kept from the last forward pass."""
        return [dict(getattr(blk.attn, "last_stats", {}) or {}) for blk in self.transformer.h]

    def configure_optimizer(self, weight_decay: float, lr: float, betas=(0.9, 0.99)):
        """AdamW; weight decay on matrices and embeddings only (not norms, biases, thresholds)."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, betas=betas)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample ``max_new_tokens`` tokens after ``idx`` (B, T0), cropping the context to block_size.

        Shapes: idx (B, T0) -> (B, T0 + max_new_tokens).
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if idx.dim() != 2 or idx.size(1) < 1:
            raise ValueError("generate needs a (B, T0) prompt with T0 >= 1")
        was_training = self.training
        self.eval()
        for _ in range(max_new_tokens):
            idx_cond = idx[:, -self.config.block_size:]
            logits, _ = self(idx_cond)
            logits = logits[:, -1, :] / temperature                              # (B, V)
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("inf")
            probs = F.softmax(logits, dim=-1)
            idx_next = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
            idx = torch.cat((idx, idx_next), dim=1)
        self.train(was_training)
        return idx


class GPT(TransformerLM):
    """The dense twin (and its top-k / window controls)."""

    def __init__(self, config: GPTConfig):
        super().__init__(config, lambda i: CausalSelfAttention(config))
