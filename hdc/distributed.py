"""Scale-out on Dask: sharded exact Hamming search and map-reduce HDC training.

Optional: needs the ``dask`` extra (``pip install 'hdspike[dask]'``); importing this module
works without it, and the first call that needs Dask says how to install it.

* **A database on disk** is a folder of row shards (``shard-00000.npy``, ...) and a
  ``manifest.json`` naming dim, rows and each shard's SHA-256, all written through
  :func:`hdc.io.atomic_write` (the manifest last, so a folder with a manifest is complete).
  :func:`open_database` opens it as a ``dask.array`` (n, n_words) uint64 chunked by rows
  whose tasks read their rows from disk: nothing is scattered, so a worker that dies loses
  nothing the scheduler cannot recompute (Dask's resilience model: lost results are
  recomputed from the graph, https://distributed.dask.org/en/stable/resilience.html).
* **Exact top-k** (:func:`topk`): each chunk keeps its own top-k keyed by (distance, global
  index), and the partial lists are merged in a tree. The global top-k under that total order
  is contained in the union of the per-chunk top-k lists, so the result equals
  :func:`hdc.topk` on the whole database bit for bit, for any chunking (ties to the lower
  index). ``dask.array.topk`` is not used: it orders equal distances arbitrarily.
* **Map-reduce training** (:func:`accumulate`, :func:`fit`): each chunk fills int64
  :class:`hdc.BundleAccumulator` counters; the counters are summed (integer addition is
  associative, so any tree gives the same bits) and the tie rule is applied once, after the
  merge. Retraining runs as batch epochs: every chunk computes counter deltas against the
  class counters frozen at the start of the epoch; the same function runs on NumPy input, so
  the single-machine path offers the identical batch mode (:func:`batch_retrain`).

Clusters: every function uses the current Dask client when there is one (``dask.compute``
does), else Dask's default scheduler. :func:`local_cluster` starts a loopback
``LocalCluster``; :func:`connect` joins a remote scheduler with a bounded wait.

Example::

    from dask.distributed import Client
    from hdc import distributed as hd
    hd.write_shards(X, "db", dim=10_000, rows_per_shard=100_000)
    with hd.local_cluster(2) as cluster, Client(cluster):
        D, I = hd.topk(Q, hd.open_database("db"), k=10)   # == hdc.topk(Q, X, 10)
"""
from __future__ import annotations

import hashlib
import json
import numbers
import os
from pathlib import Path

import numpy as np

from . import functional as F
from .io import atomic_write, write_json
from .packing import WORD_BITS, check_dim, n_words_for, pack_bits

__all__ = [
    "MANIFEST", "write_shards", "read_manifest", "iter_shards", "open_database", "topk", "accumulate", "fit",
    "predict", "batch_retrain", "class_scores", "local_cluster", "connect", "ShardError",
]

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "hdspike-shards/1"
_HASH_BLOCK = 1 << 20          # bytes read per hashing step: bounds a verifying task's extra memory
_DEFAULT_SPLIT_EVERY = 8        # partial results merged per tree node
# the _read_rows arguments (file, sha256, start, stop, n_words) of each chunk of each array
# open_database made (array name -> list): topk reads a chunk inside its own task (see
# _read_topk), and an error about a chunk names the file it came from (_chunk_files)
_CHUNK_READS: dict[str, list[tuple]] = {}
# shards whose SHA-256 this process checked: path -> (file version, sha256) (see _verify)
_VERIFIED: dict[str, tuple[tuple, str]] = {}


class ShardError(RuntimeError):
    """A shard could not be read or computed (missing, corrupt, or its task killed every worker)."""


def _dask():
    try:
        import dask
        import dask.array as da
    except ImportError as exc:  # pragma: no cover - the extra is installed with the tests
        raise ImportError("hdc.distributed needs Dask: pip install 'hdspike[dask]' "
                          "(dask[distributed])") from exc
    return dask, da


def _is_dask(x) -> bool:
    return type(x).__module__.startswith("dask") and hasattr(x, "chunks")


def _words(a) -> np.ndarray:
    """A C-contiguous, 8-byte-aligned array: a block that arrived by pickle protocol 5 may sit
    at any byte offset of the message buffer, and the kernels need aligned words."""
    return np.require(a, requirements=["C", "A"])


def _check_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")
    return int(value)


# ---------------------------------------------------------------- shards on disk
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(_HASH_BLOCK)
            if not block:
                return h.hexdigest()
            h.update(block)


