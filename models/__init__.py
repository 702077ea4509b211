"""Every model family, one file each, found through one registry (:data:`FAMILIES`).

==================  =========================================================================
family              what (file)
==================  =========================================================================
``gpt``             the dense softmax twin and its top-k / recency-window controls (gpt.py)
``spiking_kwta``    k-WTA spiking attention on binary Q/K codes (spiking_kwta.py)
``converted``       the trained dense twin converted to thermometer-coded spikes (converted.py;
                    the conversion tool is convert.py)
==================  =========================================================================

The trunk shared by the transformers is :mod:`models.base`; the training harness (data,
train loop with a pluggable learner, full-split evaluation, sampling, checkpoints, CLI) is
:mod:`models.train`; packed-code inference is :mod:`models.packed`.

Example:
    >>> m = build_model("gpt", {"vocab_size": 65, "block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 32})
    >>> type(m).__name__
    'GPT'
"""
from __future__ import annotations

from . import converted, gpt, spiking_kwta
from .registry import FAMILIES, Family, get_family, register

# The registry: one line per family.
register(Family("gpt", gpt.GPTConfig, gpt.GPT,
                variants={"dense": {"attention": "dense"}, "topk": {"attention": "topk", "k": 8},
                          "window": {"attention": "window", "k": 8}},
                bench=("dense", "topk", "window"),
                description="nanoGPT dense twin; top-k softmax and recency-window controls"))
register(Family("spiking_kwta", spiking_kwta.SpikingConfig, spiking_kwta.SpikingTransformerLM,
                variants={"hamming": {"code_bits": 32, "k": 8, "score": "hamming"},
                          "overlap": {"code_bits": 32, "k": 8, "score": "overlap"}},
                select=("hamming", "overlap"),
                description="k-WTA spiking attention on binary query/key codes"))
# rows converted from the same seed's finished gpt/dense run (source="auto"): b = 8 as converted,
# b = 4 after retraining 10% of the original steps (models/converted.py)
register(Family("converted", converted.ConvertedConfig, converted.ConvertedLM,
                variants={"b8": {"bits": 8}, "b6": {"bits": 6}, "b4": {"bits": 4},
                          "b4_qat": {"bits": 4, "qat_frac": 0.1}, "b2_qat": {"bits": 2, "qat_frac": 0.1},
                          "b4_scratch": {"bits": 4, "source": ""}},
                bench=("b8", "b4_qat"), learner=converted.ConversionLearner,
                description="gpt/dense converted to thermometer-coded integrate-and-fire layers "
                            "(BrainTransformers-style, per-token scales)"))


def make_config(family: str, config: dict):
    """A validated config of ``family`` from a dict; unknown keys raise ValueError."""
    return get_family(family).make_config(config)


def build_model(family: str, config: dict):
    """The model of ``family`` built from a plain config dict."""
    return get_family(family).build(config)


__all__ = ["FAMILIES", "Family", "register", "get_family", "make_config", "build_model"]
