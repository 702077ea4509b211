"""Shared plumbing for the benchmark scripts: CLI flags, run metadata, atomic JSON, timing.

Every benchmark is ``bench/NAME.py`` with ``--out DIR`` (default bench/results, writing
``DIR/NAME.json``) and ``--quick`` (a preset that finishes in under 40 s on the dev machine).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "bench" / "results"


def make_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default bench/results)")
    p.add_argument("--quick", action="store_true", help="small preset that finishes in < 40 s")
    return p


def _git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


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


def metadata() -> dict:
    """Machine, CPU flags, load, commit and package versions: stored with every result."""
    meta = {
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": platform.node(),
        "platform": platform.platform(),
        "cpu": _cpu_info(),
        "n_cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "commit": _git_commit(),
        "versions": _versions(),
    }
    try:
        import hdc
        meta["hdc_backend_info"] = hdc.backend_info()
    except Exception as exc:  # noqa: BLE001
        meta["hdc_backend_info"] = f"unavailable: {exc}"
    return meta


def write_json(out_dir: Path, name: str, payload: dict) -> Path:
    """Write ``out_dir/name.json`` atomically (temp file + rename), with metadata attached."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "meta": metadata(), **payload}
    path = out_dir / f"{name}.json"
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=2, default=_json_default)
        f.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be read by anyone
    os.replace(tmp, path)
    return path


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


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
