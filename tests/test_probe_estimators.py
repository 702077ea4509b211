"""Probe: the bad and edge inputs of issue 11 for the estimators and model files, re-run on
every backend and C ISA level (the ``kernel`` fixture). Each asserts the right answer (equal
to the NumPy reference backend, bit for bit) or the documented exception with its message:
the argument, the value and what is allowed.
"""
import warnings

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline

import hdc
from hdc import classifiers as C
from hdc import encoders as E
from hdc import serialize as S

CLASSIFIERS = {"centroid": lambda dim: C.CentroidClassifier(dim=dim),
               "retrain": lambda dim: C.RetrainClassifier(dim=dim, epochs=2, validation_fraction=0.2)}
PAD_DIMS = [1, 63, 65, 130]  # dims with pad bits in the last word


def _labels(n, k=3):
    return np.arange(n) % k


def _with_pad_bit(X, dim, row):
    """A copy of X with the highest pad bit of ``row`` set (the last word's bit 63)."""
    assert dim % 64, "no pad bits at a multiple of 64"
    bad = X.copy()
    bad[row, -1] |= np.uint64(1) << np.uint64(63)
    return bad


def _reference(fn):
    """fn() computed on the NumPy reference backend."""
    with hdc.use_backend("numpy"):
        return fn()


# ---------------------------------------------------------------- pad bits
@pytest.mark.parametrize("clf_name", sorted(CLASSIFIERS))
@pytest.mark.parametrize("dim", PAD_DIMS)
def test_pad_bits_refused_at_every_entry_point(kernel, clf_name, dim):
    X = hdc.random(60, dim, seed=dim)
    y = _labels(60)
    clf = CLASSIFIERS[clf_name](dim).fit(X, y)
    bad = _with_pad_bit(X[:20], dim, row=7)
    msg = rf"X has bits set past dim={dim} \(pad bits of the last word must be zero\): 1 of 20 rows, first row 7"
    for call in ("predict", "decision_function", "predict_proba", "dot"):
        with pytest.raises(ValueError, match=msg):
            getattr(clf, call)(bad)
    with pytest.raises(ValueError, match=msg):
        clf.score(bad, y[:20])
    with pytest.raises(ValueError, match=msg):
        CLASSIFIERS[clf_name](dim).fit(bad, y[:20])
    if clf_name == "centroid":
        with pytest.raises(ValueError, match=msg):
            C.CentroidClassifier(dim=dim).partial_fit(bad, y[:20], classes=[0, 1, 2])
        with pytest.raises(ValueError, match=msg):
            clf.partial_fit(bad, y[:20])


@pytest.mark.parametrize("clf_name", sorted(CLASSIFIERS))
@pytest.mark.parametrize("dim", PAD_DIMS + [64, 128])
def test_clean_inputs_answer_as_the_reference(kernel, clf_name, dim):
    X = hdc.random(90, dim, seed=dim + 1)
    y = _labels(90)
    Q = hdc.random(40, dim, seed=dim + 2)
    clf = CLASSIFIERS[clf_name](dim).fit(X, y)
    ref = _reference(lambda: CLASSIFIERS[clf_name](dim).fit(X, y))
    assert np.array_equal(clf.counters_, ref.counters_)
    assert np.array_equal(clf.dot(Q), _reference(lambda: ref.dot(Q)))
    assert np.array_equal(clf.predict(Q), _reference(lambda: ref.predict(Q)))


def test_every_bit_of_a_full_last_word_is_data(kernel):
    # at a multiple of 64 there are no pad bits: an all-ones last word is valid input
    X = np.full((6, 2), np.uint64(2**64 - 1))
    X[::2] = 0
    clf = C.CentroidClassifier(dim=128).fit(X, [0, 1] * 3)
    assert clf.predict(X).tolist() == [0, 1] * 3