def write_shards(X, directory, dim: int, *, rows_per_shard: int = 1 << 16) -> Path:
    """Write ``X`` as row shards plus a manifest into ``directory``; return the manifest path.

    ``X`` is a (n, n_words) uint64 array (a np.memmap works, and is read one shard at a time)
    or an iterable of such batches (a database that never fits in memory). Each shard is a
    ``.npy`` file of at most ``rows_per_shard`` rows written atomically; the manifest (format,
    dim, n_words, rows, and per shard its file, rows and SHA-256) is written last.
    """
    dim = check_dim(dim)
    rows_per_shard = _check_int(rows_per_shard, "rows_per_shard")
    if rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be >= 1, got {rows_per_shard}")
    directory = Path(directory)
    if (directory / MANIFEST).exists():
        raise FileExistsError(f"{str(directory)!r} already holds a database ({MANIFEST}); "
                              f"write to a new folder")
    if isinstance(X, np.memmap):  # one shard's rows at a time: never the whole file in memory
        batches = (X[s:s + rows_per_shard] for s in range(0, max(1, X.shape[0]), rows_per_shard))
    else:
        batches = [X] if isinstance(X, np.ndarray) else X
    shards, pending, n = [], [], 0

    def flush(rows: np.ndarray):
        name = f"shard-{len(shards):05d}.npy"
        with atomic_write(directory / name, "wb") as f:
            np.save(f, np.ascontiguousarray(rows), allow_pickle=False)
        shards.append({"file": name, "rows": int(rows.shape[0]), "sha256": _sha256(directory / name)})

    for batch in batches:
        batch = F.check_words(np.ascontiguousarray(batch) if isinstance(batch, np.memmap) else batch,
                              "X", dim=dim, min_ndim=2)
        if batch.ndim != 2:
            raise ValueError(f"X must be 2-D (rows, n_words), got shape {batch.shape}")
        start = 0
        while start < batch.shape[0]:
            held = sum(p.shape[0] for p in pending)
            take = min(rows_per_shard - held, batch.shape[0] - start)
            pending.append(batch[start:start + take])
            start += take
            n += take
            if held + take == rows_per_shard:
                flush(np.concatenate(pending))
                pending = []
    if pending:
        flush(np.concatenate(pending))
    write_json(directory / MANIFEST, {"format": MANIFEST_FORMAT, "dim": dim, "n_words": n_words_for(dim),
                                      "rows": n, "shards": shards})
    return directory / MANIFEST


