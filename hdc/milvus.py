"""Export packed hypervectors to Milvus (binary vectors, Hamming) and search them there.

Optional: needs the ``milvus`` extra (``pip install 'hdspike[milvus]'``: pymilvus and the
embedded Milvus Lite, both on the 2.5 line; Milvus Lite 3.x has no binary vectors). Importing
this module works without it; the first call that needs Milvus says what to install.

* **Layout.** Milvus takes a binary vector as ``dim / 8`` bytes, dimension ``j`` at bit
  ``j % 8`` (least significant first) of byte ``j // 8`` (the Milvus documentation packs
  its examples with ``byte[j // 8] |= 1 << (j % 8)``). Our bit ``i`` lives at bit ``i % 64``
  of word ``i // 64``; read as little-endian bytes, that is bit ``i % 8`` of byte ``i // 8``.
  So the Milvus vector is the words' little-endian bytes, the first ``ceil(dim / 8)`` of
  them: :func:`to_bytes` (byte-swapped on a big-endian host), no bit shuffling.
* **dim not a multiple of 8.** Milvus needs whole bytes, so the collection gets
  ``8 * ceil(dim / 8)`` dimensions: the last byte carries up to 7 pad bits, which are zero in
  every stored vector and every query (the package invariant, checked on the way in), so
  they never differ and every Hamming distance is exact. The collection's description
  records the real dim, and :func:`search` checks the queries against it.
* **Exactness.** The collection has a ``BIN_FLAT`` index (brute force, no approximation),
  metric ``HAMMING`` and strong consistency, so :func:`search` returns the same distances as
  :func:`hdc.topk`. Rows tied at the k-th distance may differ: Milvus breaks ties in its own
  order, ``hdc.topk`` by the lower index; within what Milvus returns, rows are sorted by
  (distance, id).

Example::

    from hdc import milvus as hm
    hm.export(X, "hv.db", "memory", dim=10_000)          # Milvus Lite: a local file
    D, ids = hm.search("hv.db", "memory", Q, k=10)        # D == hdc.topk(Q, X, 10)[0]
"""
from __future__ import annotations

import itertools
import re
import sys
from pathlib import Path

import numpy as np

from . import functional as F
from .packing import check_dim, n_words_for

__all__ = ["export", "search", "describe", "to_bytes", "from_bytes", "milvus_dim", "ID_FIELD", "VECTOR_FIELD"]

ID_FIELD, VECTOR_FIELD = "id", "vector"
MAX_DIM = 32_768           # Milvus's limit on vector dimensions (proxy.maxDimension)
MAX_K = 16_384             # Milvus's limit on top-k per search (and on queries per request)
_BATCH_BYTES = 16 << 20    # vector bytes per insert request: well under gRPC's 64 MiB message cap
_DESCRIPTION = "hdspike packed hypervectors, dim={dim} bits (Hamming; pad bits zero)"
_aliases = itertools.count()


def _pymilvus():
    try:
        import pymilvus
    except ImportError as exc:
        raise ImportError("hdc.milvus needs pymilvus and Milvus Lite: pip install 'hdspike[milvus]' "
                          "(pymilvus and milvus-lite 2.5.x; Milvus Lite 3.x has no binary vectors)") from exc
    return pymilvus


