"""Local learning rules off the backprop path: pair STDP, three-factor rules, reward-modulated STDP.

Pure functions first (every one a few tensor operations, checked against the analytic STDP
window and against hand-computed products in tests/test_plasticity.py), then one learner
object for the training harness's pluggable learner hook.

* **Pair STDP with traces** (Bi & Poo 1998; the trace form of Morrison, Diesmann & Gerstner
  2008): each neuron keeps a trace that decays by ``exp(-1 / tau)`` per step and jumps by 1 at
  a spike (the trace counts the spike of its own step). At a post spike the synapse grows by
  ``a_plus * trace_pre``; at a pre spike it shrinks by ``a_minus * trace_post``. For one pre
  spike at t_pre and one post spike at t_post this gives the window
  ``dW(dt) = a_plus exp(-dt / tau_plus)`` for ``dt = t_post - t_pre > 0``, ``-a_minus exp(dt /
  tau_minus)`` for ``dt < 0``, and ``a_plus - a_minus`` at ``dt = 0`` (:func:`stdp_window`).
* **Three-factor rule** (Fremaux & Gerstner 2016, Front. Neural Circuits 9:85): an
  eligibility trace ``e = decay e + post (x) pre`` marks which synapses were co-active; a
  neuromodulator ``m`` (a reward, or a local error) turns it into a change ``dW = lr m e``.
* **Reward-modulated STDP as in Nord**: pre/post traces decaying by ``exp(-1/20)``;
  ``dW = lr (post (x) trace_pre - trace_post (x) pre)`` averaged over batch and time and clipped
  elementwise; reward ``r = sigmoid(EMA(loss) - loss)`` (better than usual: r > 1/2); the change
  is scaled by ``2 r - 1`` and the weights are clamped to ``[-w_max, w_max]``.
* **Three-factor rule with a local error on the readout** (:class:`LocalErrorLearner`): the
  modulator of each output neuron is its own error ``onehot(target) - softmax(logits)``, known
  at the output without any backward pass, so ``dW = lr/N sum_n err_n (x) pre_n``: the delta
  rule (Widrow & Hoff 1960) written as a three-factor rule with per-neuron modulators.

Time runs along axis ``-2`` of activity tensors ``(..., T, n)`` (for a language model: the token
positions of a sequence); weight changes have the ``nn.Linear`` layout ``(out, in)``.

Example::

    >>> learner = RewardSTDPLearner(model, layers=["transformer.h.0.mlp.c_proj"], lr=1e-3)
    >>> loss = learner.step(model, x, y, step=0)          # forward without gradients, local update
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

__all__ = ["trace_step", "traces", "stdp_pair_update", "stdp_window", "stdp_run", "eligibility_step",
           "three_factor_update", "reward_from_loss", "rstdp_update", "ACTIVITIES", "RewardSTDPLearner",
           "LocalErrorLearner"]


def _check_decay(decay: float) -> None:
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"a trace decay per step must be in [0, 1), got {decay!r}")


def trace_step(trace: torch.Tensor, spikes: torch.Tensor, decay: float) -> torch.Tensor:
    """One step of a spike trace: ``decay * trace + spikes``. Shapes: (...) -> (...)."""
    return decay * trace + spikes


def traces(x: torch.Tensor, decay: float) -> torch.Tensor:
    """All traces of a train along axis -2: ``tr_t = sum_{s <= t} decay^(t - s) x_s``.

    One matrix product with the (T, T) lower-triangular decay matrix (the same numbers as
    looping :func:`trace_step`). Shapes: x (..., T, n) -> (..., T, n).
    """
    _check_decay(decay)
    T = x.shape[-2]
    t = torch.arange(T, dtype=x.dtype, device=x.device)
    lag = t[:, None] - t[None, :]                                            # (T, T)
    K = torch.where(lag >= 0, torch.as_tensor(decay, dtype=x.dtype) ** lag.clamp_min(0), torch.zeros((), dtype=x.dtype))
    return K @ x


def stdp_pair_update(pre: torch.Tensor, post: torch.Tensor, trace_pre: torch.Tensor, trace_post: torch.Tensor,
                     a_plus: float = 1.0, a_minus: float = 1.0) -> torch.Tensor:
    """Pair-STDP change summed over every leading axis: ``a_plus post^T trace_pre - a_minus trace_post^T pre``.

    Shapes: pre, trace_pre (..., n_in); post, trace_post (..., n_out) -> dW (n_out, n_in).
    """
    p, tp = pre.reshape(-1, pre.shape[-1]), trace_pre.reshape(-1, pre.shape[-1])
    q, tq = post.reshape(-1, post.shape[-1]), trace_post.reshape(-1, post.shape[-1])
    return a_plus * q.T @ tp - a_minus * tq.T @ p


def stdp_window(dt, *, a_plus: float = 1.0, a_minus: float = 1.0, tau_plus: float = 20.0,
                tau_minus: float = 20.0) -> torch.Tensor:
    """The analytic pair-STDP window at spike-time differences ``dt = t_post - t_pre`` (steps)."""
    dt = torch.as_tensor(dt, dtype=torch.float64)
    pot = a_plus * torch.exp(-dt.clamp_min(0) / tau_plus)
    dep = a_minus * torch.exp(dt.clamp_max(0) / tau_minus)
    return torch.where(dt > 0, pot, torch.where(dt < 0, -dep, pot - dep))


def stdp_run(pre: torch.Tensor, post: torch.Tensor, *, a_plus: float = 1.0, a_minus: float = 1.0,
             tau_plus: float = 20.0, tau_minus: float = 20.0) -> torch.Tensor:
    """Total pair-STDP change of spike trains, stepping :func:`trace_step` and :func:`stdp_pair_update`.

    Shapes: pre (T, n_in), post (T, n_out) in {0, 1} -> dW (n_out, n_in).
    """
    if pre.dim() != 2 or post.dim() != 2 or pre.shape[0] != post.shape[0]:
        raise ValueError(f"stdp_run needs pre (T, n_in) and post (T, n_out) of one length T, got "
                         f"{tuple(pre.shape)} and {tuple(post.shape)}")
    d_pre, d_post = math.exp(-1 / tau_plus), math.exp(-1 / tau_minus)
    tr_pre = torch.zeros_like(pre[0])
    tr_post = torch.zeros_like(post[0])
    dW = torch.zeros(post.shape[1], pre.shape[1], dtype=pre.dtype)
    for t in range(pre.shape[0]):
        tr_pre = trace_step(tr_pre, pre[t], d_pre)
        tr_post = trace_step(tr_post, post[t], d_post)
        dW += stdp_pair_update(pre[t], post[t], tr_pre, tr_post, a_plus, a_minus)
    return dW


def eligibility_step(elig: torch.Tensor, pre: torch.Tensor, post: torch.Tensor, decay: float) -> torch.Tensor:
    """``decay * elig + post^T pre`` (co-activity summed over leading axes).

    Shapes: elig (n_out, n_in), pre (..., n_in), post (..., n_out) -> (n_out, n_in).
    """
    _check_decay(decay)
    return decay * elig + post.reshape(-1, post.shape[-1]).T @ pre.reshape(-1, pre.shape[-1])


def three_factor_update(elig: torch.Tensor, modulator, lr: float = 1.0) -> torch.Tensor:
    """``lr * modulator * elig``: a scalar modulator (reward) or one per post neuron (a local error).

    Shapes: elig (n_out, n_in), modulator scalar or (n_out,) -> (n_out, n_in).
    """
    m = torch.as_tensor(modulator, dtype=elig.dtype)
    if m.dim() == 1:
        m = m[:, None]
    return lr * m * elig


def reward_from_loss(loss: float, loss_ema: float) -> float:
    """Nord's reward ``sigmoid(EMA(loss) - loss)``: above 1/2 when this batch beat the running loss."""
    return 1.0 / (1.0 + math.exp(-(loss_ema - loss)))


