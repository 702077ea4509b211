"""The stats protocol: how a layer reports what its last forward pass did.

Accounting, plots, the training harness and the model comparison all read layers through
this one small interface, never through the layer's type or a private dict:

``layer_stats() -> dict``
    detached numbers from the last forward pass: firing rates, silent fractions, attention
    density (against the causal-allowed entries), attended keys per query, tie fraction at the
    k-WTA cut, ... (floats, ints or short lists of floats). Empty before the first forward.
``core_ops() -> dict``
    the operation counts of the layer's own core in that pass (its ``nn.Linear`` calls are
    counted separately by :func:`spiking_attention.accounting.account_model`): at least
    ``"mac"`` (multiply-accumulates) and ``"ac"`` (accumulates = synaptic operations), plus any
    detail the layer wants to show (``"score_ac"``, ``"value_mac"``, ...).
``recorded() -> dict[str, Tensor]``
    tensors kept for plots while ``record`` is True (``"q_spikes"`` (B, nh, T, bits),
    ``"attn"`` (B, nh, T, T), ...); empty otherwise.
``record: bool``
    whether the next forward keeps those tensors.

A new layer type (a linear-attention mixer, an LIF block) joins accounting and plots by
implementing these four members; :func:`reporting_layers` finds it.

Example::

    >>> for name, layer in reporting_layers(model):
    ...     print(name, layer.layer_stats().get("attn_density"), layer.core_ops()["mac"])
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["ReportsStats", "StatsMixin", "reporting_layers", "numeric_items"]


@runtime_checkable
class ReportsStats(Protocol):
    record: bool

    def layer_stats(self) -> dict: ...

    def core_ops(self) -> dict: ...

    def recorded(self) -> dict: ...


class StatsMixin:
    """Storage for the protocol: a layer calls ``self._report(stats, ops, **tensors)`` in forward."""

    record: bool = False

    def _report(self, stats: dict, ops: dict, **tensors: torch.Tensor) -> None:
        self._last_stats, self._last_ops = stats, ops
        self._recorded = {k: v.detach() for k, v in tensors.items()} if self.record else {}

    def layer_stats(self) -> dict:
        return dict(getattr(self, "_last_stats", {}))

    def core_ops(self) -> dict:
        return dict(getattr(self, "_last_ops", {"mac": 0.0, "ac": 0.0}))

    def recorded(self) -> dict:
        return dict(getattr(self, "_recorded", {}))


def reporting_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every module implementing :class:`ReportsStats`, in model order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, ReportsStats)]


def numeric_items(d: dict, prefix: str = ""):
    """Flatten a stats dict to (name, float) pairs: numbers and one-element tensors only."""
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from numeric_items(v, name + ".")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            yield name, float(v)
        elif isinstance(v, torch.Tensor) and v.numel() == 1:
            yield name, float(v)
