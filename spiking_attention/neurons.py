"""Spiking neurons as pure step functions ``(x, state) -> (spikes, state)``, and modules over them.

Functional core:

* :func:`lif_step` - leaky integrate-and-fire, one time step, hard or soft reset;
* :func:`if_step` - integrate-and-fire (no leak);
* :func:`lif_multi_step` - a loop of :func:`lif_step` over a leading time axis;
* :func:`adaptive_spike_count` - SpikingBrain's adaptive-threshold integer spike count,
  ``V_th = mean|x| / k``, ``s = round(x / V_th)``, straight-through estimator;
* :func:`multilevel_spike` - ``round(clamp(x, 0, D)) / D``, straight-through inside [0, D].

Modules (:class:`LIF`, :class:`IFNeuron`) declare their state with :meth:`MemoryModule.register_memory`
and clear it with :meth:`MemoryModule.reset`; nothing is hidden or global. ``step_mode="s"``
takes one step per call (state carried between calls); ``step_mode="m"`` takes ``x`` of shape
(T, ...) and loops single steps over the first axis.

Example::

    >>> lif = LIF(tau=2.0, v_th=1.0, step_mode="m")
    >>> s = lif(torch.rand(8, 4, 16) * 2)    # (T, B, N) spikes in {0, 1}
    >>> lif.reset()                          # membrane back to v_reset
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn import functional as F

from .surrogate import SurrogateModule, get_surrogate, spike as _spike

__all__ = [
    "lif_step", "if_step", "lif_multi_step", "adaptive_spike_count", "multilevel_spike",
    "MemoryModule", "LIF", "IFNeuron",
    "lif_syn_step", "lif_syn_multi_step",
]

_RESETS = ("hard", "soft")


def _check_reset(reset: str) -> None:
    if reset not in _RESETS:
        raise ValueError(f"reset must be one of {_RESETS}, got {reset!r}")


def _fire_and_reset(h, *, v_th, v_reset, reset, detach_reset, surrogate):
    """Spike where h >= v_th, then reset the membrane (shared by LIF and IF)."""
    s = _spike(h - v_th, surrogate)
    # Detaching the reset path (SpikingJelly's detach_reset) keeps the surrogate gradient only
    # on the spike itself, which is cheaper and often trains as well.
    s_r = s.detach() if detach_reset else s
    if reset == "hard":
        v_next = h * (1 - s_r) + v_reset * s_r
    else:  # soft: subtract the threshold, keep the residue
        v_next = h - s_r * v_th
    return s, v_next


def lif_step(x: torch.Tensor, v: torch.Tensor | float, *, tau=2.0, v_th=1.0, v_reset: float = 0.0,
             reset: str = "hard", detach_reset: bool = False,
             surrogate: str | SurrogateModule = "atan") -> tuple[torch.Tensor, torch.Tensor]:
    """One LIF step: charge ``h = v + (x - (v - v_reset)) / tau``, fire ``H(h - v_th)``, reset.

    ``tau`` and ``v_th`` may be floats or tensors broadcastable to ``x`` (learnable).
    Hard reset sets fired membranes to ``v_reset``; soft reset subtracts ``v_th``.

    Shapes: x (...), v scalar or (...) -> spike (...) in {0, 1}, v_next (...).
    Example: ``s, v = lif_step(x, v, tau=2.0, reset="soft")``.
    """
    _check_reset(reset)
    h = v + (x - (v - v_reset)) / tau
    return _fire_and_reset(h, v_th=v_th, v_reset=v_reset, reset=reset,
                           detach_reset=detach_reset, surrogate=surrogate)


def if_step(x: torch.Tensor, v: torch.Tensor | float, *, v_th=1.0, v_reset: float = 0.0,
            reset: str = "soft", detach_reset: bool = False,
            surrogate: str | SurrogateModule = "atan") -> tuple[torch.Tensor, torch.Tensor]:
    """One integrate-and-fire step (no leak): ``h = v + x``, fire, reset.

    Shapes: x (...), v scalar or (...) -> spike (...), v_next (...).
    """
    _check_reset(reset)
    h = v + x
    return _fire_and_reset(h, v_th=v_th, v_reset=v_reset, reset=reset,
                           detach_reset=detach_reset, surrogate=surrogate)


def lif_multi_step(x_seq: torch.Tensor, v0: torch.Tensor | float = 0.0, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    """Run :func:`lif_step` over the first axis of ``x_seq``; return all spikes and the last membrane.

    Shapes: x_seq (T, ...) -> spikes (T, ...), v_T (...).
    Example: ``s, v = lif_multi_step(x, 0.0, tau=2.0)``.
    """
    if x_seq.dim() < 1 or x_seq.shape[0] < 1:
        raise ValueError(f"lif_multi_step needs a non-empty time axis first, got shape {tuple(x_seq.shape)}")
    v = v0
    out = []
    for t in range(x_seq.shape[0]):
        s, v = lif_step(x_seq[t], v, **kw)
        out.append(s)
    return torch.stack(out), v


def adaptive_spike_count(x: torch.Tensor, k: float = 3.0, *, dim: int = -1,
                         eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """SpikingBrain's adaptive-threshold spike count (an IF neuron with soft reset, no leak).

    ``V_th = mean(|x|) / k`` over ``dim`` (per token), ``s = round(x / V_th)``; the forward is the
    integer count, the backward is straight-through (``ds/dx = 1 / V_th``), so ``s * V_th ~ x``.
    The signed count can be expanded into binary, ternary or bitwise spikes at inference.

    Shapes: x (..., N) -> (counts (..., N) float holding integers, v_th (..., 1)).
    Example: ``s, vth = adaptive_spike_count(h, 3.0); h_hat = s * vth``.
    """
    if not k > 0:
        raise ValueError(f"adaptive_spike_count needs k > 0, got {k}")
    v_th = x.abs().mean(dim=dim, keepdim=True).clamp_min(eps) / k
    u = x / v_th
    return u + (torch.round(u) - u).detach(), v_th


def multilevel_spike(x: torch.Tensor, levels: int = 4) -> torch.Tensor:
    """Multi-level spike ``round(clamp(x, 0, D)) / D`` with D = ``levels``.

    Straight-through inside [0, D] (the gradient of the clamp), so the rounding is invisible
    to backprop but values outside the range get no gradient.

    Shapes: any -> same shape, values in {0, 1/D, ..., 1}.
    """
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"multilevel_spike needs an int levels >= 1, got {levels!r}")
    y = torch.clamp(x, 0, levels)
    return (y + (torch.round(y) - y).detach()) / levels


# ---------------------------------------------------------------- modules
class MemoryModule(nn.Module):
    """A module with explicitly declared state ("memories") and a ``reset()`` that restores them.

    ``register_memory(name, value)`` declares state variable ``name`` with its reset value;
    ``reset()`` sets every declared memory back to a copy of it. State is per instance.
    """

    def __init__(self):
        super().__init__()
        self._memories: dict[str, object] = {}
        self._memory_resets: dict[str, object] = {}

    def register_memory(self, name: str, value) -> None:
        if name in self._memories or hasattr(self, name):
            raise ValueError(f"memory {name!r} clashes with an existing attribute")
        self._memory_resets[name] = copy.deepcopy(value)
        self._memories[name] = copy.deepcopy(value)

    def __getattr__(self, name):
        mem = self.__dict__.get("_memories")
        if mem is not None and name in mem:
            return mem[name]
        return super().__getattr__(name)

    def __setattr__(self, name, value):
        mem = self.__dict__.get("_memories")
        if mem is not None and name in mem:
            mem[name] = value
        else:
            super().__setattr__(name, value)

    def reset(self) -> None:
        """Restore every declared memory to its registered reset value."""
        for name, value in self._memory_resets.items():
            self._memories[name] = copy.deepcopy(value)

    def memories(self) -> dict[str, object]:
        return dict(self._memories)

    def detach(self) -> None:
        """Cut the graph through the stored state (truncated BPTT)."""
        for name, value in self._memories.items():
            if isinstance(value, torch.Tensor):
                self._memories[name] = value.detach()


def _check_mode(step_mode: str) -> None:
    if step_mode not in ("s", "m"):
        raise ValueError(f"step_mode must be 's' (single step) or 'm' (multi-step), got {step_mode!r}")


class LIF(MemoryModule):
    """Leaky integrate-and-fire neuron over :func:`lif_step`, state ``v`` declared and resettable.

    ``learn_tau``: tau is ``1 + softplus(w)`` so it stays > 1 (a leak, never an explosion).
    ``learn_threshold``: ``v_th`` becomes a parameter (scalar, or per channel if ``n_channels``).

    Shapes: step_mode "s": x (...) -> (...); step_mode "m": x (T, ...) -> (T, ...).
    Example: ``LIF(tau=2.0, learn_tau=True, reset="soft", step_mode="m")(x_seq)``.
    """

    def __init__(self, tau: float = 2.0, v_th: float = 1.0, v_reset: float = 0.0, *,
                 reset: str = "hard", detach_reset: bool = False, surrogate: str = "atan",
                 alpha: float | None = None, learn_tau: bool = False, learn_threshold: bool = False,
                 n_channels: int | None = None, step_mode: str = "s"):
        super().__init__()
        _check_reset(reset)
        _check_mode(step_mode)
        if not tau > 1:
            raise ValueError(f"LIF needs tau > 1 (tau = 1 forgets everything, < 1 overshoots), got {tau}")
        if n_channels is not None and (not isinstance(n_channels, int) or n_channels < 1):
            raise ValueError(f"n_channels must be a positive int or None, got {n_channels!r}")
        self.reset_mode, self.detach_reset, self.step_mode = reset, detach_reset, step_mode
        self.v_reset = float(v_reset)
        self.surrogate = get_surrogate(surrogate, alpha)
        shape = () if n_channels is None else (n_channels,)
        if learn_tau:
            # inverse of softplus so that 1 + softplus(w) == tau at init
            w0 = math.log(math.expm1(tau - 1))
            self.tau_param = nn.Parameter(torch.full(shape, w0))
        else:
            self.register_buffer("tau_param", torch.full(shape, float(tau)), persistent=False)
        self.learn_tau = learn_tau
        if learn_threshold:
            self.v_th = nn.Parameter(torch.full(shape, float(v_th)))
        else:
            self.register_buffer("v_th", torch.full(shape, float(v_th)), persistent=False)
        self.register_memory("v", self.v_reset)

    @property
    def tau(self) -> torch.Tensor:
        return 1 + F.softplus(self.tau_param) if self.learn_tau else self.tau_param

    def single_step(self, x: torch.Tensor) -> torch.Tensor:
        s, self.v = lif_step(x, self.v, tau=self.tau, v_th=self.v_th, v_reset=self.v_reset,
                             reset=self.reset_mode, detach_reset=self.detach_reset,
                             surrogate=self.surrogate)
        return s

    def multi_step(self, x_seq: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.single_step(x_seq[t]) for t in range(x_seq.shape[0])])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.single_step(x) if self.step_mode == "s" else self.multi_step(x)

    def extra_repr(self) -> str:
        return (f"reset={self.reset_mode}, detach_reset={self.detach_reset}, learn_tau={self.learn_tau}, "
                f"step_mode={self.step_mode}")


class IFNeuron(MemoryModule):
    """Integrate-and-fire neuron (no leak) over :func:`if_step`; soft reset by default.

    Shapes: as :class:`LIF`.
    """

    def __init__(self, v_th: float = 1.0, v_reset: float = 0.0, *, reset: str = "soft",
                 detach_reset: bool = False, surrogate: str = "atan", alpha: float | None = None,
                 step_mode: str = "s"):
        super().__init__()
        _check_reset(reset)
        _check_mode(step_mode)
        self.v_th, self.v_reset = float(v_th), float(v_reset)
        self.reset_mode, self.detach_reset, self.step_mode = reset, detach_reset, step_mode
        self.surrogate = get_surrogate(surrogate, alpha)
        self.register_memory("v", self.v_reset)

    def single_step(self, x: torch.Tensor) -> torch.Tensor:
        s, self.v = if_step(x, self.v, v_th=self.v_th, v_reset=self.v_reset, reset=self.reset_mode,
                            detach_reset=self.detach_reset, surrogate=self.surrogate)
        return s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "s":
            return self.single_step(x)
        return torch.stack([self.single_step(x[t]) for t in range(x.shape[0])])


# ---------------------------------------------------------------- synaptic LIF (Nord)
def lif_syn_step(x: torch.Tensor, state: tuple | None = None, *, b_syn=0.5, b_mem=0.85, v_th=1.0,
                 refractory: int = 0, surrogate: str | SurrogateModule = "atan",
                 detach_reset: bool = False) -> tuple[torch.Tensor, tuple]:
    """One step of an LIF neuron with a synaptic current and a membrane (Nord's neuron).

    ``i = b_syn * i + x``; ``v = b_mem * v + (1 - b_mem) * i``; a spike ``H(v - v_th)`` where the
    neuron is not refractory; soft reset ``v -= s * v_th``; after a spike the neuron stays silent
    for ``refractory`` steps (a per-neuron countdown ``r``; its membrane keeps integrating).
    ``b_syn``, ``b_mem`` and ``v_th`` may be floats or tensors broadcastable to ``x`` (per-channel
    learnable thresholds). ``state`` is ``(i, v, r)`` or None (all zero).

    Shapes: x (...), state 3 x (...) -> spike (...) in {0, 1}, state 3 x (...).
    Example: ``s, st = lif_syn_step(x, None, v_th=th, refractory=2)``.
    """
    if isinstance(refractory, bool) or not isinstance(refractory, int) or refractory < 0:
        raise ValueError(f"refractory must be an integer >= 0 (steps), got {refractory!r}")
    if state is None:
        z = torch.zeros_like(x)
        state = (z, z, z)
    i, v, r = state
    i = b_syn * i + x
    v = b_mem * v + (1 - b_mem) * i
    s = _spike(v - v_th, surrogate) * (r <= 0).to(x.dtype)
    s_r = s.detach() if detach_reset else s
    v = v - s_r * v_th
    r = torch.where(s.detach() > 0, torch.full_like(r, float(refractory)), (r - 1).clamp_min(0))
    return s, (i, v, r)


def lif_syn_multi_step(x_seq: torch.Tensor, state: tuple | None = None, **kw) -> tuple[torch.Tensor, tuple]:
    """:func:`lif_syn_step` looped over the first axis. Shapes: x_seq (T, ...) -> spikes (T, ...), state."""
    if x_seq.dim() < 1 or x_seq.shape[0] < 1:
        raise ValueError(f"lif_syn_multi_step needs a non-empty time axis first, got shape {tuple(x_seq.shape)}")
    out = []
    for t in range(x_seq.shape[0]):
        s, state = lif_syn_step(x_seq[t], state, **kw)
        out.append(s)
    return torch.stack(out), state
