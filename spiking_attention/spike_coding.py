"""Adaptive-threshold spike coding of activations (SpikingBrain, arXiv 2509.05276), ideas only.

Training: each token's activation vector x (N channels) gets a threshold ``V_th = mean|x| / k``
and an integer spike count ``s = round(x / V_th)`` with a straight-through gradient
(:func:`spiking_attention.neurons.adaptive_spike_count`); a linear layer then accumulates its
weight columns ``|s|`` times (one synaptic operation per spike and output) and multiplies the
sum by ``V_th`` once per token and output: :class:`SpikeCodedLinear`.

Inference: a count is expanded into a train of spikes over time steps (:func:`expand_counts`):

============  ==========================================  =====================================
mode          planes (bool, one bit per channel per step)  steps S
============  ==========================================  =====================================
``binary``    ``pos`` (S) and ``neg`` (S): two {0,1}       max |s|
              populations, s = sum pos - sum neg
``ternary``   ``active`` (S) and ``sign`` (1): one neuron   max |s|
              firing {-1, 0, +1}, s = sign * sum active
``bitwise``   ``bits`` (S) and ``sign`` (1): step t fires   bit length of max |s|
              bit t of |s| (weight 2^t)
============  ==========================================  =====================================

:func:`pack_trains` stores every plane one bit per spike with :func:`hdc.pack_bits` (bit i of a
channel axis in word i // 64); :func:`unpack_trains` reverses it and :func:`trains_memory` counts
the bytes, beside float32 and int8 storage of the same activations.

Shapes:
    counts (..., N) integers -> planes {name: (S, ..., N) bool} -> packed {name: (S, ..., n_words) uint64}.

Example::

    >>> lin = SpikeCodedLinear(128, 384)
    >>> y = lin(torch.randn(2, 16, 128))                    # (2, 16, 384)
    >>> lin.layer_stats()["spike_sparsity"]                 # fraction of zero counts
    >>> tr = expand_counts(torch.tensor([[3, -1, 0]]), "bitwise")
    >>> trains_to_counts(tr)                                # tensor([[ 3, -1,  0]])
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from hdc.packing import n_words_for, pack_bits, unpack_bits

from .neurons import adaptive_spike_count
from .stats import StatsMixin

__all__ = ["MODES", "CODINGS", "HIST_MAX", "spike_counts", "expand_counts", "trains_to_counts", "pack_trains",
           "unpack_trains", "trains_memory", "count_stats", "SpikeCodedLinear"]

MODES = ("binary", "ternary", "bitwise")
CODINGS = ("adaptive", "none")
#: the count histogram covers -HIST_MAX .. HIST_MAX; larger magnitudes land in the end bins
HIST_MAX = 8


def spike_counts(x: torch.Tensor, k: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer spike counts of ``x`` per token (straight-through) and the thresholds.

    Shapes: x (..., N) -> counts (..., N) float holding integers, v_th (..., 1).
    """
    return adaptive_spike_count(x, k, dim=-1)


def _int_counts(counts: torch.Tensor) -> torch.Tensor:
    c = counts.detach()
    if c.is_floating_point():
        if not torch.equal(c, torch.round(c)):
            raise ValueError("counts must hold integers (spike counts), got non-integer values")
        c = c.to(torch.int64)
    return c


