"""The training and evaluation harness of every model family: data, train loop, evaluation, runs, CLI.

Training is nanoGPT's CPU recipe by default: AdamW (betas 0.9/0.99, weight decay 0.1 on
matrices), linear warm-up for 100 steps then cosine decay of the learning rate from 1e-3 to
1e-4, gradient clipping at 1.0, batches of random windows drawn from a generator seeded per
run, so every model trained with the same ``data_seed`` sees the same tokens.

The update rule is pluggable: a **learner** is any object with

    ``step(model, x, y, step) -> float``   one update on a batch (B, T) of inputs and targets;
                                            returns the batch loss (nats per token)
    ``state_dict() -> dict`` / ``load_state_dict(d)``   what a checkpoint must hold to resume

:class:`AdamWLearner` (backprop) is the default; a family that learns by a local rule or a
reward signal names its own factory in its registry entry (``Family.learner``) and the loop
stays as it is.

Checkpoints are written atomically (:func:`hdc.io.atomic_write`) and hold the model, the
learner, the step and every RNG state, so a resumed run continues exactly as an uninterrupted
one would; they are read back with ``torch.load(weights_only=True)`` (nothing is unpickled).
A checkpoint or a cached result made with another family, config or training recipe is
refused with a message naming the difference.

Evaluation covers the *whole* validation split in non-overlapping context-length chunks and
reports nats per character (bits = nats / ln 2).

Data parallel: the same command under ``torchrun --standalone --nproc_per_node=N`` trains with
DDP over gloo (CPU): every rank draws the same global batch from the run's generator and takes
its own slice, so the tokens seen do not depend on N; rank 0 alone writes checkpoints and the
result. ``--grad-accum M`` splits each batch into M micro-batches (loss / M each) in one
process: with M = N it is the twin of N ranks (see :meth:`AdamWLearner.step`).

Commands:
    python -m models.train --family spiking_kwta --variant hamming --out runs/spiking_s0
    torchrun --standalone --nproc_per_node=2 -m models.train --family spiking_kwta --out runs/ddp
    python -m models.train --sample --ckpt runs/spiking_s0/ckpt.pt --prompt "ROMEO:"

Example:
    >>> res = train_run("gpt", "runs/demo", TrainConfig(max_iters=10), variant="dense",
    ...                 overrides={"n_layer": 1})                                   # doctest: +SKIP
    >>> res["val_nats_per_char"]                                                    # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import resource
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

import torch

from hdc.io import atomic_write, write_json
from hdc.provenance import commit_stamp
from spiking_attention.stats import numeric_items, reporting_layers

from . import FAMILIES, get_family
from .data import CharTokenizer, eval_chunks, get_batch, load_tinyshakespeare, split_train_val

CKPT_FORMAT = "hdspike-lm-checkpoint/2"

# TrainConfig fields that do not change what a run computes: they may differ on resume.
_NOT_IDENTITY = ("threads", "ckpt_every", "log_every", "eval_batch_size")
# Seconds a rank waits in a collective for the others before failing (torch's default is 30
# minutes; a rank lost on one machine should end the run in about a minute). Env override for tests.
DIST_TIMEOUT_S = float(os.environ.get("HDSPIKE_DIST_TIMEOUT_S", "60"))


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
    grad_accum: int = 1                # micro-batches per step in each process (loss / grad_accum each)

    def __post_init__(self) -> None:
        for name in ("max_iters", "batch_size", "ckpt_every", "log_every", "eval_batch_size", "grad_accum"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if self.warmup_iters < 0:
            raise ValueError(f"warmup_iters must be >= 0, got {self.warmup_iters}")
        if not 0 < self.min_lr <= self.learning_rate:
            raise ValueError(f"need 0 < min_lr <= learning_rate, got min_lr={self.min_lr}, "
                             f"learning_rate={self.learning_rate}")
        if not self.grad_clip >= 0:
            raise ValueError(f"grad_clip must be >= 0 (0 disables clipping), got {self.grad_clip}")

    def identity(self, world_size: int = 1) -> dict:
        """The fields that decide what the run computes (compared on resume and cache hits).

        The split of each batch into ``grad_accum * world_size`` micro-batches changes the
        bits, so it is part of the identity as ``micro_batches``, but only when it is not 1:
        the identity of a one-process run is the dict it was before the field existed, so
        its checkpoints and cached results still match. N ranks and ``grad_accum=N`` in one
        process compute the same thing and share an identity.
        """
        out = {k: v for k, v in asdict(self).items() if k not in _NOT_IDENTITY and k != "grad_accum"}
        micro = self.grad_accum * world_size
        if micro != 1:
            out["micro_batches"] = micro
        return out

    def check_split(self, world_size: int = 1) -> int:
        """Rows per micro-batch; raise unless ``batch_size`` splits evenly over ranks x grad_accum."""
        parts = self.grad_accum * world_size
        if self.batch_size % parts:
            raise ValueError(f"batch_size={self.batch_size} is not divisible by world_size x grad_accum = "
                             f"{world_size} x {self.grad_accum} = {parts}: each rank's micro-batches must "
                             f"be equal (choose batch_size a multiple of {parts})")
        return self.batch_size // parts


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


# ----------------------------------------------------------------------------- learners

class AdamWLearner:
    """Backprop on the model's cross-entropy with AdamW, the schedule of :func:`get_lr` and
    gradient-norm clipping (the default learner)."""

    def __init__(self, model, cfg: TrainConfig):
        self.cfg = cfg
        betas = (cfg.beta1, cfg.beta2)
        if hasattr(model, "configure_optimizer"):
            self.opt = model.configure_optimizer(cfg.weight_decay, cfg.learning_rate, betas)
        else:
            self.opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, betas=betas,
                                         weight_decay=cfg.weight_decay)

    def step(self, model, x: torch.Tensor, y: torch.Tensor, step: int) -> float:
        lr = get_lr(step, self.cfg)
        for g in self.opt.param_groups:
            g["lr"] = lr
        _, loss = model(x, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        return float(loss.detach())

    def step_micro(self, model, micro: list[tuple[torch.Tensor, torch.Tensor]], step: int, *,
                   n_total: int) -> float:
        """One update from this process's micro-batches, out of ``n_total`` over all ranks.

        Each local micro-batch contributes ``grad(loss_j / len(micro))``; DDP (``model``
        wrapped) averages the ranks' sums, syncing only on the last backward (``no_sync``
        before it), so every micro-batch weighs 1 / n_total either way. Scaling a loss
        by 1/2**p scales every gradient by exactly 1/2**p (a power of two changes only the
        exponent, IEEE 754), and DDP divides each rank's gradient by the world size before
        its sum (torch.nn.parallel.DistributedDataParallel docs), so with n_total = 2 one
        process accumulating g0/2 + g1/2 and two ranks all-reducing g0/2 + g1/2 add the same
        two numbers: the parameters are bit-identical. For more than two parts the float
        sums may be grouped differently (gloo's ring order vs sequential accumulation).
        Returns the batch loss: the mean of all micro-batch losses (all-reduced under DDP).
        """
        lr = get_lr(step, self.cfg)
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        ddp = isinstance(model, torch.nn.parallel.DistributedDataParallel)
        total = torch.zeros(())
        for j, (x, y) in enumerate(micro):
            with model.no_sync() if ddp and j < len(micro) - 1 else nullcontext():
                _, loss = model(x, y)
                (loss / len(micro)).backward()
            total += loss.detach() / n_total
        if ddp:
            torch.distributed.all_reduce(total)
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        return float(total)

    def lr(self, step: int) -> float:
        return get_lr(step, self.cfg)

    def state_dict(self) -> dict:
        return {"optimizer": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state["optimizer"])


def make_learner(family: str | None, model, cfg: TrainConfig):
    """The family's own learner (``Family.learner``) or :class:`AdamWLearner`."""
    factory = FAMILIES[family].learner if family in FAMILIES else None
    return (factory or AdamWLearner)(model, cfg)


# ----------------------------------------------------------------------------- checkpoints

def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """torch.save through the one atomic writer (never a half-written file)."""
    with atomic_write(path, "wb") as f:
        torch.save({"format": CKPT_FORMAT, **state}, f)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint (weights only: nothing is unpickled); errors name the path.

    Checkpoints of the first format (``model_kind`` "gpt" / "spiking", before the family
    registry) are translated on load: same weights, same optimizer state.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint path {str(path)!r} is a directory; pass the ckpt.pt file inside it")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated zip, foreign file, disallowed global
        raise ValueError(f"{str(path)!r} is not a readable hdspike checkpoint "
                         f"(truncated or not a torch.save file): {exc}") from exc
    if not isinstance(ck, dict) or "model" not in ck:
        raise ValueError(f"{str(path)!r} is not an hdspike checkpoint (no model state)")
    if "format" not in ck and "model_kind" in ck:
        ck = _from_format_1(ck, path)
    if ck.get("format") != CKPT_FORMAT:
        raise ValueError(f"{str(path)!r}: unknown checkpoint format {ck.get('format')!r}; "
                         f"this version reads {CKPT_FORMAT!r}")
    return ck


def _from_format_1(ck: dict, path: Path) -> dict:
    kinds = {"gpt": "gpt", "spiking": "spiking_kwta"}
    kind = ck.pop("model_kind")
    if kind not in kinds:
        raise ValueError(f"{str(path)!r}: unknown model_kind {kind!r} of a format-1 checkpoint; "
                         f"retrain it with python -m models.train")
    config = dict(ck.pop("model_config"))
    if config.get("neuron", "") is None:   # format 1 wrote None for the layer's default neuron
        config["neuron"] = "heaviside"
    out = {**ck, "format": CKPT_FORMAT, "family": kinds[kind], "config": config, "variant": ck.pop("arm", None)}
    if "optimizer" in ck:
        out["learner"] = {"optimizer": out.pop("optimizer")}
    return out


def load_model(path: str | os.PathLike):
    """Rebuild a trained model and its tokenizer from a checkpoint: ``(model, tokenizer, ckpt)``."""
    ck = load_checkpoint(path)
    model = get_family(ck["family"]).build(ck["config"])
    _load_weights(model, ck, path)
    model.eval()
    return model, CharTokenizer.from_dict(ck["tokenizer"]), ck


def _load_weights(model, ck: dict, path) -> None:
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as exc:
        raise ValueError(f"{str(path)!r}: the weights do not fit a {ck.get('family')!r} model with "
                         f"config {ck.get('config')}: {exc}") from exc


def _differences(want: dict, have: dict) -> list[str]:
    keys = sorted(set(want) | set(have))
    return [f"{k}: {have.get(k, '<missing>')!r} there, {want.get(k, '<missing>')!r} asked" for k in keys
            if want.get(k, "<missing>") != have.get(k, "<missing>")]


def check_same_run(identity: dict, stored: dict, what: str) -> None:
    """Refuse to continue or reuse ``what`` (a checkpoint or result) made by a different run."""
    diffs = []
    for key in ("family", "config", "train"):
        if key not in identity:
            continue
        want, have = identity[key], stored.get(key)
        if isinstance(want, dict) and isinstance(have, dict):
            diffs += [f"{key}.{d}" for d in _differences(want, have)]
        elif want != have:
            diffs.append(f"{key}: {have!r} there, {want!r} asked")
    if diffs:
        raise ValueError(f"{what} was made by a different run ({'; '.join(diffs)}); "
                         f"use another output directory, or delete it to start over")


# ----------------------------------------------------------------------------- data parallel

def _world() -> tuple[int, int]:
    """(world_size, rank) of the default process group, (1, 0) without one."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def init_distributed() -> tuple[int, int]:
    """Join the process group torchrun describes (env ``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``):
    gloo, a timeout of :data:`DIST_TIMEOUT_S`, one torch thread per rank. (1, 0) outside torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 1, 0
    dist = torch.distributed
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=timedelta(seconds=DIST_TIMEOUT_S))
    return _world()


