"""Thermometer-coded integrate-and-fire components: the neuron's closed form against its step loop,
per-token (causal) scales, the add-only packed product against the float matmul, the
quantization bound, the staircase activation, the spiking softmax and the stats they report."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from spiking_attention.stats import reporting_layers
from spiking_attention.thermometer import (MAX_BITS, StaircaseGELU, ThermoCausalAttention, ThermoLinear, check_bits,
                                           fit_staircase, gelu_bump, n_steps, packed_unary_matmul, quantize,
                                           spiking_softmax, staircase, thermometer_count, thermometer_encode_steps,
                                           thermometer_step, unary_planes, weight_planes)

torch.set_num_threads(1)


def _hard_values(bits: int, dtype) -> torch.Tensor:
    """Random values over and beyond [-T, T], every half-integer, and the floats just below and
    above each half-integer (where rounding half up in floating point goes wrong)."""
    T = n_steps(bits)
    g = torch.Generator().manual_seed(bits)
    halves = torch.arange(-T - 1, T + 2, dtype=torch.float64) + 0.5
    if T > 1023:   # long trains (b > 10): the half-integers at both ends and around zero
        halves = halves[(halves.abs() < 20) | (halves.abs() > T - 20)]
    halves = halves.to(dtype)
    below = torch.nextafter(halves, torch.full_like(halves, -np.inf))
    above = torch.nextafter(halves, torch.full_like(halves, np.inf))
    rand = (torch.rand(2000 if T < 1024 else 200, generator=g, dtype=torch.float64) * 2 - 1).to(dtype) * (T + 3)
    tiny = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 0.2499999, 0.25, 0.49999997, -0.49999997], dtype=dtype)
    return torch.cat([halves, below, above, rand, tiny])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16])
def test_closed_form_equals_step_loop_bit_for_bit(bits, dtype):
    u = _hard_values(bits, dtype)
    spikes = thermometer_encode_steps(u, bits)                 # (T, N)
    assert spikes.shape == (n_steps(bits), u.numel())
    assert torch.equal(spikes.sum(0), thermometer_count(u, bits))
    # the code is unary: once silent, a neuron stays silent (thermometer), and every spike has u's sign
    mag = spikes.abs()
    assert bool((mag[1:] <= mag[:-1]).all())
    assert bool(((spikes * torch.sign(u)) >= 0).all())


def test_count_is_round_half_up_clamped():
    u = torch.tensor([0.4, 0.5, 1.49, 1.5, 2.5, -0.5, -2.5, 14.6, 15.4, 99.0, -99.0], dtype=torch.float64)
    assert thermometer_count(u, 4).tolist() == [0, 1, 1, 2, 3, -1, -3, 15, 15, 15, -15]


def test_step_threshold_rises_by_one():
    s, theta = thermometer_step(torch.tensor([0.6, 1.6, -0.6]), 0.5)
    assert s.tolist() == [1, 1, -1] and theta == 1.5
    s, theta = thermometer_step(torch.tensor([0.6, 1.6, -0.6]), theta)
    assert s.tolist() == [0, 1, 0] and theta == 2.5


@pytest.mark.parametrize("bad", [0, 17, -1, 2.0, True, "8", None])
def test_bits_outside_1_to_16_refused(bad):
    with pytest.raises(ValueError, match="bits must be an integer in 1..16"):
        check_bits(bad)
    with pytest.raises(ValueError, match="bits"):
        ThermoLinear(4, 4, bits=bad)
    with pytest.raises(ValueError, match="bits"):
        quantize(torch.ones(3), bad)
    assert check_bits(MAX_BITS) == 16 and check_bits(1) == 1


# ----------------------------------------------------------------------------- per-token scales

@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantization_bound_and_range(bits):
    x = torch.randn(5, 7, 33, generator=torch.Generator().manual_seed(bits)) * torch.logspace(-3, 2, 7)[None, :, None]
    q, s = quantize(x, bits)
    T = n_steps(bits)
    assert s.shape == (5, 7, 1)
    assert torch.equal(q, q.round()) and q.abs().max() == T
    # half a step, plus float32 rounding of x - q*s (relative to |x|: at 8 bits s/2 * 1e-6 is
    # below one ulp of x, and unseeded draws failed now and then without this term)
    tol = s / 2 * (1 + 1e-6) + 2 * torch.finfo(torch.float32).eps * x.abs()
    assert bool(((x - q * s).abs() <= tol).all())
    assert torch.equal(quantize(torch.zeros(2, 4), bits)[0], torch.zeros(2, 4))   # all-zero token: no NaN


def _causal_check(layer, x: torch.Tensor, t: int) -> None:
    """Outputs before position t do not change when the inputs at t.. are replaced by much larger ones."""
    with torch.no_grad():
        y = layer(x)
        x2 = x.clone()
        x2[:, t:] = torch.randn_like(x2[:, t:]) * 100.0
        y2 = layer(x2)
    assert torch.equal(y[:, :t], y2[:, :t])
    assert not torch.equal(y[:, t:], y2[:, t:])     # the check can see a change where there is one


@pytest.mark.parametrize("bits", [2, 8])
def test_every_thermometer_layer_is_causal(bits):
    torch.manual_seed(0)
    x = torch.randn(2, 12, 16)
    _causal_check(ThermoLinear(16, 24, bits=bits), x, 5)
    _causal_check(StaircaseGELU(8), x, 5)
    _causal_check(ThermoCausalAttention(16, 2, bits=bits, max_seq_len=12), x, 5)
    _causal_check(ThermoCausalAttention(16, 2, bits=bits, max_seq_len=12, window=3), x, 7)


# ----------------------------------------------------------------------------- the add-only product

@pytest.mark.parametrize("bits", [1, 2, 3, 4, 6, 8])
@pytest.mark.parametrize("n_in", [1, 63, 64, 65, 130])
def test_packed_unary_matmul_equals_float_matmul_exactly(bits, n_in):
    g = torch.Generator().manual_seed(bits * 1000 + n_in)
    x = torch.randn(9, n_in, generator=g) * torch.rand(9, 1, generator=g) * 3
    x[3] = 0.0                                                       # a silent token
    w = torch.randn(11, n_in, generator=g)
    qx, _ = quantize(x, bits)
    qw, _ = quantize(w, bits)
    ref = (qx.double() @ qw.double().T)                              # exact: integers far below 2**53
    got = packed_unary_matmul(qx.long().numpy(), qw.long().numpy(), bits, rows_per_chunk=4)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, ref.long().numpy())
    assert np.array_equal(got, (qx.float() @ qw.float().T).long().numpy())   # float32 too, at these sizes


def test_planes_are_the_thermometer_and_the_bits():
    from hdc.packing import unpack_bits
    counts = np.array([[3, -2, 0, 1]])
    p, n = unary_planes(counts, 2)                                    # T = 3
    assert unpack_bits(p[0], 4).astype(int).tolist() == [[1, 0, 0, 1], [1, 0, 0, 0], [1, 0, 0, 0]]
    assert unpack_bits(n[0], 4).astype(int).tolist() == [[0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    wp, wn = weight_planes(np.array([[3, -2, 0, 1]]), 2)
    assert unpack_bits(wp[0], 4).astype(int).tolist() == [[1, 0, 0, 1], [1, 0, 0, 0]]
    assert unpack_bits(wn[0], 4).astype(int).tolist() == [[0, 0, 0, 0], [0, 1, 0, 0]]
    with pytest.raises(ValueError, match="in \\[-3, 3\\]"):
        unary_planes(np.array([[4]]), 2)


@pytest.mark.parametrize("bits", [2, 5, 8])
def test_thermo_linear_integer_path_is_its_forward(bits):
    torch.manual_seed(bits)
    lin = ThermoLinear(70, 20, bits=bits, bias=True)
    x = torch.randn(3, 4, 70)
    with torch.no_grad():
        y = lin(x)
        qx, sx = quantize(x, bits)
        _, sw = lin.quantized_weight()
        ints = lin.integer_product(x)                                 # (3, 4, 20) from popcounts
        assert ints.shape == (3, 4, 20) and ints.dtype == torch.int64
        torch.testing.assert_close(y, ints.float() * sx * sw.T + lin.bias, rtol=1e-6, atol=1e-6)


def test_identity_layer_at_8_bits_stays_within_the_quantization_bound():
    n, bits = 96, 8
    lin = ThermoLinear(n, n, bits=bits)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(n))
    x = torch.randn(4, 10, n) * 3
    with torch.no_grad():
        y = lin(x)
    bound = x.abs().amax(-1, keepdim=True) / (2 * n_steps(bits))      # half a step of each token's scale
    err = (y - x).abs()
    assert bool((err <= bound * (1 + 1e-5)).all())
    assert float(err.max()) > 0                                         # quantization did happen
    # the dequantized ("unconverted") weights are the identity again, within half a step
    qw, sw = lin.quantized_weight()
    assert bool(((qw * sw - lin.weight).abs() <= sw / 2 + 1e-7).all())


def test_random_layer_error_within_the_product_bound():
    """|x.w - x^.w^| <= sum_j |x_j| e_w + |w_j| e_x + e_x e_w with e = half a step (per token / row)."""
    torch.manual_seed(1)
    bits = 6
    lin = ThermoLinear(50, 30, bits=bits)
    x = torch.randn(8, 50)
    with torch.no_grad():
        y = lin(x)
        _, sx = quantize(x, bits)
        _, sw = lin.quantized_weight()
        ex, ew = sx / 2, sw.T / 2                                       # (8, 1), (1, 30)
        bound = x.abs().sum(-1, keepdim=True) * ew + ex * lin.weight.abs().sum(-1)[None, :] + 50 * ex * ew
    assert bool(((y - x @ lin.weight.T).abs() <= bound * (1 + 1e-5)).all())


# ----------------------------------------------------------------------------- staircase and softmax

def test_staircase_is_its_neurons_and_fits_gelu():
    th, pulses, offset = fit_staircase(16)
    x = torch.linspace(-5, 5, 2001)
    by_neurons = F.relu(x) + offset + ((x[:, None] >= th).float() * pulses).sum(-1)
    torch.testing.assert_close(staircase(x, th, pulses, offset), by_neurons, rtol=0, atol=1e-6)
    inside = x.abs() <= 3
    assert float((staircase(x, th, pulses, offset) - F.gelu(x))[inside].abs().max()) < 0.03
    th2, p2, o2 = fit_staircase(4)                                      # fewer neurons, larger error
    assert float((staircase(x, th2, p2, o2) - F.gelu(x))[inside].abs().max()) > 0.04


def test_staircase_refit_follows_the_samples():
    # seeded: unseeded draws made this fail now and then under load (the ratio is 0.67-0.76
    # over seeds 0-19, so the 0.8 bound itself is kept)
    torch.manual_seed(0)
    act = StaircaseGELU(8)
    samples = torch.randn(20000) * 0.3 - 1.0                           # narrow inputs around -1
    with torch.no_grad():
        before = float((act(samples) - F.gelu(samples)).pow(2).mean())
        act.refit(samples)
        after = float((act(samples) - F.gelu(samples)).pow(2).mean())
    assert after < 0.8 * before


def test_staircase_gradients():
    act = StaircaseGELU(8)
    x = torch.linspace(-3, 3, 50, requires_grad=True)
    act(x).sum().backward()
    xr = x.detach().clone().requires_grad_()
    F.gelu(xr).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad)                          # GELU's slope, straight-through
    assert act.pulses.grad is not None and float(act.pulses.grad.abs().sum()) > 0
    assert torch.allclose(gelu_bump(torch.tensor([10.0, -10.0])), torch.zeros(2), atol=1e-6)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_spiking_softmax(bits):
    torch.manual_seed(0)
    T = 7
    s = torch.randn(2, 3, T, T) * 3
    allowed = torch.ones(T, T, dtype=torch.bool).tril()
    p, counts = spiking_softmax(s, allowed, bits)
    assert torch.equal(counts, counts.round()) and int(counts.max()) == n_steps(bits)
    assert bool((counts.amax(-1) == n_steps(bits)).all())             # every row's maximum fires T spikes
    assert bool((counts[..., ~allowed] == 0).all())                   # no future key fires
    torch.testing.assert_close(p.sum(-1), torch.ones(2, 3, T))
    soft = F.softmax(s.masked_fill(~allowed, float("-inf")), -1)
    err = float((p - soft).abs().max())
    assert err <= 1.0 / n_steps(bits) + 1e-6                           # within a step of the true weights
    p16, _ = spiking_softmax(s, allowed, 16)
    assert float((p16 - soft).abs().max()) < 1e-4


# ----------------------------------------------------------------------------- stats protocol

def test_stats_protocol_counts_spikes():
    torch.manual_seed(0)
    att = ThermoCausalAttention(16, 2, bits=3, max_seq_len=8)
    x = torch.randn(2, 8, 16)
    with torch.no_grad():
        att(x)
        qx, _ = quantize(x, 3)
    names = [n for n, _ in reporting_layers(att)]
    assert names == ["", "c_attn", "c_proj"]
    st, ops = att.c_attn.layer_stats(), att.c_attn.core_ops()
    assert st["spikes"] == float(qx.abs().sum()) and st["n_tokens"] == 16
    assert ops["ac"] == st["spikes"] * 48 and ops["mac"] == 16 * 48
    assert 0 < st["firing_rate"] <= 1
    a = att.layer_stats()
    assert 0 < a["attn_density"] <= 1 and a["n_causal_pairs"] == 2 * 2 * 36
    assert att.core_ops()["ac"] == att.core_ops()["score_ac"] + att.core_ops()["value_ac"] > 0
