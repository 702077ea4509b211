"""SpikingTransformerLM and its dense twin: shapes, causality, config errors, parameter parity, generate."""
from __future__ import annotations

import pytest
import torch

from models import build_model, make_config
from models.gpt import GPT, GPTConfig
from models.spiking_kwta import SpikingConfig, SpikingTransformerLM

torch.set_num_threads(1)

TINY = {"vocab_size": 11, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 32}
ARMS = [
    ("gpt", {"attention": "dense"}),
    ("gpt", {"attention": "topk", "k": 3}),
    ("gpt", {"attention": "window", "k": 3}),
    ("spiking_kwta", {"code_bits": 16, "k": 3, "score": "hamming"}),
    ("spiking_kwta", {"code_bits": 16, "k": 3, "score": "overlap"}),
    ("spiking_kwta", {"code_bits": 64, "k": 3, "neuron": "lif"}),
    ("spiking_kwta", {"code_bits": 16, "k": 3, "prior_window": 4, "prior_random_frac": 0.2, "prior_seed": 3}),
]
IDS = ["dense", "topk", "window", "spk-hamming", "spk-overlap", "spk-lif-64", "spk-prior"]


def make(kind, cfg, seed=0, **over):
    torch.manual_seed(seed)
    return build_model(kind, {**TINY, **cfg, **over})


@pytest.mark.parametrize("kind,cfg", ARMS, ids=IDS)
def test_shapes_and_loss(kind, cfg):
    m = make(kind, cfg)
    idx = torch.randint(0, 11, (3, 16))
    logits, loss = m(idx, idx)
    assert logits.shape == (3, 16, 11)
    assert loss.shape == () and torch.isfinite(loss)
    logits, loss = m(idx[:, :5])            # shorter than block_size is fine
    assert logits.shape == (3, 5, 11) and loss is None
    loss2 = m(idx, idx)[1]
    loss2.backward()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    # gradient reaches the embeddings and the attention's query projection (through the scores)
    blk = m.transformer.h[0].attn
    qgrad = blk.q_proj.weight.grad if hasattr(blk, "q_proj") else blk.c_attn.weight.grad[: TINY["n_embd"]]
    assert qgrad.abs().sum() > 0


@pytest.mark.parametrize("kind,cfg", ARMS, ids=IDS)
def test_causal(kind, cfg):
    """Changing token t never changes a logit at a position < t."""
    m = make(kind, cfg).eval()
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, 11, (2, 16), generator=g)
    base = m(idx)[0]
    for t in (0, 5, 15):
        idx2 = idx.clone()
        idx2[:, t] = (idx2[:, t] + 1 + torch.randint(0, 9, (2,), generator=g)) % 11
        out = m(idx2)[0]
        torch.testing.assert_close(out[:, :t], base[:, :t], rtol=0, atol=1e-6)
        assert not torch.allclose(out[:, t:], base[:, t:])  # the change is visible from t on


def test_bad_configs():
    with pytest.raises(ValueError, match="k must"):
        make_config("spiking_kwta", {**TINY, "k": 0})
    with pytest.raises(ValueError, match="k must"):
        make_config("gpt", {**TINY, "attention": "topk", "k": 0})
    with pytest.raises(ValueError, match="code_bits"):
        make_config("spiking_kwta", {**TINY, "code_bits": 0})
    with pytest.raises(ValueError, match="code_bits"):
        make_config("spiking_kwta", {**TINY, "code_bits": -8})
    with pytest.raises(ValueError, match="divisible"):
        make_config("gpt", {**TINY, "n_embd": 30, "n_head": 4})
    with pytest.raises(ValueError, match="divisible"):
        SpikingTransformerLM(SpikingConfig(**{**TINY, "n_embd": 30, "n_head": 4}))
    with pytest.raises(ValueError, match="attention"):
        make_config("gpt", {**TINY, "attention": "linear"})
    with pytest.raises(ValueError, match="score"):
        make_config("spiking_kwta", {**TINY, "score": "cosine"})
    with pytest.raises(ValueError, match="unknown"):
        make_config("gpt", {**TINY, "n_layers": 3})
    with pytest.raises(ValueError, match="unknown model family"):
        build_model("rnn", TINY)
    with pytest.raises(ValueError, match="block_size"):
        make_config("gpt", {**TINY, "block_size": 0})


