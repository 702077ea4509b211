"""Spiking k-WTA attention: binary query/key codes, popcount scores, k winners, softmax over them.

Public API (coordinated with ``spiking_attention/model.py``):

``SpikingKWTAAttention(d_model, n_head, code_bits, k, *, max_seq_len, score="hamming",
neuron="heaviside", surrogate="atan", output="softmax", prior_window=None,
prior_random_frac=0.0, prior_seed=0, bias=False, n_layer=4)``
    ``forward(x (B, T, C)) -> y (B, T, C)``, causal. Sub-modules ``q_proj``, ``k_proj``
    (C -> n_head*code_bits), ``v_proj``, ``c_proj`` (C -> C); parameters ``q_threshold``,
    ``k_threshold`` (n_head*code_bits,) and ``log_temp`` (n_head,). ``own_init = True``: the
    module initialises itself (``n_layer`` only scales the init of ``c_proj``, as nanoGPT does).
    With ``code_bits = d_model // n_head`` the weights are exactly a dense attention's 4*C*C,
    plus 2*C thresholds and n_head temperatures.
``TopKSoftmaxAttention(d_model, n_head, k, *, max_seq_len, dropout=0.0, bias=False)``
    the Explicit Sparse Transformer: real-valued q, k, the k largest ``q.k/sqrt(hs)`` per row
    (same tie rule), softmax over them.
``DenseCausalAttention(d_model, n_head, *, max_seq_len, window=None, dropout=0.0, bias=False)``
    nanoGPT's causal softmax attention (the dense twin), or with ``window=w`` only the w most
    recent keys (the recency control).
``brain_prior_mask(t_q, t_k, window, random_frac, seed)``
    the brain-prior connectivity: causal AND (local window OR seeded random long-range).

Every layer reports through the stats protocol (:mod:`.stats`): after a forward,
``layer_stats()`` holds detached numbers: ``q_firing_rate``,
``k_firing_rate``, ``q_silent_frac``, ``k_silent_frac`` (code neurons that never fired in the
batch), ``q_silent_token_frac``, ``k_silent_token_frac`` (all-zero codes: skipped by the
packed path), ``attn_density`` (winners / causal-allowed entries), ``attn_density_allowed``
(winners / entries the prior allows), ``attended_per_query``, ``tie_at_cut_frac`` (rows where
the k-th and (k+1)-th allowed scores tie), and the counts ``B, T, n_head, code_bits,
n_causal_pairs, n_allowed_pairs, n_winners``; ``core_ops()`` the MACs and accumulates of the
attention core. With ``self.record = True``, ``recorded()`` keeps ``q_spikes``, ``k_spikes``
(B, nh, T, code_bits) and ``attn`` (B, nh, T, T) for plots.

Design choices (why):

* **Score.** ``"hamming"``: bipolar codes ``2b - 1``, score ``code_bits - 2*hamming(q, k)``;
  ``"overlap"``: ``popcount(q AND k)``. Both are integers, so the winners are chosen on exact
  integer scores with :func:`kwta_mask`'s rule (ties go to the more recent key), which the
  packed path reproduces bit for bit. MODELS.md measured +0.07 nats for Hamming and +0.14 for
  overlap at 32 bits, so Hamming is the default.
* **Output.** ``"softmax"``: softmax of ``score * exp(log_temp) / sqrt(code_bits)`` over the
  winners, times the values. The output must depend on the scores, or no gradient reaches
  the Q/K projections (uniform averaging of the winners cost +0.44 nats in MODELS.md). The
  gradient flows score -> spike codes -> surrogate -> projections. ``"uniform_ste"``: forward
  the uniform mean of the winners' values, backward as the softmax (a straight-through path;
  an ablation).
* **Values are real-valued** (a linear projection), not spikes: only k value rows are read per
  query, so the accumulate count is already k*hs per query; binarising V would cost accuracy
  where there is almost nothing left to save. The sparsity this module buys is in *which* keys
  are read, and the binary codes make choosing them a popcount.
* **Neuron.** ``"heaviside"``: ``spike(pre - threshold)`` per token, with a learnable
  threshold per code bit; ``"lif"``: a LIF neuron (tau = 2, hard reset) run along the token axis
  (as SpikeGPT does), causal, with the same learnable threshold. Both emit {0, 1} codes.

Example::

    >>> att = SpikingKWTAAttention(128, 4, 32, 8, max_seq_len=64)
    >>> y = att(torch.randn(2, 64, 128))          # (2, 64, 128)
    >>> att.layer_stats()["attended_per_query"]    # <= 8
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from hdc.packing import n_words_for

from .kwta import causal_mask, kwta_mask, resolve_k
from .neurons import lif_step
from .stats import StatsMixin
from .surrogate import SURROGATES, get_surrogate, heaviside

__all__ = ["SpikingKWTAAttention", "TopKSoftmaxAttention", "DenseCausalAttention", "TensorKVCache", "brain_prior_mask",
           "allowed_keys", "SCORES", "NEURONS", "OUTPUTS"]

SCORES = ("hamming", "overlap")
NEURONS = ("heaviside", "lif")
OUTPUTS = ("softmax", "uniform_ste")
LIF_TAU = 2.0
MAX_LEVELS = 16
#: spacing of a graded neuron's thresholds: +-0.674 are the quartiles of a unit Gaussian, so at
#: init (unit-variance pre-activations, threshold 0) the 4 levels are about equally likely
GRADE_STEP = 0.674


def n_planes(levels: int) -> int:
    """Bit-planes of a graded code with ``levels`` spike counts (0..levels-1): 1 for binary."""
    return max(1, (levels - 1).bit_length())


def kernel_ranks_graded(levels: int, score: str) -> bool:
    """Whether the causal top-k kernel can rank these codes: binary ones; graded ones under
    ``"overlap"`` (the AND popcount of expanded codes *is* ``sum_ab 2^(a+b) |q_a AND k_b|`` =
    q.k, for any L); graded ones under the centred ``"hamming"`` score when L = 2^P."""
    return levels == 2 or score == "overlap" or levels & (levels - 1) == 0


def packed_code_words(code_bits: int, levels: int, expanded: bool) -> int:
    """64-bit words of one packed code: P bit-planes of ``code_bits`` each (the plane-pair
    matrix path), or, ``expanded`` for the kernel, (2^P - 1)^2 copies side by side at the bit
    level (spiking_attention.packed.expand_codes); binary codes are the same either way."""
    P = n_planes(levels)
    return n_words_for(code_bits * (2 ** P - 1) ** 2) if expanded else n_words_for(code_bits) * P


def _hash_u32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mix (lowbias32-like) on int64 tensors; values stay < 2^32 (no overflow)."""
    m = 0xFFFFFFFF
    x = x & m
    x = ((x >> 16) ^ x) * 0x045D9F3B & m
    x = ((x >> 16) ^ x) * 0x045D9F3B & m
    return (x >> 16) ^ x


