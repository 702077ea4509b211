"""The probe of issue 11 (hdc core half), re-run on every backend and C ISA level.

Each entry is one input the probe found answering silently wrong or unclearly, with what it
must do now: the reference's answer, or the documented exception with a message naming the
argument, the value and what is allowed. The systematic versions of these checks live in
test_core_safety.py, test_c_threads.py, test_core_memory.py and test_c_backend.py.
"""
from __future__ import annotations

import numpy as np
import pytest

import hdc


def ref(fn, *args, **kw):
    with hdc.use_backend("numpy"):
        return fn(*args, **kw)


def _pad_garbage(dim=100):
    x = hdc.random(3, dim, 7)
    x[:, -1] |= ~hdc.pad_mask(dim)
    return x


def _bind_partial_overlap():
    a, b = hdc.random(10, 300, 1), hdc.random(9, 300, 2)
    want = a[:9] ^ b
    hdc.bind(a[:9], b, out=a[1:])
    return a[1:], want


def _permute_in_place(shift):
    x = hdc.random(6, 1000, 3)
    want = ref(hdc.permute, x, shift, 1000)
    hdc.permute(x, shift, 1000, out=x)
    return x, want


def _hamming_matrix_out_over_q(m, offset_words):
    """``out`` (int32) on the bytes of Q, from Q's start (exact) or from inside it."""
    w = hdc.n_words_for(1000)
    buf = np.zeros(m * w + m * 50, np.uint64)
    Q = buf[:m * w].reshape(m, w)
    Q[...] = hdc.random(m, 1000, 4)
    X = hdc.random(50, 1000, 5)
    want = ref(hdc.hamming_matrix, Q.copy(), X)
    out = buf.view(np.int32)[2 * offset_words:2 * offset_words + m * 50].reshape(m, 50)
    hdc.hamming_matrix(Q, X, out=out)
    return out, want


def _acc_add(weights, n=None, dtype=None):
    n = len(weights) if n is None else n
    acc = hdc.BundleAccumulator(64)
    acc.add(np.full((n, 1), np.uint64(2**64 - 1)), weights=np.asarray(weights, dtype=dtype))
    return acc


def _acc_near_limit_then_add():
    acc = hdc.BundleAccumulator(64)
    x = np.full((1, 1), np.uint64(2**64 - 1))
    acc.add(x, weights=[2**61])
    acc.add(x)  # unweighted +1 past the limit


def _acc_merge_wrap():
    x = np.full((1, 1), np.uint64(2**64 - 1))
    a = hdc.BundleAccumulator(64).add(x, weights=[2**61 - 1])
    a.merge(hdc.BundleAccumulator(64).add(x, weights=[2**61 - 1]))


# (id, call returning (got, want) for an answer, expected exception type, message regex)
ANSWERS = {
    "numba bind(a[:9], b, out=a[1:])": _bind_partial_overlap,
    "numba permute(x, 5, dim, out=x)": lambda: _permute_in_place(5),
    "permute(x, 64, dim, out=x)": lambda: _permute_in_place(64),
    "permute(x, 0, dim, out=x)": lambda: _permute_in_place(0),
    "C hamming_matrix(Q, X, out=<Q's bytes>)": lambda: _hamming_matrix_out_over_q(9, 0),
    "C hamming_matrix(Q, X, out=<inside Q>), few queries": lambda: _hamming_matrix_out_over_q(3, 2),
    "C hamming_matrix(Q, X, out=<inside Q>), many queries": lambda: _hamming_matrix_out_over_q(40, 17),
    "topk on 0-word vectors": lambda: (np.concatenate(hdc.topk(np.zeros((2, 0), np.uint64),
                                                               np.zeros((4, 0), np.uint64), 3), 1),
                                       np.array([[0, 0, 0, 0, 1, 2]] * 2)),
    "hamming_matrix(threads=np.int64(2))": lambda: (hdc.hamming_matrix(hdc.random(3, 99, 1), hdc.random(4, 99, 2),
                                                                       threads=np.int64(2)),
                                                    ref(hdc.hamming_matrix, hdc.random(3, 99, 1), hdc.random(4, 99, 2))),
    "topk(k=np.int64, threads=np.int32)": lambda: (hdc.topk(hdc.random(3, 99, 1), hdc.random(9, 99, 2), np.int64(4),
                                                            threads=np.int32(2))[1],
                                                   ref(hdc.topk, hdc.random(3, 99, 1), hdc.random(9, 99, 2), 4)[1]),
    "BundleAccumulator weights up to 2**61 exact": lambda: (int(_acc_add([2**61 - 1, 1]).total), 2**61),
}

ERRORS = {
    "permute(x with pad bits, 0, dim)": (lambda: hdc.permute(_pad_garbage(), 0, 100), ValueError,
                                         r"^x has pad bits set past dim=100"),
    "permute(x with pad bits, 3, dim)": (lambda: hdc.permute(_pad_garbage(), 3, 100), ValueError,
                                         r"^x has pad bits set past dim=100"),
    "bundle(x with pad bits)": (lambda: hdc.bundle(_pad_garbage(), 100), ValueError, r"^x has pad bits"),
    "similarity(pad bits)": (lambda: hdc.similarity(_pad_garbage(), _pad_garbage(), 100), ValueError,
                             r"^a has pad bits"),
    "BundleAccumulator.add(pad bits)": (lambda: hdc.BundleAccumulator(100).add(_pad_garbage()), ValueError,
                                       r"^x has pad bits"),
    "BundleAccumulator weights near 2**62": (lambda: _acc_add([2**62 - 1, 2**62 - 1]), OverflowError,
                                             r"weights must lie in -2\*\*61..2\*\*61 .*got 4611686018427387903"),
    "BundleAccumulator uint64 weight 2**63+1": (lambda: _acc_add([2**63 + 1], dtype=np.uint64), OverflowError,
                                                r"weights must lie in .*got 9223372036854775809"),
    "BundleAccumulator counters past 2**61": (_acc_near_limit_then_add, OverflowError,
                                              r"adding 1 vectors could take an int64 counter to 2305843009213693953"),
    "BundleAccumulator.merge past 2**61": (_acc_merge_wrap, OverflowError, r"merging could take"),
    "random(1, 2**70)": (lambda: hdc.random(1, 2**70), ValueError,
                         r"dim must be at most 2\*\*62 bits, got 1180591620717411303424"),
    "hamming_matrix(threads=True)": (lambda: hdc.hamming_matrix(hdc.random(2, 9, 0), hdc.random(2, 9, 0),
                                                                threads=True),
                                     TypeError, r"threads must be a positive int .*got True"),
    "bind(threads=2.0)": (lambda: hdc.bind(hdc.random(2, 9, 0), hdc.random(2, 9, 0), threads=2.0),
                          TypeError, r"threads must be a positive int .*got 2.0"),
    "permute(shift=1.0)": (lambda: hdc.permute(hdc.random(2, 9, 0), 1.0, 9), TypeError,
                           r"shift must be an int .*got 1.0"),
}


@pytest.mark.parametrize("case", sorted(ANSWERS))
def test_probe_answers(kernel, case):
    got, want = ANSWERS[case]()
    np.testing.assert_array_equal(got, want, err_msg=case)


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_probe_errors(kernel, case):
    call, exc, match = ERRORS[case]
    with pytest.raises(exc, match=match):
        call()
