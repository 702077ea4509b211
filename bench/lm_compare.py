"""Character-level tiny-shakespeare: every registered model family in one comparison table.

The rows come from the family registry (:data:`models.FAMILIES`), not from this script:

- each variant a family lists in ``bench`` is a row ``family/variant`` (today ``gpt/dense``,
  ``gpt/topk``, ``gpt/window``);
- a family with ``select`` candidates (today ``spiking_kwta``: ``hamming``, ``overlap``) first
  trains each candidate, one seed, on the first 90% of the TRAIN split and scores it on the
  last 10% of it (never on validation); the candidate with the lower held-out nats/char
  becomes the row ``family/<chosen variant>``, and the JSON records the choice and every
  candidate's score. If a candidate run is missing, the first candidate is used and the JSON
  says so.

A family registered by another module joins with ``--import MODULE`` (repeatable); ``--families
a,b`` restricts the table. ``gpt/dense`` is the reference of the "vs dense" column when it is
in the table. Every row trains with the same tokens per seed, the same steps, optimizer and
schedule and 1 torch thread.

Presets: "main" is nanoGPT's CPU config at context 64 (2000 steps, 3 seeds); "select" the same
on held-out training text; "long" context 256, batch 8, 3,000 steps, 3 seeds, over each family's ``bench_long`` variants
(its ``bench`` rows if it names none) and its selected variant: for gpt the dense twin, a
window of 32 keys and the same window plus the 8 best far keys by float score; ``--jobs 2``
runs two at once; "quick" / "quick-select" a tiny shape (< 40 s in all). A preset's shape values apply to
every family whose Config has that field (a family without ``n_layer`` ignores ``n_layer``).

Every (preset, family, variant, seed) run lives in
``runs/lm_compare/<preset>/<family>/<variant>/seed<S>/`` (checkpoint + result.json), so an
interrupted sweep continues where it stopped; each run is a child process holding
``/tmp/hdspike-heavy.lock`` while it runs. ``--quick`` uses ``runs/lm_compare_quick/``, emptied
at the start of each quick sweep so its numbers always come from the current code.

    python bench/lm_compare.py                       # select + main sweep + long context, then report
    python bench/lm_compare.py --quick               # tiny preset (< 40 s), writes lm_compare_quick.json
    python bench/lm_compare.py --report-only         # table/JSON/plot from the finished runs
    python bench/lm_compare.py --quick --import my_pkg.my_family --families my_family
"""
from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import REPO, make_parser, parse_args, print_table, write_json  # noqa: E402
from hdc.provenance import repo_relative  # noqa: E402

LOCK = "/tmp/hdspike-heavy.lock"
DEFAULT_RUNS = REPO / "runs" / "lm_compare"
QUICK_RUNS = REPO / "runs" / "lm_compare_quick"
REFERENCE = ("gpt", "dense")   # the "vs dense" column's row, when it is in the table

# preset -> run settings. "model": shape values on top of each family's Config defaults
# (nanoGPT's CPU shape), applied to the families whose Config has the field.
_QUICK_SHAPE = {"block_size": 48, "n_layer": 2, "n_head": 2, "n_embd": 32,
                "code_bits": 16}   # = n_embd / n_head: spike codes as wide as a dense head (equal params)
PRESETS = {
    "main": {"iters": 2000, "batch_size": 12, "seeds": [0, 1, 2], "held_out": False, "model": {}},
    "select": {"iters": 2000, "batch_size": 12, "seeds": [0], "held_out": True, "model": {}},
    # long context: where content beyond a local window can matter (k = 8 of up to 256 keys);
    # 3,000 steps of 8 x 256 tokens (4x the main preset's tokens), 3 seeds
    "long": {"iters": 3000, "batch_size": 8, "seeds": [0, 1, 2], "held_out": False, "model": {"block_size": 256},
             "extra_seeds": []},
    "quick": {"iters": 25, "batch_size": 8, "seeds": [0], "held_out": False, "model": _QUICK_SHAPE},
    "quick-select": {"iters": 25, "batch_size": 8, "seeds": [0], "held_out": True, "model": _QUICK_SHAPE},
}
PHASES = ("main-bench", "select", "main-selected", "long", "long-extra")


# ----------------------------------------------------------------------------- the rows, from the registry

def import_families(modules: list[str]) -> None:
    """Import plug-in modules that register more families (``--import``)."""
    from models.train import import_plugins
    import_plugins(modules)


def table_families(only: list[str] | None = None) -> list[str]:
    """The families of the table: every registered one with a ``bench`` or ``select`` entry,
    in registry order, or exactly ``only`` (each must be registered)."""
    from models import FAMILIES
    if only:
        unknown = [f for f in only if f not in FAMILIES]
        if unknown:
            raise ValueError(f"--families names unknown families {unknown}; registered: {sorted(FAMILIES)} "
                             f"(a plug-in family needs --import MODULE)")
        return list(only)
    return [name for name, fam in FAMILIES.items() if fam.bench or fam.select]