def brain_prior_mask(t_q: int, t_k: int, window: int | None, random_frac: float = 0.0, seed: int = 0,
                     *, device=None) -> torch.Tensor:
    """Causal brain-prior connectivity: key j is allowed for query i when ``j <= i`` and
    (``i - j < window`` or a seeded coin with probability ``random_frac`` says so).

    Queries are the last ``t_q`` of ``t_k`` positions (absolute query position ``t_k - t_q + r``),
    and the coin for (i, j) depends only on (i, j, seed), so any block of the mask, e.g. one
    decode step, is the same as that block of the full mask. ``window=None`` means causal only.

    Shapes: -> (t_q, t_k) bool.
    """
    cm = causal_mask(t_q, t_k, device=device)
    if window is None:
        return cm
    i = torch.arange(t_k - t_q, t_k, device=device, dtype=torch.int64)[:, None]
    j = torch.arange(t_k, device=device, dtype=torch.int64)[None, :]
    local = (i - j) < window
    if random_frac > 0:
        h = _hash_u32(_hash_u32(i * 0x9E3779B1 + j) ^ (int(seed) * 0x85EBCA77))
        coin = h.to(torch.float64) < random_frac * 4294967296.0
        local = local | coin
    return cm & local


def _check_common(d_model, n_head, k, max_seq_len):
    for name, v in (("d_model", d_model), ("n_head", n_head), ("max_seq_len", max_seq_len)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if d_model % n_head != 0:
        raise ValueError(f"d_model ({d_model}) must be divisible by n_head ({n_head})")
    resolve_k(k, torch.tensor([1]))  # raises ValueError naming k
    if isinstance(k, int) and k > max_seq_len:
        raise ValueError(f"k={k} exceeds the {max_seq_len} keys a query can ever see (max_seq_len)")


def _check_input(x: torch.Tensor, d_model: int, max_seq_len: int):
    if x.dim() != 3 or x.shape[-1] != d_model:
        raise ValueError(f"expected x of shape (B, T, {d_model}), got {tuple(x.shape)}")
    if x.shape[1] > max_seq_len:
        raise ValueError(f"sequence length {x.shape[1]} exceeds max_seq_len {max_seq_len}")
    if x.shape[1] < 1:
        raise ValueError("sequence length must be >= 1")


def qkv_heads(att: nn.Module, x: torch.Tensor):
    """Checked input through a fused ``att.c_attn`` (C -> 3C), split into per-head q, k, v.

    Shapes: x (B, T, C) -> q, k, v (B, nh, T, hs) each."""
    _check_input(x, att.d_model, att.max_seq_len)
    B, T, C = x.shape
    nh, hs = att.n_head, att.head_size
    q, k, v = att.c_attn(x).split(C, dim=2)
    return tuple(t.view(B, T, nh, hs).transpose(1, 2) for t in (q, k, v))   # (B, nh, T, hs) each


def allowed_keys(att: nn.Module, t_q: int, t_k: int, device=None) -> torch.Tensor:
    """The (t_q, t_k) bool mask of keys the module may attend (causal AND its prior, if any)."""
    return brain_prior_mask(t_q, t_k, getattr(att, "prior_window", None),
                            getattr(att, "prior_random_frac", 0.0), getattr(att, "prior_seed", 0),
                            device=device)


def _check_local_window(local_window, k, max_seq_len) -> None:
    """A brain-prior local window must fit the context and leave room for k far keys."""
    if local_window is None:
        return
    if isinstance(local_window, bool) or not isinstance(local_window, int) or local_window < 1:
        raise ValueError(f"local_window must be a positive int or None, got {local_window!r}")
    if local_window >= max_seq_len:
        raise ValueError(f"local_window={local_window} leaves no far keys in a context of max_seq_len="
                         f"{max_seq_len}: it must be < max_seq_len")
    if isinstance(k, int) and k > max_seq_len - local_window:
        raise ValueError(f"k={k} far winners exceed the {max_seq_len - local_window} keys outside a local window "
                         f"of {local_window} at max_seq_len={max_seq_len}")


def selection_masks(k, allowed: torch.Tensor, local_window: int | None) -> list[tuple[object, torch.Tensor]]:
    """The k-WTA selections a layer makes, as (k, allowed mask) pairs whose winners are united;
    ``k = None`` keeps every allowed key of that mask.

    Without a local window: one selection, the k best of ``allowed``. With one (the brain
    prior, after the seed design of this project): every key of the local window (the query
    and the ``local_window - 1`` before it) and the k best of the older keys, so content picks
    only what recency cannot reach. Shapes: allowed (t_q, t_k) bool.
    """
    if local_window is None:
        return [(k, allowed)]
    t_q, t_k = allowed.shape
    local = brain_prior_mask(t_q, t_k, local_window, device=allowed.device)
    return [(None, allowed & local), (k, allowed & ~local)]


def _select(scores: torch.Tensor, selections, tie_rule: str = "recent", *, integer: bool = False) -> torch.Tensor:
    """Union of the k-WTA winners of every selection (ties to the more recent key)."""
    win = None
    for k, mask in selections:
        if k is None:
            w = mask.expand_as(scores)
        elif tie_rule == "recent":
            w = kwta_mask(scores, k, mask, integer=integer)
        elif tie_rule == "older":  # mirror the key axis: "higher index wins" becomes "lower wins"
            w = kwta_mask(scores.flip(-1), k, mask.flip(-1), integer=integer).flip(-1)
        else:
            raise ValueError(f"tie_rule must be 'recent' or 'older', got {tie_rule!r}")
        win = w if win is None else win | w
    return win


def _far_stats(win: torch.Tensor, scores: torch.Tensor, k, local_window: int, allowed: torch.Tensor) -> dict:
    """What the far (content-chosen) winners of a brain-prior layer did: their share of all
    winners, how far back they reach, and how often a tie decided the cut among far keys."""
    T = win.shape[-1]
    far = allowed & ~brain_prior_mask(T, T, local_window, device=win.device)
    far_win = win & far
    i = torch.arange(T, device=win.device)[:, None]
    j = torch.arange(T, device=win.device)[None, :]
    dist = (i - j).expand_as(far_win)[far_win].double()
    n_far = int(far_win.sum())
    B, nh = win.shape[0], win.shape[1]
    out = {"far_winner_frac": n_far / max(1, int(win.sum())),
           "far_reach_mean": float(dist.mean()) if n_far else 0.0,
           "far_reach_max": float(dist.max()) if n_far else 0.0}
    out["tie_at_cut_frac"] = _attention_stats(far_win, far, scores, k, B, T, nh)["tie_at_cut_frac"]
    return out


def _attention_stats(win: torch.Tensor, allowed: torch.Tensor, scores_int: torch.Tensor | None, k,
                     B: int, T: int, nh: int) -> dict:
    """Density, attended positions and tie statistics from the winner mask (B, nh, T, T)."""
    n_causal = T * (T + 1) // 2
    n_allowed = int(allowed.sum())
    n_win = int(win.sum())
    stats = {
        "B": B, "T": T, "n_head": nh,
        "n_causal_pairs": B * nh * n_causal,
        "n_allowed_pairs": B * nh * n_allowed,
        "n_winners": n_win,
        "attn_density": n_win / (B * nh * n_causal),
        "attn_density_allowed": n_win / max(1, B * nh * n_allowed),
        "attended_per_query": n_win / (B * nh * T),
    }
    if scores_int is not None:
        # a tie across the cut: the (k+1)-th allowed score equals the k-th, so the tie rule decided
        s = scores_int.masked_fill(~allowed, float("-inf"))
        n_al = allowed.sum(-1)  # (T,)
        k_row = resolve_k(k, n_al)  # (T,)
        kk = int(k_row.max()) + 1
        if kk <= T:
            top = torch.topk(s, kk, dim=-1).values  # (B, nh, T, kk)
            kth = torch.gather(top, -1, (k_row - 1).clamp_min(0).view(1, 1, T, 1).expand(B, nh, T, 1))
            nxt = torch.gather(top, -1, k_row.clamp_max(kk - 1).view(1, 1, T, 1).expand(B, nh, T, 1))
            rows = (n_al > k_row).view(1, 1, T, 1)  # rows where something was pruned
            tie = (kth == nxt) & rows
            stats["tie_at_cut_frac"] = float(tie.sum()) / max(1, int(rows.sum()) * B * nh)
        else:
            stats["tie_at_cut_frac"] = 0.0
    return stats


class SpikingKWTAAttention(StatsMixin, nn.Module):
    """Causal multi-head attention with binary spike codes for Q/K and k-WTA over their scores.

    Shapes: x (B, T, C) -> y (B, T, C); codes (B, nh, T, code_bits) in {0, 1}.
    Example: ``SpikingKWTAAttention(128, 4, 32, 8, max_seq_len=64)(x)``.
    """

    own_init = True

    def __init__(self, d_model: int, n_head: int, code_bits: int, k, *, max_seq_len: int,
                 score: str = "hamming", neuron: str = "heaviside", surrogate: str = "atan",
                 output: str = "softmax", prior_window: int | None = None, prior_random_frac: float = 0.0,
                 prior_seed: int = 0, local_window: int | None = None, proj_dim: int | None = None,
                 fire_target: float | None = None, fire_weight: float = 1.0, levels: int = 2,
                 grade_step: float = GRADE_STEP, bias: bool = False, n_layer: int = 4,
                 surrogate_alpha: float | None = None):
        super().__init__()
        _check_common(d_model, n_head, k, max_seq_len)
        _check_local_window(local_window, k, max_seq_len)
        if local_window is not None and prior_window is not None:
            raise ValueError("local_window (dense local keys + k-WTA far keys) and prior_window (a mask of "
                             "local + random keys) are two brain priors: set one of them")
        if isinstance(code_bits, bool) or not isinstance(code_bits, int) or code_bits < 1:
            raise ValueError(f"code_bits must be a positive int (bits per head), got {code_bits!r}")
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        if neuron not in NEURONS:
            raise ValueError(f"neuron must be one of {NEURONS}, got {neuron!r}")
        if surrogate not in SURROGATES:
            raise ValueError(f"surrogate must be one of {sorted(SURROGATES)}, got {surrogate!r}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if prior_window is not None and (isinstance(prior_window, bool) or not isinstance(prior_window, int)
                                         or prior_window < 1):
            raise ValueError(f"prior_window must be a positive int or None, got {prior_window!r}")
        if not 0.0 <= float(prior_random_frac) <= 1.0:
            raise ValueError(f"prior_random_frac must be in [0, 1], got {prior_random_frac}")
        if prior_random_frac > 0 and prior_window is None:
            raise ValueError("prior_random_frac needs a prior_window (random links are added to a local window)")
        if code_bits >= 2 ** 24:
            raise ValueError(f"code_bits must be < 2^24 so float32 scores stay exact, got {code_bits}")
        if proj_dim is not None and (isinstance(proj_dim, bool) or not isinstance(proj_dim, int)
                                     or not 1 <= proj_dim <= code_bits):
            raise ValueError(f"proj_dim must be an int in [1, code_bits={code_bits}] or None, got {proj_dim!r}")
        if fire_target is not None and not 0.0 < fire_target < 1.0:
            raise ValueError(f"fire_target must be a firing rate in (0, 1) or None, got {fire_target!r}")
        if not fire_weight >= 0:
            raise ValueError(f"fire_weight must be >= 0, got {fire_weight!r}")
        if isinstance(levels, bool) or not isinstance(levels, int) or not 2 <= levels <= MAX_LEVELS:
            raise ValueError(f"levels must be an int in [2, {MAX_LEVELS}] (spike-count levels per code bit; "
                             f"2 = binary), got {levels!r}")
        if levels > 2 and neuron != "heaviside":
            raise ValueError(f"graded spikes (levels={levels}) need neuron='heaviside', got {neuron!r}")
        if not (isinstance(grade_step, (int, float)) and grade_step > 0):
            raise ValueError(f"grade_step must be a number > 0, got {grade_step!r}")
        if code_bits * (levels - 1) ** 2 >= 2 ** 24:
            raise ValueError(f"code_bits * (levels - 1)^2 must be < 2^24 so float32 scores stay exact, "
                             f"got code_bits={code_bits}, levels={levels}")
        self.d_model, self.n_head, self.code_bits, self.k = d_model, n_head, code_bits, k
        self.head_size = d_model // n_head
        self.max_seq_len = max_seq_len
        self.score, self.neuron, self.surrogate, self.output = score, neuron, surrogate, output
        self.surrogate_alpha = surrogate_alpha
        self.spike_fn = get_surrogate(surrogate, surrogate_alpha)  # Heaviside forward, surrogate backward
        self.prior_window, self.prior_random_frac, self.prior_seed = prior_window, float(prior_random_frac), prior_seed
        self.local_window = local_window
        self.fire_target, self.fire_weight = fire_target, float(fire_weight)
        self.levels, self.grade_step = levels, float(grade_step)
        self.aux_loss: torch.Tensor | None = None
        n_code = n_head * code_bits
        # Wider codes at equal parameters: the learned projection is proj_dim wide per head and a
        # fixed random Gaussian map (a buffer, not a parameter) spreads it over code_bits bits, so
        # scores take 2 * code_bits + 1 values and ties at the k-WTA cut get rarer.
        self.proj_dim = code_bits if proj_dim is None else proj_dim
        n_proj = n_head * self.proj_dim
        self.q_proj = nn.Linear(d_model, n_proj, bias=bias)
        self.k_proj = nn.Linear(d_model, n_proj, bias=bias)
        if self.proj_dim != code_bits:
            g = torch.Generator().manual_seed(0x5EED + code_bits * 1000 + self.proj_dim)
            self.register_buffer("expand", torch.randn(self.proj_dim, code_bits, generator=g)
                                 / math.sqrt(self.proj_dim))       # (proj_dim, code_bits)
        else:
            self.expand = None
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.c_proj = nn.Linear(d_model, d_model, bias=bias)
        self.q_threshold = nn.Parameter(torch.zeros(n_code))
        self.k_threshold = nn.Parameter(torch.zeros(n_code))
        self.log_temp = nn.Parameter(torch.zeros(n_head))
        self.record = False
        #: "recent" (the rule of kwta_mask and the packed path) or "older" (ablation only: ties
        #: at the k-th score go to the older key; the packed path refuses it)
        self.tie_rule = "recent"
        self._init_weights(n_layer)

    def _init_weights(self, n_layer: int) -> None:
        # Q/K feed a threshold at 0: unit-variance pre-activations (for LayerNormed inputs) put
        # them inside the surrogate's window (width ~1 for ATan alpha=2) and fire ~half the bits
        # (the expansion map keeps unit variance: its columns have unit expected norm).
        for lin in (self.q_proj, self.k_proj):
            nn.init.normal_(lin.weight, std=1.0 / math.sqrt(self.d_model))
        nn.init.normal_(self.v_proj.weight, std=0.02)  # nanoGPT's init for the value path
        nn.init.normal_(self.c_proj.weight, std=0.02 / math.sqrt(2 * n_layer))
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.c_proj):
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)

    # -------------------------------------------------------------- pieces (shared with packed.py)
    def _fire(self, pre: torch.Tensor, threshold: torch.Tensor, v0=None):
        """Spikes from pre-activations (B, T, n_code); returns (spikes, last membrane or None).

        With ``levels = L > 2`` a code bit is a graded spike: the count of the L - 1 thresholds
        ``threshold + (l - L/2) * grade_step`` (l = 1..L-1) that the pre-activation crosses, i.e.
        the spike count of L - 1 time steps of a multi-threshold neuron, in {0, ..., L-1}. Each
        crossing is a Heaviside with the surrogate gradient; L = 2 is the binary neuron exactly."""
        if self.neuron == "heaviside":
            L = self.levels
            offsets = [(l - L / 2) * self.grade_step for l in range(1, L)]
            if not torch.is_grad_enabled():
                # inference (decoding): no surrogate to carry, so skip the autograd Function and
                # compare against every threshold at once; the same float32 differences as below
                d = (pre - threshold)[..., None] - torch.tensor(offsets, dtype=pre.dtype)
                return heaviside(d).sum(-1), None
            if L == 2:
                return self.spike_fn(pre - threshold), None
            return sum(self.spike_fn(pre - threshold - off) for off in offsets), None
        # LIF along the token axis, threshold per code bit; causal by construction
        v = torch.zeros_like(pre[:, 0]) if v0 is None else v0
        out = []
        for t in range(pre.shape[1]):
            s, v = lif_step(pre[:, t], v, tau=LIF_TAU, v_th=threshold, reset="hard", surrogate=self.spike_fn)
            out.append(s)
        return torch.stack(out, 1), v

    def _pre(self, proj: torch.Tensor) -> torch.Tensor:
        """Pre-activations of the code bits. Shapes: (B, T, nh*proj_dim) -> (B, T, nh*code_bits)."""
        if self.expand is None:
            return proj
        B, T, _ = proj.shape
        return (proj.view(B, T, self.n_head, self.proj_dim) @ self.expand).view(B, T, -1)

    def codes(self, x: torch.Tensor, state: dict | None = None):
        """Binary query and key codes of ``x`` and the value vectors.

        ``state`` (LIF only) carries the membranes between calls ({"vq", "vk"}); returned updated.
        Shapes: x (B, T, C) -> q, k (B, nh, T, code_bits) {0,1}; v (B, nh, T, hs); state.
        """
        B, T, _ = x.shape
        nh, cb, hs = self.n_head, self.code_bits, self.head_size
        state = {} if state is None else state
        q, vq = self._fire(self._pre(self.q_proj(x)), self.q_threshold, state.get("vq"))  # (B, T, nh*cb)
        k, vk = self._fire(self._pre(self.k_proj(x)), self.k_threshold, state.get("vk"))
        q = q.view(B, T, nh, cb).transpose(1, 2)  # (B, nh, T, cb)
        k = k.view(B, T, nh, cb).transpose(1, 2)  # (B, nh, T, cb)
        v = self.v_proj(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        return q, k, v, {"vq": vq, "vk": vk}

    def integer_scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Exact integer scores as float: overlap ``q.k``, or Hamming similarity ``(2q-1).(2k-1)``;
        for graded codes (counts c in 0..L-1) the centred ``(2q-L+1).(2k-L+1)``, which is the
        bipolar one at L = 2. Integer operands below 2^24, so float32 sums are exact.

        Shapes: q (..., t_q, cb), k (..., t_k, cb) -> (..., t_q, t_k).
        """
        if self.score == "overlap":
            return q @ k.transpose(-2, -1)
        c = self.levels - 1
        return (2 * q - c) @ (2 * k - c).transpose(-2, -1)  # binary: = code_bits - 2 * hamming

    def kernel_ranks(self) -> bool:
        """Whether the packed path ranks this layer's codes with ``hdc.causal_topk``: an integer
        k, no random long-range links, and codes the kernel scores exactly
        (:func:`kernel_ranks_graded`); otherwise it takes the plane-pair matrix path."""
        return (isinstance(self.k, int) and self.prior_random_frac == 0
                and kernel_ranks_graded(self.levels, self.score))

    def score_scale(self) -> torch.Tensor:
        """Per-head factor from integer score to softmax logit. Shapes: -> (nh, 1, 1)."""
        # (L^2 - 1) / 3 is the mean square of a centred level 2c - L + 1 (c uniform): graded scores
        # start at the binary codes' logit scale
        norm = math.sqrt(self.code_bits) * (self.levels ** 2 - 1) / 3
        return (self.log_temp.exp() / norm).view(-1, 1, 1)

    def attention_weights(self, s_int: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
        """Softmax over the winners' scaled scores (zero elsewhere). Shapes: -> (B, nh, t_q, t_k)."""
        logits = (s_int * self.score_scale()).masked_fill(~win, float("-inf"))  # (B, nh, t_q, t_k)
        att = F.softmax(logits, dim=-1)
        att = torch.nan_to_num(att, nan=0.0)  # rows without any allowed key (none when causal)
        if self.output == "uniform_ste":
            uni = win.to(att.dtype) / win.sum(-1, keepdim=True).clamp_min(1)
            att = att + (uni - att).detach()
        return att

    def aggregate(self, s_int: torch.Tensor, win: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Softmax over the winners' scaled scores, times the values. Shapes: -> (B, nh, t_q, hs)."""
        return self.attention_weights(s_int, win) @ v

    # -------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.d_model, self.max_seq_len)
        B, T, C = x.shape
        q, k, v, _ = self.codes(x)                                   # (B, nh, T, cb) x2, (B, nh, T, hs)
        s_int = self.integer_scores(q, k)                            # (B, nh, T, T)
        allowed = allowed_keys(self, T, T, device=x.device)          # (T, T)
        win = _select(s_int, selection_masks(self.k, allowed, self.local_window), self.tie_rule,
                      integer=True)                                  # (B, nh, T, T), exact integer ties
        att = self.attention_weights(s_int, win)                     # (B, nh, T, T)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)     # (B, T, C)
        self._report_pass(q, k, win, allowed, s_int, att)
        # a firing-rate target (sparse codes, so an event-driven path has silent bits to skip):
        # the squared gap of each code's mean rate, added to the loss by the model in training
        self.aux_loss = None
        if self.fire_target is not None and self.training:
            t, c = self.fire_target, self.levels - 1
            self.aux_loss = self.fire_weight * ((q.mean() / c - t) ** 2 + (k.mean() / c - t) ** 2)
        return self.c_proj(y)

    @torch.no_grad()
    def _report_pass(self, q, k, win, allowed, s_int, att) -> None:
        B, nh, T, cb = q.shape
        q_spikes, k_spikes = q.detach(), k.detach()          # spike counts (binary: spikes)
        # a graded code's firing rate: spikes per bit per time step (count / (L - 1))
        q, k = q_spikes / (self.levels - 1), k_spikes / (self.levels - 1)
        stats = _attention_stats(win, allowed, s_int.detach(), self.k, B, T, nh)
        if self.local_window is not None:
            stats.update(_far_stats(win, s_int.detach(), self.k, self.local_window, allowed))
        stats.update({
            "code_bits": cb, "k": self.k, "levels": self.levels,
            "q_firing_rate": float(q.mean()), "k_firing_rate": float(k.mean()),
            "q_silent_frac": float((q.amax(dim=(0, 2)) == 0).float().mean()),
            "k_silent_frac": float((k.amax(dim=(0, 2)) == 0).float().mean()),
            "q_silent_token_frac": float((q.amax(-1) == 0).float().mean()),
            "k_silent_token_frac": float((k.amax(-1) == 0).float().mean()),
            "q_firing_rate_per_head": q.mean(dim=(0, 2, 3)).tolist(),
            "k_firing_rate_per_head": k.mean(dim=(0, 2, 3)).tolist(),
        })
        self._report(stats, self._ops(stats), q_spikes=q_spikes, k_spikes=k_spikes, attn=att)

    def _ops(self, st: dict) -> dict:
        """The core's operations: the score of each allowed (query, key) pair accumulates the
        key's bits where the query spikes (the field's SOPs = firing rate x FLOPs), choosing the
        winners is one integer comparison per allowed pair, the softmax scale one MAC per winner
        and the values ``head_size`` MACs per winner. ``packed_word_ops`` is the packed path's
        XOR + POPCNT per 64-bit word of the codes it reads: expanded ones where the kernel ranks
        graded codes, P^2 plane pairs on the matrix path (no per-operation energy figure exists)."""
        n_allowed, n_win = st["n_allowed_pairs"], float(st["n_winners"])
        # a graded query spikes up to L - 1 times per bit; each spike accumulates the key's count
        score_ac = st["q_firing_rate"] * (self.levels - 1) * n_allowed * self.code_bits
        # the fixed expansion to wider codes: a real-valued map per head for queries and keys
        expand_mac = 0.0 if self.expand is None else \
            2.0 * st["B"] * st["T"] * self.n_head * self.proj_dim * self.code_bits
        return {"kind": "spiking_kwta", "score_ac": score_ac, "select_ac": float(n_allowed),
                "softmax_mac": n_win, "value_mac": n_win * self.head_size, "expand_mac": expand_mac,
                "packed_word_ops": float(n_allowed * self._packed_pair_words()),
                "mac": n_win + n_win * self.head_size + expand_mac, "ac": score_ac + float(n_allowed)}

    def _packed_pair_words(self) -> int:
        """Words the packed path reads to score one (query, key) pair."""
        if self.kernel_ranks():
            return packed_code_words(self.code_bits, self.levels, expanded=True)
        # the matrix path pairs every query plane with every key plane
        return packed_code_words(self.code_bits, self.levels, expanded=False) * n_planes(self.levels)

    def packed(self, **kw):
        """This layer's inference form on packed binary codes with a packed KV cache
        (:class:`spiking_attention.packed.PackedSpikingAttention`; ``kw``: method, threads, ...)."""
        from .packed import PackedSpikingAttention
        return PackedSpikingAttention(self, **kw)

    decoder = packed   # incremental decoding runs on the packed codes and the hdc kernels

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, n_head={self.n_head}, code_bits={self.code_bits}, k={self.k}, "
                f"score={self.score}, neuron={self.neuron}, surrogate={self.surrogate}, output={self.output}, "
                f"prior_window={self.prior_window}, prior_random_frac={self.prior_random_frac}, "
                f"local_window={self.local_window}, proj_dim={self.proj_dim}, fire_target={self.fire_target}, "
                f"levels={self.levels}")


def _real_valued_ops(st: dict, head_size: int) -> dict:
    """Core operations of real-valued attention: ``q.k`` over every causal pair (dense, window and
    top-k all form the causal scores) plus ``head_size`` MACs per attended key for the values."""
    n_causal, attended = st["n_causal_pairs"], float(st["n_winners"])
    return {"kind": "real_valued", "score_mac": float(n_causal * head_size), "value_mac": attended * head_size,
            "mac": float(n_causal * head_size) + attended * head_size, "ac": 0.0}


class _RealValuedAttention(StatsMixin, nn.Module):
    """Shared shell of the real-valued attentions: c_attn (C -> 3C) and c_proj (C -> C), exactly
    a dense attention layer's weights, so every control has the dense twin's parameter count."""

    def __init__(self, d_model: int, n_head: int, *, max_seq_len: int, dropout: float = 0.0, bias: bool = False):
        super().__init__()
        self.d_model, self.n_head, self.max_seq_len = d_model, n_head, max_seq_len
        self.head_size = d_model // n_head
        self.c_attn = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.c_proj = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def _qkv(self, x: torch.Tensor):
        return qkv_heads(self, x)

    def _finish(self, y: torch.Tensor, stats: dict, **tensors) -> torch.Tensor:
        B, nh, T, hs = y.shape
        self._report(stats, _real_valued_ops(stats, hs), **tensors)
        y = y.transpose(1, 2).contiguous().view(B, T, nh * hs)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._attend(*self._qkv(x))

    # ------------------------------------------------------------------ incremental decoding
    def decoder(self, **kw):
        """The layer's incremental form: itself (``prefill``/``step`` with a float KV cache)."""
        return self

    def _row_winners(self, s: torch.Tensor) -> torch.Tensor:
        """Winners of the newest query among all n cached keys. Shapes: s (1, nh, 1, n) -> bool."""
        raise NotImplementedError

    @torch.no_grad()
    def prefill(self, x: torch.Tensor, capacity: int | None = None):
        """Run a prompt (batch 1) and cache its keys and values. Shapes: x (1, T, C) -> y (1, T, C), cache."""
        if x.dim() != 3 or x.shape[0] != 1:
            raise ValueError(f"prefill takes one sequence (1, T, C), got shape {tuple(x.shape)}")
        q, k, v = self._qkv(x)
        cache = TensorKVCache.empty(self.n_head, self.max_seq_len if capacity is None else capacity,
                                    self.head_size, dtype=k.dtype)
        cache.append(k[0], v[0])
        return self._attend(q, k, v), cache

    @torch.no_grad()
    def step(self, x_t: torch.Tensor, cache: "TensorKVCache") -> torch.Tensor:
        """One decoding step against the cached keys (itself included). Shapes: (1, 1, C) -> (1, 1, C)."""
        if x_t.dim() != 3 or x_t.shape[:2] != (1, 1):
            raise ValueError(f"step takes one token (1, 1, C), got shape {tuple(x_t.shape)}")
        q, k, v = self._qkv(x_t)                                      # (1, nh, 1, hs)
        cache.append(k[0], v[0])
        keys, vals = cache.k[None, :, :cache.n], cache.v[None, :, :cache.n]   # (1, nh, n, hs)
        s = (q @ keys.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_size))  # (1, nh, 1, n)
        att = F.softmax(s.masked_fill(~self._row_winners(s), float("-inf")), dim=-1)
        y = (att @ vals).transpose(1, 2).reshape(1, 1, self.d_model)          # (1, 1, C)
        return self.c_proj(y)


