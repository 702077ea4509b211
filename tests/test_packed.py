"""Packed-bit inference == the torch path: same winners, same outputs (random and trained weights)."""
import numpy as np
import pytest
import torch

import hdc
from spiking_attention.attention import SpikingKWTAAttention, allowed_keys
from spiking_attention.kwta import kwta_mask
from spiking_attention.packed import (PACKED_CALLS, PackedSpikingAttention, pack_codes, packed_model,
                                      packed_scores, select_winners)

torch.set_num_threads(1)
hdc.set_num_threads(1)


def _make(seed=0, **kw):
    torch.manual_seed(seed)
    base = dict(d_model=32, n_head=4, code_bits=8, k=3, max_seq_len=40)
    base.update(kw)
    return SpikingKWTAAttention(base.pop("d_model"), base.pop("n_head"), base.pop("code_bits"), base.pop("k"),
                                **base)


def _torch_winners(att, x):
    with torch.no_grad():
        q, k, _, _ = att.codes(x)
        s = att.integer_scores(q, k)
        T = x.shape[1]
        return kwta_mask(s, att.k, allowed_keys(att, T, T))  # (B, nh, T, T)


def _assert_same(att, x, patt=None, block_rows=7, method="auto"):
    patt = patt or PackedSpikingAttention(att, block_rows=block_rows, method=method)
    with torch.no_grad():
        y_ref = att(x)
    y = patt.forward(x)
    assert torch.allclose(y, y_ref, atol=2e-6, rtol=1e-5), (y - y_ref).abs().max()
    win = _torch_winners(att, x)
    B, nh, T, _ = win.shape
    for n, (idx, valid) in enumerate(patt.winners(x)):
        b, h = divmod(n, nh)
        mask = np.zeros((T, T), bool)
        rows = np.broadcast_to(np.arange(T)[:, None], idx.shape)
        mask[rows[valid], idx[valid]] = True
        assert np.array_equal(mask, win[b, h].numpy())
    return patt


CONFIGS = [dict(), dict(score="overlap"), dict(code_bits=70), dict(code_bits=130, score="overlap"),
           dict(neuron="lif"), dict(k=0.2), dict(prior_window=5, prior_random_frac=0.25, prior_seed=2),
           dict(code_bits=3, k=5), dict(code_bits=2048, score="overlap")]  # up to hypervector widths