def read_manifest(directory) -> dict:
    """The manifest of a shard folder, checked: every shard file present with the right size."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no database at {str(directory)!r}: {MANIFEST} is missing "
                                f"(write one with hdc.distributed.write_shards)")
    man = json.loads(path.read_text())
    if man.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{str(path)!r}: unknown format {man.get('format')!r}, this version reads "
                         f"{MANIFEST_FORMAT!r}")
    if sum(s["rows"] for s in man["shards"]) != man["rows"]:
        raise ValueError(f"{str(path)!r}: shard rows add up to {sum(s['rows'] for s in man['shards'])}, "
                         f"not the manifest's rows={man['rows']}")
    for s in man["shards"]:
        f = directory / s["file"]
        if not f.is_file():
            raise ShardError(f"shard {str(f)!r} listed in {str(path)!r} is missing")
    return man


def _file_version(path: str) -> tuple:
    """What changes when a file is replaced (inode) or written in place (size, mtime, ctime)."""
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _verify(path: str, sha256: str) -> None:
    """Check a shard's SHA-256, once per process and file version: a database is searched
    many times, and hashing every shard before every search cost as much as a quarter of the
    search itself (1,000 queries, bench/scaleout.py). A replaced or rewritten file has a new
    version and is hashed again (the kernel stamps mtime and ctime at clock-tick resolution, a
    few ms: a rewrite within the tick of the check keeps the old version)."""
    version = _file_version(path)
    if _VERIFIED.get(path) == (version, sha256):
        return
    got = _sha256(Path(path))
    if got != sha256:
        raise ShardError(f"shard {path!r} fails its checksum: SHA-256 {got}, the manifest "
                         f"says {sha256} (corrupt or replaced file)")
    _VERIFIED[path] = (version, sha256)


def _read_rows(path: str, sha256: str | None, start: int, stop: int, n_words: int) -> np.ndarray:
    """Rows start..stop of one shard, memory-mapped read-only (no copy: the pages come from the
    page cache as the kernels read them, and hdc.topk drops each processed chunk's pages);
    with ``sha256`` the file's checksum is checked first (:func:`_verify`)."""
    if not os.path.isfile(path):
        raise ShardError(f"shard {path!r} is missing")
    if sha256 is not None:
        _verify(path, sha256)
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    if arr.dtype != np.uint64 or arr.ndim != 2 or arr.shape[1] != n_words:
        raise ShardError(f"shard {path!r} holds {arr.dtype} {arr.shape}, expected uint64 (rows, {n_words})")
    return arr[start:stop]


def iter_shards(directory, *, dim: int | None = None, verify: bool = True):
    """Yield ``(first row, rows (r, n_words) uint64)`` for each shard of a shard folder, in
    order, without Dask (exports, checks); with ``verify`` each shard's SHA-256 is checked
    first, and ``dim`` (when given) must be the manifest's."""
    directory = Path(directory)
    man = read_manifest(directory)
    if dim is not None and check_dim(dim) != man["dim"]:
        raise ValueError(f"dim={dim} but the database at {str(directory)!r} holds dim={man['dim']}")
    start = 0
    for s in man["shards"]:
        yield start, _read_rows(str(directory / s["file"]), s["sha256"] if verify else None, 0, s["rows"],
                                man["n_words"])
        start += s["rows"]


def open_database(directory, *, chunk_rows: int | None = None, verify: bool = True):
    """Open a shard folder as a lazy ``dask.array`` (n, n_words) uint64 chunked by rows.

    Chunks are the shards, or pieces of ``chunk_rows`` rows within each shard. A chunk is a
    read-only memory map of its rows (no copy; resident pages at most ``chunk_rows * n_words
    * 8`` bytes, and :func:`topk` drops them as it goes). With ``verify`` a task checks its
    shard's SHA-256 before using it, once per worker process and file version (a replaced
    or rewritten file is hashed again), so a changed file raises :class:`ShardError` naming
    it. Missing shards raise at open time.
    """
    dask, da = _dask()
    directory = Path(directory).resolve()
    man = read_manifest(directory)
    if chunk_rows is not None:
        chunk_rows = _check_int(chunk_rows, "chunk_rows")
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1 or None (one chunk per shard), got {chunk_rows}")
    n_words = man["n_words"]
    token = dask.base.tokenize(str(directory), man, chunk_rows, verify)
    pieces, reads = [], []
    for s in man["shards"]:
        path = str(directory / s["file"])
        step = chunk_rows or max(1, s["rows"])
        for start in range(0, s["rows"], step):
            stop = min(s["rows"], start + step)
            key = f"hdc-read-{s['file']}-{start}-{token}"
            args = (path, s["sha256"] if verify else None, start, stop, n_words)
            d = dask.delayed(_read_rows, pure=True)(*args, dask_key_name=key)
            pieces.append(da.from_delayed(d, (stop - start, n_words), np.uint64))
            reads.append(args)
    if not pieces:
        X = da.zeros((0, n_words), np.uint64, chunks=((0,), (n_words,)))
    else:
        X = da.concatenate(pieces, axis=0)
    _CHUNK_READS[X.name] = reads
    return X


def _chunk_files(name: str) -> list[tuple[str, int, int]] | None:
    """(file, start, stop) of each chunk of the array ``name`` if open_database made it."""
    reads = _CHUNK_READS.get(name)
    return None if reads is None else [(path, start, stop) for path, _, start, stop, _ in reads]


# ---------------------------------------------------------------- input checks
def _check_database(X, name: str = "X"):
    """A dask array (n, n_words) uint64 with one chunk along the words and known row chunks."""
    if not _is_dask(X):
        raise TypeError(f"{name} must be a dask.array (n, n_words) uint64 (open_database() or "
                        f"dask.array.from_array); got {type(X).__name__}")
    if X.dtype != np.uint64:
        raise TypeError(f"{name} must have dtype uint64 (packed words), got {X.dtype}")
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, n_words), got shape {X.shape}")
    if len(X.chunks[1]) != 1:
        raise ValueError(f"{name} is chunked along the words (axis 1 chunks {X.chunks[1]}); a row must "
                         f"stay whole in one chunk: pass {name}.rechunk({{1: -1}})")
    if any(np.isnan(c) for c in X.chunks[0]):
        raise ValueError(f"{name} has unknown chunk sizes {X.chunks[0]}; call {name}.compute_chunk_sizes()")
    return X


def _offsets(chunks) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(chunks)]).astype(np.int64)


