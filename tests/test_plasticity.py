"""Local learning rules (spiking_attention/plasticity.py): STDP window, three-factor rule, Nord's R-STDP learner."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.nord import NordConfig, NordLM
from spiking_attention.plasticity import (LocalErrorLearner, RewardSTDPLearner, eligibility_step, reward_from_loss, rstdp_update,
                                          stdp_pair_update, stdp_run, stdp_window, three_factor_update,
                                          trace_step, traces)

torch.set_num_threads(1)


@pytest.mark.parametrize("a_plus, a_minus, tau_plus, tau_minus", [(1.0, 1.0, 20.0, 20.0), (0.01, 0.012, 16.8, 33.7)])
def test_pair_stdp_reproduces_the_analytic_window(a_plus, a_minus, tau_plus, tau_minus):
    """One pre and one post spike, dt = t_post - t_pre from -40 to 40: the traced rule's total
    change matches the exponential window within 1% in sign and size."""
    T, t0 = 100, 50
    kw = dict(a_plus=a_plus, a_minus=a_minus, tau_plus=tau_plus, tau_minus=tau_minus)
    for dt in range(-40, 41):
        pre, post = torch.zeros(T, 1, dtype=torch.float64), torch.zeros(T, 1, dtype=torch.float64)
        pre[t0, 0], post[t0 + dt, 0] = 1.0, 1.0
        got = float(stdp_run(pre, post, **kw)[0, 0])
        want = float(stdp_window(dt, **kw))
        assert math.copysign(1, got) == math.copysign(1, want) or abs(want) < 1e-12, dt
        assert got == pytest.approx(want, rel=0.01), dt
    # the shape itself: potentiation decays with dt > 0, depression with dt < 0
    w = stdp_window(torch.arange(-3, 4), **kw)
    assert (w[4:] > 0).all() and (w[:3] < 0).all() and w[4] > w[5] > w[6] and w[0] > w[1] > w[2]
    assert float(w[3]) == pytest.approx(a_plus - a_minus)


def test_traces_equal_looped_trace_steps():
    torch.manual_seed(0)
    x = (torch.rand(3, 12, 5) < 0.3).double()
    tr, ref = torch.zeros(3, 5, dtype=torch.float64), []
    for t in range(12):
        tr = trace_step(tr, x[:, t], 0.8)
        ref.append(tr)
    torch.testing.assert_close(traces(x, 0.8), torch.stack(ref, 1))


def test_three_factor_update_is_pre_times_post_times_modulator():
    pre = torch.tensor([[1., 0., 1.], [0., 1., 1.], [1., 1., 0.]])          # (T=3, n_in=3) hand-made trains
    post = torch.tensor([[1., 0.], [1., 1.], [0., 1.]])                     # (T=3, n_out=2)
    mod = [0.5, -1.0, 2.0]
    # one step, no decay: exactly lr * m * post (x) pre
    e = eligibility_step(torch.zeros(2, 3), pre[0], post[0], decay=0.0)
    torch.testing.assert_close(three_factor_update(e, mod[0], lr=0.1), 0.1 * 0.5 * torch.outer(post[0], pre[0]))
    # over the train with decay 0.5: sum_t m_t sum_{s <= t} 0.5^(t-s) post_s pre_s, by hand in numpy
    e, total = torch.zeros(2, 3), torch.zeros(2, 3)
    for t in range(3):
        e = eligibility_step(e, pre[t], post[t], decay=0.5)
        total += three_factor_update(e, mod[t])
    P, Q = pre.numpy(), post.numpy()
    want = np.zeros((2, 3))
    for t in range(3):
        for s in range(t + 1):
            want += mod[t] * 0.5 ** (t - s) * np.outer(Q[s], P[s])
    np.testing.assert_allclose(total.numpy(), want, rtol=1e-6)
    # a local error: one modulator per post neuron scales its row
    torch.testing.assert_close(three_factor_update(torch.ones(2, 3), torch.tensor([2.0, -1.0])),
                               torch.tensor([[2.0] * 3, [-1.0] * 3]))


def test_rstdp_update_follows_nords_rule():
    torch.manual_seed(0)
    pre, post = torch.rand(2, 7, 4), torch.rand(2, 7, 3)
    d = math.exp(-1 / 20)
    tp, tq = traces(pre, d), traces(post, d)
    raw = sum(torch.outer(post[b, t], tp[b, t]) - torch.outer(tq[b, t], pre[b, t]) for b in range(2) for t in range(7))
    for r in (0.9, 0.2, 0.5):
        got = rstdp_update(pre, post, r, lr=0.5, decay=d, clip=10.0)
        torch.testing.assert_close(got, 0.5 * raw / 14 * (2 * r - 1))
    clipped = rstdp_update(pre, post, 1.0, lr=0.5, decay=d, clip=1e-3)
    assert clipped.abs().max() <= 1e-3 + 1e-9 and (clipped.abs() == 1e-3).any()
    assert reward_from_loss(2.0, 2.0) == 0.5 and reward_from_loss(1.0, 2.0) > 0.5 > reward_from_loss(3.0, 2.0)


def _tiny_nord():
    torch.manual_seed(0)
    return NordLM(NordConfig(vocab_size=20, block_size=16, n_layer=1, n_head=2, n_embd=16, t_fast=2, t_slow=1))


def test_stdp_learner_changes_weights_only_when_enabled_within_bounds_by_the_rule():
    x, y = torch.randint(0, 20, (2, 16)), torch.randint(0, 20, (2, 16))
    x2, y2 = torch.randint(0, 20, (2, 16)), torch.randint(0, 20, (2, 16))
    layer = "transformer.h.0.mlp.c_fc"

    # disabled: the loss is computed, nothing changes
    m = _tiny_nord()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    off = RewardSTDPLearner(m, layers=[layer], lr=1.0, clip=0.5, enabled=False)
    for step, (a, b) in enumerate([(x, y), (x2, y2), (x, y)]):
        assert math.isfinite(off.step(m, a, b, step))
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())

    # enabled: the first batch only starts the running loss, the second changes exactly the
    # chosen layer by rstdp_update of its recorded activity, with the reward of that batch
    m = _tiny_nord()
    on = RewardSTDPLearner(m, layers=[layer], lr=1.0, clip=0.5, w_max=0.05, ema_beta=0.5)
    on.step(m, x, y, 0)
    W0 = m.transformer.h[0].mlp.c_fc.weight.detach().clone()
    rec = {}
    hook = m.transformer.h[0].mlp.c_fc.register_forward_hook(lambda mod, a, o: rec.update(pre=a[0], post=o))
    with torch.no_grad():
        loss2 = m(x2, y2)[1].item()
    hook.remove()
    r = reward_from_loss(loss2, on.loss_ema)
    want = (W0 + rstdp_update(torch.sigmoid(rec["pre"]), torch.sigmoid(rec["post"]), r, lr=1.0, clip=0.5)).clamp(-0.05, 0.05)
    on.step(m, x2, y2, 1)
    W1 = m.transformer.h[0].mlp.c_fc.weight
    assert on.last_reward == pytest.approx(r) and r != 0.5
    torch.testing.assert_close(W1, want)
    assert not torch.equal(W1, W0) and W1.abs().max() <= 0.05
    changed = [k for k, v in m.state_dict().items() if not torch.equal(before[k], v)]
    assert changed == [layer + ".weight"]
    # resumable: the learner's state round-trips
    other = RewardSTDPLearner(m, layers=[layer])
    other.load_state_dict(on.state_dict())
    assert other.state_dict() == on.state_dict()


def test_stdp_learner_default_layers_skip_the_tied_head_and_errors_are_clear():
    m = _tiny_nord()
    lr = RewardSTDPLearner(m)
    assert "lm_head" not in lr.layers and "transformer.h.0.attn.c_attn" in lr.layers
    with pytest.raises(ValueError, match="nn.Linear"):
        RewardSTDPLearner(m, layers=["transformer.h.0.ln_1"])
    with pytest.raises(ValueError, match="activity"):
        RewardSTDPLearner(m, activity="relu")
    with pytest.raises(ValueError, match="decay"):
        RewardSTDPLearner(m, decay=1.0)


def test_local_error_learner_is_the_delta_rule_on_the_readout_only():
    torch.manual_seed(0)
    m = NordLM(NordConfig(vocab_size=7, block_size=6, n_layer=1, n_head=2, n_embd=8, t_fast=1, t_slow=1))
    x, y = torch.randint(0, 7, (3, 6)), torch.randint(0, 7, (3, 6))
    y[0, :2] = -1                                                        # padding: no error
    before = {k: v.clone() for k, v in m.state_dict().items()}
    learner = LocalErrorLearner(m, lr=0.5)
    assert learner.untied and m.lm_head.weight is not m.transformer.wte.weight
    W0 = m.lm_head.weight.detach().clone()
    seen = {}   # the readout's input h, then the rule by hand: lr/N sum_n (onehot - softmax)_n (x) h_n
    hk = m.lm_head.register_forward_hook(lambda mod, a, out: seen.update(h=a[0].detach().clone()))
    m(x)
    hk.remove()
    h = seen["h"]
    loss0 = learner.step(m, x, y, 0)
    with torch.no_grad():
        p = torch.softmax(h @ W0.T, -1)
        err = (torch.nn.functional.one_hot(y.clamp_min(0), 7) - p) * (y >= 0)[..., None]
        want = W0 + 0.5 / int((y >= 0).sum()) * torch.einsum("btv,btc->vc", err, h)
    torch.testing.assert_close(m.lm_head.weight.detach(), want)
    after = m.state_dict()
    changed = [k for k in after if not torch.equal(after[k], before[k])]
    assert changed == ["lm_head.weight"], changed        # embedding (formerly tied) and trunk untouched
    for i in range(30):
        loss = learner.step(m, x, y, i + 1)
    assert loss < loss0 - 0.05                            # it learns the batch
    off = LocalErrorLearner(m, lr=0.5, enabled=False)
    w = m.lm_head.weight.detach().clone()
    off.step(m, x, y, 0)
    assert torch.equal(m.lm_head.weight, w)
    with pytest.raises(ValueError, match="shares its weight"):
        LocalErrorLearner(NordLM(NordConfig(vocab_size=7, block_size=6, n_layer=1, n_head=2, n_embd=8)), untie=False)
    with pytest.raises(ValueError, match="nn.Linear readout"):
        LocalErrorLearner(m, layer="nope")
    with pytest.raises(ValueError, match="lr must be > 0"):
        LocalErrorLearner(m, lr=0.0)
