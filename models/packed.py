"""Incremental decoding of the transformer LMs: a KV cache per layer; packed codes for spiking layers.

``model.decoder()`` (any :class:`models.base.TransformerLM`) returns an :class:`IncrementalLM`
that shares the model's weights and runs every attention layer through that layer's
incremental form (``layer.decoder()``): spiking k-WTA attention on packed binary codes with a
cache of packed keys and the hdc causal top-k; real-valued attention (dense, window, top-k)
with a float KV cache. ``model.packed()`` returns a :class:`PackedLM`, the same object that
insists every layer has a packed form. Embeddings, LayerNorms, MLPs and the head run the
model's own torch modules, so the logits equal the model's to float rounding. Nothing in the
model is modified: no ``forward`` is swapped, and the model keeps training or evaluating.

Generation is incremental: the prompt is prefilled once, then each new token runs one query
per layer against the cached keys. Past ``block_size`` tokens the positions would shift, so,
exactly as :meth:`models.base.TransformerLM.generate` does, the last ``block_size`` tokens
are run afresh at every step (the cache then gives no saving).

Example:
    >>> plm = lm.packed()                                   # lm: a trained spiking_kwta model
    >>> logits, _ = plm(idx)                                # == lm(idx)[0] within ~1e-5
    >>> out = plm.generate(idx[:1], 100, generator=torch.Generator().manual_seed(0))
"""
from __future__ import annotations

import torch

from .base import TransformerLM, check_generate_args, sample_next

__all__ = ["IncrementalLM", "PackedLM"]


class IncrementalLM:
    """Inference twin of a :class:`TransformerLM` with a KV cache in every attention layer.

    ``packed=True`` requires every layer's packed form (``layer.packed()``).
    Shapes: idx (B, T) int64 -> logits (B, T, V); decoding with batch 1.
    """

    def __init__(self, model: TransformerLM, *, packed: bool = False, **layer_kw):
        if not isinstance(model, TransformerLM):
            raise TypeError(f"{type(self).__name__} wraps a models.base.TransformerLM, got {type(model).__name__}")
        self.model = model
        self.config = model.config
        self.layers = []
        for i, blk in enumerate(model.transformer.h):
            make = getattr(blk.attn, "packed" if packed else "decoder", None)
            if make is None:
                raise ValueError(f"layer {i} ({type(blk.attn).__name__}) has no "
                                 f"{'packed form' if packed else 'incremental form (decoder())'}; "
                                 f"{type(self).__name__} needs it in every attention layer")
            self.layers.append(make(**layer_kw))

    @torch.no_grad()
    def __call__(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """Logits (and loss with ``targets``) of a full sequence, like ``model(idx, targets)``."""
        m = self.model
        if idx.dim() != 2:
            raise ValueError(f"idx must be (B, T), got shape {tuple(idx.shape)}")
        if idx.size(1) > self.config.block_size:
            raise ValueError(f"sequence length {idx.size(1)} exceeds block_size {self.config.block_size}")
        x = m.embed(idx)                                                   # (B, T, C)
        for blk, patt in zip(m.transformer.h, self.layers):
            x = x + patt(blk.ln_1(x))
            x = x + blk.mlp(blk.ln_2(x))
        logits = m.head(x)                                                 # (B, T, V)
        loss = None
        if targets is not None:
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    @torch.no_grad()
    def prefill(self, idx: torch.Tensor):
        """Run a prompt (1, T) and keep every layer's keys. Returns (logits (1, T, V), caches)."""
        m = self.model
        if idx.dim() != 2 or idx.size(0) != 1:
            raise ValueError(f"prefill takes one sequence (1, T), got shape {tuple(idx.shape)}")
        if not 1 <= idx.size(1) <= self.config.block_size:
            raise ValueError(f"prompt length must be in [1, block_size={self.config.block_size}], got {idx.size(1)}")
        x = m.embed(idx)
        caches = []
        for blk, patt in zip(m.transformer.h, self.layers):
            y, cache = patt.prefill(blk.ln_1(x))
            caches.append(cache)
            x = x + y
            x = x + blk.mlp(blk.ln_2(x))
        return m.head(x), caches

    @torch.no_grad()
    def step(self, token: torch.Tensor, caches: list) -> torch.Tensor:
        """Logits (1, V) of one new token (1, 1) at the next position; appends to every cache."""
        m = self.model
        pos = caches[0].n
        if pos >= self.config.block_size:
            raise ValueError(f"the caches hold {pos} tokens: a step past block_size={self.config.block_size} "
                             f"has no position embedding; prefill the last tokens instead")
        x = m.embed(token, start=pos)                                      # (1, 1, C)
        for blk, patt, cache in zip(m.transformer.h, self.layers, caches):
            x = x + patt.step(blk.ln_1(x), cache)
            x = x + blk.mlp(blk.ln_2(x))
        return m.head(x)[:, -1]

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample like :meth:`TransformerLM.generate` (same tokens for the same generator), with a
        packed KV cache while the text fits in ``block_size``. Shapes: (1, T0) -> (1, T0 + max_new_tokens)."""
        check_generate_args(idx, temperature)
        if idx.size(0) != 1:
            raise ValueError(f"{type(self).__name__}.generate decodes one sequence at a time (batch 1), "
                             f"got batch {idx.size(0)}")
        T = self.config.block_size
        caches = None
        for _ in range(max_new_tokens):
            if idx.size(1) > T:           # positions would shift: rerun the cropped window (as the model does)
                logits = self(idx[:, -T:])[0][:, -1]
                caches = None
            elif caches is None:
                logits, caches = self.prefill(idx)
                logits = logits[:, -1]
            else:
                logits = self.step(idx[:, -1:], caches)
            idx = torch.cat((idx, sample_next(logits, temperature, top_k, generator)), dim=1)
        return idx


class PackedLM(IncrementalLM):
    """:class:`IncrementalLM` whose every attention layer runs on packed binary codes."""

    def __init__(self, model: TransformerLM, **layer_kw):
        super().__init__(model, packed=True, **layer_kw)