def rstdp_update(pre: torch.Tensor, post: torch.Tensor, reward: float, *, lr: float = 1e-3,
                 decay: float = math.exp(-1 / 20), clip: float = 1e-3) -> torch.Tensor:
    """Nord's reward-modulated STDP change of one batch, before the weight clamp.

    ``clip(lr * mean_{batch, t}(post_t (x) trace_pre_t - trace_post_t (x) pre_t), +-clip) * (2 r - 1)``,
    traces by :func:`traces` along axis -2.
    Shapes: pre (..., T, n_in), post (..., T, n_out) -> dW (n_out, n_in).
    """
    n = pre.reshape(-1, pre.shape[-1]).shape[0]
    dW = stdp_pair_update(pre, post, traces(pre, decay), traces(post, decay)) * (lr / n)
    return dW.clamp(-clip, clip) * (2.0 * reward - 1.0)


ACTIVITIES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,                            # real-valued currents -> a rate in (0, 1)
    "rate": lambda x: x.clamp(0.0, 1.0),                 # already spikes or rates
    "spike": lambda x: (x > 0).to(x.dtype),              # a threshold at zero
}


class RewardSTDPLearner:
    """Reward-modulated STDP on chosen ``nn.Linear`` layers, as a harness learner (no backprop).

    ``step(model, x, y, step) -> float`` runs the model without gradients, records each chosen
    layer's input (pre) and output (post) activity through forward hooks, maps them to rates by
    ``activity`` (:data:`ACTIVITIES`), and adds :func:`rstdp_update` to the weights, which are then
    clamped to ``[-w_max, w_max]``. The reward compares the batch loss with its running mean
    (``ema_beta``); the first batch only starts the mean. ``enabled=False`` computes the loss and
    changes nothing. ``layers``: module names, or None for every ``nn.Linear`` whose weight is not
    shared with another module (a tied output head is left alone).
    """

    def __init__(self, model: nn.Module, train_config=None, *, layers: list[str] | None = None,
                 lr: float = 1e-3, decay: float = math.exp(-1 / 20), clip: float = 1e-3, w_max: float = 1.0,
                 ema_beta: float = 0.9, activity: str = "sigmoid", enabled: bool = True):
        _check_decay(decay)
        if activity not in ACTIVITIES:
            raise ValueError(f"activity must be one of {sorted(ACTIVITIES)}, got {activity!r}")
        for name, v in (("lr", lr), ("clip", clip), ("w_max", w_max)):
            if not v > 0:
                raise ValueError(f"{name} must be > 0, got {v!r}")
        if not 0.0 <= ema_beta < 1.0:
            raise ValueError(f"ema_beta must be in [0, 1), got {ema_beta!r}")
        mods = dict(model.named_modules())
        if layers is None:
            seen: dict[int, int] = {}
            for m in model.modules():
                for p in m.parameters(recurse=False):
                    seen[id(p)] = seen.get(id(p), 0) + 1
            layers = [n for n, m in mods.items() if isinstance(m, nn.Linear) and seen[id(m.weight)] == 1]
        bad = [n for n in layers if not isinstance(mods.get(n), nn.Linear)]
        if bad:
            raise ValueError(f"layers must name nn.Linear modules of the model; not found or not Linear: {bad}")
        if not layers:
            raise ValueError("no nn.Linear layer to train with STDP")
        self.layers = list(layers)
        self.lr, self.decay, self.clip, self.w_max = lr, decay, clip, w_max
        self.ema_beta, self.activity, self.enabled = ema_beta, activity, enabled
        self.loss_ema: float | None = None
        self.last_reward: float | None = None
        self.n_updates = 0

    @torch.no_grad()
    def step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int) -> float:
        mods = dict(model.named_modules())
        seen: dict[str, tuple] = {}
        hooks = [mods[n].register_forward_hook(
            lambda m, a, out, n=n: seen.__setitem__(n, (a[0].detach(), out.detach())))
            for n in self.layers]
        try:
            _, loss = model(x, y)
        finally:
            for h in hooks:
                h.remove()
        lv = float(loss)
        if self.loss_ema is None:
            self.loss_ema = lv
            return lv
        r = reward_from_loss(lv, self.loss_ema)
        self.last_reward = r
        self.loss_ema = self.ema_beta * self.loss_ema + (1 - self.ema_beta) * lv
        if self.enabled:
            act = ACTIVITIES[self.activity]
            for n in self.layers:
                pre, post = seen[n]
                W = mods[n].weight
                W += rstdp_update(act(pre), act(post), r, lr=self.lr, decay=self.decay, clip=self.clip)
                W.clamp_(-self.w_max, self.w_max)
            self.n_updates += 1
        return lv

    def state_dict(self) -> dict:
        return {"loss_ema": self.loss_ema, "n_updates": self.n_updates, "enabled": self.enabled}

    def load_state_dict(self, state: dict) -> None:
        self.loss_ema, self.n_updates = state["loss_ema"], state["n_updates"]
        self.enabled = state["enabled"]