def selection_runs(families: list[str], preset: str) -> list[tuple[str, str, int]]:
    """(family, variant, seed) of every candidate run of the families with ``select``."""
    from models import get_family
    seed = PRESETS[preset]["seeds"][0]
    return [(f, v, seed) for f in families for v in get_family(f).select]


def choose_variant(runs: Path, select_preset: str, family: str) -> dict:
    """The candidate of ``family`` with the lowest held-out TRAIN nats/char (first candidate if
    any run is missing), with every candidate's score: the JSON's ``selection[family]``."""
    from models import get_family
    candidates = list(get_family(family).select)
    seed = PRESETS[select_preset]["seeds"][0]
    scores = {}
    for v in candidates:
        r = _load(run_dir(runs, select_preset, family, v, seed))
        if r is not None:
            scores[v] = r["val_nats_per_char"]
    if len(scores) == len(candidates):
        chosen, how = min(candidates, key=scores.__getitem__), "lowest held-out-train nats/char"
    else:
        chosen, how = candidates[0], "first candidate (selection runs incomplete)"
    return {"candidates": candidates, "chosen": chosen, "how": how, "preset": select_preset, "seed": seed,
            "heldout_train_nats_per_char": scores}


def table_rows_spec(runs: Path, families: list[str], select_preset: str) -> tuple[list[tuple[str, str]], dict]:
    """The rows ``[(family, variant), ...]`` of the table and the selection record per family.

    Each family's ``bench`` variants in order, then its selected variant when it has ``select``.
    """
    from models import get_family
    rows, selection = [], {}
    for f in families:
        fam = get_family(f)
        rows += [(f, v) for v in fam.bench]
        if fam.select:
            selection[f] = choose_variant(runs, select_preset, f)
            if (f, selection[f]["chosen"]) not in rows:
                rows.append((f, selection[f]["chosen"]))
    return rows, selection


def long_rows(runs: Path, families: list[str], select_preset: str) -> list[tuple[str, str]]:
    """The long-context table: each family's ``bench_long`` variants (its main ``bench`` rows
    when it names none), then its selected variant. Long runs cost 4x a main run or more, so
    a family chooses which of its variants are worth them."""
    from models import get_family
    rows = []
    for f in families:
        fam = get_family(f)
        rows += [(f, v) for v in (fam.bench_long or fam.bench)]
        if fam.select:
            chosen = choose_variant(runs, select_preset, f)["chosen"]
            if (f, chosen) not in rows:
                rows.append((f, chosen))
    return rows


def label(family: str, variant: str) -> str:
    return f"{family}/{variant}"


# ----------------------------------------------------------------------------- running

def run_dir(runs: Path, preset: str, family: str, variant: str, seed: int) -> Path:
    return Path(runs) / preset / family / variant / f"seed{seed}"


def preset_overrides(family: str, preset: str) -> dict:
    """The preset's shape values that ``family``'s Config has (others do not apply to it)."""
    from models import get_family
    return get_family(family).applicable(PRESETS[preset]["model"])


def train_config(preset: str, seed: int):
    from models.train import TrainConfig
    p = PRESETS[preset]
    return TrainConfig(max_iters=p["iters"], batch_size=p["batch_size"], seed=seed, data_seed=1000 + seed,
                       threads=1, held_out=p["held_out"])


def run_one(runs: Path, preset: str, family: str, variant: str, seed: int, text: str | None = None) -> dict:
    """Train + evaluate one (preset, family, variant, seed) in this process (1 torch thread).

    ``text`` replaces tiny-shakespeare (the tests train on a small string)."""
    import torch
    from models.train import train_run
    torch.set_num_threads(1)
    return train_run(family, run_dir(runs, preset, family, variant, seed), train_config(preset, seed),
                     variant=variant, overrides=preset_overrides(family, preset),
                     progress=not preset.startswith("quick"), text=text)


def spawn(runs: Path, preset: str, family: str, variant: str, seed: int, imports: list[str], log,
          slot: int = 0, in_process: bool = False) -> bool:
    """Run one job in a child process holding heavy-lock slot ``slot`` for its own duration only
    (``in_process``: here, without the lock: the --quick runs with one job at a time)."""
    if (run_dir(runs, preset, family, variant, seed) / "result.json").exists():
        return True
    if in_process:
        # a quick run is a second of CPU: in this process, not a child that pays ~2 s to import torch
        run_one(runs, preset, family, variant, seed)
        return True
    cmd = [sys.executable, __file__, "--one", preset, family, variant, str(seed), "--runs", str(runs)]
    for m in imports:
        cmd += ["--import", m]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    name = f"{preset}/{family}/{variant}/seed{seed}"
    t0 = time.time()
    print(f"[{time.strftime('%H:%M:%S')}] start {name}", file=log, flush=True)
    with open(LOCK if slot == 0 else f"{LOCK}.{slot}", "a") as lockf:
        # each full run holds the shared heavy lock while it runs (released when the child is done);
        # the --quick runs are a few seconds of CPU each, below the lock's threshold
        if not preset.startswith("quick"):
            fcntl.flock(lockf, fcntl.LOCK_EX)
        t_lock = time.time()
        rc = subprocess.run(cmd, env=env, cwd=REPO).returncode
    print(f"[{time.strftime('%H:%M:%S')}] done {name} rc={rc} "
          f"(waited {t_lock - t0:.0f}s for the lock, ran {time.time() - t_lock:.0f}s)", file=log, flush=True)
    return rc == 0


