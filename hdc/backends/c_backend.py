"""The C backend: cffi (API mode) bindings of the kernels in csrc/, with run-time ISA dispatch.

Implements the kernel protocol of :mod:`hdc.backends` over ``hdc._hdc_c``. The C code releases
the GIL for every call. Each function checks its arrays cheaply (type, dtype, shape,
C-contiguity, alignment, writability) so a direct call with a bad array raises instead of
crashing, and every C return code is checked.

ISA levels (one build holds all of its architecture's, chosen once by CPUID + XGETBV on x86-64,
by getauxval(AT_HWCAP) on arm64): ``avx512`` (F/BW/VL/VPOPCNTDQ), ``avx2`` (Harley-Seal),
``x86-64-v2`` (scalar POPCNT), ``sve``, ``neon``, ``portable`` (plain C). Override with the environment variable ``HDC_ISA`` (read at import) or
:func:`set_isa` / :func:`use_isa`; :func:`call_count` proves which level ran.

Limits: ``hamming_matrix``/``topk`` need ``n_words < 2**25`` (dim < 2**31 bits, int32
distances); row counts below ``2**62 / n_words``; ``bit_counts`` counters are int64.

``HDC_C_EXT=/path/to/_hdc_c....so`` loads another build of the extension (the sanitizer build
of csrc/run_sanitized_tests.sh) in place of the installed one.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import threading

import numpy as np

NAME = "c"

_ext = os.environ.get("HDC_C_EXT", "").strip()
if _ext:
    _spec = importlib.util.spec_from_file_location("hdc._hdc_c", _ext)
    if _spec is None or _spec.loader is None:
        raise ImportError(f"HDC_C_EXT={_ext!r} is not a loadable extension module")
    _mod = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_mod)
    ffi, lib = _mod.ffi, _mod.lib
else:
    from hdc._hdc_c import ffi, lib  # noqa: E402  (built by pip install through csrc/build_ffi.py)

__all__ = [
    "NAME", "bind", "popcount", "hamming_rows", "hamming_matrix", "topk", "permute", "bit_counts",
    "bundle_majority", "causal_topk", "ISA_NAMES", "KERNELS", "isa_levels", "get_isa", "set_isa", "use_isa",
    "detected_isa", "call_count", "ran_count", "helper_ranges", "hmat_splits", "sanitized",
    "MAX_WORDS_DISTANCE", "BEATS_NUMBA", "ISA_PREFERENCE",
]

#: level names by their C id (csrc/hdc_internal.h); ids are names, not a speed order
ISA_NAMES = ("portable", "avx2", "avx512", "x86-64-v2", "neon", "sve")
#: the order in which the C code prefers supported levels (fastest first on each architecture)
ISA_PREFERENCE = ("avx512", "avx2", "x86-64-v2", "sve", "neon", "portable")
KERNELS = ("bind", "popcount", "hamming_rows", "hamming_matrix", "topk", "permute", "bit_counts",
           "bundle_majority", "causal_topk")
#: Does the C Hamming matrix at this level beat Numba's kernel compiled for a CPU of the same
#: level? Measured with bench/hamming.py --numba-levels (Numba pinned to the level through
#: NUMBA_CPU_NAME / NUMBA_CPU_FEATURES) on an AMD EPYC (Zen 5), m=200 x n=20,000 x 10,048 bits,
#: 2 threads: avx512 0.037 s vs Numba 0.047 s; avx2 0.092 s vs Numba (haswell) 0.128 s;
#: x86-64-v2 0.149 s vs Numba (x86-64-v2) 0.188 s; portable 37x slower than Numba.
#: Levels not listed (neon, sve: no hardware to measure on) are timed once at first use.
BEATS_NUMBA = {"avx512": True, "avx2": True, "x86-64-v2": True, "portable": False}
MAX_WORDS_DISTANCE = 1 << 25  # int32 distances: 64 * n_words must stay below 2**31

_U64 = np.dtype(np.uint64)
_I64 = np.dtype(np.int64)
_I32 = np.dtype(np.int32)
_nd = np.ndarray
_from_buffer = ffi.from_buffer
_NULL = ffi.NULL
_ERRORS = {
    -1: (ValueError, "invalid size or argument"),
    -2: (MemoryError, "out of memory for kernel scratch space"),
    -3: (OverflowError, "past a documented limit (n_words must be < 2**25 for int32 distances)"),
    -4: (ValueError, "ISA level not supported by this CPU/OS"),
}


def _raise(rc: int, fn: str):
    exc, msg = _ERRORS.get(rc, (RuntimeError, f"unknown error code {rc}"))
    raise exc(f"hdc C kernel {fn}: {msg}")


# ------------------------------------------------------------------ argument checks
def _arr(a, name: str, dtype: np.dtype, writable: bool = False):
    """Raise unless ``a`` is a C-contiguous, aligned ndarray of ``dtype`` (writable for outputs)."""
    if type(a) is not _nd and not isinstance(a, _nd):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype} in native byte order, got {a.dtype}")
    f = a.flags
    if not f.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use numpy.ascontiguousarray)")
    if not f.aligned:
        raise ValueError(f"{name} is not aligned to its {dtype.itemsize}-byte items (copy it first)")
    if writable and not f.writeable:
        raise ValueError(f"{name} is read-only; an output array must be writable")


def _ptr(a, ctype: str):
    return _from_buffer(ctype, a) if a.size else _NULL


def _words2d(a, name: str, writable: bool = False):
    _arr(a, name, _U64, writable)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, n_words), got shape {a.shape}")


def _query_db(q, x):
    """Check a (queries, stored rows) pair of word matrices; return (m, n, n_words)."""
    _words2d(q, "q")
    _words2d(x, "x")
    if x.shape[1] != q.shape[1]:
        raise ValueError(f"q and x must have the same number of words, got {q.shape[1]} and {x.shape[1]}")
    return q.shape[0], x.shape[0], q.shape[1]


def _threads(threads) -> int:
    if type(threads) is not int:
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
            raise TypeError(f"threads must be an int >= 1, got {threads!r}")
        threads = int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return min(threads, 256)


def _same_shape(a, b, na: str, nb: str):
    if a.shape != b.shape:
        raise ValueError(f"{na} and {nb} must have the same shape, got {a.shape} and {b.shape}")


def _dim_words(dim, n_words: int) -> int:
    if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, (int, np.integer)):
        raise TypeError(f"dim must be an int, got {type(dim).__name__}")
    dim = int(dim)
    if dim < 1:
        raise ValueError(f"dim must be >= 1 bit, got {dim}")
    if (dim + 63) // 64 != n_words:
        raise ValueError(f"dim={dim} needs {(dim + 63) // 64} words per row, arrays have {n_words}")
    return dim


def _overlaps(a, b) -> bool:
    return a is not b and np.may_share_memory(a, b)


# ------------------------------------------------------------------ kernels
def bind(a, b, out, threads=1):
    """``out = a ^ b`` (any equal shapes; ``out`` may be ``a`` or ``b``)."""
    _arr(a, "a", _U64)
    _arr(b, "b", _U64)
    _arr(out, "out", _U64, True)
    _same_shape(a, b, "a", "b")
    _same_shape(a, out, "a", "out")
    if _overlaps(out, a) or _overlaps(out, b):  # partial overlap: compute into a temporary
        tmp = np.empty_like(out)
        bind(a, b, tmp, threads)
        out[...] = tmp
        return
    W = a.shape[-1] if a.ndim else 1
    rows = a.size // W if W else 0
    rc = lib.hdc_bind(_ptr(a, "uint64_t[]"), _ptr(b, "uint64_t[]"), _ptr(out, "uint64_t[]"), rows, W,
                      _threads(threads))
    if rc:
        _raise(rc, "bind")


def popcount(x, out, threads=1):
    """``out[r] = bitwise_count(x[r]).sum()``; x: (n, W) uint64, out: (n,) int64."""
    _words2d(x, "x")
    _arr(out, "out", _I64, True)
    if out.shape != x.shape[:1]:
        raise ValueError(f"out must have shape {x.shape[:1]}, got {out.shape}")
    rc = lib.hdc_popcount(_ptr(x, "uint64_t[]"), x.shape[0], x.shape[1], _ptr(out, "int64_t[]"),
                          _threads(threads))
    if rc:
        _raise(rc, "popcount")


def hamming_rows(a, b, out, threads=1):
    """``out[r] = bitwise_count(a[r] ^ b[r]).sum()``; a, b: (n, W) uint64, out: (n,) int64."""
    _words2d(a, "a")
    _words2d(b, "b")
    _same_shape(a, b, "a", "b")
    _arr(out, "out", _I64, True)
    if out.shape != a.shape[:1]:
        raise ValueError(f"out must have shape {a.shape[:1]}, got {out.shape}")
    rc = lib.hdc_hamming_rows(_ptr(a, "uint64_t[]"), _ptr(b, "uint64_t[]"), a.shape[0], a.shape[1],
                              _ptr(out, "int64_t[]"), _threads(threads))
    if rc:
        _raise(rc, "hamming_rows")


def hamming_matrix(q, x, out, threads=1):
    """``out[i, j] = bitwise_count(q[i] ^ x[j]).sum()``; q: (m, W), x: (n, W), out: (m, n) int32.

    ``out`` may also be a column slice of a wider C-ordered int32 matrix (``big[:, j0:j1]``):
    rows strided, items contiguous.
    """
    m, n, W = _query_db(q, x)
    if type(out) is not _nd and not isinstance(out, _nd):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != _I32:
        raise TypeError(f"out must have dtype int32 in native byte order, got {out.dtype}")
    if out.shape != (m, n):
        raise ValueError(f"out must have shape {(m, n)}, got {out.shape}")
    f = out.flags
    if not f.writeable:
        raise ValueError("out is read-only; an output array must be writable")
    if f.c_contiguous:
        stride = n
        if not f.aligned:
            raise ValueError("out is not aligned to its 4-byte items (copy it first)")
        ptr = _ptr(out, "int32_t[]")
    else:
        s0, s1 = out.strides
        if not f.aligned or (n > 1 and s1 != 4) or s0 < 4 * n or s0 % 4:
            raise ValueError("out must be C-contiguous, or a column slice of a C-ordered int32 matrix")
        stride = s0 // 4
        # the buffer runs from out[0, 0] to out[m-1, n-1]: wrap that span, not the strided view
        base = out.__array_interface__["data"][0]
        ptr = ffi.cast("int32_t *", base) if out.size else _NULL
    if W >= MAX_WORDS_DISTANCE:
        raise OverflowError(f"n_words={W} too large for int32 distances (limit {MAX_WORDS_DISTANCE - 1})")
    rc = lib.hdc_hamming_matrix(_ptr(q, "uint64_t[]"), m, _ptr(x, "uint64_t[]"), n, W, ptr, stride,
                                _threads(threads))
    if rc:
        _raise(rc, "hamming_matrix")


def topk(q, x, k, out_dist, out_idx, threads=1):
    """The k nearest rows of x per query, ascending Hamming distance, ties by lower index.

    Shapes: q (m, W), x (n, W) uint64; out_dist (m, k) int32, out_idx (m, k) int64; 1 <= k <= n.
    """
    m, n, W = _query_db(q, x)
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    k = int(k)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n} (the number of stored rows), got {k}")
    _arr(out_dist, "out_dist", _I32, True)
    _arr(out_idx, "out_idx", _I64, True)
    if out_dist.shape != (m, k) or out_idx.shape != (m, k):
        raise ValueError(f"out_dist and out_idx must have shape {(m, k)}, got {out_dist.shape} and {out_idx.shape}")
    if W >= MAX_WORDS_DISTANCE:
        raise OverflowError(f"n_words={W} too large for int32 distances (limit {MAX_WORDS_DISTANCE - 1})")
    rc = lib.hdc_topk(_ptr(q, "uint64_t[]"), m, _ptr(x, "uint64_t[]"), n, W, k, _ptr(out_dist, "int32_t[]"),
                      _ptr(out_idx, "int64_t[]"), _threads(threads))
    if rc:
        _raise(rc, "topk")


def permute(x, shift, dim, out, threads=1):
    """Cyclic rotation of the dim valid bits of each row: bit j -> bit (j + shift) % dim."""
    _words2d(x, "x")
    _words2d(out, "out", True)
    _same_shape(x, out, "x", "out")
    dim = _dim_words(dim, x.shape[1])
    if isinstance(shift, (bool, np.bool_)) or not isinstance(shift, (int, np.integer)):
        raise TypeError(f"shift must be an int, got {type(shift).__name__}")
    shift = int(shift)
    if not 0 <= shift < dim:
        raise ValueError(f"kernel shift must be in 0..{dim - 1}, got {shift}")
    if x is out or _overlaps(out, x):  # rotation reads other words of the row: not in place
        x = x.copy()
    rc = lib.hdc_permute(_ptr(x, "uint64_t[]"), x.shape[0], x.shape[1], dim, shift, _ptr(out, "uint64_t[]"),
                         _threads(threads))
    if rc:
        _raise(rc, "permute")


def bit_counts(x, dim, counts, threads=1):
    """``counts[j] += number of rows of x with bit j set`` (pad bits ignored); counts: (dim,) int64."""
    _words2d(x, "x")
    dim = _dim_words(dim, x.shape[1])
    _arr(counts, "counts", _I64, True)
    if counts.shape != (dim,):
        raise ValueError(f"counts must have shape {(dim,)}, got {counts.shape}")
    rc = lib.hdc_bit_counts(_ptr(x, "uint64_t[]"), x.shape[0], x.shape[1], dim, _ptr(counts, "int64_t[]"),
                            _threads(threads))
    if rc:
        _raise(rc, "bit_counts")


def bundle_majority(x, dim, tie, out, threads=1):
    """Bitwise majority of the rows of x; where exactly half are set, the bit of ``tie``."""
    _words2d(x, "x")
    dim = _dim_words(dim, x.shape[1])
    if x.shape[0] < 1:
        raise ValueError("bundle_majority needs at least one row")
    _arr(tie, "tie", _U64)
    _arr(out, "out", _U64, True)
    if tie.shape != (x.shape[1],) or out.shape != (x.shape[1],):
        raise ValueError(f"tie and out must have shape {(x.shape[1],)}, got {tie.shape} and {out.shape}")
    if _overlaps(out, x) or _overlaps(out, tie):
        tmp = np.empty_like(out)
        bundle_majority(x, dim, tie, tmp, threads)
        out[...] = tmp
        return
    rc = lib.hdc_bundle_majority(_ptr(x, "uint64_t[]"), x.shape[0], x.shape[1], dim, _ptr(tie, "uint64_t[]"),
                                 _ptr(out, "uint64_t[]"), _threads(threads))
    if rc:
        _raise(rc, "bundle_majority")


def _int_arg(v, name: str) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    return int(v)


def causal_topk(q, x, k, q_start, window, skip_recent, overlap, out_score, out_idx, threads=1):
    """The k best keys of each query among x[lo .. p - skip_recent], p = q_start + i, ties to the
    larger index; ``window`` None or >= 1. See :func:`hdc.backends.numpy_ref.causal_topk`.

    Shapes: q (m, W), x (n, W) uint64; out_score (m, k) int32, out_idx (m, k) int64.
    """
    m, n, W = _query_db(q, x)
    k = _int_arg(k, "k")
    q_start = _int_arg(q_start, "q_start")
    skip_recent = _int_arg(skip_recent, "skip_recent")
    win = 0 if window is None else _int_arg(window, "window")
    if k < 1 or q_start < 0 or q_start + m > n or skip_recent < 0 or (window is not None and win < 1):
        raise ValueError(f"causal_topk needs k >= 1, 0 <= q_start <= n - m, skip_recent >= 0 and "
                         f"window >= 1 or None; got k={k}, q_start={q_start} (m={m}, n={n}), "
                         f"skip_recent={skip_recent}, window={window}")
    _arr(out_score, "out_score", _I32, True)
    _arr(out_idx, "out_idx", _I64, True)
    if out_score.shape != (m, k) or out_idx.shape != (m, k):
        raise ValueError(f"out_score and out_idx must have shape {(m, k)}, got {out_score.shape} and "
                         f"{out_idx.shape}")
    if W >= MAX_WORDS_DISTANCE:
        raise OverflowError(f"n_words={W} too large for int32 scores (limit {MAX_WORDS_DISTANCE - 1})")
    rc = lib.hdc_causal_topk(_ptr(q, "uint64_t[]"), m, _ptr(x, "uint64_t[]"), n, W, k, q_start, win,
                             skip_recent, 1 if overlap else 0, _ptr(out_score, "int32_t[]"),
                             _ptr(out_idx, "int64_t[]"), _threads(threads))
    if rc:
        _raise(rc, "causal_topk")


# ------------------------------------------------------------------ ISA control
_isa_lock = threading.Lock()


def _level(name) -> int:
    if not isinstance(name, str) or name.strip().lower() not in ISA_NAMES:
        raise ValueError(f"unknown ISA level {name!r}; choose one of {list(ISA_NAMES)}")
    return ISA_NAMES.index(name.strip().lower())


def isa_levels() -> list[str]:
    """The levels this build, CPU and OS can run, fastest first (e.g. ``['avx512', 'avx2',
    'x86-64-v2', 'portable']``)."""
    return [name for name in ISA_PREFERENCE if lib.hdc_isa_supported(ISA_NAMES.index(name))]


def detected_isa() -> str:
    """The best level found by CPUID + XGETBV at load time."""
    return ISA_NAMES[lib.hdc_detected_isa()]


def get_isa() -> str:
    """The level the kernels use now."""
    return ISA_NAMES[lib.hdc_get_isa()]


def set_isa(name: str) -> str:
    """Pin the level for all threads; ValueError for an unknown or unsupported level."""
    lvl = _level(name)
    if not lib.hdc_isa_supported(lvl):
        raise ValueError(f"ISA level {ISA_NAMES[lvl]!r} is not supported by this CPU/OS "
                         f"(supported: {isa_levels()})")
    with _isa_lock:
        rc = lib.hdc_set_isa(lvl)
    if rc:
        _raise(rc, "set_isa")
    return ISA_NAMES[lvl]


@contextlib.contextmanager
def use_isa(name: str):
    """Run the enclosed block at ISA level ``name`` (process-wide), then restore the previous one."""
    prev = get_isa()
    set_isa(name)
    try:
        yield name
    finally:
        set_isa(prev)


def call_count(kernel: str, isa: str | None = None) -> int:
    """How many calls of ``kernel`` ran at level ``isa`` (all levels when None) since import."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {list(KERNELS)}")
    kid = KERNELS.index(kernel)
    levels = range(len(ISA_NAMES)) if isa is None else [_level(isa)]
    return sum(int(lib.hdc_call_count(kid, lv)) for lv in levels)


