"""MoE upcycling: identical experts compute the dense FFN, the router learns, balance is measured."""
from __future__ import annotations

import pytest
import torch

from models import build_model
from models.hybrid import upcycle
from spiking_attention.moe import GeluMLP, MoEFFN, SwiGLU

torch.set_num_threads(1)


@pytest.mark.parametrize("ffn_cls", [SwiGLU, GeluMLP])
@pytest.mark.parametrize("coding", ["adaptive", "none"])
def test_identical_experts_compute_the_dense_ffn_exactly(ffn_cls, coding):
    torch.manual_seed(0)
    dense = ffn_cls(16, 24, coding=coding)
    moe = MoEFFN.upcycle(dense, 16, 4, noise=0.0)
    x = torch.randn(3, 11, 16)
    y = moe(x)
    assert sum(f > 0 for f in moe.layer_stats()["expert_load"]) >= 2   # tokens really split between experts
    assert torch.equal(y, dense(x))


def test_noise_makes_experts_differ_and_keeps_the_shared_one():
    torch.manual_seed(0)
    dense = SwiGLU(16, 24)
    moe = MoEFFN.upcycle(dense, 16, 3, noise=0.05, generator=torch.Generator().manual_seed(1))
    for p_sh, p_d in zip(moe.shared.parameters(), dense.parameters()):
        assert torch.equal(p_sh, p_d)
    w = [e.gate_up.weight for e in moe.experts]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[0], dense.gate_up.weight)
    rel = float((w[0] - dense.gate_up.weight).detach().std() / dense.gate_up.weight.detach().std())
    assert 0.03 < rel < 0.07


def test_router_and_experts_get_gradients_and_aux_loss():
    torch.manual_seed(0)
    moe = MoEFFN.upcycle(GeluMLP(8, 12, coding="none"), 8, 4, noise=0.1)
    x = torch.randn(2, 20, 8)
    y = moe(x)
    # the output alone trains the router (through p_i / sg(p_i)), not only the balance loss
    (router_grad,) = torch.autograd.grad(y.pow(2).sum(), moe.router.weight, retain_graph=True)
    assert router_grad.abs().sum() > 0
    (y.pow(2).sum() + moe.aux_loss).backward()
    used = [e for e, f in enumerate(moe.layer_stats()["expert_load"]) if f > 0]
    for e in used:
        assert moe.experts[e].up.weight.grad.abs().sum() > 0
    # Switch's balance loss: n * sum_i f_i P_i, recomputed by hand
    with torch.no_grad():
        probs = torch.softmax(moe.router(x.reshape(-1, 8)), -1)
        f = torch.bincount(probs.argmax(-1), minlength=4).double() / 40
        expected = 4 * float((f * probs.mean(0).double()).sum())
    st = moe.layer_stats()
    assert st["aux_loss"] == pytest.approx(expected, rel=1e-6)
    assert sum(st["expert_load"]) == pytest.approx(1.0)


def test_active_param_fraction():
    moe = MoEFFN(lambda: GeluMLP(8, 12, coding="none"), 8, 4)
    e = sum(p.numel() for p in moe.experts[0].parameters())
    total = sum(p.numel() for p in moe.parameters())
    assert moe.active_param_frac() == pytest.approx((total - 3 * e) / total)
    assert total == 5 * e + 8 * 4


def test_upcycled_model_equals_dense_model():
    torch.manual_seed(0)
    cfg = {"vocab_size": 11, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 16, "window": 4, "chunk": 4,
           "gate_rank": 4}
    dense = build_model("hybrid", cfg)
    moe = upcycle(dense, 4, noise=0.0, seed=0)
    idx = torch.randint(0, 11, (2, 16))
    with torch.no_grad():
        assert torch.equal(moe(idx)[0], dense(idx)[0])
    _, loss_moe = moe(idx, idx)
    _, loss_dense = dense(idx, idx)
    assert float(loss_moe.detach()) > float(loss_dense.detach())              # + aux weight x balance loss (>= 1 at best)
    assert moe.active_params() < moe.num_params()
    assert moe.config.moe_experts == 4
    noisy = upcycle(dense, 4, noise=0.1, seed=0)
    with torch.no_grad():
        assert not torch.equal(noisy(idx)[0], dense(idx)[0])


def test_errors():
    with pytest.raises(ValueError, match="n_experts"):
        MoEFFN(lambda: GeluMLP(8, 12), 8, 0)
    with pytest.raises(ValueError, match="noise"):
        MoEFFN.upcycle(GeluMLP(8, 12), 8, 2, noise=-0.1)
    moe_model = build_model("hybrid", {"vocab_size": 11, "block_size": 8, "n_layer": 1, "n_head": 2, "n_embd": 8,
                                       "moe_experts": 2})
    with pytest.raises(ValueError, match="dense model"):
        upcycle(moe_model, 2)