class LocalErrorLearner:
    """The readout layer learns by the three-factor rule with a local error; nothing else changes.

    ``step(model, x, y, step) -> float`` runs the model without gradients, records the input
    ``pre`` (..., n_in) and the logits (..., V) of ``layer`` (default ``"lm_head"``), and adds
    ``lr / N * elig`` where ``elig = sum_n err_n (x) pre_n`` (:func:`eligibility_step` with the
    error in place of post activity) and ``err = onehot(y) - softmax(logits)`` (targets < 0
    are padding and contribute nothing). For a cross-entropy readout this is exactly minus the
    loss gradient of that one layer, obtained from quantities local to it.

    A readout tied to the input embedding (nanoGPT's weight tying) is untied first (``untie``,
    default True) so that only the readout learns; ``untie=False`` refuses a tied layer.
    ``enabled=False`` computes the loss and changes nothing.
    """

    def __init__(self, model: nn.Module, train_config=None, *, layer: str = "lm_head", lr: float = 0.05,
                 untie: bool = True, enabled: bool = True):
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        mod = dict(model.named_modules()).get(layer)
        if not isinstance(mod, nn.Linear):
            raise ValueError(f"layer must name an nn.Linear readout of the model, got {layer!r}")
        shared = [n for n, m in model.named_modules() if m is not mod
                  and any(p is mod.weight for p in m.parameters(recurse=False))]
        if shared:
            if not untie:
                raise ValueError(f"layer {layer!r} shares its weight with {shared}; pass untie=True to give the "
                                 f"readout its own copy (the shared module then keeps the old weights)")
            mod.weight = nn.Parameter(mod.weight.detach().clone())
        self.layer, self.lr, self.enabled, self.untied = layer, lr, enabled, shared
        self.n_updates = 0

    @torch.no_grad()
    def step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int) -> float:
        mod = dict(model.named_modules())[self.layer]
        seen = {}
        hook = mod.register_forward_hook(lambda m, a, out: seen.update(pre=a[0].detach(), out=out.detach()))
        try:
            _, loss = model(x, y)
        finally:
            hook.remove()
        if self.enabled:
            pre, logits = seen["pre"], seen["out"]                        # (B, T, n_in), (B, T, V)
            keep = (y >= 0)
            err = torch.nn.functional.one_hot(y.clamp_min(0), logits.shape[-1]).to(logits.dtype)
            err = (err - torch.softmax(logits, -1)) * keep[..., None]     # (B, T, V) local error
            elig = eligibility_step(torch.zeros_like(mod.weight), pre, err, 0.0)
            mod.weight += three_factor_update(elig, 1.0, self.lr / max(1, int(keep.sum())))
            self.n_updates += 1
        return float(loss)

    def state_dict(self) -> dict:
        return {"n_updates": self.n_updates, "enabled": self.enabled}

    def load_state_dict(self, state: dict) -> None:
        self.n_updates, self.enabled = state["n_updates"], state["enabled"]
