"""The conversion tools: a trained ``gpt`` checkpoint -> spikes, by two routes.

1. BrainTransformers-style (Tang et al. 2024, arXiv 2410.14687): :func:`convert` -> the
   ``converted`` family (:mod:`models.converted`), thermometer-coded integrate-and-fire layers.
2. SpikingBrain-style (arXiv 2509.05276): :func:`to_hybrid` -> a ``hybrid`` model
   (:class:`models.hybrid.HybridLM`): attention replaced by the hybrid's mixers (gated linear
   attention and sliding-window softmax attention), activations into every projection by
   adaptive-threshold spike coding, the twin's weights carried over wherever the shapes allow;
   it is then trained on briefly (SpikingBrain converts a trained Qwen2.5 and continues
   pre-training for a small fraction of the original tokens). See :func:`to_hybrid` for which
   weights transfer and which start fresh.

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
    python -m models.convert --ckpt runs/x/ckpt.pt --route spikingbrain --out runs/x_hyb [--steps 200]

Example:
    >>> dense, tok, _ = load_model("runs/dense/ckpt.pt")                       # doctest: +SKIP
    >>> snn = convert(dense, bits=8)                                            # doctest: +SKIP
    >>> snn.generate(torch.zeros(1, 1, dtype=torch.long), 20)                   # doctest: +SKIP
    >>> hyb = to_hybrid(dense, layout="alternate", window=16)                   # doctest: +SKIP
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
from .hybrid import HybridConfig, HybridLM

__all__ = ["convert", "unconvert", "check_convertible", "load_dense_weights", "save_converted", "SUPPORTED_LAYERS",
           "ConvertedConfig", "ConvertedLM", "ConversionLearner", "find_source", "to_hybrid", "hybrid_config_for",
           "check_hybrid_source", "hybrid_weight_map", "save_hybrid", "HYBRID_SOURCE_ATTENTIONS"]

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


def _per_block(model: nn.Module, calib: torch.Tensor, install) -> list[torch.Tensor]:
    """One no-grad pass of ``model`` over ``calib`` (B, T) with ``install(block, got)`` hooking each
    block to append what it records to ``got``; the hooks are removed whatever happens."""
    got: list[torch.Tensor] = []
    hooks = [install(blk, got) for blk in model.transformer.h]
    try:
        with torch.no_grad():
            model(calib)
    finally:
        for h in hooks:
            h.remove()
    return got


def _calibration_samples(model: nn.Module, calib: torch.Tensor) -> list[torch.Tensor]:
    """The GELU inputs (c_fc outputs) of each block of the dense ``model`` on ``calib`` (B, T)."""
    return _per_block(model, calib, lambda blk, got: blk.mlp.c_fc.register_forward_hook(
        lambda m, a, out: got.append(out.detach().reshape(-1))))


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


# ----------------------------------------------------------------------------- SpikingBrain-style route

#: gpt attentions :func:`to_hybrid` takes: softmax attention whose q/k/v/output projections the
#: hybrid's mixers can hold (top-k selection has no counterpart in them)
HYBRID_SOURCE_ATTENTIONS = ("dense", "window")


def check_hybrid_source(source: nn.Module) -> None:
    """``source`` must be a ``gpt`` model with dense or window attention and the trunk's layers only."""
    from .gpt import GPT
    if type(source) is not GPT:
        raise ValueError(f"to_hybrid: source must be a model of the 'gpt' family (models.gpt.GPT) or a path to "
                         f"its checkpoint, got {type(source).__name__}; the SpikingBrain-style route maps softmax "
                         f"attention projections and a GELU MLP, which other families do not have")
    att, lw = source.config.attention, source.config.local_window
    if att not in HYBRID_SOURCE_ATTENTIONS or lw is not None:
        raise ValueError(f"to_hybrid: source.config.attention={att!r} (local_window={lw!r}) is not supported; "
                         f"allowed: attention in {HYBRID_SOURCE_ATTENTIONS} with local_window=None")
    for name, mod in source.named_modules():
        if name and type(mod) not in SUPPORTED_LAYERS:   # exact types: a subclass may compute something else
            raise ValueError(f"to_hybrid: source layer {name!r} of type {type(mod).__name__} is not supported; "
                             f"allowed layer types: {[t.__name__ for t in SUPPORTED_LAYERS]}")


