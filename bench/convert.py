"""How much of the trained dense twin survives conversion to thermometer-coded spikes, for b = 2..8.

For each dense checkpoint (``--ckpt``, repeatable, or ``--train-seeds``: the dense twin trained
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
which resumes), so an interrupted run continues. The SpikingBrain-style route (hybrid
attention from the dense twin) is not measured here: its layers (issue 13) are not on main.

    python bench/convert.py --quick
    python bench/convert.py --train-seeds 0,1,2                 # trains (or reuses) the 3 dense twins
    python bench/convert.py --ckpt runs/lm_compare/main/gpt/dense/seed0/ckpt.pt --bits 2,4,8
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

from bench._common import REPO, make_parser, parse_args, print_table, write_json  # noqa: E402
from hdc.io import atomic_write, write_json as write_json_file  # noqa: E402

NAME = "convert"
DEFAULT_RUNS = REPO / "runs" / "convert"
QUICK_RUNS = REPO / "runs" / "convert_quick"
QUICK_SHAPE = {"block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32}
TARGETS = {"b8_no_retraining_gap_recovered": 0.99, "b4_after_qat_gap_recovered": 0.90, "qat_max_frac_of_steps": 0.10}
SPIKINGBRAIN = ("not done: the SpikingBrain-style route needs the hybrid gated-linear + sliding-window layers "
                "of issue 13, which are not on main (git log main | grep -i hybrid finds nothing)")


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
    want = {"ckpt": str(ckpt), "bits": bits, "qat_steps": qat_steps, "qat_lr": qat_lr,
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
    p = out / "dense.json"
    if p.exists():
        return json.loads(p.read_text())
    _, _, val_ids, acc_input = data
    dense, _, ck = load_model(ckpt)
    m = measures(dense, val_ids, acc_input, dense.config.vocab_size)
    m.update(steps=ck["step"], seed=ck["train_config"]["seed"], config=ck["config"])
    write_json_file(p, m)
    return m


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
    a = parse_args(p, argv)
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
    per_source, dense_rows = [], []
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
        src = {"ckpt": Path(ckpt).resolve(), "seed": dense["seed"], "dense_steps": dense["steps"],
               "dense": dense, "bits": {}}
        for b in bits_list:
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
    rows = summarise(per_source, bits_list)
    dn = [d["val_nats_per_char"] for d in dense_rows]
    dense_sum = {"val_nats_per_char_mean": statistics.fmean(dn),
                 "val_nats_per_char_std": statistics.stdev(dn) if len(dn) > 1 else 0.0,
                 "mac_per_token_mean": statistics.fmean(d["mac_per_token"] for d in dense_rows),
                 "energy_estimate_pJ_per_token_fp32_mean":
                     statistics.fmean(d["energy_estimate_pJ_per_token"]["fp32"] for d in dense_rows)}

    def f(v, spec):
        return "" if v is None else format(v, spec)
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
    print(f"\n== conversion of the dense twin ({len(ckpts)} checkpoint(s)); dense "
          f"{dense_sum['val_nats_per_char_mean']:.4f} nats/char, {dense_sum['mac_per_token_mean']:.3g} MAC/tok, "
          f"E est. {dense_sum['energy_estimate_pJ_per_token_fp32_mean']:.3g} pJ/tok; uniform {math.log(vocab):.4f} ==")
    print_table(table, list(table[0]))
    print("E est. = energy ESTIMATE per token (FP32 preset, 45 nm per-operation figures), not a measurement. "
          "levels = 2^(b+1) - 1 (b bits of magnitude and a sign).")
    print("SpikingBrain route:", SPIKINGBRAIN)
    from spiking_attention.accounting import ENERGY_NOTE, ENERGY_PRESETS
    name = "convert_quick" if a.quick else NAME
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{name}.png"
    plot(rows, dense_sum, vocab, png, f"conversion of the dense twin ({len(ckpts)} seed(s))")
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
        "uniform_nats_per_char": math.log(vocab), "dense": dense_sum, "rows": rows, "sources": per_source,
        "targets": TARGETS, "spikingbrain_route": SPIKINGBRAIN, "runs_dir": Path(runs), "plot": png,
        "wall_time_s": time.perf_counter() - t_start,
    }
    path = write_json(out_dir, name, payload, allow_dirty=a.allow_dirty)
    print(f"wrote {path} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
