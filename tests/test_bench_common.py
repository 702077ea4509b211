"""bench/_common.py: the dirty-tree guard (--allow-dirty) and repo-relative paths in results JSON."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))   # bench/ is scripts plus this shared module, not an installed package

from bench import _common  # noqa: E402
from hdc import provenance  # noqa: E402


@pytest.fixture
def dirty(monkeypatch):
    """Pretend tracked files have uncommitted changes (both the guard and the commit stamp see it)."""
    monkeypatch.delenv("HDSPIKE_COMMIT", raising=False)
    monkeypatch.setattr(provenance, "is_dirty", lambda: True)
    monkeypatch.setattr(_common, "is_dirty", lambda: True)


@pytest.fixture
def clean(monkeypatch):
    monkeypatch.setattr(provenance, "is_dirty", lambda: False)
    monkeypatch.setattr(_common, "is_dirty", lambda: False)


def test_dirty_tree_refused_without_the_flag(dirty, tmp_path):
    with pytest.raises(_common.DirtyTree, match="--allow-dirty"):
        _common.write_json(tmp_path, "demo", {"x": 1})
    assert not list(tmp_path.iterdir()), "nothing may be written from a dirty tree"


def test_dirty_tree_written_with_the_flag_and_recorded(dirty, tmp_path):
    path = _common.write_json(tmp_path, "demo", {"x": 1}, allow_dirty=True)
    data = json.loads(path.read_text())
    assert data["meta"]["allow_dirty"] is True
    assert data["meta"]["commit"].endswith("-dirty")
    assert data["x"] == 1 and data["benchmark"] == "demo"


def test_clean_tree_needs_no_flag(clean, tmp_path):
    data = json.loads(_common.write_json(tmp_path, "demo", {"x": 1}).read_text())
    assert data["meta"]["allow_dirty"] is False
    assert not data["meta"]["commit"].endswith("-dirty")


def test_cli_refuses_at_start(dirty, capsys):
    """parse_args exits at once (status 2, argparse's usage error) naming the flag."""
    p = _common.make_parser("demo")
    with pytest.raises(SystemExit) as exc:
        _common.parse_args(p, ["--quick"])
    assert exc.value.code == 2
    assert "--allow-dirty" in capsys.readouterr().err
    assert _common.parse_args(p, ["--quick", "--allow-dirty"]).allow_dirty is True


def test_is_dirty_reads_git(tmp_path, monkeypatch):
    """The real check (no monkeypatched is_dirty): a changed tracked file is dirty, an untracked one is not."""
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)
    try:
        git("init", "-q")
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"git not usable here: {exc}")
    (tmp_path / "a.txt").write_text("one\n")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    monkeypatch.setattr(provenance, "REPO", tmp_path)
    monkeypatch.delenv("HDSPIKE_COMMIT", raising=False)
    assert not provenance.is_dirty()
    (tmp_path / "new.txt").write_text("untracked\n")
    assert not provenance.is_dirty()
    (tmp_path / "a.txt").write_text("two\n")
    assert provenance.is_dirty() and provenance.commit_stamp().endswith("-dirty")


def test_paths_stored_repo_relative(clean, tmp_path):
    payload = {"plot": REPO / "bench" / "results" / "x.png",            # a Path inside the repo
               "runs": [str(REPO / "runs" / "lm_compare" / "seed0")],   # an absolute string inside it
               "note": f"see {REPO}/x for details",                     # a message, not a path: kept
               "n": np.int64(3), "arr": np.arange(2)}
    data = json.loads(_common.write_json(tmp_path, "demo", payload).read_text())
    assert data["plot"] == "bench/results/x.png"
    assert data["runs"] == ["runs/lm_compare/seed0"]
    assert data["note"] == payload["note"]
    assert data["n"] == 3 and data["arr"] == [0, 1]


def test_outside_repo_paths_refused_for_committed_results():
    outside = Path("/tmp/somewhere/file.bin")
    with pytest.raises(ValueError, match=r"'topk_10m.file'.*outside the repository"):
        _common.relativize_paths({"topk_10m": {"file": outside}}, strict=True)
    # a scratch --out keeps what cannot be made relative
    assert _common.relativize_paths({"file": outside}) == {"file": str(outside)}


def _abs_paths(obj, where=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _abs_paths(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _abs_paths(v, f"{where}[{i}]")
    elif isinstance(obj, str) and _common._is_abs_path(obj):
        yield where, obj


@pytest.mark.parametrize("path", sorted((REPO / "bench" / "results").glob("*.json")), ids=lambda p: p.name)
def test_committed_results_hold_no_absolute_paths(path):
    found = list(_abs_paths(json.loads(path.read_text())))
    assert not found, f"{path.name} stores absolute paths: {found}"


def test_cached_json_reuses_only_what_was_made_under_the_same_settings(tmp_path):
    from bench._common import cached_json
    calls = []

    def compute(v):
        return lambda: calls.append(v) or {"x": v}

    p = tmp_path / "c.json"
    assert cached_json(p, compute(1), {"a": 1}) == {"x": 1}
    assert cached_json(p, compute(2), {"a": 1}) == {"x": 1}         # cached: not recomputed
    assert cached_json(p, compute(3), {"a": 2}) == {"x": 3}         # other settings: recomputed
    p.write_text('{"x": 9}')                                        # an older format: recomputed
    assert cached_json(p, compute(4), {"a": 2}) == {"x": 4}
    assert cached_json(None, compute(5)) == {"x": 5}                # no cache
    assert calls == [1, 3, 4, 5]
    assert [f.name for f in tmp_path.iterdir()] == ["c.json"]        # atomic writes leave no temp