def hybrid_config_for(source_config, *, layout: str = "alternate", window: int = 16,
                      spike_coding: str = "adaptive", spike_k: float = 3.0, chunk: int = 16,
                      gate_rank: int = 16) -> HybridConfig:
    """The hybrid config that holds a ``gpt`` model of ``source_config``: the same trunk shape,
    the twin's learned position embedding (``pos_emb="learned"``; rotary positions would change
    every q.k the twin learned) and its GELU MLP (``ffn="mlp"``, ``ffn_mult=4``: hidden 4 n_embd)."""
    src = asdict(source_config) if not isinstance(source_config, dict) else dict(source_config)
    return HybridConfig(**{k: src[k] for k in TRUNK_FIELDS}, layout=layout, window=window, chunk=chunk,
                        gate_rank=gate_rank, ffn="mlp", ffn_mult=4.0, spike_coding=spike_coding, spike_k=spike_k,
                        pos_emb="learned")


def hybrid_weight_map(config: HybridConfig) -> dict[str, str]:
    """``{hybrid parameter name: gpt parameter name}`` for every weight that transfers.

    Transferred: token and position embeddings (the head stays tied), every LayerNorm, the MLP
    (c_fc -> ffn.up, c_proj -> ffn.down), and each attention's fused q/k/v projection (c_attn ->
    the mixer's qkv: both split q, k, v in that order and heads as contiguous column blocks) and
    output projection (c_proj -> proj). In the parallel layout both mixers get the same c_attn.
    Fresh (not in the map): GLA's gate projections ``gate_down``, ``gate_up`` (no counterpart in
    softmax attention) and its per-channel output scale ``norm_weight`` (set by :func:`to_hybrid`).
    """
    suffixes = ("weight", "bias") if config.bias else ("weight",)
    m = {"wte.weight": "transformer.wte.weight", "wpe.weight": "transformer.wpe.weight",
         "lm_head.weight": "lm_head.weight"}
    m.update({f"ln_f.{s}": f"transformer.ln_f.{s}" for s in suffixes})
    for i in range(config.n_layer):
        h, b = f"transformer.h.{i}", f"blocks.{i}"
        for s in suffixes:
            m[f"{b}.ln_1.{s}"], m[f"{b}.ln_2.{s}"] = f"{h}.ln_1.{s}", f"{h}.ln_2.{s}"
            m[f"{b}.ffn.up.{s}"], m[f"{b}.ffn.down.{s}"] = f"{h}.mlp.c_fc.{s}", f"{h}.mlp.c_proj.{s}"
            m[f"{b}.mixer.proj.{s}"] = f"{h}.attn.c_proj.{s}"
            if config.mixer_kind(i) == "parallel":
                m[f"{b}.mixer.gla.qkv.{s}"] = m[f"{b}.mixer.swa.qkv.{s}"] = f"{h}.attn.c_attn.{s}"
            else:
                m[f"{b}.mixer.qkv.{s}"] = f"{h}.attn.c_attn.{s}"
    return m


def _attention_output_rms(source: nn.Module, calib: torch.Tensor) -> list[torch.Tensor]:
    """Per layer, the root mean square over the tokens of ``calib`` (B, T) of each channel of the
    dense attention's head outputs (the input of c_proj). Shapes: -> n_layer x (n_embd,)."""
    return _per_block(source, calib, lambda blk, got: blk.attn.c_proj.register_forward_pre_hook(
        lambda m, a: got.append(a[0].detach().pow(2).mean(dim=(0, 1)).sqrt())))