def ran_count(kernel: str, isa: str | None = None) -> int:
    """How many kernel bodies of level ``isa`` ran for ``kernel`` (all levels when None).

    Counted inside the per-level C functions (one count per range a thread ran), not at
    dispatch: a call that fell back to another level's code would not move this count.
    """
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {list(KERNELS)}")
    kid = KERNELS.index(kernel)
    levels = range(len(ISA_NAMES)) if isa is None else [_level(isa)]
    return sum(int(lib.hdc_ran_count(kid, lv)) for lv in levels)


def helper_ranges(kernel: str) -> int:
    """Work ranges of ``kernel`` that ran on helper threads since import (0: never split)."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {list(KERNELS)}")
    return int(lib.hdc_helper_ranges(KERNELS.index(kernel)))


def hmat_splits() -> dict:
    """Helper-thread ranges of the Hamming-matrix driver by split: stored ``rows`` or ``queries``."""
    return {"rows": int(lib.hdc_hmat_split_count(1)), "queries": int(lib.hdc_hmat_split_count(0))}


def sanitized() -> bool:
    """True for the HDC_SANITIZE=1 (AddressSanitizer) build."""
    return bool(lib.hdc_sanitized())


def info() -> dict:
    """What backend_info() reports for this backend."""
    return {"isa": get_isa(), "isa_levels": isa_levels(), "detected_isa": detected_isa(),
            "sanitized": sanitized(), "extension": getattr(lib, "__file__", None) or _ext or "hdc._hdc_c"}


_env_isa = os.environ.get("HDC_ISA", "").strip().lower()
if _env_isa and _env_isa != "auto":
    # InvalidSetting propagates through load_backend: a typo or a level this CPU lacks must
    # raise, never fall back to another backend
    try:
        set_isa(_env_isa)
    except ValueError as exc:
        from . import InvalidSetting

        raise InvalidSetting(f"HDC_ISA={os.environ['HDC_ISA']!r}: {exc}") from None
