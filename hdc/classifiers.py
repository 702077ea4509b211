"""HDC classifiers on packed hypervectors: one-pass centroids and perceptron retraining.

A trained model is one integer counter per class and bit (the bipolar sum of what was added
to the class). Prediction is exact integer arithmetic on packed words: the counters are
split into bit-planes, each a packed vector, so a query's dot product with a class is
``sum_p 2**p * popcount(query AND plane_p)``, computed from ``hdc.hamming_matrix`` and
``hdc.popcount`` of the fast backend; the score is that dot product divided by the class
norm (cosine). Binarising the classes would be cheaper but costs accuracy (see MODELS.md).

Both classifiers are scikit-learn estimators that take packed words (uint64, (n, n_words));
put an encoder from :mod:`hdc.encoders` in front of them in a ``Pipeline`` for raw features.
scikit-learn's conformance suite accepts them (tests/test_sklearn_conformance.py); the checks
that need a fit on float features cannot apply to a classifier alone and are declared by
:func:`expected_failed_checks`. ``RetrainClassifier`` trains on the packed words too
(:func:`hdc._train.perceptron_epoch_packed`), exactly as its float64 reference does.

Example::

    from sklearn.pipeline import make_pipeline
    from hdc.encoders import RandomProjectionEncoder
    from hdc.classifiers import RetrainClassifier
    clf = make_pipeline(RandomProjectionEncoder(dim=10_000), RetrainClassifier(dim=10_000))
    clf.fit(X_train, y_train).score(X_test, y_test)
"""
from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d

from . import functional as F
from ._planes import cosine_scores, counter_planes, planes_dot
from ._train import perceptron_epoch, perceptron_epoch_packed
from .packing import check_dim, n_words_for, pack_bits, pad_mask

__all__ = [
    "class_counters",
    "counter_planes",
    "planes_dot",
    "cosine_scores",
    "quantize_counters",
    "CentroidClassifier",
    "RetrainClassifier",
    "expected_failed_checks",
]

# ---------------------------------------------------------------- functional core
def class_counters(X: np.ndarray, y_idx: np.ndarray, n_classes: int, dim: int) -> np.ndarray:
    """Bipolar sum of the vectors of each class, through the streaming bundle accumulator.

    Shapes: X (n, W) uint64, y_idx (n,) ints in [0, n_classes) -> (n_classes, dim) int64.
    Example: ``C = class_counters(X, y, 10, 10_000)``
    """
    C = np.zeros((n_classes, dim), np.int64)
    for k in range(n_classes):
        rows = np.ascontiguousarray(X[y_idx == k])
        if rows.shape[0]:
            acc = F.BundleAccumulator(dim)
            acc.add(rows)
            C[k] = acc.bipolar_sum()
    return C


def quantize_counters(C: np.ndarray, bits: int) -> np.ndarray:
    """Round counters to signed ``bits``-bit integers, one scale for all classes.

    Shapes: (K, dim) -> (K, dim) int64 in [-2**(bits-1), 2**(bits-1) - 1].
    """
    C = np.asarray(C, np.float64)
    top = np.abs(C).max()
    if top == 0:
        return np.zeros(C.shape, np.int64)
    half = 2 ** (bits - 1)
    return np.clip(np.rint(C * ((half - 0.5) / top)), -half, half - 1).astype(np.int64)


# ---------------------------------------------------------------- estimators
def _check_bits(bits):
    if bits is None:
        return None
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or not 1 <= bits <= 48:
        raise ValueError(f"bits must be None (exact counters) or an int in 1..48, got {bits!r}")
    return int(bits)


