"""csrc/selftest.c, natively: every C kernel at every level this CPU runs against the C
self-test's bit-by-bit reference (the same driver CI cross-compiles for arm64 and s390x and
runs under qemu-user, .ci/cross.sh). Skipped without a C compiler."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from hdc.backends import BackendUnavailable, load_backend

CSRC = Path(__file__).resolve().parent.parent / "csrc"
SOURCES = ["selftest.c", "hdc_core.c", "hdc_avx2.c", "hdc_avx512.c", "hdc_x86v2.c", "hdc_neon.c", "hdc_sve.c"]


def test_selftest_every_level(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    exe = tmp_path / "selftest"
    build = subprocess.run([cc, "-O2", "-std=gnu11", "-fno-strict-aliasing", "-Wall", "-Wno-unused-function",
                            "-Werror", "-pthread", f"-I{CSRC}", *[str(CSRC / s) for s in SOURCES], "-o", str(exe)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe), "11", "3"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "all kernels equal the reference" in run.stdout
    lines = dict(line.split() for line in run.stdout.splitlines()[:-1])
    try:
        levels = load_backend("c").isa_levels()
    except BackendUnavailable:
        levels = None
    if levels is not None:  # the self-test ran (and passed) exactly the levels the extension reports
        assert sorted(lines) == sorted(levels) and set(lines.values()) == {"ok"}
