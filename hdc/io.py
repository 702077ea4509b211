"""PLACEHOLDER until the estimator-safety branch lands: the one atomic writer."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path


@contextlib.contextmanager
def atomic_write(path, mode="wb", *, encoding=None):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path, payload, *, indent=2):
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=indent)
        f.write("\n")
