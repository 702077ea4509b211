"""``topk`` over an ``np.memmap`` keeps the resident set bounded, in every mapping mode.

Each run is a fresh subprocess (its peak RSS, VmHWM, is its own) streaming a 256 MiB file,
four times the 64 MiB bound, in 8 MiB chunks. Without page release the peak grows by the
whole file (checked by hand: 256 MiB for ``r+`` and ``c`` before pages were released there).
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import hdc

FILE_MIB = 256
BOUND_MIB = 64
W = 64  # words per row (dim 4,096)

_SCRIPT = """
import sys, numpy as np, hdc
path, mode, backend = sys.argv[1], sys.argv[2], sys.argv[3]
hdc.set_backend(backend)
X = np.memmap(path, dtype=np.uint64, mode=mode).reshape(-1, {W})
Q = np.array(X[[0, 5, 77]])
hwm = lambda: int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) // 1024
hdc.topk(Q, np.array(X[:64]), 5)   # compile/load the kernel first: a JIT's memory is not the stream's
base = hwm()
d, i = hdc.topk(Q, X, 5, chunk_rows=16384)
assert (i[:, 0] == [0, 5, 77]).all() and (d[:, 0] == 0).all(), (d, i)
print(hwm() - base)
""".format(W=W)


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    if not sys.platform.startswith("linux"):
        pytest.skip("RSS from /proc and madvise: Linux only")
    path = tmp_path_factory.mktemp("mm") / "x.bin"
    rng = np.random.default_rng(0)
    rows = FILE_MIB * 2**20 // (8 * W)
    with open(path, "wb") as f:
        for _ in range(0, rows, 32768):
            f.write(rng.integers(0, 2**64, size=(32768, W), dtype=np.uint64).tobytes())
    return path


@pytest.mark.parametrize("mode", ["r", "r+", "c"])
@pytest.mark.parametrize("backend", ["c", "numba", "numpy"])
def test_topk_memmap_rss_bounded(big_file, mode, backend):
    if backend not in hdc.available_backends():
        pytest.skip(f"{backend} backend unavailable")
    if backend != "c" and mode != "r":
        pytest.skip("the page release is backend-independent (hdc.functional); modes run on C")
    p = subprocess.run([sys.executable, "-c", _SCRIPT, str(big_file), mode, backend],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-1500:]
    grew = int(p.stdout.split()[-1])
    assert grew < BOUND_MIB, f"peak RSS grew {grew} MiB streaming a {FILE_MIB} MiB file in mode {mode!r}"
