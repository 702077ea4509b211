"""Save and load trained HDC models (encoder config + class counters) as safetensors.

A model file holds the class counters (int64, (K, dim)), numeric class labels and any fitted
encoder arrays as tensors, and in its metadata: a format tag, the format version, the
classifier and encoder types with their parameters, dim, the class labels (non-numeric ones)
and their dtype, a SHA-256 of every tensor (over its dtype, shape and bytes) and a SHA-256 of
all the metadata, so a changed byte anywhere (a label, ``temperature``, an encoder's
``gamma``) is refused. Encoder vectors are not stored: they are regenerated from the seeds
(and checked against stored digests). Nothing is unpickled; only known classes are rebuilt.
Writes go through :func:`hdc.io.atomic_write`; save and load remove temps left by a killed
writer of the same file. A corrupt, truncated or foreign file raises :class:`ModelFileError`
naming the path and the problem.

Format 1 files (before the metadata digest) still load, with an
:class:`UnverifiedMetadataWarning`: their tensors are checked but their metadata cannot be;
``save(path, load(path))`` rewrites one in the current format.

Example::

    from hdc import serialize
    serialize.save("model.safetensors", pipeline)     # a classifier, or Pipeline(encoder, classifier)
    model = serialize.load("model.safetensors")
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

from . import classifiers as C
from . import encoders as E
from .io import atomic_write, clean_stale_temps

__all__ = ["FORMAT", "FORMAT_VERSION", "ModelFileError", "UnverifiedMetadataWarning", "save", "load"]

FORMAT = "hdspike-hdc-model"
# 2: tensor digests cover dtype and shape, "metadata_sha256" covers the metadata, classes keep
# their dtype. 1: tensor bytes only (still read, with a warning).
FORMAT_VERSION = 2
_META_DIGEST_KEY = "metadata_sha256"

_CLASSIFIERS = {"CentroidClassifier": C.CentroidClassifier, "RetrainClassifier": C.RetrainClassifier}
_ENCODERS = {"NGramEncoder": E.NGramEncoder, "RandomProjectionEncoder": E.RandomProjectionEncoder,
             "RecordEncoder": E.RecordEncoder, "LevelEncoder": E.LevelEncoder}
# fitted arrays that must be stored (everything else is regenerated from the seed)
_ENCODER_STATE = {"NGramEncoder": (), "RandomProjectionEncoder": (), "RecordEncoder": ("low_", "high_"),
                  "LevelEncoder": ("low_", "high_")}
# regenerated arrays whose digest is stored, so a changed generator is caught at load time
_ENCODER_DIGESTS = {"NGramEncoder": ("table_",), "RandomProjectionEncoder": ("proj_", "bias_"),
                    "RecordEncoder": ("keys_", "levels_"), "LevelEncoder": ("keys_", "levels_")}


class ModelFileError(ValueError):
    """The file is not a readable hdspike HDC model (corrupt, truncated, foreign or too new)."""


class UnverifiedMetadataWarning(UserWarning):
    """A format-1 model file was loaded: its metadata (labels, parameters) has no checksum."""


def _digest(a: np.ndarray, version: int = FORMAT_VERSION) -> str:
    """SHA-256 of an array; from format 2 on over dtype and shape too (same bytes, other dtype
    or shape is another array)."""
    a = np.ascontiguousarray(a)
    if a.dtype.kind in "biufcmM" and a.dtype.byteorder not in ("<", "|"):
        # over the little-endian bytes, as the file stores them (safetensors is little-endian on
        # every platform): a big-endian machine computes the digest a little-endian one wrote
        a = a.astype(a.dtype.newbyteorder("<"))
    h = hashlib.sha256()
    if version >= 2:
        h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def _meta_digest(meta: dict) -> str:
    """SHA-256 of every metadata entry but the digest itself, in a canonical order. The
    metadata holds the tensor digests, so this one value covers the whole file."""
    body = {k: v for k, v in meta.items() if k != _META_DIGEST_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _classes_to_file(classes: np.ndarray):
    """Labels -> (tensor or None, metadata list or None, dtype string). Numeric labels are a
    tensor of their own dtype; text labels a JSON list; the dtype string restores them exactly."""
    kind = classes.dtype.kind
    if kind in "biuf":
        native = classes.astype(classes.dtype.newbyteorder("<"), copy=False)
        return np.ascontiguousarray(native), None, native.dtype.str
    if kind in "mM":  # datetimes: their int64 ticks, the unit in the dtype string
        return np.ascontiguousarray(classes.view(np.int64)), None, classes.dtype.str
    if kind == "U":
        return None, [str(c) for c in classes], classes.dtype.str
    if kind == "S":
        return None, [c.decode("latin-1") for c in classes], classes.dtype.str
    if kind == "O" and all(type(c) is str for c in classes):
        return None, list(classes), "|O"
    types = sorted({type(c).__name__ for c in classes})
    raise TypeError(f"cannot save class labels of dtype {classes.dtype} (element types {types}); "
                    f"labels must be numbers, bools, datetimes or str")


def _classes_from_file(tensor, listed, dtype_str: str) -> np.ndarray:
    dtype = np.dtype(dtype_str)
    if dtype.kind in "biuf":
        if tensor is None or tensor.dtype != dtype:
            raise ValueError(f"class labels of dtype {dtype} need a 'classes' tensor of that dtype, "
                             f"got {None if tensor is None else tensor.dtype}")
        return tensor
    if dtype.kind in "mM":
        return np.ascontiguousarray(tensor, np.int64).view(dtype)
    if listed is None:
        raise ValueError(f"class labels of dtype {dtype} need a list in the metadata")
    if dtype.kind == "S":
        return np.array([c.encode("latin-1") for c in listed], dtype)
    return np.array(listed, dtype)


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
    from sklearn.utils.validation import check_is_fitted

    enc, clf, is_pipe = _split(model)
    ctype = type(clf).__name__
    if ctype not in _CLASSIFIERS:
        raise TypeError(f"cannot save a {ctype}; supported classifiers: {sorted(_CLASSIFIERS)}")
    if not hasattr(clf, "counters_"):
        raise ValueError(f"the {ctype} is not fitted; fit it before saving")
    tensors = {"counters": np.ascontiguousarray(clf.counters_, np.int64)}
    class_tensor, class_list, class_dtype = _classes_to_file(np.asarray(clf.classes_))
    if class_tensor is not None:
        tensors["classes"] = class_tensor
    meta = {
        "format": FORMAT, "format_version": str(FORMAT_VERSION),
        "classifier": ctype, "classifier_params": json.dumps(_jsonable(clf.get_params())),
        "dim": str(int(clf.dim_)), "classes": json.dumps(class_list), "classes_dtype": class_dtype,
    }
    if enc is not None:
        etype = type(enc).__name__
        if etype not in _ENCODERS:
            raise TypeError(f"cannot save a {etype}; supported encoders: {sorted(_ENCODERS)}")
        params = _jsonable(enc.get_params())
        if etype == "NGramEncoder":
            enc._ensure()
            params["alphabet"] = enc.alphabet_
        else:
            check_is_fitted(enc, "n_features_in_")
        state = {"n_features_in_": int(getattr(enc, "n_features_in_", 0))}
        for name in _ENCODER_STATE[etype]:
            tensors[f"encoder.{name}"] = np.ascontiguousarray(np.atleast_1d(getattr(enc, name)), np.float64)
        digests = {name: _digest(getattr(enc, name)) for name in _ENCODER_DIGESTS[etype]}
        meta.update({"encoder": etype, "encoder_params": json.dumps(params),
                     "encoder_state": json.dumps(state), "encoder_digests": json.dumps(digests),
                     "pipeline": json.dumps(is_pipe)})
    meta["tensor_sha256"] = json.dumps({k: _digest(v) for k, v in tensors.items()})
    meta[_META_DIGEST_KEY] = _meta_digest(meta)
    data = st_save(tensors, metadata=meta)
    with atomic_write(path) as f:
        f.write(data)
    return Path(path)


def _read(path: Path):
    from safetensors import safe_open

    if path.is_dir():
        raise IsADirectoryError(f"model path {str(path)!r} is a directory, not a model file")
    clean_stale_temps(path)  # temps a killed save() of this file left behind
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
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


def _verify(path: Path, meta: dict, tensors: dict) -> int:
    """Check the format version and every digest; return the version."""
    version = int(meta.get("format_version", "-1"))
    if version > FORMAT_VERSION or version < 1:
        raise ModelFileError(f"{path} has format version {version}; this hdspike reads 1 to "
                             f"{FORMAT_VERSION} (upgrade hdspike)")
    if version >= 2:
        stored = meta.get(_META_DIGEST_KEY)
        if stored is None:
            raise ModelFileError(f"{path}: format {version} file without its {_META_DIGEST_KEY!r}")
        if _meta_digest(meta) != stored:
            raise ModelFileError(f"{path}: the metadata (labels, parameters) fails its SHA-256 check "
                                 f"(file corrupted or edited)")
    else:
        warnings.warn(UnverifiedMetadataWarning(
            f"{path} is a format-1 model file: its tensors are checked but its metadata (class labels, "
            f"parameters) has no checksum; re-save it with hdc.serialize.save(path, hdc.serialize.load(path)) "
            f"to add one"), stacklevel=3)
    digests = json.loads(meta["tensor_sha256"])
    if set(digests) != set(tensors):
        raise ModelFileError(f"{path}: stored tensors {sorted(tensors)} differ from its index {sorted(digests)}")
    for k, v in tensors.items():
        if _digest(v, version) != digests[k]:
            raise ModelFileError(f"{path}: tensor {k!r} fails its SHA-256 check (file corrupted)")
    return version


def load(path):
    """Read a model written by :func:`save`: a classifier, an (encoder, classifier) pair or a Pipeline."""
    if os.fspath(path) == "":
        raise ValueError("model path is empty; give the path of a file written by hdc.serialize.save")
    path = Path(path)
    meta, tensors = _read(path)
    try:
        version = _verify(path, meta, tensors)
        ctype = meta["classifier"]
        if ctype not in _CLASSIFIERS:
            raise ModelFileError(f"{path}: unknown classifier type {ctype!r}")
        dim = int(meta["dim"])
        counters = tensors["counters"]
        if counters.ndim != 2 or counters.shape[1] != dim or counters.dtype != np.int64:
            raise ModelFileError(f"{path}: counters of shape {counters.shape} {counters.dtype} do not match dim={dim}")
        cmeta = json.loads(meta["classes"])
        if version >= 2:
            classes = _classes_from_file(tensors.get("classes"), cmeta, meta["classes_dtype"])
        else:  # format 1 kept numbers as int64/float64 tensors and everything else as str
            classes = np.asarray(cmeta) if cmeta is not None else tensors["classes"]
        if classes.shape != (counters.shape[0],):
            raise ModelFileError(f"{path}: {classes.shape} classes for {counters.shape[0]} counter rows")
        clf = _CLASSIFIERS[ctype](**json.loads(meta["classifier_params"]))
        clf._validate_params()
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
            _rebuild_encoder(path, enc, etype, state, tensors)
            for name, dig in json.loads(meta["encoder_digests"]).items():
                if _digest(getattr(enc, name), version) != dig:
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


def _rebuild_encoder(path, enc, etype, state, tensors):
    if etype == "NGramEncoder":
        enc._build(enc.alphabet)
        return
    # format-1 files stored 0 features for a LevelEncoder (it encoded exactly one then)
    nf = int(state["n_features_in_"])
    if etype == "LevelEncoder" and nf == 0:
        nf = 1
    if nf < 1:
        raise ModelFileError(f"{path}: the {etype}'s state lacks its number of features")
    enc.fit(np.zeros((1, nf)))
    if etype in ("RecordEncoder", "LevelEncoder"):
        low, high = tensors["encoder.low_"], tensors["encoder.high_"]
        if low.shape != (nf,) or high.shape != (nf,):
            raise ModelFileError(f"{path}: the {etype}'s low_/high_ have shapes {low.shape}/{high.shape}, "
                                 f"expected ({nf},) for its {nf} features")
        enc.low_, enc.high_ = low, high
