"""Thermometer-coded integrate-and-fire layers: the components of BrainTransformers-style conversion.

BrainTransformers (Tang et al. 2024, arXiv 2410.14687) converts a trained transformer into
integrate-and-fire layers whose spike counts are exactly quantized activations. The neuron
here: the membrane is charged once with the scaled input ``u = x / scale``; then, for
``T = 2**bits - 1`` steps, the threshold rises by one each step (``0.5, 1.5, 2.5, ...``) and
the neuron fires whenever the membrane is at or above it. Spikes come out as a unary
(thermometer) code, and the spike count is ``round_half_up(|u|)`` clamped to ``T``: the
``bits``-bit quantization of the value. A signed value drives a pair of neurons (one per
sign: spikes of +1 or -1), so its count is an integer in ``[-T, T]`` (``bits`` bits of
magnitude and a sign).

Functional core (pure, no state):

* :func:`thermometer_step` - one step of the neuron: ``(v, theta) -> (spike, theta + 1)``;
* :func:`thermometer_encode_steps` - the step loop, ``(T, ...)`` spikes; the definition;
* :func:`thermometer_count` - the closed form of the count (tested equal to the loop's spike
  sum bit for bit for b = 1..8, 10, 12 and 16);
* :func:`token_scale`, :func:`quantize` - per-token scales (absmax over the feature axis of
  each token alone, so an output never depends on a later token; BrainTransformers' published
  code uses one scale for the whole batch and sequence, which does), the integer counts,
  straight-through gradients for quantization-aware training;
* :func:`unary_planes`, :func:`weight_planes`, :func:`packed_unary_matmul` - the add-only
  product: the spike train of every step packed with :func:`hdc.pack_bits`, the weights'
  quantized magnitudes as packed bit-planes, and the integer product as a sum of
  ``popcount(spikes_t AND plane_k)`` shifted by ``k``: AND, popcount, shift and add only,
  equal to the float matmul of the quantized operands exactly;
* :func:`fit_staircase`, :func:`staircase` - an activation as a few neurons, each adding a
  fitted pulse when its input crosses its threshold (BrainTransformers' SiLU; here GELU);
* :func:`spiking_softmax` - softmax whose exponentials are thermometer-coded spike counts,
  normalised by the row's spike total.

Modules (every one reports through the stats protocol, :mod:`.stats`): :class:`ThermoLinear`,
:class:`StaircaseGELU`, :class:`ThermoCausalAttention`.

Example::

    >>> q, s = quantize(torch.randn(2, 8, 128), bits=4)    # counts in [-15, 15], s (2, 8, 1)
    >>> lin = ThermoLinear(128, 64, bits=4)
    >>> y = lin(torch.randn(2, 8, 128))                    # (2, 8, 64)
    >>> lin.layer_stats()["spikes_per_token"], lin.core_ops()["ac"]
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from hdc.functional import hamming_matrix, popcount
from hdc.packing import pack_bits

from .attention import brain_prior_mask, qkv_heads
from .stats import StatsMixin

__all__ = ["MAX_BITS", "check_bits", "n_steps", "thermometer_step", "thermometer_encode_steps",
           "thermometer_count", "token_scale", "quantize", "fake_quantize", "unary_planes", "weight_planes",
           "packed_unary_matmul", "gelu_bump", "fit_staircase", "staircase", "spiking_softmax",
           "ThermoLinear", "StaircaseGELU", "ThermoCausalAttention"]

MAX_BITS = 16
_SCALE_EPS = 1e-12   # an all-zero token gets this scale: its counts are all 0, no division by zero


def check_bits(bits) -> int:
    """``bits`` as an int in 1..16, else ValueError naming it (T = 2**bits - 1 steps)."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= int(bits) <= MAX_BITS:
        raise ValueError(f"bits must be an integer in 1..{MAX_BITS} (the neuron runs T = 2**bits - 1 "
                         f"steps), got {bits!r}")
    return int(bits)


def n_steps(bits: int) -> int:
    """T = 2**bits - 1: the steps of a ``bits``-bit thermometer neuron (and its largest count)."""
    return (1 << check_bits(bits)) - 1


