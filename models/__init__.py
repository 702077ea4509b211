"""Model families, built by name from a plain config dict (what checkpoints store).

``build_model("gpt", {...})`` makes the dense twin (or its top-k / window controls);
``build_model("spiking", {...})`` makes :class:`spiking_attention.model.SpikingTransformerLM`.

Example:
    >>> m = build_model("gpt", {"vocab_size": 65, "block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 32})
    >>> type(m).__name__
    'GPT'
"""
from __future__ import annotations

from dataclasses import fields

from models.dense_gpt import GPT, GPTConfig

MODEL_KINDS = ("gpt", "spiking")


def config_class(kind: str):
    if kind == "gpt":
        return GPTConfig
    if kind == "spiking":
        # imported lazily: spiking_attention.model imports models.dense_gpt
        from spiking_attention.model import SpikingConfig
        return SpikingConfig
    raise ValueError(f"unknown model kind {kind!r}; expected one of {MODEL_KINDS}")


def make_config(kind: str, config: dict):
    """A validated config dataclass of ``kind`` from a dict; unknown keys raise ValueError."""
    cls = config_class(kind)
    names = {f.name for f in fields(cls)}
    unknown = set(config) - names
    if unknown:
        raise ValueError(f"unknown {kind} config keys: {sorted(unknown)}")
    cfg = cls(**config)
    cfg.validate()
    return cfg


def build_model(kind: str, config: dict):
    cfg = make_config(kind, config)
    if kind == "gpt":
        return GPT(cfg)
    from spiking_attention.model import SpikingTransformerLM
    return SpikingTransformerLM(cfg)


__all__ = ["GPT", "GPTConfig", "MODEL_KINDS", "build_model", "config_class", "make_config"]
