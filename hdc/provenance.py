"""Where a result came from: the repository's commit stamp and repository-relative paths.

Every result file (benchmark JSON, a training run's result.json) records the commit it was
made from and names files relative to the repository, so a result read on another machine
points at the same files. One home for both, used by models/ and bench/.

Example:
    >>> stamp = commit_stamp()          # "3f2c...", "3f2c...-dirty" or "unknown"
    >>> repo_relative(REPO / "bench" / "results")
    'bench/results'
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

__all__ = ["REPO", "commit_stamp", "is_dirty", "repo_relative"]

#: The repository root (hdc/ lives directly below it in a source or editable install).
REPO = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


def is_dirty() -> bool:
    """True when tracked files differ from HEAD (untracked files do not count). Benchmark
    outputs (bench/results/) are not sources: a benchmark that has just redrawn its own plots
    is still run from the commit it names."""
    try:
        return bool(_git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/results"))
    except (OSError, subprocess.CalledProcessError):
        return False


def commit_stamp() -> str:
    """HEAD of the repository, with ``-dirty`` when tracked files changed; ``unknown`` outside git.

    ``$HDSPIKE_COMMIT`` overrides it, for runs made from a snapshot of the tree (no .git).
    """
    if os.environ.get("HDSPIKE_COMMIT"):
        return os.environ["HDSPIKE_COMMIT"]
    try:
        sha = _git("rev-parse", "HEAD")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if is_dirty() else "")


def repo_relative(path: str | os.PathLike) -> str:
    """``path`` relative to the repository when it lies inside it, else the absolute path."""
    p = Path(path).resolve()
    try:
        return p.relative_to(REPO).as_posix()
    except ValueError:
        return str(p)