def run_jobs(phases: list[str], runs: Path, families: list[str], quick: bool, imports: list[str], log,
             n_jobs: int = 1) -> None:
    """Run every job of ``phases``, ``n_jobs`` at a time. A phase starts when the one before it
    has finished (the selected rows need the selection runs' results)."""
    from concurrent.futures import ThreadPoolExecutor
    if n_jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {n_jobs}")
    slots = list(range(n_jobs))
    import threading
    free = threading.Semaphore(n_jobs)
    lock = threading.Lock()

    def one(job):
        with lock:
            slot = slots.pop()
        try:
            return spawn(runs, *job, imports, log, slot=slot, in_process=quick and n_jobs == 1)
        finally:
            with lock:
                slots.append(slot)
            free.release()

    for ph in phases:
        with ThreadPoolExecutor(n_jobs) as pool:
            for job in jobs_for([ph], runs, families, quick):
                free.acquire()
                pool.submit(one, job)


def jobs_for(phases: list[str], runs: Path, families: list[str], quick: bool):
    """Yield (preset, family, variant, seed) in phase order; the selected rows' jobs are made
    only when their phase comes, after the selection runs have finished."""
    main_p, sel_p = ("quick", "quick-select") if quick else ("main", "select")
    from models import get_family
    bench_rows = [(f, v) for f in families for v in get_family(f).bench]
    for ph in phases:
        if ph == "main-bench":
            # seed-major order, so an early stop still leaves every bench row with some seeds
            yield from ((main_p, f, v, s) for s in PRESETS[main_p]["seeds"] for f, v in bench_rows)
        elif ph == "select":
            yield from ((sel_p, f, v, s) for f, v, s in selection_runs(families, sel_p))
        elif ph == "main-selected":
            for f, v in _selected(runs, families, sel_p):
                yield from ((main_p, f, v, s) for s in PRESETS[main_p]["seeds"])
        elif ph == "long" and not quick:
            rows = long_rows(runs, families, sel_p)
            yield from (("long", f, v, s) for s in PRESETS["long"]["seeds"] for f, v in rows)
        elif ph == "long-extra" and not quick:
            rows = [r for r in [REFERENCE] if r[0] in families] + _selected(runs, families, sel_p)
            yield from (("long", f, v, s) for s in PRESETS["long"]["extra_seeds"] for f, v in rows)


def _selected(runs: Path, families: list[str], sel_p: str) -> list[tuple[str, str]]:
    from models import get_family
    return [(f, choose_variant(runs, sel_p, f)["chosen"]) for f in families if get_family(f).select]


def finished_seeds(runs: Path, preset: str, family: str, variant: str) -> list[int]:
    """Seeds with a result.json, in order (extra seeds included)."""
    d = Path(runs) / preset / family / variant
    return sorted(int(x.name[4:]) for x in d.glob("seed*") if (x / "result.json").exists()) if d.is_dir() else []


def _load(d: Path) -> dict | None:
    p = d / "result.json"
    return json.loads(p.read_text()) if p.exists() else None


# ----------------------------------------------------------------------------- summary and table

ACCOUNTING_CHUNKS = 8   # plots' forward pass: the first 8 context-length chunks of the eval split


