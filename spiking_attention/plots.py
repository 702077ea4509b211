"""Plots of spiking attention: a spike raster, an attention map, firing rates per layer (Agg backend).

Example::

    >>> paths = plot_model(lm, idx, "bench/results", prefix="spiking")   # three PNGs
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from hdc.io import save_figure  # noqa: E402

from .stats import reporting_layers  # noqa: E402

__all__ = ["spike_raster", "attention_map", "firing_rates", "plot_model", "record_run", "ranked_edges"]


def _np(a):
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _save(fig, path) -> Path:
    """Save through the one atomic writer: readers never see half a PNG."""
    try:
        return save_figure(fig, path, bbox_inches="tight")
    finally:
        plt.close(fig)


def spike_raster(spikes, path, *, title: str = "spike raster") -> Path:
    """Dots at (token, neuron) where a neuron fired. Shapes: spikes (T, N) in {0, 1}."""
    s = _np(spikes)
    if s.ndim != 2:
        raise ValueError(f"spike_raster needs (T, N) spikes, got shape {s.shape}")
    t, n = np.nonzero(s)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.scatter(t, n, s=2, marker="|", color="k")
    ax.set(xlabel="token position", ylabel="code neuron", title=f"{title} (rate {s.mean():.3f})",
           xlim=(-0.5, s.shape[0] - 0.5), ylim=(-0.5, s.shape[1] - 0.5))
    return _save(fig, path)


def attention_map(att, path, *, title: str = "attention") -> Path:
    """Heat map of attention weights (query rows, key columns). Shapes: att (T_q, T_k)."""
    a = _np(att)
    if a.ndim != 2:
        raise ValueError(f"attention_map needs (T_q, T_k) weights, got shape {a.shape}")
    fig, ax = plt.subplots(figsize=(4.5, 4))
    im = ax.imshow(a, cmap="viridis", interpolation="nearest", aspect="auto")
    fig.colorbar(im, ax=ax)
    density = (a > 0).sum() / max(1, a.shape[0] * (a.shape[0] + 1) // 2)
    ax.set(xlabel="key position", ylabel="query position", title=f"{title} (density {density:.3f} of causal)")
    return _save(fig, path)


_RATE_BARS = (("q_firing_rate", "query rate"), ("k_firing_rate", "key rate"), ("v_firing_rate", "value rate"),
              ("firing_rate", "output rate"), ("q_silent_frac", "silent q neurons"),
              ("silent_frac", "silent neurons"), ("attn_density", "attention density"))


def _fires(layer: dict) -> bool:
    return any(k.endswith("firing_rate") for k in layer)


def firing_rates(report: dict, path, *, title: str = "firing rate per layer") -> Path:
    """Bars of every firing rate, silent fraction and attention density of every spiking layer
    (attention layers report query/key rates, LIF output layers ``firing_rate``).

    ``report``: the output of :func:`spiking_attention.accounting.account_model`.
    """
    layers = [x for x in report["layers"] if _fires(x)]
    if not layers:
        raise ValueError("the report has no spiking layers (no stat named *firing_rate)")
    bars = [(k, lab) for k, lab in _RATE_BARS if any(k in L for L in layers)]
    x = np.arange(len(layers))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(layers) * len(bars) ** 0.5), 3.5))
    w = 0.8 / len(bars)
    for i, (key, lab) in enumerate(bars):
        # a layer without this stat gets no bar (NaN height draws nothing)
        ax.bar(x + (i - (len(bars) - 1) / 2) * w, [L.get(key, np.nan) for L in layers], w, label=lab)
    ax.set_xticks(x, [f"{i}:{L.get('type', '')[:10]}" for i, L in enumerate(layers)], rotation=60, fontsize=6)
    ax.set(ylim=(0, 1), ylabel="fraction", title=title)
    ax.legend(fontsize=7)
    return _save(fig, path)


@torch.no_grad()
def plot_model(model: torch.nn.Module, inputs, out_dir, *, prefix: str = "spiking", layer: int = 0,
               head: int = 0, forward=None, _report_out: list | None = None) -> dict[str, Path]:
    """One forward pass with recording on; write the raster and attention map of ``layer``/``head``
    and the firing rates of every layer. Returns {"raster", "attention", "rates"} -> path.
    """
    from .accounting import account_model

    mods = [m for _, m in reporting_layers(model)]
    if not mods:
        raise ValueError("the model has no layer that reports statistics (spiking_attention.stats protocol)")
    if not 0 <= layer < len(mods):
        raise ValueError(f"layer must be in [0, {len(mods)}), got {layer}")
    old = [m.record for m in mods]
    for m in mods:
        m.record = True
    try:
        report = account_model(model, inputs, forward=forward)
    finally:
        for m, r in zip(mods, old):
            m.record = r
    if _report_out is not None:
        _report_out.append(report)
    out_dir = Path(out_dir)
    rec = mods[layer].recorded()
    paths = {}
    if "q_spikes" in rec:
        paths["raster"] = spike_raster(rec["q_spikes"][0, head], out_dir / f"{prefix}_raster_L{layer}.png",
                                       title=f"query spikes, layer {layer} head {head}")
    if "attn" in rec:
        paths["attention"] = attention_map(rec["attn"][0, head], out_dir / f"{prefix}_attention_L{layer}.png",
                                           title=f"layer {layer} head {head}")
    if any(_fires(x) for x in report["layers"]):
        paths["rates"] = firing_rates(report, out_dir / f"{prefix}_firing_rates.png")
    return paths


def record_run(model: torch.nn.Module, inputs, out_dir, *, prefix: str = "spiking", layer: int = 0,
               head: int = 0, forward=None) -> tuple[dict, dict[str, Path]]:
    """The accounting JSON (``{prefix}_accounting.json``) and the three plots of one forward pass.

    For a training script to call after evaluation. Returns (report, {name: path}).
    Example: ``report, paths = record_run(lm, idx[:1], "runs/x", prefix="spiking_seed0")``.
    """
    from .accounting import write_report

    box: list = []
    paths = plot_model(model, inputs, out_dir, prefix=prefix, layer=layer, head=head, forward=forward,
                       _report_out=box)
    paths["accounting"] = write_report(Path(out_dir) / f"{prefix}_accounting.json", box[0])
    return box[0], paths


def ranked_edges(values, labels, sources, chosen, path, *, title: str = "edges of most energy per step",
                 value_name: str = "energy") -> Path:
    """Heat map of the best-ranked edges at each step of a sequence, each cell labelled by its target.

    Column i is step i (its source token ``sources[i]`` under the axis), row r the edge of rank r;
    the cell's colour is its ``value_name`` and its text the target token; a box marks the edge the
    sequence actually took (``chosen[i]``, None for the last step).
    Shapes: values (T, K) float, labels (T, K) str, sources (T,) str, chosen (T,) str or None.
    """
    v = _np(values)
    if v.ndim != 2 or np.shape(labels) != v.shape or len(sources) != v.shape[0] or len(chosen) != v.shape[0]:
        raise ValueError(f"ranked_edges needs values (T, K), labels (T, K), sources (T,), chosen (T,); got "
                         f"{v.shape}, {np.shape(labels)}, {len(sources)}, {len(chosen)}")
    T, K = v.shape
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * T), 0.45 * K + 1.6))
    im = ax.imshow(v.T, cmap="magma", aspect="auto", interpolation="nearest")
    fig.colorbar(im, ax=ax, label=value_name, fraction=0.025)
    for i in range(T):
        for r in range(K):
            lab = labels[i][r]
            ax.text(i, r, repr(lab)[1:-1], ha="center", va="center", fontsize=7,
                    color="white" if v[i, r] < (v.min() + v.max()) / 2 else "black")
            if chosen[i] is not None and lab == chosen[i]:
                ax.add_patch(plt.Rectangle((i - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="cyan", lw=1.5))
    ax.set_xticks(range(T), [repr(s)[1:-1] for s in sources], fontsize=7)
    ax.set_yticks(range(K), [f"#{r + 1}" for r in range(K)])
    ax.set(xlabel="source token at each step (edge u -> target)", ylabel="rank", title=title)
    return _save(fig, path)
