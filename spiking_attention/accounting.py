"""Operation counts, firing statistics and an energy ESTIMATE, computed from a real forward pass.

Nothing is assumed: :func:`account_model` runs the model once with forward hooks and reads
what each layer actually did.

* Every ``nn.Linear`` call is counted from its real input: a real-valued input costs
  ``rows * in * out`` multiply-accumulates (MACs); a binary {0,1} input costs one accumulate
  (AC, a synaptic operation) per spike per output, ``nnz(x) * out``, i.e. firing rate x FLOPs.
* Every attention module with ``last_stats`` reports its firing rates, silent fractions,
  attention density (against the causal-allowed entries) and attended positions per query.
  Its core is counted from those stats:

  - :class:`~spiking_attention.attention.SpikingKWTAAttention`: the score of each allowed
    (query, key) pair accumulates the key's bits where the query spikes, so
    ``score_ac = q_firing_rate * n_allowed_pairs * code_bits`` (the field's SOPs = rate x
    FLOPs); choosing the winners costs one integer comparison per allowed pair
    (``select_ac = n_allowed_pairs``); the softmax scale one MAC per winner, and the values
    ``n_winners * head_size`` MACs. The packed implementation's work is reported separately
    as ``packed_word_ops = n_allowed_pairs * n_words`` (XOR + POPCNT per 64-bit word), which has
    no per-operation energy figure here.
  - other attention modules (the dense twin, top-k softmax): ``q.k`` over every causal pair,
    ``n_causal_pairs * head_size`` MACs, plus ``attended * head_size`` MACs for the values.

* SOPs = the sum of all ACs. Energy ESTIMATE = MACs x e_MAC + ACs x e_AC with the 45 nm
  per-operation figures (Horowitz, ISSCC 2014) used by the spiking-transformer papers:
  FP32 4.6 / 0.9 pJ, FP16 1.5 / 0.4 pJ, INT8 0.23 / 0.03 pJ (MAC / AC). It is an estimate,
  not a measurement, and is labelled so in every report. Nonlinearities, normalisation,
  memory traffic and embedding look-ups are not counted.

Example::

    >>> rep = account_model(lm, idx)                    # one forward pass
    >>> rep["totals"]["energy_estimate_pJ"]["fp32"]
    >>> write_report("bench/results/accounting.json", rep)
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from hdc.packing import n_words_for

__all__ = ["ENERGY_PRESETS", "ENERGY_NOTE", "energy_estimate", "account_model", "attention_modules",
           "write_report"]

#: pJ per operation, 45 nm (Horowitz 2014), as used by Spikformer / Spike-driven Transformer / SpikingBrain.
ENERGY_PRESETS: dict[str, dict[str, float]] = {
    "fp32": {"mac_pJ": 4.6, "ac_pJ": 0.9},
    "fp16": {"mac_pJ": 1.5, "ac_pJ": 0.4},
    "int8": {"mac_pJ": 0.23, "ac_pJ": 0.03},
}
ENERGY_NOTE = ("ESTIMATE, not a measurement: operation counts from one real forward pass times 45 nm "
               "per-operation energies (Horowitz 2014); excludes memory traffic, nonlinearities and "
               "normalisation.")


def energy_estimate(macs: float, acs: float) -> dict[str, float]:
    """Energy ESTIMATE in pJ for every preset: ``macs * e_mac + acs * e_ac``."""
    return {name: macs * e["mac_pJ"] + acs * e["ac_pJ"] for name, e in ENERGY_PRESETS.items()}


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every attention module that keeps ``last_stats``, in model order."""
    return [(n, m) for n, m in model.named_modules() if hasattr(m, "last_stats") and isinstance(m, nn.Module)]


def _is_binary(x: torch.Tensor) -> bool:
    return bool(x.numel()) and bool(((x == 0) | (x == 1)).all())


