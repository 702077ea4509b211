"""Save/load of trained HDC models: round trips, atomic writes, clear errors for bad files."""
import json
import os

import numpy as np
import pytest
from sklearn.pipeline import make_pipeline

from hdc import classifiers as C
from hdc import datasets
from hdc import encoders as E
from hdc import serialize as S


@pytest.fixture(scope="module")
def digits():
    X, y = datasets.load_digits()
    return X[:1200], y[:1200], X[1200:], y[1200:]


@pytest.mark.parametrize("make", [
    lambda: make_pipeline(E.RandomProjectionEncoder(dim=1000, seed=3), C.RetrainClassifier(dim=1000, epochs=3)),
    lambda: make_pipeline(E.RecordEncoder(dim=700, n_levels=9, per_feature=True, seed=1),
                          C.CentroidClassifier(dim=700, bits=5)),
])
def test_pipeline_round_trip(tmp_path, digits, make):
    Xtr, ytr, Xte, _ = digits
    pipe = make().fit(Xtr, ytr)
    path = S.save(tmp_path / "m.safetensors", pipe)
    back = S.load(path)
    assert np.array_equal(back[-1].counters_, pipe[-1].counters_)
    assert np.array_equal(back.predict(Xte), pipe.predict(Xte))
    np.testing.assert_array_equal(back.decision_function(Xte), pipe.decision_function(Xte))
    assert back[-1].get_params() == pipe[-1].get_params()
    assert [f for f in os.listdir(tmp_path)] == ["m.safetensors"]  # no temp file left behind


def test_ngram_model_round_trip_with_string_classes(tmp_path):
    enc = E.NGramEncoder(n=3, dim=512, alphabet="abcdefghijklmnopqrstuvwxyz ", unknown="skip", seed=9)
    texts = ["the cat sat on the mat", "le chat est sur le tapis", "the dog ran", "le chien court"]
    classes, counters = enc.class_counters(texts, ["en", "fr", "en", "fr"])
    clf = C.CentroidClassifier.from_counters(counters, classes, 512)
    S.save(tmp_path / "lang.safetensors", (enc, clf))
    enc2, clf2 = S.load(tmp_path / "lang.safetensors")
    q = ["the mat", "le tapis!"]
    assert clf2.classes_.tolist() == ["en", "fr"]
    assert np.array_equal(enc2.transform(q), enc.transform(q))
    assert clf2.predict(enc2.transform(q)).tolist() == clf.predict(enc.transform(q)).tolist()
    lone = S.load(S.save(tmp_path / "clf.safetensors", clf))
    assert np.array_equal(lone.counters_, clf.counters_)


def test_overwrite_is_atomic_replace(tmp_path, digits):
    Xtr, ytr, _, _ = digits
    a = make_pipeline(E.RandomProjectionEncoder(dim=256, seed=0), C.CentroidClassifier(dim=256)).fit(Xtr, ytr)
    b = make_pipeline(E.RandomProjectionEncoder(dim=256, seed=1), C.CentroidClassifier(dim=256)).fit(Xtr, ytr)
    p = tmp_path / "m.safetensors"
    S.save(p, a)
    S.save(p, b)
    assert np.array_equal(S.load(p)[-1].counters_, b[-1].counters_)


@pytest.fixture
def saved(tmp_path, digits):
    Xtr, ytr, _, _ = digits
    pipe = make_pipeline(E.RandomProjectionEncoder(dim=512), C.CentroidClassifier(dim=512)).fit(Xtr, ytr)
    return S.save(tmp_path / "m.safetensors", pipe)


def test_truncated_file(saved):
    raw = saved.read_bytes()
    for cut in (0, 5, 100, len(raw) - 10):
        saved.write_bytes(raw[:cut])
        with pytest.raises(S.ModelFileError, match="truncated|corrupt|not a safetensors"):
            S.load(saved)


def test_flipped_data_byte(saved):
    raw = bytearray(saved.read_bytes())
    raw[-7] ^= 0xFF  # inside the tensor data: the header still parses
    saved.write_bytes(bytes(raw))
    with pytest.raises(S.ModelFileError, match="SHA-256"):
        S.load(saved)


def test_foreign_and_garbage_files(tmp_path, saved):
    from safetensors.numpy import save_file

    foreign = tmp_path / "other.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(foreign), metadata={"format": "pt"})
    with pytest.raises(S.ModelFileError, match="not an hdspike HDC model"):
        S.load(foreign)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(S.ModelFileError):
        S.load(junk)
    with pytest.raises(FileNotFoundError):
        S.load(tmp_path / "missing.safetensors")


def test_newer_format_version_is_refused(tmp_path, saved):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(saved), framework="numpy") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta["format_version"] = "99"
    p = tmp_path / "future.safetensors"
    save_file(tensors, str(p), metadata=meta)
    with pytest.raises(S.ModelFileError, match="version 99"):
        S.load(p)
    meta["format_version"] = "1"
    meta["classes"] = json.dumps(["a", "b"])  # 2 labels for 10 counter rows
    save_file(tensors, str(p), metadata=meta)
    with pytest.raises(S.ModelFileError, match="classes"):
        S.load(p)


def test_save_refuses_unfitted_or_unknown(tmp_path):
    with pytest.raises(ValueError, match="not fitted"):
        S.save(tmp_path / "x", C.CentroidClassifier(dim=64))
    with pytest.raises(TypeError, match="cannot save"):
        S.save(tmp_path / "x", object())