def expand_counts(counts: torch.Tensor, mode: str = "binary") -> dict:
    """Expand integer counts into spike trains (see the module table).

    Returns ``{"mode", "steps", "shape", "planes": {name: (S, ..., N) bool}}``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    c = _int_counts(counts)
    mag, neg = c.abs(), c < 0
    top = int(mag.max()) if mag.numel() else 0
    if mode == "bitwise":
        steps = max(1, top.bit_length())
        bits = torch.stack([(mag >> t) & 1 for t in range(steps)]).bool()    # (S, ..., N)
        planes = {"bits": bits, "sign": neg[None]}
    else:
        steps = max(1, top)
        fire = torch.stack([mag > t for t in range(steps)])                   # (S, ..., N)
        if mode == "binary":
            planes = {"pos": fire & ~neg, "neg": fire & neg}
        else:
            planes = {"active": fire, "sign": neg[None]}
    return {"mode": mode, "steps": steps, "shape": tuple(c.shape), "planes": planes}


def trains_to_counts(trains: dict) -> torch.Tensor:
    """Sum the spike trains back into counts (the inverse of :func:`expand_counts`).

    Shapes: planes (S, ..., N) -> counts (..., N) int64.
    """
    p, mode = trains["planes"], trains["mode"]
    if mode == "binary":
        return p["pos"].sum(0, dtype=torch.int64) - p["neg"].sum(0, dtype=torch.int64)
    sign = 1 - 2 * p["sign"][0].to(torch.int64)
    if mode == "ternary":
        return sign * p["active"].sum(0, dtype=torch.int64)
    if mode == "bitwise":
        weights = (2 ** torch.arange(p["bits"].shape[0], dtype=torch.int64)).view(-1, *[1] * (p["bits"].dim() - 1))
        return sign * (p["bits"].to(torch.int64) * weights).sum(0)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def pack_trains(trains: dict) -> dict:
    """Every plane packed one bit per spike along the channel axis (:func:`hdc.pack_bits`).

    Shapes: planes (S, ..., N) bool -> packed (S, ..., n_words) uint64.
    """
    packed = {name: pack_bits(plane.cpu().numpy()) for name, plane in trains["planes"].items()}
    return {"mode": trains["mode"], "steps": trains["steps"], "shape": trains["shape"], "packed": packed}


def unpack_trains(packed: dict) -> dict:
    """The inverse of :func:`pack_trains` (the same planes, bit for bit)."""
    dim = packed["shape"][-1]
    planes = {name: torch.from_numpy(unpack_bits(words, dim)) for name, words in packed["packed"].items()}
    return {"mode": packed["mode"], "steps": packed["steps"], "shape": packed["shape"], "planes": planes}


def trains_memory(counts: torch.Tensor) -> dict:
    """Bytes to store ``counts`` as packed trains in every mode, beside float32 and int8 storage.

    Returns ``{"n_values", "float32_bytes", "int8_bytes", "<mode>_bytes", "<mode>_steps",
    "<mode>_bits_per_value"}``.
    """
    c = _int_counts(counts)
    n = c.numel()
    rows = n // c.shape[-1]
    words = n_words_for(c.shape[-1])
    out = {"n_values": n, "float32_bytes": 4 * n, "int8_bytes": n}
    for mode in MODES:
        tr = expand_counts(c, mode)
        nbytes = sum(w.nbytes for w in pack_trains(tr)["packed"].values())
        n_planes = sum(p.shape[0] for p in tr["planes"].values())
        assert nbytes == n_planes * rows * words * 8   # what pack_bits stores, word-aligned
        out[f"{mode}_bytes"] = nbytes
        out[f"{mode}_steps"] = tr["steps"]
        out[f"{mode}_bits_per_value"] = 8 * nbytes / max(1, n)
    return out


def count_stats(counts: torch.Tensor) -> dict:
    """Sparsity (fraction of zero counts), spikes per value (mean |count|), the largest count and
    the histogram of counts over -HIST_MAX .. HIST_MAX (fractions; the end bins take the tails)."""
    c = counts.detach()
    flat = c.reshape(-1)
    n = max(1, flat.numel())
    hist = torch.bincount((flat.clamp(-HIST_MAX, HIST_MAX) + HIST_MAX).to(torch.int64), minlength=2 * HIST_MAX + 1)
    mag = flat.abs()
    return {"spike_sparsity": float((flat == 0).sum()) / n, "nonzero_rate": float((flat != 0).sum()) / n,
            "spikes_per_channel": float(mag.sum()) / n, "max_count": float(mag.max()) if flat.numel() else 0.0,
            "count_hist": [float(v) / n for v in hist]}


class SpikeCodedLinear(StatsMixin, nn.Module):
    """A linear layer whose input is spike-coded per token (``coding="adaptive"``), or plain
    (``coding="none"``, the float control with the same weights).

    Adaptive: ``y = (W s) * V_th + b`` with ``s = round(x / V_th)``; the spike counts are integers,
    so ``W s`` is accumulates only. ``core_ops()``: ``ac`` = total |s| x out_features (one
    synaptic operation per spike and output), ``mac`` = one multiply by V_th per token and
    output; plain: ``mac`` = rows x in x out. ``recorded()["counts"]`` keeps the counts while
    ``record`` is True (for :func:`trains_memory`).

    Shapes: x (..., in_features) -> (..., out_features).
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool = False, coding: str = "adaptive",
                 k: float = 3.0):
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if coding not in CODINGS:
            raise ValueError(f"coding must be one of {CODINGS}, got {coding!r}")
        if not (isinstance(k, (int, float)) and not isinstance(k, bool) and k > 0):
            raise ValueError(f"spike k (threshold = mean|x| / k) must be a number > 0, got {k!r}")
        self.in_features, self.out_features, self.coding, self.k = in_features, out_features, coding, float(k)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.normal_(self.weight, std=0.02)
        self.record = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if self.coding == "none":
            y = F.linear(x, self.weight, self.bias)
            self._report({"rows": rows}, {"mac": float(rows * self.in_features * self.out_features), "ac": 0.0})
            return y
        s, v_th = spike_counts(x, self.k)                              # (..., in), (..., 1)
        y = F.linear(s, self.weight) * v_th
        if self.bias is not None:
            y = y + self.bias
        st = count_stats(s)
        st["rows"] = rows
        total_spikes = st["spikes_per_channel"] * rows * self.in_features
        self._report(st, {"mac": float(rows * self.out_features), "ac": float(total_spikes * self.out_features)},
                     counts=s)
        return y

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, coding={self.coding}, "
                f"k={self.k}, bias={self.bias is not None}")

