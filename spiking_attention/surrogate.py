"""Surrogate gradients: a Heaviside step forward, a smooth primitive's derivative backward.

Three layers, each built on the one below (SpikingJelly's layout):

1. pure functions: ``<name>_primitive(x, alpha)`` (the smooth stand-in for the step) and
   ``<name>_grad(x, alpha)`` (its derivative, written by hand);
2. ``torch.autograd.Function`` subclasses (``ATanFunction`` ...): forward = ``heaviside(x)``,
   backward = ``grad_output * <name>_grad(x, alpha)``;
3. small ``nn.Module`` wrappers (``ATan(alpha)`` ...) holding ``alpha``.

The hand-written derivatives are tested against ``torch.autograd`` of the primitive
(tests/test_surrogate.py), so a typo in a backward cannot hide.

========================  ===========================================  ======================================
name (default alpha)      primitive g(x)                               g'(x)
========================  ===========================================  ======================================
``atan`` (2)              atan(pi/2 * alpha * x) / pi + 1/2            alpha / 2 / (1 + (pi/2 * alpha * x)^2)
``sigmoid`` (4)           sigmoid(alpha * x)                           alpha * s * (1 - s)
``fast_sigmoid`` (10)     1/2 + alpha*x / (2 * (1 + alpha*|x|))        alpha / (2 * (1 + alpha*|x|)^2)
``straight_through`` (1)  clamp(alpha*x, -1/2, 1/2) + 1/2              alpha inside |alpha*x| <= 1/2, else 0
========================  ===========================================  ======================================

Every primitive rises from 0 to 1, so each derivative integrates to 1 (the step's jump).
ATan alpha=2 is SpikeGPT's choice; sigmoid alpha=4 is Spikformer's.

Example::

    >>> import torch
    >>> x = torch.tensor([-0.3, 0.0, 0.2], requires_grad=True)
    >>> s = spike(x, "atan")          # tensor([0., 1., 1.])
    >>> s.sum().backward()            # x.grad = atan_grad(x, 2.0)
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

__all__ = [
    "heaviside",
    "atan_primitive", "atan_grad",
    "sigmoid_primitive", "sigmoid_grad",
    "fast_sigmoid_primitive", "fast_sigmoid_grad",
    "straight_through_primitive", "straight_through_grad",
    "ATanFunction", "SigmoidFunction", "FastSigmoidFunction", "StraightThroughFunction",
    "SurrogateModule", "ATan", "Sigmoid", "FastSigmoid", "StraightThrough",
    "SURROGATES", "DEFAULT_ALPHA", "get_surrogate", "spike",
]


def heaviside(x: torch.Tensor) -> torch.Tensor:
    """The spike: 1 where ``x >= 0`` else 0, in ``x``'s dtype (no gradient of its own).

    ``x >= 0`` (not ``> 0``) so a membrane exactly at threshold fires, as in SpikingJelly.
    """
    return (x >= 0).to(x.dtype)


# ---------------------------------------------------------------- layer 1: pure functions
def atan_primitive(x: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    return torch.atan((math.pi / 2 * alpha) * x) / math.pi + 0.5


def atan_grad(x: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    return (alpha / 2) / (1 + ((math.pi / 2 * alpha) * x) ** 2)


def sigmoid_primitive(x: torch.Tensor, alpha: float = 4.0) -> torch.Tensor:
    return torch.sigmoid(alpha * x)


def sigmoid_grad(x: torch.Tensor, alpha: float = 4.0) -> torch.Tensor:
    s = torch.sigmoid(alpha * x)
    return alpha * s * (1 - s)


def fast_sigmoid_primitive(x: torch.Tensor, alpha: float = 10.0) -> torch.Tensor:
    return 0.5 + (alpha * x) / (2 * (1 + alpha * x.abs()))


def fast_sigmoid_grad(x: torch.Tensor, alpha: float = 10.0) -> torch.Tensor:
    return alpha / (2 * (1 + alpha * x.abs()) ** 2)


def straight_through_primitive(x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    return torch.clamp(alpha * x, -0.5, 0.5) + 0.5


def straight_through_grad(x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    # The clipped straight-through estimator: pass the gradient (times alpha) only near the
    # threshold, as binarised networks do; the boundary counts as inside, like torch.clamp.
    return alpha * ((alpha * x).abs() <= 0.5).to(x.dtype)


# ---------------------------------------------------------------- layer 2: autograd Functions
class _HeavisideBase(torch.autograd.Function):
    """Forward: Heaviside step. Backward: ``grad * _grad(x, alpha)`` (subclasses set ``_grad``)."""

    _grad: Callable = None  # type: ignore[assignment]

    @staticmethod
    def forward(ctx, x, alpha):  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.alpha = float(alpha)
        return heaviside(x)


class ATanFunction(_HeavisideBase):
    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad_output * atan_grad(x, ctx.alpha), None


class SigmoidFunction(_HeavisideBase):
    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad_output * sigmoid_grad(x, ctx.alpha), None


class FastSigmoidFunction(_HeavisideBase):
    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad_output * fast_sigmoid_grad(x, ctx.alpha), None


class StraightThroughFunction(_HeavisideBase):
    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad_output * straight_through_grad(x, ctx.alpha), None


# ---------------------------------------------------------------- layer 3: modules
class SurrogateModule(nn.Module):
    """Heaviside forward with a surrogate backward; ``alpha`` sets the surrogate's sharpness.

    Shapes: any -> same shape, values in {0, 1}.
    Example: ``ATan()(torch.randn(3))`` -> a {0,1} tensor whose backward uses ``atan_grad``.
    """

    name: str = ""
    function: type[torch.autograd.Function] = None  # type: ignore[assignment]
    primitive_fn: Callable = None  # type: ignore[assignment]
    grad_fn: Callable = None  # type: ignore[assignment]
    default_alpha: float = 1.0

    def __init__(self, alpha: float | None = None):
        super().__init__()
        alpha = self.default_alpha if alpha is None else float(alpha)
        if not alpha > 0:
            raise ValueError(f"surrogate alpha must be > 0, got {alpha}")
        self.alpha = alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function.apply(x, self.alpha)

    def primitive(self, x: torch.Tensor) -> torch.Tensor:
        return type(self).primitive_fn(x, self.alpha)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return type(self).grad_fn(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class ATan(SurrogateModule):
    name, function, default_alpha = "atan", ATanFunction, 2.0
    primitive_fn, grad_fn = staticmethod(atan_primitive), staticmethod(atan_grad)


class Sigmoid(SurrogateModule):
    name, function, default_alpha = "sigmoid", SigmoidFunction, 4.0
    primitive_fn, grad_fn = staticmethod(sigmoid_primitive), staticmethod(sigmoid_grad)


class FastSigmoid(SurrogateModule):
    name, function, default_alpha = "fast_sigmoid", FastSigmoidFunction, 10.0
    primitive_fn, grad_fn = staticmethod(fast_sigmoid_primitive), staticmethod(fast_sigmoid_grad)


class StraightThrough(SurrogateModule):
    name, function, default_alpha = "straight_through", StraightThroughFunction, 1.0
    primitive_fn, grad_fn = staticmethod(straight_through_primitive), staticmethod(straight_through_grad)


#: The registry: name -> module class. Add a surrogate here and nowhere else.
SURROGATES: dict[str, type[SurrogateModule]] = {
    cls.name: cls for cls in (ATan, Sigmoid, FastSigmoid, StraightThrough)
}
DEFAULT_ALPHA: dict[str, float] = {name: cls.default_alpha for name, cls in SURROGATES.items()}


def get_surrogate(name: str | SurrogateModule, alpha: float | None = None) -> SurrogateModule:
    """A surrogate module by registry name (or pass a module through unchanged)."""
    if isinstance(name, SurrogateModule):
        return name
    if name not in SURROGATES:
        raise ValueError(f"unknown surrogate {name!r}; choose one of {sorted(SURROGATES)}")
    return SURROGATES[name](alpha)


def spike(x: torch.Tensor, surrogate: str | SurrogateModule = "atan", alpha: float | None = None) -> torch.Tensor:
    """Heaviside spike of ``x`` (fires at ``x >= 0``) with the named surrogate gradient.

    Shapes: any -> same shape, values in {0, 1}.
    Example: ``spike(v - v_th, "sigmoid")``.
    """
    if isinstance(surrogate, SurrogateModule):
        return surrogate(x)
    if surrogate not in SURROGATES:
        raise ValueError(f"unknown surrogate {surrogate!r}; choose one of {sorted(SURROGATES)}")
    cls = SURROGATES[surrogate]
    a = cls.default_alpha if alpha is None else float(alpha)
    if not a > 0:
        raise ValueError(f"surrogate alpha must be > 0, got {a}")
    return cls.function.apply(x, a)