def milvus_dim(dim: int) -> int:
    """Dimensions of the Milvus field for ``dim``-bit vectors: ``dim`` rounded up to whole bytes."""
    return 8 * -(-check_dim(dim) // 8)


def to_bytes(X, dim: int) -> np.ndarray:
    """Packed words -> Milvus binary vectors: (n, n_words) uint64 -> (n, ceil(dim / 8)) uint8.

    Bit ``i`` of a vector is bit ``i % 8`` of byte ``i // 8`` on both sides, so this is the
    words' little-endian bytes, cut to whole bytes of ``dim`` (the cut words' bits are pad
    bits, zero). Equal to ``np.packbits(hdc.to_bool(X, dim), axis=-1, bitorder="little")``.
    """
    X = F.check_words(X, "X", dim=dim, min_ndim=2)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (rows, n_words), got shape {X.shape}")
    le = X if sys.byteorder == "little" else X.astype("<u8")
    return np.ascontiguousarray(le.view(np.uint8)[:, :milvus_dim(dim) // 8])


def from_bytes(B, dim: int) -> np.ndarray:
    """Milvus binary vectors -> packed words: (n, ceil(dim / 8)) uint8 -> (n, n_words) uint64,
    the inverse of :func:`to_bytes` (bits past ``dim`` must be zero)."""
    B = np.asarray(B)
    if B.dtype != np.uint8 or B.ndim != 2 or B.shape[1] != milvus_dim(dim) // 8:
        raise ValueError(f"B must be (n, {milvus_dim(dim) // 8}) uint8 for dim={dim}, got {B.dtype} {B.shape}")
    W = n_words_for(dim)
    out = np.zeros((B.shape[0], W * 8), np.uint8)
    out[:, :B.shape[1]] = B
    X = out.view("<u8").astype(np.uint64)
    return F.check_words(np.ascontiguousarray(X), "B", dim=dim, min_ndim=2)


# ---------------------------------------------------------------- connections
class _Connection:
    """An ORM connection of its own (a unique alias) to ``uri``, closed on exit. A path ending
    in ``.db`` runs Milvus Lite on that file (one server per file and process, shared with any
    ``MilvusClient`` on the same path); ``http://host:19530`` reaches a Milvus server."""

    def __init__(self, uri, token: str = ""):
        if not isinstance(uri, (str, Path)):
            raise TypeError(f"uri must be a str: a Milvus Lite file 'name.db' or a server address "
                            f"'http://host:19530', got {type(uri).__name__}")
        self.uri, self.token = str(uri), token

    def __enter__(self):
        pm = _pymilvus()
        self.alias = f"hdspike-{next(_aliases)}"
        pm.connections.connect(alias=self.alias, uri=self.uri, token=self.token)
        return pm, self.alias

    def __exit__(self, *exc):
        _pymilvus().connections.disconnect(self.alias)
        return False


def _batches(X, dim: int, batch_rows: int):
    """(start row, (rows, n_words) uint64 batch) from a NumPy array or memmap, a dask array,
    or a shard folder of :mod:`hdc.distributed` (each shard checked against its SHA-256);
    :func:`export` has checked X's kind, dtype and shape."""
    if isinstance(X, (str, Path)):
        from .distributed import iter_shards

        for start, shard in iter_shards(X, dim=dim):
            for s in range(0, shard.shape[0], batch_rows):
                yield start + s, shard[s:s + batch_rows]
        return
    if isinstance(X, np.ndarray):  # a memmap is read one batch at a time
        for s in range(0, X.shape[0], batch_rows):
            yield s, np.ascontiguousarray(X[s:s + batch_rows])
        return
    start = 0  # a dask array (export checked its dtype and shape): block by block
    for i in range(X.numblocks[0]):
        block = np.ascontiguousarray(X.blocks[i].compute())  # whole rows, whatever the words' chunks
        for s in range(0, block.shape[0], batch_rows):
            yield start + s, block[s:s + batch_rows]
        start += block.shape[0]


def _n_rows(X) -> int:
    if isinstance(X, (str, Path)):
        from .distributed import read_manifest

        return int(read_manifest(X)["rows"])
    if not (isinstance(X, np.ndarray) or (type(X).__module__.startswith("dask") and hasattr(X, "blocks"))):
        raise TypeError(f"X must be a numpy uint64 array (rows, n_words), a dask array or a shard "
                        f"folder; got {type(X).__name__}")
    if len(X.shape) != 2:
        raise ValueError(f"X must be 2-D (rows, n_words), got shape {X.shape}")
    return int(X.shape[0])


def _check_ids(ids, n: int) -> np.ndarray:
    if ids is None:
        return np.arange(n, dtype=np.int64)
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise TypeError(f"ids must be a 1-D integer array (one int64 id per row), got {ids.dtype} {ids.shape}")
    if ids.shape[0] != n:
        raise ValueError(f"ids has {ids.shape[0]} entries but X has {n} rows: one id per row")
    if ids.dtype == np.uint64 and ids.size and ids.max() > np.iinfo(np.int64).max:
        raise ValueError(f"ids must fit int64 (Milvus INT64 primary keys), got {int(ids.max())}")
    ids = ids.astype(np.int64)
    if np.unique(ids).size != n:
        raise ValueError("ids must be unique: Milvus primary keys name one row each")
    return ids


def export(X, uri, collection: str, dim: int, *, ids=None, token: str = "", overwrite: bool = False,
           batch_rows: int | None = None) -> int:
    """Write the packed database ``X`` into a new Milvus collection; return the rows written.

    ``X``: (n, n_words) uint64 (NumPy or ``np.memmap``, read one batch at a time), a dask
    array, or a shard folder of :func:`hdc.distributed.write_shards`. The collection has an
    INT64 primary key ``id`` (``ids``, default the row index 0..n-1) and a BINARY_VECTOR
    field ``vector`` of :func:`milvus_dim` dimensions with a ``BIN_FLAT`` (exact) Hamming
    index. Rows go in requests of ``batch_rows`` (default: 16 MiB of vector bytes).
    An existing collection of that name raises unless ``overwrite``.
    """
    dim = check_dim(dim)
    if milvus_dim(dim) > MAX_DIM:
        raise ValueError(f"dim={dim} is over Milvus's limit of {MAX_DIM} dimensions per vector")
    if not isinstance(collection, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", collection):
        raise ValueError(f"collection must be a Milvus name (letters, digits, underscores; not starting "
                         f"with a digit), got {collection!r}")
    n = _n_rows(X)
    if isinstance(X, np.ndarray):  # dtype, layout and width now; each batch's pad bits as it is read
        F.check_words(np.ascontiguousarray(X[:1]), "X", dim=dim, min_ndim=2)
    elif not isinstance(X, (str, Path)) and X.dtype != np.uint64:
        raise TypeError(f"X must have dtype uint64 (packed words), got dask {X.dtype}")
    ids = _check_ids(ids, n)
    row_bytes = milvus_dim(dim) // 8
    batch_rows = (max(1, _BATCH_BYTES // row_bytes) if batch_rows is None
                  else F._check_int(batch_rows, "batch_rows"))
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    with _Connection(uri, token) as (pm, alias):
        if pm.utility.has_collection(collection, using=alias):
            if not overwrite:
                raise FileExistsError(f"collection {collection!r} already exists at {str(uri)!r}; "
                                      f"pass overwrite=True to replace it")
            pm.utility.drop_collection(collection, using=alias)
        # every argument is validated (the batches as they come) before the collection exists
        schema = pm.CollectionSchema(
            [pm.FieldSchema(ID_FIELD, pm.DataType.INT64, is_primary=True, auto_id=False),
             pm.FieldSchema(VECTOR_FIELD, pm.DataType.BINARY_VECTOR, dim=milvus_dim(dim))],
            description=_DESCRIPTION.format(dim=dim))
        col = pm.Collection(collection, schema, using=alias, consistency_level="Strong")
        try:
            written = 0
            for start, batch in _batches(X, dim, batch_rows):
                B = to_bytes(F.check_words(batch, "X", dim=dim, min_ndim=2), dim)
                # columns, not rows: pymilvus 2.5 appends row-wise binary vectors one by one to a
                # protobuf bytes field (quadratic time and memory), a column in one join
                col.insert([ids[start:start + B.shape[0]].tolist(), [r.tobytes() for r in B]])
                written += B.shape[0]
            if written != n:
                raise ValueError(f"X yielded {written} rows, expected {n}")
            col.flush()
            col.create_index(VECTOR_FIELD, {"index_type": "BIN_FLAT", "metric_type": "HAMMING", "params": {}})
        except BaseException:
            pm.utility.drop_collection(collection, using=alias)  # never leave a half-written collection behind
            raise
    return written


def _open(pm, alias, uri, collection):
    if not pm.utility.has_collection(collection, using=alias):
        raise ValueError(f"no collection {collection!r} at {str(uri)!r} (write one with hdc.milvus.export)")
    return pm.Collection(collection, using=alias)


def _collection_dim(pm, col) -> int:
    """The hdspike dim recorded in the collection's description (else the field's dimensions)."""
    m = re.search(r"dim=(\d+) bits", col.description or "")
    if m:
        return int(m.group(1))
    field = next((f for f in col.schema.fields if f.name == VECTOR_FIELD), None)
    if field is None or field.dtype != pm.DataType.BINARY_VECTOR:
        raise ValueError(f"collection {col.name!r} has no BINARY_VECTOR field {VECTOR_FIELD!r} "
                         f"(not written by hdc.milvus.export)")
    return int(field.params["dim"])


def search(uri, collection: str, Q, k: int, *, token: str = "", query_batch: int = 1024):
    """The ``k`` nearest stored vectors of each query by Hamming distance, searched in Milvus.

    Returns ``(distances (m, k) int32, ids (m, k) int64)``, each row sorted by (distance, id):
    the distances equal :func:`hdc.topk`'s; the ids too, except among rows tied at the k-th
    distance (Milvus picks among those in its own order). Shapes: Q (m, n_words) uint64.
    """
    pm = _pymilvus()
    F.check_words(Q, "Q", min_ndim=2)
    if Q.ndim != 2:
        raise ValueError(f"Q must be 2-D (queries, n_words), got shape {Q.shape}")
    k, query_batch = F._check_int(k, "k"), F._check_int(query_batch, "query_batch")
    if not 1 <= query_batch <= MAX_K:
        raise ValueError(f"query_batch must be in 1..{MAX_K}, got {query_batch}")
    with _Connection(uri, token) as (_, alias):
        col = _open(pm, alias, uri, collection)
        dim = _collection_dim(pm, col)
        if Q.shape[1] != n_words_for(dim):
            raise ValueError(f"Q has {Q.shape[1]} words per vector but collection {collection!r} holds "
                             f"dim={dim} ({n_words_for(dim)} words)")
        F.check_words(Q, "Q", dim=dim)
        n = col.num_entities
        if not 1 <= k <= min(n, MAX_K):
            raise ValueError(f"k={k} is out of range: need 1 <= k <= {min(n, MAX_K)} (the collection's "
                             f"{n} rows{', Milvus top-k limit ' + str(MAX_K) if n > MAX_K else ''})")
        col.load()
        B = to_bytes(Q, dim)
        D = np.empty((Q.shape[0], k), np.int32)
        ids = np.empty((Q.shape[0], k), np.int64)
        for s in range(0, Q.shape[0], query_batch):
            res = col.search([r.tobytes() for r in B[s:s + query_batch]], VECTOR_FIELD,
                             {"metric_type": "HAMMING"}, limit=k)
            for j, hits in enumerate(res):
                d = np.asarray(hits.distances, np.float64)
                i = np.asarray(hits.ids, np.int64)
                if d.shape[0] != k:
                    raise RuntimeError(f"Milvus returned {d.shape[0]} hits for query {s + j}, expected {k}")
                if not np.array_equal(d, np.round(d)):
                    raise RuntimeError(f"Milvus returned non-integer Hamming distances {d[:4]} (not a "
                                       f"HAMMING collection?)")
                order = np.lexsort((i, d))
                D[s + j], ids[s + j] = d[order], i[order]
    return D, ids


def describe(uri, collection: str, *, token: str = "") -> dict:
    """The collection's rows, dim, Milvus dimensions and index parameters (for logs and checks)."""
    pm = _pymilvus()
    with _Connection(uri, token) as (_, alias):
        col = _open(pm, alias, uri, collection)
        dim = _collection_dim(pm, col)
        return {"rows": int(col.num_entities), "dim": dim, "milvus_dim": milvus_dim(dim),
                "indexes": [dict(ix.params) for ix in col.indexes]}
