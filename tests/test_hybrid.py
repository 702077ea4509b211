"""The SpikingBrain-style hybrid: GLA forms agree, the window's KV cache, decoding, causality, training.

Tolerances: the GLA forms are compared in float64 to 1e-12 (recurrence, chunked form at several
chunk lengths, the term-by-term definition) and in float32 to 1e-5. Whole models round spike
counts (a rounding-level difference could move a count by one), so decoder == forward is checked
in float64 (1e-9 on logits).
"""
from __future__ import annotations

import pytest
import torch

from models import build_model, get_family
from models.hybrid import HybridConfig, HybridLM
from spiking_attention.accounting import account_model
from spiking_attention.linear_attention import (SlidingWindowAttention, gla_chunked, gla_recurrent, gla_reference,
                                                rope)

from tests.lm_checks import (check_causal, check_decoder_matches_forward, check_overfits, check_resume_exact,
                             check_train_run_roundtrip, state_numel)

torch.set_num_threads(1)

TINY = {"block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32, "window": 6, "chunk": 8, "gate_rank": 4,
        "ffn_mult": 2.0}
LAYOUTS = ("alternate", "parallel", "linear")


def _gla_inputs(B=2, nh=2, T=29, dk=4, dv=3, gate_scale=1.0, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, nh, T, dk, generator=g, dtype=dtype) for _ in range(2))
    v = torch.randn(B, nh, T, dv, generator=g, dtype=dtype)
    log_g = torch.nn.functional.logsigmoid(torch.randn(B, nh, T, dk, generator=g, dtype=dtype)) * gate_scale
    return q, k, v, log_g


# ----------------------------------------------------------------------------- GLA

def test_gla_recurrence_is_the_definition():
    q, k, v, lg = _gla_inputs(T=12)
    torch.testing.assert_close(gla_recurrent(q, k, v, lg)[0], gla_reference(q, k, v, lg), atol=1e-12, rtol=0)


@pytest.mark.parametrize("chunk", [1, 4, 7, 16, 29, 64])
def test_gla_chunked_equals_recurrent(chunk):
    q, k, v, lg = _gla_inputs()
    o_r, s_r = gla_recurrent(q, k, v, lg)
    o_c, s_c = gla_chunked(q, k, v, lg, chunk=chunk)
    torch.testing.assert_close(o_c, o_r, atol=1e-12, rtol=0)
    torch.testing.assert_close(s_c, s_r, atol=1e-12, rtol=0)


def test_gla_float32_strong_gates_and_carried_state():
    """Gates down to e^-40 per step: the chunked form never exponentiates a positive number, so it
    stays finite where q*exp(b) and k*exp(-b) factorisations overflow float32."""
    q, k, v, lg = _gla_inputs(gate_scale=40.0, dtype=torch.float32)
    assert float(lg.sum(2).min()) < -200             # exp(+200) would overflow float32
    o_r, _ = gla_recurrent(q, k, v, lg)
    o_c, _ = gla_chunked(q, k, v, lg, chunk=16)
    assert torch.isfinite(o_c).all()
    torch.testing.assert_close(o_c, o_r, atol=1e-5, rtol=1e-5)
    o1, st = gla_chunked(q[:, :, :10], k[:, :, :10], v[:, :, :10], lg[:, :, :10], chunk=4)
    o2, _ = gla_recurrent(q[:, :, 10:], k[:, :, 10:], v[:, :, 10:], lg[:, :, 10:], st)
    torch.testing.assert_close(torch.cat([o1, o2], 2), o_r, atol=1e-5, rtol=1e-5)


def test_gla_gradients_equal():
    ins = [x.requires_grad_() for x in _gla_inputs(T=13)]
    go = torch.randn(2, 2, 13, 3, dtype=torch.float64)
    grads = [torch.autograd.grad((f(*ins)[0] * go).sum(), ins)
             for f in (gla_recurrent, lambda *a: gla_chunked(*a, chunk=5))]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


# ----------------------------------------------------------------------------- sliding window

def test_window_cache_steps_equal_full_and_stay_bounded():
    torch.manual_seed(0)
    att = SlidingWindowAttention(16, 2, 5, coding="none").double()
    x = torch.randn(2, 23, 16, dtype=torch.float64)
    full, _ = att(x)
    y, st = att(x[:, :3])
    outs = [y]
    for t in range(3, 23):
        y, st = att(x[:, t:t + 1], st)
        assert st["k"].shape[2] <= 4 and st["pos"] == t + 1
        outs.append(y)
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-12, rtol=0)
    assert att.layer_stats()["attended_per_query"] == 5


def test_window_reaches_exactly_window_tokens_back():
    torch.manual_seed(0)
    att = SlidingWindowAttention(16, 2, 4, coding="none").double()
    x = torch.randn(1, 12, 16, dtype=torch.float64)
    base, _ = att(x)
    x2 = x.clone()
    x2[:, 5] += 1.0
    moved, _ = att(x2)
    changed = (moved - base).abs().amax(dim=(0, 2)) > 0                 # (T,)
    assert changed.tolist() == [False] * 5 + [True] * 4 + [False] * 3   # positions 5..8 see token 5


def test_rope_is_relative():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8, generator=g, dtype=torch.float64), torch.randn(1, 1, 1, 8, generator=g, dtype=torch.float64)
    s1 = (rope(q, 10) * rope(k, 7)).sum()
    s2 = (rope(q, 103) * rope(k, 100)).sum()
    torch.testing.assert_close(s1, s2)
    assert not torch.allclose(s1, (rope(q, 10) * rope(k, 9)).sum())