@pytest.mark.parametrize("kind,cfg", ARMS[:4], ids=IDS[:4])
def test_sequence_longer_than_block_size(kind, cfg):
    m = make(kind, cfg)
    with pytest.raises(ValueError, match="exceeds block_size"):
        m(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        m(torch.zeros(17, dtype=torch.long))


def test_parameter_count_matches_dense_twin():
    """nanoGPT's CPU config: binary Q/K codes of n_embd/n_head bits keep the count within 5%."""
    base = {"vocab_size": 65, "block_size": 64, "n_layer": 4, "n_head": 4, "n_embd": 128}
    dense = GPT(GPTConfig(**base)).num_params(non_embedding=False)
    spk = SpikingTransformerLM(SpikingConfig(**base, code_bits=32, k=8)).num_params(non_embedding=False)
    assert 790_000 < dense < 820_000                 # ~0.8M parameters, as nanoGPT reports
    assert abs(spk - dense) / dense < 0.05
    # twice the code width would not match: the check is not vacuous
    wide = SpikingTransformerLM(SpikingConfig(**base, code_bits=64, k=8)).num_params(non_embedding=False)
    assert abs(wide - dense) / dense > 0.05


def test_sparse_arms_density():
    """top-k and window keep min(k, i+1) keys per query; dense keeps all causal keys."""
    T, k = 16, 3
    expect = sum(min(k, i + 1) for i in range(T)) / (T * (T + 1) / 2)
    for kind, cfg in ARMS[:5]:
        m = make(kind, cfg).eval()
        m(torch.randint(0, 11, (2, T)))
        for s in m.layer_stats():
            want = 1.0 if cfg.get("attention") == "dense" else expect
            assert s["attn_density"] == pytest.approx(want, abs=1e-6), (kind, cfg)


def test_window_is_recency_only():
    """The window arm ignores keys older than k: changing them leaves the last logit unchanged."""
    m = make("gpt", {"attention": "window", "k": 3}, n_layer=1).eval()
    idx = torch.randint(0, 11, (1, 16))
    idx2 = idx.clone()
    idx2[0, :13] = (idx2[0, :13] + 1) % 11       # positions 13, 14, 15 are the last 3 keys
    torch.testing.assert_close(m(idx2)[0][:, -1], m(idx)[0][:, -1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind,cfg", [ARMS[0], ARMS[3]], ids=["dense", "spiking"])
def test_generate(kind, cfg):
    m = make(kind, cfg)
    prompt = torch.randint(0, 11, (2, 20))       # longer than block_size: cropped, not an error
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a = m.generate(prompt, 12, generator=g1)
    b = m.generate(prompt, 12, temperature=1.0, generator=g2)
    assert a.shape == (2, 32) and torch.equal(a[:, :20], prompt)
    assert torch.equal(a, b)                     # seeded sampling is reproducible
    assert int(a.min()) >= 0 and int(a.max()) < 11
    top1 = m.generate(prompt[:, :3], 5, top_k=1)   # top_k=1 is greedy
    logits = m(prompt[:, :3])[0][:, -1]
    assert torch.equal(top1[:, 3], logits.argmax(-1))
    with pytest.raises(ValueError, match="temperature"):
        m.generate(prompt, 1, temperature=0.0)


@pytest.mark.parametrize("kind,cfg", ARMS + [("gpt", {"attention": "topk", "k": 3, "local_window": 4}),
                                             ("spiking_kwta", {"code_bits": 16, "k": 3, "local_window": 4})],
                         ids=IDS + ["topk-far", "spk-brain-prior"])
def test_decoder_equals_full_forward(kind, cfg):
    """Incremental decoding with the KV cache gives the full forward's logits at every step, and
    cached generation samples the same tokens as the full-recompute reference, past block_size too."""
    m = make(kind, cfg).eval()
    idx = torch.randint(0, 11, (1, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref, _ = m(idx)
        dec = m.decoder()
        logits, caches = dec.prefill(idx[:, :5])
        torch.testing.assert_close(logits, ref[:, :5], atol=1e-5, rtol=1e-5)
        for t in range(5, 16):
            torch.testing.assert_close(dec.step(idx[:, t:t + 1], caches), ref[:, t], atol=1e-5, rtol=1e-5)
    prompt = idx[:, :4]
    cached = m.generate(prompt, 20, top_k=1)
    assert torch.equal(cached, m.generate(prompt, 20, top_k=1, use_cache=False))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(m.generate(prompt, 20, generator=g1), m.generate(prompt, 20, generator=g2, use_cache=False))
