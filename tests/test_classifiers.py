"""Classifiers: exact bit-plane scoring, perceptron kernel == reference, accuracy on digits,
scikit-learn compatibility, bad input."""
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline

import hdc
from hdc import _train
from hdc import classifiers as C
from hdc import datasets
from hdc import encoders as E

DIM = 2048


@pytest.fixture(scope="module")
def digits():
    X, y = datasets.load_digits()
    return train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)


@pytest.fixture(scope="module")
def encoded(digits):
    Xtr, Xte, ytr, yte = digits
    enc = E.RandomProjectionEncoder(dim=DIM, seed=0).fit(Xtr)
    return enc.transform(Xtr), enc.transform(Xte), ytr, yte


# ---------------------------------------------------------------- exact scoring
@pytest.mark.parametrize("dim", [1, 63, 64, 130, 1000])
def test_planes_dot_equals_integer_dot_product(dim):
    rng = np.random.default_rng(dim)
    Q = hdc.random(33, dim, seed=1)
    for scale in (1, 1000, 2**40):
        Cn = rng.integers(-scale, scale + 1, size=(5, dim)).astype(np.int64)
        planes, off = C.counter_planes(Cn, dim)
        got = C.planes_dot(Q, planes, off, Cn.sum(1))
        ref = hdc.to_bipolar(Q, dim).astype(np.int64) @ Cn.T
        assert np.array_equal(got, ref)


def test_class_counters_are_bipolar_sums():
    dim = 130
    X = hdc.random(20, dim, seed=2)
    y = np.arange(20) % 3
    Cn = C.class_counters(X, y, 3, dim)
    bip = hdc.to_bipolar(X, dim).astype(np.int64)
    for k in range(3):
        assert np.array_equal(Cn[k], bip[y == k].sum(0))


@pytest.mark.parametrize("mode", [0, 1])
def test_perceptron_kernel_matches_reference(mode):
    dim, K, n = 130, 4, 60
    X = hdc.random(n, dim, seed=3)
    y = np.random.default_rng(0).integers(0, K, n)
    order = np.random.default_rng(1).permutation(n)
    state = [np.zeros((K, dim)), np.zeros(K), np.zeros((K, dim))]
    ref = [a.copy() for a in state]
    got = _train.perceptron_epoch(X, y, order, dim, *state, 0, mode=mode, lr=0.5)
    exp = _train.perceptron_epoch_ref(X, y, order, dim, *ref, 0, mode=mode, lr=0.5)
    assert got == exp
    for a, b in zip(state, ref):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-9)
    assert got[0] > 0 and np.any(state[0])  # it did update


# ---------------------------------------------------------------- accuracy on real data
def test_centroid_on_digits_beats_chance_by_far(encoded):
    Htr, Hte, ytr, yte = encoded
    clf = C.CentroidClassifier(dim=DIM).fit(Htr, ytr)
    acc = clf.score(Hte, yte)
    assert acc > 0.85  # chance is 0.10
    rng = np.random.default_rng(0)
    assert np.mean(rng.permutation(yte) == yte) < 0.3  # what a label-shuffling "classifier" gets


def test_retraining_improves_on_one_pass(encoded):
    Htr, Hte, ytr, yte = encoded
    one = C.CentroidClassifier(dim=DIM).fit(Htr, ytr).score(Hte, yte)
    ret = C.RetrainClassifier(dim=DIM, epochs=8, seed=0).fit(Htr, ytr)
    acc = ret.score(Hte, yte)
    assert acc > 0.93 and acc > one + 0.02
    assert 1 <= ret.best_epoch_ <= 8 and len(ret.history_) >= 2
    for kw in ({"update": "onlinehd", "lr": 0.2}, {"average": False}, {"init": "centroid"}, {"bits": 4},
               {"validation_fraction": None}, {"refit": True}):
        assert C.RetrainClassifier(dim=DIM, epochs=5, **kw).fit(Htr, ytr).score(Hte, yte) > 0.88, kw


def test_bits_quantization_keeps_accuracy(encoded):
    Htr, Hte, ytr, yte = encoded
    full = C.CentroidClassifier(dim=DIM).fit(Htr, ytr)
    q = C.CentroidClassifier(dim=DIM, bits=3).fit(Htr, ytr)
    assert q.planes_.shape[1] <= 3 < full.planes_.shape[1]
    assert q.score(Hte, yte) > full.score(Hte, yte) - 0.05


