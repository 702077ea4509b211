"""Packed-bit inference == the torch path: same winners, same outputs (random and trained weights)."""
import numpy as np
import pytest
import torch

import hdc
from spiking_attention.attention import SpikingKWTAAttention, _select, allowed_keys, selection_masks
from spiking_attention.kwta import kwta_mask
from spiking_attention.packed import (PackedSpikingAttention, _to_score, expand_codes, pack_codes, packed_scores,
                                      select_winners)

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
        return _select(s, selection_masks(att.k, allowed_keys(att, T, T), att.local_window))  # (B, nh, T, T)


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
           dict(code_bits=3, k=5), dict(code_bits=2048, score="overlap"),  # up to hypervector widths
           dict(levels=4), dict(levels=3, score="overlap", code_bits=65), dict(levels=8, local_window=6),
           dict(levels=16, code_bits=129)]  # graded spikes: 2, 2, 3 and 4 bit-planes


METHODS = ["kernel", "matrix"]


def _kernel_applies(att) -> bool:
    return (isinstance(att.k, int) and att.prior_random_frac == 0
            and (att.levels == 2 or att.score == "overlap" or att.levels in (4, 8, 16)))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("cfg", CONFIGS)
def test_packed_equals_torch_on_random_weights(cfg, method):
    att = _make(**cfg)
    x = torch.randn(2, 33, 32, generator=torch.Generator().manual_seed(3))
    if method == "kernel" and not _kernel_applies(att):
        with pytest.raises(ValueError, match="kernel"):
            PackedSpikingAttention(att, method=method)
        return
    patt = _assert_same(att, x, method=method)
    assert patt.method == method
    assert PackedSpikingAttention(att).method == ("kernel" if _kernel_applies(att) else "matrix")  # auto


@pytest.mark.skipif("c" not in hdc.available_backends(), reason="the C backend is not built here")
def test_packed_path_runs_the_hdc_kernels():
    """Proof the kernels of the one registry ran (counted inside the C kernels, not here)."""
    c = hdc.backends.load_backend("c")
    att = _make(code_bits=16)
    x = torch.randn(1, 30, 32, generator=torch.Generator().manual_seed(4))
    with hdc.use_backend("c"):
        for method, kernel in (("kernel", "causal_topk"), ("matrix", "hamming_matrix")):
            before = c.call_count(kernel)
            _assert_same(att, x, method=method)
            assert c.call_count(kernel) > before, (method, kernel)
        patt = PackedSpikingAttention(att)
        _, cache = patt.prefill(x[:, :10])
        before = c.call_count("causal_topk")
        patt.step(x[:, 10:11], cache)
        assert c.call_count("causal_topk") == before + att.n_head   # one scan per head per token


@pytest.mark.parametrize("backend", hdc.available_backends())
def test_packed_equals_torch_on_every_backend(backend):
    att = _make(code_bits=16)
    x = torch.randn(1, 30, 32, generator=torch.Generator().manual_seed(4))
    with hdc.use_backend(backend):
        for method in METHODS:
            _assert_same(att, x, method=method)
        with torch.no_grad():  # mostly silent queries: scores from key popcounts alone
            att.q_threshold.fill_(0.9)
        _assert_same(att, x)


@pytest.mark.parametrize("method", METHODS)
def test_silent_codes_stay_exact(method):
    for score in ("hamming", "overlap"):
        att = _make(code_bits=6, score=score)
        with torch.no_grad():  # high thresholds: most codes fire nothing, so most scores tie
            att.q_threshold.fill_(1.2)
            att.k_threshold.fill_(1.0)
        x = torch.randn(2, 33, 32, generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            q, k, _, _ = att.codes(x)
        assert (q.amax(-1) == 0).float().mean() > 0.3      # the case this test is about
        _assert_same(att, x, method=method)


def test_packed_scores_identities():
    rng = np.random.default_rng(0)
    q = rng.random((9, 77)) < 0.3
    k = rng.random((11, 77)) < 0.5
    q[2] = False
    k[4] = False
    qw, kw = pack_codes(q), pack_codes(k)
    s_ov = packed_scores(qw, kw, 77, "overlap")
    s_hm = packed_scores(qw, kw, 77, "hamming")
    assert np.array_equal(s_ov, (q[:, None, :] & k[None, :, :]).sum(-1))
    assert np.array_equal(s_hm, 77 - 2 * (q[:, None, :] ^ k[None, :, :]).sum(-1))


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
                                 dict(prior_window=4, prior_random_frac=0.3), dict(levels=4, local_window=5)])
