"""Every model family, one file each, found through one registry (:data:`FAMILIES`).

==================  =========================================================================
family              what (file)
==================  =========================================================================
``gpt``             the dense softmax twin and its top-k / recency-window controls (gpt.py)
``spiking_kwta``    k-WTA spiking attention on binary Q/K codes (spiking_kwta.py)
``nord``            Nord-style LIF LM: synaptic/membrane LIF, spiking Q/K, top-k attention (nord.py)
``sifu``            BriLLM's signal-flow graph LM: one d x d matrix per observed bigram (sifu.py)
``bigram``          the bigram baseline SiFu must beat (bigram.py)
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

from . import bigram, gpt, nord, sifu, spiking_kwta
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
register(Family("nord", nord.NordConfig, nord.NordLM,
                variants={"lif": {}, "lif_sparse": {"firing_reg": 1.0, "firing_target": 0.03}},
                bench=("lif",),
                description="Nord-style LIF LM: fast/slow time steps, spiking Q/K with top-k attention"))
register(Family("sifu", sifu.SiFuConfig, sifu.SiFuLM,
                variants={"d32": {"d": 32}, "d16": {"d": 16}},
                bench=("d32",),
                description="BriLLM SiFu graph LM: energy of the edge from the current token decides"))
register(Family("bigram", bigram.BigramConfig, bigram.BigramLM,
                variants={"table": {"init": "tinyshakespeare"}, "scratch": {"init": "zeros"}}, bench=("table",),
                description="bigram baseline: one row of next-token logits per token"))


def make_config(family: str, config: dict):
    """A validated config of ``family`` from a dict; unknown keys raise ValueError."""
    return get_family(family).make_config(config)


def build_model(family: str, config: dict):
    """The model of ``family`` built from a plain config dict."""
    return get_family(family).build(config)


__all__ = ["FAMILIES", "Family", "register", "get_family", "make_config", "build_model"]
