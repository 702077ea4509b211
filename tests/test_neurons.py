"""Neurons: pure step functions, multi-step == repeated single steps, explicit state."""
import pytest
import torch

from spiking_attention.neurons import (IFNeuron, LIF, adaptive_spike_count, if_step, lif_multi_step,
                                       lif_step, multilevel_spike)

torch.set_num_threads(1)


def test_lif_step_hard_and_soft_reset_values():
    x = torch.tensor([3.0, 1.0, 0.5])
    v = torch.tensor([0.0, 1.0, 0.0])
    # h = v + (x - v)/2 = [1.5, 1.0, 0.25]; v_th = 1 -> fire [1, 1, 0]
    s, vh = lif_step(x, v, tau=2.0, v_th=1.0, reset="hard")
    assert s.tolist() == [1.0, 1.0, 0.0]
    assert torch.allclose(vh, torch.tensor([0.0, 0.0, 0.25]))
    s, vs = lif_step(x, v, tau=2.0, v_th=1.0, reset="soft")
    assert torch.allclose(vs, torch.tensor([0.5, 0.0, 0.25]))
    with pytest.raises(ValueError, match="reset"):
        lif_step(x, v, reset="sideways")


def test_detach_reset_changes_only_the_gradient():
    x = torch.tensor([1.8, 0.4, 2.5], requires_grad=True)
    grads = []
    for detach in (False, True):
        xx = x.detach().clone().requires_grad_(True)
        s1, v1 = lif_step(xx, 0.0, tau=2.0, detach_reset=detach)
        s2, v2 = lif_step(xx, v1, tau=2.0, detach_reset=detach)
        (s1 + s2).sum().backward()
        grads.append((s1.detach(), s2.detach(), xx.grad.clone()))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
    assert not torch.allclose(grads[0][2], grads[1][2])


@pytest.mark.parametrize("reset", ["hard", "soft"])
@pytest.mark.parametrize("surrogate", ["atan", "sigmoid"])
def test_multi_step_equals_repeated_single_steps(reset, surrogate):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(7, 3, 5, generator=g) * 2
    kw = dict(tau=3.0, v_th=0.8, reset=reset, surrogate=surrogate)
    s_seq, v_last = lif_multi_step(x, 0.0, **kw)
    v = 0.0
    for t in range(7):
        s, v = lif_step(x[t], v, **kw)
        assert torch.equal(s, s_seq[t])
    assert torch.equal(v, v_last)
    # module: multi-step mode == single-step calls, and reset() restores the state
    m_multi = LIF(tau=3.0, v_th=0.8, reset=reset, surrogate=surrogate, step_mode="m")
    m_single = LIF(tau=3.0, v_th=0.8, reset=reset, surrogate=surrogate, step_mode="s")
    out_m = m_multi(x)
    out_s = torch.stack([m_single(x[t]) for t in range(7)])
    assert torch.equal(out_m, out_s) and torch.equal(out_m, s_seq)
    assert torch.is_tensor(m_multi.v)
    m_multi.reset()
    assert m_multi.v == 0.0
    assert torch.equal(m_multi(x), out_m)  # same again after reset: no hidden state left


def test_lif_learnable_tau_stays_above_one_and_learns():
    lif = LIF(tau=2.0, learn_tau=True, learn_threshold=True, n_channels=4, step_mode="m")
    assert torch.allclose(lif.tau, torch.full((4,), 2.0))
    with torch.no_grad():
        lif.tau_param.fill_(-8.0)
    assert (lif.tau > 1).all()
    lif.reset()
    x = torch.rand(5, 2, 4) * 3
    lif(x).sum().backward()
    assert lif.tau_param.grad is not None and lif.v_th.grad is not None
    assert lif.v_th.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="tau"):
        LIF(tau=1.0)
    with pytest.raises(ValueError, match="step_mode"):
        LIF(step_mode="x")


def test_if_neuron_counts_like_a_rate_code():
    # constant input 0.3 with v_th 1 and soft reset fires 3 times in 10 steps
    n = IFNeuron(v_th=1.0, step_mode="m")
    s = n(torch.full((10, 1), 0.3))
    assert s.sum().item() == 3
    s1, v1 = if_step(torch.tensor([0.6]), torch.tensor([0.5]))
    assert s1.item() == 1.0 and torch.allclose(v1, torch.tensor([0.1]))


def test_adaptive_spike_count_ste_and_reconstruction():
    x = torch.tensor([[0.1, -0.4, 0.9, 0.2]], requires_grad=True)
    s, vth = adaptive_spike_count(x, k=3.0)
    # mean|x| = 0.4 -> V_th = 0.4/3; s = round(x / V_th) = round([0.75, -3, 6.75, 1.5])
    assert torch.allclose(vth, torch.tensor([[0.4 / 3]]))
    assert s.tolist() == [[1.0, -3.0, 7.0, 2.0]]
    (s * torch.tensor([[1.0, 2.0, 3.0, 4.0]])).sum().backward()
    # straight-through: ds/dx = 1/V_th at fixed V_th plus the V_th path; check it is non-zero
    assert x.grad.abs().sum() > 0
    assert (s * vth - x).abs().max() <= vth.max() / 2 + 1e-6


def test_multilevel_spike_levels_and_ste():
    x = torch.tensor([-1.0, 0.4, 1.6, 2.5, 9.0], requires_grad=True)
    y = multilevel_spike(x, 4)
    assert torch.allclose(y, torch.tensor([0.0, 0.0, 0.5, 0.5, 1.0]))  # round-half-even at 2.5
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 0.25, 0.25, 0.25, 0.0]
    with pytest.raises(ValueError, match="levels"):
        multilevel_spike(x, 0)
