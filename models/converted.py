"""Family ``converted``: the trained dense twin on thermometer-coded integrate-and-fire layers.

BrainTransformers-style conversion (Tang et al. 2024, arXiv 2410.14687; ideas only): every
linear layer is a :class:`spiking_attention.thermometer.ThermoLinear` (inputs coded per token,
weights per output row, ``bits`` bits of magnitude and a sign), attention a
:class:`~spiking_attention.thermometer.ThermoCausalAttention` (integer ``q.k`` of counts,
spiking softmax, values accumulated once per attention spike), GELU a
:class:`~spiking_attention.thermometer.StaircaseGELU` (a ReLU channel plus ``act_neurons`` step
neurons with refitted pulse sizes). What stays real-valued, and says so: the token and position
embeddings (look-ups), the residual stream, LayerNorm, the exponential inside the softmax, and
one rescale per output (counted as MACs). The conversion tool is :mod:`models.convert`.

As a registered family (the comparison table's rows) the config names the source and ``bits``.
``source="auto"`` (the registered variants) converts the finished ``gpt`` run with the same
shape, attention and training recipe (seed included) found under ``source_root``: in the
comparison sweep, the same seed's ``gpt/dense`` row, which runs before it. A path (``{seed}``
and ``{data_seed}`` are filled from the training recipe) names one checkpoint; ``""`` builds the
converted architecture from random weights (the from-scratch control). The family's learner
(:class:`ConversionLearner`) converts when training starts, runs ``round(qat_frac * max_iters)``
steps of quantization-aware retraining (AdamW, straight-through gradients, ``qat_lr`` decaying
tenfold), then only measures the loss on the remaining batches (no update). Conversion happens
in the learner because only the training recipe knows the seed; a hook in
:func:`models.train.train_run` (``Family.init_from(model, train_config)``) would be the cleaner
home.

Shapes:
    idx (B, T) int64 -> logits (B, T, vocab_size); loss a scalar when targets (B, T) are given.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import nn

from spiking_attention.thermometer import StaircaseGELU, ThermoCausalAttention, ThermoLinear, check_bits

from .base import TransformerLM, TrunkConfig, check_choice, check_int

__all__ = ["ConvertedConfig", "ConvertedLM", "ThermoMLP", "find_source", "ConversionLearner", "TRUNK_FIELDS",
           "ATTENTIONS"]

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
                from .convert import check_convertible, load_dense_weights
                from .train import load_model
                self.source = str(find_source(conf, cfg))
                dense, _, _ = load_model(self.source)
                check_convertible(dense)
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