METHODS = ["causal_kernel", "fused_topk", "matrix"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("cfg", CONFIGS)
def test_packed_equals_torch_on_random_weights(cfg, method):
    att = _make(**cfg)
    x = torch.randn(2, 33, 32, generator=torch.Generator().manual_seed(3))
    before = dict(PACKED_CALLS)
    patt = _assert_same(att, x, method=method)
    ran = patt.last_info["method"]
    assert ran == patt.prefill_method()
    if method == "causal_kernel" and isinstance(att.k, int):
        assert ran == "causal_kernel"
    if method == "fused_topk" and isinstance(att.k, int) and patt._fused_ok:
        assert ran == "fused_topk"
    # the packed kernels really ran
    counter = {"causal_kernel": "causal_kernel", "fused_topk": "topk", "matrix": "hamming_matrix"}[ran]
    assert PACKED_CALLS[counter] > before[counter]


@pytest.mark.parametrize("backend", hdc.available_backends())
def test_packed_equals_torch_on_every_backend(backend):
    att = _make(code_bits=16)
    x = torch.randn(1, 30, 32, generator=torch.Generator().manual_seed(4))
    with hdc.use_backend(backend):
        for method in METHODS:
            _assert_same(att, x, method=method)
        # silent queries inside the fused path, on this backend
        with torch.no_grad():
            att.q_threshold.fill_(0.9)
        _assert_same(att, x)


@pytest.mark.parametrize("method", METHODS)
def test_silent_codes_are_skipped_and_still_exact(method):
    for score in ("hamming", "overlap"):
        att = _make(code_bits=6, score=score)
        with torch.no_grad():  # high thresholds: most codes fire nothing
            att.q_threshold.fill_(1.2)
            att.k_threshold.fill_(1.0)
        x = torch.randn(2, 33, 32, generator=torch.Generator().manual_seed(5))
        patt = _assert_same(att, x, method=method)
        info = patt.last_info
        assert info["active_queries"] < 2 * 4 * 33 and info["active_keys"] < 2 * 4 * 33
        assert info["pairs_computed"] < info["pairs_total"]


def test_packed_scores_identities():
    rng = np.random.default_rng(0)
    q = rng.random((9, 77)) < 0.3
    k = rng.random((11, 77)) < 0.5
    q[2] = False
    k[4] = False
    qw, kw = pack_codes(q), pack_codes(k)
    s_ov, _ = packed_scores(qw, kw, 77, "overlap")
    s_hm, info = packed_scores(qw, kw, 77, "hamming")
    assert np.array_equal(s_ov, (q[:, None, :] & k[None, :, :]).sum(-1))
    assert np.array_equal(s_hm, 77 - 2 * (q[:, None, :] ^ k[None, :, :]).sum(-1))
    assert info["active_queries"] == 8 and info["active_keys"] == 10


def test_select_winners_matches_kwta_mask_with_ties():
    rng = np.random.default_rng(1)
    s = rng.integers(0, 3, (20, 20))
    allowed = np.tril(np.ones((20, 20), bool))
    for k in (1, 4, 0.3):
        idx, valid = select_winners(s, k, allowed)
        mask = np.zeros_like(allowed)
        rows = np.broadcast_to(np.arange(20)[:, None], idx.shape)
        mask[rows[valid], idx[valid]] = True
        ref = kwta_mask(torch.from_numpy(s).float(), k, torch.from_numpy(allowed))
        assert np.array_equal(mask, ref.numpy())


@pytest.mark.parametrize("cfg", [dict(), dict(score="overlap"), dict(neuron="lif"),
                                 dict(prior_window=4, prior_random_frac=0.3)])
@pytest.mark.parametrize("method", METHODS)
def test_decode_steps_equal_full_forward(cfg, method):
    att = _make(**cfg)
    x = torch.randn(1, 25, 32, generator=torch.Generator().manual_seed(6))
    patt = PackedSpikingAttention(att, method=method)
    with torch.no_grad():
        y_ref = att(x)
    y_pre, cache = patt.prefill(x[:, :10], capacity=25)
    assert torch.allclose(y_pre, y_ref[:, :10], atol=2e-6)
    for t in range(10, 25):
        y_t = patt.step(x[:, t:t + 1], cache)
        assert torch.allclose(y_t[0, 0], y_ref[0, t], atol=2e-6, rtol=1e-5), t
    with pytest.raises(ValueError, match="cache full"):
        patt.step(x[:, :1], cache)


def _train_tiny(att_kw, steps=40):
    """A tiny spiking LM (embedding, one attention layer, head) trained on a short text."""
    torch.manual_seed(0)
    text = "to be or not to be that is the question " * 4
    vocab = sorted(set(text))
    ids = torch.tensor([vocab.index(c) for c in text])
    C = 32
    emb = torch.nn.Embedding(len(vocab), C)
    pos = torch.nn.Embedding(40, C)
    att = SpikingKWTAAttention(C, 4, 8, 3, max_seq_len=40, **att_kw)
    head = torch.nn.Linear(C, len(vocab))
    params = [*emb.parameters(), *pos.parameters(), *att.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=3e-3)
    x_idx = torch.stack([ids[i:i + 32] for i in range(0, 96, 8)])
    y_idx = torch.stack([ids[i + 1:i + 33] for i in range(0, 96, 8)])

    def embed(idx):
        return emb(idx) + pos(torch.arange(idx.shape[1]))

    losses = []
    for _ in range(steps):
        h = embed(x_idx)
        logits = head(h + att(h))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, len(vocab)), y_idx.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return att, embed(x_idx[:3]).detach(), losses, (att.q_proj.weight.detach().clone())


@pytest.mark.parametrize("att_kw", [dict(), dict(score="overlap")])
def test_packed_equals_torch_on_trained_weights(att_kw):
    torch.manual_seed(0)
    init_w = SpikingKWTAAttention(32, 4, 8, 3, max_seq_len=40, **att_kw).q_proj.weight.detach().clone()
    att, h, losses, w = _train_tiny(att_kw)
    assert losses[-1] < losses[0] - 0.5  # it trained
    assert not torch.allclose(w, init_w)  # the Q projection moved: surrogate gradients arrived
    _assert_same(att, h)


def test_packed_model_context_on_the_language_model():
    model_mod = pytest.importorskip("spiking_attention.model", reason="the LM file is not present")
    cfg = model_mod.SpikingConfig(vocab_size=20, block_size=24, n_layer=2, n_head=2, n_embd=16, code_bits=8, k=3)
    torch.manual_seed(0)
    lm = model_mod.SpikingTransformerLM(cfg).eval()
    idx = torch.randint(0, 20, (2, 24))
    with torch.no_grad():
        ref, _ = lm(idx)
        calls = PACKED_CALLS["causal_kernel"]
        with packed_model(lm):
            out, _ = lm(idx)
        assert PACKED_CALLS["causal_kernel"] > calls
        again, _ = lm(idx)  # restored to the torch path afterwards
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.equal(again, ref)


def test_packed_errors():
    att = _make(output="uniform_ste")
    with pytest.raises(ValueError, match="softmax"):
        PackedSpikingAttention(att)
    with pytest.raises(TypeError):
        PackedSpikingAttention(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="method"):
        PackedSpikingAttention(_make(), method="magic")
    patt = PackedSpikingAttention(_make())
    with pytest.raises(ValueError, match="max_seq_len"):
        patt.forward(torch.randn(1, 41, 32))
    with pytest.raises(ValueError, match="capacity"):
        patt.new_cache(100)