def _check_temperature(t):
    # NaN fails every comparison, so test for the allowed range rather than for bad values
    if isinstance(t, bool) or not isinstance(t, numbers.Real) or not (np.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be a finite number > 0 (the softmax scale of "
                         f"predict_proba), got {t!r}")
    return float(t)


# scikit-learn's conformance suite (sklearn.utils.estimator_checks) fits every estimator on
# float feature matrices it generates. A classifier here takes packed uint64 words (what an
# encoder returns), so it refuses those with a TypeError, and the checks below, which need a
# successful fit on such data, do not apply to a classifier alone. Each passes for the same
# classifier behind an encoder in a Pipeline (tests/test_sklearn_conformance.py runs both, and
# checks that exactly these fail alone). Every other check (errors before fit, for NaN/inf,
# sparse, complex, 1-D or empty X, for a bad, continuous or one-class y) passes alone too.
_FLOAT_FIT_CHECKS = (
    "check_classifier_data_not_an_array", "check_classifiers_classes", "check_classifiers_train",
    "check_decision_proba_consistency", "check_dict_unchanged", "check_dont_overwrite_parameters",
    "check_dtype_object", "check_estimators_dtypes", "check_estimators_fit_returns_self",
    "check_estimators_nan_inf", "check_estimators_overwrite_params", "check_estimators_pickle",
    "check_f_contiguous_array_estimator", "check_fit2d_1feature", "check_fit2d_predict1d",
    "check_fit_check_is_fitted", "check_fit_idempotent", "check_fit_score_takes_y",
    "check_methods_sample_order_invariance", "check_methods_subset_invariance", "check_n_features_in",
    "check_n_features_in_after_fitting", "check_pipeline_consistency", "check_positive_only_tag_during_fit",
    "check_readonly_memmap_input", "check_supervised_y_2d",
)
_FLOAT_FIT_REASON = ("fits on the float features the suite generates; a classifier alone takes packed uint64 "
                     "words (an encoder's output) and refuses floats with a TypeError. The same check passes "
                     "for the classifier behind an encoder in a Pipeline")


def expected_failed_checks(estimator) -> dict:
    """The scikit-learn conformance checks a classifier here is expected to fail alone, each with its
    reason, for ``parametrize_with_checks(..., expected_failed_checks=expected_failed_checks)``.

    Only checks that need a fit on float features: the packed-input contract makes them
    inapplicable to a classifier alone. Everything else (and every check of a Pipeline of an
    encoder and a classifier, but the two scikit-learn's own Pipeline fails) passes.
    """
    if not isinstance(estimator, _HDCClassifier):
        return {}
    names = list(_FLOAT_FIT_CHECKS)
    if hasattr(estimator, "partial_fit"):
        names.append("check_estimators_partial_fit_n_features")
    return {name: _FLOAT_FIT_REASON for name in sorted(names)}


def _is_dask(X) -> bool:
    """A dask collection (checked by module name: dask stays an optional dependency)."""
    return type(X).__module__.split(".")[0] == "dask"


class _HDCClassifier(ClassifierMixin, BaseEstimator):
    """Shared parts: input checks, the counter model, bit-plane scoring."""

    def _validate_params(self):
        _check_bits(self.bits)
        _check_temperature(self.temperature)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        return tags

    def _check_fitted(self):
        if not hasattr(self, "counters_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit() first")

    def _check_X_shape(self, X, *, fitting: bool) -> np.ndarray:
        """First half of the input check: the container, shape and values (not yet the dtype).

        The dtype (packed uint64 words) is checked after ``y`` (see :meth:`_check_X_words`), so a
        bad ``y`` or a NaN is reported as such whatever X holds.
        """
        who = type(self).__name__
        if sp.issparse(X):
            raise TypeError(f"X is a sparse {type(X).__name__}, but {who} takes dense packed words only "
                            f"(sparse input is not supported): pass X.toarray().astype(np.uint64)")
        if not isinstance(X, np.ndarray):
            X = np.asarray(X)
        if X.dtype.kind == "c":
            raise ValueError(f"Complex data not supported: X has dtype {X.dtype}; {who} takes packed "
                             f"uint64 words")
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (n_samples, n_words), got shape {X.shape}; Reshape your data: "
                             f"X.reshape(1, -1) if it holds one packed vector")
        if fitting and X.shape[0] < 1:
            raise ValueError(f"X has shape {X.shape}: {who}.fit needs at least 1 sample (0 sample(s) given)")
        if X.shape[1] < 1:
            raise ValueError(f"X has shape {X.shape}: no words (0 feature(s) (shape={X.shape}) while a "
                             f"minimum of 1 is required)")
        if X.dtype.kind == "f" and not np.all(np.isfinite(X)):
            raise ValueError(f"X contains NaN or infinite values; {who} takes packed uint64 words (encode "
                             f"features first, after imputing or dropping the NaN/inf)")
        return X

    def _check_X_words(self, X, *, fitting: bool) -> np.ndarray:
        """Second half: packed uint64 words of the model's dim, pad bits zero."""
        if X.dtype != np.uint64:
            raise TypeError(
                f"{type(self).__name__} takes packed hypervectors (uint64 words, shape (n, n_words)), "
                f"got dtype {X.dtype}; encode features first, e.g. make_pipeline("
                f"RandomProjectionEncoder(dim=...), {type(self).__name__}(dim=...))")
        X = np.ascontiguousarray(X)
        if fitting:
            dim = X.shape[1] * 64 if self.dim is None else check_dim(self.dim)
            if X.shape[1] != n_words_for(dim):
                raise ValueError(f"X has {X.shape[1]} words per vector but dim={dim} needs "
                                 f"{n_words_for(dim)}")
        else:
            dim = self.dim_
            if X.shape[1] != n_words_for(dim):
                raise ValueError(f"X has {X.shape[1]} words per vector but the model was trained at "
                                 f"dim={dim} ({n_words_for(dim)} words)")
        # Set pad bits would count in every popcount and change scores (and labels), so every
        # entry point refuses them, not only fit.
        if X.shape[0] and X.shape[1]:
            bad = np.flatnonzero(X[:, -1] & ~pad_mask(dim))
            if bad.size:
                raise ValueError(f"X has bits set past dim={dim} (pad bits of the last word must be "
                                 f"zero): {bad.size} of {X.shape[0]} rows, first row {int(bad[0])} "
                                 f"with last word {int(X[bad[0], -1]):#x}")
        if fitting:
            self.dim_ = dim
        return X

    def _check_X(self, X, *, fitting: bool) -> np.ndarray:
        if not fitting:
            self._check_fitted()
        return self._check_X_words(self._check_X_shape(X, fitting=fitting), fitting=fitting)

    def _check_y(self, y, n):
        who = type(self).__name__
        if y is None:
            raise ValueError(f"{who} requires y to be passed, but the target y is None")
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)  # warns (DataConversionWarning) and ravels a column
        if y.ndim != 1 or y.shape[0] != n:
            raise ValueError(f"X has {n} rows, y has shape {y.shape}: y must be 1-D with one label per sample")
        if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
            # worded as scikit-learn words it, which its conformance suite asks of a Pipeline
            what = "NaN." if np.isnan(y).any() else "infinity or a value too large for dtype('float64')."
            first = int(np.flatnonzero(~np.isfinite(y))[0])
            raise ValueError(f"Input y contains {what} Class labels must be finite (first bad label at "
                             f"sample {first})")
        check_classification_targets(y)
        classes, y_idx = np.unique(y, return_inverse=True)
        if classes.size < 2:
            raise ValueError(f"y has 1 class ({classes.tolist()}): a classifier needs samples of at least "
                             f"2 classes to train")
        return classes, y_idx.astype(np.int64)

    def _check_Xy(self, X, y):
        """fit's input check, in the order that names the first real problem: X's shape and values,
        then y, then X's dtype and packing."""
        X = self._check_X_shape(X, fitting=True)
        classes, y_idx = self._check_y(y, X.shape[0])
        return self._check_X_words(X, fitting=True), classes, y_idx

    def _set_counters(self, C, *, quantize: bool = True):
        """Install integer counters (K, dim) as the model: planes, offsets, sums, norms."""
        C = np.asarray(C, np.int64)
        bits = _check_bits(getattr(self, "bits", None))
        if bits is not None and quantize:
            C = quantize_counters(C, bits)
        self.counters_ = C
        self.planes_, self.offsets_ = counter_planes(C, self.dim_)
        self.sums_ = C.sum(axis=1)
        self.norms_ = np.sqrt((C.astype(np.float64) ** 2).sum(axis=1))
        self.n_features_in_ = n_words_for(self.dim_)
        return self

    def dot(self, X) -> np.ndarray:
        """Exact integer dot products of bipolar queries with the class counters. (m, K) int64."""
        X = self._check_X(X, fitting=False)
        return planes_dot(X, self.planes_, self.offsets_, self.sums_)

    def decision_function(self, X) -> np.ndarray:
        """Cosine similarity of each query with each class: (m, K) (for 2 classes, (m,) = s1 - s0)."""
        s = cosine_scores(self.dot(X), self.norms_, self.dim_)
        return s[:, 1] - s[:, 0] if s.shape[1] == 2 else s

    def predict(self, X) -> np.ndarray:
        """The class with the highest cosine score (ties: the first class); lazy (a dask array)
        on dask input."""
        if _is_dask(X):
            from . import distributed
            return distributed.predict(self, X)
        s = cosine_scores(self.dot(X), self.norms_, self.dim_)
        return self.classes_[np.argmax(s, axis=1)]

    def predict_proba(self, X) -> np.ndarray:
        """Softmax of the cosine scores times ``temperature``: a ranking-preserving score in [0, 1]
        (not calibrated)."""
        t = _check_temperature(self.temperature)  # checked here too: set_params() after fit
        s = cosine_scores(self.dot(X), self.norms_, self.dim_) * t
        s -= s.max(axis=1, keepdims=True)
        e = np.exp(s)
        return e / e.sum(axis=1, keepdims=True)

    def class_vectors(self) -> np.ndarray:
        """Binarised classes (majority of each counter; 0 -> bit 0): (K, W) uint64, for Hamming use."""
        self._check_fitted()
        return pack_bits(self.counters_ < 0)


