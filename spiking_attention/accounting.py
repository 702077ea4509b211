"""Operation counts, firing statistics and an energy ESTIMATE, computed from a real forward pass.

Nothing is assumed: :func:`account_model` runs the model once with forward hooks and reads
what each layer actually did.

* Every ``nn.Linear`` call is counted from its real input: a real-valued input costs
  ``rows * in * out`` multiply-accumulates (MACs); a binary {0,1} input costs one accumulate
  (AC, a synaptic operation) per spike per output, ``nnz(x) * out``, i.e. firing rate x FLOPs.
* Every layer that reports through the stats protocol (:mod:`.stats`) gives its firing rates,
  silent fractions, attention density (against the causal-allowed entries), attended positions
  per query, and the operation counts of its own core (``core_ops()``: the spiking k-WTA layer
  counts one accumulate per query spike per allowed key bit, real-valued attention ``q.k``
  MACs over every causal pair; each layer's docstring says how it counts).

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

from pathlib import Path

import torch
from torch import nn

from hdc.io import write_json

from .stats import reporting_layers

__all__ = ["ENERGY_PRESETS", "ENERGY_NOTE", "energy_estimate", "account_model", "write_report"]

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


def _is_binary(x: torch.Tensor) -> bool:
    return bool(x.numel()) and bool(((x == 0) | (x == 1)).all())


_KEEP = ("attn_density", "attn_density_allowed", "attended_per_query", "tie_at_cut_frac")
_KEEP_SUFFIXES = ("_rate", "_frac", "_rate_per_head", "sparsity")


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
    attn = reporting_layers(model)
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
            attn_in[name] = True
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
        if name not in attn_in:   # the layer did not run in this pass
            continue
        st, core = mod.layer_stats(), mod.core_ops()
        # every rate, fraction and sparsity a layer reports (attention layers report q/k rates,
        # LIF output layers ``firing_rate``, spike coders ``spike_sparsity``), scalars and per-head lists
        keep = {k: v for k, v in st.items() if k in _KEEP or k.endswith(_KEEP_SUFFIXES)}
        layers.append({"name": name, "type": type(mod).__name__, **keep, "core_ops": core})
    lin_mac = sum(r["mac"] for r in linear_log.values())
    lin_ac = sum(r["ac"] for r in linear_log.values())
    core_mac = sum(layer["core_ops"]["mac"] for layer in layers)
    core_ac = sum(layer["core_ops"]["ac"] for layer in layers)
    macs, acs = lin_mac + core_mac, lin_ac + core_ac
    # the mean over every binary-spike population of every layer (q and k codes, LIF outputs);
    # graded spike counts (``nonzero_rate``) are not firing rates and stay per layer
    rates = [v for x in layers for k, v in x.items() if k.endswith("firing_rate") and isinstance(v, (int, float))]
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
    """Write a report as JSON through the one atomic writer (:func:`hdc.io.write_json`)."""
    write_json(path, report)
    return Path(path)
