"""Threads: the C kernels release the GIL, 8 Python threads calling at once on shared inputs get
identical results, and results do not depend on the kernel thread count or the ISA level."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from hdc.backends import BackendUnavailable, load_backend
from hdc.backends import numpy_ref as R
from hdc.packing import n_words_for, pad_mask

try:
    C = load_backend("c")
except BackendUnavailable as exc:  # pragma: no cover
    pytest.skip(f"C backend not built: {exc}", allow_module_level=True)

DIM = 4_099


def words(rng, n, dim=DIM):
    x = rng.integers(0, 2**64, size=(n, n_words_for(dim)), dtype=np.uint64)
    x[:, -1] &= pad_mask(dim)
    return x


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(2024)
    q, x = words(rng, 21, DIM), words(rng, 777, DIM)
    ref = np.zeros((21, 777), np.int32)
    R.hamming_matrix(q, x, ref)
    d, i = np.zeros((21, 10), np.int32), np.zeros((21, 10), np.int64)
    R.topk(q, x, 10, d, i)
    tie = words(rng, 1, DIM)[0]
    maj = np.zeros(x.shape[1], np.uint64)
    R.bundle_majority(x, DIM, tie, maj)
    return q, x, tie, ref, d, i, maj


def _one_round(q, x, tie, threads):
    hm = np.zeros((q.shape[0], x.shape[0]), np.int32)
    C.hamming_matrix(q, x, hm, threads)
    d, i = np.zeros((q.shape[0], 10), np.int32), np.zeros((q.shape[0], 10), np.int64)
    C.topk(q, x, 10, d, i, threads)
    maj = np.zeros(x.shape[1], np.uint64)
    C.bundle_majority(x, DIM, tie, maj, threads)
    return hm, d, i, maj


def test_eight_python_threads_identical(data):
    q, x, tie, ref, d_ref, i_ref, maj_ref = data
    q.flags.writeable = False  # shared, read-only inputs
    x.flags.writeable = False
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda t: [_one_round(q, x, tie, 1 + t % 3) for _ in range(3)], range(8)))
    for per_thread in results:
        for hm, d, i, maj in per_thread:
            np.testing.assert_array_equal(hm, ref)
            np.testing.assert_array_equal(d, d_ref)
            np.testing.assert_array_equal(i, i_ref)
            np.testing.assert_array_equal(maj, maj_ref)


@pytest.mark.parametrize("threads", [1, 2, 3, 4, 7, 8, 64])
def test_independent_of_thread_count_and_isa(data, threads):
    q, x, tie, ref, d_ref, i_ref, maj_ref = data
    for isa in C.isa_levels():
        with C.use_isa(isa):
            hm, d, i, maj = _one_round(q, x, tie, threads)
        np.testing.assert_array_equal(hm, ref, err_msg=isa)
        np.testing.assert_array_equal(d, d_ref, err_msg=isa)
        np.testing.assert_array_equal(i, i_ref, err_msg=isa)
        np.testing.assert_array_equal(maj, maj_ref, err_msg=isa)


def test_topk_row_chunks_merge_to_the_same_answer(data):
    """Chunking the stored rows (as hdc.topk does for huge inputs) and merging is exact."""
    q, x, *_rest = data
    d_ref, i_ref = _rest[2], _rest[3]
    parts_d, parts_i = [], []
    for j0 in range(0, x.shape[0], 100):
        xs = x[j0:j0 + 100]
        k = min(10, xs.shape[0])
        d, i = np.zeros((q.shape[0], k), np.int32), np.zeros((q.shape[0], k), np.int64)
        C.topk(q, xs, k, d, i, 2)
        parts_d.append(d)
        parts_i.append(i + j0)
    d, i = np.concatenate(parts_d, 1), np.concatenate(parts_i, 1)
    order = np.lexsort((i, d), axis=1)[:, :10]
    np.testing.assert_array_equal(np.take_along_axis(d, order, 1), d_ref)
    np.testing.assert_array_equal(np.take_along_axis(i, order, 1), i_ref)


def test_kernel_releases_the_gil():
    """While one thread is inside one long C call (~0.5 s), this thread keeps running Python.

    The worker makes a single call, so the only time this thread can run during it is time the
    C call spent without the GIL. This thread records the time of every loop iteration; the
    largest gap between iterations inside the call must be a small part of the call. With the
    release removed (checked by hand: a build whose cffi wrappers keep the GIL, by
    ``#define Py_BEGIN_ALLOW_THREADS {`` / ``#define Py_END_ALLOW_THREADS }`` in the
    set_source preamble of csrc/build_ffi.py, loaded with HDC_C_EXT) it fails with
    ``largest gap 0.5 s of a 0.5 s call``: this thread is frozen for the whole call.
    """
    rng = np.random.default_rng(1)
    q, x = words(rng, 64, 8_192), words(rng, 20_000, 8_192)
    out = np.zeros((64, 20_000), np.int32)
    span = {}
    started = threading.Event()

    def worker():
        started.set()
        span["t0"] = time.perf_counter()
        C.hamming_matrix(q, x, out, 1)  # one call, ~0.5 s at the portable level
        span["t1"] = time.perf_counter()

    t = threading.Thread(target=worker)
    stamps = []
    with C.use_isa("portable"):  # the slowest level: a long call from a modest input
        t.start()
        started.wait()
        while t.is_alive():
            stamps.append(time.perf_counter())
        t.join()
    t0, t1 = span["t0"], span["t1"]
    assert t1 - t0 > 0.1, f"the call took {t1 - t0:.3f} s: too short to tell"
    inside = [t0] + [s for s in stamps if t0 < s < t1] + [t1]
    gap = max(b - a for a, b in zip(inside, inside[1:]))
    assert gap < 0.5 * (t1 - t0), (f"largest gap {gap:.3f} s of a {t1 - t0:.3f} s call: "
                                   f"this thread could not run, the GIL was held during the kernel")


# ------------------------------------------------------------------ kernel threads really split
def _split_data(m, n, dim, seed):
    rng = np.random.default_rng(seed)
    return words(rng, m, dim), words(rng, n, dim)


@pytest.mark.parametrize("isa", C.isa_levels())
def test_matrix_splits_by_rows(isa):
    """Many stored rows: the driver splits the 32-row blocks among threads (counted in the worker)."""
    q, x = _split_data(16, 2_000, 8_192, 1)  # 16 * 2000 * 128 words: 32 threads' worth
    want = np.zeros((16, 2_000), np.int32)
    R.hamming_matrix(q, x, want)
    with C.use_isa(isa):
        before, helper0 = C.hmat_splits(), C.helper_ranges("hamming_matrix")
        got = np.zeros_like(want)
        C.hamming_matrix(q, x, got, 2)
        after = C.hmat_splits()
    np.testing.assert_array_equal(got, want)
    assert after["rows"] > before["rows"] and after["queries"] == before["queries"]
    assert C.helper_ranges("hamming_matrix") > helper0


@pytest.mark.parametrize("isa", C.isa_levels())
def test_matrix_splits_by_queries(isa):
    """One block of stored rows (<= 32) and many queries: the split goes over the queries."""
    q, x = _split_data(800, 20, 8_192, 2)  # 800 * 20 * 128 words = 2 * 2**17 * 8
    want = np.zeros((800, 20), np.int32)
    R.hamming_matrix(q, x, want)
    with C.use_isa(isa):
        before = C.hmat_splits()
        got = np.zeros_like(want)
        C.hamming_matrix(q, x, got, 2)
        after = C.hmat_splits()
    np.testing.assert_array_equal(got, want)
    assert after["queries"] > before["queries"] and after["rows"] == before["rows"]


@pytest.mark.parametrize("isa", C.isa_levels())
def test_every_kernel_splits_when_large(isa):
    """Sizes past 2**17 word-operations per thread run on helper threads, for every kernel,
    and give the reference's answer (the other tests here are mostly below that size)."""
    dim = 8_192
    rng = np.random.default_rng(3)
    x, y = words(rng, 4_000, dim), words(rng, 4_000, dim)
    q = x[:9].copy()
    tie = words(rng, 1, dim)[0]
    checks = {
        "bind": lambda: (C.bind(x, y, o := np.empty_like(x), 2), o)[1],
        "popcount": lambda: (C.popcount(x, o := np.empty(4_000, np.int64), 2), o)[1],
        "hamming_rows": lambda: (C.hamming_rows(x, y, o := np.empty(4_000, np.int64), 2), o)[1],
        "topk": lambda: (C.topk(q, x, 5, d := np.empty((9, 5), np.int32), i := np.empty((9, 5), np.int64), 2),
                         np.concatenate([d, i], 1))[1],
        "permute": lambda: (C.permute(x, 77, dim, o := np.empty_like(x), 2), o)[1],
        "bit_counts": lambda: (C.bit_counts(x, dim, o := np.zeros(dim, np.int64), 2), o)[1],
        "bundle_majority": lambda: (C.bundle_majority(x, dim, tie, o := np.empty(x.shape[1], np.uint64), 2), o)[1],
    }
    refs = {
        "bind": lambda: x ^ y,
        "popcount": lambda: (R.popcount(x, o := np.empty(4_000, np.int64)), o)[1],
        "hamming_rows": lambda: (R.hamming_rows(x, y, o := np.empty(4_000, np.int64)), o)[1],
        "topk": lambda: (R.topk(q, x, 5, d := np.empty((9, 5), np.int32), i := np.empty((9, 5), np.int64)),
                         np.concatenate([d, i], 1))[1],
        "permute": lambda: (R.permute(x, 77, dim, o := np.empty_like(x)), o)[1],
        "bit_counts": lambda: (R.bit_counts(x, dim, o := np.zeros(dim, np.int64)), o)[1],
        "bundle_majority": lambda: (R.bundle_majority(x, dim, tie, o := np.empty(x.shape[1], np.uint64)), o)[1],
    }
    with C.use_isa(isa):
        for name, run in checks.items():
            before = C.helper_ranges(name)
            got = run()
            assert C.helper_ranges(name) > before, f"{name} at {isa} ran on one thread"
            np.testing.assert_array_equal(got, refs[name](), err_msg=f"{name} at {isa}")


