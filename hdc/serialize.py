"""Save and load trained HDC models (encoder config + class counters) as safetensors.

A model file holds the class counters (int64, (K, dim)) and any fitted encoder arrays as
tensors, and in its metadata: a format tag, the format version, the classifier and encoder
types with their parameters, dim, the class labels and a SHA-256 of every tensor. Encoder
vectors are not stored: they are regenerated from the seeds (and checked against stored
digests). Nothing is unpickled; only known classes are rebuilt. Writes are atomic (temp
file + ``os.replace``); a corrupt, truncated or foreign file raises :class:`ModelFileError`.

Example::

    from hdc import serialize
    serialize.save("model.safetensors", pipeline)     # a classifier, or Pipeline(encoder, classifier)
    model = serialize.load("model.safetensors")
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from . import classifiers as C
from . import encoders as E

__all__ = ["FORMAT", "FORMAT_VERSION", "ModelFileError", "save", "load"]

FORMAT = "hdspike-hdc-model"
FORMAT_VERSION = 1

_CLASSIFIERS = {"CentroidClassifier": C.CentroidClassifier, "RetrainClassifier": C.RetrainClassifier}
_ENCODERS = {"NGramEncoder": E.NGramEncoder, "RandomProjectionEncoder": E.RandomProjectionEncoder,
             "RecordEncoder": E.RecordEncoder, "LevelEncoder": E.LevelEncoder}
# fitted arrays that must be stored (everything else is regenerated from the seed)
_ENCODER_STATE = {"NGramEncoder": (), "RandomProjectionEncoder": (), "RecordEncoder": ("low_", "high_"),
                  "LevelEncoder": ("low_", "high_")}
# regenerated arrays whose digest is stored, so a changed generator is caught at load time
_ENCODER_DIGESTS = {"NGramEncoder": ("table_",), "RandomProjectionEncoder": ("proj_", "bias_"),
                    "RecordEncoder": ("keys_", "levels_"), "LevelEncoder": ("levels_",)}


class ModelFileError(ValueError):
    """The file is not a readable hdspike HDC model (corrupt, truncated, foreign or too new)."""


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _jsonable(params: dict) -> dict:
    out = {}
    for k, v in params.items():
        if isinstance(v, np.generic):
            v = v.item()
        json.dumps(v)  # raises for anything that is not plain data
        out[k] = v
    return out


def _split(model):
    """(encoder or None, classifier, was_pipeline)."""
    from sklearn.pipeline import Pipeline

    if isinstance(model, Pipeline):
        steps = [s for _, s in model.steps]
        if len(steps) != 2:
            raise TypeError("save() handles a Pipeline of exactly (encoder, classifier)")
        return steps[0], steps[1], True
    if isinstance(model, tuple) and len(model) == 2:
        return model[0], model[1], False
    return None, model, False


def save(path, model) -> Path:
    """Write a fitted classifier, a (encoder, classifier) pair or a 2-step Pipeline to ``path``."""
    from safetensors.numpy import save as st_save

    enc, clf, is_pipe = _split(model)
    ctype = type(clf).__name__
    if ctype not in _CLASSIFIERS:
        raise TypeError(f"cannot save a {ctype}; supported classifiers: {sorted(_CLASSIFIERS)}")
    if not hasattr(clf, "counters_"):
        raise ValueError("the classifier is not fitted; fit it before saving")
    tensors = {"counters": np.ascontiguousarray(clf.counters_, np.int64)}
    classes = np.asarray(clf.classes_)
    if classes.dtype.kind in "iub":
        tensors["classes"] = classes.astype(np.int64)
        classes_meta = None
    elif classes.dtype.kind == "f":
        tensors["classes"] = classes.astype(np.float64)
        classes_meta = None
    else:
        classes_meta = [str(c) for c in classes]
    meta = {
        "format": FORMAT, "format_version": str(FORMAT_VERSION),
        "classifier": ctype, "classifier_params": json.dumps(_jsonable(clf.get_params())),
        "dim": str(int(clf.dim_)), "classes": json.dumps(classes_meta),
    }
    if enc is not None:
        etype = type(enc).__name__
        if etype not in _ENCODERS:
            raise TypeError(f"cannot save a {etype}; supported encoders: {sorted(_ENCODERS)}")
        params = _jsonable(enc.get_params())
        if etype == "NGramEncoder":
            enc._ensure()
            params["alphabet"] = enc.alphabet_
        state = {"n_features_in_": int(getattr(enc, "n_features_in_", 0))}
        for name in _ENCODER_STATE[etype]:
            tensors[f"encoder.{name}"] = np.ascontiguousarray(np.atleast_1d(getattr(enc, name)), np.float64)
        digests = {name: _digest(getattr(enc, name)) for name in _ENCODER_DIGESTS[etype]}
        meta.update({"encoder": etype, "encoder_params": json.dumps(params),
                     "encoder_state": json.dumps(state), "encoder_digests": json.dumps(digests),
                     "pipeline": json.dumps(is_pipe)})
    meta["tensor_sha256"] = json.dumps({k: _digest(v) for k, v in tensors.items()})
    data = st_save(tensors, metadata=meta)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _read(path: Path):
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    raw = path.read_bytes()
    if len(raw) < 8:
        raise ModelFileError(f"{path} is truncated ({len(raw)} bytes): not an hdspike model file")
    header_len = int.from_bytes(raw[:8], "little")
    if header_len > len(raw) - 8 or header_len > 100_000_000:
        raise ModelFileError(f"{path} is not a safetensors file or is truncated (header of {header_len} "
                             f"bytes in a {len(raw)}-byte file)")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise ModelFileError(f"{path} is a safetensors file but not an hdspike HDC model "
                                     f"(format tag {meta.get('format')!r}, expected {FORMAT!r})")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except ModelFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for bad files
        raise ModelFileError(f"{path} is corrupt or not a safetensors file ({type(exc).__name__}: {exc})") from exc
    return meta, tensors


def load(path):
    """Read a model written by :func:`save`: a classifier, an (encoder, classifier) pair or a Pipeline."""
    path = Path(path)
    meta, tensors = _read(path)
    try:
        version = int(meta.get("format_version", "-1"))
        if version > FORMAT_VERSION or version < 1:
            raise ModelFileError(f"{path} has format version {version}; this hdspike reads up to "
                                 f"{FORMAT_VERSION} (upgrade hdspike)")
        digests = json.loads(meta["tensor_sha256"])
        if set(digests) != set(tensors):
            raise ModelFileError(f"{path}: stored tensors {sorted(tensors)} differ from its index {sorted(digests)}")
        for k, v in tensors.items():
            if _digest(v) != digests[k]:
                raise ModelFileError(f"{path}: tensor {k!r} fails its SHA-256 check (file corrupted)")
        ctype = meta["classifier"]
        if ctype not in _CLASSIFIERS:
            raise ModelFileError(f"{path}: unknown classifier type {ctype!r}")
        dim = int(meta["dim"])
        counters = tensors["counters"]
        if counters.ndim != 2 or counters.shape[1] != dim or counters.dtype != np.int64:
            raise ModelFileError(f"{path}: counters of shape {counters.shape} {counters.dtype} do not match dim={dim}")
        cmeta = json.loads(meta["classes"])
        classes = np.asarray(cmeta) if cmeta is not None else tensors["classes"]
        if classes.shape != (counters.shape[0],):
            raise ModelFileError(f"{path}: {classes.shape} classes for {counters.shape[0]} counter rows")
        clf = _CLASSIFIERS[ctype](**json.loads(meta["classifier_params"]))
        clf.dim_ = dim
        clf.classes_ = classes
        clf._set_counters(counters, quantize=False)
        enc = None
        if "encoder" in meta:
            etype = meta["encoder"]
            if etype not in _ENCODERS:
                raise ModelFileError(f"{path}: unknown encoder type {etype!r}")
            enc = _ENCODERS[etype](**json.loads(meta["encoder_params"]))
            state = json.loads(meta["encoder_state"])
            _rebuild_encoder(enc, etype, state, tensors)
            for name, dig in json.loads(meta["encoder_digests"]).items():
                if _digest(getattr(enc, name)) != dig:
                    raise ModelFileError(f"{path}: the encoder's {name} regenerated from its seed differs "
                                         f"from the saved one (generator changed?)")
    except ModelFileError:
        raise
    except (KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: malformed hdspike model metadata ({type(exc).__name__}: {exc})") from exc
    if enc is None:
        return clf
    if json.loads(meta.get("pipeline", "false")):
        from sklearn.pipeline import make_pipeline

        return make_pipeline(enc, clf)
    return enc, clf


def _rebuild_encoder(enc, etype, state, tensors):
    if etype == "NGramEncoder":
        enc._build(enc.alphabet)
        return
    nf = int(state["n_features_in_"])
    if nf < 1:
        raise ModelFileError(f"{etype} state lacks its number of features")
    if etype == "RandomProjectionEncoder":
        enc.fit(np.zeros((1, nf)))
    elif etype == "RecordEncoder":
        enc.fit(np.zeros((1, nf)))
        enc.low_ = tensors["encoder.low_"]
        enc.high_ = tensors["encoder.high_"]
    elif etype == "LevelEncoder":
        enc.fit(np.zeros((1, 1)))
        enc.low_ = float(tensors["encoder.low_"][0])
        enc.high_ = float(tensors["encoder.high_"][0])