@pytest.mark.parametrize("method", METHODS)
def test_decode_steps_equal_full_forward(cfg, method):
    att = _make(**cfg)
    x = torch.randn(1, 25, 32, generator=torch.Generator().manual_seed(6))
    if method == "kernel" and not _kernel_applies(att):
        pytest.skip("the kernel method takes no random long-range links (tested above)")
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


@pytest.mark.parametrize("cfg", [dict(), dict(score="overlap", prior_window=5), dict(neuron="lif"),
                                 dict(levels=4, local_window=4)])
def test_packed_lm_equals_the_model(cfg):
    """model.packed(): same logits as the model, decoding with the packed KV cache gives the
    model's logits at every step, and the model itself is left untouched."""
    from models.spiking_kwta import SpikingConfig, SpikingTransformerLM
    torch.manual_seed(0)
    lm = SpikingTransformerLM(SpikingConfig(vocab_size=20, block_size=24, n_layer=2, n_head=2, n_embd=16,
                                            code_bits=8, k=3, **cfg)).eval()
    idx = torch.randint(0, 20, (2, 24), generator=torch.Generator().manual_seed(1))
    plm = lm.packed()
    with torch.no_grad():
        ref, _ = lm(idx)
        out, _ = plm(idx)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        assert torch.equal(lm(idx)[0], ref)            # no forward was swapped on the live model
        logits, caches = plm.prefill(idx[:1, :5])
        torch.testing.assert_close(logits, ref[:1, :5], atol=1e-5, rtol=1e-5)
        for t in range(5, 24):
            step = plm.step(idx[:1, t:t + 1], caches)
            torch.testing.assert_close(step, ref[:1, t], atol=1e-5, rtol=1e-5)
        assert all(c.n == 24 for c in caches)
        with pytest.raises(ValueError, match="block_size"):
            plm.step(idx[:1, :1], caches)
    # greedy generation, past block_size too: the same tokens as the model's own generate
    prompt = idx[:1, :6]
    assert torch.equal(plm.generate(prompt, 30, top_k=1), lm.generate(prompt, 30, top_k=1))
    with pytest.raises(ValueError, match="batch 1"):
        plm.generate(idx[:, :3], 2)


def test_packed_lm_refuses_a_layer_without_packed_form():
    from models.gpt import GPT, GPTConfig
    with pytest.raises(ValueError, match="no packed form"):
        GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8)).packed()


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
    with pytest.raises(ValueError, match="kernel"):
        PackedSpikingAttention(_make(k=0.3), method="kernel")


# ----------------------------------------------------------------------------- brain prior (local window)

@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("cfg", [dict(local_window=6), dict(local_window=6, score="overlap", code_bits=70),
                                 dict(local_window=1, k=4), dict(local_window=10, neuron="lif", code_bits=3)])
def test_brain_prior_packed_equals_torch(cfg, method):
    att = _make(**cfg)
    x = torch.randn(2, 33, 32, generator=torch.Generator().manual_seed(8))
    _assert_same(att, x, method=method)
    patt = PackedSpikingAttention(att, method=method)
    y_ref = att(x[:1])
    y_pre, cache = patt.prefill(x[:1, :12], capacity=33)
    torch.testing.assert_close(y_pre, y_ref[:, :12], atol=2e-6, rtol=1e-5)
    for t in range(12, 33):
        torch.testing.assert_close(patt.step(x[:1, t:t + 1], cache)[0, 0], y_ref[0, t], atol=2e-6, rtol=1e-5)


