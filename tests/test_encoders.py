"""Encoders: level/record/n-gram/set/graph properties, compiled kernels == NumPy references."""
import numpy as np
import pytest

import hdc
from hdc import _ngram
from hdc import encoders as E

DIMS = [1, 63, 64, 65, 130, 1000]


def _ham(a, b):
    return int(np.bitwise_count(a ^ b).sum())


def _pads_zero(x, dim):
    return not np.any(x[..., -1] & ~hdc.pad_mask(dim))


# ---------------------------------------------------------------- levels
@pytest.mark.parametrize("dim", [64, 1000, 10_000])
def test_linear_levels_distance_is_linear_in_level_difference(dim):
    n = 11
    L = E.level_vectors(n, dim, kind="linear", seed=3)
    assert L.shape == (n, hdc.n_words_for(dim)) and _pads_zero(L, dim)
    for i in range(n):
        for j in range(n):
            expect = abs(round(i * (dim // 2) / (n - 1)) - round(j * (dim // 2) / (n - 1)))
            assert _ham(L[i], L[j]) == expect
    # the ends are orthogonal, neighbours close
    assert _ham(L[0], L[-1]) == dim // 2


def test_thermometer_levels_run_from_zero_to_all_ones():
    dim, n = 1000, 5
    L = E.level_vectors(n, dim, kind="thermometer", seed=0)
    pc = hdc.popcount(L)
    assert pc.tolist() == [0, 250, 500, 750, 1000]
    # nested: each level contains the previous one
    for i in range(n - 1):
        assert np.array_equal(L[i] & L[i + 1], L[i])


def test_circular_levels_wrap_around():
    dim, n = 2000, 8
    L = E.level_vectors(n, dim, kind="circular", seed=1)
    d = np.array([[_ham(L[i], L[j]) for j in range(n)] for i in range(n)])
    circ = np.array([[min(abs(i - j), n - abs(i - j)) for j in range(n)] for i in range(n)])
    # distance is proportional to the circular distance: dim/n per step
    assert np.array_equal(d, circ * (dim // n))
    assert d[0, n - 1] == d[0, 1] < d[0, n // 2]


@pytest.mark.parametrize("kind", ["linear", "thermometer", "circular"])
def test_level_encoder_similar_values_give_similar_vectors_monotone(kind):
    dim = 4096
    enc = E.LevelEncoder(dim=dim, n_levels=33, kind=kind, low=0.0, high=1.0, seed=2).fit([[0.0], [1.0]])
    xs = np.linspace(0, 0.5, 17)[:, None]
    H = enc.transform(xs)
    d = [_ham(H[0], h) for h in H]
    assert d[0] == 0 and d[1] < dim * 0.05
    assert all(d[i] <= d[i + 1] for i in range(len(d) - 1)), d  # monotone in the distance
    assert d[-1] > dim * 0.2


def test_levels_are_seeded_and_reproducible():
    a = E.level_vectors(8, 500, seed=7)
    assert np.array_equal(a, E.level_vectors(8, 500, seed=7))
    assert not np.array_equal(a, E.level_vectors(8, 500, seed=8))


def test_level_bad_input():
    with pytest.raises(ValueError, match="n_levels"):
        E.level_vectors(1, 100)
    with pytest.raises(ValueError, match="kind"):
        E.level_vectors(4, 100, kind="log")
    with pytest.raises(ValueError, match="NaN"):
        E.LevelEncoder(dim=64).fit([[0.0], [np.nan]])
    with pytest.raises(ValueError, match="NaN"):
        E.value_to_level([0.5, np.nan], 0, 1, 4)


# ---------------------------------------------------------------- records
def test_record_fields_recoverable_by_unbinding():
    dim = 10_000
    keys = E.item_memory([f"k{i}" for i in range(7)], dim, seed=1)
    vals = E.item_memory([f"v{i}" for i in range(50)], dim, seed=2)
    rng = np.random.default_rng(0)
    chosen = rng.choice(50, 7, replace=False)
    K = keys.vectors.copy()
    V = vals.get_many([f"v{i}" for i in chosen])
    r = E.record(K, V, dim)
    for f in range(7):
        noisy = E.unbind(r, K[f])
        sym, dist = vals.cleanup(noisy)
        assert sym[0] == f"v{chosen[f]}"
        # a 7-field majority leaves about 1/2 - 0.156 = 34% of bits wrong; chance is 50%
        assert dist[0] < 0.40 * dim
        others = [_ham(noisy, vals[f"v{j}"]) for j in range(50) if j != chosen[f]]
        assert min(others) > 0.47 * dim


def test_record_encoder_kernel_matches_reference():
    rng = np.random.default_rng(5)
    for dim in DIMS:
        for F in (1, 2, 3, 4, 5, 8, 13):
            keys = hdc.random(F, dim, seed=3)
            lv = hdc.random(7, dim, seed=4)
            idx = rng.integers(0, 7, size=(9, F)).astype(np.int32)
            tie = hdc.tie_vector(dim)
            got = _ngram.record_majority(keys, lv, idx, tie)
            assert np.array_equal(got, _ngram.record_majority_ref(keys, lv, idx, tie, dim)), (dim, F)
            assert _pads_zero(got, dim)


def test_record_encoder_matches_functional_record():
    X = np.array([[0.0, 1.0, 0.5], [1.0, 0.0, 0.25]])
    enc = E.RecordEncoder(dim=500, n_levels=5, seed=4).fit(X)
    H = enc.transform(X)
    idx = E.value_to_level(X, enc.low_, enc.high_, 5)
    for i in range(2):
        assert np.array_equal(H[i], E.record(enc.keys_, np.ascontiguousarray(enc.levels_[idx[i]]), 500))


def test_record_encoder_bad_input():
    enc = E.RecordEncoder(dim=128).fit(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        enc.transform(np.array([[0.0, np.nan, 1.0]]))
    with pytest.raises(ValueError, match="features"):
        enc.transform(np.zeros((1, 4)))


# ---------------------------------------------------------------- n-grams
ALPHA = "abcdefghijklmnopqrstuvwxyz "


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_ngram_kernels_match_reference(dim, n):
    rng = np.random.default_rng(dim * 10 + n)
    table = _ngram.gram_table(hdc.random(6, dim, seed=1), n, dim)
    lens = rng.integers(1, 40, size=25)
    lens[:3] = [1, n, n + 1]
    codes = rng.integers(0, 6, size=lens.sum()).astype(np.int32)
    offs = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    tie = hdc.tie_vector(dim)
    got = _ngram.ngram_majority(codes, offs, table, tie, dim)
    assert np.array_equal(got, _ngram.ngram_majority_ref(codes, offs, table, tie, dim))
    assert _pads_zero(got, dim)
    groups = rng.integers(0, 3, size=25)
    c, t = _ngram.ngram_counts(codes, offs, table, groups, 3, dim)
    c2, t2 = _ngram.ngram_counts_ref(codes, offs, table, groups, 3, dim)
    assert np.array_equal(c, c2) and np.array_equal(t, t2)


def test_ngram_counts_flush_path_for_long_texts():
    """More than 4,095 grams per group forces the bit-sliced counter to flush."""
    dim, n = 200, 3
    rng = np.random.default_rng(1)
    table = _ngram.gram_table(hdc.random(5, dim, seed=2), n, dim)
    codes = rng.integers(0, 5, size=9000).astype(np.int32)
    offs = np.array([0, 5000, 9000], np.int64)
    c, t = _ngram.ngram_counts(codes, offs, table, np.array([0, 0]), 1, dim)
    c2, t2 = _ngram.ngram_counts_ref(codes, offs, table, np.array([0, 0]), 1, dim)
    assert np.array_equal(c, c2) and t[0] == t2[0] == 8996


def test_ngram_encoder_equals_plain_functional_version():
    enc = E.NGramEncoder(n=3, dim=777, alphabet=ALPHA, seed=4)
    texts = ["hello world", "ab", "x", "the quick brown fox"]
    H = enc.transform(texts)
    for t, h in zip(texts, H):
        assert np.array_equal(h, E.ngram(t, enc.memory_, 3))


def test_ngram_is_order_sensitive():
    dim = 10_000
    enc = E.NGramEncoder(n=3, dim=dim, alphabet=ALPHA, seed=0)
    a, b, c = enc.transform(["the cat sat on the mat", "tam eht no tas tac eht", "the cat sat on the mat"])
    assert np.array_equal(a, c)
    assert _ham(a, b) > 0.4 * dim  # reversed text: unrelated grams
    one = E.NGramEncoder(n=1, dim=dim, alphabet=ALPHA, seed=0)
    x, y = one.transform(["the cat sat on the mat", "tam eht no tas tac eht"])
    assert np.array_equal(x, y)  # unigrams are a bag of letters: order-free by design


def test_ngram_similar_texts_are_close():
    dim = 10_000
    enc = E.NGramEncoder(n=3, dim=dim, alphabet=ALPHA, seed=0)
    a, b, c = enc.transform(["the european parliament adopted the resolution today",
                             "the european parliament adopted a resolution today",
                             "zwolf boxkampfer jagen viktor quer uber den grossen sylter deich"])
    assert _ham(a, b) < 0.25 * dim < 0.4 * dim < _ham(a, c)


def test_ngram_encoder_seeded():
    t = ["reproducible text"]
    a = E.NGramEncoder(n=3, dim=500, alphabet=ALPHA, seed=1).transform(t)
    assert np.array_equal(a, E.NGramEncoder(n=3, dim=500, alphabet=ALPHA, seed=1).transform(t))
    assert not np.array_equal(a, E.NGramEncoder(n=3, dim=500, alphabet=ALPHA, seed=2).transform(t))


def test_ngram_unknown_symbol_policy():
    with pytest.raises(ValueError, match=r"unknown symbol '!' in text 1"):
        E.NGramEncoder(n=2, dim=256, alphabet=ALPHA).transform(["ok", "bad!"])
    skip = E.NGramEncoder(n=2, dim=256, alphabet=ALPHA, unknown="skip")
    assert np.array_equal(skip.transform(["ba!d"]), skip.transform(["bad"]))
    extra = E.NGramEncoder(n=2, dim=256, alphabet=ALPHA, unknown="extra")
    e1, e2 = extra.transform(["ba!d", "ba?d"])
    assert np.array_equal(e1, e2) and not np.array_equal(e1, extra.transform(["bad"])[0])
    with pytest.raises(ValueError, match="empty"):
        skip.transform(["!!!"])
    with pytest.raises(ValueError, match="empty"):
        skip.transform([""])
    with pytest.raises(TypeError, match="list of texts"):
        skip.transform("abc")
    with pytest.raises(ValueError, match="unknown must be"):
        E.NGramEncoder(unknown="ignore", alphabet=ALPHA).transform(["a"])


def test_ngram_encoder_learns_alphabet_and_handles_unicode():
    enc = E.NGramEncoder(n=2, dim=128).fit(["żółw", "ab"])
    assert enc.alphabet_ == "".join(sorted(set("żółwab")))
    assert enc.transform(["żół"]).shape == (1, 2)


def test_class_counters_are_bipolar_gram_sums():
    dim = 300
    enc = E.NGramEncoder(n=3, dim=dim, alphabet=ALPHA, seed=0)
    texts, y = ["abcde", "xyz", "hello"], ["a", "b", "a"]
    classes, C = enc.class_counters(texts, y)
    assert classes.tolist() == ["a", "b"]
    # class "a": grams of "abcde" (3) and "hello" (3)
    grams = []
    for t in ("abcde", "hello"):
        for i in range(len(t) - 2):
            grams.append(hdc.to_bipolar(E.ngram(t[i:i + 3], enc.memory_, 3), dim))
    assert np.array_equal(C[0], np.sum(grams, axis=0))


# ---------------------------------------------------------------- random projection, sets, graphs
def test_random_projection_locality_and_seed():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3, 50))
    X[1] = X[0] + 0.05 * rng.normal(size=50)
    for kind in ("cos", "sign"):
        enc = E.RandomProjectionEncoder(dim=4000, kind=kind, seed=1).fit(X)
        H = enc.transform(X)
        assert _ham(H[0], H[1]) < 0.15 * 4000 < 0.35 * 4000 < _ham(H[0], H[2])
        assert np.array_equal(H, E.RandomProjectionEncoder(dim=4000, kind=kind, seed=1).fit(X).transform(X))
        assert _pads_zero(H, 4000)
    with pytest.raises(ValueError, match="NaN"):
        enc.transform(np.full((1, 50), np.nan))
    with pytest.raises(ValueError, match="features"):
        enc.transform(np.zeros((1, 49)))


def test_set_membership():
    dim = 10_000
    mem = E.item_memory(range(40), dim, seed=3)
    s = E.encode_set(mem.get_many(range(5)), dim)
    members = [_ham(s, mem[i]) for i in range(5)]
    outsiders = [_ham(s, mem[i]) for i in range(5, 40)]
    assert max(members) < 0.42 * dim < 0.46 * dim < min(outsiders)


def test_graph_edges_and_direction():
    dim = 10_000
    mem = E.item_memory("abcdef", dim, seed=0)
    edges = [("a", "b"), ("b", "c"), ("c", "d")]
    g = E.encode_graph(edges, mem)
    e_in = hdc.bind(mem["a"], mem["b"])
    e_out = hdc.bind(mem["a"], mem["e"])
    assert _ham(g, e_in) < 0.3 * dim and _ham(g, e_out) > 0.45 * dim
    gd = E.encode_graph(edges, mem, directed=True)
    fwd = hdc.bind(mem["a"], hdc.permute(mem["b"], 1, dim))
    back = hdc.bind(mem["b"], hdc.permute(mem["a"], 1, dim))
    assert _ham(gd, fwd) < 0.3 * dim and _ham(gd, back) > 0.45 * dim
    with pytest.raises(ValueError, match="edge"):
        E.encode_graph([], mem)
    with pytest.raises(KeyError, match="unknown symbol"):
        E.encode_graph([("a", "z")], mem)


# ---------------------------------------------------------------- distinct-gram counting
@pytest.mark.parametrize("n", [1, 2, 3, 5])
@pytest.mark.parametrize("dense", [True, False])
def test_distinct_gram_counts_equal_the_occurrence_kernel(n, dense, monkeypatch):
    """Counting distinct grams first (histogram, or sorted keys) and adding each once per set bit
    of its count gives the per-bit counts of adding every occurrence, short texts included."""
    if not dense:
        monkeypatch.setattr(_ngram, "_MAX_HIST_CELLS", 0)
    rng = np.random.default_rng(n)
    alphabet = "abcdefg"
    texts = ["".join(rng.choice(list(alphabet), rng.integers(1, 60))) for _ in range(40)] + ["ab", "c"]
    for dim in (63, 130, 1000):
        enc = E.NGramEncoder(n=n, dim=dim, alphabet=alphabet, seed=1)
        groups = rng.integers(0, 3, len(texts))
        codes, offs = enc.codes(texts)
        exp_c, exp_t = _ngram.ngram_counts_ref(codes, offs, enc.table_, groups, 3, dim)
        c, t = enc.counts(texts, groups, 3)
        assert np.array_equal(c, exp_c) and np.array_equal(t, exp_t), (n, dim)


def test_sqrt_weighted_counts_equal_a_direct_sum():
    rng = np.random.default_rng(0)
    alphabet = "abc"
    texts = ["".join(rng.choice(list(alphabet), 200)) for _ in range(6)]
    y = np.arange(6) % 2
    dim, n = 200, 3
    enc = E.NGramEncoder(n=n, dim=dim, alphabet=alphabet, seed=2)
    classes, got = enc.class_counters(texts, y, weight="sqrt")
    for k in classes:
        grams = {}
        for t, lab in zip(texts, y):
            if lab == k:
                for i in range(len(t) - n + 1):
                    grams[t[i:i + n]] = grams.get(t[i:i + n], 0) + 1
        expect = np.zeros(dim, np.int64)
        for g, c in grams.items():
            w = int(np.rint(16 * np.sqrt(c)))
            expect += w * hdc.to_bipolar(E.ngram(g, enc.memory_, n), dim).astype(np.int64)
        assert np.array_equal(got[k], expect)
    with pytest.raises(ValueError, match=r"weight must be one of \('count', 'sqrt'\) or a function of the "
                                         r"counts, got 'idf'"):
        enc.class_counters(texts, y, weight="idf")
    with pytest.raises(ValueError, match="weight must map the occurrence counts to as many non-negative integers"):
        enc.class_counters(texts, y, weight=lambda c: -c)


def test_transform_gammas_equals_one_transform_per_gamma():
    X = np.random.default_rng(3).random((50, 12))
    for kind in ("cos", "sign"):
        enc = E.RandomProjectionEncoder(dim=300, kind=kind, center=True, batch_size=16, seed=2).fit(X)
        got = enc.transform_gammas(X, [0.5, 1.5, 3.0])
        for g, H in zip([0.5, 1.5, 3.0], got):
            assert np.array_equal(H, enc.set_params(gamma=g).transform(X)), (kind, g)
    with pytest.raises(ValueError, match=r"gammas must be finite numbers > 0 .*got -1"):
        enc.transform_gammas(X, [1.0, -1])
