"""How much of the trained dense twin survives conversion to spikes: thermometer-coded IF layers
for b = 2..8 (BrainTransformers-style) and the hybrid with spike coding (SpikingBrain-style).

``--route`` picks what runs: ``braintransformers``, ``spikingbrain`` or ``both`` (default); every
result is cached, so a later ``--route both`` writes the one JSON from the caches.

BrainTransformers route. For each dense checkpoint (``--ckpt``, repeatable, or ``--train-seeds``: the dense twin trained
here through :func:`models.train.train_run` with the comparison's recipe, cached under
``--runs``) and each b:

* **converted**: :func:`models.convert.convert` (staircases refitted on 16 training chunks),
  validation nats/char on the full split, and the fraction of the gap recovered
  ``(L_uniform - L_snn) / (L_uniform - L_dense)`` with ``L_uniform = ln(vocab)``;
* **after QAT**: a short quantization-aware retraining through the harness
  (:func:`models.train.train`, AdamW, straight-through gradients, ``--qat-steps`` steps, 10% of
  the dense run's steps by default, peak lr ``--qat-lr`` with 10% warm-up and cosine decay to a
  tenth) and the same measures;
* **spikes per token**, **SOPs per token** and an **energy ESTIMATE** per token
  (:func:`spiking_attention.accounting.account_model`: 45 nm per-operation figures, not a
  measurement), beside the dense twin's MACs and estimate;
* **generation**: tokens per second of ``generate`` (no cache, 1 thread) of the converted model
  against the dense twin, back to back in the same process.

b counts the steps of each neuron (T = 2**b - 1); a signed value drives a pair of neurons,
so its count takes 2**(b+1) - 1 levels (b bits of magnitude and a sign): the row for b is a
(b+1)-bit signed quantization.

Every (checkpoint, b) result is cached (``<runs>/<source id>/b<b>/``, with the QAT checkpoint,
which resumes), so an interrupted run continues.

SpikingBrain route (arXiv 2509.05276). For each dense checkpoint:
:func:`models.convert.to_hybrid` (``--sb-layout``, default alternate: GLA in even layers,
sliding window of ``--sb-window`` tokens in odd ones; adaptive-threshold spike coding into every
projection; the GLA output scales calibrated on 16 training chunks), then continued training
through the harness (:func:`models.train.train`: AdamW, batch 12, 20 warm-up steps, then the
constant learning rate ``--sb-lr``), validation nats/char on the full split after each of
``--sb-steps`` extra steps (snapshots of one run, taken with the harness's ``stop_after``: a
constant rate makes every snapshot an "anytime" model, not the end of a shorter schedule).
Beside it, the same architecture from a fresh initialisation (the registered ``hybrid/gpt_shape``
variant) trained for the same steps at ``--sb-scratch-lr`` (the harness's recipe peak), and the
dense twin. The float hybrid (spike coding off) at 0 steps separates the cost of the attention
swap from that of the spike coding. Cached under ``<runs>/<source id>/sb_<settings>/``.

    python bench/convert.py --quick
    python bench/convert.py --train-seeds 0,1,2                 # trains (or reuses) the 3 dense twins
    python bench/convert.py --ckpt runs/lm_compare/main/gpt/dense/seed0/ckpt.pt --bits 2,4,8
    python bench/convert.py --route spikingbrain --ckpt A/ckpt.pt --ckpt B/ckpt.pt --sb-steps 0,50,100,200
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench._common import REPO, cached_json, make_parser, parse_args, print_table, write_json  # noqa: E402
from hdc.io import atomic_write, write_json as write_json_file  # noqa: E402

NAME = "convert"
DEFAULT_RUNS = REPO / "runs" / "convert"
QUICK_RUNS = REPO / "runs" / "convert_quick"
QUICK_SHAPE = {"block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32}
TARGETS = {"b8_no_retraining_gap_recovered": 0.99, "b4_after_qat_gap_recovered": 0.90, "qat_max_frac_of_steps": 0.10}
ROUTES = ("braintransformers", "spikingbrain", "both")
NOT_RUN = "not run in this invocation (--route)"


def ckpt_label(ckpt: Path) -> str:
    """A checkpoint's name for the results: its repository-relative path, or, outside this
    repository, ``<checkout>:<path inside that checkout>`` (bench/results stores no absolute paths)."""
    p = Path(ckpt).resolve()
    try:
        return str(p.relative_to(REPO.resolve()))
    except ValueError:
        pass
    for parent in p.parents:
        if (parent / ".git").exists():
            return f"{parent.name}:{p.relative_to(parent)}"
    return p.name


def source_id(ckpt: Path) -> str:
    """A name for a checkpoint's cache directory: its file name's parent and a hash of its bytes."""
    h = hashlib.sha1(Path(ckpt).read_bytes()).hexdigest()[:10]
    return f"{Path(ckpt).parent.name}_{h}"


def train_dense(runs: Path, seed: int, iters: int, shape: dict, text: str | None) -> Path:
    """The dense twin of ``seed`` with the comparison's recipe (data_seed 1000 + seed), trained or reused."""
    from models.train import TrainConfig, train_run
    cfg = TrainConfig(max_iters=iters, batch_size=12 if not shape else 8, seed=seed, data_seed=1000 + seed,
                      threads=1)
    d = runs / "dense" / f"seed{seed}"
    train_run("gpt", d, cfg, variant="dense", overrides=shape, progress=False, text=text)
    return d / "ckpt.pt"


