"""The SpikeGPT-style family: WKV forms agree, the fused LIF backward, decoding, causality, training.

Tolerances: the WKV forms are compared in float64 to 1e-12 (the recurrence, the chunked form
at several chunk lengths and the term-by-term definition differ only in summation order) and in
float32 to 1e-5 relative. Whole models contain thresholds (LIF spikes), where a rounding-level
difference could flip a spike, so decoder == forward is checked in float64 (1e-9 on logits).
"""
from __future__ import annotations

import pytest
import torch

from models import build_model, get_family
from models.spiking_rwkv import RWKVConfig, SpikingRWKV
from spiking_attention.accounting import account_model
from spiking_attention.rwkv import (BinaryEmbedding, lif_over_tokens, wkv_chunked, wkv_recurrent, wkv_reference)
from spiking_attention.surrogate import atan_grad

from tests.lm_checks import (check_causal, check_decoder_matches_forward, check_overfits, check_resume_exact,
                             check_train_run_roundtrip, state_numel)

torch.set_num_threads(1)

TINY = {"block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32, "chunk": 8}


def _wkv_inputs(B=2, T=37, C=6, scale=3.0, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(B, T, C, generator=g, dtype=dtype) * scale
    v = torch.randn(B, T, C, generator=g, dtype=dtype)
    w = torch.rand(C, generator=g, dtype=dtype) * 3          # decay rates, some fast
    u = torch.randn(C, generator=g, dtype=dtype)
    return w, u, k, v


# ----------------------------------------------------------------------------- WKV

def test_recurrence_is_the_definition():
    w, u, k, v = _wkv_inputs()
    y, _ = wkv_recurrent(w, u, k, v)
    torch.testing.assert_close(y, wkv_reference(w, u, k, v), atol=1e-12, rtol=0)


@pytest.mark.parametrize("chunk", [1, 5, 8, 16, 37, 64])
def test_chunked_equals_recurrent(chunk):
    """Every chunk length, including one that does not divide T and one >= T (fully parallel)."""
    w, u, k, v = _wkv_inputs()
    y_r, (a_r, b_r, p_r) = wkv_recurrent(w, u, k, v)
    y_c, (a_c, b_c, p_c) = wkv_chunked(w, u, k, v, chunk=chunk)
    torch.testing.assert_close(y_c, y_r, atol=1e-12, rtol=0)
    # the states are equal as numbers num = a e^p, den = b e^p (their scaling may differ)
    torch.testing.assert_close(a_c * torch.exp(p_c - p_r), a_r, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(b_c * torch.exp(p_c - p_r), b_r, atol=1e-12, rtol=1e-12)


def test_chunked_float32_and_carried_state():
    w, u, k, v = _wkv_inputs(dtype=torch.float32)
    y_r, _ = wkv_recurrent(w, u, k, v)
    y_c, _ = wkv_chunked(w, u, k, v, chunk=16)
    torch.testing.assert_close(y_c, y_r, atol=1e-5, rtol=1e-5)
    # a prefix, its state, then the rest == the whole sequence at once
    y1, st = wkv_chunked(w, u, k[:, :20], v[:, :20], chunk=16)
    y2, _ = wkv_recurrent(w, u, k[:, 20:], v[:, 20:], st)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y_r, atol=1e-5, rtol=1e-5)


def test_stable_where_naive_exponentials_overflow():
    """Keys of +-200: exp(200) overflows float32 (and e^{k} sums would be inf/nan); both forms
    stay finite and match the float64 definition (exp(200) ~ 7e86 is finite in float64)."""
    w, u, k, v = _wkv_inputs(T=20, scale=200.0, dtype=torch.float32)
    assert not torch.isfinite(torch.exp(k)).all()
    ref = wkv_reference(w, u, k, v).float()
    for y in (wkv_recurrent(w, u, k, v)[0], wkv_chunked(w, u, k, v, chunk=8)[0]):
        assert torch.isfinite(y).all()
        torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)


def test_chunked_gradients_equal_recurrent():
    w, u, k, v = (x.requires_grad_() for x in _wkv_inputs(T=19))
    gy = torch.randn(2, 19, 6, dtype=torch.float64)
    grads = []
    for fn in (lambda: wkv_recurrent(w, u, k, v)[0], lambda: wkv_chunked(w, u, k, v, chunk=4)[0]):
        grads.append(torch.autograd.grad((fn() * gy).sum(), (w, u, k, v)))
    for a, b in zip(*grads):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_bad_chunk():
    w, u, k, v = _wkv_inputs(T=4)
    with pytest.raises(ValueError, match="chunk must be a positive int"):
        wkv_chunked(w, u, k, v, chunk=0)


# ----------------------------------------------------------------------------- LIF and embedding

def test_fused_lif_equals_step_loop_forward_and_backward():
    """The hand-written BPTT of the fused LIF == autograd through lif_step (hard reset, ATan)."""
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(3, 25, 7, generator=g, dtype=torch.float64) * 2).requires_grad_()
    v0 = torch.randn(3, 7, generator=g, dtype=torch.float64).requires_grad_()
    gs, gv = torch.randn(3, 25, 7, generator=g, dtype=torch.float64), torch.randn(3, 7, generator=g, dtype=torch.float64)
    out = []
    for fused in (True, False):
        s, v = lif_over_tokens(x, v0, fused=fused)
        out.append((s, v, *torch.autograd.grad((s * gs).sum() + (v * gv).sum(), (x, v0))))
    assert 0 < float(out[0][0].detach().mean()) < 1          # some spikes, some silence
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_lif_is_tau2_threshold1_hard_reset():
    x = torch.tensor([[[2.0], [2.0], [0.0], [1.2], [1.2]]])       # (1, 5, 1)
    s, v = lif_over_tokens(x)
    # h = v + (x - v)/2: 1.0 fires (>= 1) -> 0; 1.0 fires -> 0; 0; 0.6; 0.9
    assert s.flatten().tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert float(v) == pytest.approx(0.9)


