"""Spiking k-WTA attention: shapes, causality, k winners, gradients to Q/K, stats, errors."""
import pytest
import torch

from spiking_attention.attention import SpikingKWTAAttention, TopKSoftmaxAttention, brain_prior_mask
from spiking_attention.kwta import causal_mask

torch.set_num_threads(1)


def _make(**kw):
    torch.manual_seed(0)
    base = dict(d_model=32, n_head=4, code_bits=8, k=3, max_seq_len=16)
    base.update(kw)
    return SpikingKWTAAttention(base.pop("d_model"), base.pop("n_head"), base.pop("code_bits"), base.pop("k"),
                                **base)


CONFIGS = [dict(), dict(score="overlap"), dict(neuron="lif"), dict(code_bits=70, surrogate="sigmoid"),
           dict(prior_window=4, prior_random_frac=0.3, prior_seed=5), dict(k=0.25), dict(output="uniform_ste")]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_shapes_and_causality(cfg):
    att = _make(**cfg)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 12, 32, generator=g)
    y = att(x)
    assert y.shape == (2, 12, 32)
    for t in (0, 5, 11):
        x2 = x.clone()
        x2[:, t:] = torch.randn(2, 12 - t, 32, generator=g)  # change the future from t on
        y2 = att(x2)
        assert torch.equal(y2[:, :t], y[:, :t])
        assert not torch.equal(y2[:, t:], y[:, t:])


@pytest.mark.parametrize("cfg", CONFIGS[:5])
def test_exactly_k_winners_per_row_fewer_where_fewer_allowed(cfg):
    att = _make(**cfg)
    att.record = True
    att(torch.randn(3, 16, 32))
    a = att.recorded()["attn"]  # (B, nh, T, T)
    allowed = brain_prior_mask(16, 16, att.prior_window, att.prior_random_frac, att.prior_seed)
    assert not ((a > 0) & ~allowed).any()
    n_attended = (a > 0).sum(-1)
    expect = torch.clamp(allowed.sum(-1), max=att.k).expand_as(n_attended)
    # softmax weights are > 0 for every winner (scores are bounded), so this counts winners
    assert torch.equal(n_attended, expect)
    st = att.layer_stats()
    assert st["attended_per_query"] == pytest.approx(expect.float().mean().item())
    assert st["attn_density"] == pytest.approx(expect.sum().item() / (3 * 4 * 16 * 17 / 2))
    assert 0 <= st["tie_at_cut_frac"] <= 1
    for key in ("q_firing_rate", "k_firing_rate", "q_silent_frac", "k_silent_frac"):
        assert 0.0 <= st[key] <= 1.0
    assert st["q_firing_rate"] == pytest.approx(att.recorded()["q_spikes"].mean().item())


def test_codes_are_binary_and_scores_match_popcounts():
    for score in ("hamming", "overlap"):
        att = _make(score=score, code_bits=13)
        q, k, v, _ = att.codes(torch.randn(2, 7, 32))
        assert set(q.unique().tolist()) <= {0.0, 1.0} and set(k.unique().tolist()) <= {0.0, 1.0}
        s = att.integer_scores(q, k)
        qb, kb = q.bool(), k.bool()
        ham = (qb[..., :, None, :] ^ kb[..., None, :, :]).sum(-1)
        both = (qb[..., :, None, :] & kb[..., None, :, :]).sum(-1)
        ref = 13 - 2 * ham if score == "hamming" else both
        assert torch.equal(s, ref.float())


