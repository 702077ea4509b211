"""Gated linear attention and sliding-window softmax attention: the token mixers of the hybrid family.

SpikingBrain (arXiv 2509.05276) alternates linear attention with sliding-window attention
(7B) or runs both in parallel in every layer (76B). Components here, assembly in
``models/hybrid.py``:

* :func:`gla_recurrent` / :func:`gla_chunked` / :func:`gla_reference` - gated linear attention
  (Yang et al. 2023, arXiv 2312.06635): per head a state ``S_t = diag(g_t) S_{t-1} + k_t^T v_t``
  (dk x dv) with a data-dependent gate ``g_t`` in (0, 1)^dk, read out by ``o_t = q_t S_t``. The
  recurrent form is generation's (O(1) state per token); the chunked form is training's: inside a
  chunk of L tokens an (L, L, dk) matrix of gate ratios ``exp(b_j - b_i)`` (b = cumulative log
  gates, so every exponent is <= 0 and nothing overflows), between chunks the state. Never T x T.
* :class:`GatedLinearAttention` - q, k, v projections (spike-coded inputs), a low-rank gate
  ``log g = logsigmoid(W2 W1 x + b) / gate_norm``, RMS-normalised head outputs, output projection.
* :class:`SlidingWindowAttention` - causal softmax attention over the ``window`` most recent
  tokens (the query and window - 1 before it) with rotary position embeddings (Su et al.,
  arXiv 2104.09864), so a KV cache of window - 1 tokens is all generation keeps. ``rotary=False``
  leaves q and k as they are, for a model whose positions come from a learned embedding added
  to its input (a dense twin converted to the hybrid keeps the twin's embedding and projections,
  and then this layer is the twin's softmax attention restricted to the window).
* :class:`ParallelHybridAttention` - both in one layer on the same input, their head outputs
  summed before one output projection.

Each mixer takes ``(x, state=None, mode)`` and returns ``(y, state)``: prefill/step decoding
passes the state along. Every mixer reports through the stats protocol: ``core_ops()`` counts the
core's multiply-accumulates per token at the recurrent/KV-cache cost (GLA: 3 dk dv per head,
window: 2 hs per attended key); the projections are :class:`SpikeCodedLinear` layers reporting
their own spikes and operations.

Shapes:
    x (B, T, C) -> y (B, T, C); GLA state (B, nh, dk, dv); window state k, v (B, nh, <= window-1, hs).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .spike_coding import CODINGS, SpikeCodedLinear
from .stats import StatsMixin

__all__ = ["gla_recurrent", "gla_chunked", "gla_reference", "rope", "GatedLinearAttention",
           "SlidingWindowAttention", "ParallelHybridAttention", "GATE_NORM"]

#: GLA's gate temperature: log g = logsigmoid(.) / 16 keeps gates near 1 at init (long memory)
GATE_NORM = 16.0
MODES = ("chunked", "recurrent")


def _check_pos_int(name: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")


def gla_recurrent(q, k, v, log_g, state=None):
    """GLA one token at a time: ``S = g_t S + k_t^T v_t``, ``o_t = q_t S``.

    Shapes: q, k, log_g (B, nh, T, dk); v (B, nh, T, dv); state (B, nh, dk, dv) or None ->
    (o (B, nh, T, dv), state).
    """
    B, nh, T, dk = q.shape
    S = q.new_zeros(B, nh, dk, v.shape[-1]) if state is None else state
    out = []
    for t in range(T):
        S = torch.exp(log_g[:, :, t])[..., None] * S + k[:, :, t, :, None] * v[:, :, t, None, :]
        out.append((q[:, :, t, None, :] @ S)[:, :, 0])                          # (B, nh, dv)
    return torch.stack(out, 2), S


def gla_chunked(q, k, v, log_g, state=None, chunk: int = 16):
    """GLA chunk by chunk (see the module docstring); the same numbers as :func:`gla_recurrent`.

    Shapes: as :func:`gla_recurrent`.
    """
    _check_pos_int("chunk", chunk)
    B, nh, T, dk = q.shape
    S = q.new_zeros(B, nh, dk, v.shape[-1]) if state is None else state
    out = []
    for s0 in range(0, T, chunk):
        qc, kc, vc = q[:, :, s0:s0 + chunk], k[:, :, s0:s0 + chunk], v[:, :, s0:s0 + chunk]
        b = torch.cumsum(log_g[:, :, s0:s0 + chunk], dim=2)                     # (B, nh, L, dk)
        L = b.shape[2]
        causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()     # [j, i]: i <= j
        diff = b[:, :, :, None, :] - b[:, :, None, :, :]                        # (B, nh, L, L, dk)
        ratio = torch.exp(torch.where(causal[:, :, None], diff, float("-inf")))  # gates from i+1 to j
        scores = torch.einsum("bhjd,bhid,bhjid->bhji", qc, kc, ratio)           # (B, nh, L, L)
        inter = (qc * torch.exp(b)) @ S                                          # (B, nh, L, dv)
        out.append(scores @ vc + inter)
        last = b[:, :, -1:, :]                                                   # (B, nh, 1, dk)
        S = torch.exp(last)[:, :, 0, :, None] * S + (kc * torch.exp(last - b)).transpose(-2, -1) @ vc
    return torch.cat(out, 2), S


def gla_reference(q, k, v, log_g):
    """The definition term by term in float64: ``o_t = sum_{i<=t} (q_t * prod_{s=i+1..t} g_s) . k_i v_i``."""
    q, k, v, log_g = (x.double() for x in (q, k, v, log_g))
    B, nh, T, dk = q.shape
    out = torch.zeros(B, nh, T, v.shape[-1], dtype=torch.float64)
    for t in range(T):
        for i in range(t + 1):
            decay = torch.exp(log_g[:, :, i + 1:t + 1].sum(2))                   # (B, nh, dk)
            w = (q[:, :, t] * decay * k[:, :, i]).sum(-1, keepdim=True)          # (B, nh, 1)
            out[:, :, t] += w * v[:, :, i]
    return out


def rope(x: torch.Tensor, start: int, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding of ``x`` at positions ``start ..`` (rotate-half convention).

    Shapes: x (B, nh, T, hs) with hs even -> same shape.
    """
    T, hs = x.shape[2], x.shape[3]
    half = hs // 2
    inv = base ** (-torch.arange(half, dtype=torch.float64, device=x.device) / half)  # (half,)
    ang = torch.arange(start, start + T, dtype=torch.float64, device=x.device)[:, None] * inv  # (T, half)
    cos, sin = torch.cos(ang).to(x.dtype), torch.sin(ang).to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def _heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    B, T, C = x.shape
    return x.view(B, T, n_head, C // n_head).transpose(1, 2)                    # (B, nh, T, hs)


def _merge(y: torch.Tensor) -> torch.Tensor:
    B, nh, T, hs = y.shape
    return y.transpose(1, 2).reshape(B, T, nh * hs)                              # (B, T, C)


def _check_mixer(d_model, n_head, coding):
    _check_pos_int("d_model", d_model)
    _check_pos_int("n_head", n_head)
    if d_model % n_head:
        raise ValueError(f"d_model ({d_model}) must be divisible by n_head ({n_head})")
    if coding not in CODINGS:
        raise ValueError(f"coding must be one of {CODINGS}, got {coding!r}")


class GatedLinearAttention(StatsMixin, nn.Module):
    """Multi-head gated linear attention (see the module docstring).

    ``out_proj=False`` returns the normalised head outputs (B, T, C) without the output
    projection (the parallel hybrid adds two mixers' outputs before one projection).
    Shapes: x (B, T, C), state (B, nh, hs, hs) or None -> (y (B, T, C), state).
    """

    def __init__(self, d_model: int, n_head: int, *, chunk: int = 16, gate_rank: int = 16,
                 coding: str = "adaptive", spike_k: float = 3.0, bias: bool = False, out_proj: bool = True,
                 n_layer: int = 4):
        super().__init__()
        _check_mixer(d_model, n_head, coding)
        _check_pos_int("chunk", chunk)
        _check_pos_int("gate_rank", gate_rank)
        self.d_model, self.n_head, self.head_size, self.chunk = d_model, n_head, d_model // n_head, chunk
        self.qkv = SpikeCodedLinear(d_model, 3 * d_model, bias=bias, coding=coding, k=spike_k)
        self.gate_down = nn.Linear(d_model, gate_rank, bias=False)
        self.gate_up = nn.Linear(gate_rank, d_model, bias=True)
        self.norm_weight = nn.Parameter(torch.ones(d_model))
        self.proj = (SpikeCodedLinear(d_model, d_model, bias=bias, coding=coding, k=spike_k)
                     if out_proj else None)
        nn.init.normal_(self.qkv.weight, std=0.02)
        nn.init.normal_(self.gate_down.weight, std=0.02)
        nn.init.normal_(self.gate_up.weight, std=0.02)
        nn.init.zeros_(self.gate_up.bias)
        if self.proj is not None:
            nn.init.normal_(self.proj.weight, std=0.02 / math.sqrt(2 * n_layer))
        self.record = False

    def heads(self, x: torch.Tensor, state=None, mode: str = "chunked"):
        """Normalised head outputs before the output projection. Shapes: (B, T, C) -> ((B, T, C), state)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        C, nh = self.d_model, self.n_head
        q, k, v = self.qkv(x).split(C, dim=-1)
        q = _heads(q, nh) * self.head_size ** -0.5                               # (B, nh, T, hs)
        k, v = _heads(k, nh), _heads(v, nh)                                      # (B, nh, T, hs)
        log_g = _heads(F.logsigmoid(self.gate_up(self.gate_down(x))) / GATE_NORM, nh)   # (B, nh, T, hs)
        if mode == "chunked":
            o, state = gla_chunked(q, k, v, log_g, state, self.chunk)
        else:
            o, state = gla_recurrent(q, k, v, log_g, state)
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-6)              # RMS norm per head
        B, T = x.shape[:2]
        self._report({"mean_gate": float(torch.exp(log_g.detach()).mean()), "B": B, "T": T},
                     {"mac": float(B * T * nh * 3 * self.head_size ** 2), "ac": 0.0})
        return _merge(o) * self.norm_weight, state

    def forward(self, x: torch.Tensor, state=None, mode: str = "chunked"):
        y, state = self.heads(x, state, mode)
        return (self.proj(y) if self.proj is not None else y), state

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_head={self.n_head}, chunk={self.chunk}"


class SlidingWindowAttention(StatsMixin, nn.Module):
    """Causal softmax attention over the ``window`` most recent tokens, rotary positions, KV cache.

    The state is ``{"k", "v": (B, nh, <= window - 1, hs) (keys already rotated), "pos": int}``:
    the cache never grows past window - 1 tokens, so a decoding step costs O(window).
    Shapes: x (B, T, C), state or None -> (y (B, T, C), state).
    """

    def __init__(self, d_model: int, n_head: int, window: int, *, coding: str = "adaptive", spike_k: float = 3.0,
                 bias: bool = False, out_proj: bool = True, n_layer: int = 4, rotary: bool = True):
        super().__init__()
        _check_mixer(d_model, n_head, coding)
        _check_pos_int("window", window)
        if not isinstance(rotary, bool):
            raise ValueError(f"rotary must be True or False, got {rotary!r}")
        self.rotary = rotary
        if rotary and (d_model // n_head) % 2:
            raise ValueError(f"rotary embeddings need an even head size, got d_model/n_head = {d_model // n_head}")
        self.d_model, self.n_head, self.head_size, self.window = d_model, n_head, d_model // n_head, window
        self.qkv = SpikeCodedLinear(d_model, 3 * d_model, bias=bias, coding=coding, k=spike_k)
        self.proj = (SpikeCodedLinear(d_model, d_model, bias=bias, coding=coding, k=spike_k)
                     if out_proj else None)
        nn.init.normal_(self.qkv.weight, std=0.02)
        if self.proj is not None:
            nn.init.normal_(self.proj.weight, std=0.02 / math.sqrt(2 * n_layer))
        self.record = False

    def heads(self, x: torch.Tensor, state=None, mode: str = "chunked"):
        """Head outputs before the output projection. Shapes: (B, T, C) -> ((B, T, C), state)."""
        C, nh, W = self.d_model, self.n_head, self.window
        pos = 0 if state is None else state["pos"]
        q, k, v = self.qkv(x).split(C, dim=-1)
        q, k, v = _heads(q, nh), _heads(k, nh), _heads(v, nh)                   # (B, nh, T, hs)
        if self.rotary:
            q, k = rope(q, pos), rope(k, pos)
        if state is not None and state["k"].shape[2]:
            k = torch.cat([state["k"], k], 2)                                    # (B, nh, P + T, hs)
            v = torch.cat([state["v"], v], 2)
        T, n_keys = q.shape[2], k.shape[2]
        qpos = torch.arange(n_keys - T, n_keys, device=x.device)[:, None]
        kpos = torch.arange(n_keys, device=x.device)[None, :]
        kept = (kpos <= qpos) & (qpos - kpos < W)                                # (T, P + T)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=kept)              # (B, nh, T, hs)
        keep = min(W - 1, n_keys)
        new_state = {"k": k[:, :, n_keys - keep:], "v": v[:, :, n_keys - keep:], "pos": pos + T}
        B = x.shape[0]
        attended = float(kept.sum())
        self._report({"attended_per_query": attended / T, "window": W, "B": B, "T": T},
                     {"mac": float(B * nh * attended * 2 * self.head_size), "ac": 0.0})
        return _merge(y), new_state

    def forward(self, x: torch.Tensor, state=None, mode: str = "chunked"):
        y, state = self.heads(x, state, mode)
        return (self.proj(y) if self.proj is not None else y), state

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_head={self.n_head}, window={self.window}, rotary={self.rotary}"


class ParallelHybridAttention(nn.Module):
    """GLA and sliding-window attention side by side on the same input (SpikingBrain-76B's
    parallel hybrid); their head outputs are summed before one output projection.

    Shapes: x (B, T, C), state {"gla", "swa"} or None -> (y (B, T, C), state).
    """

    def __init__(self, d_model: int, n_head: int, window: int, *, chunk: int = 16, gate_rank: int = 16,
                 coding: str = "adaptive", spike_k: float = 3.0, bias: bool = False, n_layer: int = 4,
                 rotary: bool = True):
        super().__init__()
        self.gla = GatedLinearAttention(d_model, n_head, chunk=chunk, gate_rank=gate_rank, coding=coding,
                                        spike_k=spike_k, bias=bias, out_proj=False)
        self.swa = SlidingWindowAttention(d_model, n_head, window, coding=coding, spike_k=spike_k, bias=bias,
                                          out_proj=False, rotary=rotary)
        self.proj = SpikeCodedLinear(d_model, d_model, bias=bias, coding=coding, k=spike_k)
        nn.init.normal_(self.proj.weight, std=0.02 / math.sqrt(2 * n_layer))

    def forward(self, x: torch.Tensor, state=None, mode: str = "chunked"):
        state = state or {}
        # through forward (not .heads) so the accounting's hooks see both cores run
        a, gla_state = self.gla(x, state.get("gla"), mode)
        b, swa_state = self.swa(x, state.get("swa"), mode)
        return self.proj(a + b), {"gla": gla_state, "swa": swa_state}
