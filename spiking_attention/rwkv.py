"""RWKV-v4 mixing layers with spiking outputs (SpikeGPT, Zhu et al. 2023, arXiv 2302.13939).

Components only (the family that assembles them is ``models/spiking_rwkv.py``):

* :func:`wkv_recurrent` - RWKV-v4's WKV (Peng et al. 2023, arXiv 2305.13048) as the numerically
  stable streaming recurrence: the running sums are kept scaled by ``exp(-p)`` with ``p`` the
  running maximum exponent, so no ``exp`` ever overflows; O(1) state per channel and token;
* :func:`wkv_chunked` - the same numbers computed chunk by chunk for training: an L x L
  (per channel) matrix inside each chunk of L tokens, the recurrent state between chunks, so
  no T x T matrix is ever built (``chunk >= T`` is the fully parallel form);
* :func:`wkv_reference` - the definition written out (float64, tests only);
* :func:`lif_over_tokens` - a LIF neuron (tau 2, v_th 1, hard reset, ATan surrogate) run along
  the token axis with the pure step :func:`spiking_attention.neurons.lif_step`;
* :class:`TimeMix`, :class:`ChannelMix` - RWKV-v4's token and channel mixing, each followed by
  the LIF neuron (SpikeGPT's ``x += LIF(TimeMix(LN(x)))``, ``x += LIF(ChannelMix(LN(x)))``);
* :class:`BinaryEmbedding` - token embeddings binarised by a Heaviside with a surrogate.

The WKV of channel c at token t, with decay ``w = exp(time_decay) > 0`` and bonus ``u``:

    wkv_t = (sum_{i<t} e^{-(t-1-i) w + k_i} v_i + e^{u + k_t} v_t)
            / (sum_{i<t} e^{-(t-1-i) w + k_i}     + e^{u + k_t})

State (per channel): ``(a, b, p)`` with ``num_t = a e^p``, ``den_t = b e^p`` and
``num_t = e^{-w} num_{t-1} + e^{k_t} v_t`` (likewise den with v = 1); the empty state is
``(0, 0, -inf)``.

Every mixing layer reports through the stats protocol (:mod:`.stats`): ``firing_rate`` and
``silent_frac`` of its LIF output, ``core_ops()`` the WKV's multiply-accumulates (the
projections are ``nn.Linear`` and counted by the accounting).

Shapes:
    x (B, T, C) -> spikes (B, T, C) in {0, 1}; state a dict of (B, C) tensors.

Example::

    >>> tm = TimeMix(64, layer_id=0, n_layer=2)
    >>> s, state = tm(torch.randn(2, 10, 64))          # (2, 10, 64) spikes, recurrent state
    >>> s1, state = tm(torch.randn(2, 1, 64), state)   # one more token, O(1) work
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .neurons import lif_step
from .stats import StatsMixin
from .surrogate import get_surrogate

__all__ = ["wkv_recurrent", "wkv_chunked", "wkv_reference", "wkv_empty_state", "lif_over_tokens",
           "TimeMix", "ChannelMix", "BinaryEmbedding", "LIF_TAU", "LIF_V_TH", "WKV_MAC_PER_TOKEN_CHANNEL"]

LIF_TAU = 2.0        # SpikeGPT's LIF: tau 2, threshold 1, hard reset, ATan surrogate (alpha 2)
LIF_V_TH = 1.0
#: multiply-accumulates of one WKV step per channel: 2 for the output's num/den, 4 for the state update
WKV_MAC_PER_TOKEN_CHANNEL = 6


def _check_chunk(chunk) -> None:
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int (tokens per chunk), got {chunk!r}")


def wkv_empty_state(batch: int, channels: int, *, dtype=torch.float32, device=None):
    """The state before the first token: ``(a, b, p) = (0, 0, -inf)``, each (B, C)."""
    z = torch.zeros(batch, channels, dtype=dtype, device=device)
    return z, z.clone(), torch.full_like(z, float("-inf"))


def wkv_recurrent(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state=None):
    """WKV by the stable streaming recurrence, one token at a time (generation's form).

    Shapes: w, u (C,); k, v (B, T, C); state (a, b, p) each (B, C) or None ->
    (wkv (B, T, C), new state).
    """
    B, T, C = k.shape
    a, b, p = state if state is not None else wkv_empty_state(B, C, dtype=k.dtype, device=k.device)
    out = []
    for t in range(T):
        kt, vt = k[:, t], v[:, t]
        # output: the state plus the current token with its bonus u
        ww = u + kt
        q = torch.maximum(p, ww)
        e1, e2 = torch.exp(p - q), torch.exp(ww - q)
        out.append((e1 * a + e2 * vt) / (e1 * b + e2))
        # state: decay by e^{-w}, add the current token
        ww = p - w
        q = torch.maximum(ww, kt)
        e1, e2 = torch.exp(ww - q), torch.exp(kt - q)
        a, b, p = e1 * a + e2 * vt, e1 * b + e2, q
    return torch.stack(out, 1), (a, b, p)


def wkv_chunked(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state=None,
                chunk: int = 16):
    """WKV chunk by chunk: an (L, L) exponent matrix per channel inside each chunk, the
    recurrent state between chunks; every exponent is taken after subtracting its row maximum.

    Shapes: w, u (C,); k, v (B, T, C); state as :func:`wkv_recurrent` -> (wkv (B, T, C), state).
    """
    _check_chunk(chunk)
    B, T, C = k.shape
    a, b, p = state if state is not None else wkv_empty_state(B, C, dtype=k.dtype, device=k.device)
    out = []
    bias_full = _chunk_bias(w, u, min(chunk, T))
    for s0 in range(0, T, chunk):
        kc, vc = k[:, s0:s0 + chunk], v[:, s0:s0 + chunk]               # (B, L, C)
        L = kc.shape[1]
        bias = bias_full if L == bias_full.shape[0] else _chunk_bias(w, u, L)
        j = torch.arange(L, device=k.device, dtype=k.dtype)
        logit = kc[:, None, :, :] + bias                                 # (B, L, L, C) [b, j, i, c]
        from_state = p[:, None, :] - j[None, :, None] * w                # (B, L, C): state decayed j steps
        m = torch.maximum(logit.amax(dim=2), from_state)                 # (B, L, C)
        e = torch.exp(logit - m[:, :, None, :])                          # (B, L, L, C)
        es = torch.exp(from_state - m)                                   # (B, L, C)
        num = (e * vc[:, None, :, :]).sum(dim=2) + es * a[:, None, :]
        den = e.sum(dim=2) + es * b[:, None, :]
        out.append(num / den)
        # the state after the chunk: token i decayed by L - 1 - i steps, the old state by L
        q_tok = kc - (L - 1 - j)[None, :, None] * w                      # (B, L, C)
        q_state = p - L * w                                              # (B, C)
        p_new = torch.maximum(q_tok.amax(dim=1), q_state)
        e_tok = torch.exp(q_tok - p_new[:, None, :])
        e_state = torch.exp(q_state - p_new)
        a = (e_tok * vc).sum(dim=1) + e_state * a
        b = e_tok.sum(dim=1) + e_state * b
        p = p_new
    return torch.cat(out, 1), (a, b, p)


def _chunk_bias(w: torch.Tensor, u: torch.Tensor, L: int) -> torch.Tensor:
    """What is added to ``k_i`` in the exponent of token i in the output of token j of a chunk:
    ``-(j - 1 - i) w`` for i < j, ``u`` for i == j, ``-inf`` for i > j (not yet seen).

    Shapes: w, u (C,) -> (L, L, C) [j, i, c].
    """
    j = torch.arange(L, device=w.device, dtype=w.dtype)
    gap = (j[:, None] - 1 - j[None, :])[:, :, None]                      # (L, L, 1)
    bias = -gap * w                                                      # (L, L, C)
    bias = torch.where((j[:, None] >= j[None, :])[:, :, None], bias, float("-inf"))
    return torch.where(torch.eye(L, dtype=torch.bool, device=w.device)[:, :, None], u, bias)


def wkv_reference(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The definition, summed term by term in float64 (no stabilisation; small inputs only).

    Shapes: w, u (C,); k, v (B, T, C) -> (B, T, C) float64.
    """
    w, u, k, v = (x.double() for x in (w, u, k, v))
    B, T, C = k.shape
    out = torch.empty(B, T, C, dtype=torch.float64)
    for t in range(T):
        num = torch.exp(u + k[:, t]) * v[:, t]
        den = torch.exp(u + k[:, t])
        for i in range(t):
            e = torch.exp(-(t - 1 - i) * w + k[:, i])
            num, den = num + e * v[:, i], den + e
        out[:, t] = num / den
    return out


class _LIFOverTokens(torch.autograd.Function):
    """Hard-reset LIF along the token axis in one autograd node (the graph of the step loop costs
    more than its arithmetic on CPU). Forward: :func:`spiking_attention.neurons.lif_step` per
    token. Backward: backprop through time written out (tests compare it with autograd of the
    step loop):

        h_t = (1 - 1/tau) v_{t-1} + x_t / tau,  s_t = H(h_t - v_th),  v_t = h_t (1 - s_t) + v_reset s_t
        dh_t = dv_t (1 - s_t) + (ds_t + dv_t (v_reset - h_t)) g'(h_t - v_th)
        dx_t = dh_t / tau,  dv_{t-1} = dh_t (1 - 1/tau)
    """

    @staticmethod
    def forward(ctx, x, v0, tau, v_th, v_reset, surrogate):  # type: ignore[override]
        v = v0
        hs, ss = [], []
        for t in range(x.shape[1]):
            s, v_next = lif_step(x[:, t], v, tau=tau, v_th=v_th, v_reset=v_reset, reset="hard",
                                 surrogate=surrogate)
            hs.append(v + (x[:, t] - (v - v_reset)) / tau)
            ss.append(s)
            v = v_next
        h, s = torch.stack(hs, 1), torch.stack(ss, 1)                     # (B, T, C)
        ctx.save_for_backward(h, s)
        ctx.tau, ctx.v_th, ctx.v_reset, ctx.surrogate = tau, v_th, v_reset, surrogate
        return s, v

    @staticmethod
    def backward(ctx, grad_s, grad_v):  # type: ignore[override]
        h, s = ctx.saved_tensors
        tau, v_th, v_reset = ctx.tau, ctx.v_th, ctx.v_reset
        sg = ctx.surrogate.grad(h - v_th)                                 # (B, T, C)
        if grad_s is None:
            grad_s = torch.zeros_like(h)
        dv = torch.zeros_like(h[:, 0]) if grad_v is None else grad_v
        dx = torch.empty_like(h)
        for t in range(h.shape[1] - 1, -1, -1):
            dh = dv * (1 - s[:, t]) + (grad_s[:, t] + dv * (v_reset - h[:, t])) * sg[:, t]
            dx[:, t] = dh / tau
            dv = dh * (1 - 1 / tau)
        return dx, dv, None, None, None, None


def lif_over_tokens(x: torch.Tensor, v0: torch.Tensor | None = None, *, surrogate="atan",
                    tau: float = LIF_TAU, v_th: float = LIF_V_TH, v_reset: float = 0.0,
                    fused: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """A LIF neuron per (batch, channel) stepped along the token axis; hard reset to ``v_reset``.

    ``fused=False`` runs the plain loop of :func:`lif_step` under autograd (the reference the
    fused backward is tested against).
    Shapes: x (B, T, C), v0 (B, C) or None (rest) -> spikes (B, T, C) in {0, 1}, v_T (B, C).
    """
    v = torch.full_like(x[:, 0], v_reset) if v0 is None else v0
    surrogate = get_surrogate(surrogate)
    if fused:
        return _LIFOverTokens.apply(x, v, float(tau), float(v_th), float(v_reset), surrogate)
    out = []
    for t in range(x.shape[1]):
        s, v = lif_step(x[:, t], v, tau=tau, v_th=v_th, v_reset=v_reset, reset="hard", surrogate=surrogate)
        out.append(s)
    return torch.stack(out, 1), v


def _shift(x: torch.Tensor, last: torch.Tensor | None) -> torch.Tensor:
    """RWKV's token shift: each token sees the previous token's input (``last`` before the first).

    Shapes: x (B, T, C), last (B, C) or None (zeros) -> (B, T, C).
    """
    first = torch.zeros_like(x[:, :1]) if last is None else last[:, None, :]
    return torch.cat([first, x[:, :-1]], dim=1)


def _ratios(layer_id: int, n_layer: int, d_model: int):
    """RWKV-v4's depth-dependent init ratios and the per-channel ramp ``i / C``."""
    r01 = layer_id / (n_layer - 1) if n_layer > 1 else 0.0
    r10 = 1.0 - layer_id / n_layer
    ramp = torch.arange(d_model, dtype=torch.float32) / d_model
    return r01, r10, ramp


def _check_dims(d_model, layer_id, n_layer):
    for name, val, low in (("d_model", d_model, 1), ("n_layer", n_layer, 1), ("layer_id", layer_id, 0)):
        if isinstance(val, bool) or not isinstance(val, int) or val < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {val!r}")
    if layer_id >= n_layer:
        raise ValueError(f"layer_id ({layer_id}) must be < n_layer ({n_layer})")


def _fire_stats(s: torch.Tensor) -> dict:
    flat = s.detach().reshape(-1, s.shape[-1])
    return {"firing_rate": float(flat.mean()), "silent_frac": float((flat.sum(0) == 0).float().mean()),
            "B": int(s.shape[0]), "T": int(s.shape[1]), "channels": int(s.shape[-1])}


class TimeMix(StatsMixin, nn.Module):
    """RWKV-v4 token mixing (WKV with per-channel decay and bonus, token shift, sigmoid
    receptance) followed by a LIF neuron along the token axis.

    ``chunk``: tokens per chunk of the training form (:func:`wkv_chunked`); ``mode="recurrent"``
    in :meth:`forward` runs :func:`wkv_recurrent` instead (what generation uses).
    Shapes: x (B, T, C), state dict or None -> (spikes (B, T, C), state).
    """

    def __init__(self, d_model: int, *, layer_id: int, n_layer: int, chunk: int = 16, bias: bool = False,
                 surrogate: str = "atan"):
        super().__init__()
        _check_dims(d_model, layer_id, n_layer)
        _check_chunk(chunk)
        self.d_model, self.chunk = d_model, chunk
        r01, r10, ramp = _ratios(layer_id, n_layer, d_model)
        h = torch.arange(d_model, dtype=torch.float32)
        # fast-decaying channels near 0, slow ones near C-1; deeper layers shift towards slow
        self.time_decay = nn.Parameter(-5 + 8 * (h / max(1, d_model - 1)) ** (0.7 + 1.3 * r01))
        self.time_first = nn.Parameter(math.log(0.3) + ((h + 1) % 3 - 1) * 0.5)
        self.time_mix_k = nn.Parameter(ramp ** r10)
        self.time_mix_v = nn.Parameter(ramp ** r10 + 0.3 * r01)
        self.time_mix_r = nn.Parameter(ramp ** (0.5 * r10))
        self.key = nn.Linear(d_model, d_model, bias=bias)
        self.value = nn.Linear(d_model, d_model, bias=bias)
        self.receptance = nn.Linear(d_model, d_model, bias=bias)
        self.output = nn.Linear(d_model, d_model, bias=bias)
        for lin in (self.key, self.value, self.receptance, self.output):
            # unit-scale outputs for LayerNormed inputs, so the LIF after the block fires at init
            nn.init.normal_(lin.weight, std=1.0 / math.sqrt(d_model))
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)
        self.spike_fn = get_surrogate(surrogate)
        self.record = False

    def forward(self, x: torch.Tensor, state: dict | None = None, mode: str = "chunked"):
        if mode not in ("chunked", "recurrent"):
            raise ValueError(f"mode must be 'chunked' or 'recurrent', got {mode!r}")
        state = state or {}
        xx = _shift(x, state.get("x"))
        xk = x * self.time_mix_k + xx * (1 - self.time_mix_k)
        xv = x * self.time_mix_v + xx * (1 - self.time_mix_v)
        xr = x * self.time_mix_r + xx * (1 - self.time_mix_r)
        k, v, r = self.key(xk), self.value(xv), torch.sigmoid(self.receptance(xr))   # (B, T, C)
        w = torch.exp(self.time_decay)
        wkv_state = state.get("wkv")
        if mode == "chunked":
            y, wkv_state = wkv_chunked(w, self.time_first, k, v, wkv_state, self.chunk)
        else:
            y, wkv_state = wkv_recurrent(w, self.time_first, k, v, wkv_state)
        s, v_mem = lif_over_tokens(self.output(r * y), state.get("v"), surrogate=self.spike_fn)
        st = _fire_stats(s)
        n = st["B"] * st["T"] * st["channels"]
        self._report(st, {"mac": float(n * WKV_MAC_PER_TOKEN_CHANNEL), "ac": 0.0,
                          "wkv_mac": float(n * WKV_MAC_PER_TOKEN_CHANNEL)}, spikes=s)
        return s, {"x": x[:, -1], "wkv": wkv_state, "v": v_mem}

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, chunk={self.chunk}"


class ChannelMix(StatsMixin, nn.Module):
    """RWKV-v4 channel mixing, ``sigmoid(R x_r) * V relu(K x_k)^2`` with token shift, followed by
    a LIF neuron along the token axis.

    Shapes: x (B, T, C), state dict or None -> (spikes (B, T, C), state).
    """

    def __init__(self, d_model: int, d_hidden: int, *, layer_id: int, n_layer: int, bias: bool = False,
                 surrogate: str = "atan"):
        super().__init__()
        _check_dims(d_model, layer_id, n_layer)
        if isinstance(d_hidden, bool) or not isinstance(d_hidden, int) or d_hidden < 1:
            raise ValueError(f"d_hidden must be a positive int, got {d_hidden!r}")
        self.d_model, self.d_hidden = d_model, d_hidden
        _, r10, ramp = _ratios(layer_id, n_layer, d_model)
        self.time_mix_k = nn.Parameter(ramp ** r10)
        self.time_mix_r = nn.Parameter(ramp ** r10)
        self.key = nn.Linear(d_model, d_hidden, bias=bias)
        self.value = nn.Linear(d_hidden, d_model, bias=bias)
        self.receptance = nn.Linear(d_model, d_model, bias=bias)
        for lin in (self.key, self.value, self.receptance):
            nn.init.normal_(lin.weight, std=1.0 / math.sqrt(lin.in_features))
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)
        self.spike_fn = get_surrogate(surrogate)
        self.record = False

    def forward(self, x: torch.Tensor, state: dict | None = None):
        state = state or {}
        xx = _shift(x, state.get("x"))
        xk = x * self.time_mix_k + xx * (1 - self.time_mix_k)
        xr = x * self.time_mix_r + xx * (1 - self.time_mix_r)
        kv = self.value(torch.square(F.relu(self.key(xk))))            # (B, T, C)
        s, v_mem = lif_over_tokens(torch.sigmoid(self.receptance(xr)) * kv, state.get("v"),
                                   surrogate=self.spike_fn)
        self._report(_fire_stats(s), {"mac": 0.0, "ac": 0.0}, spikes=s)
        return s, {"x": x[:, -1], "v": v_mem}

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, d_hidden={self.d_hidden}"


class BinaryEmbedding(StatsMixin, nn.Module):
    """Token embeddings binarised by a Heaviside at 0 with a surrogate gradient (SpikeGPT).

    Shapes: idx (B, T) int64 -> (B, T, C) in {0, 1}.
    """

    def __init__(self, vocab_size: int, d_model: int, surrogate: str = "atan"):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(vocab_size, d_model) * 0.02)
        self.spike_fn = get_surrogate(surrogate)
        self.record = False

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        s = self.spike_fn(F.embedding(idx, self.weight))
        flat = s.detach().reshape(-1, s.shape[-1])
        self._report({"firing_rate": float(flat.mean())}, {"mac": 0.0, "ac": 0.0}, spikes=s)
        return s
