"""Family ``nord``: a Nord-style spiking language model (LIF neurons, spiking Q/K, top-k attention).

After Nord (the 144M spiking LM of its Apache-2.0 model card; no paper): every token is
expanded into a short train of input currents on two time scales (``t_fast`` steps of strong
drive with fast membrane decay, then ``t_slow`` steps of weak drive with slow decay), each
step gated per channel by a learned sigmoid, and fed to LIF neurons with a synaptic and a
membrane state (:func:`spiking_attention.neurons.lif_syn_step`: ``i = b_syn i + I``, ``v = b_mem
v + (1 - b_mem) i``), learnable per-channel thresholds, a refractory period, soft reset and the
ATan surrogate. A neuron's output is its spike count over the ``t_fast + t_slow`` steps.

The trunk is nanoGPT's (:mod:`models.base`: embeddings, pre-LayerNorm blocks, tied head), so
the parameter count is the dense twin's plus the neurons' thresholds and gates:

* attention: queries and keys are spike counts of LIF neurons driven by their projections;
  a score is the integer ``q_count . k_count`` (exact, so k-WTA's ties resolve identically in
  the full pass and the decoder), the ``k`` best causal keys of each query are kept
  (:func:`spiking_attention.kwta.kwta_mask`, Nord's top-k masked softmax), and the output is a
  softmax over the winners' scores (times a learned per-head scale) applied to real values;
* MLP: ``c_proj(rate(LIF(c_fc(x))))``, spiking neurons in place of GELU.

Every spiking layer reports its firing rate through the stats protocol (not one layer: all of
them), and an optional regulariser pulls each layer's rate toward ``firing_target``
(``firing_reg`` > 0; Nord's explicit sparsity loss).

Shapes:
    idx (B, T) int64 -> logits (B, T, vocab_size); loss a scalar when targets (B, T) are given.

Example:
    >>> m = NordLM(NordConfig(vocab_size=65, block_size=16, n_layer=1, n_head=2, n_embd=32))
    >>> logits, loss = m(torch.zeros(2, 8, dtype=torch.long))
    >>> logits.shape
    torch.Size([2, 8, 65])
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from spiking_attention.kwta import causal_mask, kwta_mask
from spiking_attention.neurons import lif_syn_step
from spiking_attention.stats import StatsMixin
from spiking_attention.surrogate import SURROGATES

from .base import TransformerLM, TrunkConfig, check_choice, check_int

__all__ = ["NordConfig", "NordLM", "NordNeurons", "NordAttention", "NordMLP", "NordDecoder"]


@dataclass
class NordConfig(TrunkConfig):
    t_fast: int = 4                 # fast time steps per token (Nord: 8)
    t_slow: int = 2                 # slow time steps per token (Nord: 2)
    fast_scale: float = 4.0         # drive of the fast steps
    slow_scale: float = 1.0         # drive of the slow steps (weaker, Nord's "context summary")
    b_syn: float = 0.5              # synaptic current decay per step
    b_mem: float = 0.85             # membrane decay per fast step
    b_mem_slow: float = 0.95        # membrane decay per slow step (the slow time scale)
    v_th: float = 0.15              # initial per-channel threshold (learned)
    refractory: int = 2             # steps a neuron stays silent after a spike
    surrogate: str = "atan"
    k: int = 8                      # winners (attended keys) per query
    firing_target: float = 0.1      # the regulariser's target rate per layer
    firing_reg: float = 0.0         # weight of sum_layers (rate - target)^2 in the loss; 0 = off

    def _check(self) -> None:
        check_int("t_fast", self.t_fast, 0)
        check_int("t_slow", self.t_slow, 0)
        if self.t_fast + self.t_slow < 1:
            raise ValueError(f"t_fast + t_slow must be >= 1 time step, got {self.t_fast} + {self.t_slow}")
        check_int("refractory", self.refractory, 0)
        check_int("k", self.k)
        check_choice("surrogate", self.surrogate, sorted(SURROGATES))
        for name in ("b_syn", "b_mem", "b_mem_slow"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{name} (a decay per step) must be in [0, 1), got {v!r}")
        for name in ("fast_scale", "slow_scale", "v_th"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not 0.0 < self.firing_target < 1.0:
            raise ValueError(f"firing_target must be in (0, 1), got {self.firing_target!r}")
        if not self.firing_reg >= 0:
            raise ValueError(f"firing_reg must be >= 0 (0 disables it), got {self.firing_reg!r}")


class NordNeurons(StatsMixin, nn.Module):
    """A layer of Nord LIF neurons: real input current -> spike count over the token's time steps.

    The current of step s is ``sigmoid(gate_s) * x * scale_s``; fast steps use ``b_mem``, slow
    steps ``b_mem_slow``. Stats: firing rate (spikes per neuron per step), silent fraction
    (neurons that never fired in the pass), rate per time step. ``rate`` keeps the graph, for
    the firing-rate regulariser.

    Shapes: x (..., n) -> counts (..., n) in {0, 1, ..., t_fast + t_slow} (float).
    """

    def __init__(self, n: int, config: NordConfig):
        super().__init__()
        c = config
        self.n, self.t_fast, self.t_slow = n, c.t_fast, c.t_slow
        self.steps = c.t_fast + c.t_slow
        self.scales = [c.fast_scale] * c.t_fast + [c.slow_scale] * c.t_slow
        self.b_mems = [c.b_mem] * c.t_fast + [c.b_mem_slow] * c.t_slow
        self.b_syn, self.refractory, self.surrogate = c.b_syn, c.refractory, c.surrogate
        self.threshold = nn.Parameter(torch.full((n,), float(c.v_th)))
        self.gate = nn.Parameter(torch.zeros(self.steps, n))               # sigmoid(0) = 1/2 per step
        self.rate: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v_th = self.threshold.clamp_min(1e-2)                               # a threshold never reaches 0
        drive = torch.sigmoid(self.gate) * torch.tensor(self.scales)[:, None]   # (S, n)
        currents = drive.view(self.steps, *([1] * (x.dim() - 1)), self.n) * x   # (S, ..., n)
        state, spikes = None, []
        for s in range(self.steps):
            sp, state = lif_syn_step(currents[s], state, b_syn=self.b_syn,
                                     b_mem=self.b_mems[s], v_th=v_th, refractory=self.refractory,
                                     surrogate=self.surrogate)
            spikes.append(sp)
        sp = torch.stack(spikes)                                            # (S, ..., n)
        counts = sp.sum(0)                                                  # (..., n)
        self.rate = sp.mean()
        with torch.no_grad():
            fired = sp.reshape(self.steps, -1, self.n).amax((0, 1))         # (n,) ever fired
            stats = {"firing_rate": float(self.rate), "silent_frac": float((fired == 0).float().mean()),
                     "rate_per_step": [float(r) for r in sp.reshape(self.steps, -1).mean(1)],
                     "steps": self.steps}
        rec = {"spike_counts": counts.reshape(-1, self.n)[:64]} if self.record else {}
        self._report(stats, {"mac": 0.0, "ac": 0.0, "neuron_updates": float(sp.numel())}, **rec)
        return counts


class NordAttention(StatsMixin, nn.Module):
    """Causal self-attention on spiking queries and keys with top-k (k-WTA) selection.

    Scores are the integer overlaps ``q_count . k_count`` per head; the ``k`` best causal keys
    win (ties to the more recent key); softmax over the winners of ``score * scale_h /
    sqrt(head_size)`` weights real-valued values. ``cache`` (a dict) holds the keys' counts and
    values of earlier positions for incremental decoding.

    Core ops (stats protocol): score MACs over every causal pair (counts are multi-level, not
    binary), value MACs over the winners.
    Shapes: x (B, T, C) -> (B, T, C).
    """

    def __init__(self, config: NordConfig):
        super().__init__()
        C, nh = config.n_embd, config.n_head
        self.n_head, self.hs, self.k = nh, C // nh, config.k
        self.c_attn = nn.Linear(C, 3 * C, bias=config.bias)
        self.c_proj = nn.Linear(C, C, bias=config.bias)
        self.q_neurons = NordNeurons(C, config)
        self.k_neurons = NordNeurons(C, config)
        steps = config.t_fast + config.t_slow
        # scores of counts reach steps^2 * hs: start the softmax near the dense twin's scale
        self.log_scale = nn.Parameter(torch.full((nh,), math.log(4.0 / steps)))

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        B, T, C = x.shape
        nh, hs = self.n_head, self.hs
        q_cur, k_cur, v = self.c_attn(x).split(C, dim=2)
        q = self.q_neurons(q_cur).view(B, T, nh, hs).transpose(1, 2)        # (B, nh, T, hs) counts
        k = self.k_neurons(k_cur).view(B, T, nh, hs).transpose(1, 2)
        v = v.view(B, T, nh, hs).transpose(1, 2)                            # (B, nh, T, hs)
        if cache is not None:
            if "k" in cache:
                k = torch.cat([cache["k"], k], 2)
                v = torch.cat([cache["v"], v], 2)
            cache["k"], cache["v"] = k, v
        Tk = k.shape[2]
        s_int = q @ k.transpose(-2, -1)                                     # (B, nh, T, Tk) exact integers
        allowed = causal_mask(T, Tk, device=x.device)
        win = kwta_mask(s_int, self.k, allowed, integer=True)
        scale = self.log_scale.exp().view(1, nh, 1, 1) / math.sqrt(hs)
        att = torch.softmax((s_int * scale).masked_fill(~win, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        with torch.no_grad():
            n_allowed = float(allowed.sum()) * B * nh
            n_win = float(win.sum())
            stats = {"q_firing_rate": float(self.q_neurons.rate), "k_firing_rate": float(self.k_neurons.rate),
                     "attn_density_allowed": n_win / max(n_allowed, 1.0), "attn_density": n_win / max(n_allowed, 1.0),
                     "attended_per_query": n_win / max(B * nh * T, 1)}
        self._report(stats, {"mac": n_allowed * hs + n_win * hs, "ac": 0.0,
                             "score_mac": n_allowed * hs, "value_mac": n_win * hs}, attn=att)
        return self.c_proj(y)


class NordMLP(nn.Module):
    """``c_proj(counts / steps)`` of Nord neurons driven by ``c_fc``: spikes in place of GELU.

    Shapes: (B, T, C) -> (B, T, C).
    """

    def __init__(self, config: NordConfig):
        super().__init__()
        C = config.n_embd
        self.c_fc = nn.Linear(C, 4 * C, bias=config.bias)
        self.neurons = NordNeurons(4 * C, config)
        self.c_proj = nn.Linear(4 * C, C, bias=config.bias)
        self.steps = config.t_fast + config.t_slow

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.neurons(self.c_fc(x)) / self.steps)


class NordLM(TransformerLM):
    """The Nord-style spiking LM on nanoGPT's trunk (see the module docstring)."""

    def __init__(self, config: NordConfig):
        super().__init__(config, lambda i: NordAttention(config))
        for blk in self.transformer.h:
            blk.mlp = NordMLP(config)
        # nanoGPT's initialisation of the new MLPs (the trunk initialised the ones they replace)
        for pn, p in self.named_parameters():
            if ".mlp." in pn and pn.endswith("weight") and p.dim() == 2:
                std = 0.02 / math.sqrt(2 * config.n_layer) if pn.endswith("c_proj.weight") else 0.02
                nn.init.normal_(p, mean=0.0, std=std)
        for m in self.modules():   # the trunk's init touched the gates; restore sigmoid(0) = 1/2
            if isinstance(m, NordNeurons):
                nn.init.zeros_(m.gate)

    def neurons(self) -> list[NordNeurons]:
        return [m for m in self.modules() if isinstance(m, NordNeurons)]

    def _run(self, idx: torch.Tensor, start: int = 0, caches: list | None = None) -> torch.Tensor:
        x = self.embed(idx, start)                                          # (B, T, C)
        for i, blk in enumerate(self.transformer.h):
            x = x + blk.attn(blk.ln_1(x), None if caches is None else caches[i])
            x = x + blk.mlp(blk.ln_2(x))
        return self.head(x)                                                 # (B, T, V)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        if idx.dim() != 2:
            raise ValueError(f"idx must be (B, T), got shape {tuple(idx.shape)}")
        if idx.size(1) > self.config.block_size:
            raise ValueError(f"sequence length {idx.size(1)} exceeds block_size {self.config.block_size}")
        logits = self._run(idx)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
            if self.config.firing_reg > 0:
                loss = loss + self.config.firing_reg * self.firing_penalty()
        return logits, loss

    def firing_penalty(self) -> torch.Tensor:
        """sum over spiking layers of (rate - firing_target)^2, from the last forward pass."""
        t = self.config.firing_target
        return sum((m.rate - t) ** 2 for m in self.neurons())

    def firing_rates(self) -> list[float]:
        """The firing rate of every spiking layer in the last forward pass, in model order."""
        return [m.layer_stats()["firing_rate"] for m in self.neurons()]

    def decoder(self) -> "NordDecoder":
        return NordDecoder(self)


class NordDecoder:
    """Incremental decoding with a per-layer cache of key spike counts and values.

    ``prefill(idx (B, T)) -> (logits (B, T, V), state)``; ``step(token (B, 1), state) -> logits (B, V)``.
    The cache grows by one position per token up to ``block_size``.
    """

    def __init__(self, model: NordLM):
        self.m = model

    @torch.no_grad()
    def prefill(self, idx: torch.Tensor):
        if idx.size(1) > self.m.config.block_size:
            raise ValueError(f"prompt length {idx.size(1)} exceeds block_size {self.m.config.block_size}")
        state = {"caches": [{} for _ in self.m.transformer.h], "pos": idx.size(1)}
        return self.m._run(idx, 0, state["caches"]), state

    @torch.no_grad()
    def step(self, token: torch.Tensor, state: dict) -> torch.Tensor:
        if state["pos"] >= self.m.config.block_size:
            raise ValueError(f"the cache is full: position {state['pos']} needs block_size > "
                             f"{self.m.config.block_size} (learned position embeddings end there)")
        logits = self.m._run(token.view(-1, 1), state["pos"], state["caches"])
        state["pos"] += 1
        return logits[:, -1]
