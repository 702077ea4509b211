#!/usr/bin/env bash
# The pure-Python fallback: with no working C compiler, `pip install` must still succeed and
# `import hdc` must work on the NumPy backend, saying why the C backend is unavailable.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/src"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q numpy cffi 'setuptools>=68' wheel
CC=false "$work/venv/bin/pip" install -q --no-build-isolation --no-deps "$work/src"
cd "$work"
"$work/venv/bin/python" - <<'PY'
import hdc
info = hdc.backend_info()
assert info["backend"] == "numpy" and "c" in info["load_errors"], info
x = hdc.random(3, 100, 1)
assert (hdc.hamming_matrix(x, x).diagonal() == 0).all()
try:
    hdc.set_backend("c")
except hdc.BackendUnavailable as exc:
    assert "install" in str(exc)
else:
    raise SystemExit("the C backend should be unavailable without a compiler")
print("no-compiler fallback install: OK", info["load_errors"])
PY
