"""The conversion tool and the ``converted`` family: conversion of the dense twin for b = 2..8,
causality of the whole converted model, save / load / generate, unconversion within the
quantization bound, clear errors, and the registered family converting the same seed's dense run
through the training harness."""
from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from torch import nn

from models import build_model, get_family
from models.convert import (ConvertedConfig, ConvertedLM, convert, find_source, save_converted, unconvert)
from models.data import CharTokenizer
from models.hybrid import HybridLM
from models.train import TrainConfig, evaluate, load_checkpoint, load_model, train_run
from spiking_attention.stats import reporting_layers
from spiking_attention.thermometer import ThermoLinear, n_steps

torch.set_num_threads(1)

TINY = {"vocab_size": 12, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 32}


def _dense(seed: int = 0, **kw):
    torch.manual_seed(seed)
    m = build_model("gpt", {**TINY, **kw})
    with torch.no_grad():   # larger weights than the N(0, 0.02) init, so quantization has something to do
        for p in m.parameters():
            if p.dim() == 2:
                p.mul_(10)
    return m.eval()


def _tokens(B=3, T=16, seed=0):
    return torch.randint(0, TINY["vocab_size"], (B, T), generator=torch.Generator().manual_seed(seed))


def test_convert_b2_to_b8_tracks_the_dense_model():
    dense = _dense()
    x = _tokens()
    with torch.no_grad():
        ref = dense(x)[0]
        errs = {}
        for b in range(2, 9):
            m = convert(dense, b)
            assert isinstance(m, ConvertedLM) and m.config.bits == b and m.is_converted
            errs[b] = float((m(x)[0] - ref).abs().max())
    assert errs[8] < 0.05 * float(ref.abs().max())
    assert errs[8] < errs[4] < errs[2]


def test_converted_model_is_causal():
    m = convert(_dense(), 3)
    x = _tokens(B=2)
    x2 = x.clone()
    x2[:, 9:] = (x2[:, 9:] + 5) % TINY["vocab_size"]
    with torch.no_grad():
        a, b = m(x)[0], m(x2)[0]
    assert torch.equal(a[:, :9], b[:, :9])
    assert not torch.equal(a[:, 9:], b[:, 9:])


def test_every_linear_is_converted_and_reports():
    m = convert(_dense(), 4)
    assert not any(type(mod) is nn.Linear for mod in m.modules())
    assert m.lm_head.weight is m.transformer.wte.weight                  # tying kept
    with torch.no_grad():
        m(_tokens())
    names = [n for n, _ in reporting_layers(m)]
    assert "lm_head" in names and "transformer.h.0.attn" in names and "transformer.h.1.mlp.act" in names
    for n, layer in reporting_layers(m):
        if isinstance(layer, ThermoLinear):
            st = layer.layer_stats()
            assert st["spikes"] > 0 and layer.core_ops()["ac"] == st["spikes"] * layer.out_features, n


def test_converted_model_saves_loads_and_generates(tmp_path):
    tok = CharTokenizer.from_text("abcdefghijkl")
    m = convert(_dense(), 5)
    save_converted(tmp_path / "ckpt.pt", m, tok, source="test")
    loaded, tok2, ck = load_model(tmp_path / "ckpt.pt")
    assert isinstance(loaded, ConvertedLM) and tok2 == tok and ck["family"] == "converted"
    assert loaded.is_converted and asdict(loaded.config) == asdict(m.config)
    x = _tokens()
    with torch.no_grad():
        assert torch.equal(m(x)[0], loaded(x)[0])
    outs = [mm.generate(x[:1, :4], 20, generator=torch.Generator().manual_seed(3)) for mm in (m, loaded)]
    assert outs[0].shape == (1, 24) and torch.equal(outs[0], outs[1])


def test_unconvert_within_the_quantization_bound():
    dense = _dense()
    m = convert(dense, 8)
    back = unconvert(m)
    moved = 0
    for (name, p), (name2, p2) in zip(dense.named_parameters(), back.named_parameters()):
        assert name == name2
        if p.dim() == 2 and "wpe" not in name:
            step = p.detach().abs().amax(-1, keepdim=True) / n_steps(8)
            assert bool(((p - p2).abs() <= step / 2 + 1e-7).all()), name
            moved += int((p != p2).sum())
        else:
            assert torch.equal(p, p2), name
    assert moved > 0                                                     # the weights were quantized


