"""The conversion tool: a trained ``gpt`` checkpoint -> the ``converted`` family (:mod:`models.converted`).

:func:`convert` takes a ``gpt``-family model (dense or window attention) or a checkpoint path
(read by :func:`models.train.load_model`) and returns a :class:`~models.converted.ConvertedLM`
for any b in 1..16 (2..8 measured by bench/convert.py); any other layer raises naming it.
Staircases are refitted on calibration text when ``calib`` is given. :func:`unconvert` gives
back a dense twin with the dequantized weights. A converted model saves through the harness's
checkpoint format (:func:`save_converted`; read back by :func:`models.train.load_model`),
generates, and retrains through :func:`models.train.train` (quantization-aware: the rounding
passes gradients straight through).

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
import os
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from spiking_attention.attention import DenseCausalAttention
from spiking_attention.thermometer import ThermoLinear, check_bits

from .base import MLP, Block
from .converted import ATTENTIONS, TRUNK_FIELDS, ConversionLearner, ConvertedConfig, ConvertedLM, find_source

__all__ = ["convert", "unconvert", "check_convertible", "load_dense_weights", "save_converted", "SUPPORTED_LAYERS",
           "ConvertedConfig", "ConvertedLM", "ConversionLearner", "find_source"]

#: source layer types the conversion understands (anything else is refused, naming it)
SUPPORTED_LAYERS = (nn.ModuleDict, nn.ModuleList, nn.Embedding, nn.Dropout, nn.LayerNorm, Block,
                    MLP, nn.Linear, DenseCausalAttention)


def check_convertible(model: nn.Module) -> None:
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
    check_convertible(source)
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