def test_small_calls_stay_on_the_callers_thread():
    """Below the threshold no thread is started (the counter is not stuck at 'split')."""
    q, x = _split_data(3, 10, 256, 4)
    before = C.helper_ranges("hamming_matrix")
    C.hamming_matrix(q, x, np.zeros((3, 10), np.int32), 8)
    assert C.helper_ranges("hamming_matrix") == before


# ------------------------------------------------------------------ the Numba backend
def _numba():
    try:
        return load_backend("numba")
    except BackendUnavailable as exc:
        pytest.skip(f"numba not installed: {exc}")


def test_eight_python_threads_identical_numba(data):
    """The README's claim, for the Numba backend: 8 Python threads at once, identical results."""
    import hdc

    _numba()
    q, x, tie, ref, d_ref, i_ref, maj_ref = data

    def rounds(t):
        out = []
        with hdc.use_backend("numba"):
            for _ in range(3):
                out.append((hdc.hamming_matrix(q, x, threads=1 + t % 3), *hdc.topk(q, x, 10, threads=2),
                            hdc.bundle(x, DIM, tie=tie, threads=2)))
        return out

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(rounds, range(8)))
    for per_thread in results:
        for hm, d, i, maj in per_thread:
            np.testing.assert_array_equal(hm, ref)
            np.testing.assert_array_equal(d, d_ref)
            np.testing.assert_array_equal(i, i_ref)
            np.testing.assert_array_equal(maj, maj_ref)