class TensorKVCache:
    """Keys and values of one real-valued attention layer, in time order (batch 1)."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor):
        self.k, self.v, self.n = k, v, 0       # (nh, cap, hs) each

    @classmethod
    def empty(cls, n_head: int, capacity: int, head_size: int, dtype=torch.float32) -> "TensorKVCache":
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"cache capacity must be a positive int, got {capacity!r}")
        return cls(torch.zeros(n_head, capacity, head_size, dtype=dtype),
                   torch.zeros(n_head, capacity, head_size, dtype=dtype))

    def append(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Add keys and values (nh, t, hs) after the cached ones."""
        t = k.shape[1]
        if self.n + t > self.k.shape[1]:
            raise ValueError(f"decode cache full: {self.n} + {t} tokens exceed capacity {self.k.shape[1]}")
        self.k[:, self.n:self.n + t] = k
        self.v[:, self.n:self.n + t] = v
        self.n += t


class DenseCausalAttention(_RealValuedAttention):
    """nanoGPT's multi-head causal softmax attention (the dense twin), or a recency window.

    ``window=None``: every earlier key; ``window=w``: only the w most recent keys (the query
    itself and the w - 1 before it), a recency control with top-k's density.
    Shapes: x (B, T, C) -> (B, T, C). Example: ``DenseCausalAttention(128, 4, max_seq_len=64)``.
    """

    def __init__(self, d_model: int, n_head: int, *, max_seq_len: int, window: int | None = None,
                 dropout: float = 0.0, bias: bool = False):
        _check_common(d_model, n_head, 1, max_seq_len)
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
            raise ValueError(f"window must be a positive int or None, got {window!r}")
        super().__init__(d_model, n_head, max_seq_len=max_seq_len, dropout=dropout, bias=bias)
        self.window = window

    def _attend(self, q, k, v) -> torch.Tensor:
        B, nh, T, _ = q.shape
        drop = self.dropout if self.training else 0.0
        kept = brain_prior_mask(T, T, self.window, device=q.device)           # (T, T)
        if self.window is None:  # the fused causal kernel: `kept` is its mask written out
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=kept, dropout_p=drop)
        stats = _attention_stats(kept.expand(B, nh, T, T), kept, None, None, B, T, nh)
        return self._finish(y, stats)

    def _row_winners(self, s: torch.Tensor) -> torch.Tensor:
        n = s.shape[-1]
        return brain_prior_mask(1, n, self.window, device=s.device).expand_as(s)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_head={self.n_head}, window={self.window}"