# ----------------------------------------------------------------------------- the model

def _model(layout="alternate", dtype=torch.float64, seed=0, **kw):
    torch.manual_seed(seed)
    return build_model("hybrid", {"vocab_size": 11, **TINY, "layout": layout, **kw}).to(dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("coding", ["adaptive", "none"])
def test_decoder_prefill_and_steps_equal_forward(layout, coding):
    m = _model(layout, spike_coding=coding)
    idx = torch.randint(0, 11, (2, 30), generator=torch.Generator().manual_seed(0))
    check_decoder_matches_forward(m, idx, t0=4, atol=1e-9)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_decoder_state_is_bounded(layout):
    m = _model(layout)
    dec = m.decoder()
    sizes = []
    for t0 in (2, 10, 25):
        _, st = dec.prefill(torch.zeros(1, t0, dtype=torch.long))
        for _ in range(5):
            dec.step(torch.zeros(1, 1, dtype=torch.long), st)
        sizes.append(state_numel(st["layers"]))
    # after >= window - 1 tokens the state no longer grows with the context
    assert sizes[1] == sizes[2], sizes


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("t", [1, 8, 19])
def test_causal(layout, t):
    m = _model(layout, torch.float32, moe_experts=2 if t == 8 else 0)
    check_causal(m, torch.randint(0, 11, (2, 32), generator=torch.Generator().manual_seed(t)), t)


def test_generate_uses_the_decoder(monkeypatch):
    m = _model("alternate", torch.float32)
    calls = []
    real = m.decoder
    monkeypatch.setattr(m, "decoder", lambda: calls.append(1) or real())
    out = m.generate(torch.zeros(1, 3, dtype=torch.long), 40, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 43) and calls == [1]


@pytest.mark.parametrize("variant,expected", [("alternate", 808_704), ("parallel", 805_120),
                                              ("alternate_float", 808_704)])
def test_parameter_count_matches_dense_twin(variant, expected):
    fam = get_family("hybrid")
    n = build_model("hybrid", {**fam.variants[variant], "vocab_size": 65}).num_params()
    assert n == expected and abs(n / 804_096 - 1) < 0.05


def test_spike_report():
    m = _model("alternate", torch.float32)
    rep = m.spike_report(torch.randint(0, 11, (2, 16)))
    tot = rep["total"]
    # every projection of both mixers and of the FFN is spike-coded: 2 per mixer + 2 per FFN, 2 layers
    assert len(rep["layers"]) == 8
    assert 0 < tot["spike_sparsity"] < 1 and tot["spike_sparsity"] + tot["nonzero_rate"] == pytest.approx(1)
    assert sum(tot["count_hist"]) == pytest.approx(1)
    assert tot["bitwise_bytes"] < tot["ternary_bytes"] < tot["binary_bytes"]
    assert tot["n_values"] == sum(layer["n_values"] for layer in rep["layers"])
    with pytest.raises(ValueError, match="spike_coding='adaptive'"):
        _model("alternate", torch.float32, spike_coding="none").spike_report(torch.zeros(1, 4, dtype=torch.long))


def test_stats_and_accounting():
    m = _model("parallel", torch.float32)
    rep = account_model(m, torch.randint(0, 11, (2, 16)))
    types = {l["type"] for l in rep["layers"]}
    assert {"GatedLinearAttention", "SlidingWindowAttention", "SpikeCodedLinear"} <= types
    coded = [l for l in rep["layers"] if l["type"] == "SpikeCodedLinear"]
    assert all(l["core_ops"]["ac"] > 0 for l in coded)          # spike-driven accumulates are counted
    assert rep["totals"]["ac_sops"] > 0


def test_bad_configs():
    for bad, msg in (({"layout": "zigzag"}, "layout"), ({"window": 0}, "window"), ({"chunk": 0}, "chunk"),
                     ({"spike_coding": "rate"}, "spike_coding"), ({"spike_k": 0}, "spike_k"),
                     ({"ffn": "relu"}, "ffn"), ({"moe_experts": -1}, "moe_experts"),
                     ({"n_embd": 15, "n_head": 5}, "even head size"), ({"moe_aux_weight": -1.0}, "moe_aux_weight")):
        with pytest.raises(ValueError, match=msg):
            HybridConfig(**{**TINY, **bad})
    HybridConfig(**{**TINY, "n_embd": 15, "n_head": 5, "layout": "linear"})   # no rotary: odd heads are fine
    with pytest.raises(ValueError, match="exceeds block_size"):
        _model()(torch.zeros(1, 33, dtype=torch.long))


@pytest.mark.parametrize("layout", ["alternate", "parallel"])
def test_tiny_model_overfits(layout):
    check_overfits("hybrid", {**TINY, "block_size": 16, "layout": layout}, steps=250, below=0.5)


def test_resume_exact(tmp_path):
    check_resume_exact(tmp_path, "hybrid", {**TINY, "block_size": 16, "moe_experts": 2})


def test_train_run_save_load(tmp_path):
    check_train_run_roundtrip(tmp_path, "hybrid", "alternate", {**TINY, "block_size": 16})


def test_module_is_the_model_class():
    assert get_family("hybrid").model is HybridLM