def finish_distributed() -> None:
    """Barrier, then destroy the process group (without the barrier gloo could abort at exit
    while another rank still used a connection)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _check_same_config_across_ranks(identity: dict, rank: int, world: int) -> None:
    """Every rank must run the same family, config and recipe; name the ranks that differ."""
    gathered = [None] * world
    torch.distributed.all_gather_object(gathered, identity)
    diffs = []
    for r, other in enumerate(gathered):
        if other != gathered[0]:
            d = []
            for key in ("family", "config", "train"):
                a, b = gathered[0].get(key), other.get(key)
                if isinstance(a, dict) and isinstance(b, dict):
                    d += [f"{key}.{x}" for x in _differences(a, b)]
                elif a != b:
                    d.append(f"{key}: {b!r} there, {a!r} asked")
            diffs.append(f"rank {r} differs from rank 0 ({'; '.join(d)})")
    if diffs:
        raise ValueError(f"ranks were started with different configs: {'; '.join(diffs)}; "
                         f"every rank must get the same command line")


# ----------------------------------------------------------------------------- training

def train(model, train_data: torch.Tensor, cfg: TrainConfig, *, ckpt_path: str | os.PathLike | None = None,
          family: str | None = None, extra_state: dict | None = None, learner=None,
          stop_after: int | None = None, progress: bool = True) -> dict:
    """Train ``model`` in place on ``train_data`` (N,) int64; resume from ``ckpt_path`` if it exists.

    ``family`` picks the learner (its registry entry's, else AdamW); ``learner`` overrides it.
    ``extra_state`` (config, tokenizer, ...) is stored in every checkpoint so :func:`load_model`
    can rebuild the model. ``stop_after`` ends the run after that many steps (with a
    checkpoint), which is how the resume tests interrupt a run.
    Returns ``{"step", "history", "train_time_s", "tokens_seen"}``.
    """
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    block_size = model.config.block_size
    world, rank = _world()
    micro_rows = cfg.check_split(world)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed if cfg.data_seed is None else cfg.data_seed)
    learner = learner if learner is not None else make_learner(family, model, cfg)
    state = {"family": family, **(extra_state or {})}
    identity = {"family": family, "train": cfg.identity(world)}
    if "config" in state:
        identity["config"] = state["config"]
    split = world * cfg.grad_accum > 1
    if split and not hasattr(learner, "step_micro"):
        raise ValueError(f"the learner of family {family!r} ({type(learner).__name__}) has no step_micro: "
                         f"grad_accum={cfg.grad_accum} and world_size={world} need one (AdamWLearner has it)")
    if world > 1:
        _check_same_config_across_ranks(identity, rank, world)
    step, history, train_time = 0, [], 0.0
    if ckpt_path is not None and Path(ckpt_path).exists():
        ck = load_checkpoint(ckpt_path)
        check_same_run(identity, {**ck, "train": TrainConfig(**ck["train_config"]).identity(ck.get("world_size", 1))},
                       f"checkpoint {str(ckpt_path)!r}")
        _load_weights(model, ck, ckpt_path)
        learner.load_state_dict(ck["learner"])
        step, history, train_time = ck["step"], list(ck["history"]), ck["train_time_s"]
        gen.set_state(ck["gen_state"])
        torch.set_rng_state(ck["torch_rng_state"])

    def checkpoint():
        if ckpt_path is not None and rank == 0:  # every rank holds the same state: one writer
            extra = {"world_size": world} if world > 1 else {}
            save_checkpoint(ckpt_path, {
                **state, "model": model.state_dict(), "learner": learner.state_dict(),
                "step": step, "history": history, "train_time_s": train_time,
                "gen_state": gen.get_state(), "torch_rng_state": torch.get_rng_state(),
                "train_config": asdict(cfg), **extra})

    net = model
    if world > 1:
        # parameters start equal on every rank (same seed); DDP broadcasts rank 0's anyway
        net = torch.nn.parallel.DistributedDataParallel(model)

    end = cfg.max_iters if stop_after is None else min(cfg.max_iters, stop_after)
    model.train()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.max_iters, initial=step, desc="train", mininterval=5.0, file=sys.stderr)
    while step < end:
        t0 = time.perf_counter()
        x, y = get_batch(train_data, block_size, cfg.batch_size, gen)
        if split:  # every rank drew the same global batch; rank r takes micro-batches r*M .. r*M+M-1
            first = rank * cfg.grad_accum
            micro = [(x[(first + j) * micro_rows:(first + j + 1) * micro_rows],
                      y[(first + j) * micro_rows:(first + j + 1) * micro_rows]) for j in range(cfg.grad_accum)]
            lv = learner.step_micro(net, micro, step, n_total=world * cfg.grad_accum)
        else:
            lv = learner.step(model, x, y, step)
        train_time += time.perf_counter() - t0
        step += 1
        if not math.isfinite(lv):
            raise FloatingPointError(f"training loss became {lv} at step {step}")
        if step % cfg.log_every == 0 or step == 1:
            history.append({"step": step, "loss": lv, "lr": get_lr(step - 1, cfg)})
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
    averages each reporting layer's statistics (stats protocol) over the full-length batches.
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
    layers = [m for _, m in reporting_layers(model)]
    for b in it:
        x = torch.stack([c[0] for c in b])   # (B, T)
        y = torch.stack([c[1] for c in b])   # (B, T)
        logits, _ = model(x)
        total += float(torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum"))
        count += y.numel()
        if not stat_sums:
            stat_sums = [{} for _ in layers]
        for acc, layer in zip(stat_sums, layers):
            for key, v in numeric_items(layer.layer_stats()):
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


# ----------------------------------------------------------------------------- one full run

def prepare_data(held_out: bool = False, text: str | None = None):
    """(tokenizer, train ids, eval ids): validation split, or held-out last 10% of TRAIN."""
    text = load_tinyshakespeare() if text is None else text
    tok = CharTokenizer.from_text(text)
    train_ids, val_ids = split_train_val(tok.encode(text), 0.9)
    if held_out:
        train_ids, val_ids = split_train_val(train_ids, 0.9)
    return tok, torch.from_numpy(train_ids), torch.from_numpy(val_ids)


def run_config(family: str, vocab_size: int, variant: str | None = None, overrides: dict | None = None,
               train_ids=None) -> dict:
    """The full config dict of a run: the variant's values, the data's vocabulary, then overrides,
    then (given ``train_ids``) the family's ``fit_config`` hook on the training text.

    Shape fields left out take the family Config's defaults (nanoGPT's CPU shape: 4 layers,
    4 heads, width 128, context 64); the returned dict holds every field, so it is what
    checkpoints and results store.
    """
    fam = get_family(family)
    values = fam.variant_config(variant, vocab_size=vocab_size, **(overrides or {}))
    if fam.fit_config is not None and train_ids is not None:
        values = fam.fit_config(asdict(fam.make_config(values)), train_ids)
    return asdict(fam.make_config(values))


def train_run(family: str, out_dir: str | os.PathLike, cfg: TrainConfig, *, variant: str | None = None,
              overrides: dict | None = None, progress: bool = True, text: str | None = None) -> dict:
    """Train one model (resuming from ``out_dir/ckpt.pt``), evaluate it, write ``out_dir/result.json``.

    A finished run (result.json present) is returned from the cache without recomputation,
    after checking that it was made by the same family, config and training recipe.
    """
    out_dir = Path(out_dir)
    result_path = out_dir / "result.json"
    tok, train_ids, eval_ids = prepare_data(cfg.held_out, text)
    config = run_config(family, tok.vocab_size, variant, overrides, train_ids=train_ids)
    world, rank = _world()
    identity = {"family": family, "config": config, "train": cfg.identity(world)}
    if result_path.exists():
        cached = json.loads(result_path.read_text())
        check_same_run(identity, {**cached, "train": TrainConfig(**cached["train_config"]).identity(
            cached.get("world_size", 1))}, f"cached result {str(result_path)!r}")
        return cached
    torch.manual_seed(cfg.seed)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    model = get_family(family).build(config)
    t_wall = time.perf_counter()
    info = train(model, train_ids, cfg, ckpt_path=out_dir / "ckpt.pt", progress=progress and rank == 0,
                 family=family, extra_state={"variant": variant, "config": config, "tokenizer": tok.to_dict()})
    if world > 1:
        # training is over and rank 0 has written the final checkpoint: leave the group before
        # the (rank 0 only) evaluation, so no rank waits in a collective past the timeout
        finish_distributed()
        if rank != 0:
            return {"rank": rank, "world_size": world, "steps": info["step"],
                    "train_time_s": info["train_time_s"]}
    t_eval = time.perf_counter()
    ev = evaluate(model, eval_ids, batch_size=cfg.eval_batch_size, progress=progress)
    eval_s = time.perf_counter() - t_eval
    result = {
        "family": family, "variant": variant, "config": config, "train_config": asdict(cfg),
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
        "commit": commit_stamp(),
    }
    if world > 1:
        result["world_size"] = world
    write_json(result_path, result)
    return result


def collect_accounting(model, data: torch.Tensor) -> dict:
    """Firing rates, density, SOPs and the energy estimate of one forward pass over up to 16
    context-length chunks of ``data`` (:func:`spiking_attention.accounting.account_model`)."""
    from spiking_attention.accounting import account_model

    T = model.config.block_size
    x = data[: (min(len(data) - 1, 16 * T) // T) * T].view(-1, T)
    with torch.no_grad():
        return account_model(model, x)


# ----------------------------------------------------------------------------- CLI

@torch.no_grad()
def sample(ckpt: str | os.PathLike, prompt: str = "\n", n: int = 500, temperature: float = 0.8,
           top_k: int | None = None, seed: int = 0) -> str:
    model, tok, _ = load_model(ckpt)
    idx = torch.from_numpy(tok.encode(prompt))[None]
    g = torch.Generator().manual_seed(seed)
    out = model.generate(idx, n, temperature=temperature, top_k=top_k, generator=g)
    return tok.decode(out[0].numpy())


def parse_overrides(items: list[str]) -> dict:
    """``["n_layer=2", "score=overlap"]`` -> ``{"n_layer": 2, "score": "overlap"}`` (values as JSON, else text)."""
    out = {}
    for s in items:
        key, sep, val = s.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {s!r}")
        try:
            out[key] = json.loads(val)
        except json.JSONDecodeError:
            out[key] = val
    return out


def import_plugins(modules: list[str]) -> None:
    """Import modules that register more families (``--import my_pkg.my_family``)."""
    for name in modules:
        importlib.import_module(name)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import a module that registers more families (repeatable)")
    p.add_argument("--family", help="model family (registry name)")
    p.add_argument("--variant", default=None, help="named config values of the family (default: its Config defaults)")
    p.add_argument("--list", action="store_true", help="list the registered families and variants")
    p.add_argument("--out", type=Path, help="run directory (checkpoint + result.json); resumes if present")
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--block-size", type=int, default=None, help="context length (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-seed", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--held-out", action="store_true", help="evaluate on the last 10%% of TRAIN (config choice)")
    p.add_argument("--ckpt-every", type=int, default=250, help="steps between checkpoints")
    p.add_argument("--grad-accum", type=int, default=1,
                   help="micro-batches per step in this process (loss / N each); N ranks' twin")
    p.add_argument("--text-file", type=Path, default=None,
                   help="train on this UTF-8 text instead of tiny-shakespeare")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="config override, e.g. --set n_layer=2 --set score=overlap")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--sample", action="store_true", help="sample from --ckpt instead of training")
    p.add_argument("--ckpt", type=Path)
    p.add_argument("--prompt", default="\n")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    a = p.parse_args(argv)
    import_plugins(a.imports)
    if a.list:
        for name, fam in sorted(FAMILIES.items()):
            print(f"{name}: {fam.description}  variants: {', '.join(fam.variants) or '-'}")
        return 0
    if a.sample:
        ckpt = a.ckpt or (a.out / "ckpt.pt" if a.out else None)
        if ckpt is None or not Path(ckpt).exists():
            p.error("--sample needs --ckpt PATH (or --out DIR holding ckpt.pt) of a trained run")
        torch.set_num_threads(a.threads)
        print(sample(ckpt, a.prompt, a.n, a.temperature, a.top_k, a.seed))
        return 0
    if a.out is None or a.family is None:
        p.error("training needs --family NAME and --out DIR (see --list)")
    if a.family not in FAMILIES:
        p.error(f"unknown family {a.family!r}; registered: {sorted(FAMILIES)}")
    try:
        overrides = parse_overrides(a.set)
    except ValueError as exc:
        p.error(str(exc))
    if a.block_size is not None:
        overrides["block_size"] = a.block_size
    try:
        cfg = TrainConfig(max_iters=a.iters, batch_size=a.batch_size, seed=a.seed, data_seed=a.data_seed,
                          threads=a.threads, held_out=a.held_out, grad_accum=a.grad_accum,
                          ckpt_every=a.ckpt_every)
    except ValueError as exc:
        p.error(str(exc))
    text = a.text_file.read_text(encoding="utf-8") if a.text_file is not None else None
    world, rank = init_distributed()
    res = train_run(a.family, a.out, cfg, variant=a.variant, overrides=overrides, progress=not a.no_progress,
                    text=text)
    finish_distributed()  # a cached result returns before training's own barrier
    if rank == 0:
        print(json.dumps({k: res[k] for k in ("family", "variant", "seed", "split", "val_nats_per_char",
                                              "val_bits_per_char", "train_tokens_per_s", "train_time_s",
                                              "peak_rss_mb", "n_params")}))
    if world > 1:
        _exit_rank(0)
    return 0


def _exit_rank(code: int) -> None:
    """End a torchrun rank now, skipping interpreter finalisation. Even after the barrier and
    ``destroy_process_group``, about 1 rank exit in 30 here aborted in finalisation ("terminate
    called without an active exception", no Python frame left: a still-joinable gloo thread is
    destroyed), so the rank died with SIGABRT after its work was done and saved. Every file this
    run writes is already fsynced and renamed (``atomic_write``); only stdio needs flushing."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    raise SystemExit(main())
