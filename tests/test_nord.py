"""The Nord-style LIF language model (models/nord.py) and its neuron (spiking_attention.neurons.lif_syn_step)."""
from __future__ import annotations

import pytest
import torch

import models
from models.data import CharTokenizer
from models.nord import NordAttention, NordConfig, NordLM, NordNeurons
from models.train import TrainConfig, evaluate, load_model, train_run
from spiking_attention.neurons import lif_syn_multi_step, lif_syn_step
from spiking_attention.stats import reporting_layers
from tests.lm_checks import check_fits_batch

torch.set_num_threads(1)

TEXT = "the cat sat on the mat. the hat is on the cat.\n" * 12
TINY = dict(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=16, t_fast=3, t_slow=2)


def test_lif_syn_multi_step_equals_repeated_single_steps():
    torch.manual_seed(0)
    x = torch.randn(9, 4, 6) * 2
    th = torch.rand(6) + 0.2
    kw = dict(b_syn=0.6, b_mem=0.8, v_th=th, refractory=2)
    s_multi, (i_m, v_m, r_m) = lif_syn_multi_step(x, None, **kw)
    state, outs = None, []
    for t in range(9):
        s, state = lif_syn_step(x[t], state, **kw)
        outs.append(s)
    assert torch.equal(s_multi, torch.stack(outs))
    for a, b in zip((i_m, v_m, r_m), state):
        assert torch.equal(a, b)
    assert 0 < float(s_multi.mean()) < 1


def test_lif_syn_dynamics_refractory_and_soft_reset():
    x = torch.full((8, 1), 10.0)                                            # a drive that fires at every chance
    s, _ = lif_syn_multi_step(x, None, b_syn=0.0, b_mem=0.0, v_th=1.0, refractory=2)
    assert s[:, 0].tolist() == [1, 0, 0, 1, 0, 0, 1, 0]                     # two silent steps after each spike
    s0, _ = lif_syn_multi_step(x, None, b_syn=0.0, b_mem=0.0, v_th=1.0, refractory=0)
    assert s0.sum() == 8
    # one step by hand: i = b_syn i + x, v = b_mem v + (1 - b_mem) i, soft reset subtracts v_th
    st = (torch.tensor([1.0]), torch.tensor([0.5]), torch.tensor([0.0]))
    sp, (i, v, r) = lif_syn_step(torch.tensor([2.0]), st, b_syn=0.5, b_mem=0.5, v_th=1.0, refractory=3)
    assert i.item() == 2.5 and sp.item() == 1 and v.item() == pytest.approx(0.25 + 1.25 - 1.0) and r.item() == 3
    with pytest.raises(ValueError, match="refractory must be an integer"):
        lif_syn_step(x[0], None, refractory=-1)


def test_surrogate_gradient_reaches_thresholds_and_gates():
    m = NordLM(NordConfig(**TINY))
    x = torch.randint(0, 20, (2, 16))
    _, loss = m(x, x)
    loss.backward()
    for n in m.neurons():
        assert n.threshold.grad is not None and n.threshold.grad.abs().sum() > 0
        assert n.gate.grad.abs().sum() > 0


def test_parameter_count_within_5_percent_of_the_dense_twin():
    nord = models.build_model("nord", {**models.get_family("nord").variants["lif"], "vocab_size": 65})
    dense = models.build_model("gpt", {**models.get_family("gpt").variants["dense"], "vocab_size": 65})
    assert dense.num_params(non_embedding=False) == 804_096
    assert abs(nord.num_params(non_embedding=False) / 804_096 - 1) < 0.05