# ----------------------------------------------------------------------------- the neuron

def thermometer_step(v: torch.Tensor, theta) -> tuple[torch.Tensor, torch.Tensor | float]:
    """One step of the rising-threshold neuron pair: fire +1 where ``v >= theta``, -1 where
    ``v <= -theta``, then raise the threshold by one. No reset: the membrane keeps its charge.

    Shapes: v (...), theta scalar -> spike (...) in {-1, 0, 1} (v's dtype), theta + 1.
    Example: ``s, theta = thermometer_step(u, 0.5)``.
    """
    spike = (v >= theta).to(v.dtype) - (v <= -theta).to(v.dtype)
    return spike, theta + 1


def thermometer_encode_steps(u: torch.Tensor, bits: int) -> torch.Tensor:
    """The neuron run for T = 2**bits - 1 steps from threshold 0.5: the spike train, the definition
    that :func:`thermometer_count` must equal.

    Shapes: u (...) -> (T, ...) in {-1, 0, 1}; the sum over the first axis is the count.
    """
    T = n_steps(bits)
    theta = 0.5
    out = []
    for _ in range(T):
        s, theta = thermometer_step(u, theta)
        out.append(s)
    return torch.stack(out)


def thermometer_count(u: torch.Tensor, bits: int) -> torch.Tensor:
    """Closed form of the spike count: ``sign(u) * min(T, floor(|u| - 0.5) + 1)`` (0 where |u| < 0.5).

    ``floor(|u| - 0.5) + 1 >= t`` holds exactly when ``|u| >= t - 0.5`` (the step loop's test):
    ``|u| - 0.5`` is exact in floating point for ``|u| >= 0.25`` (Sterbenz, and 0.5 is a
    multiple of the spacing of every larger float below 2**52), and below 0.25 both give 0.
    ``floor(|u| + 0.5)`` would not: ``0.49999997 + 0.5`` rounds up to 1 in float32.

    Shapes: u (...) -> (...) same dtype, integer values in [-T, T].
    """
    T = n_steps(bits)
    mag = (torch.floor(u.abs() - 0.5) + 1).clamp(0, T)
    return torch.sign(u) * mag


# ----------------------------------------------------------------------------- per-token quantization

def token_scale(x: torch.Tensor, bits: int, dim: int = -1) -> torch.Tensor:
    """Per-token scale ``max|x| / T`` over ``dim`` only (causal: one token's own features).

    Shapes: x (..., N) -> (..., 1) (keepdim), detached: quantization-aware training passes the
    gradient straight through the rounding, not through the scale.
    """
    T = n_steps(bits)
    return (x.detach().abs().amax(dim=dim, keepdim=True) / T).clamp_min(_SCALE_EPS)


def _round_ste(u: torch.Tensor, bits: int) -> torch.Tensor:
    """The closed-form count in the forward pass, the identity in the backward (straight-through)."""
    return u + (thermometer_count(u.detach(), bits) - u).detach()