def test_unsupported_layers_and_bits_are_refused():
    with pytest.raises(ValueError, match="attention='topk'"):
        convert(_dense(attention="topk", k=4), 8)
    spiking = build_model("spiking_kwta", {**TINY, "code_bits": 16, "k": 4})
    with pytest.raises(ValueError, match="'gpt' family.*SpikingTransformerLM"):
        convert(spiking, 8)
    odd = _dense()
    odd.transformer.h[1].mlp = nn.Sequential(nn.Linear(32, 32), nn.SiLU())
    with pytest.raises(ValueError, match="'transformer.h.1.mlp' of type Sequential"):
        convert(odd, 8)
    for bad in (0, 17, -3):
        with pytest.raises(ValueError, match="bits must be an integer in 1..16"):
            convert(_dense(), bad)
        with pytest.raises(ValueError, match="bits must be an integer in 1..16"):
            ConvertedConfig(bits=bad)
    window = convert(_dense(attention="window", k=4), 6)                 # the recency control converts
    assert window.transformer.h[0].attn.window == 4


def test_registered_family_shape_and_params():
    fam = get_family("converted")
    assert set(fam.bench) <= set(fam.variants) and fam.learner is not None
    dense = build_model("gpt", {"vocab_size": 65}).num_params(non_embedding=False)
    conv = build_model("converted", {"vocab_size": 65, "bits": 8}).num_params(non_embedding=False)
    assert dense == 804_096 and abs(conv - dense) / dense < 0.05


def _text() -> str:
    rng = np.random.default_rng(0)
    return "".join(rng.choice(list("abcdefgh"), 40)) * 40


def test_family_converts_the_same_seeds_dense_run(tmp_path):
    text = _text()
    shape = {k: TINY[k] for k in ("block_size", "n_layer", "n_head", "n_embd")}
    cfg = TrainConfig(max_iters=60, batch_size=8, seed=1, data_seed=7, log_every=10, ckpt_every=1000)
    dense_res = train_run("gpt", tmp_path / "runs" / "gpt" / "dense" / "seed1", cfg, variant="dense",
                          overrides=shape, progress=False, text=text)
    # a decoy, first in path order: the same shape, another seed, must not be chosen
    train_run("gpt", tmp_path / "runs" / "gpt" / "dense" / "seed0", TrainConfig(**{**asdict(cfg), "seed": 0}),
              variant="dense", overrides=shape, progress=False, text=text)
    over = {**shape, "source_root": str(tmp_path / "runs")}
    res = train_run("converted", tmp_path / "runs" / "converted" / "b8" / "seed1", cfg, variant="b8",
                    overrides=over, progress=False, text=text)
    ck = load_checkpoint(tmp_path / "runs" / "converted" / "b8" / "seed1" / "ckpt.pt")
    assert ck["learner"]["source"] == str(tmp_path / "runs" / "gpt" / "dense" / "seed1" / "ckpt.pt")
    assert ck["learner"]["qat_steps"] == 0
    assert abs(res["val_nats_per_char"] - dense_res["val_nats_per_char"]) < 0.01
    assert res["accounting"]["totals"]["ac_sops"] > 0
    # b = 2 with 50% of the steps retrained: the retraining runs through the harness and helps
    res2 = train_run("converted", tmp_path / "runs" / "converted" / "b2" / "seed1", cfg,
                     overrides={**over, "bits": 2}, progress=False, text=text)
    res2q = train_run("converted", tmp_path / "runs" / "converted" / "b2q" / "seed1", cfg,
                      overrides={**over, "bits": 2, "qat_frac": 0.5, "qat_lr": 1e-3}, progress=False, text=text)
    assert load_checkpoint(tmp_path / "runs" / "converted" / "b2q" / "seed1" / "ckpt.pt")["learner"]["qat_steps"] == 30
    assert res2q["val_nats_per_char"] < res2["val_nats_per_char"]
    loaded, _, _ = load_model(tmp_path / "runs" / "converted" / "b2q" / "seed1" / "ckpt.pt")
    assert loaded.is_converted and loaded.config.bits == 2