_WORKQUEUE_SCRIPT = """
import numpy as np, hdc
from concurrent.futures import ThreadPoolExecutor
from hdc.backends import numba_backend as N
hdc.set_backend("numba")
q, x = hdc.random(40, 2000, 1), hdc.random(3000, 2000, 2)
ref = hdc.hamming_matrix(q, x)
ref_i = hdc.topk(q, x, 5)[1]
def work(t):
    return [(hdc.hamming_matrix(q, x, threads=2), hdc.topk(q, x, 5, threads=2)[1],
             hdc.permute(x, 3, 2000, threads=2), hdc.bind(x, x, threads=2)) for _ in range(4)]
with ThreadPoolExecutor(8) as pool:
    res = list(pool.map(work, range(8)))
assert all((h == ref).all() and (i == ref_i).all() for r in res for h, i, _, _ in r)
print("layer", N.threading_layer())
"""


def test_numba_workqueue_layer_eight_threads():
    """NUMBA_THREADING_LAYER=workqueue: 8 Python threads in numba kernels at once. Without the
    lock in numba_backend._parallel the process aborts ("workqueue threading layer is not
    threadsafe"), checked by hand."""
    import os
    import subprocess
    import sys

    _numba()
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue")
    p = subprocess.run([sys.executable, "-c", _WORKQUEUE_SCRIPT], env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split() == ["layer", "workqueue"]
