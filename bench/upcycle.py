"""MoE upcycling of the trained SpikingBrain-style hybrid: is the upcycled MoE better than the dense
model it came from, after the same number of extra training steps?

For each trained dense ``hybrid`` checkpoint (``--ckpt``, repeatable; default: the three
``hybrid/alternate`` runs of bench/lm_compare.py, ``runs/lm_compare/main/hybrid/alternate/seed*``):

* **dense, continued**: the dense model trained ``--extra-steps`` more steps;
* **MoE, upcycled**: :func:`models.hybrid.upcycle` (every FFN -> a shared expert + ``--experts``
  routed copies with ``--noise`` x std Gaussian noise, a fresh top-1 router, load-balancing loss)
  trained the same steps, on the same batches (same data seed), with the same recipe.

Both arms: AdamW, peak lr ``--lr`` after 10% warm-up, cosine to a tenth, batches drawn with a
data seed (3000 + source seed) that the original run did not use. Reported: validation nats/char
on the full split before (the dense source) and after, the MoE's gain over the continued dense
model, the expert load per layer (fraction of tokens routed to each expert on the first
validation chunks), the router entropy, and the fraction of parameters one token uses.
Every arm is cached under ``--runs`` and resumes from its checkpoint.

SpikingBrain (arXiv 2509.05276) upcycles its dense FFNs into MoE layers the same way
(Komatsuzaki et al. 2022, arXiv 2212.05055: sparse upcycling).

    python bench/upcycle.py --quick
    python bench/upcycle.py                          # the three lm_compare hybrid runs, 400 extra steps
"""
from __future__ import annotations

import json
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench._common import (LM_RUNS, REPO, make_parser, parse_args, print_table,  # noqa: E402
                           cached_json, trained_checkpoints, write_json)
from hdc.io import save_figure, write_json as write_json_file  # noqa: E402
from hdc.provenance import repo_relative  # noqa: E402