def test_missing_source_is_a_clear_error(tmp_path):
    cfg = TrainConfig(max_iters=5)
    conf = ConvertedConfig(**TINY, source_root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no finished gpt/dense run"):
        find_source(conf, cfg)
    with pytest.raises(FileNotFoundError, match="seed3.pt"):
        find_source(ConvertedConfig(**TINY, source=str(tmp_path / "seed{seed}.pt")), TrainConfig(seed=3))
    # a result.json of the right family but another shape is not a match
    d = tmp_path / "x"
    d.mkdir()
    (d / "result.json").write_text(json.dumps({"family": "gpt", "config": {**TINY, "n_embd": 64, "attention": "dense"},
                                               "train_config": asdict(cfg)}))
    (d / "ckpt.pt").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no finished gpt/dense run"):
        find_source(conf, cfg)


def test_converted_evaluates_through_the_harness():
    m = convert(_dense(), 4)
    data = _tokens(B=1, T=200, seed=5)[0]
    ev = evaluate(m, data)
    assert np.isfinite(ev["nats_per_char"]) and ev["layer_stats"]
    assert any("firing_rate" in s for s in ev["layer_stats"])


def test_converted_model_plots_like_a_spiking_row(tmp_path):
    """The comparison's spike plots (raster / attention / firing rates) accept a converted model."""
    pytest.importorskip("matplotlib")
    from spiking_attention.plots import plot_model
    m = convert(_dense(), 4)
    paths = plot_model(m, _tokens(B=1), tmp_path, prefix="conv")
    assert {"attention", "rates"} <= set(paths) and all(p.exists() for p in paths.values())


# ----------------------------------------------------------------------------- SpikingBrain-style route
# Tolerances: the identities below are checked in float64. The window and parallel layouts with
# coding off and a window covering the context compute the dense twin: 1e-12 on logits (the two
# attentions reach softmax through different kernels, is_causal versus an explicit mask, so
# rounding may differ; measured 0). Decoder == forward with spike coding on: 1e-9 (a count that a
# rounding-level difference moves by one would show; as in tests/test_hybrid.py).

def _dense64(seed: int = 0, **kw):
    return _dense(seed, **kw).double()


@pytest.mark.parametrize("layout", ["window", "parallel"])
def test_to_hybrid_without_spikes_and_a_full_window_is_the_dense_twin(layout):
    from models.convert import to_hybrid
    dense = _dense64()
    hyb = to_hybrid(dense, layout=layout, window=TINY["block_size"], spike_coding="none").double()
    assert isinstance(hyb, HybridLM) and hyb.config.pos_emb == "learned" and hyb.config.ffn == "mlp"
    x = _tokens()
    with torch.no_grad():
        torch.testing.assert_close(hyb(x)[0], dense(x)[0], atol=1e-12, rtol=0)


def test_to_hybrid_window_layer_is_the_dense_attention_restricted_to_its_window():
    """Layer by layer in the alternate layout: the odd (window) layer equals the source's attention
    with a full window, and the source's window-w attention with window w."""
    from models.convert import to_hybrid
    from spiking_attention.attention import DenseCausalAttention
    dense = _dense64()
    x = torch.randn(2, 16, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = to_hybrid(dense, window=16, spike_coding="none").double()
        torch.testing.assert_close(full.blocks[1].mixer(x)[0], dense.transformer.h[1].attn(x), atol=1e-12, rtol=0)
        short = to_hybrid(dense, window=5, spike_coding="none").double()
        ref = DenseCausalAttention(32, 2, max_seq_len=16, window=5).double()
        ref.load_state_dict(dense.transformer.h[1].attn.state_dict())
        torch.testing.assert_close(short.blocks[1].mixer(x)[0], ref(x), atol=1e-12, rtol=0)


def test_to_hybrid_transfers_what_the_map_says_and_leaves_gates_fresh():
    from models.convert import hybrid_weight_map, to_hybrid
    dense = _dense()
    calib = _tokens(B=4, seed=3)
    hyb = to_hybrid(dense, layout="alternate", window=8, calib=calib)
    src, dst = dense.state_dict(), hyb.state_dict()
    wmap = hybrid_weight_map(hyb.config)
    assert "blocks.0.mixer.qkv.weight" in wmap and "blocks.1.mixer.proj.weight" in wmap
    for d, s in wmap.items():
        assert torch.equal(dst[d], src[s]), d
    fresh = sorted(set(dst) - set(wmap))
    assert fresh == ["blocks.0.mixer.gate_down.weight", "blocks.0.mixer.gate_up.bias",
                     "blocks.0.mixer.gate_up.weight", "blocks.0.mixer.norm_weight"]
    assert hyb.lm_head.weight is hyb.wte.weight
    # GLA's output scale starts at the RMS of the dense attention's head outputs on the calibration text
    got = []
    h = dense.transformer.h[0].attn.c_proj.register_forward_pre_hook(lambda m, a: got.append(a[0]))
    with torch.no_grad():
        dense(calib)
    h.remove()
    torch.testing.assert_close(hyb.blocks[0].mixer.norm_weight, got[0].pow(2).mean((0, 1)).sqrt())
    # spike coding is on in every projection of mixers and MLP
    rep = hyb.spike_report(_tokens(B=1))
    assert len(rep["layers"]) == 8 and 0 < rep["total"]["spike_sparsity"] < 1


@pytest.mark.parametrize("layout", ["alternate", "parallel"])
def test_to_hybrid_is_causal_and_its_decoder_equals_forward(layout):
    from models.convert import to_hybrid
    from tests.lm_checks import check_causal, check_decoder_matches_forward
    m = to_hybrid(_dense(), layout=layout, window=6, calib=_tokens(B=2, seed=4))
    for t in (1, 7, 12):
        check_causal(m, _tokens(B=2, seed=t), t)
    check_decoder_matches_forward(to_hybrid(_dense64(), layout=layout, window=6).double(), _tokens(B=2, seed=9),
                                  t0=5, atol=1e-9)


def test_to_hybrid_saves_loads_trains_and_generates(tmp_path):
    from models.convert import save_hybrid, to_hybrid
    from models.train import AdamWLearner, train
    tok = CharTokenizer.from_text("abcdefghijkl")
    dense = _dense()
    m = to_hybrid(dense, window=8)
    ids = _tokens(B=1, T=400, seed=11)[0]
    cfg = TrainConfig(max_iters=6, batch_size=4, warmup_iters=1, learning_rate=3e-4, min_lr=3e-4, log_every=1)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    info = train(m, ids, cfg, family="hybrid", learner=AdamWLearner(m, cfg), progress=False,
                 ckpt_path=tmp_path / "run.pt", extra_state={"config": asdict(m.config), "tokenizer": tok.to_dict()})
    assert info["step"] == 6 and not torch.equal(before["blocks.0.mixer.gate_up.weight"],
                                                 m.state_dict()["blocks.0.mixer.gate_up.weight"])
    save_hybrid(tmp_path / "ckpt.pt", m, tok, source="test")
    for path in (tmp_path / "ckpt.pt", tmp_path / "run.pt"):        # the harness's own checkpoint too
        loaded, tok2, ck = load_model(path)
        assert isinstance(loaded, HybridLM) and ck["family"] == "hybrid" and tok2 == tok
        assert asdict(loaded.config) == asdict(m.config)
        with torch.no_grad():
            assert torch.equal(m(_tokens())[0], loaded(_tokens())[0])
    # past block_size (16) learned positions rerun the last 16 tokens, as the twin's generate does
    outs = [mm.generate(_tokens(B=1)[:, :4], 30, generator=torch.Generator().manual_seed(3)) for mm in (m, loaded)]
    assert outs[0].shape == (1, 34) and torch.equal(outs[0], outs[1])
    assert np.isfinite(evaluate(loaded, ids)["nats_per_char"])


def test_to_hybrid_generation_past_the_context_crops_like_the_twin():
    """With coding off and a full window the converted model is the twin, so both sample the same
    tokens from the same generator, inside the context (decoder) and past it (cropped reruns)."""
    from models.convert import to_hybrid
    dense = _dense64()
    hyb = to_hybrid(dense, layout="window", window=16, spike_coding="none").double()
    prompt = _tokens(B=1)[:, :3]
    a = dense.generate(prompt, 25, generator=torch.Generator().manual_seed(5), use_cache=False)
    b = hyb.generate(prompt, 25, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_to_hybrid_refuses_unsupported_sources():
    from models.convert import to_hybrid
    with pytest.raises(ValueError,
                       match=r"source\.config\.attention='topk'.*allowed: attention in \('dense', 'window'\)"):
        to_hybrid(_dense(attention="topk", k=4))
    spiking = build_model("spiking_kwta", {**TINY, "code_bits": 16, "k": 4})
    with pytest.raises(ValueError, match="source must be a model of the 'gpt' family.*got SpikingTransformerLM"):
        to_hybrid(spiking)
    odd = _dense()
    odd.transformer.h[0].mlp = nn.Sequential(nn.Linear(32, 32), nn.SiLU())
    with pytest.raises(ValueError, match="source layer 'transformer.h.0.mlp' of type Sequential.*allowed layer types"):
        to_hybrid(odd)
    with pytest.raises(ValueError, match="layout must be one of"):
        to_hybrid(_dense(), layout="zigzag")
    with pytest.raises(ValueError, match="window must be an integer >= 1, got 0"):
        to_hybrid(_dense(), window=0)
    with pytest.raises(ValueError, match="spike_coding must be one of"):
        to_hybrid(_dense(), spike_coding="rate")
    with pytest.raises(ValueError, match="learned position embeddings cover 16 positions"):
        to_hybrid(_dense()).hidden(_tokens(B=1)[:, :4], None, "recurrent", start=14)
    with pytest.raises(ValueError, match="max_new_tokens must be an int >= 0, got -1"):
        to_hybrid(_dense()).generate(_tokens(B=1)[:, :2], -1)


def test_gpt_shape_variant_is_the_converted_architecture():
    """The from-scratch control (hybrid/gpt_shape) has exactly the converted model's parameters."""
    from models.convert import to_hybrid
    fam = get_family("hybrid")
    scratch = build_model("hybrid", {**fam.variants["gpt_shape"], **TINY})
    conv = to_hybrid(_dense(), window=16)
    assert {k: v.shape for k, v in scratch.state_dict().items()} == {k: v.shape for k, v in conv.state_dict().items()}
    assert asdict(scratch.config) == asdict(conv.config)


def test_spikingbrain_snapshots_resume_with_their_own_weights(tmp_path):
    # bench/convert.py's route arms take snapshots of one run; a cache miss must never hand the
    # final checkpoint's weights to the earlier snapshots (it once reported +50 == +200 steps)
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.convert import sb_arm
    from models.train import save_checkpoint
    dense = _dense()
    src = tmp_path / "dense.pt"
    save_checkpoint(src, {"family": "gpt", "config": asdict(dense.config), "model": dense.state_dict(),
                          "tokenizer": CharTokenizer.from_text("abcdefghijkl").to_dict(), "variant": "dense",
                          "step": 0, "history": [], "train_time_s": 0.0, "train_config": asdict(TrainConfig())})
    ids = _tokens(B=1, T=3000, seed=5)[0]
    data = (CharTokenizer.from_text("abcdefghijkl"), ids, ids[:200], _tokens(B=4, T=16))
    info = {"seed": 0, "eval_chars": 199, "val_nats_per_char": 1.0}
    kw = dict(steps=[0, 2, 4], lr=1e-3, layout="alternate", window=8, coding="adaptive", data=data, dense_info=info)
    first = sb_arm(src, tmp_path / "arm", "scratch", **kw)
    losses = [p["val_nats_per_char"] for p in first["points"]]
    assert len(set(losses)) == 3                                    # three different snapshots
    (tmp_path / "arm" / "result.json").unlink()                     # cache miss, points and checkpoint kept
    assert [p["val_nats_per_char"] for p in sb_arm(src, tmp_path / "arm", "scratch", **kw)["points"]] == losses
    (tmp_path / "arm" / "result.json").unlink()
    (tmp_path / "arm" / "points.json").unlink()                     # a checkpoint without its points: start over
    assert [p["val_nats_per_char"] for p in sb_arm(src, tmp_path / "arm", "scratch", **kw)["points"]] == losses
