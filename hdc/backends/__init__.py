"""One explicit registry of compute backends for the packed-hypervector kernels.

Every backend is a module exposing the same *kernel protocol*. Kernels trust
their inputs: the public functions in :mod:`hdc.functional` validate shapes,
dtypes and contiguity once, allocate outputs, and then call the kernel.

Kernel protocol (all arrays C-contiguous; ``W`` = n_words; ``threads`` >= 1):

=====================================================  =========================================
``bind(a, b, out, threads)``                            a, b, out: (n, W) uint64; out = a ^ b
``hamming_rows(a, b, out, threads)``                    a, b: (n, W) uint64; out: (n,) int64
``hamming_matrix(q, x, out, threads)``                  q: (m, W), x: (n, W); out: (m, n) int32
``topk(q, x, k, out_dist, out_idx, threads)``           1 <= k <= n; out_dist (m, k) int32,
                                                        out_idx (m, k) int64; ascending distance,
                                                        ties broken by lower index
``permute(x, shift, dim, out, threads)``                x, out: (n, W); 0 <= shift < dim; bit j of
                                                        a row moves to bit (j + shift) % dim
``bit_counts(x, dim, counts, threads)``                 x: (n, W); counts: (dim,) int64;
                                                        counts[j] += #rows with bit j set
``bundle_majority(x, dim, tie, out, threads)``          x: (n, W), n >= 1; tie, out: (W,) uint64;
                                                        bit j of out = count_j*2 > n, or tie bit j
                                                        where count_j*2 == n (pad bits stay 0)
``popcount(x, out, threads)``                           x: (n, W); out: (n,) int64
``causal_topk(q, x, k, q_start, window, skip_recent,    q: (m, W), x: (n, W), 0 <= q_start <= n - m;
overlap, out_score, out_idx, threads)``                 query i (position p = q_start + i) ranks keys
                                                        j in [lo, p - skip_recent], lo = max(0, p -
                                                        window + 1) (0 if window is None), by
                                                        popcount(q ^ x) ascending or, with overlap,
                                                        popcount(q & x) descending; ties: larger j
                                                        first; out_score (m, k) int32, out_idx (m, k)
                                                        int64, short rows padded with -1
=====================================================  =========================================

Kernels may assume that outputs share no memory with inputs and that pad bits are zero:
:mod:`hdc.functional` guarantees both (it computes through a temporary when ``out``
overlaps an input, and refuses set pad bits).

Selection: ``HDC_BACKEND`` (``numpy``, ``numba``, ``c`` or ``auto``), :func:`set_backend`,
or the :func:`use_backend` context manager. ``auto`` picks the fastest available: c when its
ISA level is this CPU's best one *and* that level beats Numba (:func:`auto_choice`: a table
measured against Numba compiled for the same CPU level, or, for a level the table lacks, one
timing at first use), else numba, then numpy (the reference, always present). The portable C
level never wins over an installed Numba. ``backend_info()["auto"]`` says what was chosen and why.

Settings are checked when this module is imported: an unknown ``HDC_BACKEND`` or ``HDC_ISA``
value, or a bad ``HDC_NUM_THREADS``, raises :class:`InvalidSetting` listing the valid values
(a typo must never fall back silently to another backend or level).
"""
from __future__ import annotations

import contextlib
import importlib
import numbers
import os
import threading
from types import ModuleType

import numpy as np

__all__ = [
    "BackendUnavailable",
    "InvalidSetting",
    "available_backends",
    "get_backend",
    "get_backend_name",
    "set_backend",
    "use_backend",
    "load_backend",
    "auto_choice",
    "get_num_threads",
    "set_num_threads",
]


class BackendUnavailable(ImportError):
    """A backend was requested that cannot be loaded on this installation."""


class InvalidSetting(ValueError):
    """An environment setting (HDC_BACKEND, HDC_ISA, HDC_NUM_THREADS) has an invalid value.

    Never turned into BackendUnavailable: a wrong setting is the user's to fix, not a reason
    to fall back to another backend.
    """


#: the values HDC_ISA accepts (the C backend's levels, fastest first, and auto)
ISA_SETTINGS = ("auto", "avx512", "avx2", "x86-64-v2", "sve", "neon", "portable")


