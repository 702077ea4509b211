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
    """While one thread is inside a long C call, Python code keeps running in another."""
    rng = np.random.default_rng(1)
    q, x = words(rng, 64, 8_192), words(rng, 20_000, 8_192)
    out = np.zeros((64, 20_000), np.int32)
    inside = threading.Event()
    done = threading.Event()

    def worker():
        inside.set()
        for _ in range(20):  # ~0.1 s inside C
            C.hamming_matrix(q, x, out, 1)
        done.set()

    t = threading.Thread(target=worker)
    t.start()
    inside.wait()
    time.sleep(0.005)  # let the worker enter C
    spins = 0
    while not done.is_set():
        spins += 1
    t.join()
    # with the GIL held for the whole call, this thread could not run at all meanwhile
    assert spins > 10_000, f"main thread starved ({spins} iterations): GIL held during the kernel?"