# ---------------------------------------------------------------- overflow and NaN
def test_random_projection_huge_and_tiny_finite_values(kernel):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 9))
    enc = E.RandomProjectionEncoder(dim=700, center=True, seed=1).fit(X)
    base = enc.transform(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow/invalid warning either
        for scale in (2.0**130, 2.0**64, 2.0**-130, 2.0**1000, 2.0**-1060):
            assert np.array_equal(enc.transform(X * scale), base), scale  # exactly scale-invariant
        big = X.copy()
        big[3] *= 1e39  # one row past float32's maximum
        H = enc.transform(big)
    assert np.array_equal(np.delete(H, 3, 0), np.delete(base, 3, 0))
    # the row equals a float64 computation of the same encoding, bar float32 rounding at cos = 0
    u = big[3] / 1e39
    u = u - u.mean()
    u /= np.linalg.norm(u)
    ref = hdc.pack_bits(np.cos(enc.gamma * (u @ enc.proj_.astype(np.float64)) + enc.bias_) < 0)
    assert hdc.hamming(H[3], ref) <= 3
    assert 250 < hdc.popcount(H[3:4])[0] < 450  # about half the bits: not the all-zero vector


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_are_refused(kernel, bad):
    X = np.ones((4, 3))
    X[2, 1] = bad
    for enc in (E.RandomProjectionEncoder(dim=64), E.RecordEncoder(dim=64)):
        with pytest.raises(ValueError, match=r"X contains NaN or infinite values \(first at sample 2, feature 1\)"):
            enc.fit(X)


@pytest.mark.parametrize("temperature", [np.nan, np.inf, 0.0, -1.0, "100"])
@pytest.mark.parametrize("clf_name", sorted(CLASSIFIERS))
def test_bad_temperature_is_refused(kernel, clf_name, temperature):
    X = hdc.random(30, 100, seed=3)
    y = _labels(30)
    msg = rf"temperature must be a finite number > 0 .* got {temperature!r}"
    with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace("'", ".")):
        CLASSIFIERS[clf_name](100).set_params(temperature=temperature).fit(X, y)
    clf = CLASSIFIERS[clf_name](100).fit(X, y)
    clf.set_params(temperature=temperature)  # after fit: predict_proba checks it again
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        clf.predict_proba(X)


def test_predict_proba_is_finite_and_ranked(kernel):
    X = hdc.random(30, 100, seed=3)
    clf = C.CentroidClassifier(dim=100, temperature=1e6).fit(X, _labels(30))
    p = clf.predict_proba(X)
    assert np.all(np.isfinite(p)) and np.allclose(p.sum(1), 1)
    assert np.array_equal(np.argmax(p, 1), np.argmax(clf.decision_function(X), 1))


@pytest.mark.parametrize("gamma", [np.nan, np.inf, 0, -1.5])
def test_bad_gamma_is_refused(kernel, gamma):
    with pytest.raises(ValueError, match=rf"gamma must be a finite number > 0 .*got {gamma!r}"):
        E.RandomProjectionEncoder(dim=64, gamma=gamma).fit(np.ones((2, 3)))


# ---------------------------------------------------------------- unclear messages, rewritten
ENCODERS = {
    "level": (lambda: E.LevelEncoder(dim=64), np.ones((3, 1))),
    "record": (lambda: E.RecordEncoder(dim=64), np.ones((3, 4))),
    "random_projection": (lambda: E.RandomProjectionEncoder(dim=64), np.ones((3, 4))),
    "ngram": (lambda: E.NGramEncoder(dim=64), ["abc"]),
}


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_encoder_transform_before_fit(kernel, name):
    make, X = ENCODERS[name]
    with pytest.raises(NotFittedError, match="not fitted|no alphabet"):
        make().transform(X)


@pytest.mark.parametrize("clf_name", sorted(CLASSIFIERS))
def test_classifier_before_fit(kernel, clf_name):
    X = hdc.random(4, 100, seed=0)
    clf = CLASSIFIERS[clf_name](100)
    for call in ("predict", "decision_function", "predict_proba", "dot"):
        with pytest.raises(NotFittedError, match="not fitted yet; call fit"):
            getattr(clf, call)(X)
    with pytest.raises(NotFittedError):
        clf.score(X, [0, 1, 0, 1])
    with pytest.raises(NotFittedError):
        clf.class_vectors()