def _describe_key(X, key) -> str:
    """Which chunk (and shard file, when known) a failed task key belongs to."""
    parts = key if isinstance(key, tuple) else (key,)
    name = str(parts[0])
    files = next((_chunk_files(nm) for nm in _CHUNK_READS if nm in name or name.startswith("hdc-read-")), None)
    if name.startswith("hdc-read-"):  # the read task itself: its key names the file
        return f"shard read task {name!r}"
    idx = [p for p in parts[1:] if isinstance(p, numbers.Integral)]
    where = f"task {key!r}"
    if idx:
        i = int(idx[0])
        off = _offsets(X.chunks[0])
        if i < len(off) - 1:
            where += f" on chunk {i} (rows {off[i]}..{off[i + 1] - 1})"
            files = files or _files_of(X)
            if files and len(files) == len(X.chunks[0]):
                where += f" of shard {files[i][0]!r}"
    return where


def _files_of(X):
    """The shard files of X's chunks if X was opened (or derived blockwise) from a shard folder."""
    if X.name in _CHUNK_READS:
        return _chunk_files(X.name)
    try:
        layers = X.dask.layers
    except AttributeError:
        return None
    for name in layers:
        files = _chunk_files(name)
        if files is not None and [b - a for _, a, b in files] == list(X.chunks[0]):
            return files
    return None


def _compute(X, *objs, what: str):
    """dask.compute, turning a task that killed its workers into a ShardError naming its chunk."""
    dask, _ = _dask()
    try:
        return dask.compute(*objs)
    except Exception as exc:
        if type(exc).__name__ == "KilledWorker":
            raise ShardError(f"{what} failed: {_describe_key(X, exc.task)} killed the worker "
                             f"running it {exc.allowed_failures + 1} times (the scheduler's retry "
                             f"limit distributed.scheduler.allowed-failures); no partial result "
                             f"is returned") from exc
        raise


# ---------------------------------------------------------------- exact top-k
def _chunk_topk(Q, block, k, offset, threads):
    Q, block = _words(Q), _words(block)
    kc = min(k, block.shape[0])
    if kc == 0:
        return np.empty((Q.shape[0], 0), np.int32), np.empty((Q.shape[0], 0), np.int64)
    d, i = F.topk(Q, block, kc, threads=threads)
    return d, i + offset


def _read_topk(Q, read_args, k, offset, threads):
    """:func:`_chunk_topk` on rows this task reads itself (``read_args`` for :func:`_read_rows`):
    one task per chunk of a database from :func:`open_database`, where the array's graph has
    four (read, two array layers, topk), each costing the scheduler and the worker a few ms."""
    return _chunk_topk(Q, _read_rows(*read_args), k, offset, threads)


def _merge_topk(parts, k):
    """Merge partial (distances, global indices) lists: the k smallest by (distance, index)."""
    d = np.concatenate([p[0] for p in parts], axis=1)
    i = np.concatenate([p[1] for p in parts], axis=1)
    order = np.lexsort((i, d), axis=-1)[:, :k]
    return (np.ascontiguousarray(np.take_along_axis(d, order, axis=1)),
            np.ascontiguousarray(np.take_along_axis(i, order, axis=1)))


def _tree(parts, combine, split_every, *args, name="hdc-merge"):
    dask, _ = _dask()
    level = 0
    while len(parts) > 1:
        parts = [dask.delayed(combine, pure=True)(parts[s:s + split_every], *args,
                                                  dask_key_name=(f"{name}-{level}-{dask.base.tokenize(parts[s:s + split_every])}", s))
                 for s in range(0, len(parts), split_every)]
        level += 1
    return parts[0]


