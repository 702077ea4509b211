"""Continual learning: online reward-modulated STDP against backprop fine-tuning on a new stream.

Nord's claim is that its reward-modulated STDP adapts a trained spiking LM online with
"minimal forgetting". Measured here, one seed per run:

1. train a ``nord`` model by backprop (the harness, :func:`models.train.train`) on the
   tiny-shakespeare training split (first 90%);
2. the **new stream**: modern parliamentary English (the langrec corpus's English training
   text, Europarl, characters outside the Shakespeare vocabulary dropped): a real shift of
   domain with the same alphabet (``--stream shakespeare-tail`` uses the last 20% of the
   training split instead, when langrec is absent or for a same-domain control);
3. adapt two copies of the model on the same ``adapt_iters x batch x context`` tokens of
   the stream, with the same batches (same data seed): **STDP** (the harness's pluggable
   learner hook, :class:`spiking_attention.plasticity.RewardSTDPLearner`, on every
   ``nn.Linear`` but the tied head, no gradients) and **backprop** (AdamW at a constant small
   learning rate, the plain fine-tuning baseline);
4. report, before and after, the loss on held-out text of the new stream (adaptation) and on
   the original validation split (forgetting = after - before), in nats/char.

Targets of the issue: STDP lowers the new-stream loss while raising the original-split loss
by less than backprop fine-tuning does with the same tokens.

    python bench/continual.py --quick        # < 40 s: a tiny nord, part of each split
    python bench/continual.py                # the default nord shape, 2,000 steps, whole splits
"""
from __future__ import annotations

import copy
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench._common import make_parser, parse_args, print_table, write_json  # noqa: E402
from models import build_model, get_family  # noqa: E402
from models.train import TrainConfig, evaluate, prepare_data, train  # noqa: E402
from spiking_attention.plasticity import RewardSTDPLearner  # noqa: E402

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


def main(argv=None) -> int:
    p = make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--stream", choices=("europarl", "shakespeare-tail"), default="europarl")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stdp-lr", type=float, default=1e-3, help="R-STDP learning rate (Nord's lr)")
    p.add_argument("--stdp-clip", type=float, default=1e-3, help="elementwise clip of one R-STDP change")
    p.add_argument("--finetune-lr", type=float, default=1e-4, help="constant AdamW rate of the backprop arm")
    p.add_argument("--threads", type=int, default=1)
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
        cut = int(len(train_ids) * 0.8)
        stream, train_ids = train_ids[cut:][: preset["stream_chars"]], train_ids[:cut]
        stream_desc = "last 20% of the tiny-shakespeare training split (held out of pre-training)"
    n_eval = len(stream) // 4 if preset["eval_chars"] is None else min(preset["eval_chars"], len(stream) // 4)
    stream_eval, stream_adapt = stream[:n_eval], stream[n_eval:]

    config = get_family("nord").variant_config("lif", vocab_size=tok.vocab_size, **preset["model"])
    torch.manual_seed(a.seed)
    model = build_model("nord", config)
    pre_cfg = TrainConfig(max_iters=preset["pretrain_iters"], batch_size=preset["batch_size"], seed=a.seed,
                          warmup_iters=min(100, preset["pretrain_iters"] // 10))
    t0 = time.perf_counter()
    train(model, train_ids, pre_cfg, family="nord", progress=False)
    pretrain_s = time.perf_counter() - t0

    def losses(m) -> dict:
        return {"original_val": evaluate(m, val_ids)["nats_per_char"],
                "stream_heldout": evaluate(m, stream_eval)["nats_per_char"]}

    before = losses(model)
    adapt_cfg = TrainConfig(max_iters=preset["adapt_iters"], batch_size=preset["batch_size"], seed=a.seed,
                            data_seed=a.seed + 1000, warmup_iters=0)
    arms = {}
    for arm in ("stdp", "backprop"):
        m = copy.deepcopy(model)
        if arm == "stdp":
            learner = RewardSTDPLearner(m, lr=a.stdp_lr, clip=a.stdp_clip)
            settings = {"lr": a.stdp_lr, "clip": a.stdp_clip, "decay": math.exp(-1 / 20), "w_max": 1.0,
                        "layers": learner.layers, "activity": learner.activity}
        else:
            learner = ConstantAdamW(m, a.finetune_lr)
            settings = {"lr": a.finetune_lr, "optimizer": "AdamW constant", "weight_decay": 0.1}
        w0 = {k: v.clone() for k, v in m.state_dict().items()}
        t0 = time.perf_counter()
        info = train(m, stream_adapt, adapt_cfg, learner=learner, progress=False)
        secs = time.perf_counter() - t0
        after = losses(m)
        drift = math.sqrt(sum(float(((v - w0[k]) ** 2).sum()) for k, v in m.state_dict().items()
                              if v.is_floating_point()))
        arms[arm] = {
            "after": after, "settings": settings, "adapt_time_s": secs, "weight_change_l2": drift,
            "adaptation_gain": before["stream_heldout"] - after["stream_heldout"],
            "forgetting": after["original_val"] - before["original_val"],
            "train_loss_first_last": [info["history"][0]["loss"], info["history"][-1]["loss"]],
            "mean_reward": getattr(learner, "last_reward", None),
        }
    verdict = {
        "stdp_lowers_stream_loss": arms["stdp"]["adaptation_gain"] > 0,
        "stdp_forgets_less_than_backprop": arms["stdp"]["forgetting"] < arms["backprop"]["forgetting"],
    }
    rows = [{"arm": "before", "stream nats/char": before["stream_heldout"], "orig val nats/char": before["original_val"]}]
    for arm, r in arms.items():
        rows.append({"arm": arm, "stream nats/char": r["after"]["stream_heldout"],
                     "orig val nats/char": r["after"]["original_val"], "gain": r["adaptation_gain"],
                     "forgetting": r["forgetting"], "|dW|": r["weight_change_l2"]})
    print_table(rows, ["arm", "stream nats/char", "orig val nats/char", "gain", "forgetting", "|dW|"])
    print(verdict)
    adapt_tokens = adapt_cfg.max_iters * adapt_cfg.batch_size * config.get("block_size", 64)
    path = write_json(a.out, NAME, {
        "preset": "quick" if a.quick else "full", "seed": a.seed, "family": "nord", "variant": "lif",
        "config": config, "pretrain": {"iters": pre_cfg.max_iters, "batch_size": pre_cfg.batch_size,
                                       "train_chars": len(train_ids), "time_s": pretrain_s},
        "stream": {"kind": stream_kind, "description": stream_desc, "adapt_chars": len(stream_adapt),
                   "heldout_chars": len(stream_eval), "adapt_tokens_per_arm": adapt_tokens},
        "original_val_chars": len(val_ids), "before": before, "arms": arms, "verdict": verdict,
        "units": "nats per character (bits = nats / ln 2)", "wall_s": time.perf_counter() - t_start,
        "note": "one seed; STDP and backprop see the same batches of the stream (same data seed)",
    }, allow_dirty=a.allow_dirty)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    raise SystemExit(main())