# name -> (module path, what to install when it is missing)
_REGISTRY: dict[str, tuple[str, str]] = {
    "numpy": ("hdc.backends.numpy_ref", "numpy (a core dependency: reinstall hdspike)"),
    "numba": ("hdc.backends.numba_backend", "numba: pip install numba"),
    "c": ("hdc.backends.c_backend",
          "the compiled extension hdc._hdc_c: reinstall with a C compiler present "
          "(apt-get install gcc; pip install --force-reinstall --no-build-isolation -e .)"),
}
_AUTO_ORDER = ("c", "numba", "numpy")

_loaded: dict[str, ModuleType] = {}
_load_errors: dict[str, str] = {}
_state = threading.local()  # per-thread override set by use_backend()
_global_choice: str | None = None


def load_backend(name: str) -> ModuleType:
    """Import and return backend ``name``; raise BackendUnavailable saying what to install."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown backend {name!r}; choose one of {sorted(_REGISTRY)} or 'auto'")
    if name in _loaded:
        return _loaded[name]
    module_path, install_hint = _REGISTRY[name]
    try:
        mod = importlib.import_module(module_path)
    except InvalidSetting:
        raise
    except Exception as exc:  # noqa: BLE001 - any import failure makes the backend unavailable
        _load_errors[name] = f"{type(exc).__name__}: {exc}"
        raise BackendUnavailable(
            f"hdc backend {name!r} is unavailable ({exc}); install {install_hint}") from exc
    _loaded[name] = mod
    return mod


def available_backends() -> list[str]:
    """Names of the backends that load on this machine, fastest first."""
    out = []
    for name in _AUTO_ORDER:
        try:
            load_backend(name)
            out.append(name)
        except BackendUnavailable:
            pass
    return out


_auto_reason: dict = {}


def _time_matrix(mod, q, x, out, repeats: int = 3) -> float:
    import time

    mod.hamming_matrix(q, x, out, 1)  # compile / warm up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        mod.hamming_matrix(q, x, out, 1)
        best = min(best, time.perf_counter() - t0)
    return best


def auto_choice() -> tuple[str, str]:
    """(backend, reason) that ``auto`` picks: the C backend only at a level that beats Numba.

    C wins when its current level is the CPU's best one (Numba compiles for the host CPU, so
    a level pinned below it with HDC_ISA would lose to Numba's code for the full CPU) and
    that level is faster than Numba: ``c_backend.BEATS_NUMBA`` holds the levels measured
    (bench/hamming.py), and a level missing from it (arm64 today) is timed once here, on one
    thread, C against Numba (cached for the process, per C level).
    """
    try:
        c = load_backend("c")
    except BackendUnavailable:
        c = None
    key = c.get_isa() if c is not None else None  # the verdict depends on the C level in use
    if key in _auto_reason:
        return _auto_reason[key]
    try:
        nb = load_backend("numba")
    except BackendUnavailable:
        nb = None
    if c is not None and nb is None:
        choice, reason = "c", f"C at {c.get_isa()} (Numba not installed)"
    elif c is None:
        choice, reason = ("numba", "no C extension") if nb is not None else ("numpy", "neither C nor Numba")
    else:
        level, best = c.get_isa(), c.detected_isa()
        verdict = c.BEATS_NUMBA.get(level)
        if level != best:
            choice, reason = "numba", f"C level {level} is pinned below this CPU's {best}; Numba compiles for {best}"
        elif verdict is None:
            rng = np.random.default_rng(0)
            q = rng.integers(0, 2**63, (64, 157), dtype=np.uint64)
            x = rng.integers(0, 2**63, (2048, 157), dtype=np.uint64)
            out = np.empty((64, 2048), np.int32)
            tc, tn = _time_matrix(c, q, x, out), _time_matrix(nb, q, x, out)
            choice = "c" if tc < tn else "numba"
            reason = f"measured at first use: C {level} {tc * 1e3:.2f} ms, Numba {tn * 1e3:.2f} ms"
        else:
            choice = "c" if verdict else "numba"
            reason = f"C level {level} {'beats' if verdict else 'is slower than'} Numba (c_backend.BEATS_NUMBA)"
    _auto_reason[key] = (choice, reason)
    return choice, reason


def _resolve(name: str) -> str:
    if name == "auto":
        first, _ = auto_choice()
        for cand in (first,) + _AUTO_ORDER:
            try:
                load_backend(cand)
                return cand
            except BackendUnavailable:
                continue
        raise BackendUnavailable("no hdc backend could be loaded")  # numpy always loads
    load_backend(name)
    return name


def set_backend(name: str) -> str:
    """Select the backend for all threads (``'auto'`` = best available). Returns the name chosen."""
    global _global_choice
    _global_choice = _resolve(name)
    return _global_choice


def get_backend_name() -> str:
    override = getattr(_state, "stack", None)
    if override:
        return override[-1]
    global _global_choice
    if _global_choice is None:
        _global_choice = _resolve(os.environ.get("HDC_BACKEND", "auto").strip().lower() or "auto")
    return _global_choice


def get_backend() -> ModuleType:
    """The kernel module in use for this thread."""
    return _loaded[get_backend_name()]


@contextlib.contextmanager
def use_backend(name: str):
    """Context manager: run the enclosed block on backend ``name`` (this thread only)."""
    resolved = _resolve(name)
    stack = getattr(_state, "stack", None)
    if stack is None:
        stack = _state.stack = []
    stack.append(resolved)
    try:
        yield _loaded[resolved]
    finally:
        stack.pop()


# ---------------------------------------------------------------- threads
_MAX_THREADS = os.cpu_count() or 1
_num_threads: int | None = None


def _threads_from_env() -> int:
    raw = os.environ.get("HDC_NUM_THREADS", "").strip()
    if not raw:
        return _MAX_THREADS
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"HDC_NUM_THREADS must be a positive integer, got {raw!r}") from None
    if n < 1:
        raise ValueError(f"HDC_NUM_THREADS must be >= 1, got {n}")
    return n


def _check_threads(n, name: str) -> int:
    """``n`` as a Python int >= 1: Python and NumPy integers pass, bool and float do not."""
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{name} must be a positive int (Python or NumPy integer), got {n!r} "
                        f"of type {type(n).__name__}")
    if n < 1:
        raise ValueError(f"{name} must be a positive int >= 1, got {int(n)}")
    return int(n)


def get_num_threads() -> int:
    """Threads a kernel uses when a call does not say (``HDC_NUM_THREADS``, default: all cores)."""
    global _num_threads
    if _num_threads is None:
        _num_threads = _threads_from_env()
    return _num_threads


def set_num_threads(n: int) -> None:
    """Set the default number of kernel threads for later calls."""
    global _num_threads
    _num_threads = _check_threads(n, "number of threads")


def resolve_threads(threads: int | None) -> int:
    if threads is None:
        return get_num_threads()
    return _check_threads(threads, "threads")


def load_errors() -> dict[str, str]:
    """Why each unavailable backend failed to load (for backend_info())."""
    return dict(_load_errors)


def _check_settings() -> None:
    """Check HDC_BACKEND, HDC_ISA and HDC_NUM_THREADS now, at import (see module docstring)."""
    backend = os.environ.get("HDC_BACKEND", "").strip().lower()
    if backend and backend != "auto" and backend not in _REGISTRY:
        raise InvalidSetting(f"HDC_BACKEND={os.environ['HDC_BACKEND']!r} is not a backend; valid values: "
                             f"{', '.join(('auto',) + _AUTO_ORDER)}")
    isa = os.environ.get("HDC_ISA", "").strip().lower()
    if isa and isa not in ISA_SETTINGS:
        raise InvalidSetting(f"HDC_ISA={os.environ['HDC_ISA']!r} is not an ISA level; valid values: "
                             f"{', '.join(ISA_SETTINGS)}")
    try:
        _threads_from_env()
    except ValueError as exc:
        raise InvalidSetting(str(exc)) from None
    if isa and isa != "auto":
        # a pinned level the CPU lacks raises here (InvalidSetting from c_backend), not at
        # the first call; a missing C extension is recorded and reported by backend_info()
        try:
            load_backend("c")
        except BackendUnavailable:
            pass


_check_settings()