def test_binary_embedding_surrogate_gradient():
    emb = BinaryEmbedding(5, 4)
    idx = torch.tensor([[0, 3, 3]])
    s = emb(idx)
    assert set(s.unique().tolist()) <= {0.0, 1.0}
    s.sum().backward()
    w = emb.weight.detach()
    expected = torch.zeros_like(w)
    expected[0] = atan_grad(w[0])
    expected[3] = 2 * atan_grad(w[3])
    torch.testing.assert_close(emb.weight.grad, expected)


# ----------------------------------------------------------------------------- the model

def _model(dtype=torch.float64, seed=0, **kw):
    """A tiny model whose block outputs are scaled up 4x, so the LIFs fire at a trained model's
    rates (10-40%) instead of an untrained one's (~0), and spike flips would show."""
    torch.manual_seed(seed)
    m = build_model("spiking_rwkv", {"vocab_size": 11, **TINY, **kw}).to(dtype)
    with torch.no_grad():
        for b in m.blocks:
            b.att.output.weight.mul_(4)
            b.ffn.value.weight.mul_(4)
    return m


def test_decoder_prefill_and_steps_equal_forward():
    m = _model()
    idx = torch.randint(0, 11, (2, 30), generator=torch.Generator().manual_seed(0))
    check_decoder_matches_forward(m, idx, t0=5, atol=1e-9)
    m(idx)
    rates = [st["firing_rate"] for st in m.layer_stats()[1:]]
    assert all(0.05 < r < 0.6 for r in rates), rates   # the LIFs do fire: the check is not vacuous


def test_decoder_state_is_constant_size():
    m = _model()
    dec = m.decoder()
    _, st = dec.prefill(torch.zeros(1, 3, dtype=torch.long))
    n0 = state_numel(st["layers"])
    for _ in range(40):
        dec.step(torch.zeros(1, 1, dtype=torch.long), st)
    assert state_numel(st["layers"]) == n0 == 2 * 7 * 32     # 7 vectors of n_embd per layer
    assert st["pos"] == 43


@pytest.mark.parametrize("t", [1, 7, 8, 20])
def test_causal(t):
    check_causal(_model(torch.float32), torch.randint(0, 11, (2, 32), generator=torch.Generator().manual_seed(t)), t)


def test_generate_uses_the_decoder(monkeypatch):
    m = _model(torch.float32)
    calls = []
    real = m.decoder
    monkeypatch.setattr(m, "decoder", lambda: calls.append(1) or real())
    out = m.generate(torch.zeros(1, 3, dtype=torch.long), 40, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 43) and calls == [1]      # runs past block_size (32): recurrent state
    # the same samples as sampling from the full forward pass (float64 model: no spike flips)
    m64 = _model()
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = m64.generate(torch.zeros(1, 2, dtype=torch.long), 20, generator=g1)
    idx = torch.zeros(1, 2, dtype=torch.long)
    with torch.no_grad():
        for _ in range(20):
            p = torch.softmax(m64(idx)[0][:, -1], -1)
            idx = torch.cat([idx, torch.multinomial(p, 1, generator=g2)], 1)
    assert torch.equal(a, idx)


def test_parameter_count_matches_dense_twin():
    fam = get_family("spiking_rwkv")
    n = build_model("spiking_rwkv", {**fam.variants["spikegpt"], "vocab_size": 65}).num_params()
    dense = build_model("gpt", {"vocab_size": 65}).num_params(non_embedding=False)
    assert dense == 804_096 and n == 807_808
    assert abs(n / dense - 1) < 0.05


def test_stats_and_accounting():
    m = _model(torch.float32)
    rep = account_model(m, torch.randint(0, 11, (2, 16)))
    types = [l["type"] for l in rep["layers"]]
    assert types.count("TimeMix") == 2 and types.count("ChannelMix") == 2
    wkv = [l for l in rep["layers"] if l["type"] == "TimeMix"][0]["core_ops"]["mac"]
    assert wkv == 2 * 16 * 32 * 6
    assert rep["totals"]["linear_mac"] > 0


def test_bad_configs():
    for bad, msg in (({"chunk": 0}, "chunk"), ({"ffn_mult": -1.0}, "ffn_mult"), ({"ffn_mult": 0.001}, "hidden"),
                     ({"surrogate": "nope"}, "surrogate"), ({"n_layer": 0}, "n_layer")):
        with pytest.raises(ValueError, match=msg):
            RWKVConfig(**{**TINY, **bad})
    m = _model(torch.float32)
    with pytest.raises(ValueError, match="exceeds block_size"):
        m(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match="one token per row"):
        m.decoder().step(torch.zeros(1, 2, dtype=torch.long), {})


def test_tiny_model_overfits():
    check_overfits("spiking_rwkv", {**TINY, "block_size": 16, "n_embd": 48}, steps=300, below=0.5)


def test_resume_exact(tmp_path):
    check_resume_exact(tmp_path, "spiking_rwkv", {**TINY, "block_size": 16})


def test_train_run_save_load(tmp_path):
    check_train_run_roundtrip(tmp_path, "spiking_rwkv", "spikegpt", {**TINY, "block_size": 16})


def test_module_is_the_model_class():
    assert get_family("spiking_rwkv").model is SpikingRWKV
