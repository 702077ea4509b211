"""hdc.milvus: the byte layout (no Milvus needed), and export + search in Milvus Lite against hdc.topk.

The Milvus tests skip, saying why, where pymilvus or Milvus Lite cannot be imported (the
``milvus`` extra; the ``test`` extra installs it). One Milvus Lite file serves the module.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest

import hdc
from hdc import milvus as hm

DIMS = [64, 256, 10_000, 65]   # 65: not whole bytes, so the collection gets 72 dimensions


def _milvus_missing() -> str | None:
    try:
        import milvus_lite  # noqa: F401
        import pymilvus  # noqa: F401
    except ImportError as exc:  # milvus-lite 2.5.1 also lands here without pkg_resources
        return f"Milvus Lite not importable ({type(exc).__name__}: {exc}); pip install 'hdspike[milvus]'"
    return None


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    why = _milvus_missing()
    if why:
        pytest.skip(why)
    return str(tmp_path_factory.mktemp("milvus") / "hv.db")


def _database(n, dim, seed):
    """Random rows with copies of row 0 and of row 1 spread through (exact ties on distance)."""
    X = hdc.random(n, dim, seed=seed)
    where = np.random.default_rng(seed).choice(np.arange(2, n), size=12, replace=False)
    X[where[:8]] = X[0]
    X[where[8:]] = X[1]
    return X


def _docs_pack(bits: np.ndarray) -> bytes:
    """The Milvus documentation's packing of a 0/1 list (its convert_bool_list_to_bytes):
    dimension j sets bit j % 8 of byte j // 8; a plain loop, the reference for to_bytes."""
    out = bytearray((len(bits) + 7) // 8)
    for j, bit in enumerate(bits):
        if bit:
            out[j // 8] |= 1 << (j % 8)
    return bytes(out)


def _assert_same_as_topk(D, I, Q, X, ids, k):
    """Distances equal hdc.topk's exactly; ids equal where the distance is below the k-th
    (every row at such a distance is in both lists), and at the k-th distance Milvus's ids
    are rows at that distance (it breaks the tie in its own order)."""
    ref_d, ref_i = hdc.topk(Q, X, k)
    np.testing.assert_array_equal(D, ref_d)
    H = hdc.hamming_matrix(Q, X)
    for q in range(Q.shape[0]):
        kth = ref_d[q, -1]
        below = ref_d[q] < kth
        np.testing.assert_array_equal(I[q, below], ids[ref_i[q, below]])
        assert set(I[q, ~below]) <= set(ids[np.flatnonzero(H[q] == kth)])
        assert len(set(I[q])) == k


# ---------------------------------------------------------------- layout (NumPy only)
@pytest.mark.parametrize("dim", [1, 7, 8, 9, 63, 64, 65, 127, 130, 10_000])
def test_to_bytes_is_the_milvus_docs_packing_of_our_bits(dim):
    X = hdc.random(5, dim, seed=dim)
    B = hm.to_bytes(X, dim)
    assert B.dtype == np.uint8 and B.shape == (5, hm.milvus_dim(dim) // 8)
    bits = hdc.to_bool(X, dim)
    for r in range(5):
        assert B[r].tobytes() == _docs_pack(bits[r])
    np.testing.assert_array_equal(B, np.packbits(bits, axis=1, bitorder="little"))
    np.testing.assert_array_equal(hm.from_bytes(B, dim), X)
    # Hamming distance is the popcount of the XOR of the bytes (what Milvus computes)
    h = np.unpackbits(B[:, None, :] ^ B[None, :, :], axis=-1).sum(-1)
    np.testing.assert_array_equal(h, hdc.hamming_matrix(X, X))


def test_single_bits_land_where_milvus_reads_dimension_i():
    dim = 200
    X = hdc.from_bool(np.eye(dim, dtype=bool))
    B = hm.to_bytes(X, dim)
    for i in range(dim):
        assert np.flatnonzero(np.unpackbits(B[i], bitorder="little")).tolist() == [i]


def test_layout_bad_input():
    with pytest.raises(TypeError, match=r"X must have dtype uint64.*int64"):
        hm.to_bytes(np.zeros((2, 1), np.int64), 64)
    with pytest.raises(ValueError, match=r"X must be 2-D"):
        hm.to_bytes(hdc.random(1, 64, seed=0)[0][None, None], 64)
    with pytest.raises(ValueError, match=r"pad bits set past dim=60"):
        hm.to_bytes(np.full((1, 1), 2**63, np.uint64), 60)
    with pytest.raises(ValueError, match=r"B must be \(n, 9\) uint8 for dim=65"):
        hm.from_bytes(np.zeros((1, 8), np.uint8), 65)
    assert hm.milvus_dim(65) == 72 and hm.milvus_dim(64) == 64 and hm.milvus_dim(1) == 8


def test_export_checks_before_reaching_milvus(tmp_path):
    # every one of these raises before any connection, with or without pymilvus installed
    X = hdc.random(10, 128, seed=0)
    uri = str(tmp_path / "never.db")
    with pytest.raises(TypeError, match=r"X must have dtype uint64.*int64"):
        hm.export(X.astype(np.int64), uri, "c", 128)
    with pytest.raises(ValueError, match=r"X must be 2-D \(rows, n_words\), got shape \(2,\)"):
        hm.export(X[0], uri, "c", 128)
    with pytest.raises(TypeError, match=r"X must be a numpy uint64 array.*list"):
        hm.export([[1, 2]], uri, "c", 128)
    with pytest.raises(ValueError, match=r"X has 2 words per vector but dim=64 needs 1"):
        hm.export(X, uri, "c", 64)
    with pytest.raises(ValueError, match=r"ids has 9 entries but X has 10 rows"):
        hm.export(X, uri, "c", 128, ids=np.arange(9))
    with pytest.raises(ValueError, match=r"ids must be unique"):
        hm.export(X, uri, "c", 128, ids=np.zeros(10, np.int64))
    with pytest.raises(TypeError, match=r"ids must be a 1-D integer array"):
        hm.export(X, uri, "c", 128, ids=np.arange(10.0))
    with pytest.raises(ValueError, match=r"dim=40000 is over Milvus's limit of 32768"):
        hm.export(hdc.random(2, 40_000, seed=0), uri, "c", 40_000)
    with pytest.raises(ValueError, match=r"collection must be a Milvus name"):
        hm.export(X, uri, "1-bad name", 128)
    assert not (tmp_path / "never.db").exists()


# ---------------------------------------------------------------- Milvus Lite
@pytest.mark.parametrize("dim", DIMS)
def test_export_search_equals_hdc_topk(uri, dim):
    X = _database(3000, dim, seed=dim)
    Q = np.concatenate([X[:2], hdc.random(6, dim, seed=dim + 1)])  # rows 0 and 1 tie with their copies
    assert hm.export(X, uri, f"db{dim}", dim) == 3000
    info = hm.describe(uri, f"db{dim}")
    assert info["rows"] == 3000 and info["dim"] == dim and info["milvus_dim"] == 8 * -(-dim // 8)
    assert info["indexes"][0]["index_type"] == "BIN_FLAT" and info["indexes"][0]["metric_type"] == "HAMMING"
    for k in (1, 10, 25):   # k = 1 and 10 cut inside the tied copies of rows 0 and 1
        D, I = hm.search(uri, f"db{dim}", Q, k)
        assert D.dtype == np.int32 and I.dtype == np.int64 and D.shape == I.shape == (8, k)
        _assert_same_as_topk(D, I, Q, X, np.arange(3000), k)
    # all the copies of row 0 and their order: the whole tie fits in k = 9, sorted by id
    D, I = hm.search(uri, f"db{dim}", X[:1], 9)
    np.testing.assert_array_equal(I[0], np.flatnonzero((X == X[0]).all(axis=1)))
    assert not D.any()


def test_stored_vectors_read_back_bit_for_bit(uri):
    import pymilvus

    dim = 65
    X = _database(500, dim, seed=4)
    hm.export(X, uri, "readback", dim, batch_rows=64)
    pymilvus.connections.connect(alias="readback", uri=uri)
    try:
        rows = pymilvus.Collection("readback", using="readback").query(
            expr="id >= 0", output_fields=[hm.ID_FIELD, hm.VECTOR_FIELD], limit=500)
    finally:
        pymilvus.connections.disconnect("readback")
    got = {r[hm.ID_FIELD]: r[hm.VECTOR_FIELD] for r in rows}
    # pymilvus 2.5 answers a binary vector as a list holding one bytes object
    B = np.array([np.frombuffer(bytes(v[0] if isinstance(v, list) else v), np.uint8)
                  for _, v in sorted(got.items())])
    assert sorted(got) == list(range(500))
    np.testing.assert_array_equal(hm.from_bytes(B, dim), X)


def test_ids_dask_and_shard_folder_inputs(uri, tmp_path):
    da = pytest.importorskip("dask.array")
    from hdc import distributed as hd

    dim = 256
    X = _database(1200, dim, seed=9)
    Q = np.concatenate([X[:2], hdc.random(3, dim, seed=10)])
    ids = np.arange(1200, dtype=np.int64) * 7 - 4000   # negative ids too
    hm.export(X, uri, "with_ids", dim, ids=ids, batch_rows=500)
    _assert_same_as_topk(*hm.search(uri, "with_ids", Q, 10), Q, X, ids, 10)
    hm.export(da.from_array(X, chunks=(333, 2)), uri, "from_dask", dim, batch_rows=100)  # words chunked too
    with pytest.raises(TypeError, match=r"X must have dtype uint64 \(packed words\), got dask int64"):
        hm.export(da.from_array(X.astype(np.int64)), uri, "bad_dask", dim)
    hd.write_shards(X, tmp_path / "db", dim, rows_per_shard=400)
    hm.export(tmp_path / "db", uri, "from_shards", dim)
    for name in ("from_dask", "from_shards"):
        _assert_same_as_topk(*hm.search(uri, name, Q, 10), Q, X, np.arange(1200), 10)
    with pytest.raises(ValueError, match=r"dim=64 but the database at .* holds dim=256"):
        hm.export(tmp_path / "db", uri, "wrong_dim", 64)


def test_milvus_bad_input(uri):
    dim = 128
    X = hdc.random(50, dim, seed=1)
    hm.export(X, uri, "bad_input", dim)
    with pytest.raises(FileExistsError, match=r"collection 'bad_input' already exists.*overwrite=True"):
        hm.export(X, uri, "bad_input", dim)
    assert hm.export(X[:20], uri, "bad_input", dim, overwrite=True) == 20
    with pytest.raises(ValueError, match=r"Q has 1 words per vector but collection 'bad_input' holds dim=128"):
        hm.search(uri, "bad_input", hdc.random(2, 64, seed=0), 3)
    with pytest.raises(ValueError, match=r"k=21 is out of range: need 1 <= k <= 20"):
        hm.search(uri, "bad_input", X[:2], 21)
    with pytest.raises(ValueError, match=r"k=0 is out of range"):
        hm.search(uri, "bad_input", X[:2], 0)
    with pytest.raises(TypeError, match=r"Q must have dtype uint64"):
        hm.search(uri, "bad_input", X[:2].astype(np.int64), 3)
    with pytest.raises(ValueError, match=r"Q must have at least 2 axis/axes .* got shape \(2,\)"):
        hm.search(uri, "bad_input", X[0], 3)
    with pytest.raises(ValueError, match=r"Q must be 2-D"):
        hm.search(uri, "bad_input", X[None, :2], 3)
    with pytest.raises(ValueError, match=r"no collection 'nothing_here'"):
        hm.search(uri, "nothing_here", X[:2], 3)
    # a bad batch mid-export (pad bits set in row 30) leaves no half-written collection
    Y = hdc.random(60, 100, seed=2)
    Y[30, -1] |= np.uint64(1) << np.uint64(63)
    with pytest.raises(ValueError, match=r"pad bits set past dim=100"):
        hm.export(Y, uri, "half_written", 100, batch_rows=16)
    with pytest.raises(ValueError, match=r"no collection 'half_written'"):
        hm.describe(uri, "half_written")


def test_missing_pymilvus_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pymilvus", None)   # import pymilvus now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'hdspike\[milvus\]'"):
        hm.search("x.db", "c", hdc.random(1, 64, seed=0), 1)