def test_brain_prior_winners_and_stats():
    """Every local key is attended; at most k more come from outside the window; the stats say so."""
    w, k, T = 5, 3, 30
    att = _make(local_window=w, k=k)
    x = torch.randn(2, T, 32, generator=torch.Generator().manual_seed(9))
    win = _torch_winners(att, x)                                         # (B, nh, T, T)
    with torch.no_grad():
        att(x)                                                           # stats of this input
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    local = torch.from_numpy((j <= i) & (i - j < w))
    far = torch.from_numpy((i - j >= w))
    assert (win | ~local).all()                                          # the whole window
    assert torch.equal((win & far).sum(-1), far.sum(-1).clamp(max=k).expand(2, 4, T))
    st = att.layer_stats()
    n_far = int((win & far).sum())
    assert st["far_winner_frac"] == pytest.approx(n_far / int(win.sum()))
    assert w <= st["far_reach_mean"] <= st["far_reach_max"] <= T - 1
    assert 0 <= st["tie_at_cut_frac"] <= 1


def test_brain_prior_errors():
    with pytest.raises(ValueError, match="local_window=40 leaves no far keys"):
        _make(local_window=40)
    with pytest.raises(ValueError, match="k=8 far winners exceed the 5 keys"):
        _make(local_window=35, k=8)
    with pytest.raises(ValueError, match="two brain priors"):
        _make(local_window=4, prior_window=4)
    with pytest.raises(ValueError, match="k=50 exceeds"):
        _make(k=50)


def test_brain_prior_on_trained_weights():
    att, h, losses, _ = _train_tiny(dict(local_window=4))
    assert losses[-1] < losses[0] - 0.5
    _assert_same(att, h)


@pytest.mark.parametrize("method", METHODS)
def test_wide_codes_packed_equals_torch(method):
    att = _make(code_bits=96, proj_dim=8)
    x = torch.randn(2, 33, 32, generator=torch.Generator().manual_seed(12))
    _assert_same(att, x, method=method)


# ----------------------------------------------------------------------------- graded spikes

@pytest.mark.parametrize("levels", [3, 4, 5, 8, 16])
@pytest.mark.parametrize("code_bits", [1, 63, 64, 65, 128, 513])
@pytest.mark.parametrize("score", ["hamming", "overlap"])
def test_graded_scores_equal_float_dot_products(levels, code_bits, score):
    """Bit-plane popcount scores == the float dot products of the graded codes (centred for
    "hamming"), at word-boundary widths; counts drawn with every level present."""
    rng = np.random.default_rng(levels * 1000 + code_bits)
    q = rng.integers(0, levels, (9, code_bits))
    k = rng.integers(0, levels, (13, code_bits))
    q[0], k[0] = levels - 1, 0                       # the extremes: all-max and silent codes
    att = _make(code_bits=code_bits, levels=levels, score=score)
    ref = att.integer_scores(torch.from_numpy(q).double(), torch.from_numpy(k).double()).numpy()
    c = levels - 1
    if score == "hamming":
        assert np.array_equal(ref, (2 * q - c) @ (2 * k - c).T)
    got = packed_scores(pack_codes(q, levels), pack_codes(k, levels), code_bits, score, levels=levels)
    assert got.dtype == np.int64 and np.array_equal(got, ref.astype(np.int64))


def test_graded_neuron_counts_thresholds():
    """A graded code bit is the number of its L-1 thresholds crossed; levels=2 is the binary neuron."""
    att = _make(levels=4, grade_step=0.5)
    pre = torch.tensor([[[-2.0, -0.6, -0.2, 0.2, 0.6, 2.0]]])     # thresholds at -0.5, 0, 0.5
    counts, _ = att._fire(pre, torch.zeros(6))
    assert counts.tolist() == [[[0, 0, 1, 2, 3, 3]]]
    binary = _make(levels=2)
    assert binary._fire(pre, torch.zeros(6))[0].tolist() == [[[0, 0, 0, 1, 1, 1]]]


def test_graded_gradients_reach_the_projections():
    att = _make(levels=4)
    x = torch.randn(2, 20, 32, generator=torch.Generator().manual_seed(1))
    att(x).pow(2).sum().backward()
    assert att.q_proj.weight.grad.abs().sum() > 0 and att.k_proj.weight.grad.abs().sum() > 0