def test_prediction_goes_through_backend_hamming_matrix(encoded, monkeypatch):
    Htr, Hte, ytr, _ = encoded
    clf = C.CentroidClassifier(dim=DIM).fit(Htr, ytr)
    calls = []
    real = hdc.functional.hamming_matrix
    monkeypatch.setattr(hdc.functional, "hamming_matrix", lambda *a, **k: calls.append(1) or real(*a, **k))
    clf.predict(Hte)
    assert calls


def test_partial_fit_equals_fit(encoded):
    Htr, _, ytr, _ = encoded
    a = C.CentroidClassifier(dim=DIM).fit(Htr, ytr)
    b = C.CentroidClassifier(dim=DIM)
    b.partial_fit(Htr[:300], ytr[:300], classes=np.arange(10))
    b.partial_fit(Htr[300:], ytr[300:])
    assert np.array_equal(a.counters_, b.counters_)


# ---------------------------------------------------------------- scikit-learn API
def test_pipeline_cross_val_and_clone(digits):
    X, _, y, _ = digits
    pipe = make_pipeline(E.RandomProjectionEncoder(dim=1024, seed=0), C.CentroidClassifier(dim=1024))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.8
    c = clone(C.RetrainClassifier(dim=64, epochs=3, update="onlinehd"))
    assert c.get_params()["update"] == "onlinehd" and not hasattr(c, "counters_")
    pipe2 = make_pipeline(E.RecordEncoder(dim=1024, n_levels=17), C.RetrainClassifier(dim=1024, epochs=3))
    assert cross_val_score(pipe2, X, y, cv=2).min() > 0.8


def test_scores_and_probabilities(encoded):
    Htr, Hte, ytr, _ = encoded
    clf = C.CentroidClassifier(dim=DIM).fit(Htr, ytr)
    s = clf.decision_function(Hte)
    p = clf.predict_proba(Hte)
    assert s.shape == p.shape == (len(Hte), 10)
    np.testing.assert_allclose(p.sum(1), 1.0)
    assert np.array_equal(np.argmax(p, 1), np.argmax(s, 1))
    assert np.array_equal(clf.classes_[np.argmax(s, 1)], clf.predict(Hte))
    assert np.all(np.abs(s) <= 1 + 1e-12)
    two = C.CentroidClassifier(dim=DIM).fit(Htr[ytr < 2], ytr[ytr < 2])
    assert two.decision_function(Hte).shape == (len(Hte),)


def test_string_labels(encoded):
    Htr, Hte, ytr, yte = encoded
    names = np.array(list("abcdefghij"))
    clf = C.CentroidClassifier(dim=DIM).fit(Htr, names[ytr])
    assert clf.score(Hte, names[yte]) > 0.85


# ---------------------------------------------------------------- bad input
def test_bad_input_errors(encoded, digits):
    Htr, Hte, ytr, _ = encoded
    with pytest.raises(ValueError, match="at least 2 classes"):
        C.CentroidClassifier(dim=DIM).fit(Htr, np.zeros(len(Htr)))
    with pytest.raises(ValueError, match="at least 2 classes"):
        C.RetrainClassifier(dim=DIM).fit(Htr, np.zeros(len(Htr)))
    with pytest.raises(TypeError, match="packed hypervectors"):
        C.CentroidClassifier(dim=DIM).fit(digits[0], ytr)
    clf = C.CentroidClassifier(dim=DIM).fit(Htr, ytr)
    with pytest.raises(ValueError, match="dim=2048"):
        clf.predict(hdc.random(3, 1000, seed=0))
    with pytest.raises(ValueError, match="needs"):
        C.CentroidClassifier(dim=1000).fit(Htr, ytr)
    bad = Htr.copy()
    bad[0, -1] |= np.uint64(1) << np.uint64(63)
    with pytest.raises(ValueError, match="pad bits"):
        C.CentroidClassifier(dim=DIM - 1).fit(bad[:, :], ytr)
    with pytest.raises(ValueError, match="one label per sample"):
        C.CentroidClassifier(dim=DIM).fit(Htr, ytr[:-1])
    with pytest.raises(NotFittedError):
        C.CentroidClassifier(dim=DIM).predict(Hte)
    with pytest.raises(ValueError, match="update"):
        C.RetrainClassifier(dim=DIM, update="sgd").fit(Htr, ytr)
    with pytest.raises(ValueError, match="bits"):
        C.CentroidClassifier(dim=DIM, bits=0).fit(Htr, ytr)
    Xnan = digits[0].copy()
    Xnan[3, 5] = np.nan
    pipe = make_pipeline(E.RandomProjectionEncoder(dim=256), C.CentroidClassifier(dim=256))
    with pytest.raises(ValueError, match="NaN"):
        pipe.fit(Xnan, ytr)
