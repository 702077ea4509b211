"""The one registry of model families: a family name -> its Config, its Model and its variants.

A family is one file in models/ defining a Config dataclass (a :class:`models.base.TrunkConfig`
subclass for transformers) and a Model class built as ``Model(config)``, plus one
:class:`Family` entry. Variants are named config values, not new names in other files: the
dense twin's ``topk`` variant is ``{"attention": "topk", "k": 8}``. The training harness
(:mod:`models.train`), the CLI (``python -m models.train --family NAME --variant V``) and the
comparison table (``bench/lm_compare.py``, which reads ``bench`` and ``select``) find every
family here.

Example:
    >>> fam = get_family("gpt")
    >>> model = fam.build({**fam.variants["window"], "vocab_size": 65})
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable

__all__ = ["Family", "FAMILIES", "register", "get_family"]


@dataclass(frozen=True)
class Family:
    """One model family.

    ``variants``: named config values (a variant's dict plus the data's ``vocab_size`` makes
    a config). ``bench``: the variants that join the comparison table. ``bench_long``: the variants
    of the long-context table (default: ``bench``); long runs are costly, so a family names the
    ones worth them, e.g. the controls that matter where context is long.
    ``select``: candidate
    variants of which the comparison keeps the one with the lowest loss on held-out TRAINING
    text (never validation), shown under the family's name. ``learner``: a factory
    ``learner(model, train_config) -> Learner`` for families that do not train by backprop
    (see :mod:`models.train`); None means AdamW on the cross-entropy. ``fit_config``:
    ``fit_config(config_dict, train_ids) -> config_dict`` for families whose structure depends
    on the training text (SiFu's graph of observed bigrams); the harness calls it with the
    ids it trains on (held-out splits included) before building the model, and the returned
    dict is what checkpoints and results store.
    """

    name: str
    config: type
    model: type
    variants: dict[str, dict] = field(default_factory=dict)
    bench: tuple[str, ...] = ()
    select: tuple[str, ...] = ()
    bench_long: tuple[str, ...] = ()
    learner: Callable[..., Any] | None = None
    description: str = ""
    fit_config: Callable[[dict, Any], dict] | None = None

    def __post_init__(self):
        unknown = [v for v in (*self.bench, *self.select, *self.bench_long) if v not in self.variants]
        if unknown:
            raise ValueError(f"family {self.name!r}: bench/select/bench_long name unknown variants {unknown}; "
                             f"variants are {sorted(self.variants)}")
        names = {f.name for f in fields(self.config)}
        for v, values in self.variants.items():
            bad = sorted(set(values) - names)
            if bad:
                raise ValueError(f"family {self.name!r} variant {v!r}: unknown config keys {bad}")

    def make_config(self, config: dict):
        """A validated Config from a plain dict (what checkpoints store); unknown keys raise."""
        from_dict = getattr(self.config, "from_dict", None)
        if from_dict is not None:
            return from_dict(config)
        return self.config(**config)

    def applicable(self, values: dict) -> dict:
        """The entries of ``values`` that name fields of this family's Config (a shared shape such
        as ``{"n_layer": 4, "n_embd": 128}`` applies to the transformers, not to SiFu's graph)."""
        names = {f.name for f in fields(self.config)}
        return {k: v for k, v in values.items() if k in names}

    def build(self, config: dict):
        return self.model(self.make_config(config))

    def variant_config(self, variant: str | None, **values) -> dict:
        """The config dict of ``variant`` (None: the Config's defaults) with ``values`` on top."""
        if variant is not None and variant not in self.variants:
            raise ValueError(f"family {self.name!r} has no variant {variant!r}; "
                             f"choose one of {sorted(self.variants)}")
        return {**(self.variants[variant] if variant else {}), **values}


FAMILIES: dict[str, Family] = {}


def register(family: Family, *, replace: bool = False) -> Family:
    """Add a family to :data:`FAMILIES` (a plug-in module calls this at import)."""
    if family.name in FAMILIES and not replace and FAMILIES[family.name] is not family:
        raise ValueError(f"a family named {family.name!r} is already registered")
    FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; registered: {sorted(FAMILIES)}") from None