def test_every_spiking_layer_reports_its_firing_rate():
    m = NordLM(NordConfig(**TINY))
    tok = CharTokenizer.from_text(TEXT)
    ev = evaluate(m, torch.from_numpy(tok.encode(TEXT)), batch_size=8)
    names = [n for n, _ in reporting_layers(m)]
    neurons = [n for n, mod in reporting_layers(m) if isinstance(mod, NordNeurons)]
    assert len(neurons) == 3 * TINY["n_layer"]                             # q, k and MLP neurons of each block
    assert sum(isinstance(mod, NordAttention) for _, mod in reporting_layers(m)) == TINY["n_layer"]
    for name, st in zip(names, ev["layer_stats"]):
        if name in neurons:
            assert 0 < st["firing_rate"] < 1 and 0 <= st["silent_frac"] <= 1
    assert len(m.firing_rates()) == len(neurons)


def test_firing_regulariser_adds_the_penalty():
    torch.manual_seed(0)
    m = NordLM(NordConfig(**TINY))
    x = torch.randint(0, 20, (2, 16))
    _, plain = m(x, x)
    m.config.firing_reg = 2.0
    _, reg = m(x, x)
    rates = torch.tensor(m.firing_rates())
    torch.testing.assert_close(reg - plain, 2.0 * ((rates - m.config.firing_target) ** 2).sum(), rtol=1e-4, atol=1e-6)


def test_decoder_prefill_and_steps_equal_the_full_forward():
    torch.manual_seed(1)
    m = NordLM(NordConfig(**TINY)).eval()
    x = torch.randint(0, 20, (2, 14))
    full, _ = m(x)
    dec = m.decoder()
    logits, state = dec.prefill(x[:, :6])
    torch.testing.assert_close(logits, full[:, :6], rtol=1e-5, atol=1e-5)
    for t in range(6, 14):
        torch.testing.assert_close(dec.step(x[:, t:t + 1], state), full[:, t], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="cache is full"):
        st = dec.prefill(x[:, :1].repeat(1, 16))[1]
        dec.step(x[:, :1], st)


def test_tiny_model_overfits_a_short_text():
    tok = CharTokenizer.from_text(TEXT)
    ids = torch.from_numpy(tok.encode(TEXT))
    torch.manual_seed(0)
    m = NordLM(NordConfig(**{**TINY, "vocab_size": tok.vocab_size, "n_embd": 32}))
    opt = m.configure_optimizer(0.0, 1e-2)
    x, y = ids[:-1][:64].view(4, 16), ids[1:][:64].view(4, 16)
    check_fits_batch(m, opt, x, y)


def test_save_load_round_trip_through_the_harness(tmp_path):
    cfg = TrainConfig(max_iters=3, batch_size=2, warmup_iters=1, log_every=1)
    shape = {k: v for k, v in TINY.items() if k != "vocab_size"}
    res = train_run("nord", tmp_path, cfg, variant="lif", progress=False, text=TEXT, overrides=shape)
    model, tok, _ = load_model(tmp_path / "ckpt.pt")
    assert isinstance(model, NordLM) and res["n_params"] == model.num_params(non_embedding=False)
    assert any("firing_rate" in st for st in res["layer_stats"])
    x = torch.from_numpy(tok.encode(TEXT[:16]))[None]
    fresh = models.build_model("nord", res["config"]).eval()
    assert not torch.allclose(fresh(x)[0], model(x)[0])
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh(x)[0], model(x)[0])


@pytest.mark.parametrize("bad, match", [
    ({"t_fast": 0, "t_slow": 0}, "t_fast \\+ t_slow"),
    ({"t_fast": -1}, "t_fast must be an integer"),
    ({"b_mem": 1.0}, "b_mem"),
    ({"b_syn": -0.1}, "b_syn"),
    ({"v_th": 0.0}, "v_th must be > 0"),
    ({"firing_target": 0.0}, "firing_target"),
    ({"firing_reg": -1.0}, "firing_reg"),
    ({"refractory": 1.5}, "refractory"),
    ({"surrogate": "relu"}, "surrogate"),
    ({"k": 0}, "k must be an integer"),
    ({"n_embd": 30, "n_head": 4}, "divisible"),
])
def test_bad_configs_raise_clear_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        NordConfig(**{**TINY, **bad})
