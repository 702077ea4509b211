"""Shared plumbing for the benchmark scripts: CLI flags, run metadata, the results JSON, timing.

Every benchmark is ``bench/NAME.py`` with ``--out DIR`` (default bench/results, writing
``DIR/NAME.json``), ``--quick`` (a preset that finishes in under 40 s on the dev machine) and
``--allow-dirty``.

Two rules hold for every results file, whatever the script:

- **A clean tree.** A result names the commit it was made from (``meta.commit``); a tree
  with uncommitted changes to tracked files has no commit that reproduces it, so
  :func:`write_json` refuses to write unless ``--allow-dirty`` was given, for every ``--out``
  (``--quick`` and scratch directories included: one rule, no exceptions to remember).
  With the flag, ``meta.allow_dirty`` is true and the stamp ends in ``-dirty``. Untracked
  files do not make a tree dirty (:func:`hdc.provenance.is_dirty`). :func:`parse_args`
  checks this once at start-up too, so a long run fails before it starts, not after.
- **Repo-relative paths.** ``Path`` values, and strings that are absolute paths inside the
  repository, are stored relative to it (:func:`hdc.provenance.repo_relative`), so a result
  read on another machine names the same files. An absolute path outside the repository is
  refused in a file written to the committed ``bench/results``; elsewhere (a scratch
  ``--out``) it is kept as it is, since it cannot be expressed relative to the repository.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from hdc.io import write_json as _write_json_file
from hdc.provenance import REPO, commit_stamp, is_dirty, repo_relative

DEFAULT_OUT = REPO / "bench" / "results"

__all__ = ["REPO", "DEFAULT_OUT", "DirtyTree", "make_parser", "parse_args", "refuse_dirty", "check_clean_tree",
           "metadata", "write_json", "relativize_paths", "time_it", "print_table"]


class DirtyTree(RuntimeError):
    """Raised when a benchmark would write results from a tree with uncommitted changes."""


def make_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default bench/results)")
    p.add_argument("--quick", action="store_true", help="small preset that finishes in < 40 s")
    p.add_argument("--allow-dirty", action="store_true",
                   help="write results even though tracked files have uncommitted changes "
                        "(recorded as meta.allow_dirty and a '-dirty' commit stamp)")
    return p


def parse_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, then :func:`refuse_dirty`."""
    args = parser.parse_args(argv)
    refuse_dirty(parser, args)
    return args