@pytest.mark.parametrize("batch_size", [0, -3, 2.5, True])
def test_bad_batch_size(kernel, batch_size):
    X = np.random.default_rng(0).random((5, 4))
    with pytest.raises(ValueError, match=rf"batch_size must be an int >= 1 .*got {batch_size!r}"):
        E.RandomProjectionEncoder(dim=64, batch_size=batch_size).fit(X)
    enc = E.RandomProjectionEncoder(dim=64).fit(X).set_params(batch_size=batch_size)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        enc.transform(X)


def test_batches_do_not_change_the_code(kernel):
    X = np.random.default_rng(0).random((7, 4))
    whole = E.RandomProjectionEncoder(dim=200).fit(X).transform(X)
    assert np.array_equal(E.RandomProjectionEncoder(dim=200, batch_size=2).fit(X).transform(X), whole)


@pytest.mark.parametrize("name", ["record", "level"])
def test_fit_on_zero_rows(kernel, name):
    make, X = ENCODERS[name]
    empty = np.empty((0, X.shape[1]))
    cls = type(make()).__name__
    with pytest.raises(ValueError, match=rf"X has shape \(0, {X.shape[1]}\): {cls}.fit needs at least 1 sample"):
        make().fit(empty)
    enc = make().fit(X)
    assert enc.transform(empty).shape == (0, 1)  # transforming 0 rows is fine


def test_zero_features_refused(kernel):
    with pytest.raises(ValueError, match=r"X has shape \(3, 0\): no features to encode"):
        E.RandomProjectionEncoder(dim=64).fit(np.empty((3, 0)))


def test_partial_fit_with_mismatched_lengths(kernel):
    X = hdc.random(10, 100, seed=0)
    clf = C.CentroidClassifier(dim=100)
    with pytest.raises(ValueError, match=r"X has 10 rows, y has shape \(9,\)"):
        clf.partial_fit(X, _labels(9), classes=[0, 1, 2])
    clf.partial_fit(X, _labels(10), classes=[0, 1, 2])
    before = clf.counters_.copy()
    with pytest.raises(ValueError, match=r"X has 10 rows, y has shape \(11,\)"):
        clf.partial_fit(X, _labels(11))
    assert np.array_equal(clf.counters_, before)  # a refused call leaves the model as it was


def test_validation_fraction_leaving_no_training_data(kernel):
    X = hdc.random(10, 100, seed=0)
    for vf, n_val, k in ((0.99, 10, 0), (0.9, 9, 1)):
        with pytest.raises(ValueError, match=rf"validation_fraction={vf} of 10 samples holds out {n_val} .* "
                                             rf"leaves {10 - n_val} to train on, of {k} class\(es\); training "
                                             r"needs samples of at least 2 classes"):
            C.RetrainClassifier(dim=100, validation_fraction=vf).fit(X, _labels(10, 2))
    clf = C.RetrainClassifier(dim=100, validation_fraction=0.5, epochs=2).fit(X, _labels(10, 2))
    assert clf.predict(X).shape == (10,)


# ---------------------------------------------------------------- model files
@pytest.fixture
def model(tmp_path):
    X = np.random.default_rng(1).random((60, 6))
    pipe = make_pipeline(E.RandomProjectionEncoder(dim=130, gamma=1.5), C.CentroidClassifier(dim=130))
    pipe.fit(X, np.array([True, False])[_labels(60, 2)])
    return pipe, X, S.save(tmp_path / "m.safetensors", pipe)


def test_model_file_round_trip_and_integrity(kernel, tmp_path, model):
    pipe, X, path = model
    back = S.load(path)
    assert back[-1].classes_.dtype == np.bool_
    assert np.array_equal(back.predict(X), _reference(lambda: pipe.predict(X)))
    raw = path.read_bytes()
    path.write_bytes(raw.replace(rb'\"gamma\": 1.5', rb'\"gamma\": 1.6', 1))
    with pytest.raises(S.ModelFileError, match="metadata .* fails its SHA-256 check"):
        S.load(path)
    path.write_bytes(raw[:-40])
    with pytest.raises(S.ModelFileError, match=f"{path} is"):
        S.load(path)
    with pytest.raises(IsADirectoryError, match=f"{tmp_path}.* is a directory"):
        S.load(tmp_path)
    with pytest.raises(ValueError, match="path is empty"):
        S.save("", pipe)