def _attention_core_ops(mod: nn.Module, st: dict, in_shape) -> dict:
    """MACs / ACs of an attention module's core (projections are counted by the Linear hooks)."""
    from .attention import SpikingKWTAAttention

    B, T = in_shape[0], in_shape[1]
    nh = getattr(mod, "n_head", st.get("n_head", 1))
    C = in_shape[-1]
    hs = getattr(mod, "head_size", C // nh)
    n_causal = st.get("n_causal_pairs", B * nh * T * (T + 1) // 2)
    attended = st.get("n_winners", st.get("attended_per_query", T) * B * nh * T)
    if isinstance(mod, SpikingKWTAAttention):
        n_allowed = st["n_allowed_pairs"]
        return {
            "kind": "spiking_kwta",
            "score_ac": st["q_firing_rate"] * n_allowed * mod.code_bits,
            "select_ac": float(n_allowed),
            "softmax_mac": float(attended),
            "value_mac": float(attended * hs),
            "packed_word_ops": float(n_allowed * n_words_for(mod.code_bits)),
            "mac": float(attended) + float(attended * hs),
            "ac": st["q_firing_rate"] * n_allowed * mod.code_bits + float(n_allowed),
        }
    # real-valued attention: q.k over every causal pair (dense and top-k both compute all scores)
    return {
        "kind": type(mod).__name__,
        "score_mac": float(n_causal * hs),
        "value_mac": float(attended * hs),
        "mac": float(n_causal * hs + attended * hs),
        "ac": 0.0,
    }


@torch.no_grad()
def account_model(model: nn.Module, inputs, *, forward=None) -> dict:
    """Run one forward pass and count what every layer did; return a JSON-ready report.

    ``forward(model, inputs)`` defaults to ``model(inputs)``. The number of tokens is taken from
    the first two axes of ``inputs`` (B, T).

    Shapes: inputs (B, T) token ids or (B, T, C) activations.
    """
    forward = forward or (lambda m, x: m(x))
    linear_log: dict[str, dict] = {}
    attn_in: dict[str, tuple] = {}
    hooks = []
    attn = attention_modules(model)
    attn_names = {id(m): n for n, m in attn}

    def lin_hook(name):
        def hook(mod, args, out):
            x = args[0]
            rows = x.numel() // mod.in_features
            rec = linear_log.setdefault(name, {"mac": 0.0, "ac": 0.0, "calls": 0, "binary_input": True,
                                               "input_rate": None})
            rec["calls"] += 1
            if _is_binary(x):
                nnz = int((x != 0).sum())
                rec["ac"] += float(nnz * mod.out_features)
                rec["input_rate"] = nnz / max(1, x.numel())
            else:
                rec["binary_input"] = False
                rec["mac"] += float(rows * mod.in_features * mod.out_features)
        return hook

    def attn_hook(name):
        def hook(mod, args, out):
            attn_in[name] = tuple(args[0].shape)
        return hook

    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            hooks.append(mod.register_forward_hook(lin_hook(name)))
        if id(mod) in attn_names:
            hooks.append(mod.register_forward_hook(attn_hook(name)))
    was_training = model.training
    model.eval()
    try:
        forward(model, inputs)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)

    shape = tuple(inputs.shape) if hasattr(inputs, "shape") else ()
    n_tokens = shape[0] * shape[1] if len(shape) >= 2 else 1
    layers = []
    for name, mod in attn:
        st = dict(mod.last_stats or {})
        if name not in attn_in:
            continue
        core = _attention_core_ops(mod, st, attn_in[name])
        keep = {k: st[k] for k in ("q_firing_rate", "k_firing_rate", "q_silent_frac", "k_silent_frac",
                                   "q_silent_token_frac", "k_silent_token_frac", "attn_density",
                                   "attn_density_allowed", "attended_per_query", "tie_at_cut_frac",
                                   "q_firing_rate_per_head", "k_firing_rate_per_head") if k in st}
        layers.append({"name": name, "type": type(mod).__name__, **keep, "core_ops": core})
    lin_mac = sum(r["mac"] for r in linear_log.values())
    lin_ac = sum(r["ac"] for r in linear_log.values())
    core_mac = sum(layer["core_ops"]["mac"] for layer in layers)
    core_ac = sum(layer["core_ops"]["ac"] for layer in layers)
    macs, acs = lin_mac + core_mac, lin_ac + core_ac
    rates = [x["q_firing_rate"] for x in layers if "q_firing_rate" in x] + \
            [x["k_firing_rate"] for x in layers if "k_firing_rate" in x]
    totals = {
        "n_tokens": n_tokens,
        "mac": macs, "ac_sops": acs,
        "linear_mac": lin_mac, "linear_ac": lin_ac,
        "attention_core_mac": core_mac, "attention_core_ac": core_ac,
        "mac_per_token": macs / n_tokens, "sops_per_token": acs / n_tokens,
        "mean_firing_rate": (sum(rates) / len(rates)) if rates else None,
        "mean_attn_density": (sum(x["attn_density"] for x in layers if "attn_density" in x)
                              / max(1, sum("attn_density" in x for x in layers))) if layers else None,
        "energy_estimate_pJ": energy_estimate(macs, acs),
        "energy_estimate_pJ_per_token": {k: v / n_tokens for k, v in energy_estimate(macs, acs).items()},
        "attention_core_energy_estimate_pJ": energy_estimate(core_mac, core_ac),
    }
    return {"energy_note": ENERGY_NOTE, "energy_presets_pJ": ENERGY_PRESETS, "layers": layers,
            "linear": linear_log, "totals": totals}


def write_report(path, report: dict) -> Path:
    """Write a report as JSON atomically (temp file + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return path