def _eval_input(ckpt: dict, run_result: dict):
    import torch
    from models.train import prepare_data
    _, _, eval_ids = prepare_data(run_result["train_config"].get("held_out", False))
    T = ckpt["config"]["block_size"]
    n = min(ACCOUNTING_CHUNKS, (len(eval_ids) - 1) // T)
    return eval_ids[: n * T].view(n, T).to(torch.long)


def _mean_std(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _layer_summary(res: dict) -> dict:
    """Per-layer attention density and firing rates (every stat whose name mentions rate/silent)."""
    out = {"attn_density": [], "firing_rates": []}
    for s in res.get("layer_stats", []):
        out["attn_density"].append(s.get("attn_density", s.get("density")))
        out["firing_rates"].append({k: v for k, v in s.items() if "rate" in k or "silent" in k})
    return out


def summarise(runs: Path, preset: str, rows: list[tuple[str, str]]) -> dict:
    """``{"family/variant": summary}`` over the finished seeds of each row (rows without any are left out)."""
    out = {}
    for family, variant in rows:
        per_seed = {}
        for seed in finished_seeds(runs, preset, family, variant):
            d = run_dir(runs, preset, family, variant, seed)
            r = _load(d)
            ls = _layer_summary(r)
            per_seed[str(seed)] = {
                "run_dir": d,   # a Path: the results writer stores it relative to the repository
                "val_nats_per_char": r["val_nats_per_char"], "val_bits_per_char": r["val_bits_per_char"],
                "train_tokens_per_s": r["train_tokens_per_s"], "train_time_s": r["train_time_s"],
                "eval_time_s": r["eval_time_s"], "peak_rss_mb": r["peak_rss_mb"], "n_params": r["n_params"],
                "attn_density_per_layer": ls["attn_density"], "firing_rates_per_layer": ls["firing_rates"],
                "layer_stats": r.get("layer_stats"), "accounting": r.get("accounting"),
                "final_train_loss": r.get("final_train_loss"), "history": r.get("history"),
                "config": r["config"], "commit": r.get("commit"), "eval_chars": r["eval_chars"],
            }
        if not per_seed:
            continue
        seeds = list(per_seed.values())
        m, s = _mean_std([v["val_nats_per_char"] for v in seeds])
        dens = [statistics.fmean([d for d in v["attn_density_per_layer"] if d is not None])
                for v in seeds if any(d is not None for d in v["attn_density_per_layer"])]
        accs = [v["accounting"]["totals"] for v in seeds if v.get("accounting")]
        acc_mean = {}
        for key in ("mac_per_token", "sops_per_token", "mean_firing_rate"):
            xs = [a[key] for a in accs if a.get(key) is not None]
            acc_mean[key] = statistics.fmean(xs) if xs else None
        xs = [a["energy_estimate_pJ_per_token"]["fp32"] for a in accs if a.get("energy_estimate_pJ_per_token")]
        acc_mean["energy_estimate_pJ_per_token_fp32"] = statistics.fmean(xs) if xs else None
        out[label(family, variant)] = {
            "family": family, "variant": variant, "n_seeds": len(per_seed), "seeds": per_seed,
            "val_nats_per_char_mean": m, "val_nats_per_char_std": s,
            "val_bits_per_char_mean": m / math.log(2), "val_bits_per_char_std": s / math.log(2),
            "train_tokens_per_s_mean": _mean_std([v["train_tokens_per_s"] for v in seeds])[0],
            "train_time_s_mean": _mean_std([v["train_time_s"] for v in seeds])[0],
            "peak_rss_mb_max": max(v["peak_rss_mb"] for v in seeds),
            "n_params": seeds[0]["n_params"],
            "attn_density_mean": statistics.fmean(dens) if dens else None,
            "accounting_mean": acc_mean,
        }
    ref = out.get(label(*REFERENCE))
    for a in out.values():
        a["gap_to_dense_nats"] = None if ref is None else a["val_nats_per_char_mean"] - ref["val_nats_per_char_mean"]
    return out


COLUMNS = ["family", "seeds", "params", "nats/char", "bits/char", "vs dense", "density", "firing rate", "tok/s",
           "train s", "peak MB", "MAC/tok", "SOP/tok", "E est. pJ/tok"]


def table_rows(summary: dict) -> list[dict]:
    """One printable row per summary entry, under :data:`COLUMNS`."""
    rows = []
    for name, a in summary.items():
        acc = a["accounting_mean"]
        rows.append({
            # * : carried from an earlier sweep (--carry), see the JSON's carried_from
            "family": name + (" *" if "carried_from" in a else ""), "seeds": a["n_seeds"], "params": a["n_params"],
            "nats/char": f"{a['val_nats_per_char_mean']:.4f} +- {a['val_nats_per_char_std']:.4f}",
            "bits/char": f"{a['val_bits_per_char_mean']:.4f} +- {a['val_bits_per_char_std']:.4f}",
            "vs dense": _fmt_opt(a["gap_to_dense_nats"], "+.4f"),
            "density": _fmt_opt(a["attn_density_mean"], ".4f"),
            "firing rate": _fmt_opt(acc.get("mean_firing_rate"), ".3f"),
            "tok/s": f"{a['train_tokens_per_s_mean']:.0f}", "train s": f"{a['train_time_s_mean']:.0f}",
            "peak MB": f"{a['peak_rss_mb_max']:.0f}",
            "MAC/tok": _fmt_opt(acc.get("mac_per_token"), ".3g"),
            "SOP/tok": _fmt_opt(acc.get("sops_per_token"), ".3g"),
            "E est. pJ/tok": _fmt_opt(acc.get("energy_estimate_pJ_per_token_fp32"), ".3g"),
        })
    return rows


def _fmt_opt(v, spec: str) -> str:
    return "" if v is None else format(v, spec)


def _spiking(a: dict) -> bool:
    """A row whose layers report firing rates (the stats protocol), whatever its family."""
    return any(_rate_keys(s["firing_rates_per_layer"]) for s in a["seeds"].values())


def spike_plots(summary: dict, out_dir: Path, name: str) -> dict:
    """Raster, attention map (layer 0, head 0) and per-layer firing rates of the first seed of
    every spiking row: ``{"family/variant": {"raster": Path, ...}}``."""
    from models.train import load_model
    from spiking_attention.plots import plot_model
    out = {}
    for lab, a in summary.items():
        if not _spiking(a) or "carried_from" in a:   # a carried row's plots were drawn by its own sweep
            continue
        d = next(iter(a["seeds"].values()))["run_dir"]
        if not (d / "ckpt.pt").exists():
            continue
        model, _, ck = load_model(d / "ckpt.pt")
        x = _eval_input(ck, _load(d))[:1]
        out[lab] = plot_model(model, x, out_dir, prefix=f"{name}_{a['family']}_{a['variant']}")
    return out


def _first_seed_models(summary: dict):
    """(label, row, model, tokenizer, checkpoint, run dir) of the first seed of every row made by
    this sweep (a carried row's checkpoints belong to its own sweep)."""
    from models.train import load_model
    for lab, a in summary.items():
        if "carried_from" in a:
            continue
        d = next(iter(a["seeds"].values()))["run_dir"]
        if (d / "ckpt.pt").exists():
            yield (lab, a, *load_model(d / "ckpt.pt"), d)


def spike_reports(summary: dict) -> dict:
    """``model.spike_report(x)`` of the first seed of every row whose model offers one (spike-count
    coding: sparsity, spikes per channel, count histogram, packed memory), on the plots' input."""
    return {lab: {"input": f"first {ACCOUNTING_CHUNKS} validation chunks",
                  **model.spike_report(_eval_input(ck, _load(d)))}
            for lab, _, model, _, ck, d in _first_seed_models(summary) if hasattr(model, "spike_report")}


#: what the k-WTA layers' selection did, per layer (mean over seeds): the tie rule's share of
#: the cuts, and for the brain prior the content-chosen far winners' share and reach
SELECTION_STATS = ("tie_at_cut_frac", "far_winner_frac", "far_reach_mean", "far_reach_max")


def selection_reports(table: dict) -> dict:
    """``{row: {stat: [per-layer mean over seeds]}}`` of :data:`SELECTION_STATS`, for the rows
    whose layers report them."""
    out = {}
    for lab, a in table.items():
        seeds = [s.get("layer_stats") or [] for s in a["seeds"].values()]
        rep = {}
        for key in SELECTION_STATS:
            per_layer = [[st[key] for st in layers if key in st] for layers in seeds]
            if per_layer and all(per_layer) and len({len(x) for x in per_layer}) == 1:
                rep[key] = [statistics.fmean(v) for v in zip(*per_layer)]
        if rep:
            out[lab] = rep
    return out


def explanations(summary: dict, out_dir: Path, name: str, n_new: int = 48) -> dict:
    """``model.explain(idx, decode, path)`` of the first seed of every row whose model offers one
    (SiFu: the edges that carried the most energy at each step), on a text the model generates
    from "ROMEO:" (fixed sampling seed)."""
    import torch
    out = {}
    for lab, a, model, tok, _, _ in _first_seed_models(summary):
        if not hasattr(model, "explain"):
            continue
        prompt = torch.tensor([tok.encode("ROMEO:").tolist()], dtype=torch.long)
        idx = model.generate(prompt, n_new, generator=torch.Generator().manual_seed(0))
        path = out_dir / f"{name}_{a['family']}_{a['variant']}_explain.png"
        out[lab] = {"text": tok.decode(idx[0].tolist()), "plot": model.explain(idx, tok.decode, path)}
    return out


def plot(summary: dict, long_summary: dict, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hdc.io import save_figure
    fig, axes = plt.subplots(1, 3, figsize=(20, 0.3 * len(summary) + 4.5),
                             gridspec_kw={"width_ratios": [1.1, 1, 1]})
    names = list(summary)
    first = {n: next(iter(summary[n]["seeds"].values())) for n in names}
    ax = axes[0]
    means = [summary[n]["val_nats_per_char_mean"] for n in names]
    stds = [summary[n]["val_nats_per_char_std"] for n in names]
    # horizontal bars: a dozen family/variant names stay readable
    ax.barh(names, means, xerr=stds, capsize=3, color=["tab:gray" if "carried_from" in summary[n] else "tab:blue"
                                                       for n in names])
    for i, n in enumerate(names):
        for s in summary[n]["seeds"].values():
            ax.plot(s["val_nats_per_char"], i, "k.", ms=5)
    ax.set_xlim(min(means) - 0.1, max(means) + 0.1)
    ax.invert_yaxis()
    ax.set_xlabel("validation nats/char (full split; gray: carried from an earlier sweep)")
    ax.set_title(title)
    ax = axes[1]
    for n in names:
        h = first[n].get("history") or []
        # markers: a quick run logs only a step or two
        ax.plot([x["step"] for x in h], [x["loss"] for x in h], label=n, lw=1, marker=".", ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("train loss (one batch, first seed)")
    lows = [x["loss"] for n in names for x in (first[n].get("history") or [])]
    if lows and min(lows) < 3.0:
        ax.set_ylim(top=3.5)   # the first steps (~4.2 nats) would squash the part that matters
    ax.legend(fontsize=7)
    ax.set_title("training curves")
    ax = axes[2]
    plotted = False
    for n in names:
        for key in _rate_keys(first[n]["firing_rates_per_layer"]):
            ys = [r.get(key) for r in first[n]["firing_rates_per_layer"]]
            ax.plot(range(len(ys)), ys, "o-", label=f"{n}: {key}")
            plotted = True
        dens = first[n]["attn_density_per_layer"]
        if any(d is not None for d in dens):
            ax.plot(range(len(dens)), dens, "s--", label=f"{n}: attention density")
            plotted = True
    ax.set_xlabel("layer")
    ax.set_xticks(range(max(len(first[n]["attn_density_per_layer"]) for n in names)))
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("rate / density")
    ax.set_title("per-layer firing rate and attention density (first seed)")
    if plotted:
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if long_summary:
        txt = f"long context ({PRESETS['long']['model']['block_size']}): " + ", ".join(
            f"{n} {v['val_nats_per_char_mean']:.3f}" for n, v in long_summary.items())
        fig.text(0.01, 0.01, txt, fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    save_figure(fig, path)
    plt.close(fig)


def _rate_keys(rates_per_layer: list[dict]) -> list[str]:
    keys = []
    for r in rates_per_layer:
        for k in r:
            if k.endswith("firing_rate") and k not in keys:
                keys.append(k)
    return keys


# the issues' targets: (row, reference row, largest allowed gap row - reference in nats/char);
# a family name stands for its selected row
@dataclass(frozen=True)
class Target:
    """One target of the issues, checked on the table. ``row`` and ``ref`` are "family/variant"
    labels, or a bare family meaning its selected variant. ``measure``: ``"gap"`` (row minus ref,
    mean nats/char, must be <= limit; a negative limit asks the row to be better by that much),
    ``"tie_at_cut"`` (share of k-WTA cuts decided by the tie rule: the worst layer, mean over
    seeds) or ``"firing"`` (the highest Q/K code firing rate of any layer, mean over seeds), both
    <= limit. ``table``: ``"main"`` (context 64) or ``"long"`` (context 256)."""

    row: str
    measure: str
    limit: float
    ref: str | None = None
    table: str = "main"


TARGETS = [
    Target("spiking_kwta", "gap", 0.0, "gpt/dense"),          # no worse than the dense twin
    Target("gpt/topk", "gap", 0.02, "gpt/dense"),
    Target("spiking_kwta", "tie_at_cut", 0.10),                # the chosen configuration's ties
    Target("spiking_kwta/sparse", "firing", 0.10),
    Target("spiking_kwta/sparse", "gap", 0.03, "spiking_kwta"),
    Target("spiking_kwta/sparse_graded", "firing", 0.10),
    Target("spiking_kwta/sparse_graded", "gap", 0.03, "spiking_kwta"),
    Target("spiking_rwkv/spikegpt", "gap", 0.10, "gpt/dense"),
    Target("hybrid/alternate", "gap", 0.10, "gpt/dense"),
    Target("nord/lif", "gap", 0.20, "gpt/dense"),
    Target("sifu/d32", "gap", -0.30, "bigram/table"),
    # context 256: content-chosen far keys must beat the window they add to
    Target("spiking_kwta/brain_prior", "gap", -0.02, "gpt/window32", "long"),
    Target("spiking_kwta/brain_prior_graded", "gap", -0.02, "gpt/window32", "long"),
    Target("spiking_kwta/brain_prior_graded", "gap", 0.03, "gpt/window32", "long"),
    Target("spiking_kwta", "gap", 0.03, "gpt/window32", "long"),
]


def _worst_layer(row: dict, keys: tuple[str, ...]) -> float | None:
    """Mean over seeds of the largest of ``keys`` over a row's layers (None: no layer has them)."""
    per_seed = []
    for s in row["seeds"].values():
        xs = [st[k] for st in (s.get("layer_stats") or []) for k in keys if st.get(k) is not None]
        if xs:
            per_seed.append(max(xs))
    return statistics.fmean(per_seed) if per_seed else None


def check_targets(summary: dict, selection: dict, long_summary: dict | None = None) -> list[dict]:
    """Each target of :data:`TARGETS` whose rows are in their table, with its value and whether it is met."""
    def resolve(name):
        return name if name is None or "/" in name else label(name, selection.get(name, {}).get("chosen", ""))

    out = []
    for t in TARGETS:
        table = summary if t.table == "main" else (long_summary or {})
        row, ref = resolve(t.row), resolve(t.ref)
        if row not in table or (ref is not None and ref not in table):
            continue
        if t.measure == "gap":
            value = table[row]["val_nats_per_char_mean"] - table[ref]["val_nats_per_char_mean"]
        else:
            value = _worst_layer(table[row], ("tie_at_cut_frac",) if t.measure == "tie_at_cut"
                                 else ("q_firing_rate", "k_firing_rate"))
            if value is None:
                continue
        out.append({"row": row, "measure": t.measure, "reference": ref, "table": t.table, "limit": t.limit,
                    "value": value, "met": value <= t.limit,
                    # the names of the earlier JSON, kept for gap targets
                    **({"max_gap_nats": t.limit, "gap_nats": value} if t.measure == "gap" else {})})
    return out


def describe_target(t: dict) -> str:
    what = (f"{t['row']} - {t['reference']}" if t["measure"] == "gap" else f"{t['row']} {t['measure']}")
    return (f"target [{t['table']}] {what} <= {t['limit']:+.2f}: {t['value']:+.4f} "
            f"({'met' if t['met'] else 'MISSED'})")


def carry_rows(path: Path, summary: dict, long_summary: dict, selection: dict) -> dict:
    """Add to ``summary``/``long_summary`` (in place) the rows of an earlier results JSON that this
    sweep did not produce, each marked ``carried_from`` with the commit and time that made it.

    A sweep of every family is hours of CPU on the 2-core machine; carrying lets one family's
    rows be recomputed without dropping the others from the one table. Only rows made under the
    same presets are carried (anything else raises), and rows recomputed here always win. The
    gap to dense of a carried row is recomputed against this sweep's reference when there is
    one: that is fair only because runs are deterministic (same seeds, one thread), which
    re-running the reference checks: compare its numbers with the carried file's.
    """
    prev = json.loads(Path(path).read_text())
    for key in ("main", "select", "long"):
        if prev.get("presets", {}).get(key) != json.loads(json.dumps(PRESETS[key])):
            raise ValueError(f"--carry {path}: its preset {key!r} is {prev.get('presets', {}).get(key)}, "
                             f"not this code's {PRESETS[key]}; rows made under other settings are not comparable")
    stamp = {"commit": prev["meta"]["commit"], "time_utc": prev["meta"]["time_utc"]}
    out = {"from": repo_relative(Path(path)), **stamp, "rows": [], "long_context": [], "spike_plots": {}}
    for target, source, key in ((summary, prev.get("rows", {}), "rows"),
                                (long_summary, prev.get("long_context", {}), "long_context")):
        for lab, row in source.items():
            if lab not in target:
                target[lab] = {**row, "carried_from": row.get("carried_from", stamp)}
                out[key].append(lab)
        ref = target.get(label(*REFERENCE))
        for a in target.values():
            a["gap_to_dense_nats"] = (None if ref is None
                                      else a["val_nats_per_char_mean"] - ref["val_nats_per_char_mean"])
    for fam, sel in prev.get("selection", {}).items():
        # this sweep's record wins only when it ran the selection (it has scores)
        if not selection.get(fam, {}).get("heldout_train_nats_per_char"):
            selection[fam] = {**sel, "carried_from": sel.get("carried_from", stamp)}
    out["spike_plots"] = {lab: v for lab, v in prev.get("spike_plots", {}).items() if lab in out["rows"]}
    return out


def report(args, runs: Path, families: list[str]) -> dict:
    """Print the table(s) and write the JSON and the plots from the finished runs."""
    from models import get_family
    quick = args.quick
    main_p, sel_p = ("quick", "quick-select") if quick else ("main", "select")
    rows, selection = table_rows_spec(runs, families, sel_p)
    summary = summarise(runs, main_p, rows)
    long_summary = {} if quick else summarise(runs, "long", long_rows(runs, families, sel_p))
    carry = getattr(args, "carry", None)
    carried = carry_rows(carry, summary, long_summary, selection) if carry else {}
    print("\n== tiny-shakespeare, full validation split ==")
    print_table(table_rows(summary), COLUMNS)
    for name, a in summary.items():
        if _spiking(a):
            seed, s0 = next(iter(a["seeds"].items()))
            print(f"{name} per-layer firing rates (seed {seed}):", json.dumps(s0["firing_rates_per_layer"]))
    if long_summary:
        print(f"\n== long context (block {PRESETS['long']['model']['block_size']}; settings in JSON "
              f"'presets.long') ==")
        print_table(table_rows(long_summary), COLUMNS)
    for f, sel in selection.items():
        print(f"{f} selection:", json.dumps(sel))
    targets = check_targets(summary, selection, long_summary)
    for t in targets:
        print(describe_target(t))
    print("E est. = energy ESTIMATE per token (FP32 preset, 45 nm per-operation figures; "
          "spiking_attention.accounting), not a measurement")
    name = "lm_compare_quick" if quick else "lm_compare"
    out_dir = Path(args.out)
    payload = {
        "description": "char-level tiny-shakespeare, first 90% train / last 10% validation, full validation "
                       "split in non-overlapping context chunks; same tokens per seed (data_seed 1000+seed), "
                       "AdamW 1e-3->1e-4 cosine, warm-up 100, wd 0.1, clip 1.0, 1 torch thread per run",
        "presets": {k: PRESETS[k] for k in ((main_p, sel_p) if quick else ("main", "select", "long"))},
        "families": {f: {"description": get_family(f).description, "variants": get_family(f).variants,
                         "bench": list(get_family(f).bench), "select": list(get_family(f).select)}
                     for f in dict.fromkeys([*families, *(a["family"] for a in (*summary.values(),
                                                                                  *long_summary.values()))])},
        "imports": list(args.imports),
        "reference": label(*REFERENCE) if label(*REFERENCE) in summary else None,
        "selection": selection,
        "rows": summary,
        "long_context": long_summary,
        "targets": targets,
        "runs_dir": Path(runs),
        "carried": carried,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    payload["spike_plots"] = {**carried.get("spike_plots", {}), **spike_plots(summary, out_dir, name)}
    payload["spike_reports"] = spike_reports(summary)
    payload["selection_reports"] = {"main": selection_reports(summary), "long": selection_reports(long_summary)}
    for table, reps in payload["selection_reports"].items():
        for lab, rep in reps.items():
            print(f"[{table}] {lab} per layer: " + "; ".join(
                f"{k} " + " ".join(f"{x:.3g}" for x in v) for k, v in rep.items()))
    payload["explanations"] = explanations(summary, out_dir, name)
    for lab, rep in payload["spike_reports"].items():
        t = rep["total"]
        print(f"{lab} spike coding: {t['spike_sparsity']:.3f} of counts zero, "
              + ", ".join(f"{k} {v / 1024:.0f} KiB" for k, v in t.items() if k.endswith("_bytes")))
    png = out_dir / f"{name}.png"
    if summary:
        pm = PRESETS[main_p]
        ctx = pm["model"].get("block_size", 64)
        plot(summary, long_summary, png, f"tiny-shakespeare, ctx {ctx}, {pm['iters']} steps, "
                                         f"{len(pm['seeds'])} seeds (mean +- std)")
        payload["plot"] = png
    path = write_json(out_dir, name, payload, allow_dirty=args.allow_dirty)
    print(f"wrote {path}" + (f" and {png}" if summary else " (no finished runs: no plot)"))
    return payload


def main(argv=None) -> int:
    p = make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import a module that registers more families (repeatable)")
    p.add_argument("--families", default=None,
                   help="comma list of families for the table (default: every registered family "
                        "with bench or select variants)")
    p.add_argument("--runs", type=Path, default=None,
                   help="runs directory, the cache of finished runs (default runs/lm_compare; "
                        "--quick: runs/lm_compare_quick, emptied at the start of each quick sweep)")
    p.add_argument("--one", nargs=4, metavar=("PRESET", "FAMILY", "VARIANT", "SEED"), help=argparse.SUPPRESS)
    p.add_argument("--report-only", action="store_true", help="table, JSON and plots from the finished runs")
    p.add_argument("--phases", default=",".join(PHASES),
                   help=f"comma list of phases to run, in order (default: all of {','.join(PHASES)})")
    p.add_argument("--log", type=Path, default=None, help="progress log (default: stderr)")
    p.add_argument("--carry", type=Path, default=None,
                   help="earlier results JSON whose rows this sweep does not recompute stay in the table, "
                        "marked with the commit that made them")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at once, each one child with 1 torch thread holding its own lock slot")
    if argv is None:
        argv = sys.argv[1:]
    # a child (--one) writes a run's result.json, not results: the parent checked the tree
    a = p.parse_args(argv) if "--one" in argv else parse_args(p, argv)
    import_families(a.imports)
    if a.one:
        preset, family, variant, seed = a.one
        res = run_one(a.runs, preset, family, variant, int(seed))
        print(json.dumps({k: res[k] for k in ("family", "variant", "seed", "split", "val_nats_per_char",
                                              "train_time_s")}))
        return 0
    try:
        families = table_families([f for f in a.families.split(",") if f] if a.families else None)
    except ValueError as exc:
        p.error(str(exc))
    bad = [ph for ph in a.phases.split(",") if ph not in PHASES]
    if bad:
        p.error(f"--phases names unknown phases {bad}; choose from {list(PHASES)}")
    runs = a.runs
    if runs is None:
        runs = QUICK_RUNS if a.quick else DEFAULT_RUNS
        if a.quick and not a.report_only:
            shutil.rmtree(QUICK_RUNS, ignore_errors=True)   # scratch: quick numbers come from this code
    log = open(a.log, "a") if a.log else sys.stderr
    if not a.report_only:
        run_jobs(a.phases.split(","), runs, families, a.quick, a.imports, log, a.jobs)
    report(a, runs, families)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
