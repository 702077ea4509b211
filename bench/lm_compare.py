"""Character-level tiny-shakespeare: spiking k-WTA attention against its dense twin and two controls.

Arms (same tokens per seed, same steps, optimizer, schedule and 1 torch thread each):
  dense    nanoGPT's causal softmax attention (the twin)
  topk     Explicit Sparse Transformer top-k softmax, k = 8 (non-spiking ablation)
  window   softmax over the 8 most recent keys (recency control, same density as k = 8)
  spiking  SpikingTransformerLM: binary Q/K codes of 32 bits per head, k-WTA k = 8

The spiking configuration is chosen, before the main runs, between two configurations named in
advance ("spiking": bipolar Hamming score, the default; "spiking-overlap": popcount-of-AND
score), by one seed trained on the first 90% of the TRAIN split and scored on its last 10%
(never on validation). If the choice could not be made, the default is used and the JSON says so.

Long context (preset "long"): context 512, batch 4, 600 steps (1.2M training tokens, about the
main preset's 1.5M), one seed for every arm; then ("long-extra", only if the time budget allows)
a second seed for dense and spiking. The main preset is nanoGPT's CPU config at context 64.

Every (preset, arm, seed) run lives in ``runs/lm_compare/<preset>/<arm>/seed<S>/`` (checkpoint +
result.json), so an interrupted sweep continues where it stopped, and each run is a separate
process that holds ``/tmp/hdspike-heavy.lock`` only while it runs.

    python bench/lm_compare.py                       # select + main sweep + long context, then report
    python bench/lm_compare.py --quick               # tiny preset (< 40 s), writes lm_compare_quick.json
    python bench/lm_compare.py --report-only         # table/JSON/plot from the finished runs
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import REPO, make_parser, print_table, write_json  # noqa: E402

LOCK = "/tmp/hdspike-heavy.lock"
DEFAULT_RUNS = REPO / "runs" / "lm_compare"
SPIKING_CANDIDATES = ("spiking", "spiking-overlap")   # named in advance; "spiking" is the default

# preset -> run settings. "model" overrides the base nanoGPT CPU config of spiking_attention.train.
PRESETS = {
    "main": {"iters": 2000, "batch_size": 12, "seeds": [0, 1, 2], "held_out": False, "model": {}},
    "select": {"iters": 2000, "batch_size": 12, "seeds": [0], "held_out": True, "model": {}},
    # long context: where sparsity matters (k = 8 of up to 512 allowed keys); fewer steps and seeds
    # ("long-extra" phase, last and only if time allows: a second seed for dense and spiking)
    "long": {"iters": 600, "batch_size": 4, "seeds": [0], "held_out": False, "model": {"block_size": 512},
             "extra_seeds": [1], "extra_arms": ["dense", "<chosen>"]},
    "quick": {"iters": 25, "batch_size": 8, "seeds": [0], "held_out": False,
              "model": {"block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32}},
    "quick-select": {"iters": 25, "batch_size": 8, "seeds": [0], "held_out": True,
                     "model": {"block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32}},
}
CONTROL_ARMS = ("dense", "topk", "window")


def _code_bits(preset: str) -> dict:
    """Q/K code width per head = the dense head size, so the parameter counts match."""
    m = {"n_embd": 128, "n_head": 4, **PRESETS[preset]["model"]}
    return {"code_bits": m["n_embd"] // m["n_head"]}


def run_dir(runs: Path, preset: str, arm: str, seed: int) -> Path:
    return runs / preset / arm / f"seed{seed}"


def run_one(runs: Path, preset: str, arm: str, seed: int) -> dict:
    """Train + evaluate one (preset, arm, seed) in this process (1 thread)."""
    import torch
    from spiking_attention.train import TrainConfig, train_run
    torch.set_num_threads(1)
    p = PRESETS[preset]
    overrides = dict(p["model"])
    if arm.startswith("spiking"):
        overrides.update(_code_bits(preset))
    cfg = TrainConfig(max_iters=p["iters"], batch_size=p["batch_size"], seed=seed, data_seed=1000 + seed,
                      threads=1, held_out=p["held_out"])
    return train_run(arm, run_dir(runs, preset, arm, seed), cfg, model_overrides=overrides,
                     progress=not preset.startswith("quick"))


def spawn(runs: Path, preset: str, arm: str, seed: int, log) -> bool:
    """Run one job in a child process holding the heavy lock for its own duration only."""
    if (run_dir(runs, preset, arm, seed) / "result.json").exists():
        return True
    cmd = [sys.executable, __file__, "--one", preset, arm, str(seed), "--runs", str(runs)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.time()
    print(f"[{time.strftime('%H:%M:%S')}] start {preset}/{arm}/seed{seed}", file=log, flush=True)
    with open(LOCK, "a") as lockf:
        # each full run holds the shared heavy lock while it runs (released when the child is done);
        # the --quick runs are a few seconds of CPU each, below the lock's threshold
        if not preset.startswith("quick"):
            fcntl.flock(lockf, fcntl.LOCK_EX)
        t_lock = time.time()
        rc = subprocess.run(cmd, env=env, cwd=REPO).returncode
    print(f"[{time.strftime('%H:%M:%S')}] done {preset}/{arm}/seed{seed} rc={rc} "
          f"(waited {t_lock - t0:.0f}s for the lock, ran {time.time() - t_lock:.0f}s)", file=log, flush=True)
    return rc == 0


def choose_spiking(runs: Path, select_preset: str) -> dict:
    """Pick the spiking config with the lower held-out TRAIN loss; the default if none finished."""
    scores = {}
    for arm in SPIKING_CANDIDATES:
        r = _load(run_dir(runs, select_preset, arm, PRESETS[select_preset]["seeds"][0]))
        if r is not None:
            scores[arm] = r["val_nats_per_char"]
    if len(scores) == len(SPIKING_CANDIDATES):
        chosen, how = min(scores, key=scores.get), "lower held-out-train nats/char"
    else:
        chosen, how = SPIKING_CANDIDATES[0], "default (selection runs incomplete)"
    return {"chosen": chosen, "how": how, "heldout_train_nats_per_char": scores,
            "candidates": list(SPIKING_CANDIDATES)}


def finished_seeds(runs: Path, preset: str, arm: str) -> list[int]:
    """Seeds with a result.json for (preset, arm), in order (extra seeds included)."""
    d = runs / preset / arm
    return sorted(int(x.name[4:]) for x in d.glob("seed*") if (x / "result.json").exists()) if d.is_dir() else []


def _load(d: Path) -> dict | None:
    p = d / "result.json"
    return json.loads(p.read_text()) if p.exists() else None


def spiking_available() -> bool:
    try:
        from spiking_attention.attention import SpikingKWTAAttention  # noqa: F401
        return True
    except ImportError:
        return False


# ----------------------------------------------------------------------------- reporting

ACCOUNTING_CHUNKS = 8   # accounting forward pass: the first 8 context-length chunks of the eval split


def _accounting_input(ckpt: dict):
    import torch
    from spiking_attention.train import prepare_data
    held_out = ckpt.get("train_config", {}).get("held_out", False)
    _, _, eval_ids = prepare_data(held_out)
    T = ckpt["model_config"]["block_size"]
    n = min(ACCOUNTING_CHUNKS, (len(eval_ids) - 1) // T)
    return eval_ids[: n * T].view(n, T).to(torch.long)


def posthoc_accounting(d: Path) -> dict | None:
    """The components' accounting (firing rates, density, SOPs, energy ESTIMATE) of a finished run.

    Computed from the run's checkpoint on a fixed slice of its eval split and cached in
    ``accounting.json`` beside ``result.json`` (runs that predate the accounting module lack it).
    """
    cache = d / "accounting.json"
    if cache.exists():
        return json.loads(cache.read_text())
    if not (d / "ckpt.pt").exists():
        return None
    try:
        import torch
        from spiking_attention.accounting import account_model
        from spiking_attention.train import _write_json, load_model
    except ImportError:
        return None
    torch.set_num_threads(1)
    model, _, ck = load_model(d / "ckpt.pt")
    rep = account_model(model, _accounting_input(ck))
    rep.pop("linear", None)   # per-Linear detail: large and the same for every arm
    rep["input"] = f"first {ACCOUNTING_CHUNKS} context chunks of the eval split"
    _write_json(cache, rep)
    return rep


def spiking_plots(d: Path, out_dir: Path, prefix: str) -> dict:
    """Spike raster, attention map (layer 0, head 0) and per-layer firing rates of a trained run."""
    try:
        from spiking_attention.plots import plot_model
        from spiking_attention.train import load_model
    except ImportError:
        return {}
    model, _, ck = load_model(d / "ckpt.pt")
    return {k: str(v) for k, v in plot_model(model, _accounting_input(ck)[:1], out_dir, prefix=prefix).items()}


def _mean_std(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _layer_summary(res: dict) -> dict:
    """Per-layer attention density and firing rates (every stat whose name mentions rate/density)."""
    out = {"attn_density": [], "firing_rates": []}
    for s in res.get("layer_stats", []):
        out["attn_density"].append(s.get("attn_density", s.get("density")))
        rates = {k: v for k, v in s.items() if "rate" in k or "silent" in k}
        out["firing_rates"].append(rates)
    return out


def summarise(runs: Path, preset: str, arms: list[str], arm_labels: dict[str, str]) -> dict:
    out = {}
    for arm in arms:
        per_seed = {}
        for seed in finished_seeds(runs, preset, arm):
            r = _load(run_dir(runs, preset, arm, seed))
            if r is None:
                continue
            ls = _layer_summary(r)
            acc = r.get("accounting") or posthoc_accounting(run_dir(runs, preset, arm, seed))
            per_seed[str(seed)] = {
                "val_nats_per_char": r["val_nats_per_char"], "val_bits_per_char": r["val_bits_per_char"],
                "train_tokens_per_s": r["train_tokens_per_s"], "train_time_s": r["train_time_s"],
                "eval_time_s": r["eval_time_s"], "peak_rss_mb": r["peak_rss_mb"], "n_params": r["n_params"],
                "attn_density_per_layer": ls["attn_density"], "firing_rates_per_layer": ls["firing_rates"],
                "layer_stats": r.get("layer_stats"), "accounting": acc,
                "final_train_loss": r.get("final_train_loss"), "history": r.get("history"),
                "model_config": r["model_config"], "commit": r.get("commit"), "eval_chars": r["eval_chars"],
            }
        if not per_seed:
            continue
        vals = [v["val_nats_per_char"] for v in per_seed.values()]
        m, s = _mean_std(vals)
        dens = [statistics.fmean([d for d in v["attn_density_per_layer"] if d is not None])
                for v in per_seed.values() if any(d is not None for d in v["attn_density_per_layer"])]
        accs = [v["accounting"]["totals"] for v in per_seed.values() if v.get("accounting")]
        acc_mean = {}
        for key in ("mac_per_token", "sops_per_token", "mean_firing_rate"):
            xs = [a[key] for a in accs if a.get(key) is not None]
            acc_mean[key] = statistics.fmean(xs) if xs else None
        xs = [a["energy_estimate_pJ_per_token"]["fp32"] for a in accs]
        acc_mean["energy_estimate_pJ_per_token_fp32"] = statistics.fmean(xs) if xs else None
        out[arm_labels.get(arm, arm)] = {
            "accounting_mean": acc_mean,
            "run_arm": arm, "n_seeds": len(per_seed), "seeds": per_seed,
            "val_nats_per_char_mean": m, "val_nats_per_char_std": s,
            "val_bits_per_char_mean": m / math.log(2), "val_bits_per_char_std": s / math.log(2),
            "train_tokens_per_s_mean": _mean_std([v["train_tokens_per_s"] for v in per_seed.values()])[0],
            "train_time_s_mean": _mean_std([v["train_time_s"] for v in per_seed.values()])[0],
            "peak_rss_mb_max": max(v["peak_rss_mb"] for v in per_seed.values()),
            "n_params": next(iter(per_seed.values()))["n_params"],
            "attn_density_mean": statistics.fmean(dens) if dens else None,
        }
    if "dense" in out:
        d = out["dense"]["val_nats_per_char_mean"]
        for a in out.values():
            a["gap_to_dense_nats"] = a["val_nats_per_char_mean"] - d
    return out


def table_rows(summary: dict) -> list[dict]:
    rows = []
    for arm, a in summary.items():
        rows.append({
            "arm": arm, "seeds": a["n_seeds"], "params": a["n_params"],
            "nats/char": f"{a['val_nats_per_char_mean']:.4f} +- {a['val_nats_per_char_std']:.4f}",
            "bits/char": f"{a['val_bits_per_char_mean']:.4f} +- {a['val_bits_per_char_std']:.4f}",
            "vs dense": f"{a.get('gap_to_dense_nats', float('nan')):+.4f}",
            "density": "" if a["attn_density_mean"] is None else f"{a['attn_density_mean']:.4f}",
            "tok/s": f"{a['train_tokens_per_s_mean']:.0f}", "train s": f"{a['train_time_s_mean']:.0f}",
            "peak MB": f"{a['peak_rss_mb_max']:.0f}",
            "q/k rate": _fmt_opt(a["accounting_mean"].get("mean_firing_rate"), ".3f"),
            "MAC/tok": _fmt_opt(a["accounting_mean"].get("mac_per_token"), ".3g"),
            "SOP/tok": _fmt_opt(a["accounting_mean"].get("sops_per_token"), ".3g"),
            "E est. pJ/tok": _fmt_opt(a["accounting_mean"].get("energy_estimate_pJ_per_token_fp32"), ".3g"),
        })
    return rows


def _fmt_opt(v, spec: str) -> str:
    return "" if v is None else format(v, spec)


COLUMNS = ["arm", "seeds", "params", "nats/char", "bits/char", "vs dense", "density", "q/k rate", "tok/s",
           "train s", "peak MB", "MAC/tok", "SOP/tok", "E est. pJ/tok"]


def plot(summary: dict, long_summary: dict, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    arms = list(summary)
    ax = axes[0]
    means = [summary[a]["val_nats_per_char_mean"] for a in arms]
    stds = [summary[a]["val_nats_per_char_std"] for a in arms]
    ax.bar(arms, means, yerr=stds, capsize=4, color="tab:blue")
    for a in arms:
        for s in summary[a]["seeds"].values():
            ax.plot(arms.index(a), s["val_nats_per_char"], "k.", ms=5)
    lo = min(means) - 0.1 if means else 0
    ax.set_ylim(lo, max(means) + 0.1 if means else 1)
    ax.set_ylabel("validation nats/char (full split)")
    ax.set_title(title)
    ax = axes[1]
    for a in arms:
        s0 = next(iter(summary[a]["seeds"].values()))
        h = s0.get("history") or []
        ax.plot([x["step"] for x in h], [x["loss"] for x in h], label=a, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("train loss (one batch, first seed)")
    lows = [x["loss"] for a in arms for x in (next(iter(summary[a]["seeds"].values())).get("history") or [])]
    if lows and min(lows) < 3.0:
        ax.set_ylim(top=3.5)   # the first steps (~4.2 nats) would squash the part that matters
    ax.legend()
    ax.set_title("training curves")
    ax = axes[2]
    plotted = False
    for a in arms:
        s0 = next(iter(summary[a]["seeds"].values()))
        for key in _rate_keys(s0["firing_rates_per_layer"]):
            ys = [r.get(key) for r in s0["firing_rates_per_layer"]]
            ax.plot(range(len(ys)), ys, "o-", label=f"{a}: {key}")
            plotted = True
        dens = s0["attn_density_per_layer"]
        if any(d is not None for d in dens):
            ax.plot(range(len(dens)), dens, "s--", label=f"{a}: attention density")
            plotted = True
    ax.set_xlabel("layer")
    n_layers = max(len(next(iter(summary[a]["seeds"].values()))["attn_density_per_layer"]) for a in arms)
    ax.set_xticks(range(n_layers))
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("rate / density")
    ax.set_title("per-layer firing rate and attention density (seed 0)")
    if plotted:
        ax.legend(fontsize=7, loc="center right")
    if long_summary:
        txt = "long context (512): " + ", ".join(
            f"{a} {v['val_nats_per_char_mean']:.3f}" for a, v in long_summary.items())
        fig.text(0.01, 0.01, txt, fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    tmp = path.with_name("." + path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    plt.close(fig)


def _rate_keys(rates_per_layer: list[dict]) -> list[str]:
    keys = []
    for r in rates_per_layer:
        for k in r:
            if k.endswith("firing_rate") and k not in keys:
                keys.append(k)
    return keys


def report(args, runs: Path, quick: bool) -> dict:
    main_p, sel_p = ("quick", "quick-select") if quick else ("main", "select")
    selection = choose_spiking(runs, sel_p)
    chosen = selection["chosen"]
    labels = {chosen: "spiking_kwta"}
    summary = summarise(runs, main_p, list(CONTROL_ARMS) + [chosen], labels)
    long_summary = {} if quick else summarise(runs, "long", list(CONTROL_ARMS) + [chosen], labels)
    print("\n== tiny-shakespeare, full validation split ==")
    print_table(table_rows(summary), COLUMNS)
    for arm, a in summary.items():
        s0 = next(iter(a["seeds"].values()))
        if any(s0["firing_rates_per_layer"]):
            print(f"{arm} per-layer firing rates (seed {next(iter(a['seeds']))}):",
                  json.dumps(s0["firing_rates_per_layer"]))
    if long_summary:
        print("\n== long context (block 512; settings in JSON 'presets.long') ==")
        print_table(table_rows(long_summary), COLUMNS)
    print("spiking selection:", json.dumps(selection))
    print("E est. = energy ESTIMATE per token (FP32 preset, 45 nm per-operation figures; "
          "spiking_attention.accounting), not a measurement")
    name = "lm_compare_quick" if quick else "lm_compare"
    payload = {
        "description": "char-level tiny-shakespeare, first 90% train / last 10% validation, full validation "
                       "split in non-overlapping context chunks; same tokens per seed (data_seed 1000+seed), "
                       "AdamW 1e-3->1e-4 cosine, warm-up 100, wd 0.1, clip 1.0, 1 torch thread per run",
        "presets": {k: PRESETS[k] for k in ((main_p, sel_p) if quick else ("main", "select", "long"))},
        "spiking_selection": selection, "arms": summary, "long_context": long_summary,
        "targets": {"spiking_kwta_gap_nats": 0.10, "topk_gap_nats": 0.03},
    }
    if "spiking_kwta" in summary:
        seed0 = next(iter(summary["spiking_kwta"]["seeds"]))
        payload["spiking_plots"] = spiking_plots(run_dir(runs, main_p, chosen, int(seed0)), Path(args.out),
                                                 f"{name}_spiking")
    path = write_json(args.out, name, payload)
    png = Path(args.out) / f"{name}.png"
    if summary:
        pm = PRESETS[main_p]
        ctx = pm["model"].get("block_size", 64)
        plot(summary, long_summary, png, f"tiny-shakespeare, ctx {ctx}, {pm['iters']} steps, "
                                         f"{len(pm['seeds'])} seeds (mean +- std)")
    print(f"wrote {path} and {png}")
    return payload


def main(argv=None) -> int:
    p = make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=Path, default=None,
                   help="runs directory, the cache of finished runs (default runs/lm_compare; "
                        "--quick: a fresh temporary directory)")
    p.add_argument("--one", nargs=3, metavar=("PRESET", "ARM", "SEED"), help=argparse_suppress())
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--phases", default="main-controls,select,main-spiking,long,long-extra",
                   help="comma list of phases to run, in order (default: all)")
    p.add_argument("--log", type=Path, default=None, help="progress log (default: stderr)")
    a = p.parse_args(argv)
    runs = a.runs
    if runs is None:
        import tempfile
        runs = Path(tempfile.mkdtemp(prefix="lm_compare_quick_")) if a.quick else DEFAULT_RUNS
    if a.one:
        preset, arm, seed = a.one
        res = run_one(runs, preset, arm, int(seed))
        print(json.dumps({k: res[k] for k in ("arm", "seed", "split", "val_nats_per_char", "train_time_s")}))
        return 0
    log = open(a.log, "a") if a.log else sys.stderr
    if not a.report_only:
        main_p, sel_p = ("quick", "quick-select") if a.quick else ("main", "select")
        phases = a.phases.split(",")
        have_spiking = spiking_available()
        if not have_spiking:
            print("spiking_attention.attention is not available: spiking runs skipped", file=log, flush=True)
        jobs = []
        if "main-controls" in phases:
            # seed-major order, so an early stop still leaves every control arm with some seeds
            jobs += [(main_p, arm, s) for s in PRESETS[main_p]["seeds"] for arm in CONTROL_ARMS]
        for ph in phases:
            if ph == "select" and have_spiking:
                jobs += [(sel_p, arm, PRESETS[sel_p]["seeds"][0]) for arm in SPIKING_CANDIDATES]
            elif ph == "main-spiking" and have_spiking:
                jobs.append((main_p, "<chosen>", None))
            elif ph == "long" and not a.quick:
                jobs += [("long", arm, s) for s in PRESETS["long"]["seeds"] for arm in ("dense", "topk", "window")]
                if have_spiking:
                    jobs.append(("long", "<chosen>", None))
            elif ph == "long-extra" and not a.quick:
                for seed in PRESETS["long"]["extra_seeds"]:
                    for arm in PRESETS["long"]["extra_arms"]:
                        if arm != "<chosen>" or have_spiking:
                            jobs.append(("long", arm, seed))
        for preset, arm, seed in jobs:
            if arm == "<chosen>":
                chosen = choose_spiking(runs, sel_p)["chosen"]
                print(f"spiking config chosen: {chosen}", file=log, flush=True)
                for s in (PRESETS[preset]["seeds"] if seed is None else [seed]):
                    spawn(runs, preset, chosen, s, log)
            else:
                spawn(runs, preset, arm, seed, log)
    report(a, runs, a.quick)
    return 0


def argparse_suppress():
    import argparse
    return argparse.SUPPRESS


if __name__ == "__main__":
    raise SystemExit(main())
