"""Adaptive-threshold spike coding: counts, spike trains and their packed storage, straight-through gradients."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from hdc.packing import pad_mask
from spiking_attention.spike_coding import (HIST_MAX, MODES, SpikeCodedLinear, count_stats, expand_counts,
                                            pack_trains, spike_counts, trains_memory, trains_to_counts,
                                            unpack_trains)

torch.set_num_threads(1)

# channel counts that hit the packed words' tails and whole words
DIMS = [1, 7, 63, 64, 65, 130]


def _counts(dim, seed=0, top=40):
    g = torch.Generator().manual_seed(seed)
    c = torch.randint(-top, top + 1, (3, 5, dim), generator=g)
    c[0, 0] = 0                                  # an all-zero row
    return c


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dim", DIMS)
def test_trains_sum_to_counts_and_pack_roundtrip(mode, dim):
    c = _counts(dim, seed=dim)
    tr = expand_counts(c, mode)
    assert all(p.dtype == torch.bool and p.shape[1:] == c.shape for p in tr["planes"].values())
    assert torch.equal(trains_to_counts(tr), c)
    packed = pack_trains(tr)
    for name, words in packed["packed"].items():
        assert words.dtype == np.uint64 and words.shape[-1] == (dim + 63) // 64
        assert not (words[..., -1] & ~pad_mask(dim)).any(), "pad bits must stay zero"
    back = unpack_trains(packed)
    for name in tr["planes"]:
        assert torch.equal(back["planes"][name], tr["planes"][name]), name
    assert torch.equal(trains_to_counts(back), c)


def test_train_shapes_per_mode():
    c = torch.tensor([[5, -3, 0, 1]])
    b = expand_counts(c, "binary")["planes"]
    assert b["pos"].shape[0] == 5 and b["pos"].sum(0).tolist() == [[5, 0, 0, 1]]
    assert b["neg"].sum(0).tolist() == [[0, 3, 0, 0]]
    assert not (b["pos"] & b["neg"]).any()      # one population per sign
    t = expand_counts(c, "ternary")["planes"]
    assert t["active"].sum(0).tolist() == [[5, 3, 0, 1]] and t["sign"][0].tolist() == [[False, True, False, False]]
    w = expand_counts(c, "bitwise")
    assert w["steps"] == 3                       # 5 = 101b
    assert w["planes"]["bits"][:, 0, 0].tolist() == [True, False, True]


def test_memory_counts_the_packed_words():
    c = _counts(100, top=5)                      # 15 rows x 100 channels, |count| <= 5
    mem = trains_memory(c)
    rows, words = 15, 2
    steps = int(c.abs().max())
    assert mem["binary_bytes"] == 2 * steps * rows * words * 8
    assert mem["ternary_bytes"] == (steps + 1) * rows * words * 8
    assert mem["bitwise_bytes"] == (steps.bit_length() + 1) * rows * words * 8
    assert mem["float32_bytes"] == 4 * 1500 and mem["int8_bytes"] == 1500


def test_adaptive_counts_are_integers_with_the_per_token_threshold():
    x = torch.randn(4, 6, 32) * torch.rand(4, 6, 1) * 5
    s, vth = spike_counts(x, 3.0)
    assert torch.equal(s, torch.round(s))
    torch.testing.assert_close(vth, x.abs().mean(-1, keepdim=True) / 3.0)
    assert ((s * vth - x).abs() <= vth / 2 + 1e-6).all()   # rounding error at most half a threshold


def test_straight_through_gradient():
    """d/dx sum(c * s * V_th): c (straight-through: the rounding is invisible) plus the path
    through V_th = mean|x|/k, with the rounding residues r = round(u) - u held constant."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 16, generator=g, dtype=torch.float64).requires_grad_()
    c = torch.randn(3, 16, generator=g, dtype=torch.float64)
    k = 3.0
    s, vth = spike_counts(x, k)
    (grad,) = torch.autograd.grad((c * s * vth).sum(), x)
    with torch.no_grad():
        u = x / vth
        r = torch.round(u) - u
        dvth = torch.sign(x) / (x.shape[-1] * k)                  # d V_th / d x_i, per row
        expected = c + (c * r).sum(-1, keepdim=True) * dvth
    torch.testing.assert_close(grad, expected, atol=1e-12, rtol=0)
    assert not torch.allclose(grad, c)                            # the V_th path is really there


def test_spike_coded_linear_equals_linear_of_the_codes():
    torch.manual_seed(0)
    lin = SpikeCodedLinear(20, 7, bias=True).double()
    with torch.no_grad():
        lin.bias.normal_()
    x = torch.randn(2, 5, 20, dtype=torch.float64)
    s, vth = spike_counts(x, 3.0)
    torch.testing.assert_close(lin(x), F.linear(s * vth, lin.weight, lin.bias), atol=1e-12, rtol=0)
    ops = lin.core_ops()
    assert ops["ac"] == pytest.approx(float(s.abs().sum()) * 7) and ops["mac"] == 10 * 7
    plain = SpikeCodedLinear(20, 7, coding="none").double()
    assert torch.equal(plain(x), F.linear(x, plain.weight))
    assert plain.core_ops()["mac"] == 10 * 20 * 7


def test_count_stats():
    c = torch.tensor([[0, 0, 1, -2, 12, -20]])
    st = count_stats(c)
    assert st["spike_sparsity"] == pytest.approx(2 / 6) and st["spikes_per_channel"] == pytest.approx(35 / 6)
    assert st["max_count"] == 20 and len(st["count_hist"]) == 2 * HIST_MAX + 1
    h = st["count_hist"]
    assert h[0] == pytest.approx(1 / 6) and h[-1] == pytest.approx(1 / 6)     # tails land in the end bins
    assert h[HIST_MAX] == pytest.approx(2 / 6) and sum(h) == pytest.approx(1)


def test_errors():
    with pytest.raises(ValueError, match="mode must be one of"):
        expand_counts(torch.tensor([1]), "unary")
    with pytest.raises(ValueError, match="integers"):
        expand_counts(torch.tensor([0.5]), "binary")
    with pytest.raises(ValueError, match="k > 0"):
        spike_counts(torch.ones(3), 0.0)
    with pytest.raises(ValueError, match="coding must be one of"):
        SpikeCodedLinear(3, 3, coding="rate")
    with pytest.raises(ValueError, match="in_features"):
        SpikeCodedLinear(0, 3)