class CentroidClassifier(_HDCClassifier):
    """One-pass HDC classifier: each class is the bundle (integer bipolar sum) of its samples.

    Trained through :class:`hdc.BundleAccumulator` (streaming, mergeable); ``partial_fit``
    adds more samples. Scored by cosine against the integer counters (``bits`` quantizes them).

    Shapes: fit(X (n, W) uint64, y (n,)); predict(X (m, W)) -> (m,).
    Example: ``CentroidClassifier(dim=10_000).fit(Xw, y).score(Xw_test, y_test)``
    """

    def __init__(self, dim=None, bits=None, temperature=100.0):
        self.dim = dim
        self.bits = bits
        self.temperature = temperature

    def fit(self, X, y):
        if _is_dask(X):   # map-reduce over the chunks: hdc.distributed.fit, the same counters
            from . import distributed
            return distributed.fit(self, X, y)
        self._validate_params()
        X, self.classes_, y_idx = self._check_Xy(X, y)
        self.raw_counters_ = class_counters(X, y_idx, len(self.classes_), self.dim_)
        return self._set_counters(self.raw_counters_)

    def partial_fit(self, X, y, classes=None):
        """Add samples to the class counters (the first call needs ``classes``, or fits)."""
        if not hasattr(self, "raw_counters_"):
            if classes is None:
                return self.fit(X, y)
            self._validate_params()
            X = self._check_X(X, fitting=True)
            self.classes_ = np.unique(np.asarray(classes))
            if self.classes_.size < 2:
                raise ValueError("need at least 2 classes")
            self.raw_counters_ = np.zeros((len(self.classes_), self.dim_), np.int64)
            self._set_counters(self.raw_counters_)
        X = self._check_X(X, fitting=False)
        y = np.asarray(y)
        if y.shape != (X.shape[0],):
            raise ValueError(f"partial_fit needs one label per sample: X has {X.shape[0]} rows, "
                             f"y has shape {y.shape}")
        idx = np.searchsorted(self.classes_, y)
        idx = np.clip(idx, 0, len(self.classes_) - 1)
        if not np.all(self.classes_[idx] == y):
            raise ValueError(f"partial_fit got labels outside the known classes {self.classes_.tolist()}")
        self.raw_counters_ += class_counters(X, idx, len(self.classes_), self.dim_)
        return self._set_counters(self.raw_counters_)

    @classmethod
    def from_counters(cls, counters, classes, dim, **params) -> "CentroidClassifier":
        """A fitted classifier from given integer class counters (K, dim), e.g. n-gram counts."""
        self = cls(dim=dim, **params)
        self._validate_params()
        self.dim_ = check_dim(dim)
        C = np.asarray(counters)
        if C.ndim != 2 or C.shape[1] != self.dim_:
            raise ValueError(f"counters must have shape (K, {self.dim_}), got {C.shape}")
        if C.dtype.kind not in "iu":
            raise TypeError(f"counters must be integers, got {C.dtype}")
        self.classes_ = np.asarray(classes)
        if self.classes_.shape != (C.shape[0],):
            raise ValueError(f"{C.shape[0]} counter rows but {self.classes_.shape} classes")
        self.raw_counters_ = C.astype(np.int64)
        return self._set_counters(self.raw_counters_)


