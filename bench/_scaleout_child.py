"""The "two plain processes" ceiling of bench/scaleout.py: a child that owns no engine.

Started with multiprocessing's *spawn* context before any Dask cluster exists: a fresh
interpreter, so it never inherits a lock held by another thread of the parent (the forked
pool of an earlier version deadlocked there). It imports nothing of the benchmark script
itself; the parent sends work over a Pipe and polls the answer with a timeout.

Requests (tuples): ("topk", Q, k, lo, hi), ("fit", y_part, lo, hi, n_classes), ("rss",) (peak
resident memory in MB), ("cpu",) (this process's CPU seconds so far), ("stop",).
Answers: ("ok", value) or ("error", "Type: message\\ntraceback"). The database rows come from
the .npy file named at start, memory-mapped, so both children share the page cache.
"""
from __future__ import annotations

import traceback


def maxrss_mb() -> float:
    """Peak resident memory of this process's own image, MB: VmHWM of /proc/self/status.

    Not ru_maxrss: Linux carries that across fork and exec, so a child spawned by a parent
    holding 500 MB reports at least 500 MB, whatever it touched itself."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("/proc/self/status has no VmHWM line (not Linux?)")


def cpu_s() -> float:
    """CPU seconds (user + system) of this whole process, every thread, so far."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def serve(conn, npy_path: str, dim: int) -> None:
    import numpy as np

    import hdc

    X = np.load(npy_path, mmap_mode="r")
    conn.send(("ok", "ready"))
    while True:
        try:
            msg = conn.recv()
        except EOFError:  # the parent went away: nothing left to serve
            return
        try:
            if msg[0] == "stop":
                conn.send(("ok", None))
                return
            if msg[0] == "rss":
                conn.send(("ok", maxrss_mb()))
            elif msg[0] == "cpu":
                conn.send(("ok", cpu_s()))
            elif msg[0] == "topk":
                _, Q, k, lo, hi = msg
                d, i = hdc.topk(Q, X[lo:hi], k, threads=1)
                conn.send(("ok", (d, i + lo)))
            elif msg[0] == "fit":
                _, y, lo, hi, n_classes = msg
                block = np.asarray(X[lo:hi])
                # raw int64 counters per class: summing them is exact, the tie rule comes after
                counters = np.zeros((n_classes, dim), np.int64)
                for c in np.unique(y):
                    acc = hdc.BundleAccumulator(dim).add(np.ascontiguousarray(block[y == c]))
                    counters[c] = acc.bipolar_sum()
                conn.send(("ok", counters))
            else:
                raise ValueError(f"unknown request {msg[0]!r}; expected 'topk', 'fit', 'rss', 'cpu' or 'stop'")
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
            conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