def quantize(x: torch.Tensor, bits: int, dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """Spike counts of ``x`` with per-token scales: ``x ~ counts * scale``, ``|x - counts * scale| <= scale / 2``.

    ``counts`` holds integers in [-T, T] (straight-through gradient ``1 / scale``).
    Shapes: x (..., N) -> counts (..., N), scale (..., 1) (``dim`` moved nowhere: keepdim).
    """
    scale = token_scale(x, bits, dim)
    return _round_ste(x / scale, bits), scale


def fake_quantize(x: torch.Tensor, bits: int, dim: int = -1) -> torch.Tensor:
    """``counts * scale``: the value the spikes stand for (straight-through gradient). Shapes: same."""
    q, s = quantize(x, bits, dim)
    return q * s


# ----------------------------------------------------------------------------- the add-only product

def unary_planes(counts: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """The spike trains of integer counts, one packed vector per step and sign.

    Plane t (t = 1..T) holds the inputs that spike at step t: bit j of ``pos[r, t-1]`` is
    ``counts[r, j] >= t``, of ``neg[r, t-1]`` is ``counts[r, j] <= -t`` (the thermometer code).
    Shapes: counts (R, N) ints in [-T, T] -> pos, neg (R, T, W) uint64, W = ceil(N / 64).
    """
    T = n_steps(bits)
    c = np.asarray(counts, np.int64)
    if c.ndim != 2 or (c.size and np.abs(c).max() > T):
        raise ValueError(f"counts must be a 2-d integer array in [-{T}, {T}] for bits={bits}, "
                         f"got shape {c.shape}" + (f", max |count| {np.abs(c).max()}" if c.size else ""))
    t = np.arange(1, T + 1, dtype=np.int64)[None, :, None]                 # (1, T, 1)
    return pack_bits(c[:, None, :] >= t), pack_bits(c[:, None, :] <= -t)  # (R, T, W) each


def weight_planes(qw: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Packed bit-planes of the quantized weights' magnitudes, split by sign.

    Bit j of ``pos[o, k]`` is bit k of ``qw[o, j]`` where ``qw[o, j] > 0`` (``neg`` likewise for
    the negative entries), so ``qw = sum_k 2**k (pos_k - neg_k)`` bitwise.
    Shapes: qw (O, N) ints in [-T, T] -> pos, neg (O, bits, W) uint64.
    """
    T = n_steps(bits)
    w = np.asarray(qw, np.int64)
    if w.ndim != 2 or (w.size and np.abs(w).max() > T):
        raise ValueError(f"qw must be a 2-d integer array in [-{T}, {T}] for bits={bits}, got shape {w.shape}")
    k = np.arange(bits, dtype=np.int64)[None, :, None]                    # (1, bits, 1)
    mag = np.abs(w)[:, None, :]                                            # (O, 1, N)
    on = ((mag >> k) & 1).astype(bool)                                     # (O, bits, N)
    return pack_bits(on & (w[:, None, :] > 0)), pack_bits(on & (w[:, None, :] < 0))


def _and_counts(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``popcount(a[i] AND b[j])`` for all pairs: ``(pc(a) + pc(b) - hamming(a, b)) / 2`` through the
    Hamming kernel (hdc.classifiers.planes_dot uses the same identity). Shapes: (m, W), (n, W) -> (m, n) int64."""
    h = hamming_matrix(np.ascontiguousarray(a), np.ascontiguousarray(b)).astype(np.int64)
    return (popcount(a)[:, None] + popcount(b)[None, :] - h) >> 1


def packed_unary_matmul(counts: np.ndarray, qw: np.ndarray, bits: int, *, rows_per_chunk: int = 64) -> np.ndarray:
    """The integer product ``counts @ qw.T`` computed from packed spikes by AND, popcount, shift and add.

    Each step's spikes select weights: the output ``o`` of input row ``r`` is
    ``sum_t sum_k 2**k [popcount(P_t & Wp_k) + popcount(N_t & Wn_k) - popcount(P_t & Wn_k) - popcount(N_t & Wp_k)]``
    with P, N the unary planes (:func:`unary_planes`) and Wp, Wn the weight planes
    (:func:`weight_planes`): every input spike adds its weight once, which is what an
    integrate-and-fire synapse does; nothing is multiplied (``2**k`` is a shift).

    Shapes: counts (R, N), qw (O, N) integers in [-T, T] -> (R, O) int64.
    Example: ``packed_unary_matmul(q.numpy(), qw.numpy(), 4) == (q @ qw.T)`` (exactly).
    """
    counts, qw = np.asarray(counts), np.asarray(qw)
    if counts.ndim != 2 or qw.ndim != 2 or counts.shape[1] != qw.shape[1]:
        raise ValueError(f"need counts (R, N) and qw (O, N) with the same N, got {counts.shape} and {qw.shape}")
    T = n_steps(bits)
    R, O = counts.shape[0], qw.shape[0]
    wp, wn = weight_planes(qw, bits)                     # (O, bits, W)
    W = wp.shape[-1]
    wp, wn = wp.reshape(O * bits, W), wn.reshape(O * bits, W)
    shifts = np.arange(bits, dtype=np.int64)
    out = np.empty((R, O), np.int64)
    for r0 in range(0, R, rows_per_chunk):
        p, n = unary_planes(counts[r0:r0 + rows_per_chunk], bits)       # (r, T, W)
        r = p.shape[0]
        p, n = p.reshape(r * T, W), n.reshape(r * T, W)
        # (r*T, O*bits) AND-counts per sign pair; their signed sum, over steps, then shifted by plane
        both = _and_counts(p, wp) + _and_counts(n, wn) - _and_counts(p, wn) - _and_counts(n, wp)
        per_plane = both.reshape(r, T, O, bits).sum(axis=1)             # (r, O, bits): adds over steps
        out[r0:r0 + r] = (per_plane << shifts).sum(axis=-1)             # (r, O): shift and add
    return out


# ----------------------------------------------------------------------------- staircase activation

def gelu_bump(x: torch.Tensor) -> torch.Tensor:
    """``gelu(x) - relu(x)``: bounded (min ~ -0.17 at x ~ -0.75) and ~0 beyond |x| ~ 4, so a few
    step neurons can draw it, while the ReLU part is the positive channel of a thermometer neuron."""
    return F.gelu(x) - F.relu(x)


def _default_samples() -> torch.Tensor:
    """Data-free fitting points: quantiles of N(0, 1.5^2), where pre-activations of a trained MLP lie."""
    p = (torch.arange(4000, dtype=torch.float64) + 0.5) / 4000
    return 1.5 * math.sqrt(2.0) * torch.erfinv(2 * p - 1)


def _equal_variation_thresholds(n: int, lo: float, hi: float) -> torch.Tensor:
    """Thresholds that split the total variation of :func:`gelu_bump` on [lo, hi] into n equal
    parts (one step per equal rise or fall: the placement that minimises a staircase's largest
    error), at the middle of each part. Shapes: -> (n,) float64, ascending."""
    grid = torch.linspace(lo, hi, 20001, dtype=torch.float64)
    var = torch.cat([grid.new_zeros(1), torch.cumsum(gelu_bump(grid).diff().abs(), 0)])   # (20001,)
    targets = (torch.arange(n, dtype=torch.float64) + 0.5) / n * var[-1]
    return grid[torch.searchsorted(var, targets).clamp(max=grid.numel() - 1)]


def fit_staircase(n_neurons: int, samples: torch.Tensor | None = None, *, lo: float = -4.0,
                  hi: float = 3.0) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Thresholds and least-squares pulse sizes of ``n_neurons`` step neurons that draw :func:`gelu_bump`.

    Neuron i fires (once) when its input reaches ``thresholds[i]`` (placed at equal steps of the
    bump's rise and fall within [lo, hi]) and adds ``pulses[i]``; the pulses and a constant are refitted by least squares
    on ``samples`` (pre-activations of the layer, e.g. from calibration text; default: quantiles
    of N(0, 1.5^2)), so the staircase is best where inputs actually fall.
    Shapes: samples (S,) -> thresholds (K,), pulses (K,) float32, offset float.
    """
    if isinstance(n_neurons, bool) or not isinstance(n_neurons, int) or n_neurons < 1:
        raise ValueError(f"n_neurons must be a positive int, got {n_neurons!r}")
    if not lo < hi:
        raise ValueError(f"need lo < hi, got lo={lo}, hi={hi}")
    x = (_default_samples() if samples is None else samples.detach().reshape(-1)).to(torch.float64)
    if x.numel() > 200_000:   # a strided subsample keeps the fit cheap and deterministic
        x = x.sort().values[:: x.numel() // 200_000 + 1]
    thresholds = _equal_variation_thresholds(n_neurons, lo, hi)
    design = torch.cat([torch.ones_like(x)[:, None], (x[:, None] >= thresholds).to(torch.float64)], dim=1)
    sol = torch.linalg.lstsq(design, gelu_bump(x)[:, None]).solution[:, 0]   # (K + 1,)
    return thresholds.float(), sol[1:].float(), float(sol[0])


def staircase(x: torch.Tensor, thresholds: torch.Tensor, pulses: torch.Tensor, offset) -> torch.Tensor:
    """``relu(x) + offset + sum_i pulses[i] * [x >= thresholds[i]]`` (thresholds ascending).

    The gradient reaches ``pulses`` (through the fired neurons) and ``offset``; ``x`` gets none
    here (a step has no slope): :class:`StaircaseGELU` adds GELU's slope straight-through.
    Shapes: x (...) -> (...).
    """
    return _staircase_fired(x, thresholds, pulses, offset)[0]


def _staircase_fired(x, thresholds, pulses, offset) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`staircase` and the number of step neurons each input fired. Shapes: (...) -> (...), (...) int64."""
    levels = torch.cat([pulses.new_zeros(1), torch.cumsum(pulses, 0)])          # (K + 1,)
    fired = torch.bucketize(x.detach(), thresholds, right=True)                  # (...) neurons fired
    return F.relu(x.detach()) + offset + levels[fired], fired


# ----------------------------------------------------------------------------- spiking softmax

def spiking_softmax(scores: torch.Tensor, allowed: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax whose exponentials are spike counts: ``c_ij = count(T * exp(s_ij - max_j s_ij))``,
    ``p_ij = c_ij / sum_j c_ij``.

    The row's largest entry always fires T spikes, so the total is >= T > 0; entries below
    ``exp(-ln(2T))`` of the maximum fire nothing, which makes low-bit attention sparse. Only
    ``allowed`` keys (causal) enter a row. The exponential itself is computed in floating point
    and coded by the neuron; the normalisation is one division per query. The gradient is
    softmax's (straight-through), for quantization-aware training.

    Shapes: scores (..., Tq, Tk), allowed (Tq, Tk) bool -> p (..., Tq, Tk), counts (..., Tq, Tk).
    """
    T = n_steps(bits)
    s = scores.masked_fill(~allowed, float("-inf"))
    soft = F.softmax(s, dim=-1)
    e = torch.exp(s.detach() - s.detach().amax(dim=-1, keepdim=True))           # (..., Tq, Tk) in [0, 1]
    counts = thermometer_count(e * T, bits)
    p = counts / counts.sum(dim=-1, keepdim=True)
    return soft + (p - soft).detach(), counts


# ----------------------------------------------------------------------------- modules

class ThermoLinear(StatsMixin, nn.Module):
    """A linear layer driven by thermometer spikes: ``y = (counts(x) @ counts(W).T) * s_x * s_w (+ bias)``.

    Inputs are coded per token (scale ``max|x| / T`` over the token's features), weights per
    output row; both with ``bits`` bits of magnitude. The forward multiplies the integer-valued
    operands in floating point (the same numbers the spikes carry; :meth:`integer_product`
    computes the integer part by popcounts over packed spikes instead, exactly equal). The
    parameter names are nn.Linear's (``weight``, ``bias``), so a dense layer's state loads
    as it is. It is deliberately not an ``nn.Linear``: accounting counts its synaptic
    operations from the spikes it reports, not as dense MACs.

    Stats: ``spikes`` (input spikes over all steps), ``spikes_per_token``, ``firing_rate``
    (spikes / (inputs x T)), ``silent_frac`` (inputs with count 0). ``core_ops``: ``ac`` = spikes x
    out_features (each spike adds one weight into every output), ``mac`` = one rescale per output
    per token.
    Shapes: x (..., in_features) -> (..., out_features).
    """

    def __init__(self, in_features: int, out_features: int, *, bits: int, bias: bool = False):
        super().__init__()
        self.bits = check_bits(bits)
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features).normal_(0.0, 0.02))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def quantized_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Counts (out, in) in [-T, T] and per-row scales (out, 1) of the weight."""
        return quantize(self.weight, self.bits, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qx, sx = quantize(x, self.bits)                       # (..., in), (..., 1)
        qw, sw = self.quantized_weight()                      # (out, in), (out, 1)
        y = F.linear(qx, qw) * sx * sw.transpose(0, 1)        # (..., out)
        if self.bias is not None:
            y = y + self.bias
        self._report_pass(qx.detach())
        return y

    def integer_product(self, x: torch.Tensor) -> torch.Tensor:
        """The add-only path: ``counts(x) @ counts(W).T`` from packed spikes (:func:`packed_unary_matmul`).

        Shapes: x (..., in) -> (..., out) int64.
        """
        qx, _ = quantize(x.detach(), self.bits)
        qw, _ = self.quantized_weight()
        flat = qx.reshape(-1, self.in_features).to(torch.int64).numpy()
        out = packed_unary_matmul(flat, qw.detach().to(torch.int64).numpy(), self.bits)
        return torch.from_numpy(out).reshape(*x.shape[:-1], self.out_features)

    def _report_pass(self, qx: torch.Tensor) -> None:
        rows = qx.numel() // self.in_features
        spikes = float(qx.abs().sum())
        stats = {"spikes": spikes, "n_tokens": rows, "spikes_per_token": spikes / max(1, rows),
                 "firing_rate": spikes / max(1, qx.numel() * n_steps(self.bits)),
                 "silent_frac": float((qx == 0).float().mean()) if qx.numel() else 0.0, "bits": self.bits}
        ops = {"kind": "thermometer_linear", "ac": spikes * self.out_features,
               "mac": float(rows * self.out_features)}
        self._report(stats, ops)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"bias={self.bias is not None}")


class StaircaseGELU(StatsMixin, nn.Module):
    """GELU drawn by step neurons: ``relu(x) + offset + sum_i pulses[i] [x >= thresholds[i]]``.

    The pulses (and offset) are parameters, refitted by :meth:`refit` to a layer's real
    pre-activations and trainable during quantization-aware training; in the backward pass
    ``x`` gets GELU's slope (straight-through), since a step has none.
    Stats: ``spikes`` (step neurons fired), ``fired_per_token`` (per token, summed over features), ``max_abs_error``
    against GELU in the last pass. ``core_ops``: one accumulate per fired neuron.
    Shapes: x (...) -> (...).
    """

    def __init__(self, n_neurons: int = 16, *, lo: float = -4.0, hi: float = 3.0):
        super().__init__()
        th, pulses, offset = fit_staircase(n_neurons, lo=lo, hi=hi)
        self.lo, self.hi = lo, hi
        self.register_buffer("thresholds", th)
        self.pulses = nn.Parameter(pulses)
        self.offset = nn.Parameter(torch.tensor(offset))

    @torch.no_grad()
    def refit(self, samples: torch.Tensor) -> None:
        """Least-squares pulse sizes for these pre-activation ``samples`` (any shape)."""
        th, pulses, offset = fit_staircase(self.thresholds.numel(), samples, lo=self.lo, hi=self.hi)
        self.thresholds.copy_(th)
        self.pulses.copy_(pulses)
        self.offset.fill_(offset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = F.gelu(x)
        stair, fired = _staircase_fired(x, self.thresholds, self.pulses, self.offset)
        with torch.no_grad():
            rows = max(1, x.numel() // max(1, x.shape[-1]))
            n_fired = float(fired.sum())
            self._report({"spikes": n_fired, "fired_per_token": n_fired / rows, "max_abs_error": float((stair - g).abs().max())},
                         {"kind": "staircase", "ac": n_fired, "mac": 0.0})
        return stair + (g - g.detach())   # forward: the staircase; backward: GELU's slope

    def extra_repr(self) -> str:
        return f"n_neurons={self.thresholds.numel()}, lo={self.lo}, hi={self.hi}"


class ThermoCausalAttention(StatsMixin, nn.Module):
    """Causal multi-head attention on thermometer spikes: the conversion of the dense twin's attention.

    ``c_attn`` and ``c_proj`` are :class:`ThermoLinear`. In the core, q, k and v are coded per
    token and head (scale over the head's features: causal); the score ``q.k`` is the integer
    product of counts times the two scales; :func:`spiking_softmax` codes the exponentials; the
    output accumulates each key's value once per spike of its attention count, then divides by
    the row's spike total. ``window=w`` keeps only the w most recent keys (the recency control).

    Stats: ``spikes`` (q, k and v spikes of the core plus the attention counts' spikes),
    ``q_firing_rate``, ``k_firing_rate``, ``v_firing_rate`` (spikes / (features x T)),
    ``q_silent_frac``, ``k_silent_frac`` (neurons silent for the whole batch),
    ``attn_spikes_per_query``, ``attn_density`` (keys with at least one spike / causal pairs),
    ``n_causal_pairs``. ``core_ops``: ``score_ac`` (each query spike adds the key's count, for
    every allowed key), ``value_ac`` (each attention spike adds a value row of hs counts), ``mac``
    (one score rescale per allowed pair and one division per output feature; exp is a
    nonlinearity and, as everywhere in the accounting, not counted).
    Shapes: x (B, T, C) -> (B, T, C).
    """

    def __init__(self, d_model: int, n_head: int, *, bits: int, max_seq_len: int, window: int | None = None,
                 bias: bool = False):
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_head ({n_head})")
        self.bits = check_bits(bits)
        self.d_model, self.n_head, self.head_size = d_model, n_head, d_model // n_head
        self.max_seq_len, self.window = max_seq_len, window
        self.c_attn = ThermoLinear(d_model, 3 * d_model, bits=bits, bias=bias)
        self.c_proj = ThermoLinear(d_model, d_model, bits=bits, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = qkv_heads(self, x)              # (B, nh, T, hs) each, input checked
        B, T, C = x.shape
        hs = self.head_size
        qq, sq = quantize(q, self.bits)           # (B, nh, T, hs), (B, nh, T, 1)
        qk, sk = quantize(k, self.bits)
        qv, sv = quantize(v, self.bits)
        scores = (qq @ qk.transpose(-2, -1)) * (sq * sk.transpose(-2, -1)) / math.sqrt(hs)  # (B, nh, T, T)
        allowed = brain_prior_mask(T, T, self.window, device=x.device)                       # (T, T)
        att, counts = spiking_softmax(scores, allowed, self.bits)
        y = att @ (qv * sv)                                                                  # (B, nh, T, hs)
        self._report_pass(qq.detach(), qk.detach(), qv.detach(), counts, allowed)
        y = y.transpose(1, 2).contiguous().view(B, T, C)                                     # (B, T, C)
        return self.c_proj(y)

    def _report_pass(self, qq, qk, qv, counts, allowed) -> None:
        B, nh, T, hs = qq.shape
        steps = n_steps(self.bits)
        slots = max(1, qq.numel() * steps)
        keys_per_query = allowed.sum(-1).to(qq.dtype)                       # (T,)
        q_spikes_per_query = qq.abs().sum(-1)                               # (B, nh, T)
        n_pairs = int(allowed.sum()) * B * nh
        attn_spikes = float(counts.sum())
        qkv_spikes = float(qq.abs().sum() + qk.abs().sum() + qv.abs().sum())
        stats = {"spikes": qkv_spikes + attn_spikes, "q_firing_rate": float(qq.abs().sum()) / slots, "k_firing_rate": float(qk.abs().sum()) / slots,
                 "v_firing_rate": float(qv.abs().sum()) / slots,
                 # neurons (head, feature) silent for every token of the batch, as the k-WTA layer reports
                 "q_silent_frac": float((qq.abs().sum((0, 2)) == 0).float().mean()),
                 "k_silent_frac": float((qk.abs().sum((0, 2)) == 0).float().mean()),
                 "attn_spikes_per_query": attn_spikes / max(1, B * nh * T),
                 "attn_density": float((counts > 0).sum()) / max(1, n_pairs), "n_causal_pairs": n_pairs,
                 "bits": self.bits}
        score_ac = float((q_spikes_per_query * keys_per_query).sum())
        value_ac = attn_spikes * hs
        ops = {"kind": "thermometer_attention", "score_ac": score_ac, "value_ac": value_ac,
               "ac": score_ac + value_ac, "mac": float(n_pairs + B * nh * T * hs)}
        self._report(stats, ops, attn=counts / counts.sum(-1, keepdim=True))

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_head={self.n_head}, bits={self.bits}, window={self.window}"
