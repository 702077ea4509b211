"""Build hook: compiles the cffi extension hdc._hdc_c from csrc/.

The C extension is optional: when no compiler is present (or HDC_NO_C=1), the
build prints a warning and the package installs pure-Python (NumPy + Numba).
"""
import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that degrades to a pure-Python install when the C build fails."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any compiler failure means "no C backend"
            self._warn(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)

    @staticmethod
    def _warn(exc):
        print(f"WARNING: hdc C extension not built ({exc}); "
              "the NumPy and Numba backends remain available.", file=sys.stderr)


HERE = os.path.dirname(os.path.abspath(__file__))
kwargs = {"cmdclass": {"build_ext": OptionalBuildExt}}
if os.environ.get("HDC_NO_C", "0") != "1" and os.path.exists(os.path.join(HERE, "csrc", "build_ffi.py")):
    kwargs["cffi_modules"] = ["csrc/build_ffi.py:ffibuilder"]
setup(**kwargs)
