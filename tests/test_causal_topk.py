"""hdc.causal_topk: every backend and C ISA level equals the NumPy reference, bit for bit.

The reference (hdc/backends/numpy_ref.py) is itself checked against a brute force written
from the definition: sort the allowed keys of each query by (score, then the larger j).
Widths pin the word boundaries (1 .. 513 bits) and one past 64 KiB per vector; short codes
(2-8 bits) make most scores tie, so the recency rule decides most of the order.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hdc
from hdc.backends import BackendUnavailable, load_backend

from conftest import KERNEL_TARGETS

BOUNDARY_DIMS = [1, 63, 64, 65, 127, 128, 129, 511, 512, 513]
MASKS = [  # (window, skip_recent): plain causal, local window, far keys only, both, own key excluded
    (None, 0), (1, 0), (4, 0), (None, 3), (8, 2), (5, 5), (None, 1), (3, 7)]


def naive(Q, K, k, *, window=None, skip_recent=0, metric="hamming", q_start=None):
    """The definition, as plainly as it can be written: bools, Python sort, padding."""
    m, n = Q.shape[0], K.shape[0]
    q_start = n - m if q_start is None else q_start
    dim = 64 * Q.shape[1]
    qb, kb = hdc.unpack_bits(Q, dim), hdc.unpack_bits(K, dim)
    scores = np.full((m, k), -1, np.int32)
    idx = np.full((m, k), -1, np.int64)
    for i in range(m):
        p = q_start + i
        lo = 0 if window is None else max(0, p - window + 1)
        cand = []
        for j in range(lo, p - skip_recent + 1):
            if metric == "hamming":
                s = int((qb[i] != kb[j]).sum())
                cand.append(((s, -j), s, j))
            else:
                s = int((qb[i] & kb[j]).sum())
                cand.append(((-s, -j), s, j))
        cand.sort()
        for t, (_, s, j) in enumerate(cand[:k]):
            scores[i, t], idx[i, t] = s, j
    return scores, idx


def codes(seed, n, dim):
    return hdc.random(n, dim, seed=seed)


def reference(Q, K, k, **kw):
    with hdc.use_backend("numpy"):
        return hdc.causal_topk(Q, K, k, **kw)


def c_count(kernel):
    """The C call counter at the pinned level (None for the other backends)."""
    if getattr(kernel, "NAME", None) != "c":
        return None
    return kernel.call_count("causal_topk", kernel.get_isa())


def check(kernel, Q, K, k, **kw):
    """The backend in use equals the reference; a C call is proven to run at its level."""
    before = c_count(kernel)
    got = hdc.causal_topk(Q, K, k, **kw)
    if before is not None:
        assert c_count(kernel) == before + 1, "the C kernel did not run at the pinned ISA level"
    want = reference(Q, K, k, **kw)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[0].dtype == np.int32 and got[1].dtype == np.int64
    assert got[0].shape == got[1].shape == (Q.shape[0], k)
    return got


# ---------------------------------------------------------------- the reference is the definition
@pytest.mark.parametrize("dim", [2, 3, 5, 8, 65])
@pytest.mark.parametrize("metric", ["hamming", "overlap"])
def test_reference_equals_brute_force(dim, metric):
    K = codes(dim, 23, dim)
    for window, skip in MASKS:
        for k, m in [(1, 23), (3, 23), (30, 23), (4, 1), (5, 7)]:
            Q = codes(dim + 1, m, dim)
            for q_start in {None, 0, 23 - m}:
                kw = dict(window=window, skip_recent=skip, metric=metric, q_start=q_start)
                want = naive(Q, K, k, **kw)
                got = reference(Q, K, k, **kw)
                np.testing.assert_array_equal(got[0], want[0])
                np.testing.assert_array_equal(got[1], want[1])


def test_tie_rule_identical_keys(kernel):
    """All keys equal: every score ties, so each row is its allowed keys newest first."""
    T, k = 37, 6
    K = np.repeat(codes(1, 1, 100), T, axis=0)
    Q = codes(2, T, 100)
    for metric in ("hamming", "overlap"):
        s, idx = check(kernel, Q, K, k, metric=metric)
        for i in range(T):
            want = np.arange(i, max(-1, i - k), -1)
            np.testing.assert_array_equal(idx[i, :want.size], want)
            assert np.all(idx[i, want.size:] == -1) and np.all(s[i, want.size:] == -1)
            assert np.all(s[i, :want.size] == s[i, 0])


def test_tie_rule_brute_force(kernel):
    """2-bit codes: four possible keys, ties everywhere; the brute force decides."""
    rng = np.random.default_rng(7)
    K = rng.integers(0, 4, size=(60, 1), dtype=np.uint64)
    Q = rng.integers(0, 4, size=(60, 1), dtype=np.uint64)
    for metric in ("hamming", "overlap"):
        for window, skip in MASKS:
            got = check(kernel, Q, K, 9, window=window, skip_recent=skip, metric=metric)
            want = naive(Q, K, 9, window=window, skip_recent=skip, metric=metric)
            np.testing.assert_array_equal(got[1], want[1])
            np.testing.assert_array_equal(got[0], want[0])


# ---------------------------------------------------------------- every backend x ISA == reference
@pytest.mark.parametrize("dim", BOUNDARY_DIMS)
def test_word_boundaries(kernel, dim):
    T = 41
    K, Q = codes(dim, T, dim), codes(dim + 7, T, dim)
    for metric in ("hamming", "overlap"):
        for window, skip in MASKS[:5]:
            check(kernel, Q, K, 5, window=window, skip_recent=skip, metric=metric)


@pytest.mark.parametrize("dim", [2, 3, 4, 5, 6, 7, 8])
def test_short_codes_many_ties(kernel, dim):
    T = 70  # > 32 + 16: full SIMD blocks plus a tail
    K, Q = codes(dim, T, dim), codes(dim + 100, T, dim)
    for metric in ("hamming", "overlap"):
        for window, skip in MASKS:
            for k in (1, 3, 8, 33):
                check(kernel, Q, K, k, window=window, skip_recent=skip, metric=metric)


def test_k_at_least_allowed_keys_pads(kernel):
    T, dim = 20, 65
    K, Q = codes(3, T, dim), codes(4, T, dim)
    for k in (T, T + 1, 3 * T):
        s, idx = check(kernel, Q, K, k)
        for i in range(T):
            assert np.all(idx[i, : i + 1] >= 0) and np.all(idx[i, i + 1:] == -1)
            assert np.all(s[i, i + 1:] == -1)
            assert sorted(idx[i, : i + 1]) == list(range(i + 1))
    # skip_recent beyond the position: nothing allowed, the whole row is padding
    s, idx = check(kernel, Q, K, 4, skip_recent=T)
    assert np.all(s == -1) and np.all(idx == -1)


def test_one_position_and_decode(kernel):
    dim = 129
    K1, Q1 = codes(5, 1, dim), codes(6, 1, dim)
    s, idx = check(kernel, Q1, K1, 3)  # T = 1: one key, two slots of padding
    assert idx[0].tolist() == [0, -1, -1]
    check(kernel, Q1, K1, 1, skip_recent=1)
    T = 50
    K, Q = codes(7, T, dim), codes(8, T, dim)
    for metric in ("hamming", "overlap"):
        for window, skip in MASKS:
            kw = dict(window=window, skip_recent=skip, metric=metric)
            full = check(kernel, Q, K, 6, **kw)
            step = check(kernel, Q[-1:], K, 6, **kw)  # one decode step: the last position
            np.testing.assert_array_equal(step[1], full[1][-1:])
            mid = check(kernel, Q[10:17], K, 6, q_start=10, **kw)  # m < n inside the sequence
            np.testing.assert_array_equal(mid[1], full[1][10:17])
            part = check(kernel, Q[10:17], K[:17], 6, **kw)  # the default q_start = n - m
            np.testing.assert_array_equal(part[1], full[1][10:17])


def test_few_queries_over_multiword_keys(kernel):
    """Decoding: up to 2 queries over keys of several words are scored in place (C: the
    level's matrix kernel, no transposition of the keys); 3 queries take the scan. Both equal
    the reference, with many ties (repeated keys), windows, and k on both selection paths."""
    rng = np.random.default_rng(4)
    for dim in (65, 576, 1000):
        base = codes(dim, 40, dim)
        K = base[rng.integers(0, 40, 700)]            # 700 keys, each repeated: ties everywhere
        Q = K[rng.integers(0, 700, 3)] ^ codes(dim + 7, 3, dim) & codes(dim + 8, 3, dim)
        for m in (1, 2, 3):
            for k in (1, 8, 200):
                for window, skip in [(None, 0), (32, 0), (None, 32), (300, 5)]:
                    check(kernel, Q[:m], K, k, window=window, skip_recent=skip)


def test_large_k_sorted_path(kernel):
    """k past 128 takes the sort path in C and Numba instead of the running list."""
    for dim, T, k in [(3, 300, 200), (130, 260, 129), (700, 140, 500)]:
        K, Q = codes(dim, T, dim), codes(dim + 1, T, dim)
        for metric in ("hamming", "overlap"):
            check(kernel, Q, K, k, metric=metric)
            check(kernel, Q, K, k, metric=metric, window=150, skip_recent=3)


def test_vectors_past_64_kib(kernel):
    dim = 524_288 + 4_099
    K, Q = codes(1, 6, dim), codes(2, 6, dim)
    K[3] = Q[5]  # an exact match: distance 0
    s, idx = check(kernel, Q, K, 3, metric="hamming")
    assert idx[5, 0] == 3 and s[5, 0] == 0
    check(kernel, Q, K, 2, metric="overlap", window=3)


def test_zero_words(kernel):
    """Arrays of 0 words (nothing to compare): every score 0, ties all the way."""
    Q, K = np.zeros((3, 0), np.uint64), np.zeros((5, 0), np.uint64)
    for metric in ("hamming", "overlap"):
        s, idx = check(kernel, Q, K, 4, window=3, metric=metric)
        assert idx.tolist() == [[2, 1, 0, -1], [3, 2, 1, -1], [4, 3, 2, -1]]


@settings(max_examples=25, deadline=None)
@given(dim=st.one_of(st.sampled_from([1, 2, 3, 5, 8] + BOUNDARY_DIMS), st.integers(1, 300)),
       n=st.integers(1, 90), data=st.data())
def test_hypothesis_all_backends(dim, n, data):
    m = data.draw(st.integers(0, n), label="m")
    q_start = data.draw(st.one_of(st.none(), st.integers(0, n - m)), label="q_start")
    k = data.draw(st.integers(1, n + 3), label="k")
    window = data.draw(st.one_of(st.none(), st.integers(1, n + 2)), label="window")
    skip = data.draw(st.integers(0, n + 1), label="skip_recent")
    metric = data.draw(st.sampled_from(["hamming", "overlap"]), label="metric")
    threads = data.draw(st.integers(1, 3), label="threads")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    K, Q = codes(seed, n, dim), codes(seed + 1, m, dim)
    kw = dict(window=window, skip_recent=skip, metric=metric, q_start=q_start)
    want = reference(Q, K, k, **kw)
    for name, isa in KERNEL_TARGETS:
        with hdc.use_backend(name) as mod:
            if isa is not None:
                with mod.use_isa(isa):
                    got = hdc.causal_topk(Q, K, k, threads=threads, **kw)
            else:
                got = hdc.causal_topk(Q, K, k, threads=threads, **kw)
        np.testing.assert_array_equal(got[0], want[0], err_msg=f"{name} {isa}")
        np.testing.assert_array_equal(got[1], want[1], err_msg=f"{name} {isa}")


# ---------------------------------------------------------------- proof that C ran, threads
def test_c_runs_at_every_isa_level():
    try:
        C = load_backend("c")
    except BackendUnavailable as exc:
        pytest.skip(f"C backend not built: {exc}")
    K = codes(1, 100, 40)
    with hdc.use_backend("c"):
        for isa in C.isa_levels():
            with C.use_isa(isa):
                before = {lv: C.call_count("causal_topk", lv) for lv in C.ISA_NAMES}
                hdc.causal_topk(K, K, 4)
                after = {lv: C.call_count("causal_topk", lv) for lv in C.ISA_NAMES}
            assert {lv: after[lv] - before[lv] for lv in C.ISA_NAMES} == {
                lv: int(lv == isa) for lv in C.ISA_NAMES}


@pytest.mark.parametrize("name", ["c", "numba"])
def test_threads_give_identical_results(name):
    try:
        mod = load_backend(name)
    except BackendUnavailable as exc:
        pytest.skip(f"{name} backend unavailable: {exc}")
    levels = mod.isa_levels() if name == "c" else [None]
    K, Q = codes(11, 3000, 24), codes(12, 3000, 24)  # 24-bit codes: many ties across threads
    with hdc.use_backend(name):
        for isa in levels:
            ctx = mod.use_isa(isa) if isa else contextlib.nullcontext()
            with ctx:
                for kw in ({}, {"window": 700, "skip_recent": 64, "metric": "overlap"}):
                    one = hdc.causal_topk(Q, K, 8, threads=1, **kw)
                    for t in (2, 3, 7):
                        many = hdc.causal_topk(Q, K, 8, threads=t, **kw)
                        np.testing.assert_array_equal(many[0], one[0])
                        np.testing.assert_array_equal(many[1], one[1])
    want = reference(Q[-300:], K, 8)
    with hdc.use_backend(name):
        got = hdc.causal_topk(Q[-300:], K, 8, threads=3)
    np.testing.assert_array_equal(got[1], want[1])


# ---------------------------------------------------------------- the model's rule agrees
@pytest.mark.parametrize("code_bits", [8, 64, 100])
@pytest.mark.parametrize("window", [None, 1, 16])
@pytest.mark.parametrize("score", ["hamming", "overlap"])
def test_matches_the_models_kwta_rule(kernel, code_bits, window, score):
    """The winners equal spiking_attention's k-WTA mask (kwta_mask, the training path's rule:
    k largest integer scores among the allowed keys, ties to the more recent key) on the
    unpacked codes, for the plain causal mask and a pure window."""
    torch = pytest.importorskip("torch")
    from spiking_attention.attention import brain_prior_mask
    from spiking_attention.kwta import kwta_mask
    T, k = 90, 7
    rng = np.random.default_rng(code_bits)
    q, kb = rng.random((T, code_bits)) < 0.5, rng.random((T, code_bits)) < 0.5
    Q, K = hdc.pack_bits(q), hdc.pack_bits(kb)
    qt, kt = torch.from_numpy(q).float(), torch.from_numpy(kb).float()
    scores = qt @ kt.T if score == "overlap" else (2 * qt - 1) @ (2 * kt - 1).T     # (T, T) integers
    want = kwta_mask(scores, k, brain_prior_mask(T, T, window)).numpy()
    s, idx = check(kernel, Q, K, k, window=window, metric=score)
    got = np.zeros((T, T), bool)
    rows = np.broadcast_to(np.arange(T)[:, None], idx.shape)
    got[rows[idx >= 0], idx[idx >= 0]] = True
    np.testing.assert_array_equal(got, want)
    model_score = scores.numpy().astype(np.int64)[rows[idx >= 0], idx[idx >= 0]]
    raw = s[idx >= 0].astype(np.int64)
    np.testing.assert_array_equal(raw if score == "overlap" else code_bits - 2 * raw, model_score)


# ---------------------------------------------------------------- errors
def test_errors():
    X = codes(1, 5, 70)
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        hdc.causal_topk(X, X, 0)
    with pytest.raises(TypeError, match="k must be an int"):
        hdc.causal_topk(X, X, 2.0)
    with pytest.raises(ValueError, match="window must be >= 1.*got 0"):
        hdc.causal_topk(X, X, 2, window=0)
    with pytest.raises(TypeError, match="window must be an int"):
        hdc.causal_topk(X, X, 2, window=1.5)
    with pytest.raises(ValueError, match="skip_recent must be >= 0, got -1"):
        hdc.causal_topk(X, X, 2, skip_recent=-1)
    with pytest.raises(ValueError, match=r"metric must be one of \('hamming', 'overlap'\), got 'dot'"):
        hdc.causal_topk(X, X, 2, metric="dot")
    with pytest.raises(ValueError, match="q_start=4 puts the 2 queries at positions 4..5"):
        hdc.causal_topk(X[:2], X, 2, q_start=4)
    with pytest.raises(ValueError, match="q_start=-1"):
        hdc.causal_topk(X[:2], X, 2, q_start=-1)
    with pytest.raises(ValueError, match="m <= n"):
        hdc.causal_topk(X, X[:3], 2)
    with pytest.raises(ValueError, match="word counts differ"):
        hdc.causal_topk(X, codes(1, 5, 200), 2)
    with pytest.raises(ValueError, match="2-D"):
        hdc.causal_topk(X[0], X, 2)
    with pytest.raises(TypeError, match="K must have dtype uint64"):
        hdc.causal_topk(X, X.astype(np.int64), 2)
    with pytest.raises(ValueError, match="Q must be C-contiguous"):
        hdc.causal_topk(np.asfortranarray(codes(1, 5, 200)), codes(1, 5, 200), 2)
    s, idx = hdc.causal_topk(X[:0], X, 3)  # no queries: empty outputs
    assert s.shape == idx.shape == (0, 3)


def test_c_wrapper_rejects_bad_arguments():
    try:
        C = load_backend("c")
    except BackendUnavailable as exc:
        pytest.skip(f"C backend not built: {exc}")
    X = codes(1, 5, 70)
    s, i = np.empty((5, 2), np.int32), np.empty((5, 2), np.int64)
    with pytest.raises(ValueError, match="q_start"):
        C.causal_topk(X, X, 2, 1, None, 0, False, s, i, 1)
    with pytest.raises(ValueError, match="out_score and out_idx must have shape"):
        C.causal_topk(X, X, 3, 0, None, 0, False, s, i, 1)
    with pytest.raises(TypeError, match="out_score must have dtype int32"):
        C.causal_topk(X, X, 2, 0, None, 0, False, i, i, 1)
