"""The direction of imports: bench -> models -> spiking_attention -> hdc, never back.

Every module's imports are parsed (``ast``: top-level and inside functions alike, so a lazy
import inside a function cannot dodge the rule) and each one that reaches a package higher
in the stack than its own fails the test.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAYERS = {"hdc": 0, "spiking_attention": 1, "models": 2, "bench": 3}


def imported_packages(tree: ast.AST, package: str) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in the tree; relative imports stay in ``package``."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.lineno, package if node.level else (node.module or "").split(".")[0]))
    return out


def upward_imports(root: Path = REPO) -> list[str]:
    bad = []
    for package, level in LAYERS.items():
        for path in sorted((root / package).rglob("*.py")):
            for line, name in imported_packages(ast.parse(path.read_text()), package):
                if LAYERS.get(name, -1) > level:
                    bad.append(f"{path.relative_to(root)}:{line} imports {name} (layer {package} may import "
                               f"only {[p for p, v in LAYERS.items() if v <= level]})")
    return bad


def test_no_upward_imports():
    bad = upward_imports()
    assert not bad, "imports that run upward:\n" + "\n".join(bad)


def test_checker_catches_an_upward_import(tmp_path):
    """The checker is not vacuous: a lazy import of models inside a spiking_attention function fails."""
    for package in LAYERS:
        (tmp_path / package).mkdir()
    (tmp_path / "spiking_attention" / "x.py").write_text("def f():\n    from models import FAMILIES\n")
    (tmp_path / "hdc" / "y.py").write_text("import torch\nfrom . import packing\n")
    bad = upward_imports(tmp_path)
    assert len(bad) == 1 and "spiking_attention/x.py:2 imports models" in bad[0]


@pytest.mark.parametrize("package", ["hdc", "spiking_attention", "models"])
def test_every_package_imports_alone(package):
    """Each layer imports in a fresh interpreter without the layers above it being loaded."""
    import subprocess
    import sys
    code = (f"import sys, {package}; above = [m for m in sys.modules if m.split('.')[0] in "
            f"{[p for p, v in LAYERS.items() if v > LAYERS[package]]}]; assert not above, above")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