class TopKSoftmaxAttention(_RealValuedAttention):
    """Explicit Sparse Transformer attention (Zhao et al. 2019, arXiv 1912.11637): real q, k;
    softmax over the k largest ``q.k / sqrt(hs)`` of each row among the causal keys.

    The gradient reaches only the kept scores (the others are constants -inf). Ties at the k-th
    score go to the more recent key (:func:`kwta_mask`), the rule of the spiking layer too.
    Shapes: x (B, T, C) -> (B, T, C). Example: ``TopKSoftmaxAttention(128, 4, 8, max_seq_len=64)``.
    """

    def __init__(self, d_model: int, n_head: int, k, *, max_seq_len: int, local_window: int | None = None,
                 dropout: float = 0.0, bias: bool = False):
        _check_common(d_model, n_head, k, max_seq_len)
        _check_local_window(local_window, k, max_seq_len)
        super().__init__(d_model, n_head, max_seq_len=max_seq_len, dropout=dropout, bias=bias)
        self.k, self.local_window = k, local_window

    def _attend(self, q, k, v) -> torch.Tensor:
        B, nh, T, hs = q.shape
        s = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B, nh, T, T)
        allowed = causal_mask(T, device=q.device)
        win = _select(s, selection_masks(self.k, allowed, self.local_window))   # (B, nh, T, T)
        att = F.softmax(s.masked_fill(~win, float("-inf")), dim=-1)
        att = F.dropout(att, p=self.dropout, training=self.training)
        y = att @ v                                              # (B, nh, T, hs)
        stats = _attention_stats(win, allowed, s.detach(), self.k, B, T, nh)
        if self.local_window is not None:
            stats.update(_far_stats(win, s.detach(), self.k, self.local_window, allowed))
        return self._finish(y, stats, attn=att)

    def _row_winners(self, s: torch.Tensor) -> torch.Tensor:
        allowed = torch.ones(1, s.shape[-1], dtype=torch.bool, device=s.device)
        return _select(s, selection_masks(self.k, allowed, self.local_window))

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_head={self.n_head}, k={self.k}, local_window={self.local_window}"
