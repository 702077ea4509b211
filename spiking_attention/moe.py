"""Feed-forward layers and a mixture of experts upcycled from a trained dense one.

* :class:`SwiGLU` - ``W_down (silu(W_gate x) * W_up x)`` (Shazeer 2020, arXiv 2002.05202);
  :class:`GeluMLP` - the trunk's ``W_down gelu(W_up x)``. Their projections are
  :class:`~spiking_attention.spike_coding.SpikeCodedLinear` (spike-coded inputs, or plain).
* :class:`MoEFFN` - a shared expert plus ``n_experts`` routed experts and a top-1 router with
  Switch Transformer's load-balancing loss (Fedus et al. 2021, arXiv 2101.03961),
  ``aux = n * sum_i f_i P_i`` (f_i: fraction of tokens sent to expert i, P_i: mean router
  probability of i; 1 when balanced). :meth:`MoEFFN.upcycle` builds it from a trained dense FFN
  (sparse upcycling, Komatsuzaki et al. 2022, arXiv 2212.05055; SpikingBrain-76B, arXiv
  2509.05276): the shared expert and every routed expert start as copies of it, the routed ones
  with optional noise.

The output is ``y = (shared(x) + E_i(x) * p_i / sg(p_i)) / 2`` with i the router's top-1 choice
and sg the stop-gradient: in the forward pass ``p_i / sg(p_i)`` is exactly 1, so with identical
experts the layer computes the dense FFN it came from (the halves of a float add back exactly);
in the backward pass the router receives ``E_i(x) d log p_i / 2``, the gradient of weighting the
chosen expert by its probability. Weighting by ``p_i`` itself (Switch) would scale the upcycled
model's FFN output by p_i ~ 1/n at the start and undo the training it came from.

Stats (stats protocol): ``expert_load`` (f_i), ``aux_loss``, ``router_entropy``,
``active_param_frac`` (parameters one token uses / all parameters of the layer). The
``aux_loss`` tensor of the last forward (with its graph) is :attr:`MoEFFN.aux_loss`.

Shapes:
    x (B, T, C) -> (B, T, C).
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from .spike_coding import CODINGS, SpikeCodedLinear
from .stats import StatsMixin

__all__ = ["SwiGLU", "GeluMLP", "MoEFFN", "FFNS"]


def _check(d_model, d_hidden, coding):
    for name, v in (("d_model", d_model), ("d_hidden", d_hidden)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if coding not in CODINGS:
        raise ValueError(f"coding must be one of {CODINGS}, got {coding!r}")


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))``; gate and up fused in one (C -> 2H) projection.

    Shapes: (..., C) -> (..., C).
    """

    def __init__(self, d_model: int, d_hidden: int, *, coding: str = "adaptive", spike_k: float = 3.0,
                 bias: bool = False, out_std: float = 0.02):
        super().__init__()
        _check(d_model, d_hidden, coding)
        self.d_hidden = d_hidden
        self.gate_up = SpikeCodedLinear(d_model, 2 * d_hidden, bias=bias, coding=coding, k=spike_k)
        self.down = SpikeCodedLinear(d_hidden, d_model, bias=bias, coding=coding, k=spike_k)
        nn.init.normal_(self.down.weight, std=out_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, u = self.gate_up(x).split(self.d_hidden, dim=-1)
        return self.down(F.silu(g) * u)


class GeluMLP(nn.Module):
    """The trunk's MLP, ``down(gelu(up(x)))``. Shapes: (..., C) -> (..., C)."""

    def __init__(self, d_model: int, d_hidden: int, *, coding: str = "adaptive", spike_k: float = 3.0,
                 bias: bool = False, out_std: float = 0.02):
        super().__init__()
        _check(d_model, d_hidden, coding)
        self.up = SpikeCodedLinear(d_model, d_hidden, bias=bias, coding=coding, k=spike_k)
        self.down = SpikeCodedLinear(d_hidden, d_model, bias=bias, coding=coding, k=spike_k)
        nn.init.normal_(self.down.weight, std=out_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


FFNS = {"swiglu": SwiGLU, "mlp": GeluMLP}


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


class MoEFFN(StatsMixin, nn.Module):
    """Shared expert + top-1 routed experts (see the module docstring).

    ``make_expert()`` builds one expert (a fresh FFN); build from a trained FFN with :meth:`upcycle`.
    Shapes: x (B, T, C) -> (B, T, C).
    """

    def __init__(self, make_expert, d_model: int, n_experts: int):
        super().__init__()
        if isinstance(n_experts, bool) or not isinstance(n_experts, int) or n_experts < 1:
            raise ValueError(f"n_experts must be a positive int, got {n_experts!r}")
        self.n_experts, self.d_model = n_experts, d_model
        self.shared = make_expert()
        self.experts = nn.ModuleList([make_expert() for _ in range(n_experts)])
        self.router = nn.Linear(d_model, n_experts, bias=False)
        nn.init.normal_(self.router.weight, std=0.02)
        self.aux_loss = torch.zeros(())
        self.record = False

    @classmethod
    def upcycle(cls, dense: nn.Module, d_model: int, n_experts: int, *, noise: float = 0.0,
                generator: torch.Generator | None = None) -> "MoEFFN":
        """A MoE whose shared expert and ``n_experts`` routed experts are copies of ``dense``; each
        routed expert's weights get Gaussian noise of ``noise`` x that tensor's std."""
        if not noise >= 0:
            raise ValueError(f"noise must be >= 0 (a fraction of each weight's std), got {noise!r}")
        moe = cls(lambda: copy.deepcopy(dense), d_model, n_experts)
        if noise > 0:
            with torch.no_grad():
                for expert in moe.experts:
                    for p in expert.parameters():
                        scale = float(p.std()) if p.numel() > 1 else 0.0
                        p.add_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * noise * scale)
        return moe

    def active_param_frac(self) -> float:
        """Parameters one token uses (shared + one expert + router) / all parameters of the layer."""
        total = _n_params(self)
        return (total - (self.n_experts - 1) * _n_params(self.experts[0])) / total

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        flat = x.reshape(B * T, C)                                               # (N, C)
        probs = F.softmax(self.router(flat), dim=-1)                              # (N, n)
        p_top, choice = probs.max(dim=-1)                                         # (N,)
        weight = p_top / p_top.detach()                                           # == 1, carries d log p
        routed = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            rows = (choice == e).nonzero(as_tuple=True)[0]
            if rows.numel():
                routed = routed.index_copy(0, rows, expert(flat[rows]))
        y = (self.shared(x).reshape(B * T, C) + routed * weight[:, None]) * 0.5
        load = torch.bincount(choice, minlength=self.n_experts).to(x.dtype) / (B * T)   # f_i, no gradient
        self.aux_loss = self.n_experts * (load * probs.mean(0)).sum()
        ent = -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1).mean()
        self._report({"expert_load": [float(v) for v in load], "aux_loss": float(self.aux_loss.detach()),
                      "router_entropy": float(ent.detach()), "active_param_frac": self.active_param_frac()},
                     {"mac": 0.0, "ac": 0.0})
        return y.view(B, T, C)

    def extra_repr(self) -> str:
        return f"n_experts={self.n_experts}, d_model={self.d_model}"