NAME = "upcycle"
DEFAULT_RUNS = REPO / "runs" / "upcycle"
QUICK_RUNS = REPO / "runs" / "upcycle_quick"
QUICK_SHAPE = {"block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32}
LOAD_CHUNKS = 16   # validation chunks over which the expert load is counted


def _quick_source(runs: Path, seed: int) -> Path:
    """A tiny dense hybrid trained here (the --quick preset has no lm_compare run to start from)."""
    from models.train import TrainConfig, train_run
    d = runs / "source" / f"seed{seed}"
    cfg = TrainConfig(max_iters=60, batch_size=8, seed=seed, data_seed=1000 + seed, threads=1, ckpt_every=60)
    train_run("hybrid", d, cfg, variant="alternate", overrides=QUICK_SHAPE, progress=False)
    return d / "ckpt.pt"


def expert_stats(model, val_ids: torch.Tensor) -> list[dict]:
    """Per MoE layer: the fraction of tokens each expert got, router entropy, active parameter
    fraction, over the first :data:`LOAD_CHUNKS` validation chunks."""
    from spiking_attention.moe import MoEFFN
    T = model.config.block_size
    n = min(LOAD_CHUNKS, (len(val_ids) - 1) // T)
    x = val_ids[: n * T].view(n, T).long()
    model.eval()
    with torch.no_grad():
        model(x)
    return [{k: m.layer_stats()[k] for k in ("expert_load", "router_entropy", "active_param_frac")}
            for m in model.modules() if isinstance(m, MoEFFN)]


def run_arm(source: Path, arm: str, out: Path, args, data) -> dict:
    """Train one arm (``"dense"`` or ``"moe"``) ``args.extra_steps`` steps from ``source``; cached."""
    from dataclasses import asdict

    from models.hybrid import upcycle
    from models.train import AdamWLearner, TrainConfig, evaluate, load_model, train
    settings = {"source": repo_relative(source), "arm": arm, "extra_steps": args.extra_steps, "lr": args.lr,
                "experts": args.experts, "noise": args.noise, "batch_size": args.batch_size}
    res_path = out / "result.json"
    if res_path.exists():
        cached = json.loads(res_path.read_text())
        if cached.get("settings") == settings:
            return cached
        shutil.rmtree(out)   # made with other settings: start over rather than mix
    tok, train_ids, val_ids = data
    model, _, ck = load_model(source)
    if arm == "moe":
        model = upcycle(model, args.experts, noise=args.noise, seed=ck["train_config"]["seed"])
    seed = ck["train_config"]["seed"]
    cfg = TrainConfig(max_iters=args.extra_steps, batch_size=args.batch_size, learning_rate=args.lr,
                      min_lr=args.lr / 10, warmup_iters=args.extra_steps // 10, seed=seed, data_seed=3000 + seed,
                      threads=1, ckpt_every=max(1, args.extra_steps // 4), log_every=max(1, args.extra_steps // 20))
    info = train(model, train_ids, cfg, ckpt_path=out / "ckpt.pt", family="hybrid",
                 extra_state={"config": asdict(model.config), "tokenizer": tok.to_dict(), "variant": None},
                 learner=AdamWLearner(model, cfg), progress=not args.quick)
    ev = evaluate(model, val_ids, progress=not args.quick)
    row = {"settings": settings, "val_nats_per_char": ev["nats_per_char"], "eval_chars": ev["n_chars"],
           "train_time_s": info["train_time_s"], "steps": info["step"], "history": info["history"],
           "n_params": sum(p.numel() for p in model.parameters())}
    if arm == "moe":
        row["experts"] = expert_stats(model, val_ids)
        row["active_param_frac_model"] = (
            row["n_params"] - sum((m.n_experts - 1) * sum(p.numel() for p in m.experts[0].parameters())
                                  for m in model.modules() if hasattr(m, "experts"))) / row["n_params"]
    write_json_file(res_path, row)
    return row


def source_loss(source: Path, out: Path, val_ids) -> dict:
    from models.train import evaluate, load_model

    def compute():
        model, _, ck = load_model(source)
        return {"val_nats_per_char": evaluate(model, val_ids)["nats_per_char"], "steps": ck["step"],
                "seed": ck["train_config"]["seed"], "n_params": sum(q.numel() for q in model.parameters())}
    return cached_json(out / "source.json", compute, {"source": str(Path(source).resolve())})


def plot(per_source: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    ax = axes[0]
    for i, s in enumerate(per_source):
        for arm, color in (("dense", "tab:blue"), ("moe", "tab:orange")):
            h = s[arm]["history"]
            ax.plot([x["step"] for x in h], [x["loss"] for x in h], color=color, lw=1,
                    label=("dense, continued" if arm == "dense" else "MoE, upcycled") if i == 0 else None)
    ax.set(xlabel="extra step", ylabel="train loss (one batch)", title=title)
    ax.legend()
    ax = axes[1]
    loads = per_source[0]["moe"]["experts"]
    n = len(loads[0]["expert_load"])
    w = 0.8 / len(loads)
    for li, layer in enumerate(loads):
        ax.bar([e + (li - (len(loads) - 1) / 2) * w for e in range(n)], layer["expert_load"], w, label=f"layer {li}")
    ax.axhline(1 / n, color="k", ls="--", lw=1, label="balanced")
    ax.set(xlabel="expert", ylabel="fraction of tokens", title="expert load after upcycling (first source)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def main(argv=None) -> dict:
    p = make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", type=Path, action="append", default=[],
                   help=f"dense hybrid checkpoint (repeatable; default {LM_RUNS} of hybrid/alternate, seeds 0-2)")
    p.add_argument("--extra-steps", type=int, default=None, help="steps of each arm (default 400 = 20%% of 2,000)")
    p.add_argument("--experts", type=int, default=4, help="routed experts per layer (plus one shared)")
    p.add_argument("--noise", type=float, default=0.01, help="expert weight noise, a fraction of each tensor's std")
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate of both arms")
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--runs", type=Path, default=None, help="cache directory (default runs/upcycle)")
    args = parse_args(p, argv)
    from models.train import prepare_data
    torch.set_num_threads(1)
    args.extra_steps = args.extra_steps or (20 if args.quick else 400)
    runs = args.runs or (QUICK_RUNS if args.quick else DEFAULT_RUNS)
    if args.quick and args.runs is None:
        shutil.rmtree(runs, ignore_errors=True)   # quick numbers always come from this code
        args.batch_size = 8
    if args.quick and not args.ckpt:
        sources = [_quick_source(runs, 0)]
    else:
        sources = trained_checkpoints(args.ckpt, "hybrid", "alternate")
    data = prepare_data(False)
    t0 = time.perf_counter()
    per_source, rows = [], []
    for src in sources:
        src = Path(src).resolve()
        out = runs / f"{src.parent.parent.name}_{src.parent.name}"
        s = {"source": repo_relative(src), "before": source_loss(src, out, data[2])}
        for arm in ("dense", "moe"):
            s[arm] = run_arm(src, arm, out / arm, args, data)
        s["moe_gain_nats"] = s["dense"]["val_nats_per_char"] - s["moe"]["val_nats_per_char"]
        per_source.append(s)
        rows.append({"source": s["source"], "before": f"{s['before']['val_nats_per_char']:.4f}",
                     "dense +steps": f"{s['dense']['val_nats_per_char']:.4f}",
                     "MoE +steps": f"{s['moe']['val_nats_per_char']:.4f}",
                     "MoE gain": f"{s['moe_gain_nats']:+.4f}",
                     "params dense/MoE": f"{s['dense']['n_params']}/{s['moe']['n_params']}",
                     "active frac": f"{s['moe']['active_param_frac_model']:.3f}",
                     "s dense/MoE": f"{s['dense']['train_time_s']:.0f}/{s['moe']['train_time_s']:.0f}"})
    print(f"\n== MoE upcycling: {args.extra_steps} extra steps, {args.experts} routed experts + 1 shared, "
          f"full validation split ==")
    print_table(rows, list(rows[0]))
    gains = [s["moe_gain_nats"] for s in per_source]
    summary = {"moe_gain_nats_mean": statistics.fmean(gains),
               "moe_gain_nats_std": statistics.stdev(gains) if len(gains) > 1 else 0.0,
               "dense_continued_mean": statistics.fmean(s["dense"]["val_nats_per_char"] for s in per_source),
               "moe_mean": statistics.fmean(s["moe"]["val_nats_per_char"] for s in per_source),
               "before_mean": statistics.fmean(s["before"]["val_nats_per_char"] for s in per_source),
               "target": "MoE better than the dense model continued for the same steps (gain > 0)",
               "target_met": all(g > 0 for g in gains)}
    print(json.dumps(summary, indent=1))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{NAME}{'_quick' if args.quick else ''}.png"
    plot(per_source, png, f"{args.extra_steps} extra steps after {per_source[0]['before']['steps']}")
    payload = {"settings": {k: getattr(args, k) for k in ("extra_steps", "experts", "noise", "lr", "batch_size")},
               "recipe": "AdamW, 10% warm-up, cosine to lr/10, data_seed 3000 + source seed, 1 torch thread",
               "sources": per_source, "summary": summary, "plot": repo_relative(png),
               "wall_s": time.perf_counter() - t0}
    path = write_json(out_dir, NAME + ("_quick" if args.quick else ""), payload, allow_dirty=args.allow_dirty)
    print(f"wrote {path} and {png}")
    return payload


if __name__ == "__main__":
    main()
