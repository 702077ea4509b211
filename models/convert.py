"""Family ``converted``: the trained dense twin turned into thermometer-coded integrate-and-fire layers.

BrainTransformers-style conversion (Tang et al. 2024, arXiv 2410.14687; ideas only): every
linear layer becomes a :class:`spiking_attention.thermometer.ThermoLinear` (inputs coded per
token, weights per output row, ``bits`` bits of magnitude and a sign), attention a
:class:`~spiking_attention.thermometer.ThermoCausalAttention` (integer ``q.k`` of counts,
spiking softmax, values accumulated once per attention spike), GELU a
:class:`~spiking_attention.thermometer.StaircaseGELU` (a ReLU channel plus ``act_neurons``
step neurons with refitted pulse sizes). What stays real-valued, and says so: the token and
position embeddings (look-ups), the residual stream, LayerNorm, the exponential inside the
softmax, and one rescale per output (counted as MACs).

The tool: :func:`convert` takes a ``gpt``-family model (dense or window attention) or a
checkpoint path (read by :func:`models.train.load_model`) and returns a :class:`ConvertedLM`;
any other layer raises naming it. :func:`unconvert` gives back a dense twin with the
dequantized weights. The converted model saves and loads through the harness's checkpoint
format (:func:`save_converted`, :func:`models.train.load_model`) and generates.

As a registered family (the comparison table's rows): the config names the source and
``bits``. ``source="auto"`` (the registered variants) converts the finished ``gpt`` run with
the same shape, attention and training recipe (seed included) found under ``source_root``:
in the comparison sweep, the same seed's ``gpt/dense`` row; a path (``{seed}`` and
``{data_seed}`` are filled from the training recipe) names one checkpoint; ``""`` builds the
converted architecture from random weights (the from-scratch control). The family's learner
(:class:`ConversionLearner`) converts when training starts, runs ``round(qat_frac *
max_iters)`` steps of quantization-aware retraining (AdamW, straight-through gradients,
``qat_lr`` decaying tenfold), then only measures the loss on the remaining batches (no
update). Conversion happens in the learner because only the training recipe knows the seed;
a hook in :func:`models.train.train_run` (``Family.init_from(model, train_config)``) would be
the cleaner home.

Commands:
    python -m models.convert --ckpt runs/x/ckpt.pt --bits 4 --out runs/x_b4 [--qat-steps 200]

Example:
    >>> dense, tok, _ = load_model("runs/dense/ckpt.pt")                       # doctest: +SKIP
    >>> snn = convert(dense, bits=8)                                            # doctest: +SKIP
    >>> snn.generate(torch.zeros(1, 1, dtype=torch.long), 20)                   # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from spiking_attention.attention import DenseCausalAttention
from spiking_attention.thermometer import (StaircaseGELU, ThermoCausalAttention, ThermoLinear, check_bits,
                                           quantize)

from .base import MLP, Block, TransformerLM, TrunkConfig, check_choice, check_int

__all__ = ["ConvertedConfig", "ConvertedLM", "ThermoMLP", "convert", "unconvert", "find_source",
           "ConversionLearner", "save_converted", "TRUNK_FIELDS", "SUPPORTED_LAYERS"]

ATTENTIONS = ("dense", "window")
TRUNK_FIELDS = tuple(f.name for f in fields(TrunkConfig))


@dataclass
class ConvertedConfig(TrunkConfig):
    bits: int = 8                 # bits of magnitude per spike count (T = 2**bits - 1 steps), 1..16
    attention: str = "dense"      # the source's attention: "dense" | "window"
    k: int = 8                    # window length for attention="window" (the gpt family's field)
    act_neurons: int = 16         # step neurons of the staircase GELU
    source: str = "auto"          # "auto" | checkpoint path (may hold {seed}, {data_seed}) | "" (from scratch)
    source_root: str = "runs"     # where "auto" looks for the finished dense run
    qat_frac: float = 0.0         # quantization-aware retraining steps, as a fraction of max_iters
    qat_lr: float = 3e-4          # its peak learning rate (cosine down to a tenth)

    def _check(self) -> None:
        check_bits(self.bits)
        check_choice("attention", self.attention, ATTENTIONS)
        check_int("k", self.k)
        check_int("act_neurons", self.act_neurons)
        if not 0.0 <= self.qat_frac <= 1.0:
            raise ValueError(f"qat_frac must be in [0, 1], got {self.qat_frac!r}")
        if not self.qat_lr > 0:
            raise ValueError(f"qat_lr must be > 0, got {self.qat_lr!r}")


class ThermoMLP(nn.Module):
    """The dense twin's MLP on spikes: ThermoLinear -> staircase GELU -> ThermoLinear. (B, T, C) -> (B, T, C)."""

    def __init__(self, config: ConvertedConfig):
        super().__init__()
        C = config.n_embd
        self.c_fc = ThermoLinear(C, 4 * C, bits=config.bits, bias=config.bias)
        self.act = StaircaseGELU(config.act_neurons)
        self.c_proj = ThermoLinear(4 * C, C, bits=config.bits, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class ConvertedLM(TransformerLM):
    """The dense twin's body with thermometer layers; parameter names are the twin's, plus each
    staircase's ``pulses`` and ``offset``. Shapes: idx (B, T) -> logits (B, T, vocab_size)."""

    def __init__(self, config: ConvertedConfig):
        window = config.k if config.attention == "window" else None
        super().__init__(config, lambda i: ThermoCausalAttention(
            config.n_embd, config.n_head, bits=config.bits, max_seq_len=config.block_size, window=window,
            bias=config.bias))
        for blk in self.transformer.h:
            blk.mlp = ThermoMLP(config)
            nn.init.normal_(blk.mlp.c_proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        self.lm_head = ThermoLinear(config.n_embd, config.vocab_size, bits=config.bits)
        self.lm_head.weight = self.transformer.wte.weight   # weight tying, as in the twin
        # 1 once weights came from a trained source (convert, or a loaded checkpoint): the
        # family's learner then does not convert again
        self.register_buffer("converted_flag", torch.zeros((), dtype=torch.uint8))

    @property
    def is_converted(self) -> bool:
        return bool(self.converted_flag)

    def packed(self, **kw):
        raise NotImplementedError("a converted model has no packed-code k-WTA form; its add-only path is "
                                  "ThermoLinear.integer_product")


# ----------------------------------------------------------------------------- the conversion tool

#: source layer types the conversion understands (anything else is refused, naming it)
SUPPORTED_LAYERS = (nn.ModuleDict, nn.ModuleList, nn.Embedding, nn.Dropout, nn.LayerNorm, Block,
                    MLP, nn.Linear, DenseCausalAttention)


def _check_convertible(model: nn.Module) -> None:
    from .gpt import GPT
    if not isinstance(model, GPT):
        raise ValueError(f"convert takes a model of the 'gpt' family (models.gpt.GPT), got "
                         f"{type(model).__name__}; other families' layers have no thermometer form yet")
    if getattr(model.config, "attention", None) not in ATTENTIONS or getattr(model.config, "local_window", None):
        raise ValueError(f"cannot convert gpt attention={model.config.attention!r} "
                         f"(local_window={model.config.local_window!r}): supported are {ATTENTIONS} "
                         f"(top-k selection has no spike-count form here)")
    for name, mod in model.named_modules():
        if name and type(mod) not in SUPPORTED_LAYERS:   # exact types: a subclass may compute something else
            raise ValueError(f"cannot convert layer {name!r} of type {type(mod).__name__}: supported layer types "
                             f"are {[t.__name__ for t in SUPPORTED_LAYERS]}")


def _calibration_samples(model: nn.Module, calib: torch.Tensor) -> list[torch.Tensor]:
    """The GELU inputs (c_fc outputs) of each block of the dense ``model`` on ``calib`` (B, T)."""
    got: list[torch.Tensor] = []
    hooks = [blk.mlp.c_fc.register_forward_hook(lambda m, a, out: got.append(out.detach().reshape(-1)))
             for blk in model.transformer.h]
    try:
        with torch.no_grad():
            model(calib)
    finally:
        for h in hooks:
            h.remove()
    return got


def convert(source, bits: int, *, act_neurons: int = 16, calib: torch.Tensor | None = None,
            source_label: str = "") -> ConvertedLM:
    """The thermometer-coded conversion of a ``gpt`` model (or of the checkpoint at path ``source``).

    ``calib`` (B, T) token ids, if given, are run through the dense model and each layer's
    staircase is refitted to its real GELU inputs; otherwise the staircases keep their
    data-free fit (N(0, 1.5^2) quantiles). Unsupported layers and ``bits`` outside 1..16 raise
    ValueError naming them.
    """
    check_bits(bits)
    if isinstance(source, (str, os.PathLike)):
        from .train import load_model
        source_label = source_label or str(source)
        source, _, _ = load_model(source)
    _check_convertible(source)
    src = asdict(source.config)
    cfg = ConvertedConfig(**{k: src[k] for k in TRUNK_FIELDS}, bits=bits, attention=src["attention"],
                          k=src["k"], act_neurons=act_neurons, source=source_label)
    model = ConvertedLM(cfg)
    load_dense_weights(model, source)
    if calib is not None:
        for blk, samples in zip(model.transformer.h, _calibration_samples(source, calib)):
            blk.mlp.act.refit(samples)
    model.eval()
    return model


def load_dense_weights(model: ConvertedLM, source: nn.Module) -> None:
    """Copy the dense twin's weights into ``model`` (same names); only staircase parameters may be missing."""
    for key in TRUNK_FIELDS:
        if getattr(model.config, key) != getattr(source.config, key):
            raise ValueError(f"the source's {key}={getattr(source.config, key)!r} differs from the converted "
                             f"config's {key}={getattr(model.config, key)!r}")
    res = model.load_state_dict(source.state_dict(), strict=False)
    missing = [k for k in res.missing_keys if not k.endswith(("act.pulses", "act.offset", "act.thresholds",
                                                              "converted_flag"))]
    if missing or res.unexpected_keys:
        raise ValueError(f"the source's weights do not map onto the converted model: missing {missing}, "
                         f"unexpected {res.unexpected_keys}")
    model.converted_flag.fill_(1)


@torch.no_grad()
def unconvert(model: ConvertedLM):
    """A dense twin (``gpt``) whose linear weights are the converted model's dequantized weights
    (``counts * scale``, within half a step of the originals) and whose activation is GELU again."""
    from .gpt import GPT, GPTConfig
    c = asdict(model.config)
    dense = GPT(GPTConfig(**{k: c[k] for k in TRUNK_FIELDS}, attention=c["attention"], k=c["k"]))
    sd = {k: v for k, v in model.state_dict().items() if ".act." not in k and k != "converted_flag"}
    for name, mod in model.named_modules():
        if isinstance(mod, ThermoLinear):
            q, s = mod.quantized_weight()
            sd[f"{name}.weight"] = q * s
    sd["transformer.wte.weight"] = sd["lm_head.weight"]
    dense.load_state_dict(sd)
    return dense.eval()


def save_converted(path, model: ConvertedLM, tokenizer, **extra) -> None:
    """Write ``model`` in the harness's checkpoint format, so :func:`models.train.load_model` reads it."""
    from .train import save_checkpoint
    save_checkpoint(path, {"family": "converted", "variant": None, "config": asdict(model.config),
                           "tokenizer": tokenizer.to_dict(), "model": model.state_dict(), **extra})


# ----------------------------------------------------------------------------- as a registered family

def find_source(config: ConvertedConfig, train_cfg) -> Path:
    """The dense checkpoint a ``converted`` run starts from (see the module docstring for ``source``)."""
    from .train import TrainConfig
    seed = train_cfg.seed
    data_seed = train_cfg.data_seed if train_cfg.data_seed is not None else seed
    if config.source != "auto":
        path = Path(config.source.format(seed=seed, data_seed=data_seed))
        if not path.is_file():
            raise FileNotFoundError(f"converted: source={config.source!r} names {str(path)!r}, which is not a file")
        return path
    want = {k: getattr(config, k) for k in TRUNK_FIELDS}
    found = []
    root = Path(config.source_root)
    for res_path in sorted(root.rglob("result.json")) if root.is_dir() else []:
        try:
            r = json.loads(res_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        c = r.get("config") or {}
        if r.get("family") != "gpt" or any(c.get(k) != v for k, v in want.items()):
            continue
        if c.get("attention") != config.attention or c.get("local_window") is not None:
            continue
        if config.attention == "window" and c.get("k") != config.k:
            continue
        try:
            same_recipe = TrainConfig(**r["train_config"]).identity() == train_cfg.identity()
        except (KeyError, TypeError, ValueError):
            continue
        if same_recipe and (res_path.parent / "ckpt.pt").is_file():
            found.append(res_path.parent / "ckpt.pt")
    if not found:
        raise FileNotFoundError(
            f"converted (source='auto'): no finished gpt/{config.attention} run under {str(root)!r} with this "
            f"shape {want} and training recipe (seed {seed}, data_seed {data_seed}, "
            f"{train_cfg.max_iters} steps); train the dense twin first (the comparison's gpt/dense row runs "
            f"before this one) or set source to a checkpoint path")
    return found[0]   # identical recipes give identical runs; the first in path order


class ConversionLearner:
    """The ``converted`` family's learner: convert at the start, retrain briefly, then only measure.

    Steps ``< round(qat_frac * max_iters)``: AdamW on the converted model (straight-through
    gradients), learning rate ``qat_lr`` with a 10% warm-up and cosine decay to ``qat_lr / 10``.
    Later steps: the loss of the batch, no update. With ``source=""`` every step trains (the
    converted architecture from scratch, with the training recipe's own schedule).
    """

    def __init__(self, model: ConvertedLM, cfg):
        from dataclasses import replace

        from .train import AdamWLearner
        conf = model.config
        self.source = None
        if conf.source == "":
            self.qat_steps, inner = cfg.max_iters, cfg
        else:
            if not model.is_converted:   # a resumed run's weights are loaded after this, from its checkpoint
                from .train import load_model
                self.source = str(find_source(conf, cfg))
                dense, _, _ = load_model(self.source)
                _check_convertible(dense)
                load_dense_weights(model, dense)
            self.qat_steps = round(conf.qat_frac * cfg.max_iters)
            inner = replace(cfg, max_iters=max(1, self.qat_steps), learning_rate=conf.qat_lr,
                            min_lr=conf.qat_lr / 10, warmup_iters=self.qat_steps // 10, lr_decay_iters=None)
        self.inner = AdamWLearner(model, inner)

    def step(self, model, x, y, step: int) -> float:
        if step < self.qat_steps:
            return self.inner.step(model, x, y, step)
        with torch.no_grad():
            _, loss = model(x, y)
        return float(loss)

    def state_dict(self) -> dict:
        return {"inner": self.inner.state_dict(), "source": self.source, "qat_steps": self.qat_steps}

    def load_state_dict(self, d: dict) -> None:
        self.inner.load_state_dict(d["inner"])
        self.source = d.get("source", self.source)


# ----------------------------------------------------------------------------- CLI

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Convert a trained gpt checkpoint to thermometer-coded spikes.")
    p.add_argument("--ckpt", type=Path, required=True, help="checkpoint of a gpt (dense or window) run")
    p.add_argument("--bits", type=int, default=8, help="bits of magnitude per spike count, 1..16")
    p.add_argument("--out", type=Path, required=True, help="directory for ckpt.pt and result.json")
    p.add_argument("--act-neurons", type=int, default=16)
    p.add_argument("--qat-steps", type=int, default=0, help="quantization-aware retraining steps (harness)")
    p.add_argument("--qat-lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    from hdc.io import write_json

    from .train import AdamWLearner, TrainConfig, evaluate, load_model, prepare_data, train
    torch.set_num_threads(a.threads)
    dense, tok, ck = load_model(a.ckpt)
    _, train_ids, val_ids = prepare_data()
    gen = torch.Generator().manual_seed(a.seed)
    T = dense.config.block_size
    starts = torch.randint(0, len(train_ids) - T, (16,), generator=gen)
    calib = torch.stack([train_ids[s:s + T] for s in starts.tolist()])
    model = convert(dense, a.bits, act_neurons=a.act_neurons, calib=calib, source_label=str(a.ckpt))
    res = {"source": str(a.ckpt), "bits": a.bits, "val_nats_per_char_converted": evaluate(model, val_ids)["nats_per_char"]}
    if a.qat_steps:
        cfg = TrainConfig(max_iters=a.qat_steps, learning_rate=a.qat_lr, min_lr=a.qat_lr / 10,
                          warmup_iters=a.qat_steps // 10, seed=a.seed, threads=a.threads)
        train(model, train_ids, cfg, learner=AdamWLearner(model, cfg), progress=False)
        res["qat_steps"] = a.qat_steps
        res["val_nats_per_char_after_qat"] = evaluate(model, val_ids)["nats_per_char"]
    save_converted(a.out / "ckpt.pt", model, tok, source=str(a.ckpt))
    write_json(a.out / "result.json", res)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