def to_hybrid(source, *, layout: str = "alternate", window: int = 16, spike_coding: str = "adaptive",
              spike_k: float = 3.0, chunk: int = 16, gate_rank: int = 16,
              calib: torch.Tensor | None = None) -> HybridLM:
    """The SpikingBrain-style conversion of a trained ``gpt`` model (or the checkpoint at path ``source``).

    The result is a :class:`models.hybrid.HybridLM` of :func:`hybrid_config_for`: attention
    becomes the hybrid's mixers (``layout``: "alternate" = GLA in even layers, sliding window of
    ``window`` tokens in odd ones; "parallel", "linear", "window" as in :mod:`models.hybrid`),
    every projection of mixers and MLP takes adaptive-threshold spike counts
    (``spike_coding="adaptive"``; "none" is the float control), and the weights listed by
    :func:`hybrid_weight_map` are copied. Which start fresh, and why:

    * GLA gates (``gate_down``, ``gate_up``): the hybrid's own initialisation (gates near
      e^(-ln 2 / 16) ~ 0.96 per token, a memory of a few dozen tokens), learned in the
      continued training;
    * GLA ``norm_weight`` (the scale after its per-head RMS norm): with ``calib`` (B, T) token
      ids, the RMS of each channel of the dense attention's head outputs on that text, so the
      linear layer starts at the dense layer's output scale; without, ones;
    * in the parallel layout GLA's ``norm_weight`` starts at zero: the layer starts as the
      window attention alone (the dense attention exactly when the window covers the context
      and coding is off) and learns how much of the linear branch to add.

    A window layer with ``spike_coding="none"`` and ``window >= block_size`` computes the source's
    attention exactly (tests/test_convert.py). Unsupported sources raise ValueError naming them.
    """
    if isinstance(source, (str, os.PathLike)):
        from .train import load_model
        source, _, _ = load_model(source)
    check_hybrid_source(source)
    cfg = hybrid_config_for(source.config, layout=layout, window=window, spike_coding=spike_coding,
                            spike_k=spike_k, chunk=chunk, gate_rank=gate_rank)
    model = HybridLM(cfg)
    src = source.state_dict()
    wmap = hybrid_weight_map(cfg)
    res = model.load_state_dict({dst: src[s] for dst, s in wmap.items()}, strict=False)
    fresh = ("gate_down.weight", "gate_up.weight", "gate_up.bias", "norm_weight")
    wrong = [k for k in res.missing_keys if not k.endswith(fresh)]
    if wrong or res.unexpected_keys:   # a mapping bug, not bad input
        raise RuntimeError(f"to_hybrid: weights not mapped {wrong}, unexpected {res.unexpected_keys}")
    rms = _attention_output_rms(source, calib) if calib is not None else None
    with torch.no_grad():
        for i, blk in enumerate(model.blocks):
            kind = cfg.mixer_kind(i)
            if kind == "parallel":
                blk.mixer.gla.norm_weight.zero_()
            elif kind == "gla" and rms is not None:
                blk.mixer.norm_weight.copy_(rms[i])
    assert model.lm_head.weight is model.wte.weight            # tying survives load_state_dict
    return model.eval()


def save_hybrid(path, model: HybridLM, tokenizer, **extra) -> None:
    """Write a converted hybrid in the harness's checkpoint format (family ``hybrid``), so
    :func:`models.train.load_model` reads it back."""
    from .train import save_checkpoint
    save_checkpoint(path, {"family": "hybrid", "variant": None, "config": asdict(model.config),
                           "tokenizer": tokenizer.to_dict(), "model": model.state_dict(), **extra})


# ----------------------------------------------------------------------------- CLI

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Convert a trained gpt checkpoint to spikes (two routes).")
    p.add_argument("--ckpt", type=Path, required=True, help="checkpoint of a gpt (dense or window) run")
    p.add_argument("--route", choices=("braintransformers", "spikingbrain"), default="braintransformers",
                   help="thermometer-coded IF layers (--bits), or the hybrid with spike coding (--layout)")
    p.add_argument("--bits", type=int, default=8, help="bits of magnitude per spike count, 1..16")
    p.add_argument("--layout", default="alternate", help="spikingbrain: the hybrid's layout")
    p.add_argument("--window", type=int, default=16, help="spikingbrain: sliding-window length (tokens)")
    p.add_argument("--steps", type=int, default=0, help="spikingbrain: continued-training steps (harness)")
    p.add_argument("--lr", type=float, default=3e-4, help="spikingbrain: learning rate (constant after warm-up)")
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
    if a.route == "spikingbrain":
        hyb = to_hybrid(dense, layout=a.layout, window=a.window, calib=calib)
        res = {"source": str(a.ckpt), "route": a.route, "layout": a.layout, "window": a.window,
               "val_nats_per_char_converted": evaluate(hyb, val_ids)["nats_per_char"]}
        if a.steps:
            cfg = TrainConfig(max_iters=a.steps, learning_rate=a.lr, min_lr=a.lr, warmup_iters=min(20, a.steps // 10),
                              seed=a.seed, threads=a.threads)
            train(hyb, train_ids, cfg, family="hybrid", progress=False)
            res["steps"] = a.steps
            res["val_nats_per_char_after_steps"] = evaluate(hyb, val_ids)["nats_per_char"]
        save_hybrid(a.out / "ckpt.pt", hyb, tok, source=str(a.ckpt))
        write_json(a.out / "result.json", res)
        print(json.dumps(res))
        return 0
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
