"""cffi build script (API mode) for the C kernels: the extension module ``hdc._hdc_c``.

Named in setup.py as ``cffi_modules=["csrc/build_ffi.py:ffibuilder"]``. The prototypes in
csrc/hdc.h are read verbatim by ``ffi.cdef``. One build runs on any x86-64: the AVX2 and
AVX-512 kernels are compiled per function (target pragmas in their files), never with
-march=native, and chosen at run time.

Environment:
  HDC_SANITIZE=1  compile with -fsanitize=address,undefined (see csrc/run_sanitized_tests.sh)
  HDC_CFLAGS      extra compiler flags, space separated

Standalone: ``python csrc/build_ffi.py [--outdir DIR]`` compiles the module into DIR
(default: the current directory) without installing it.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
SOURCES = ["hdc_core.c", "hdc_avx2.c", "hdc_avx512.c", "hdc_x86v2.c", "hdc_neon.c", "hdc_sve.c"]


def _rel(p: Path) -> str:
    """setuptools wants source paths relative to the project root (the cwd of setup.py)."""
    try:
        return os.path.relpath(p, os.getcwd())
    except ValueError:  # another drive (Windows)
        return str(p)


def _flags() -> tuple[list[str], list[str]]:
    cflags = ["-O3", "-std=gnu11", "-fno-strict-aliasing", "-Wall", "-Wno-unused-function"]
    ldflags = ["-pthread"]
    cflags.append("-pthread")
    if os.environ.get("HDC_SANITIZE", "0") == "1":
        san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
        cflags = [f for f in cflags if f != "-O3"] + ["-O1", "-g"] + san
        ldflags += san
    cflags += os.environ.get("HDC_CFLAGS", "").split()
    return cflags, ldflags


def make_builder(absolute_paths: bool = False) -> FFI:
    """The FFI builder; absolute paths for a standalone build (ffi.compile changes directory)."""
    path = str if absolute_paths else _rel
    cflags, ldflags = _flags()
    builder = FFI()
    builder.cdef((HERE / "hdc.h").read_text())
    builder.set_source(
        "hdc._hdc_c",
        '#include <stdint.h>\n#include "hdc.h"\n',
        sources=[path(HERE / s) for s in SOURCES],
        include_dirs=[path(HERE)],
        extra_compile_args=cflags,
        extra_link_args=ldflags,
        depends=[path(HERE / f) for f in ("hdc.h", "hdc_internal.h", "kernels_generic.inc")],
    )
    return builder


ffibuilder = make_builder()

if __name__ == "__main__":
    outdir = "."
    if "--outdir" in sys.argv:
        outdir = sys.argv[sys.argv.index("--outdir") + 1]
    os.makedirs(outdir, exist_ok=True)
    print(make_builder(absolute_paths=True).compile(tmpdir=outdir, verbose=True))