def calibration(train_ids: torch.Tensor, T: int, seed: int, n: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(train_ids) - T, (n,), generator=g).tolist()
    return torch.stack([train_ids[s:s + T] for s in starts])          # (n, T)


def measures(model, val_ids: torch.Tensor, acc_input: torch.Tensor, vocab: int) -> dict:
    """Validation nats/char and the accounting of one forward pass over ``acc_input`` (B, T)."""
    from models.train import evaluate
    from spiking_attention.accounting import account_model
    from spiking_attention.stats import reporting_layers
    ev = evaluate(model, val_ids)
    rep = account_model(model, acc_input)
    tot = rep["totals"]
    spikes = sum(m.layer_stats().get("spikes", 0.0) for _, m in reporting_layers(model))
    return {"val_nats_per_char": ev["nats_per_char"], "eval_chars": ev["n_chars"],
            "spikes_per_token": spikes / tot["n_tokens"], "sops_per_token": tot["sops_per_token"],
            "mac_per_token": tot["mac_per_token"],
            "energy_estimate_pJ_per_token": tot["energy_estimate_pJ_per_token"]}


def gap_recovered(l_snn: float, l_dense: float, vocab: int) -> float:
    """(L_uniform - L_snn) / (L_uniform - L_dense), L_uniform = ln(vocab)."""
    lu = math.log(vocab)
    return (lu - l_snn) / (lu - l_dense)


def gen_rate(model, prompt: torch.Tensor, n_new: int) -> float:
    """Tokens per second of ``model.generate`` (after a warm-up of a few tokens)."""
    g = torch.Generator().manual_seed(0)
    model.generate(prompt, 4, generator=g)
    t0 = time.perf_counter()
    model.generate(prompt, n_new, generator=g)
    return n_new / (time.perf_counter() - t0)