@pytest.mark.parametrize("cfg", [dict(), dict(score="overlap"), dict(neuron="lif")])
def test_gradient_reaches_query_key_projections_and_thresholds(cfg):
    att = _make(**cfg)
    y = att(torch.randn(2, 12, 32))
    (y ** 2).sum().backward()
    for p in (att.q_proj.weight, att.k_proj.weight, att.q_threshold, att.k_threshold, att.log_temp,
              att.v_proj.weight, att.c_proj.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_parameter_count_matches_dense_attention():
    C, nh = 64, 4
    att = SpikingKWTAAttention(C, nh, C // nh, 8, max_seq_len=32)
    n_weights = sum(p.numel() for n, p in att.named_parameters() if n.endswith("weight"))
    assert n_weights == 4 * C * C
    n_all = sum(p.numel() for p in att.parameters())
    assert n_all == 4 * C * C + 2 * C + nh
    topk = TopKSoftmaxAttention(C, nh, 8, max_seq_len=32)
    assert sum(p.numel() for p in topk.parameters()) == 4 * C * C


def test_prior_mask_is_blockwise_consistent_and_seeded():
    full = brain_prior_mask(40, 40, 8, 0.2, 3)
    assert torch.equal(brain_prior_mask(1, 40, 8, 0.2, 3), full[-1:])
    assert torch.equal(brain_prior_mask(10, 25, 8, 0.2, 3), full[15:25, :25])
    assert not torch.equal(full, brain_prior_mask(40, 40, 8, 0.2, 4))
    assert not (full & ~causal_mask(40)).any()
    i, j = torch.meshgrid(torch.arange(40), torch.arange(40), indexing="ij")
    assert full[(i - j >= 0) & (i - j < 8)].all()
    far = (i - j) >= 8
    frac = full[far].float().mean().item()
    assert 0.12 < frac < 0.28  # about the requested 20% of long-range links
    assert torch.equal(brain_prior_mask(5, 5, None), causal_mask(5))


def test_topk_softmax_attention_k_and_causality():
    torch.manual_seed(0)
    att = TopKSoftmaxAttention(32, 4, 3, max_seq_len=16)
    att.record = True
    x = torch.randn(2, 10, 32)
    y = att(x)
    assert ((att.recorded()["attn"] > 0).sum(-1) == torch.clamp(torch.arange(1, 11), max=3)).all()
    x2 = x.clone()
    x2[:, 6:] += 1
    assert torch.equal(att(x2)[:, :6], y[:, :6])


def test_bad_configs_raise_value_error_naming_the_problem():
    with pytest.raises(ValueError, match="k"):
        _make(k=0)
    with pytest.raises(ValueError, match="code_bits"):
        _make(code_bits=0)
    with pytest.raises(ValueError, match="divisible"):
        _make(d_model=30)
    with pytest.raises(ValueError, match="score"):
        _make(score="cosine")
    with pytest.raises(ValueError, match="neuron"):
        _make(neuron="izhikevich")
    with pytest.raises(ValueError, match="surrogate"):
        _make(surrogate="relu")
    with pytest.raises(ValueError, match="prior_window"):
        _make(prior_window=0)
    with pytest.raises(ValueError, match="prior_random_frac"):
        _make(prior_window=4, prior_random_frac=1.5)
    att = _make()
    with pytest.raises(ValueError, match="max_seq_len"):
        att(torch.randn(1, 17, 32))
    with pytest.raises(ValueError, match="shape"):
        att(torch.randn(1, 5, 31))
    with pytest.raises(ValueError, match="k"):
        TopKSoftmaxAttention(32, 4, 0, max_seq_len=8)


def test_older_tie_rule_ablation_differs_only_in_ties():
    att = _make(code_bits=4, k=2)  # 4-bit codes: many ties at the cut
    att.record = True
    x = torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(2))
    att(x)
    recent = att.recorded()["attn"] > 0
    att.tie_rule = "older"
    att(x)
    older = att.recorded()["attn"] > 0
    assert torch.equal(recent.sum(-1), older.sum(-1))  # still exactly k per row
    assert not torch.equal(recent, older)
    # where they differ, the recent rule picked the later key
    d = recent != older
    j = torch.arange(16)
    assert (j[None, None, None, :].expand_as(d)[d & recent].float().mean()
            > j[None, None, None, :].expand_as(d)[d & older].float().mean())
    att.tie_rule = "newest"
    with pytest.raises(ValueError, match="tie_rule"):
        att(x)


def test_wider_codes_at_equal_parameters():
    """proj_dim < code_bits: the learned projection keeps its width (the dense twin's weights);
    a fixed random map (a buffer, saved with the weights) widens the codes, so scores take more
    values; only the per-bit thresholds grow."""
    torch.manual_seed(0)
    narrow = SpikingKWTAAttention(32, 4, 8, 3, max_seq_len=20)
    wide = SpikingKWTAAttention(32, 4, 64, 3, max_seq_len=20, proj_dim=8)
    n_params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n_params(wide) - n_params(narrow) == 2 * 4 * (64 - 8)          # thresholds only
    assert "expand" in wide.state_dict() and not wide.expand.requires_grad
    x = torch.randn(2, 20, 32)
    q, k, _, _ = wide.codes(x)
    assert q.shape == (2, 4, 20, 64)
    s = wide.integer_scores(q, k)
    assert len(torch.unique(s)) > len(torch.unique(narrow.integer_scores(*narrow.codes(x)[:2])))
    y = wide(x)
    y.sum().backward()
    assert wide.q_proj.weight.grad.abs().sum() > 0                          # gradients pass the map
    with pytest.raises(ValueError, match="proj_dim"):
        SpikingKWTAAttention(32, 4, 8, 3, max_seq_len=20, proj_dim=9)


def test_firing_rate_target_lowers_the_rate():
    """fire_target adds (rate - target)^2 to the loss in training; a few steps on the target alone
    pull the codes' firing rate from ~0.5 toward it (and the term is absent in eval)."""
    torch.manual_seed(0)
    att = SpikingKWTAAttention(32, 4, 16, 3, max_seq_len=20, fire_target=0.1, fire_weight=1.0)
    x = torch.randn(4, 20, 32)
    att(x)
    before = att.layer_stats()["q_firing_rate"]
    opt = torch.optim.Adam(att.parameters(), lr=0.05)
    for _ in range(60):
        att(x)
        opt.zero_grad()
        att.aux_loss.backward()
        opt.step()
    att.eval()
    att(x)
    assert att.aux_loss is None
    after = att.layer_stats()["q_firing_rate"]
    assert before > 0.35 and after < 0.15, (before, after)
    with pytest.raises(ValueError, match="fire_target"):
        SpikingKWTAAttention(32, 4, 16, 3, max_seq_len=20, fire_target=1.5)