def test_graded_codes_cut_ties():
    """The point of graded spikes: finer scores, so the tie rule decides fewer cuts (same weights)."""
    x = torch.randn(4, 40, 32, generator=torch.Generator().manual_seed(2))
    ties = {}
    for levels in (2, 4):
        att = _make(levels=levels, code_bits=16)
        with torch.no_grad():
            att(x)
        ties[levels] = att.layer_stats()["tie_at_cut_frac"]
    assert ties[4] < 0.6 * ties[2], ties


def test_graded_errors():
    for bad in (1, 17, 2.0, True):
        with pytest.raises(ValueError, match="levels"):
            _make(levels=bad)
    with pytest.raises(ValueError, match="neuron='heaviside'"):
        _make(levels=4, neuron="lif")
    with pytest.raises(ValueError, match="grade_step"):
        _make(levels=4, grade_step=0)
    with pytest.raises(ValueError, match="kernel"):   # centred scores of L != 2^P: no expansion identity
        PackedSpikingAttention(_make(levels=3, score="hamming"), method="kernel")
    with pytest.raises(ValueError, match="side"):
        expand_codes(np.zeros((2, 2), np.int64), 4, "value")
    with pytest.raises(ValueError, match=r"counts in \[0, 3\]"):     # a count past the planes: not dropped
        expand_codes(np.array([[0, 4]]), 4, "query")
    with pytest.raises(ValueError, match=r"counts in \[0, 3\]"):
        pack_codes(np.array([[0, 4]]), 4)
    with pytest.raises(ValueError, match=r"counts in \[0, 3\]"):
        pack_codes(np.array([[0.5, 1]]), 4)


@pytest.mark.parametrize("levels", [2, 4, 8, 16])
@pytest.mark.parametrize("code_bits", [1, 63, 64, 65, 129])
def test_expanded_codes_rank_graded_scores(levels, code_bits):
    """For L = 2^P levels the centred score is (L-1)^2 code_bits - 2 hamming(expanded q, expanded k):
    the causal top-k kernel on expanded codes ranks exactly as the graded score does."""
    rng = np.random.default_rng(code_bits * 31 + levels)
    q = rng.integers(0, levels, (7, code_bits))
    k = rng.integers(0, levels, (11, code_bits))
    qe = pack_codes(expand_codes(q, levels, "query"))
    ke = pack_codes(expand_codes(k, levels, "key"))
    assert qe.shape[-1] == hdc.n_words_for((levels - 1) ** 2 * code_bits)
    ham = hdc.hamming_matrix(qe, ke)
    c = levels - 1
    assert np.array_equal(_to_score(ham, code_bits, "hamming", levels), (2 * q - c) @ (2 * k - c).T)


@pytest.mark.parametrize("levels", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("code_bits", [1, 63, 64, 65, 129])
def test_expanded_codes_and_popcount_is_the_graded_overlap(levels, code_bits):
    """popcount(expanded q AND expanded k) = q.k for any number of levels: the kernel's overlap
    metric on expanded codes is the graded overlap score."""
    rng = np.random.default_rng(code_bits * 17 + levels)
    q = rng.integers(0, levels, (7, code_bits))
    k = rng.integers(0, levels, (11, code_bits))
    qe, ke = expand_codes(q, levels, "query"), expand_codes(k, levels, "key")
    assert np.array_equal((qe[:, None, :] & ke[None, :, :]).sum(-1), q @ k.T)


@pytest.mark.parametrize("levels", [2, 3, 4, 8])
def test_inference_codes_equal_training_codes(levels):
    """Under no_grad the neuron compares against all thresholds at once (no autograd Function):
    the codes must equal the training path's, pre-activations exactly on a threshold included."""
    att = _make(levels=levels, grade_step=0.5)
    x = torch.randn(2, 30, 32, generator=torch.Generator().manual_seed(levels))
    pre = att.q_proj(x)
    offsets = torch.tensor([(l - levels / 2) * 0.5 for l in range(1, levels)])
    pre[0, 0, :levels - 1] = att.q_threshold.detach()[:levels - 1] + offsets       # exactly on each threshold
    train, _ = att._fire(pre, att.q_threshold)
    with torch.no_grad():
        infer, _ = att._fire(pre, att.q_threshold)
    assert train.requires_grad and torch.equal(train.detach(), infer)
