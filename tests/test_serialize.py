"""Save/load of trained HDC models: round trips, atomic writes, clear errors for bad files."""
import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline

import hdc
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


def _rewrite(src, dst, edit, *, rehash=True):
    """Copy a model file with its metadata edited by ``edit(meta)``; ``rehash`` recomputes the
    metadata digest (as a forger or a buggy writer would), to reach the checks behind it."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(src), framework="numpy") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors = edit(meta, tensors) or tensors
    if rehash:
        meta[S._META_DIGEST_KEY] = S._meta_digest(meta)
    save_file(tensors, str(dst), metadata=meta)
    return dst


def test_newer_format_version_is_refused(tmp_path, saved):
    p = _rewrite(saved, tmp_path / "future.safetensors", lambda m, t: m.update(format_version="99"))
    with pytest.raises(S.ModelFileError, match="version 99"):
        S.load(p)

    def two_labels(meta, tensors):  # 2 text labels for 10 counter rows, digests kept consistent
        del tensors["classes"]
        meta.update(classes=json.dumps(["a", "b"]), classes_dtype="<U1",
                    tensor_sha256=json.dumps({k: S._digest(v) for k, v in tensors.items()}))
        return tensors

    p = _rewrite(saved, tmp_path / "few.safetensors", two_labels)
    with pytest.raises(S.ModelFileError, match=r"\(2,\) classes for 10 counter rows"):
        S.load(p)


def test_save_refuses_unfitted_or_unknown(tmp_path):
    with pytest.raises(ValueError, match="not fitted"):
        S.save(tmp_path / "x", C.CentroidClassifier(dim=64))
    with pytest.raises(TypeError, match="cannot save"):
        S.save(tmp_path / "x", object())
    clf = C.CentroidClassifier(dim=64).fit(hdc.random(4, 64, seed=0), [0, 1, 0, 1])
    with pytest.raises(NotFittedError):
        S.save(tmp_path / "x", (E.RandomProjectionEncoder(dim=64), clf))
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- every encoder x classifier
TEXTS = ["the cat sat on the mat", "le chat est sur le tapis", "the dog ran home", "le chien court vite",
         "a cat and a dog", "un chat et un chien"] * 3
LANGS = ["en", "fr"] * 9

ENCODERS = {
    "ngram": lambda: E.NGramEncoder(n=3, dim=320, unknown="skip", seed=4),
    "random_projection": lambda: E.RandomProjectionEncoder(dim=320, gamma=0.7, seed=3, batch_size=100),
    "record": lambda: E.RecordEncoder(dim=320, n_levels=9, per_feature=True, seed=1),
    "level": lambda: E.LevelEncoder(dim=320, n_levels=12, kind="circular", seed=2),
    "level_many": lambda: E.LevelEncoder(dim=320, n_levels=12, low=0.0, high=[16, 16, 8, 16, 16], seed=6),
}
CLASSIFIERS = {
    "centroid": lambda: C.CentroidClassifier(dim=320, bits=6, temperature=7.5),
    "retrain": lambda: C.RetrainClassifier(dim=320, epochs=2, update="onlinehd", lr=0.3, seed=5),
    "retrain_packed": lambda: C.RetrainClassifier(dim=320, epochs=3, refit=True, seed=1),
}


def _data_for(enc_name, digits):
    if enc_name == "ngram":
        return TEXTS, np.array(LANGS), ["the hat", "le chat"]
    Xtr, ytr, Xte, _ = digits
    if enc_name == "level":
        return Xtr[:300, [36]], ytr[:300], Xte[:50, [36]]
    if enc_name == "level_many":
        return Xtr[:300, 30:35], ytr[:300], Xte[:50, 30:35]
    return Xtr[:300], ytr[:300], Xte[:50]


@pytest.mark.parametrize("clf_name", sorted(CLASSIFIERS))
@pytest.mark.parametrize("enc_name", sorted(ENCODERS))
def test_every_encoder_classifier_pipeline_round_trips(tmp_path, digits, enc_name, clf_name):
    X, y, Xq = _data_for(enc_name, digits)
    pipe = make_pipeline(ENCODERS[enc_name](), CLASSIFIERS[clf_name]()).fit(X, y)
    back = S.load(S.save(tmp_path / "m.safetensors", pipe))
    assert [type(s) for s in back] == [type(s) for s in pipe]
    assert back[0].get_params() | {"alphabet": None} == pipe[0].get_params() | {"alphabet": None}
    assert back[-1].get_params() == pipe[-1].get_params()
    assert np.array_equal(back[0].transform(Xq), pipe[0].transform(Xq))
    assert np.array_equal(back[-1].counters_, pipe[-1].counters_)
    assert np.array_equal(back.predict(Xq), pipe.predict(Xq))
    np.testing.assert_array_equal(back.predict_proba(Xq), pipe.predict_proba(Xq))
    pair = S.load(S.save(tmp_path / "pair.safetensors", (pipe[0], pipe[-1])))  # the tuple form
    assert isinstance(pair, tuple) and np.array_equal(pair[1].predict(pair[0].transform(Xq)), pipe.predict(Xq))


# ---------------------------------------------------------------- labels keep their dtype
LABELS = {
    "bool": np.array([False, True]),
    "int8": np.array([-3, 7], np.int8),
    "uint8": np.array([1, 200], np.uint8),
    "int16": np.array([-300, 300], np.int16),
    "uint64": np.array([1, 2**64 - 1], np.uint64),
    "int64": np.array([-2**62, 5], np.int64),
    "float16": np.array([-2.0, 3.0], np.float16),
    "float32": np.array([1.0, 2.0**30], np.float32),
    "float64": np.array([-4.0, 2.0**60]),
    "str": np.array(["cat", "dög"]),
    "object_str": np.array(["a", "longer label"], object),
    "bytes": np.array([b"x", b"\xffy"]),
    "datetime64": np.array(["2020-01-01", "2024-02-29"], "datetime64[D]"),
}


@pytest.mark.parametrize("name", sorted(LABELS))
def test_label_dtypes_survive_exactly(tmp_path, name):
    labels = LABELS[name]
    X = hdc.random(40, 200, seed=1)
    y = labels[np.arange(40) % 2]
    if name == "bytes":  # scikit-learn refuses bytes labels at fit; from_counters takes them
        clf = C.CentroidClassifier.from_counters(C.class_counters(X, np.arange(40) % 2, 2, 200), labels, 200)
    else:
        clf = C.CentroidClassifier(dim=200).fit(X, y)
    back = S.load(S.save(tmp_path / "m.safetensors", clf))
    assert back.classes_.dtype == clf.classes_.dtype
    assert np.array_equal(back.classes_, clf.classes_)
    assert back.classes_.tolist() == clf.classes_.tolist()  # element types too (object str)
    pred = back.predict(X)
    assert pred.dtype == clf.predict(X).dtype and np.array_equal(pred, clf.predict(X))


def test_labels_that_cannot_be_saved_are_refused(tmp_path):
    X = hdc.random(10, 64, seed=1)
    clf = C.CentroidClassifier(dim=64).fit(X, np.arange(10) % 2)
    clf.classes_ = np.array([("a", 1), ("b", 2)], object)[:, 0].copy()
    clf.classes_[1] = 2  # mixed str / int objects
    with pytest.raises(TypeError, match="cannot save class labels"):
        S.save(tmp_path / "m.safetensors", clf)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- the digest covers the metadata
@pytest.fixture
def text_model(tmp_path):
    enc = E.RandomProjectionEncoder(dim=256, gamma=1.5, seed=0)
    clf = C.CentroidClassifier(dim=256, temperature=100.0)
    X = np.random.default_rng(0).random((30, 8))
    pipe = make_pipeline(enc, clf).fit(X, np.array(["enx", "fry", "dez"])[np.arange(30) % 3])
    return S.save(tmp_path / "m.safetensors", pipe)


# The header is JSON whose metadata values are JSON strings, so inner quotes appear as \".
@pytest.mark.parametrize("old,new", [
    (rb'\"fry\"', rb'\"fri\"'),                                   # a class label
    (rb'\"temperature\": 100.0', rb'\"temperature\": 900.0'),      # a classifier parameter
    (rb'\"gamma\": 1.5', rb'\"gamma\": 2.5'),                      # an encoder parameter
    (b'"dim":"256"', b'"dim":"257"'),
    (b'"classes_dtype":"<U3"', b'"classes_dtype":"<U2"'),            # would cut the labels short
], ids=["label", "temperature", "gamma", "dim", "label_dtype"])
def test_a_changed_metadata_byte_is_refused(text_model, old, new):
    raw = text_model.read_bytes()
    header = raw[:8 + int.from_bytes(raw[:8], "little")]
    assert header.count(old) == 1, header
    text_model.write_bytes(raw.replace(old, new, 1))  # same length: the file still parses
    with pytest.raises(S.ModelFileError, match=r"metadata .* fails its SHA-256 check"):
        S.load(text_model)


def test_a_changed_tensor_dtype_is_refused(tmp_path, text_model):
    # same bytes, another dtype: counters read as uint64 would be other numbers
    raw = text_model.read_bytes()
    assert raw.count(b'"dtype":"I64"') >= 1
    text_model.write_bytes(raw.replace(b'"dtype":"I64"', b'"dtype":"U64"', 1))
    with pytest.raises(S.ModelFileError, match="SHA-256"):
        S.load(text_model)


def _as_format_1(meta, tensors, enc):
    """Edit a current file's contents into what format 1 wrote: no metadata digest, no label
    dtype, byte-only digests, integer labels as int64, 0 features for a LevelEncoder."""
    del meta[S._META_DIGEST_KEY], meta["classes_dtype"]
    meta["format_version"] = "1"
    if "classes" in tensors:
        tensors["classes"] = tensors["classes"].astype(np.int64)
    meta["tensor_sha256"] = json.dumps({k: S._digest(v, 1) for k, v in tensors.items()})
    names = json.loads(meta["encoder_digests"])
    meta["encoder_digests"] = json.dumps({k: S._digest(getattr(enc, k), 1) for k in names})
    if meta["encoder"] == "LevelEncoder":
        meta["encoder_state"] = json.dumps({"n_features_in_": 0})
    return tensors


def test_format_1_files_load_with_a_warning_and_resave_as_current(tmp_path, digits):
    import warnings

    Xtr, ytr, Xte, _ = digits
    pipe = make_pipeline(E.LevelEncoder(dim=256, n_levels=8), C.CentroidClassifier(dim=256))
    pipe.fit(Xtr[:200, [20]], ytr[:200])
    src = S.save(tmp_path / "v2.safetensors", pipe)
    old = _rewrite(src, tmp_path / "v1.safetensors", lambda m, t: _as_format_1(m, t, pipe[0]), rehash=False)
    with pytest.warns(S.UnverifiedMetadataWarning, match="format-1 .* re-save"):
        back = S.load(old)
    assert np.array_equal(back.predict(Xte[:, [20]]), pipe.predict(Xte[:, [20]]))
    S.save(old, back)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = S.load(old)  # current format now: no warning
    assert np.array_equal(again.predict(Xte[:, [20]]), pipe.predict(Xte[:, [20]]))


# ---------------------------------------------------------------- bad paths and foreign files
def test_bad_paths_and_files_name_the_path_and_problem(tmp_path, saved):
    from safetensors.numpy import save_file

    with pytest.raises(IsADirectoryError, match=f"{tmp_path}.*is a directory"):
        S.load(tmp_path)
    with pytest.raises(ValueError, match="path is empty"):
        S.load("")
    with pytest.raises(ValueError, match="path is empty"):
        S.save("", S.load(saved))
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        S.save(tmp_path, S.load(saved))
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        S.load(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(S.ModelFileError, match="junk.bin is (corrupt|not a safetensors)"):
        S.load(junk)
    foreign = tmp_path / "other.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(foreign))  # no metadata at all
    with pytest.raises(S.ModelFileError, match="other.safetensors is a safetensors file but not an hdspike"):
        S.load(foreign)
    raw = saved.read_bytes()
    saved.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(S.ModelFileError, match=f"{saved.name} is (truncated|corrupt|not a safetensors)"):
        S.load(saved)


def test_nothing_is_unpickled(tmp_path, saved, monkeypatch):
    import pickle

    def refuse(*a, **k):
        raise AssertionError("load() unpickled something")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(np, "load", refuse)
    assert S.load(saved)[-1].counters_.shape[0] == 10


def test_save_and_load_clean_a_killed_writers_temp(tmp_path, saved):
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()  # a pid that no longer runs
    for action in (lambda: S.load(saved), lambda: S.save(saved, S.load(saved))):
        stale = tmp_path / f".{saved.name}.{p.pid}.0a1b.tmp"
        stale.write_bytes(b"partial")
        action()
        assert not stale.exists()


def test_saved_file_has_the_normal_mode(tmp_path, saved):
    old = os.umask(0o022)
    try:
        S.save(saved, S.load(saved))
    finally:
        os.umask(old)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o644  # not mkstemp's 0600


# ---------------------------------------------------------------- byte order
# Model files are little-endian on every platform (safetensors stores little-endian). A
# big-endian machine holds its arrays in '>' order natively; the byte-swapped dtypes below
# are those arrays, so these tests check on this machine what a big-endian one would do.
@pytest.mark.parametrize("dtype", ["<i8", "<u8", "<f8", "<i4", "<f4"])
def test_digest_does_not_depend_on_byte_order(dtype):
    a = (np.arange(-20, 20) * 977).astype(dtype).reshape(5, 8)
    swapped = a.astype(np.dtype(dtype).newbyteorder(">"))
    assert swapped.tobytes() != a.tobytes()  # really another memory layout
    assert S._digest(swapped) == S._digest(a)


def _header_data(path):
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _tensor_bytes(path, name):
    header, data = _header_data(path)
    lo, hi = header[name]["data_offsets"]
    return header[name]["dtype"], data[lo:hi]


def test_saved_file_is_little_endian_from_big_endian_arrays(tmp_path, digits):
    Xtr, ytr, Xte, _ = digits
    pipe = make_pipeline(E.RandomProjectionEncoder(dim=640, seed=5), C.CentroidClassifier(dim=640)).fit(Xtr, ytr)
    native = S.save(tmp_path / "native.safetensors", pipe)
    counters = pipe[-1].counters_
    pipe[-1].counters_ = counters.astype(counters.dtype.newbyteorder(">"))  # as a big-endian machine holds it
    swapped = S.save(tmp_path / "swapped.safetensors", pipe)
    dtype, data = _tensor_bytes(swapped, "counters")
    assert dtype == "I64" and data == counters.astype("<i8").tobytes()
    # the same file (safetensors writes the metadata keys in no fixed order, so compare parsed)
    assert _header_data(native) == _header_data(swapped)
    back = S.load(swapped)
    np.testing.assert_array_equal(back[-1].counters_, counters)
    np.testing.assert_array_equal(back.predict(Xte), pipe.predict(Xte))
