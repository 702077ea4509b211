"""Continual learning: online reward-modulated STDP against backprop fine-tuning on a new stream.

Nord's claim is that its reward-modulated STDP adapts a trained spiking LM online with
"minimal forgetting". Measured here, for each trained model:

1. a ``nord`` model trained by backprop on the tiny-shakespeare training split (first 90%):
   the three seeds of bench/lm_compare.py (``--ckpt`` for others); ``--quick`` trains a tiny
   one here;
2. the **new stream**: modern parliamentary English (the langrec corpus's English training
   text, Europarl, characters outside the Shakespeare vocabulary dropped): a real shift of
   domain with the same alphabet (``--stream shakespeare-tail`` uses the last 20% of the
   training split instead, when langrec is absent or for a same-domain control);
3. adapt three copies of the model on the same ``adapt_iters x batch x context`` tokens of
   the stream, with the same batches (same data seed): **STDP** (the harness's pluggable
   learner hook, :class:`spiking_attention.plasticity.RewardSTDPLearner`, on every
   ``nn.Linear`` but the tied head, no gradients), **local** (the three-factor rule with the
   readout's own error as modulator, :class:`spiking_attention.plasticity.LocalErrorLearner`:
   only the untied readout changes, no gradients) and **backprop** (AdamW at a constant small
   learning rate, the plain fine-tuning baseline);
4. report, before and after, the loss on held-out text of the new stream (adaptation) and on
   the original validation split (forgetting = after - before), in nats/char.

Targets of the issue: STDP lowers the new-stream loss while raising the original-split loss
by less than backprop fine-tuning does with the same tokens. Every arm of every source is
cached under ``--runs`` (an interrupted run continues with the next arm).

    python bench/continual.py --quick        # < 40 s: a tiny nord, part of each split
    python bench/continual.py                # the default nord shape, 2,000 steps, whole splits
"""
from __future__ import annotations

import copy
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench._common import (LM_RUNS, REPO, make_parser, parse_args, print_table,  # noqa: E402
                           cached_json, trained_checkpoints, write_json)
from hdc.io import write_json as write_json_file  # noqa: E402
from hdc.provenance import repo_relative  # noqa: E402
from models import build_model, get_family  # noqa: E402
from models.train import TrainConfig, evaluate, load_model, prepare_data, train  # noqa: E402
from spiking_attention.plasticity import LocalErrorLearner, RewardSTDPLearner  # noqa: E402

NAME = "continual"

PRESETS = {
    "quick": {"model": {"block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 48, "t_fast": 2, "t_slow": 1},
              "pretrain_iters": 250, "adapt_iters": 60, "batch_size": 8, "eval_chars": 12_000,
              "stream_chars": 60_000},
    "full": {"model": {}, "pretrain_iters": 2000, "adapt_iters": 300, "batch_size": 12, "eval_chars": None,
             "stream_chars": 400_000},
}


class ConstantAdamW:
    """Backprop fine-tuning: AdamW at a constant learning rate (no warm-up, no decay), clipped."""

    def __init__(self, model, lr: float, weight_decay: float = 0.1, clip: float = 1.0):
        self.opt = model.configure_optimizer(weight_decay, lr, (0.9, 0.99))
        self.clip = clip

    def step(self, model, x, y, step):
        _, loss = model(x, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), self.clip)
        self.opt.step()
        return float(loss.detach())

    def state_dict(self):
        return {"optimizer": self.opt.state_dict()}

    def load_state_dict(self, d):
        self.opt.load_state_dict(d["optimizer"])


def new_stream(kind: str, tok, n_chars: int) -> tuple[torch.Tensor, str]:
    """Token ids of the new stream (characters outside ``tok``'s vocabulary dropped) and its description."""
    if kind == "europarl":
        from hdc.datasets import load_langrec

        train_lines, _, _ = load_langrec(languages=["eng"])
        text = "\n".join(train_lines["eng"])
        keep = set(tok.stoi)
        text = "".join(c for c in text if c in keep)[:n_chars]
        return torch.from_numpy(tok.encode(text)), "langrec eng (Europarl) training text, out-of-vocabulary chars dropped"
    raise ValueError(f"unknown stream {kind!r}")


