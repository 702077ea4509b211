"""``auto`` never picks a path slower than Numba: the C backend only at a level that beats it.

The rule (hdc.backends.auto_choice): C when its level is this CPU's best and that level beats
Numba (c_backend.BEATS_NUMBA, or one timing at first use for a level the table lacks). Here,
for every level this CPU can run pinned in turn, whenever auto would take C, C at that level
is timed against Numba on the same matrix and must be faster.
"""
from __future__ import annotations

import numpy as np
import pytest

from hdc import backends
from hdc.backends import BackendUnavailable, load_backend

try:
    C = load_backend("c")
    NB = load_backend("numba")
except BackendUnavailable as exc:  # pragma: no cover - machines without a compiler or Numba
    pytest.skip(f"needs both the C and the Numba backend: {exc}", allow_module_level=True)


def fresh_choice():
    backends._auto_reason.clear()
    try:
        return backends.auto_choice()
    finally:
        backends._auto_reason.clear()


def best_time(mod, q, x, out, repeats=7):
    """Best of ``repeats`` 1-thread matrix calls after a warm-up: the timing auto's own rule uses."""
    return backends._time_matrix(mod, q, x, out, repeats=repeats)


@pytest.mark.parametrize("level", C.isa_levels())
def test_auto_rule(level):
    with C.use_isa(level):
        choice, reason = fresh_choice()
    want_c = level == C.detected_isa() and C.BEATS_NUMBA.get(level, True)
    if level in C.BEATS_NUMBA:
        assert choice == ("c" if want_c else "numba"), reason
    assert level in reason
    if level == "portable":
        assert choice == "numba", "the portable C level must never win over an installed Numba"


@pytest.mark.parametrize("level", C.isa_levels())
def test_auto_never_slower_than_numba(level):
    """Whenever auto takes C (at this level pinned), C is faster than Numba on this CPU."""
    rng = np.random.default_rng(7)
    q = rng.integers(0, 2**63, (64, 157), dtype=np.uint64)
    x = rng.integers(0, 2**63, (4096, 157), dtype=np.uint64)
    out = np.empty((64, 4096), np.int32)
    with C.use_isa(level):
        choice, reason = fresh_choice()
        if choice != "c":
            pytest.skip(f"auto does not take C at {level}: {reason}")
        tc = best_time(C, q, x, out)
    tn = best_time(NB, q, x, out)
    assert tc < tn, f"auto took C at {level} ({tc * 1e3:.2f} ms) over Numba ({tn * 1e3:.2f} ms): {reason}"


def test_portable_level_is_slower_than_numba():
    """What the table's `portable: False` rests on, measured here."""
    rng = np.random.default_rng(8)
    q = rng.integers(0, 2**63, (16, 157), dtype=np.uint64)
    x = rng.integers(0, 2**63, (1024, 157), dtype=np.uint64)
    out = np.empty((16, 1024), np.int32)
    with C.use_isa("portable"):
        tc = best_time(C, q, x, out, repeats=3)
    assert best_time(NB, q, x, out, repeats=3) < tc


def test_backend_info_shows_auto_choice():
    import hdc

    info = hdc.backend_info()
    assert info["auto"]["backend"] in ("c", "numba", "numpy") and info["auto"]["reason"]


def test_level_missing_from_table_is_timed_once(monkeypatch):
    """A level the table lacks (arm64's today) is decided by one timing, C against Numba, and the
    choice follows the times it reports."""
    import re

    monkeypatch.setattr(C, "BEATS_NUMBA", {})
    choice, reason = fresh_choice()
    m = re.fullmatch(r"measured at first use: C (\S+) ([0-9.]+) ms, Numba ([0-9.]+) ms", reason)
    assert m, reason
    assert m.group(1) == C.get_isa()
    tc, tn = float(m.group(2)), float(m.group(3))
    if tc != tn:  # (equal after rounding to 0.01 ms: either choice agrees with the report)
        assert choice == ("c" if tc < tn else "numba")
