"""k-WTA: exactly k winners per allowed row, the tie rule, gradient modes, errors."""
import pytest
import torch

from spiking_attention.kwta import KWTA, causal_mask, kwta, kwta_mask

torch.set_num_threads(1)


def _reference_mask(scores, k, allowed):
    """Plain loop: sort each row by (score desc, index desc), take the first k allowed."""
    out = torch.zeros_like(scores, dtype=torch.bool)
    flat_s = scores.reshape(-1, scores.shape[-1])
    flat_a = allowed.expand_as(scores).reshape(-1, scores.shape[-1])
    flat_o = out.view(-1, scores.shape[-1])
    for r in range(flat_s.shape[0]):
        cand = [j for j in range(flat_s.shape[1]) if flat_a[r, j]]
        n = len(cand)
        kr = min(k, n) if isinstance(k, int) else min(n, max(1, -(-int(k * n * 1e9) // int(1e9))))
        cand.sort(key=lambda j: (-flat_s[r, j].item(), -j))
        for j in cand[:kr]:
            flat_o[r, j] = True
    return out


@pytest.mark.parametrize("k", [1, 2, 3, 8])
def test_exactly_k_winners_fewer_where_fewer_allowed_and_tie_rule(k):
    g = torch.Generator().manual_seed(k)
    # small integer scores: many ties, like popcount scores on short codes
    s = torch.randint(0, 4, (3, 2, 10, 10), generator=g).float()
    allowed = causal_mask(10)
    m = kwta_mask(s, k, allowed)
    counts = m.sum(-1)
    expect = torch.clamp(allowed.sum(-1), max=k)
    assert torch.equal(counts, expect.expand_as(counts))
    assert not (m & ~allowed).any()
    assert torch.equal(m, _reference_mask(s, k, allowed))


def test_tie_goes_to_the_more_recent_key():
    s = torch.tensor([[5.0, 3.0, 3.0, 1.0, 3.0]])
    assert kwta_mask(s, 2).tolist() == [[True, False, False, False, True]]
    assert kwta_mask(s, 3).tolist() == [[True, False, True, False, True]]


def test_fractional_k():
    s = torch.randn(1, 12, 12)
    m = kwta_mask(s, 0.25, causal_mask(12))
    n_allowed = torch.arange(1, 13)
    expect = torch.clamp(torch.ceil(n_allowed * 0.25).long(), min=1)
    assert m.sum(-1)[0].tolist() == expect.tolist()
    assert torch.equal(m, _reference_mask(s, 0.25, causal_mask(12)))


def test_sparse_mode_zero_grad_to_pruned_and_ste_passes_all():
    g = torch.Generator().manual_seed(3)
    s0 = torch.randn(2, 6, 6, generator=g)
    w = torch.randn(2, 6, 6, generator=g)
    win = kwta_mask(s0, 2, causal_mask(6))
    for mode in ("sparse", "ste"):
        s = s0.clone().requires_grad_(True)
        y = kwta(s, 2, mode=mode, causal=True, fill=0.0)
        assert torch.equal(y != 0, win & (s0 != 0))
        (y * w).sum().backward()
        if mode == "sparse":
            assert (s.grad[~win] == 0).all()
            assert torch.allclose(s.grad[win], w[win])
        else:
            assert torch.allclose(s.grad, w)
    # softmax over the winners: gradient reaches every winner, none of the losers
    s = s0.clone().requires_grad_(True)
    att = torch.softmax(kwta(s, 2), -1)
    (att * w).sum().backward()
    assert (s.grad[~win] == 0).all() and (s.grad[win] != 0).sum() > 0.9 * win.sum()


def test_kwta_causal_ignores_future_scores():
    s = torch.randn(1, 8, 8)
    y1 = kwta(s, 3)
    s2 = s.clone()
    s2[0, 2, 5:] = 100.0  # future keys of query 2
    y2 = kwta(s2, 3)
    assert torch.equal(y1[0, 2], y2[0, 2])


def test_bad_k_raises_value_error():
    s = torch.randn(4, 4)
    for bad in (0, -1, 1.5, 0.0, True):
        with pytest.raises(ValueError, match="k"):
            kwta_mask(s, bad)
    with pytest.raises(ValueError, match="k"):
        KWTA(0)
    with pytest.raises(ValueError, match="mode"):
        kwta(s, 1, mode="dense")
    mod = KWTA(2)
    assert torch.equal(torch.isfinite(mod(s)), kwta_mask(s, 2, causal_mask(4)))


@pytest.mark.parametrize("k", [1, 2, 3, 7, 20, 40])
def test_integer_fast_path_equals_the_general_rule(k):
    """kwta_mask(integer=True) (one top-k over unique int64 keys) == the cumulative-count rule,
    on integer scores with many ties, with and without a mask, rows with fewer than k keys."""
    g = torch.Generator().manual_seed(k)
    s = torch.randint(-3, 4, (3, 5, 20, 20), generator=g).float()
    for allowed in (None, causal_mask(20), torch.rand(20, 20, generator=g) < 0.4):
        ref = kwta_mask(s, k, allowed)
        assert torch.equal(kwta_mask(s, k, allowed, integer=True), ref)