class RetrainClassifier(_HDCClassifier):
    """Iteratively retrained HDC classifier: an (averaged) perceptron on integer class counters.

    Every sample is encoded once; each epoch walks the stored packed vectors in a seeded
    random order and, on a mistake, adds the sample to its class and subtracts it from the
    predicted one (``update='perceptron'``), or does the same weighted by ``lr * (1 - cos)``
    (``update='onlinehd'``, as OnlineHD, Imani et al. 2021). ``average=True`` keeps the running
    average of the counters (the averaged perceptron), stable from the first epoch. The number
    of epochs is chosen on ``validation_fraction`` of the TRAINING data (never the test set);
    with ``refit=True`` the model is then retrained on all of it for that many epochs.

    ``trainer='packed'`` (default) runs the perceptron epochs on the packed vectors and integer
    counters, scored by the same bit-plane kernels as prediction; ``trainer='float'`` runs the
    unpacked float64 reference. Both make the same mistakes and leave the same counters, bit for
    bit; packed is faster. OnlineHD's real-valued updates always take the float path.

    Shapes: fit(X (n, W) uint64, y (n,)); predict(X (m, W)) -> (m,).
    Example: ``RetrainClassifier(dim=10_000, epochs=10).fit(Xw, y).score(Xw_test, y_test)``
    """

    def __init__(self, dim=None, epochs=10, update="perceptron", average=True, init="zero",
                 lr=1.0, validation_fraction=0.1, refit=False, bits=None, seed=0,
                 temperature=100.0, verbose=False, trainer="packed"):
        self.dim = dim
        self.epochs = epochs
        self.update = update
        self.average = average
        self.init = init
        self.lr = lr
        self.validation_fraction = validation_fraction
        self.refit = refit
        self.bits = bits
        self.seed = seed
        self.temperature = temperature
        self.verbose = verbose
        self.trainer = trainer

    def _validate_params(self):
        if self.update not in ("perceptron", "onlinehd"):
            raise ValueError(f"update must be 'perceptron' or 'onlinehd', got {self.update!r}")
        if self.trainer not in ("packed", "float"):
            raise ValueError(f"trainer must be 'packed' (integer counters, bit-plane scores) or 'float' "
                             f"(the float64 reference), got {self.trainer!r}")
        if self.init not in ("zero", "centroid"):
            raise ValueError(f"init must be 'zero' or 'centroid', got {self.init!r}")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, numbers.Integral) or self.epochs < 0:
            raise ValueError(f"epochs must be a non-negative int, got {self.epochs!r}")
        vf = self.validation_fraction
        if vf is not None and not (isinstance(vf, numbers.Real) and 0 <= vf < 1):
            raise ValueError(f"validation_fraction must be in [0, 1) or None, got {vf!r}")
        if not (isinstance(self.lr, numbers.Real) and np.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        super()._validate_params()

    def _train(self, X, y_idx, K, epochs, rng, Xv=None, yv=None):
        """Run ``epochs`` epochs; return (best counters, best epoch, history)."""
        dim = self.dim_
        mode = 0 if self.update == "perceptron" else 1
        # OnlineHD's updates are real-valued (lr * (1 - cos)): they have no integer form and keep
        # the float path; perceptron updates are integers and run packed unless asked otherwise.
        packed = mode == 0 and self.trainer == "packed"
        if self.init == "centroid":
            C = class_counters(X, y_idx, K, dim)
        else:
            C = np.zeros((K, dim), np.int64)
        norm2 = (C.astype(np.float64) ** 2).sum(axis=1)  # exact integers (< 2**53) either way
        if not packed:
            C = C.astype(np.float64)
        U = np.zeros_like(C)
        step = 0
        history = []
        best = (None, 0, -1.0)
        if Xv is not None and np.any(C):  # a centroid start (epoch 0) competes too; an all-zero one cannot
            model0 = self._snapshot(C, U, step)
            acc0 = self._val_acc(model0, Xv, yv)
            best = (model0, 0, acc0)
            history.append({"epoch": 0, "val_accuracy": acc0, "mistakes": None})
        for ep in range(1, epochs + 1):
            order = rng.permutation(X.shape[0])
            if packed:
                mistakes, step = perceptron_epoch_packed(X, y_idx, order, dim, C, norm2, U, step)
            else:
                mistakes, step = perceptron_epoch(X, y_idx, order, dim, C, norm2, U, step, mode=mode,
                                                  lr=self.lr, normalize=True)
            model = self._snapshot(C, U, step)
            rec = {"epoch": ep, "mistakes": int(mistakes)}
            if Xv is not None:
                rec["val_accuracy"] = self._val_acc(model, Xv, yv)
                if rec["val_accuracy"] > best[2]:  # ties keep the earlier epoch
                    best = (model, ep, rec["val_accuracy"])
            else:
                best = (model, ep, None)
            history.append(rec)
            if self.verbose:
                print(f"epoch {ep}: {rec}")
            if mistakes == 0:
                break
        if best[0] is None:
            best = (self._snapshot(C, U, step), 0, None)
        return best[0], best[1], history

    def _snapshot(self, C, U, step):
        """Integer counters of the current (averaged) model."""
        M = C
        if self.average and step > 0:
            # proportional to the average of the counters over all steps (Freund & Schapire 1999,
            # "Large margin classification using the perceptron algorithm"); an update at the very
            # last step has weight 0 in it, so if that was the only one the average is all zero
            # while the model is not: then the current counters stand in for the average.
            A = step * C - U
            if np.any(A):
                M = A
        if self.update == "onlinehd":  # real-valued updates: keep 24 bits of them
            return quantize_counters(M, 24)
        return np.rint(M).astype(np.int64)

    def _val_acc(self, M, Xv, yv):
        planes, offsets = counter_planes(M, self.dim_)
        norms = np.sqrt((M.astype(np.float64) ** 2).sum(axis=1))
        s = cosine_scores(planes_dot(Xv, planes, offsets, M.sum(axis=1)), norms, self.dim_)
        return float(np.mean(np.argmax(s, axis=1) == yv))

    def fit(self, X, y):
        if _is_dask(X):   # batch-mode epochs over the chunks: hdc.distributed.fit
            from . import distributed
            return distributed.fit(self, X, y)
        self._validate_params()
        X, self.classes_, y_idx = self._check_Xy(X, y)
        K = len(self.classes_)
        rng = np.random.default_rng(self.seed)
        vf = self.validation_fraction or 0.0
        n = X.shape[0]
        n_val = int(round(vf * n))
        if n_val > 0 and self.epochs > 0:
            perm = rng.permutation(X.shape[0])
            val, tr = perm[:n_val], perm[n_val:]
            # From zero counters every sample is scored as the first class: with fewer than 2
            # classes to train on no mistake is ever made and the model stays all zero.
            k_train = np.unique(y_idx[tr]).size
            if k_train < 2:
                raise ValueError(
                    f"validation_fraction={vf!r} of {n} samples holds out {n_val} to choose the epoch and "
                    f"leaves {n - n_val} to train on, of {k_train} class(es); training needs samples of at "
                    f"least 2 classes: use a smaller validation_fraction, or None to train on all {n}")
            M, best_ep, hist = self._train(np.ascontiguousarray(X[tr]), y_idx[tr], K, self.epochs, rng,
                                           np.ascontiguousarray(X[val]), y_idx[val])
            self.best_epoch_ = best_ep
            self.history_ = hist
            if self.refit:
                M, _, _ = self._train(X, y_idx, K, best_ep, np.random.default_rng(self.seed))
        else:
            M, best_ep, hist = self._train(X, y_idx, K, self.epochs, rng)
            self.best_epoch_ = best_ep
            self.history_ = hist
        if not np.any(M):
            raise ValueError(f"epochs={self.epochs!r} with init={self.init!r} leaves every class counter at "
                             f"zero (no sample was ever added): use epochs >= 1 or init='centroid'")
        return self._set_counters(M)