def topk(Q, X, k: int, ids=None, *, split_every: int = _DEFAULT_SPLIT_EVERY, threads: int = 1,
         compute: bool = True):
    """The ``k`` nearest rows of the dask database ``X`` for each query, exactly as ``hdc.topk``.

    Returns ``(distances (m, k) int32, indices (m, k) int64)`` sorted by (distance, index),
    or with ``ids`` (a length-n array) ``(distances, ids[indices])``; ties are broken by the
    row index, whatever the ids. ``threads`` is the kernel threads per task (one per worker
    thread by default). With ``compute=False`` the lazy ``dask.delayed`` result is returned.

    Shapes: Q (m, W) uint64 (NumPy), X dask (n, W) uint64 chunked by rows.
    """
    dask, _ = _dask()
    _check_database(X)
    F.check_words(Q, "Q", min_ndim=2)
    if Q.ndim != 2:
        raise ValueError(f"Q must be 2-D (queries, n_words), got shape {Q.shape}")
    if Q.shape[1] != X.shape[1]:
        raise ValueError(f"Q has {Q.shape[1]} words per vector but X has {X.shape[1]}: the queries "
                         f"and the database must have the same dim")
    k = _check_int(k, "k")
    n = X.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k={k} is out of range: need 1 <= k <= {n} (the rows of X)")
    split_every = _check_int(split_every, "split_every")
    if split_every < 2:
        raise ValueError(f"split_every must be >= 2 (partial results merged per tree node), got {split_every}")
    if ids is not None:
        if len(ids) != n:
            raise ValueError(f"ids has {len(ids)} entries but X has {n} rows: one id per row")
    Qd = dask.delayed(Q, pure=True)  # one copy of the queries in the graph, shared by every task
    off = _offsets(X.chunks[0])
    tok = dask.base.tokenize(X.name, Q, k)
    reads = _CHUNK_READS.get(X.name)
    if reads:  # X is open_database's array itself: each task reads its own rows
        parts = [dask.delayed(_read_topk, pure=True)(Qd, r, k, int(off[i]), threads,
                                                     dask_key_name=(f"hdc-topk-{tok}", i))
                 for i, r in enumerate(reads)]
    else:
        parts = [dask.delayed(_chunk_topk, pure=True)(Qd, b, k, int(off[i]), threads,
                                                      dask_key_name=(f"hdc-topk-{tok}", i))
                 for i, b in enumerate(X.to_delayed().ravel())]
    result = _tree(parts, _merge_topk, split_every, k, name=f"hdc-topk-merge-{tok}")
    if not compute:
        return result
    (d, i), = _compute(X, result, what="topk")
    if ids is not None:
        ids_at = (ids.vindex[i.ravel()].compute() if _is_dask(ids) else np.asarray(ids)[i.ravel()])
        return d, ids_at.reshape(i.shape)
    return d, i


# ---------------------------------------------------------------- map-reduce training
def _label_blocks(y, X, name="y"):
    """``y`` split into X's row chunks, as delayed blocks (NumPy y is sliced, dask y rechunked)."""
    dask, da = _dask()
    n = X.shape[0]
    if _is_dask(y):
        if y.ndim != 1 or y.shape[0] != n:
            raise ValueError(f"{name} must be 1-D with one label per row of X ({n}), got shape {y.shape}")
        return list(y.rechunk((X.chunks[0],)).to_delayed().ravel())
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must be 1-D with one label per row of X ({n}), got shape {y.shape}")
    off = _offsets(X.chunks[0])
    return [y[off[i]:off[i + 1]] for i in range(len(off) - 1)]


def _check_labels(yb, n_classes, offset):
    yb = np.asarray(yb)
    if yb.dtype.kind not in "iu":
        raise TypeError(f"y must hold integer class indices 0..{n_classes - 1}, got dtype {yb.dtype}")
    bad = np.flatnonzero((yb < 0) | (yb >= n_classes))
    if bad.size:
        raise ValueError(f"y has label {int(yb[bad[0]])} at row {offset + int(bad[0])}; labels must be "
                         f"ints in 0..{n_classes - 1} (n_classes={n_classes})")
    return yb


def _chunk_accumulate(block, yb, n_classes, dim, offset):
    block = _words(block)
    accs = [F.BundleAccumulator(dim) for _ in range(n_classes)]
    if yb is None:
        accs[0].add(block)
        return accs
    yb = _check_labels(yb, n_classes, offset)
    for c in np.unique(yb):
        accs[c].add(np.ascontiguousarray(block[yb == c]))
    return accs


def _merge_accs(parts):
    out = parts[0]
    for p in parts[1:]:
        for a, b in zip(out, p):
            a.merge(b)
    return out


def _check_dim_for(X, dim):
    dim = check_dim(dim)
    if n_words_for(dim) != X.shape[1]:
        raise ValueError(f"dim={dim} needs {n_words_for(dim)} words per vector but X has {X.shape[1]}")
    return dim


def accumulate(X, y, n_classes: int, *, dim: int, split_every: int = _DEFAULT_SPLIT_EVERY):
    """Per-class bundles of a dask ``X`` by map-reduce: a list of ``n_classes`` merged
    :class:`hdc.BundleAccumulator` (int64 counters summed over chunks; read each with
    ``.result()``, which applies the tie rule once, after the merge). ``y=None`` bundles every
    row into one class. Labels are ints in 0..n_classes-1, aligned with X's rows."""
    dask, _ = _dask()
    _check_database(X)
    dim = _check_dim_for(X, dim)
    n_classes = _check_int(n_classes, "n_classes")
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    ys = [None] * len(X.chunks[0]) if y is None else _label_blocks(y, X)
    off = _offsets(X.chunks[0])
    tok = dask.base.tokenize(X.name, y if not _is_dask(y) else y.name, n_classes, dim)
    parts = [dask.delayed(_chunk_accumulate, pure=True)(b, yb, n_classes, dim, int(off[i]),
                                                        dask_key_name=(f"hdc-acc-{tok}", i))
             for i, (b, yb) in enumerate(zip(X.to_delayed().ravel(), ys))]
    (accs,) = _compute(X, _tree(parts, _merge_accs, split_every, name=f"hdc-acc-merge-{tok}"),
                       what="accumulate")
    return accs


