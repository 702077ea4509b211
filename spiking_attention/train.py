"""Train, evaluate and sample the character language models (spiking k-WTA and its dense twin).

Training is nanoGPT's CPU recipe: AdamW (betas 0.9/0.99, weight decay 0.1 on matrices),
linear warm-up for 100 steps then cosine decay of the learning rate from 1e-3 to 1e-4, gradient
clipping at 1.0, batches of random windows drawn from a generator seeded per run, so every arm
trained with the same ``data_seed`` sees the same tokens. Checkpoints are written atomically
(temp file + ``os.replace``) and hold the model, the optimizer, the step and every RNG state,
so a resumed run continues exactly as an uninterrupted one would; they are read back with
``torch.load(weights_only=True)`` (nothing is unpickled).

Evaluation covers the *whole* validation split in non-overlapping context-length chunks and
reports nats per character (bits = nats / ln 2).

Commands:
    python -m spiking_attention.train --arm spiking --out runs/spiking_s0          # train + evaluate
    python -m spiking_attention.train --sample --ckpt runs/spiking_s0/ckpt.pt --prompt "ROMEO:"

Example:
    >>> res = train_run("dense", "runs/demo", TrainConfig(max_iters=10), model_overrides={"n_layer": 1})  # doctest: +SKIP
    >>> res["val_nats_per_char"]                                                                            # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from models import build_model
from spiking_attention.data import (CharTokenizer, eval_chunks, get_batch, load_tinyshakespeare,
                                    split_train_val)

REPO = Path(__file__).resolve().parent.parent

# The arms of the comparison: (model kind, config changes from the base nanoGPT CPU config).
ARMS: dict[str, tuple[str, dict]] = {
    "dense": ("gpt", {"attention": "dense"}),
    "topk": ("gpt", {"attention": "topk", "k": 8}),
    "window": ("gpt", {"attention": "window", "k": 8}),
    # named in advance: the two spiking configurations chosen between on held-out TRAIN text
    "spiking": ("spiking", {"code_bits": 32, "k": 8, "score": "hamming"}),
    "spiking-overlap": ("spiking", {"code_bits": 32, "k": 8, "score": "overlap"}),
}
BASE_MODEL = {"block_size": 64, "n_layer": 4, "n_head": 4, "n_embd": 128, "dropout": 0.0, "bias": False}


@dataclass
class TrainConfig:
    max_iters: int = 2000
    batch_size: int = 12
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int | None = None   # None: decay over max_iters
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    seed: int = 0                      # model initialisation
    data_seed: int | None = None       # batch sampling; None: same as seed
    ckpt_every: int = 250
    log_every: int = 50
    threads: int | None = 1            # torch threads; None leaves torch's default
    eval_batch_size: int = 64
    held_out: bool = False             # train on the first 90% of train, evaluate on its last 10%

    def validate(self) -> None:
        for name in ("max_iters", "batch_size", "ckpt_every", "log_every", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_iters < 0:
            raise ValueError(f"warmup_iters must be >= 0, got {self.warmup_iters}")
        if not 0 < self.min_lr <= self.learning_rate:
            raise ValueError("need 0 < min_lr <= learning_rate")
        if self.grad_clip < 0:
            raise ValueError("grad_clip must be >= 0 (0 disables clipping)")


def get_lr(it: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``learning_rate``, then cosine decay to ``min_lr`` at ``lr_decay_iters``."""
    decay_iters = cfg.lr_decay_iters or cfg.max_iters
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if it > decay_iters:
        return cfg.min_lr
    ratio = (it - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
    return cfg.min_lr + coeff * (cfg.learning_rate - cfg.min_lr)


# ----------------------------------------------------------------------------- checkpoints

def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """torch.save to a temp file in the same directory, then rename (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str | os.PathLike) -> dict:
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def load_model(path: str | os.PathLike):
    """Rebuild a trained model and its tokenizer from a checkpoint: ``(model, tokenizer, ckpt)``."""
    ckpt = load_checkpoint(path)
    model = build_model(ckpt["model_kind"], ckpt["model_config"])
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, CharTokenizer.from_dict(ckpt["tokenizer"]), ckpt


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=2)
        f.write("\n")
    os.chmod(tmp, 0o644)   # mkstemp makes 0600 files; results are meant to be read by others
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- training

def train(model, train_data: torch.Tensor, cfg: TrainConfig, *, ckpt_path: str | os.PathLike | None = None,
          extra_state: dict | None = None, stop_after: int | None = None, progress: bool = True) -> dict:
    """Train ``model`` in place on ``train_data`` (N,) int64; resume from ``ckpt_path`` if it exists.

    ``extra_state`` (model kind, configs, tokenizer) is stored in every checkpoint so
    :func:`load_model` can rebuild the model. ``stop_after`` ends the run after that many steps
    (with a checkpoint), which is how the resume test interrupts a run.
    Returns ``{"step", "history", "train_time_s", "tokens_seen"}``.
    """
    cfg.validate()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    block_size = model.config.block_size
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed if cfg.data_seed is None else cfg.data_seed)
    opt = model.configure_optimizer(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2))
    step, history, train_time = 0, [], 0.0
    if ckpt_path is not None and Path(ckpt_path).exists():
        ck = load_checkpoint(ckpt_path)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step, history, train_time = ck["step"], list(ck["history"]), ck["train_time_s"]
        gen.set_state(ck["gen_state"])
        torch.set_rng_state(ck["torch_rng_state"])

    def checkpoint():
        if ckpt_path is not None:
            save_checkpoint(ckpt_path, {
                **(extra_state or {}), "model": model.state_dict(), "optimizer": opt.state_dict(),
                "step": step, "history": history, "train_time_s": train_time,
                "gen_state": gen.get_state(), "torch_rng_state": torch.get_rng_state(),
                "train_config": asdict(cfg)})

    end = cfg.max_iters if stop_after is None else min(cfg.max_iters, stop_after)
    model.train()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.max_iters, initial=step, desc="train", mininterval=5.0, file=sys.stderr)
    while step < end:
        t0 = time.perf_counter()
        lr = get_lr(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = get_batch(train_data, block_size, cfg.batch_size, gen)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        train_time += time.perf_counter() - t0
        step += 1
        lv = float(loss.detach())
        if not math.isfinite(lv):
            raise FloatingPointError(f"training loss became {lv} at step {step}")
        if step % cfg.log_every == 0 or step == 1:
            history.append({"step": step, "loss": lv, "lr": lr})
        if bar is not None:
            bar.update(1)
            if step % cfg.log_every == 0:
                bar.set_postfix(loss=f"{lv:.3f}")
        if step % cfg.ckpt_every == 0 and step < end:
            checkpoint()
    if bar is not None:
        bar.close()
    checkpoint()
    return {"step": step, "history": history, "train_time_s": train_time,
            "tokens_seen": step * cfg.batch_size * block_size}


@torch.no_grad()
def evaluate(model, data: torch.Tensor, *, batch_size: int = 64, progress: bool = False) -> dict:
    """Mean next-character cross-entropy over ALL of ``data`` in non-overlapping context chunks.

    Returns ``{"nats_per_char", "bits_per_char", "n_chars", "layer_stats"}``; ``layer_stats``
    averages each attention layer's detached statistics over the full-length eval batches.
    """
    was_training = model.training
    model.eval()
    T = model.config.block_size
    chunks = eval_chunks(data, T)
    full = [c for c in chunks if len(c[0]) == T]
    rest = [c for c in chunks if len(c[0]) != T]
    total, count = 0.0, 0
    stat_sums: list[dict] = []
    n_stat = 0
    batches = [full[i:i + batch_size] for i in range(0, len(full), batch_size)]
    it = batches
    if progress:
        from tqdm import tqdm
        it = tqdm(batches, desc="eval", mininterval=5.0, file=sys.stderr)
    for b in it:
        x = torch.stack([c[0] for c in b])   # (B, T)
        y = torch.stack([c[1] for c in b])   # (B, T)
        logits, _ = model(x)
        total += float(torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum"))
        count += y.numel()
        stats = model.layer_stats()
        if not stat_sums:
            stat_sums = [{} for _ in stats]
        for acc, s in zip(stat_sums, stats):
            for key, v in _numeric_items(s):
                acc[key] = acc.get(key, 0.0) + v
        n_stat += 1
    for xs, ys in rest:
        logits, _ = model(xs[None])
        total += float(torch.nn.functional.cross_entropy(logits[0], ys, reduction="sum"))
        count += ys.numel()
    model.train(was_training)
    nats = total / count
    return {"nats_per_char": nats, "bits_per_char": nats / math.log(2), "n_chars": count,
            "layer_stats": [{k: v / n_stat for k, v in acc.items()} for acc in stat_sums]}


def _numeric_items(d: dict, prefix: str = ""):
    """Flatten a stats dict to (name, float) pairs; tensors of one element and numbers only."""
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _numeric_items(v, name + ".")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            yield name, float(v)
        elif isinstance(v, torch.Tensor) and v.numel() == 1:
            yield name, float(v)


# ----------------------------------------------------------------------------- one full run

def prepare_data(held_out: bool = False, text: str | None = None):
    """(tokenizer, train ids, eval ids): validation split, or held-out last 10% of TRAIN."""
    text = load_tinyshakespeare() if text is None else text
    tok = CharTokenizer.from_text(text)
    train_ids, val_ids = split_train_val(tok.encode(text), 0.9)
    if held_out:
        train_ids, val_ids = split_train_val(train_ids, 0.9)
    return tok, torch.from_numpy(train_ids), torch.from_numpy(val_ids)


def arm_config(arm: str, vocab_size: int, model_overrides: dict | None = None) -> tuple[str, dict]:
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; expected one of {sorted(ARMS)}")
    kind, changes = ARMS[arm]
    return kind, {**BASE_MODEL, "vocab_size": vocab_size, **changes, **(model_overrides or {})}


def git_commit() -> str:
    """HEAD of the repository (+ "-dirty"); ``$HDSPIKE_COMMIT`` overrides it for runs from a snapshot."""
    if os.environ.get("HDSPIKE_COMMIT"):
        return os.environ["HDSPIKE_COMMIT"]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def train_run(arm: str, out_dir: str | os.PathLike, cfg: TrainConfig, *, model_overrides: dict | None = None,
              progress: bool = True, text: str | None = None) -> dict:
    """Train one arm (resuming from ``out_dir/ckpt.pt``), evaluate it, write ``out_dir/result.json``.

    A finished run (result.json present) is returned from the cache without recomputation.
    """
    out_dir = Path(out_dir)
    result_path = out_dir / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    tok, train_ids, eval_ids = prepare_data(cfg.held_out, text)
    kind, mcfg = arm_config(arm, tok.vocab_size, model_overrides)
    torch.manual_seed(cfg.seed)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    model = build_model(kind, mcfg)
    t_wall = time.perf_counter()
    info = train(model, train_ids, cfg, ckpt_path=out_dir / "ckpt.pt", progress=progress,
                 extra_state={"model_kind": kind, "model_config": mcfg, "tokenizer": tok.to_dict(), "arm": arm})
    t_eval = time.perf_counter()
    ev = evaluate(model, eval_ids, batch_size=cfg.eval_batch_size, progress=progress)
    eval_s = time.perf_counter() - t_eval
    result = {
        "arm": arm, "model_kind": kind, "model_config": mcfg, "train_config": asdict(cfg),
        "seed": cfg.seed, "split": "heldout_train" if cfg.held_out else "validation",
        "val_nats_per_char": ev["nats_per_char"], "val_bits_per_char": ev["bits_per_char"],
        "eval_chars": ev["n_chars"], "n_params": model.num_params(non_embedding=False),
        "steps": info["step"], "train_time_s": info["train_time_s"],
        "train_tokens_per_s": info["tokens_seen"] / max(info["train_time_s"], 1e-9),
        "eval_time_s": eval_s, "wall_time_this_process_s": time.perf_counter() - t_wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "final_train_loss": info["history"][-1]["loss"] if info["history"] else None,
        "history": info["history"], "layer_stats": ev["layer_stats"],
        "accounting": collect_accounting(model, eval_ids), "torch_threads": torch.get_num_threads(),
        "commit": git_commit(),
    }
    _write_json(result_path, result)
    return result


def collect_accounting(model, data: torch.Tensor) -> dict | None:
    """Firing rates, density, SOPs and energy estimate from :mod:`spiking_attention.accounting`.

    Returns None when the accounting module is not available (the layer_stats of
    :func:`evaluate` still hold each layer's density).
    """
    try:
        from spiking_attention import accounting  # the components engineer's module
    except ImportError:
        return None
    fn = getattr(accounting, "account_model", None)
    if fn is None:
        return None
    T = model.config.block_size
    x = data[: (min(len(data) - 1, 16 * T) // T) * T].view(-1, T)
    with torch.no_grad():
        return fn(model, x)


# ----------------------------------------------------------------------------- CLI

@torch.no_grad()
def sample(ckpt: str | os.PathLike, prompt: str = "\n", n: int = 500, temperature: float = 0.8,
           top_k: int | None = None, seed: int = 0) -> str:
    model, tok, _ = load_model(ckpt)
    idx = torch.from_numpy(tok.encode(prompt))[None]
    g = torch.Generator().manual_seed(seed)
    out = model.generate(idx, n, temperature=temperature, top_k=top_k, generator=g)
    return tok.decode(out[0].numpy())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arm", default="spiking", choices=sorted(ARMS))
    p.add_argument("--out", type=Path, help="run directory (checkpoint + result.json); resumes if present")
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--block-size", type=int, default=None, help="context length (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-seed", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--held-out", action="store_true", help="evaluate on the last 10%% of TRAIN (config choice)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="model config override, e.g. --set n_layer=2 --set score='\"overlap\"'")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--sample", action="store_true", help="sample from --ckpt instead of training")
    p.add_argument("--ckpt", type=Path)
    p.add_argument("--prompt", default="\n")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    a = p.parse_args(argv)
    if a.sample:
        ckpt = a.ckpt or (a.out / "ckpt.pt" if a.out else None)
        if ckpt is None or not Path(ckpt).exists():
            p.error("--sample needs --ckpt PATH (or --out DIR holding ckpt.pt) of a trained run")
        torch.set_num_threads(a.threads)
        print(sample(ckpt, a.prompt, a.n, a.temperature, a.top_k, a.seed))
        return 0
    if a.out is None:
        p.error("--out DIR is required for training")
    overrides = {}
    for s in a.set:
        key, _, val = s.partition("=")
        try:
            overrides[key] = json.loads(val)
        except json.JSONDecodeError:
            overrides[key] = val
    if a.block_size is not None:
        overrides["block_size"] = a.block_size
    cfg = TrainConfig(max_iters=a.iters, batch_size=a.batch_size, seed=a.seed, data_seed=a.data_seed,
                      threads=a.threads, held_out=a.held_out)
    res = train_run(a.arm, a.out, cfg, model_overrides=overrides, progress=not a.no_progress)
    print(json.dumps({k: res[k] for k in ("arm", "seed", "split", "val_nats_per_char", "val_bits_per_char",
                                          "train_tokens_per_s", "train_time_s", "peak_rss_mb", "n_params")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
