"""hdc.distributed on a loopback Dask cluster: the same bits as the single-machine path.

Each test that needs a cluster starts its own (2 workers, one thread each, 127.0.0.1); the
equality tests share one per module, the fault tests (killed workers) start a fresh one.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hdc
from hdc.classifiers import CentroidClassifier, RetrainClassifier

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("dask.distributed")
cloudpickle = pytest.importorskip("cloudpickle")
from hdc import distributed as hd  # noqa: E402
import dask  # noqa: E402

# the helpers below run on the workers, which cannot import this test module by name
cloudpickle.register_pickle_by_value(sys.modules[__name__])

DIMS = [63, 64, 65, 10_000]


@pytest.fixture(scope="module")
def client():
    with hd.local_cluster(2) as cluster, distributed.Client(cluster) as c:
        yield c


def _database(n, dim, n_dups, seed):
    """Random rows with duplicates of row 0 spread through (ties on distance)."""
    X = hdc.random(n, dim, seed=seed)
    if n_dups and n > 1:
        where = np.random.default_rng(seed).choice(np.arange(1, n), size=min(n_dups, n - 1), replace=False)
        X[where] = X[0]
    return X


@st.composite
def chunkings(draw, n):
    """Row chunk sizes summing to n: cut points drawn with repeats, so empty chunks and chunks
    of one row (smaller than k) occur."""
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=8)))
    edges = [0, *cuts, n]
    return tuple(b - a for a, b in zip(edges, edges[1:]))


@settings(max_examples=10, deadline=None)
@given(data=st.data(), dim=st.sampled_from(DIMS), n=st.integers(1, 120), m=st.integers(1, 5),
       n_dups=st.integers(0, 8), seed=st.integers(0, 2**31))
def test_topk_equals_hdc_topk_for_any_chunking(client, data, dim, n, m, n_dups, seed):
    X = _database(n, dim, n_dups, seed)
    Q = np.concatenate([X[:1], hdc.random(m, dim, seed=seed + 1)])  # row 0's copies tie exactly
    k = data.draw(st.integers(1, n))
    chunks = data.draw(chunkings(n))
    ref_d, ref_i = hdc.topk(Q, X, k)
    d, i = hd.topk(Q, da.from_array(X, chunks=(chunks, -1)), k, split_every=data.draw(st.integers(2, 4)))
    assert d.dtype == ref_d.dtype and i.dtype == ref_i.dtype
    np.testing.assert_array_equal(d, ref_d)
    np.testing.assert_array_equal(i, ref_i)
    ids = np.arange(n) * 7 + 3
    _, got_ids = hd.topk(Q, da.from_array(X, chunks=(chunks, -1)), k, ids=ids)
    np.testing.assert_array_equal(got_ids, ids[ref_i])


@settings(max_examples=5, deadline=None)   # each example runs four cluster jobs
@given(data=st.data(), dim=st.sampled_from(DIMS), n=st.integers(4, 150), seed=st.integers(0, 2**31))
def test_fit_equals_single_machine_for_any_chunking(client, data, dim, n, seed):
    X = _database(n, dim, 5, seed)
    y = np.random.default_rng(seed).integers(0, 3, n)
    y[:3] = [0, 1, 2]
    chunks = data.draw(chunkings(n))
    Xd = da.from_array(X, chunks=(chunks, -1))
    ref = CentroidClassifier(dim=dim).fit(X, y)
    got = hd.fit(CentroidClassifier(dim=dim), Xd, da.from_array(y, chunks=7))
    np.testing.assert_array_equal(got.counters_, ref.counters_)
    np.testing.assert_array_equal(got.classes_, ref.classes_)
    np.testing.assert_array_equal(hd.predict(got, Xd).compute(), ref.predict(X))
    # the merged accumulators: tie rule applied once, after the merge
    accs = hd.accumulate(Xd, y, 3, dim=dim)
    for c in range(3):
        np.testing.assert_array_equal(accs[c].result(), hdc.bundle(np.ascontiguousarray(X[y == c]), dim))
    # batch retraining: the NumPy (one chunk) path and the cluster give the same counters
    C_np, hist_np = hd.batch_retrain(X, y, 3, dim, epochs=2)
    clf = hd.fit(RetrainClassifier(dim=dim, epochs=2, validation_fraction=None), Xd, y)
    np.testing.assert_array_equal(clf.counters_, C_np)
    assert clf.history_ == hist_np


def test_classifiers_take_dask_input_through_their_own_fit_and_predict(client):
    # the classifiers' fit/predict hand dask collections to hdc.distributed (the same counters)
    X = _database(60, 65, 3, 1)
    y = np.arange(60) % 3
    Xd = da.from_array(X, chunks=(13, -1))
    ref = CentroidClassifier(dim=65).fit(X, y)
    got = CentroidClassifier(dim=65).fit(Xd, y)
    np.testing.assert_array_equal(got.counters_, ref.counters_)
    p = got.predict(Xd)
    assert isinstance(p, da.Array)
    np.testing.assert_array_equal(p.compute(), ref.predict(X))
    C, _ = hd.batch_retrain(X, y, 3, 65, epochs=2)
    np.testing.assert_array_equal(RetrainClassifier(dim=65, epochs=2, validation_fraction=None).fit(Xd, y).counters_, C)


def test_predict_is_lazy(client):
    X = hdc.random(40, 64, seed=3)
    y = np.arange(40) % 2
    clf = CentroidClassifier(dim=64).fit(X, y)
    p = hd.predict(clf, da.from_array(X, chunks=(9, -1)))
    assert isinstance(p, da.Array) and p.shape == (40,)
    np.testing.assert_array_equal(p.compute(), clf.predict(X))


def test_batch_retrain_learns_separable_classes():
    dim = 512
    protos = hdc.random(3, dim, seed=0)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    flips = hdc.from_bool(rng.random((300, dim)) < 0.2)
    X = hdc.bind(protos[y], flips)
    C, hist = hd.batch_retrain(X, y, 3, dim, epochs=3)
    pred = np.argmax(hd.class_scores(X, C, dim), axis=1)
    assert np.mean(pred == y) > 0.95 and hist[0]["mistakes"] > 0


# ---------------------------------------------------------------- shards on disk
def test_shards_roundtrip_and_open_lazily(tmp_path, client):
    X = _database(1000, 65, 20, 1)
    man = hd.write_shards(iter([X[:333], X[333:]]), tmp_path / "db", 65, rows_per_shard=300)
    meta = hd.read_manifest(tmp_path / "db")
    assert man.name == "manifest.json" and meta["rows"] == 1000 and meta["dim"] == 65
    assert [s["rows"] for s in meta["shards"]] == [300, 300, 300, 100]
    Xd = hd.open_database(tmp_path / "db", chunk_rows=128)
    assert max(Xd.chunks[0]) == 128 and Xd.dtype == np.uint64
    np.testing.assert_array_equal(Xd.compute(), X)
    Q = X[[0, 5, 999]]
    for got, ref in zip(hd.topk(Q, Xd, 25), hdc.topk(Q, X, 25)):
        np.testing.assert_array_equal(got, ref)
    # the database's own array: one task per chunk reads and searches its rows (10 chunks, 2 + 1
    # merges at split_every=8, the queries); a derived array takes the generic path through its
    # blocks (read, array layers, topk), same bits
    assert len(Xd.chunks[0]) == 10
    assert len(dict(hd.topk(Q, Xd, 25, compute=False).__dask_graph__())) == 10 + 3 + 1
    derived = Xd[1:]
    assert len(dict(hd.topk(Q, derived, 25, compute=False).__dask_graph__())) > 2 * 10 + 3 + 1
    for got, ref in zip(hd.topk(Q, derived, 25), hdc.topk(Q, X[1:], 25)):
        np.testing.assert_array_equal(got, ref)


def test_checksum_mismatch_names_the_file(tmp_path):
    X = hdc.random(100, 64, seed=0)
    hd.write_shards(X, tmp_path, 64, rows_per_shard=40)
    bad = tmp_path / "shard-00001.npy"
    raw = bytearray(bad.read_bytes())
    raw[-1] ^= 1
    bad.write_bytes(bytes(raw))
    with pytest.raises(hd.ShardError, match=r"shard-00001\.npy.*checksum"):
        hd.topk(X[:2], hd.open_database(tmp_path), 3)


def test_shards_are_memory_mapped_and_hashed_once_per_file_version(tmp_path, monkeypatch):
    X = hdc.random(100, 64, seed=0)
    hd.write_shards(X, tmp_path, 64, rows_per_shard=40)
    hashed = []
    real = hd._sha256
    monkeypatch.setattr(hd, "_sha256", lambda path: hashed.append(path.name) or real(path))
    monkeypatch.setattr(hd, "_VERIFIED", {})
    for _ in range(2):
        parts = list(hd.iter_shards(tmp_path))
        assert all(isinstance(b, np.memmap) and not b.flags.writeable for _, b in parts)  # no copy
        np.testing.assert_array_equal(np.concatenate([b for _, b in parts]), X)
    assert sorted(hashed) == ["shard-00000.npy", "shard-00001.npy", "shard-00002.npy"]  # once each
    # rewritten in place (same inode and size): a new version, hashed again, and it fails. The
    # kernel stamps mtime/ctime at clock-tick resolution (a few ms): wait past the tick
    time.sleep(0.05)
    with open(tmp_path / "shard-00001.npy", "r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(hd.ShardError, match=r"shard-00001\.npy.*checksum"):
        list(hd.iter_shards(tmp_path))
    assert hashed.count("shard-00001.npy") == 2 and hashed.count("shard-00000.npy") == 1


def test_missing_shard_names_the_file(tmp_path):
    hd.write_shards(hdc.random(100, 64, seed=0), tmp_path, 64, rows_per_shard=40)
    (tmp_path / "shard-00002.npy").unlink()
    with pytest.raises(hd.ShardError, match=r"shard-00002\.npy.*missing"):
        hd.open_database(tmp_path)


# ---------------------------------------------------------------- bad input
def test_bad_input_each_raises_naming_it():
    X = hdc.random(20, 128, seed=0)
    Xd = da.from_array(X, chunks=(5, -1))
    Q = X[:2]
    with pytest.raises(ValueError, match=r"X is chunked along the words.*rechunk"):
        hd.topk(Q, da.from_array(X, chunks=(5, 1)), 3)
    with pytest.raises(TypeError, match=r"X must have dtype uint64.*int64"):
        hd.topk(Q, Xd.astype(np.int64), 3)
    with pytest.raises(ValueError, match=r"Q has 1 words per vector but X has 2"):
        hd.topk(hdc.random(2, 64, seed=1), Xd, 3)
    for k in (0, -1, 21):
        with pytest.raises(ValueError, match=rf"k={k} is out of range: need 1 <= k <= 20"):
            hd.topk(Q, Xd, k)
    with pytest.raises(TypeError, match=r"X must be a dask.array"):
        hd.topk(Q, X, 3)
    with pytest.raises(ValueError, match=r"y has label 3 at row 7; labels must be ints in 0..2"):
        y = np.zeros(20, np.int64)
        y[7] = 3
        hd.accumulate(Xd, y, 3, dim=128)
    with pytest.raises(ValueError, match=r"y has label -1 at row 12"):
        y = np.zeros(20, np.int64)
        y[12] = -1
        hd.accumulate(Xd, da.from_array(y, chunks=6), 3, dim=128)
    with pytest.raises(ValueError, match=r"one label per row of X \(20\), got shape \(19,\)"):
        hd.accumulate(Xd, np.zeros(19, np.int64), 3, dim=128)
    with pytest.raises(ValueError, match=r"one label per row of X \(20\), got shape \(21,\)"):
        hd.fit(CentroidClassifier(dim=128), Xd, np.arange(21) % 2)
    with pytest.raises(ValueError, match=r"dim=64 needs 1 words per vector but X has 2"):
        hd.accumulate(Xd, None, 1, dim=64)


def test_no_cluster_reachable_is_a_bounded_wait():
    with socket.socket() as s:  # a port nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(ConnectionError, match=rf"no Dask scheduler reachable at 'tcp://127.0.0.1:{port}' "
                                                  r"within 2.0 s"):
            hd.connect(f"tcp://127.0.0.1:{port}", timeout_s=2.0)
    assert time.monotonic() - t0 < 30


# ---------------------------------------------------------------- faults
def _slow_copy(block):
    time.sleep(0.25)  # long enough that a worker is killed while tasks are in flight
    return block


def _kill_on_row(block, block_info=None):
    """SIGKILL the worker whenever it runs the chunk holding row 300 (every retry)."""
    lo, hi = block_info[0]["array-location"][0]
    if lo <= 300 < hi:
        os.kill(os.getpid(), signal.SIGKILL)
    return block


@pytest.mark.slow
def test_worker_sigkilled_mid_job_completes_identical(tmp_path):
    X = _database(2000, 200, 30, 5)
    hd.write_shards(X, tmp_path, 200, rows_per_shard=100)
    Q = X[[0, 7, 1999]]
    ref = hdc.topk(Q, X, 15)
    with hd.local_cluster(2) as cluster, distributed.Client(cluster) as c:
        Xd = hd.open_database(tmp_path).map_blocks(_slow_copy, dtype=np.uint64)
        fut = c.compute(hd.topk(Q, Xd, 15, compute=False))
        time.sleep(1.0)
        pids = c.run(os.getpid)
        os.kill(next(iter(pids.values())), signal.SIGKILL)
        d, i = fut.result(timeout=120)
    np.testing.assert_array_equal(d, ref[0])
    np.testing.assert_array_equal(i, ref[1])


@pytest.mark.slow
def test_task_that_always_kills_its_worker_names_the_shard(tmp_path):
    X = hdc.random(500, 64, seed=0)
    hd.write_shards(X, tmp_path, 64, rows_per_shard=100)
    with hd.local_cluster(2) as cluster, distributed.Client(cluster):
        Xd = hd.open_database(tmp_path).map_blocks(_kill_on_row, dtype=np.uint64)
        with pytest.raises(hd.ShardError, match=r"chunk 3 \(rows 300..399\) of shard '.*shard-00003\.npy'"
                                                 r".*killed the worker running it 4 times"):
            hd.topk(X[:2], Xd, 5)


@pytest.mark.slow
def test_database_larger_than_workers_memory(tmp_path):
    """~650 MiB on disk, two workers of 300 MiB each (a worker's imports alone, numba and
    scikit-learn included, take about half of that): topk streams it, identical."""
    dim = 10_000
    n = 540_000
    big = np.lib.format.open_memmap(tmp_path / "all.npy", "w+", np.uint64, (n, hdc.n_words_for(dim)))
    for s in range(0, n, 30_000):
        big[s:s + 30_000] = hdc.random(min(30_000, n - s), dim, seed=s)
    big.flush()
    Q = np.array(big[[5, 123_456]])
    ref = hdc.topk(Q, big, 10)
    hd.write_shards(big, tmp_path / "db", dim, rows_per_shard=10_000)
    assert sum(f.stat().st_size for f in (tmp_path / "db").glob("*.npy")) > 2 * 300 * 2**20
    del big
    (tmp_path / "all.npy").unlink()
    # a worker whose imports alone fill 80% of its limit would be paused forever (the job hangs);
    # pausing and spilling are off, termination at 95% stays: exceeding the limit still fails
    with dask.config.set({"distributed.worker.memory.pause": False, "distributed.worker.memory.spill": False,
                          "distributed.worker.memory.target": False}), \
            hd.local_cluster(2, memory_limit="300MiB") as cluster, distributed.Client(cluster):
        d, i = hd.topk(Q, hd.open_database(tmp_path / "db"), 10)
    np.testing.assert_array_equal(d, ref[0])
    np.testing.assert_array_equal(i, ref[1])


def test_second_cluster_in_one_process_takes_no_fixed_port(client):
    """The scheduler's HTTP server (Dask starts one even without a dashboard) goes to a free
    loopback port: a second cluster beside the fixture's warns of no taken port 8787."""
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with hd.local_cluster(1) as cluster:
            assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
    assert not [w for w in caught if "8787" in str(w.message)], [str(w.message) for w in caught]