# ---------------------------------------------------------------- batch retraining
def _planes(C):
    """Packed bit-planes of the counters shifted to >= 0: C = offsets + sum_p 2**p * plane_p."""
    offsets = C.min(axis=1)
    U = C - offsets[:, None]
    n_planes = max(1, int(U.max()).bit_length())
    if n_planes > 52:
        raise OverflowError(f"class counters need {n_planes} bit-planes; the exact dot products "
                            f"would pass int64")
    planes = np.stack([pack_bits(((U >> p) & 1).astype(bool)) for p in range(n_planes)], axis=1)
    return planes, offsets


def class_scores(Q, C, dim: int) -> np.ndarray:
    """Cosine of bipolar queries with integer class counters, exact integer dot products.

    ``dot(q, C_k) = sum_j C_kj - 2 * sum_{j: q_j = 1} C_kj`` with the masked sum taken over
    packed bit-planes of C (``popcount(q & p) = (|q| + |p| - hamming(q, p)) / 2``), from
    :func:`hdc.hamming_matrix` and :func:`hdc.popcount`. A class of zero norm scores 0.
    Shapes: Q (m, W) uint64, C (K, dim) int64 -> (m, K) float64.
    """
    C = np.asarray(C, np.int64)
    K = C.shape[0]
    planes, offsets = _planes(C)
    B = planes.shape[1]
    flat = np.ascontiguousarray(planes.reshape(K * B, -1))
    H = F.hamming_matrix(Q, flat).astype(np.int64)
    pc_q = F.popcount(Q)
    both = (pc_q[:, None] + F.popcount(flat)[None, :] - H) >> 1
    masked = both.reshape(-1, K, B) @ np.left_shift(np.int64(1), np.arange(B, dtype=np.int64))
    dots = C.sum(axis=1)[None, :] - 2 * (masked + offsets[None, :] * pc_q[:, None])
    norms = np.sqrt((C.astype(np.float64) ** 2).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        s = dots / (norms[None, :] * np.sqrt(dim))
    return np.where(norms[None, :] > 0, s, 0.0)


def _chunk_delta(block, yb, C, dim, offset):
    """Perceptron deltas of one chunk against frozen counters C: each mistaken sample is added
    (bipolar) to its class and subtracted from the predicted one. -> (delta (K, dim), mistakes)."""
    block = _words(block)
    K = C.shape[0]
    yb = _check_labels(yb, K, offset)
    delta = np.zeros((K, dim), np.int64)
    if block.shape[0] == 0:
        return delta, 0
    pred = np.argmax(class_scores(block, C, dim), axis=1)  # ties: the first class, as predict()
    wrong = pred != yb
    for c in range(K):
        w = (yb == c).astype(np.int64) - (pred == c).astype(np.int64)
        sel = wrong & (w != 0)
        if sel.any():
            acc = F.BundleAccumulator(dim)
            acc.add(np.ascontiguousarray(block[sel]), weights=w[sel])
            delta[c] = acc.bipolar_sum()
    return delta, int(wrong.sum())


def _merge_deltas(parts):
    return sum(p[0] for p in parts[1:]) + parts[0][0], sum(p[1] for p in parts)


def batch_retrain(X, y_idx, n_classes: int, dim: int, *, epochs: int = 10, init: str = "zero",
                  average: bool = True, split_every: int = _DEFAULT_SPLIT_EVERY):
    """Batch-mode perceptron retraining of integer class counters; NumPy or dask ``X``.

    Each epoch freezes the counters C, sums every chunk's deltas (:func:`_chunk_delta`) and
    adds them once, so the result does not depend on the chunking or the number of workers
    (integer sums), and a NumPy ``X`` (one chunk) gives the same bits as any cluster.
    ``init="centroid"`` starts from the class bundles; ``average`` returns the sum of the
    counters after each epoch (proportional to their average: the averaged perceptron,
    Freund & Schapire 1999, "Large margin classification using the perceptron algorithm").
    Returns ``(counters (K, dim) int64, history [{"epoch", "mistakes"}])``.
    """
    dask, da = _dask()
    dim = check_dim(dim)
    n_classes = _check_int(n_classes, "n_classes")
    epochs = _check_int(epochs, "epochs")
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if init not in ("zero", "centroid"):
        raise ValueError(f"init must be 'zero' or 'centroid', got {init!r}")
    if not _is_dask(X):
        X = F.check_words(X, "X", dim=dim, min_ndim=2)
        X = da.from_array(X, chunks=(max(1, X.shape[0]), X.shape[1]))
    _check_database(X)
    dim = _check_dim_for(X, dim)
    if init == "centroid":
        C = np.stack([a.bipolar_sum() for a in accumulate(X, y_idx, n_classes, dim=dim)])
    else:
        C = np.zeros((n_classes, dim), np.int64)
    ys = _label_blocks(y_idx, X)
    blocks = X.to_delayed().ravel()
    off = _offsets(X.chunks[0])
    M = np.zeros_like(C)
    history = []
    for ep in range(1, epochs + 1):
        Cd = dask.delayed(C, pure=True)
        tok = dask.base.tokenize(X.name, C, ep)
        parts = [dask.delayed(_chunk_delta, pure=True)(b, yb, Cd, dim, int(off[i]),
                                                       dask_key_name=(f"hdc-delta-{tok}", i))
                 for i, (b, yb) in enumerate(zip(blocks, ys))]
        (delta, mistakes), = _compute(X, _tree(parts, _merge_deltas, split_every,
                                               name=f"hdc-delta-merge-{tok}"), what="batch_retrain")
        C = C + delta
        M += C
        history.append({"epoch": ep, "mistakes": int(mistakes)})
        if mistakes == 0:
            M += C * (epochs - ep)  # the counters stay as they are for the remaining epochs
            break
    return (M if average and epochs else C), history


# ---------------------------------------------------------------- estimators on dask input
def _classes_and_index(y, X):
    """Sorted classes of ``y`` and a label-index array aligned with X's chunks (lazy if dask)."""
    _, da = _dask()
    if _is_dask(y):
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(f"y must be 1-D with one label per row of X ({X.shape[0]}), got shape {y.shape}")
        classes = np.unique(da.unique(y).compute())
        y_idx = y.rechunk((X.chunks[0],)).map_blocks(_index_of, classes, dtype=np.int64)
    else:
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(f"y must be 1-D with one label per row of X ({X.shape[0]}), got shape {y.shape}")
        classes, y_idx = np.unique(y, return_inverse=True)
        y_idx = y_idx.astype(np.int64)
    if classes.size < 2:
        raise ValueError(f"y holds {classes.size} class(es) {classes.tolist()}; a classifier needs at least 2")
    return classes, y_idx


def _index_of(labels, classes):
    return np.searchsorted(classes, labels).astype(np.int64)


def fit(clf, X, y, *, split_every: int = _DEFAULT_SPLIT_EVERY):
    """Fit an HDC classifier of :mod:`hdc.classifiers` on a dask ``X`` (and NumPy or dask ``y``).

    ``CentroidClassifier``: class counters by :func:`accumulate`, bit-identical to ``clf.fit``
    on the computed arrays. ``RetrainClassifier``: :func:`batch_retrain` (batch epochs, the
    perceptron update; ``validation_fraction`` must be None or 0 on this path: choosing the
    epoch on a held-out split is not distributed yet). Returns ``clf``, fitted.
    """
    _check_database(X)
    kind = type(clf).__name__
    dim = clf.dim if getattr(clf, "dim", None) is not None else X.shape[1] * WORD_BITS
    dim = _check_dim_for(X, dim)
    if hasattr(clf, "_validate_params"):
        clf._validate_params()
    classes, y_idx = _classes_and_index(y, X)
    K = len(classes)
    if kind == "CentroidClassifier":
        C = np.stack([a.bipolar_sum() for a in accumulate(X, y_idx, K, dim=dim, split_every=split_every)])
        return _install(clf, classes, dim, C, raw=True)
    if kind == "RetrainClassifier":
        if clf.update != "perceptron":
            raise ValueError(f"update={clf.update!r}: the batch (distributed) path implements "
                             f"update='perceptron' only")
        if clf.validation_fraction not in (None, 0, 0.0):
            raise ValueError(f"validation_fraction={clf.validation_fraction!r}: the batch (distributed) "
                             f"path trains for a fixed number of epochs; set validation_fraction=None")
        C, hist = batch_retrain(X, y_idx, K, dim, epochs=clf.epochs, init=clf.init, average=clf.average,
                                split_every=split_every)
        if not np.any(C):
            raise ValueError("training left every class counter at zero (no epochs and init='zero'?)")
        clf.best_epoch_ = len(hist)
        clf.history_ = hist
        return _install(clf, classes, dim, C, raw=False)
    raise TypeError(f"clf must be an hdc.classifiers CentroidClassifier or RetrainClassifier, got {kind}")


def _install(clf, classes, dim, C, *, raw: bool):
    """The hook into the classifiers: the same attributes their own fit sets."""
    clf.dim_ = dim
    clf.classes_ = classes
    if raw:
        clf.raw_counters_ = C
    return clf._set_counters(C)


def predict(clf, X):
    """Lazy predictions of a fitted classifier on a dask ``X``: a dask array (n,) of labels."""
    _check_database(X)
    classes = getattr(clf, "classes_", None)
    if classes is None:
        raise ValueError(f"this {type(clf).__name__} is not fitted yet; call fit() first")
    return X.map_blocks(lambda b: clf.predict(_words(b)), drop_axis=1,
                        dtype=classes.dtype, meta=np.empty((0,), classes.dtype))


# ---------------------------------------------------------------- clusters
# Dask's diagnostics that a loopback cluster without a dashboard does not need, at the cost of
# CPU on every process (measured here, idle: 1.7% of a core per worker and 3.2% for the
# scheduler's process with Dask's defaults, 0.6% and 1.0% with these; the profiler adds 1.3%
# per busy worker): the workers' statistical profiler (a stack sample every 10 ms), the
# event-loop health tick (20 ms by default) and the system monitor (500 ms by default)
_LEAN_CONFIG = {"distributed.worker.profile.enabled": False, "distributed.admin.tick.interval": "200ms",
                "distributed.admin.system-monitor.interval": "2s"}


def local_cluster(n_workers: int = 2, *, memory_limit="auto", lean: bool = True, **kwargs):
    """A ``LocalCluster`` of ``n_workers`` processes, one thread each, on 127.0.0.1, no dashboard.

    Use as ``with local_cluster(2) as cluster, Client(cluster): ...``. ``lean`` (default)
    turns off the diagnostics nothing reads without a dashboard (``_LEAN_CONFIG``: the
    workers' profiler; the event-loop tick and system monitor run at 200 ms and 2 s instead of
    20 ms and 500 ms); ``lean=False`` keeps Dask's configuration. Extra keyword arguments go
    to ``dask.distributed.LocalCluster``.
    """
    dask, _ = _dask()
    from dask.distributed import LocalCluster

    n_workers = _check_int(n_workers, "n_workers")
    if n_workers < 1:
        raise ValueError(f"n_workers must be >= 1, got {n_workers}")
    with dask.config.set(_LEAN_CONFIG if lean else {}):  # the scheduler and the nannies read it now
        # dashboard_address=None drops the dashboard but the scheduler still serves HTTP on
        # :8787 (dask/distributed#7207), so a second cluster warns that the port is taken: the
        # scheduler's HTTP server goes to a free loopback port instead
        scheduler_kwargs = {"dashboard_address": "127.0.0.1:0", **kwargs.pop("scheduler_kwargs", {})}
        return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                            dashboard_address=None, worker_dashboard_address=None,
                            memory_limit=memory_limit, scheduler_kwargs=scheduler_kwargs, **kwargs)


def connect(address: str, *, timeout_s: float = 10.0):
    """A ``dask.distributed.Client`` on the scheduler at ``address`` (``tcp://host:8786``).

    Waits at most ``timeout_s`` seconds; an unreachable scheduler raises ConnectionError
    naming the address, instead of the client's retry loop.
    """
    _dask()
    from dask.distributed import Client

    if not isinstance(address, str) or not address:
        raise TypeError(f"address must be a scheduler address such as 'tcp://10.0.0.5:8786', got {address!r}")
    if not (isinstance(timeout_s, numbers.Real) and 0 < timeout_s < float("inf")):
        raise ValueError(f"timeout_s must be a finite number of seconds > 0, got {timeout_s!r}")
    try:
        return Client(address, timeout=timeout_s)
    except (OSError, TimeoutError) as exc:
        raise ConnectionError(f"no Dask scheduler reachable at {address!r} within {timeout_s} s "
                              f"({type(exc).__name__}: {exc}); start one with `dask scheduler` or "
                              f"use hdc.distributed.local_cluster()") from exc
