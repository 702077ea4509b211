"""k-winner-take-all: keep the k largest entries of each row, among the allowed ones.

Tie rule (deterministic, and reproduced exactly by the packed path in :mod:`.packed`):
**among equal scores the more recent key (the higher column index) wins.** Recency is a
sensible prior for a causal language model, and it is an exact integer rule, not a float
epsilon: we find the k-th largest value ``t`` of each row, keep every entry ``> t``, and fill
the remaining ``r`` places with the ``r`` right-most entries equal to ``t`` (a reverse
cumulative count). A row with fewer than k allowed entries keeps all of them.

``k`` is either an int >= 1 (fixed) or a float in (0, 1], a fraction of each row's allowed
entries: ``k_row = max(1, ceil(k * n_allowed_row))``.

Gradient modes of :func:`kwta`:

* ``"sparse"`` (Explicit Sparse Transformer): ``where(winner, scores, fill)``; pruned entries
  get exactly zero gradient.
* ``"ste"`` (straight-through): the same forward, but the backward passes the incoming
  gradient to every entry, winners and losers alike. Note that with ``fill=-inf`` followed
  by a softmax, pruned entries receive zero gradient from the softmax itself; the mode
  matters for ``fill=0`` (k-WTA on activations) or losses on the masked values.

Example::

    >>> s = torch.randn(2, 5, 5)
    >>> y = kwta(s, 2, causal=True)                 # -inf outside the 2 winners per row
    >>> m = kwta_mask(s, 2, causal_mask(5))         # the winners as a bool mask
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["causal_mask", "resolve_k", "kwta_mask", "kwta", "KWTA"]


def causal_mask(t_q: int, t_k: int | None = None, *, device=None) -> torch.Tensor:
    """Bool mask, True where query i may see key j (j <= i + t_k - t_q: the queries are the last t_q).

    Shapes: -> (t_q, t_k).
    """
    t_k = t_q if t_k is None else t_k
    i = torch.arange(t_q, device=device)[:, None] + (t_k - t_q)
    j = torch.arange(t_k, device=device)[None, :]
    return j <= i


def resolve_k(k, n_allowed: torch.Tensor) -> torch.Tensor:
    """Per-row number of winners: ``min(k, n_allowed)``, or ``max(1, ceil(k * n_allowed))`` for a fraction.

    Rows with no allowed entry get 0. Raises ValueError for k < 1 (int) or k outside (0, 1] (float).
    """
    if isinstance(k, bool):
        raise ValueError(f"k must be an int >= 1 or a fraction in (0, 1], got {k!r}")
    if isinstance(k, int):
        if k < 1:
            raise ValueError(f"k-WTA needs k >= 1 winners, got k={k}")
        return torch.clamp(n_allowed, max=k)
    if isinstance(k, float):
        if not (0.0 < k <= 1.0):
            raise ValueError(f"a fractional k must lie in (0, 1], got k={k}")
        kr = torch.ceil(n_allowed.to(torch.float64) * k).to(n_allowed.dtype).clamp_min(1)
        return torch.minimum(kr, n_allowed)
    raise ValueError(f"k must be an int >= 1 or a float fraction in (0, 1], got {type(k).__name__}")


def kwta_mask(scores: torch.Tensor, k, allowed_mask: torch.Tensor | None = None, *,
              integer: bool = False) -> torch.Tensor:
    """Bool mask of the winners: the ``k`` largest allowed entries of each row (last axis).

    Ties at the k-th value go to the higher index (the more recent key). Rows with fewer
    than k allowed entries keep all allowed entries. The mask carries no gradient.

    ``integer=True`` promises integer-valued scores (binary-code overlaps): then each entry
    is ranked by the unique int64 key ``score * n + index``, so one top-k finds the winners
    with the tie rule built in (no cumulative counts), the same mask at a fraction of the cost.

    Shapes: scores (..., n), allowed_mask broadcastable to scores (or None) -> (..., n) bool.
    Example: ``kwta_mask(torch.tensor([[1., 3., 3., 2.]]), 2)`` -> ``[[F, T, T, F]]``.
    """
    if scores.dim() < 1:
        raise ValueError("kwta_mask needs scores with at least one axis")
    n = scores.shape[-1]
    s = scores.detach()
    if allowed_mask is None:
        allowed = torch.ones_like(s, dtype=torch.bool)
    else:
        if allowed_mask.dtype != torch.bool:
            raise ValueError(f"allowed_mask must be bool, got {allowed_mask.dtype}")
        allowed = allowed_mask.expand_as(s)
    if integer and isinstance(k, int) and not isinstance(k, bool) and k >= 1 and n > 0:
        comp = s.to(torch.int64) * n + torch.arange(n, device=s.device)            # unique per row
        comp = comp.masked_fill(~allowed, torch.iinfo(torch.int64).min)
        kth = torch.topk(comp, min(k, n), dim=-1, sorted=False).values.amin(-1, keepdim=True)
        return allowed & (comp >= kth)   # a row with < k allowed keys: kth is a masked entry, keep all
    n_allowed = allowed.sum(-1, keepdim=True)  # (..., 1)
    k_row = resolve_k(k, n_allowed)  # (..., 1)
    if n == 0:
        return torch.zeros_like(s, dtype=torch.bool)
    neg_inf = torch.tensor(float("-inf"), dtype=s.dtype, device=s.device)
    s_allowed = torch.where(allowed, s, neg_inf)
    k_max = int(k_row.max().item()) if k_row.numel() else 0
    if k_max == 0:
        return torch.zeros_like(s, dtype=torch.bool)
    top = torch.topk(s_allowed, k_max, dim=-1, sorted=True).values  # (..., k_max), descending
    # the k-th largest allowed value per row (rows with k_row = 0 read index 0, masked below)
    thr = torch.gather(top, -1, (k_row - 1).clamp_min(0))  # (..., 1)
    at_or_above = allowed & (s_allowed >= thr) & (k_row > 0)
    if bool((at_or_above.sum(-1, keepdim=True) == k_row).all()):
        return at_or_above  # no row has a tie across the cut (the usual case for float scores)
    above = allowed & (s_allowed > thr)
    at = allowed & (s_allowed == thr)
    need = k_row - above.sum(-1, keepdim=True)  # places left for entries equal to the threshold
    # count of tied entries at or to the right of each position; keep the `need` right-most
    from_right = torch.flip(torch.cumsum(torch.flip(at.to(torch.int64), [-1]), -1), [-1])
    keep_tied = at & (from_right <= need)
    return (above | keep_tied) & (k_row > 0)


class _STEWhere(torch.autograd.Function):
    """Forward ``where(mask, x, fill)``; backward passes the gradient to every entry."""

    @staticmethod
    def forward(ctx, x, mask, fill):  # type: ignore[override]
        return torch.where(mask, x, torch.full_like(x, fill))

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad, None, None


def kwta(scores: torch.Tensor, k, *, mode: str = "sparse", causal: bool = True,
         allowed_mask: torch.Tensor | None = None, fill: float = float("-inf")) -> torch.Tensor:
    """Keep the k largest allowed entries of each row and set the rest to ``fill``.

    ``causal=True`` treats the last two axes as (query, key) and allows key j for query i
    when ``j <= i`` (queries aligned to the last keys); ``allowed_mask`` is ANDed on top.
    ``mode`` is ``"sparse"`` (zero gradient to pruned entries) or ``"ste"`` (straight-through).

    Shapes: scores (..., t_q, t_k) -> (..., t_q, t_k).
    Example: ``att = torch.softmax(kwta(q @ k.mT / 8, 8), -1)``.
    """
    if mode not in ("sparse", "ste"):
        raise ValueError(f"kwta mode must be 'sparse' or 'ste', got {mode!r}")
    allowed = allowed_mask
    if causal:
        if scores.dim() < 2:
            raise ValueError("causal kwta needs scores with (query, key) as the last two axes")
        cm = causal_mask(scores.shape[-2], scores.shape[-1], device=scores.device)
        allowed = cm if allowed is None else (allowed & cm)
    win = kwta_mask(scores, k, allowed)
    if mode == "sparse":
        return torch.where(win, scores, torch.full_like(scores, fill))
    return _STEWhere.apply(scores, win, fill)


class KWTA(nn.Module):
    """Module form of :func:`kwta` (holds k, mode, causality and the fill value).

    Shapes: (..., t_q, t_k) -> same. Example: ``KWTA(8)(scores)``.
    """

    def __init__(self, k, *, mode: str = "sparse", causal: bool = True, fill: float = float("-inf")):
        super().__init__()
        resolve_k(k, torch.tensor([1]))  # validate early, with the same message
        if mode not in ("sparse", "ste"):
            raise ValueError(f"kwta mode must be 'sparse' or 'ste', got {mode!r}")
        self.k, self.mode, self.causal, self.fill = k, mode, causal, fill

    def forward(self, scores: torch.Tensor, allowed_mask: torch.Tensor | None = None) -> torch.Tensor:
        return kwta(scores, self.k, mode=self.mode, causal=self.causal, allowed_mask=allowed_mask,
                    fill=self.fill)

    def extra_repr(self) -> str:
        return f"k={self.k}, mode={self.mode}, causal={self.causal}"