def run_bits(ckpt: Path, bits: int, out: Path, *, qat_steps: int, qat_lr: float, data, n_gen: int,
             dense_info: dict) -> dict:
    """Convert, measure, retrain, measure again; cached in ``out/result.json`` (the QAT checkpoint resumes)."""
    from models.convert import convert, save_converted
    from models.train import AdamWLearner, TrainConfig, load_model, train
    res_path = out / "result.json"
    want = {"ckpt": ckpt_label(ckpt), "ckpt_id": source_id(ckpt), "bits": bits, "qat_steps": qat_steps,
            "qat_lr": qat_lr,
            "eval_chars": dense_info["eval_chars"]}
    if res_path.exists():
        cached = json.loads(res_path.read_text())
        if cached.get("settings") == want:
            return cached
    tok, train_ids, val_ids, acc_input = data
    dense, _, _ = load_model(ckpt)
    vocab = dense.config.vocab_size
    T = dense.config.block_size
    model = convert(dense, bits, calib=calibration(train_ids, T, seed=0), source_label=str(ckpt))
    row = {"settings": want, "bits": bits, "levels": 2 ** (bits + 1) - 1}
    row["converted"] = measures(model, val_ids, acc_input, vocab)
    row["converted"]["gap_recovered"] = gap_recovered(row["converted"]["val_nats_per_char"],
                                                      dense_info["val_nats_per_char"], vocab)
    prompt = val_ids[:8][None]
    row["generate_tokens_per_s"] = gen_rate(model, prompt, n_gen)
    row["generate_tokens_per_s_dense"] = gen_rate(dense, prompt, n_gen)   # back to back, same process
    if qat_steps:
        cfg = TrainConfig(max_iters=qat_steps, batch_size=12, learning_rate=qat_lr, min_lr=qat_lr / 10,
                          warmup_iters=qat_steps // 10, seed=bits, data_seed=5000 + bits, threads=1,
                          ckpt_every=max(1, qat_steps // 4), log_every=max(1, qat_steps // 10))
        t0 = time.perf_counter()
        info = train(model, train_ids, cfg, ckpt_path=out / "qat_ckpt.pt", family="converted",
                     extra_state={"config": asdict(model.config), "tokenizer": tok.to_dict(), "variant": None},
                     learner=AdamWLearner(model, cfg), progress=False)
        row["qat"] = measures(model, val_ids, acc_input, vocab)
        row["qat"].update(steps=info["step"], train_time_s=info["train_time_s"], history=info["history"],
                          wall_s=time.perf_counter() - t0,
                          gap_recovered=gap_recovered(row["qat"]["val_nats_per_char"],
                                                      dense_info["val_nats_per_char"], vocab))
        save_converted(out / "converted_qat.pt", model, tok, source=str(ckpt))
    write_json_file(res_path, row)
    return row


def dense_measures(ckpt: Path, out: Path, data) -> dict:
    from models.train import load_model

    def compute():
        _, _, val_ids, acc_input = data
        dense, _, ck = load_model(ckpt)
        m = measures(dense, val_ids, acc_input, dense.config.vocab_size)
        m.update(steps=ck["step"], seed=ck["train_config"]["seed"], config=ck["config"])
        return m
    return cached_json(out / "dense.json", compute, {"ckpt": str(Path(ckpt).resolve())})


def summarise(per_source: list[dict], bits_list: list[int]) -> list[dict]:
    """Mean (and std over sources) of every measure per b."""
    def ms(xs):
        xs = [x for x in xs if x is not None]
        if not xs:
            return None, None
        return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)

    rows = []
    for b in bits_list:
        rs = [s["bits"][str(b)] for s in per_source if str(b) in s["bits"]]
        row = {"bits": b, "levels": 2 ** (b + 1) - 1, "n_sources": len(rs)}
        for stage in ("converted", "qat"):
            for key in ("val_nats_per_char", "gap_recovered", "spikes_per_token", "sops_per_token", "mac_per_token"):
                m, s = ms([r[stage][key] for r in rs if stage in r])
                row[f"{stage}_{key}_mean"], row[f"{stage}_{key}_std"] = m, s
            m, _ = ms([r[stage]["energy_estimate_pJ_per_token"]["fp32"] for r in rs if stage in r])
            row[f"{stage}_energy_estimate_pJ_per_token_fp32_mean"] = m
        row["qat_steps"] = rs[0].get("qat", {}).get("steps") if rs else None
        row["generate_speed_vs_dense_mean"] = ms([r["generate_tokens_per_s"] / r["generate_tokens_per_s_dense"]
                                                  for r in rs])[0]
        rows.append(row)
    return rows


def plot(rows: list[dict], dense: dict, vocab: int, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    b = [r["bits"] for r in rows]
    ax = axes[0]
    for stage, lab in (("converted", "converted"), ("qat", "after QAT")):
        pts = [(r["bits"], r[f"{stage}_val_nats_per_char_mean"], r[f"{stage}_val_nats_per_char_std"] or 0.0)
               for r in rows if r[f"{stage}_val_nats_per_char_mean"] is not None]
        if pts:
            ax.errorbar([x[0] for x in pts], [x[1] for x in pts], yerr=[x[2] for x in pts], marker="o",
                        capsize=3, label=lab)
    ax.axhline(dense["val_nats_per_char_mean"], color="k", ls="--", label="dense twin")
    ax.axhline(math.log(vocab), color="gray", ls=":", label="uniform ln(vocab)")
    ax.set_xlabel("b (T = 2^b - 1 steps per neuron)")
    ax.set_ylabel("validation nats/char")
    ax.set_title(title)
    ax.legend()
    ax = axes[1]
    for stage, lab in (("converted", "converted"), ("qat", "after QAT")):
        pts = [(r["bits"], 100 * r[f"{stage}_gap_recovered_mean"]) for r in rows
               if r[f"{stage}_gap_recovered_mean"] is not None]
        if pts:
            ax.plot([x[0] for x in pts], [x[1] for x in pts], marker="o", label=lab)
    ax.axhline(99, color="tab:red", ls=":", lw=1, label="targets: 99% (b=8), 90% (b=4, QAT)")
    ax.axhline(90, color="tab:red", ls=":", lw=1)
    ax.set_ylim(min(80, min(100 * (r["converted_gap_recovered_mean"] or 1) for r in rows) - 2), 101)
    ax.set_xlabel("b")
    ax.set_ylabel("gap recovered (%)")
    ax.set_title("(L_uniform - L_snn) / (L_uniform - L_dense)")
    ax.legend()
    ax = axes[2]
    ax.semilogy(b, [r["converted_sops_per_token_mean"] for r in rows], "o-", label="SOPs / token (converted)")
    ax.semilogy(b, [r["converted_spikes_per_token_mean"] for r in rows], "s-", label="spikes / token")
    ax.axhline(dense["mac_per_token_mean"], color="k", ls="--", label="dense twin MACs / token")
    ax.set_xlabel("b")
    ax.set_ylabel("operations per token")
    ax.set_title("accounting (energy: see JSON, an ESTIMATE)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- SpikingBrain route

def sb_arm(ckpt: Path, out: Path, arm: str, *, steps: list[int], lr: float, layout: str, window: int,
           coding: str, data, dense_info: dict, cached_only: bool = False) -> dict | None:
    """One arm (``converted`` or ``scratch``) of the SpikingBrain route: validation nats/char after
    each number of extra steps in ``steps``; cached in ``out/result.json`` (the run's checkpoint resumes).

    Both arms of the dense twin of seed s draw their batches with data_seed 7000 + s and the
    scratch arm initialises with seed s, so the 3 seeds are 3 independent runs of each arm.
    """
    from dataclasses import asdict

    from models import build_model
    from models.convert import hybrid_config_for, to_hybrid
    from models.train import TrainConfig, evaluate, load_model, train
    seed = int(dense_info["seed"])
    want = {"ckpt": ckpt_label(ckpt), "ckpt_id": source_id(ckpt), "arm": arm, "seed": seed, "steps": steps,
            "lr": lr, "layout": layout, "window": window, "spike_coding": coding,
            "eval_chars": dense_info["eval_chars"]}
    res_path = out / "result.json"
    if res_path.exists():
        cached = json.loads(res_path.read_text())
        if cached.get("settings") == want:
            return cached
    if cached_only:
        return None
    tok, train_ids, val_ids, _ = data
    dense, _, _ = load_model(ckpt)
    vocab, T = dense.config.vocab_size, dense.config.block_size
    torch.manual_seed(seed)
    if arm == "converted":
        model = to_hybrid(dense, layout=layout, window=window, spike_coding=coding,
                          calib=calibration(train_ids, T, seed=0))
    else:   # the same architecture, fresh: hybrid/gpt_shape's config at this shape (tests/test_convert.py)
        model = build_model("hybrid", asdict(hybrid_config_for(dense.config, layout=layout, window=window,
                                                               spike_coding=coding)))
    n_max = max(steps)
    cfg = TrainConfig(max_iters=max(1, n_max), batch_size=12, learning_rate=lr, min_lr=lr,
                      warmup_iters=min(20, n_max // 10), seed=seed, data_seed=7000 + seed, threads=1,
                      ckpt_every=10 ** 9, log_every=10)
    # snapshots resume only with the points they were taken at: a checkpoint without its
    # points.json (or made with other settings) would hand later snapshots' weights to earlier ones
    partial = out / "points.json"
    done = json.loads(partial.read_text()) if partial.exists() else None
    if done is None or done.get("settings") != want:
        (out / "ckpt.pt").unlink(missing_ok=True)
        done = {"settings": want, "points": []}
    row = {"settings": want, "arm": arm, "points": list(done["points"])}
    t_train = row["points"][-1]["train_time_s"] if row["points"] else 0.0
    extra = {"config": asdict(model.config), "tokenizer": tok.to_dict(), "variant": None}
    for n in sorted(steps):
        if any(p["steps"] == n for p in row["points"]):
            continue
        if n:
            info = train(model, train_ids, cfg, ckpt_path=out / "ckpt.pt", family="hybrid", stop_after=n,
                         extra_state=extra, progress=False)
            t_train = info["train_time_s"]
        ev = evaluate(model, val_ids)
        row["points"].append({"steps": n, "val_nats_per_char": ev["nats_per_char"], "train_time_s": t_train,
                              "gap_recovered": gap_recovered(ev["nats_per_char"], dense_info["val_nats_per_char"],
                                                             vocab)})
        print(f"    {arm} {layout} +{n} steps: {ev['nats_per_char']:.4f} nats/char "
              f"({100 * row['points'][-1]['gap_recovered']:.1f}% of the gap)", flush=True)
        write_json_file(partial, {"settings": want, "points": row["points"]})
    if n_max and (out / "ckpt.pt").exists():   # every point was recorded already: the final weights
        train(model, train_ids, cfg, ckpt_path=out / "ckpt.pt", family="hybrid", stop_after=n_max,
              extra_state=extra, progress=False)
    if arm == "converted":
        row["spike_report_total"] = {k: v for k, v in model.spike_report(data[3][:4])["total"].items()
                                     if k in ("spike_sparsity", "spikes_per_channel", "nonzero_rate")}
        float_model = to_hybrid(dense, layout=layout, window=window, spike_coding="none",
                                calib=calibration(train_ids, T, seed=0))
        l0 = evaluate(float_model, val_ids)["nats_per_char"]
        row["float_at_0_steps"] = {"val_nats_per_char": l0,
                                   "gap_recovered": gap_recovered(l0, dense_info["val_nats_per_char"], vocab)}
    row["n_params"] = model.num_params()
    write_json_file(res_path, row)
    return row


def sb_summary(per_source: list[dict], steps: list[int]) -> list[dict]:
    def ms(xs):
        return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)
    rows = []
    for n in sorted(steps):
        row = {"steps": n, "n_sources": len(per_source)}
        for arm in ("converted", "scratch"):
            pts = [next(p for p in s[arm]["points"] if p["steps"] == n) for s in per_source]
            for key in ("val_nats_per_char", "gap_recovered"):
                row[f"{arm}_{key}_mean"], row[f"{arm}_{key}_std"] = ms([p[key] for p in pts])
        rows.append(row)
    return rows


def sb_plot(rows: list[dict], dense: dict, per_source: list[dict], vocab: int, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    x = [r["steps"] for r in rows]
    for ax, key, scale, ylabel in ((axes[0], "val_nats_per_char", 1.0, "validation nats/char"),
                                   (axes[1], "gap_recovered", 100.0, "gap recovered (%)")):
        for arm, lab in (("converted", "converted dense twin (to_hybrid), continued"),
                         ("scratch", "same architecture from scratch")):
            ax.errorbar(x, [scale * r[f"{arm}_{key}_mean"] for r in rows],
                        yerr=[scale * r[f"{arm}_{key}_std"] for r in rows], marker="o", capsize=3, label=lab)
        f0 = [s["converted"]["float_at_0_steps"][key] for s in per_source]
        ax.plot([0], [scale * statistics.fmean(f0)], "k^", label="converted, spike coding off, 0 steps")
        if key == "val_nats_per_char":
            ax.axhline(dense["val_nats_per_char_mean"], color="k", ls="--", label="dense twin")
            ax.axhline(math.log(vocab), color="gray", ls=":", label="uniform ln(vocab)")
        else:
            ax.axhline(100, color="k", ls="--", label="dense twin")
        ax.set_xlabel("extra training steps (batch of 12 sequences)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    axes[0].set_title(title)
    axes[1].set_title("(L_uniform - L) / (L_uniform - L_dense)")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", type=Path, action="append", default=[], help="dense gpt checkpoint (repeatable)")
    p.add_argument("--train-seeds", default=None, help="comma list: train (or reuse) the dense twin of these seeds")
    p.add_argument("--dense-iters", type=int, default=2000, help="steps of the dense twins trained here")
    p.add_argument("--bits", default="2,3,4,5,6,7,8", help="comma list of b")
    p.add_argument("--qat-bits", default=None, help="comma list of b that get the QAT (default: all of --bits)")
    p.add_argument("--qat-steps", type=int, default=None,
                   help="QAT steps (default: 10%% of the dense checkpoint's steps)")
    p.add_argument("--qat-lr", type=float, default=3e-4)
    p.add_argument("--eval-chars", type=int, default=None, help="evaluate on the first N validation chars "
                                                                 "(default: the full split)")
    p.add_argument("--gen-tokens", type=int, default=200)
    p.add_argument("--runs", type=Path, default=None, help="cache directory (default runs/convert)")
    p.add_argument("--route", choices=ROUTES, default="both", help="which conversion route(s) to run")
    p.add_argument("--sb-steps", default="0,50,100,200", help="SpikingBrain: extra-step counts to evaluate at")
    p.add_argument("--sb-layout", default="alternate", help="SpikingBrain: the hybrid layout")
    p.add_argument("--sb-window", type=int, default=16, help="SpikingBrain: sliding-window length (tokens)")
    p.add_argument("--sb-lr", type=float, default=3e-4, help="SpikingBrain: lr of the converted model")
    p.add_argument("--sb-scratch-lr", type=float, default=1e-3, help="SpikingBrain: lr of the from-scratch arm")
    p.add_argument("--sb-spike-coding", default="adaptive", help="SpikingBrain: adaptive | none")
    p.add_argument("--sb-arms", default="converted,scratch",
                   help="SpikingBrain: arms to compute (several processes can fill the cache in parallel, one "
                        "arm each; the JSON needs both, so a run with one arm only fills the cache)")
    p.add_argument("--sb-cached-only", action="store_true",
                   help="SpikingBrain: report only the checkpoints whose arms are both cached (the rest are "
                        "listed as not finished), computing nothing")
    a = parse_args(p, argv)
    sb_steps = sorted({int(x) for x in a.sb_steps.split(",") if x})
    if not sb_steps or sb_steps[0] < 0:
        p.error(f"--sb-steps must list step counts >= 0, got {a.sb_steps!r}")
    run_bt, run_sb = a.route in ("braintransformers", "both"), a.route in ("spikingbrain", "both")
    sb_arms = [x for x in a.sb_arms.split(",") if x]
    if not sb_arms or set(sb_arms) - {"converted", "scratch"}:
        p.error(f"--sb-arms takes a comma list of 'converted' and 'scratch', got {a.sb_arms!r}")
    from models.train import load_checkpoint, prepare_data
    torch.set_num_threads(1)
    bits_list = [int(x) for x in a.bits.split(",") if x]
    qat_bits = set(bits_list if a.qat_bits is None else [int(x) for x in a.qat_bits.split(",") if x])
    text, shape = None, {}
    if a.quick:
        runs = a.runs or QUICK_RUNS
        shutil.rmtree(runs, ignore_errors=True)   # a quick run's numbers always come from the current code
        from models.data import load_tinyshakespeare
        text = load_tinyshakespeare()[:200_000]
        shape = QUICK_SHAPE
        seeds, dense_iters = [0], 300
        a.eval_chars = a.eval_chars or 4000
        a.gen_tokens = min(a.gen_tokens, 30)
        a.qat_steps = a.qat_steps if a.qat_steps is not None else 30
        qat_bits = qat_bits & {2, 4} if a.qat_bits is None else qat_bits
        if a.bits == p.get_default("bits"):
            bits_list = [2, 4, 8]
        if a.sb_steps == p.get_default("sb_steps"):
            sb_steps = [0, 10, 30]
    else:
        runs = a.runs or DEFAULT_RUNS
        seeds = [int(s) for s in a.train_seeds.split(",")] if a.train_seeds else []
        dense_iters = a.dense_iters
    ckpts = list(a.ckpt) + [train_dense(runs, s, dense_iters, shape, text) for s in seeds]
    if not ckpts:
        p.error("give --ckpt PATH (a trained gpt checkpoint) or --train-seeds S[,S...] (or --quick)")
    tok, train_ids, val_ids = prepare_data(text=text)
    if a.eval_chars:
        val_ids = val_ids[: a.eval_chars + 1]
    per_source, dense_rows, sb_sources, sb_unfinished = [], [], [], []
    t_start = time.perf_counter()
    for ckpt in ckpts:
        ck = load_checkpoint(ckpt)
        T = ck["config"]["block_size"]
        n_acc = min(16, (len(val_ids) - 1) // T)
        acc_input = val_ids[: n_acc * T].view(n_acc, T)
        data = (tok, train_ids, val_ids, acc_input)
        out = runs / source_id(ckpt)
        dense = dense_measures(ckpt, out, data)
        dense_rows.append(dense)
        qat_steps = a.qat_steps if a.qat_steps is not None else max(1, round(0.1 * ck["step"]))
        src = {"ckpt": ckpt_label(ckpt), "ckpt_id": source_id(ckpt), "seed": dense["seed"],
               "dense_steps": dense["steps"], "dense": dense, "bits": {}}
        if run_sb:
            tag = f"sb_{a.sb_layout}_w{a.sb_window}_{a.sb_spike_coding}"
            print(f"[{time.perf_counter() - t_start:6.1f}s] {ckpt_label(ckpt)}: SpikingBrain route ({tag}), "
                  f"dense {dense['val_nats_per_char']:.4f} nats/char", flush=True)
            sb = {"ckpt": ckpt_label(ckpt), "seed": dense["seed"],
                  "dense_val_nats_per_char": dense["val_nats_per_char"]}
            complete = True
            for arm, lr in (("converted", a.sb_lr), ("scratch", a.sb_scratch_lr)):
                if arm not in sb_arms:
                    continue
                sb[arm] = sb_arm(Path(ckpt).resolve(), out / tag / arm, arm, steps=sb_steps, lr=lr,
                                 layout=a.sb_layout, window=a.sb_window, coding=a.sb_spike_coding, data=data,
                                 dense_info=dense, cached_only=a.sb_cached_only)
                complete = complete and sb[arm] is not None
            if complete:
                sb_sources.append(sb)
            else:
                sb_unfinished.append(sb)   # with whichever arm finished
                print(f"    not finished (--sb-cached-only): {ckpt_label(ckpt)}", flush=True)
        for b in (bits_list if run_bt else []):
            r = run_bits(Path(ckpt).resolve(), b, out / f"b{b}", qat_steps=qat_steps if b in qat_bits else 0,
                         qat_lr=a.qat_lr, data=data, n_gen=a.gen_tokens, dense_info=dense)
            src["bits"][str(b)] = r
            q = r.get("qat", {})
            print(f"[{time.perf_counter() - t_start:6.1f}s] {Path(ckpt).parent.name} b={b}: "
                  f"{r['converted']['val_nats_per_char']:.4f} nats/char "
                  f"({100 * r['converted']['gap_recovered']:.2f}% of the gap)"
                  + (f", after {q['steps']} QAT steps {q['val_nats_per_char']:.4f} "
                     f"({100 * q['gap_recovered']:.2f}%)" if q else ""), flush=True)
        per_source.append(src)
    vocab = tok.vocab_size
    rows = summarise(per_source, bits_list) if run_bt else []
    dn = [d["val_nats_per_char"] for d in dense_rows]
    dense_sum = {"val_nats_per_char_mean": statistics.fmean(dn),
                 "val_nats_per_char_std": statistics.stdev(dn) if len(dn) > 1 else 0.0,
                 "mac_per_token_mean": statistics.fmean(d["mac_per_token"] for d in dense_rows),
                 "energy_estimate_pJ_per_token_fp32_mean":
                     statistics.fmean(d["energy_estimate_pJ_per_token"]["fp32"] for d in dense_rows)}

    def f(v, spec):
        return "" if v is None else format(v, spec)
    if run_bt:
        bt_report(rows, dense_sum, vocab, len(ckpts), f)
    name = "convert_quick" if a.quick else NAME
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{name}.png"
    if run_bt:
        plot(rows, dense_sum, vocab, png, f"conversion of the dense twin ({len(ckpts)} seed(s))")
    sb_payload: dict | str = NOT_RUN
    if run_sb and (len(sb_arms) < 2 or not sb_sources):
        print(f"--sb-arms {a.sb_arms}: the cache is filled; run with both arms to write the results")
        return 0
    if run_sb:
        sb_rows = sb_summary(sb_sources, sb_steps)
        sb_dense = {"val_nats_per_char_mean": statistics.fmean(s["dense_val_nats_per_char"] for s in sb_sources)}
        sb_png = out_dir / f"{name}_spikingbrain.png"
        sb_table = [{"extra steps": r["steps"],
                     "converted nats/char": f"{r['converted_val_nats_per_char_mean']:.4f} "
                                            f"+- {r['converted_val_nats_per_char_std']:.4f}",
                     "converted gap %": f"{100 * r['converted_gap_recovered_mean']:.1f}",
                     "scratch nats/char": f"{r['scratch_val_nats_per_char_mean']:.4f} "
                                          f"+- {r['scratch_val_nats_per_char_std']:.4f}",
                     "scratch gap %": f"{100 * r['scratch_gap_recovered_mean']:.1f}"} for r in sb_rows]
        f0 = [s["converted"]["float_at_0_steps"]["val_nats_per_char"] for s in sb_sources]
        print(f"\n== SpikingBrain-style route: to_hybrid(layout={a.sb_layout}, window={a.sb_window}, "
              f"spike_coding={a.sb_spike_coding}) of {len(sb_sources)} dense twin(s), then continued training "
              f"(lr {a.sb_lr}); scratch: same architecture, fresh init (lr {a.sb_scratch_lr}); dense "
              f"{sb_dense['val_nats_per_char_mean']:.4f}, uniform {math.log(vocab):.4f} ==")
        print_table(sb_table, list(sb_table[0]))
        print(f"converted with spike coding off, 0 steps: {statistics.fmean(f0):.4f} nats/char (mean)")
        sb_plot(sb_rows, sb_dense, sb_sources, vocab, sb_png,
                f"SpikingBrain-style conversion ({len(sb_sources)} seed(s))")
        sb_payload = {
            "description": "models.convert.to_hybrid of the dense twin (attention -> the hybrid's GLA / sliding-window "
                           "mixers with the twin's q/k/v/output projections; GLA gates fresh; learned positions, "
                           "GELU MLP, embeddings carried over; adaptive-threshold spike coding into every "
                           "projection), continued training through the harness, beside the same architecture "
                           "(hybrid/gpt_shape) trained from scratch for the same steps; validation nats/char on the "
                           + ("first %d chars of the validation split" % a.eval_chars if a.eval_chars
                              else "full validation split"),
            "layout": a.sb_layout, "window": a.sb_window, "spike_coding": a.sb_spike_coding, "steps": sb_steps,
            "training": {"optimizer": "AdamW (harness), batch 12, weight decay 0.1, grad clip 1.0",
                         "schedule": "min(20, max_steps // 10) warm-up steps, then constant lr; every point is a "
                                     "snapshot of one run of max(steps) steps",
                         "converted_lr": a.sb_lr, "scratch_lr": a.sb_scratch_lr,
                         "data_seed": "7000 + the dense twin's seed", "init_seed": "the dense twin's seed",
                         "steps_as_frac_of_dense_run": [n / max(1, per_source[0]["dense_steps"]) for n in sb_steps]},
            "rows": sb_rows, "float_at_0_steps_val_nats_per_char_mean": statistics.fmean(f0),
            "dense_val_nats_per_char_mean_of_these_sources": sb_dense["val_nats_per_char_mean"],
            "sources": sb_sources, "plot": sb_png,
            "not_finished": {"sources": sb_unfinished,
                             "why": "their continued-training arms did not finish in this session's CPU time "
                                    "(--sb-cached-only reports the finished ones)"} if sb_unfinished else None}
    from spiking_attention.accounting import ENERGY_NOTE, ENERGY_PRESETS
    payload = {
        "description": "thermometer-coded integrate-and-fire conversion (BrainTransformers-style, per-token "
                       "scales) of the dense twin; validation nats/char on the "
                       + ("first %d chars of the validation split" % a.eval_chars if a.eval_chars
                          else "full validation split"),
        "levels_note": "b = steps of each neuron (T = 2^b - 1); a signed value uses a neuron pair, "
                       "2^(b+1) - 1 levels",
        "energy_note": ENERGY_NOTE, "energy_presets_pJ": ENERGY_PRESETS,
        "qat": {"steps": a.qat_steps, "default_steps": "10% of the dense checkpoint's steps", "lr": a.qat_lr,
                "schedule": "AdamW, 10% warm-up, cosine to lr/10, batch 12, straight-through gradients",
                "bits": sorted(qat_bits)},
        "uniform_nats_per_char": math.log(vocab), "dense": dense_sum,
        "rows": rows if run_bt else NOT_RUN, "sources": per_source if run_bt else NOT_RUN,
        "targets": TARGETS, "spikingbrain_route": sb_payload, "runs_dir": Path(runs),
        "plot": png if run_bt else NOT_RUN, "wall_time_s": time.perf_counter() - t_start,
    }
    path = write_json(out_dir, name, payload, allow_dirty=a.allow_dirty)
    print(f"wrote {path}" + (f" and {png}" if run_bt else "") + (f" and {sb_png}" if run_sb else ""))
    return 0


def bt_report(rows, dense_sum, vocab, n_ckpts, f) -> None:
    """Print the BrainTransformers route's table."""
    table = [{"b": r["bits"], "levels": r["levels"],
              "nats/char": f(r["converted_val_nats_per_char_mean"], ".4f"),
              "gap %": f(r["converted_gap_recovered_mean"] and 100 * r["converted_gap_recovered_mean"], ".2f"),
              "QAT steps": r["qat_steps"] or "",
              "QAT nats/char": f(r["qat_val_nats_per_char_mean"], ".4f"),
              "QAT gap %": f(r["qat_gap_recovered_mean"] and 100 * r["qat_gap_recovered_mean"], ".2f"),
              "spikes/tok": f(r["converted_spikes_per_token_mean"], ".3g"),
              "SOP/tok": f(r["converted_sops_per_token_mean"], ".3g"),
              "MAC/tok": f(r["converted_mac_per_token_mean"], ".3g"),
              "E est. pJ/tok": f(r["converted_energy_estimate_pJ_per_token_fp32_mean"], ".3g"),
              "gen speed vs dense": f(r["generate_speed_vs_dense_mean"], ".2f")} for r in rows]
    print(f"\n== conversion of the dense twin ({n_ckpts} checkpoint(s)); dense "
          f"{dense_sum['val_nats_per_char_mean']:.4f} nats/char, {dense_sum['mac_per_token_mean']:.3g} MAC/tok, "
          f"E est. {dense_sum['energy_estimate_pJ_per_token_fp32_mean']:.3g} pJ/tok; uniform {math.log(vocab):.4f} ==")
    print_table(table, list(table[0]))
    print("E est. = energy ESTIMATE per token (FP32 preset, 45 nm per-operation figures), not a measurement. "
          "levels = 2^(b+1) - 1 (b bits of magnitude and a sign).")


if __name__ == "__main__":
    raise SystemExit(main())