def refuse_dirty(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit (status 2, via ``parser.error``) if the tree is dirty without ``--allow-dirty``: the
    check :func:`write_json` makes at the end, made at start-up so a long run fails at once."""
    try:
        check_clean_tree(getattr(args, "allow_dirty", False))
    except DirtyTree as exc:
        parser.error(str(exc))


def check_clean_tree(allow_dirty: bool) -> None:
    """Raise :class:`DirtyTree` when tracked files differ from HEAD and ``allow_dirty`` is false."""
    if not allow_dirty and is_dirty():
        raise DirtyTree(
            f"the working tree of {REPO} has uncommitted changes to tracked files, so no commit "
            f"reproduces this result; commit (or stash) them, or pass --allow-dirty to write it "
            f"anyway (the JSON then records allow_dirty=true and a '-dirty' commit stamp)")


def _cpu_info() -> dict:
    info = {"model": platform.processor() or "unknown", "flags": []}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and info["model"] in ("", "unknown", platform.machine()):
                    info["model"] = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    info["flags"] = sorted(f for f in flags if f.startswith(("avx", "sse4", "popcnt", "bmi")))
                    break
    except OSError:
        pass
    return info


def _versions() -> dict:
    out = {"python": sys.version.split()[0], "numpy": np.__version__}
    for mod in ("numba", "torch", "cffi", "bitarray", "sklearn", "torchhd", "faiss", "numkong", "simsimd"):
        try:
            m = __import__(mod)
            out[mod] = getattr(m, "__version__", "?")
        except Exception:  # noqa: BLE001 - optional peers
            pass
    return out


def metadata(*, allow_dirty: bool = False) -> dict:
    """Machine, CPU flags, load, commit stamp and package versions: stored with every result."""
    meta = {
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": platform.node(),
        "platform": platform.platform(),
        "cpu": _cpu_info(),
        "n_cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "commit": commit_stamp(),
        "allow_dirty": bool(allow_dirty),
        "versions": _versions(),
    }
    try:
        import hdc
        meta["hdc_backend_info"] = hdc.backend_info()
    except Exception as exc:  # noqa: BLE001
        meta["hdc_backend_info"] = f"unavailable: {exc}"
    return meta


def write_json(out_dir: Path, name: str, payload: dict, *, allow_dirty: bool = False) -> Path:
    """Write ``out_dir/name.json`` atomically with metadata attached; return its path.

    Refuses (:class:`DirtyTree`) on a dirty tree unless ``allow_dirty``; stores paths
    relative to the repository (:func:`relativize_paths`, strict for ``bench/results``).
    """
    check_clean_tree(allow_dirty)
    out_dir = Path(out_dir)
    strict = out_dir.resolve() == DEFAULT_OUT.resolve()
    payload = {"benchmark": name, "meta": metadata(allow_dirty=allow_dirty), **payload}
    payload = relativize_paths(payload, strict=strict)
    path = out_dir / f"{name}.json"
    _write_json_file(path, payload)
    return path


def relativize_paths(obj, *, strict: bool = False, where: str = ""):
    """A copy of ``obj`` (JSON-like) with every path stored relative to the repository.

    ``Path`` values and strings that are absolute paths (one token, no whitespace) become
    :func:`repo_relative` strings; numpy scalars and arrays become plain numbers and lists.
    With ``strict``, a path outside the repository raises ValueError naming its key.
    """
    if isinstance(obj, dict):
        return {k: relativize_paths(v, strict=strict, where=f"{where}.{k}" if where else str(k))
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [relativize_paths(v, strict=strict, where=f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return relativize_paths(obj.tolist(), strict=strict, where=where)
    if isinstance(obj, os.PathLike) or (isinstance(obj, str) and _is_abs_path(obj)):
        rel = repo_relative(obj)
        if strict and os.path.isabs(rel):
            raise ValueError(f"results key {where!r} holds the path {str(obj)!r}, outside the repository "
                             f"{str(REPO)!r}; a file in bench/results stores repository-relative paths only "
                             f"(store a name, or a path inside the repository)")
        return rel
    return obj


def _is_abs_path(s: str) -> bool:
    # One whitespace-free token starting at the root: a path, not a message that mentions one.
    return len(s) > 1 and os.path.isabs(s) and not any(c.isspace() for c in s)


def time_it(fn, *, repeats: int = 5, warmup: int = 1) -> dict:
    """Warm up, then run ``fn`` ``repeats`` times; return median/min seconds."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return {"median_s": ts[len(ts) // 2], "min_s": ts[0], "repeats": repeats}


def print_table(rows: list[dict], columns: list[str]) -> None:
    """Print rows as an aligned plain-text table."""
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


LM_RUNS = "runs/lm_compare/main/{family}/{variant}/seed{seed}/ckpt.pt"   # bench/lm_compare.py's main preset


def cached_json(path: Path | None, compute, settings=None):
    """``compute()``'s value, cached in the JSON file ``path`` (None: no cache) with the
    ``settings`` it was made under: a file made under other settings (or in another format) is
    recomputed, never reused. Long benchmarks resume from these files."""
    if path is None:
        return compute()
    path = Path(path)
    if path.exists():
        stored = json.loads(path.read_text())
        if isinstance(stored, dict) and "value" in stored and stored.get("settings") == settings:
            return stored["value"]
    value = compute()
    _write_json_file(path, {"settings": settings, "value": value})
    return value


def trained_checkpoints(given: list[Path], family: str, variant: str, seeds=(0, 1, 2)) -> list[Path]:
    """``given``, or else the comparison's finished runs of ``family/variant`` (one per seed).

    A benchmark that starts from trained models (upcycling, continual learning) uses the table's
    own runs, so its sources are the models whose losses the table reports; a missing one
    raises, naming the command that makes it.
    """
    paths = [Path(p) for p in given] or [REPO / LM_RUNS.format(family=family, variant=variant, seed=s)
                                         for s in seeds]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SystemExit(f"no trained {family}/{variant} checkpoint at {missing}: train them with "
                         f"`python bench/lm_compare.py --families {family}` (or pass --ckpt)")
    return paths