def pretrain_quick(seed: int, tok, train_ids, preset) -> tuple:
    """The --quick source: a tiny nord trained here (the full preset starts from lm_compare's runs)."""
    config = get_family("nord").variant_config("lif", vocab_size=tok.vocab_size, **preset["model"])
    torch.manual_seed(seed)
    model = build_model("nord", config)
    pre_cfg = TrainConfig(max_iters=preset["pretrain_iters"], batch_size=preset["batch_size"], seed=seed,
                          warmup_iters=min(100, preset["pretrain_iters"] // 10))
    train(model, train_ids, pre_cfg, family="nord", progress=False)
    return model, config, pre_cfg.max_iters


def make_learner(arm: str, m, a) -> tuple:
    """(learner, settings) of one adaptation arm."""
    if arm == "stdp":
        learner = RewardSTDPLearner(m, lr=a.stdp_lr, clip=a.stdp_clip)
        return learner, {"rule": "reward-modulated STDP (Nord)", "lr": a.stdp_lr, "clip": a.stdp_clip,
                         "decay": math.exp(-1 / 20), "w_max": 1.0, "layers": learner.layers,
                         "activity": learner.activity}
    if arm == "local":
        learner = LocalErrorLearner(m, lr=a.local_lr)
        return learner, {"rule": "three-factor, local error at the readout (delta rule); readout untied",
                         "lr": a.local_lr, "layer": learner.layer}
    return ConstantAdamW(m, a.finetune_lr), {"rule": "backprop", "lr": a.finetune_lr,
                                             "optimizer": "AdamW constant", "weight_decay": 0.1}


ARMS = ("stdp", "local", "backprop")


def adapt_source(model, seed: int, out: Path | None, a, preset, data) -> dict:
    """Before/after losses of every arm from one trained model; each arm cached under ``out``."""
    val_ids, stream_eval, stream_adapt = data

    def losses(m) -> dict:
        return {"original_val": evaluate(m, val_ids)["nats_per_char"],
                "stream_heldout": evaluate(m, stream_eval)["nats_per_char"]}

    settings_all = {"adapt_iters": preset["adapt_iters"], "batch_size": preset["batch_size"], "seed": seed,
                    "stdp_lr": a.stdp_lr, "stdp_clip": a.stdp_clip, "local_lr": a.local_lr,
                    "finetune_lr": a.finetune_lr, "stream": a.stream, "eval_chars": preset["eval_chars"]}

    def cached(name, fn):
        return cached_json(None if out is None else out / f"{name}.json", fn, settings_all)

    before = cached("before", lambda: losses(model))
    adapt_cfg = TrainConfig(max_iters=preset["adapt_iters"], batch_size=preset["batch_size"], seed=seed,
                            data_seed=seed + 1000, warmup_iters=0)

    def run(arm):
        m = copy.deepcopy(model)
        learner, settings = make_learner(arm, m, a)
        w0 = {k: v.clone() for k, v in m.state_dict().items()}
        t0 = time.perf_counter()
        info = train(m, stream_adapt, adapt_cfg, learner=learner, progress=False)
        secs = time.perf_counter() - t0
        after = losses(m)
        drift = math.sqrt(sum(float(((v - w0[k]) ** 2).sum()) for k, v in m.state_dict().items()
                              if v.is_floating_point()))
        return {"after": after, "settings": settings, "adapt_time_s": secs, "weight_change_l2": drift,
                "adaptation_gain": before["stream_heldout"] - after["stream_heldout"],
                "forgetting": after["original_val"] - before["original_val"],
                "train_loss_first_last": [info["history"][0]["loss"], info["history"][-1]["loss"]],
                "mean_reward": getattr(learner, "last_reward", None)}

    return {"before": before, "arms": {arm: cached(arm, lambda arm=arm: run(arm)) for arm in ARMS}}


def main(argv=None) -> int:
    p = make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", type=Path, action="append", default=[],
                   help=f"trained nord checkpoint (repeatable; default {LM_RUNS} of nord/lif, seeds 0-2)")
    p.add_argument("--stream", choices=("europarl", "shakespeare-tail"), default="europarl")
    p.add_argument("--seed", type=int, default=0, help="--quick: seed of the tiny model trained here")
    p.add_argument("--stdp-lr", type=float, default=1e-3, help="R-STDP learning rate (Nord's lr)")
    p.add_argument("--stdp-clip", type=float, default=1e-3, help="elementwise clip of one R-STDP change")
    p.add_argument("--local-lr", type=float, default=0.05, help="rate of the local-error readout rule")
    p.add_argument("--finetune-lr", type=float, default=1e-4, help="constant AdamW rate of the backprop arm")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=Path, default=None, help="cache of finished arms (default runs/continual)")
    a = parse_args(p, argv)
    preset = PRESETS["quick" if a.quick else "full"]
    torch.set_num_threads(a.threads)
    t_start = time.perf_counter()

    tok, train_ids, val_ids = prepare_data()
    if preset["eval_chars"] is not None:
        val_ids = val_ids[: preset["eval_chars"]]
    stream_kind = a.stream
    if stream_kind == "europarl":
        try:
            stream, stream_desc = new_stream("europarl", tok, preset["stream_chars"])
        except FileNotFoundError as exc:
            print(f"langrec data missing ({exc}); using --stream shakespeare-tail", file=sys.stderr)
            stream_kind = "shakespeare-tail"
    if stream_kind == "shakespeare-tail":
        if not a.quick:
            raise SystemExit("--stream shakespeare-tail needs models pre-trained without the tail: use --quick")
        cut = int(len(train_ids) * 0.8)
        stream, train_ids = train_ids[cut:][: preset["stream_chars"]], train_ids[:cut]
        stream_desc = "last 20% of the tiny-shakespeare training split (held out of pre-training)"
    n_eval = len(stream) // 4 if preset["eval_chars"] is None else min(preset["eval_chars"], len(stream) // 4)
    data = (val_ids, stream[:n_eval], stream[n_eval:])

    per_source = []
    if a.quick:
        model, config, pre_iters = pretrain_quick(a.seed, tok, train_ids, preset)
        per_source.append({"source": f"nord/lif trained here, {pre_iters} steps, seed {a.seed}", "seed": a.seed,
                           **adapt_source(model, a.seed, None, a, preset, data)})
    else:
        ckpts = trained_checkpoints(a.ckpt, "nord", "lif")
        runs = a.runs or REPO / "runs" / "continual"
        for c in ckpts:
            model, _, ck = load_model(c)
            config, seed = ck["config"], ck["train_config"]["seed"]
            out = runs / f"{Path(c).parent.parent.name}_{Path(c).parent.name}"
            per_source.append({"source": repo_relative(Path(c).resolve()), "seed": seed, "steps": ck["step"],
                               **adapt_source(model, seed, out, a, preset, data)})

    def ms(xs):
        return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)

    summary = {"before": {k: ms([s["before"][k] for s in per_source])[0] for k in ("original_val", "stream_heldout")}}
    for arm in ARMS:
        rs = [s["arms"][arm] for s in per_source]
        summary[arm] = {k: ms([r[k] for r in rs]) for k in ("adaptation_gain", "forgetting", "weight_change_l2")}
        summary[arm]["after"] = {k: ms([r["after"][k] for r in rs])[0] for k in ("original_val", "stream_heldout")}
    verdict = {
        f"{arm}_lowers_stream_loss": all(s["arms"][arm]["adaptation_gain"] > 0 for s in per_source)
        for arm in ("stdp", "local")}
    verdict.update({f"{arm}_forgets_less_than_backprop": all(
        s["arms"][arm]["forgetting"] < s["arms"]["backprop"]["forgetting"] for s in per_source)
        for arm in ("stdp", "local")})
    rows = [{"arm": "before", "stream nats/char": f"{summary['before']['stream_heldout']:.4f}",
             "orig val nats/char": f"{summary['before']['original_val']:.4f}"}]
    for arm in ARMS:
        r = summary[arm]
        rows.append({"arm": arm, "stream nats/char": f"{r['after']['stream_heldout']:.4f}",
                     "orig val nats/char": f"{r['after']['original_val']:.4f}",
                     "gain": f"{r['adaptation_gain'][0]:+.4f} +- {r['adaptation_gain'][1]:.4f}",
                     "forgetting": f"{r['forgetting'][0]:+.4f} +- {r['forgetting'][1]:.4f}",
                     "|dW|": f"{r['weight_change_l2'][0]:.3g}"})
    print(f"== continual learning: {len(per_source)} source model(s), mean +- std ==")
    print_table(rows, ["arm", "stream nats/char", "orig val nats/char", "gain", "forgetting", "|dW|"])
    print(verdict)
    adapt_tokens = preset["adapt_iters"] * preset["batch_size"] * preset["model"].get("block_size", 64)
    path = write_json(a.out, NAME + ("_quick" if a.quick else ""), {
        "preset": "quick" if a.quick else "full", "family": "nord", "variant": "lif",
        "stream": {"kind": stream_kind, "description": stream_desc, "adapt_chars": len(data[2]),
                   "heldout_chars": len(data[1]), "adapt_tokens_per_arm": adapt_tokens},
        "original_val_chars": len(val_ids), "sources": per_source, "summary": summary, "verdict": verdict,
        "units": "nats per character (bits = nats / ln 2)", "wall_s": time.perf_counter() - t_start,
        "note": "every arm sees the same batches of the stream (same data seed) for the same steps",
    }, allow_dirty=a.allow_dirty)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    raise SystemExit(main())
