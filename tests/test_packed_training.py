"""Packed retraining (integer counters, bit-plane scores) equals the float64 reference exactly:
the same mistakes in the same order, the same counters, norms and averaging sums, on random and
real data, and the same fitted RetrainClassifier."""
import numpy as np
import pytest

import hdc
from hdc import _train
from hdc import classifiers as C
from hdc import datasets
from hdc import encoders as E


def _epochs_agree(X, y, K, dim, epochs, *, block=256, init=None, with_ref=False):
    """Run the float, packed (and NumPy reference) epochs side by side; assert equality after each."""
    n = X.shape[0]
    C0 = np.zeros((K, dim), np.int64) if init is None else init
    norm0 = (C0.astype(np.float64) ** 2).sum(1)
    f = [C0.astype(np.float64), norm0.copy(), np.zeros((K, dim)), 0]
    p = [C0.copy(), norm0.copy(), np.zeros((K, dim), np.int64), 0]
    r = [a.copy() if isinstance(a, np.ndarray) else a for a in f]
    total = 0
    for ep in range(epochs):
        order = np.random.default_rng(ep).permutation(n)
        mf, f[3] = _train.perceptron_epoch(X, y, order, dim, *f[:3], f[3])
        mp, p[3] = _train.perceptron_epoch_packed(X, y, order, dim, *p[:3], p[3], block=block)
        assert (mf, f[3]) == (mp, p[3]), ep
        assert np.array_equal(f[0], p[0]) and np.array_equal(f[1], p[1]) and np.array_equal(f[2], p[2]), ep
        if with_ref:
            mr, r[3] = _train.perceptron_epoch_ref(X, y, order, dim, *r[:3], r[3])
            assert (mr, r[3]) == (mp, p[3]) and np.array_equal(r[0], p[0]) and np.array_equal(r[2], p[2]), ep
        total += mp
    assert total > 0 and np.any(p[0])  # it trained
    return total


@pytest.mark.parametrize("dim", [1, 63, 64, 130, 1000])
@pytest.mark.parametrize("block", [1, 7, 256])
def test_packed_epochs_equal_float_and_reference_on_random_data(dim, block):
    rng = np.random.default_rng(dim)
    X = hdc.random(90, dim, seed=dim)
    y = rng.integers(0, 4, 90)
    _epochs_agree(X, y, 4, dim, 3, block=block, with_ref=True)


def test_packed_epochs_equal_float_from_centroid_start():
    dim = 300
    X = hdc.random(120, dim, seed=5)
    y = np.random.default_rng(1).integers(0, 3, 120)
    _epochs_agree(X, y, 3, dim, 3, init=C.class_counters(X, y, 3, dim), block=32, with_ref=True)


def test_packed_epochs_equal_float_on_digits():
    X, y = datasets.load_digits()
    H = E.RandomProjectionEncoder(dim=2048, seed=0).fit(X).transform(X)
    _epochs_agree(H, y.astype(np.int64), 10, 2048, 4, block=200)


@pytest.mark.slow
@pytest.mark.skipif(not datasets.fashion_mnist_available(), reason="Fashion-MNIST not installed (make data)")
def test_packed_epochs_equal_float_on_fashion_mnist():
    (Xtr, ytr), _ = datasets.load_fashion_mnist()
    H = E.RandomProjectionEncoder(dim=10_000, center=True).fit(Xtr[:4000]).transform(Xtr[:4000])
    _epochs_agree(H, ytr[:4000].astype(np.int64), 10, 10_000, 3)


@pytest.mark.skipif(not hdc.datasets.langrec_available(), reason="language data not found")
def test_packed_epochs_equal_float_on_language_sentences():
    train, _, _ = datasets.load_langrec()
    langs = sorted(train)[:6]
    lines = [ln for lang in langs for ln in train[lang][:150] if ln]
    ys = np.array([i for i, lang in enumerate(langs) for ln in train[lang][:150] if ln])
    enc = E.NGramEncoder(n=3, dim=1000, alphabet="abcdefghijklmnopqrstuvwxyz ", unknown="skip")
    _epochs_agree(enc.transform(lines), ys, len(langs), 1000, 3, block=128)


@pytest.mark.parametrize("kw", [{}, {"average": False}, {"init": "centroid"}, {"refit": True},
                                {"validation_fraction": None, "bits": 5}])
def test_retrain_classifier_packed_equals_float(kw):
    X, y = datasets.load_digits()
    H = E.RandomProjectionEncoder(dim=1000, seed=0).fit(X).transform(X)
    a = C.RetrainClassifier(dim=1000, epochs=4, **kw).fit(H, y)
    b = C.RetrainClassifier(dim=1000, epochs=4, trainer="float", **kw).fit(H, y)
    assert np.array_equal(a.counters_, b.counters_) and a.best_epoch_ == b.best_epoch_
    assert a.history_ == b.history_
    assert np.array_equal(a.predict(H), b.predict(H))


def test_packed_training_goes_through_backend_kernels(monkeypatch):
    X = hdc.random(50, 200, seed=0)
    y = np.arange(50) % 3
    calls = []
    real = hdc.functional.hamming_matrix
    monkeypatch.setattr(hdc.functional, "hamming_matrix", lambda *a, **k: calls.append(1) or real(*a, **k))
    C.RetrainClassifier(dim=200, epochs=2, validation_fraction=None).fit(X, y)
    assert len(calls) >= 2  # at least the bit-plane scores and the in-block dot products, per epoch


def test_trainer_param_is_checked():
    with pytest.raises(ValueError, match="trainer must be 'packed' .* or 'float' .*got 'gpu'"):
        C.RetrainClassifier(dim=64, trainer="gpu").fit(hdc.random(4, 64, seed=0), [0, 1, 0, 1])
