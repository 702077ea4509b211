"""The one atomic file writer: every model, checkpoint, JSON result and plot goes through it.

A reader of the target sees either the old complete file or the new complete file, never a
part. The bytes go to a temp file in the target's directory (same file system, so the rename
is atomic), named ``.{name}.{pid}.{random}.tmp``; on success the file is flushed and
fsynced, renamed onto the target with ``os.replace``, and the directory is fsynced so the
rename itself survives a crash. On any failure (an exception, KeyboardInterrupt) the temp
is removed and the target is untouched. The new file gets the mode of any new file
(``0o666 & ~umask``), not the 0600 of ``tempfile.mkstemp``.

A writer killed by SIGKILL cannot remove its temp. The pid in the name lets the next save or
load of the same target (:func:`clean_stale_temps`) remove temps whose writer is dead while
leaving a live writer's temp alone.

Example::

    from hdc.io import atomic_write, write_json
    with atomic_write("model.bin") as f:          # binary by default
        f.write(data)
    write_json("results/run.json", {"acc": 0.97})  # indented, trailing newline
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from pathlib import Path

__all__ = ["atomic_write", "write_json", "clean_stale_temps", "save_figure"]

_WRITE_MODES = ("w", "wt", "wb")


def _target(path) -> Path:
    """``path`` as a Path, refusing what cannot be a file target (before anything touches disk)."""
    if isinstance(path, (bytes, bytearray)):
        path = os.fsdecode(path)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}: {path!r}")
    raw = os.fspath(path)
    # Path("") is Path("."), the working directory: catch the empty string before converting.
    if raw == "":
        raise ValueError("path is empty; give a file path such as 'model.safetensors'")
    p = Path(raw)
    if p.is_dir():
        raise IsADirectoryError(f"path {raw!r} is a directory; give a file path inside it")
    if raw.endswith(os.sep) or (os.altsep and raw.endswith(os.altsep)):
        raise ValueError(f"path {raw!r} ends with a separator, so it names a directory, not a file")
    return p


def _temp_re(name: str) -> re.Pattern:
    return re.compile(r"\." + re.escape(name) + r"\.(\d+)\.[0-9a-f]+\.tmp")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:  # os.kill(0, ...) would address our process group; no writer has pid 0
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError:  # platforms without signal 0 semantics: assume alive, never delete
        return True
    return True


def clean_stale_temps(path) -> list[Path]:
    """Remove temps of ``path`` left by dead writers; return the removed paths.

    Only files named ``.{name}.{pid}.{hex}.tmp`` next to ``path`` whose pid no longer runs
    (``os.kill(pid, 0)`` raises ProcessLookupError) are removed, so a concurrent live
    writer is never disturbed. Best-effort: a file that cannot be removed (read-only
    directory, already gone) is skipped. Caveat: a writer in another pid namespace
    (another container on a shared volume) looks dead from here.
    """
    p = _target(path)
    pattern = _temp_re(p.name)
    removed = []
    try:
        entries = list(os.scandir(p.parent if str(p.parent) else "."))
    except OSError:
        return removed
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m is None or _pid_alive(int(m.group(1))):
            continue
        try:
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows: directories cannot be opened; the rename is durable there
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a directory
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb", *, encoding: str | None = None):
    """Write ``path`` atomically; yields a file object opened on a temp file next to it.

    ``mode`` is ``'wb'`` (default), ``'w'`` or ``'wt'``; text modes default to UTF-8.
    Parent directories are created. An empty path raises ValueError, a directory
    IsADirectoryError, both naming the path. Stale temps of the same target are removed
    first (:func:`clean_stale_temps`).
    """
    if mode not in _WRITE_MODES:
        raise ValueError(f"mode must be one of {_WRITE_MODES}, got {mode!r}")
    if "b" in mode and encoding is not None:
        raise ValueError(f"encoding={encoding!r} is only allowed with a text mode ('w'), not {mode!r}")
    target = _target(path)
    directory = target.parent
    directory.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(target)
    tmp = directory / f".{target.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
    # O_EXCL: never reuse a file someone else made; 0o666 lets the umask set the mode, as for
    # any new file (mkstemp would give 0600 and the saved model would be private).
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)
    try:
        if "b" in mode:
            f = os.fdopen(fd, "wb")
        else:
            f = os.fdopen(fd, "w", encoding=encoding or "utf-8", newline="")
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        # the file is closed by now (the with block exits first); remove the partial temp
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def write_json(path, payload, *, indent: int | None = 2) -> None:
    """Write ``payload`` as JSON (UTF-8, trailing newline) through :func:`atomic_write`.

    The payload is serialised before the temp file is opened, so a value JSON cannot hold
    raises TypeError and leaves nothing on disk.
    """
    text = json.dumps(payload, indent=indent) + "\n"
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)


def save_figure(fig, path, *, dpi: int = 110, **savefig_kw) -> Path:
    """Save a matplotlib figure through :func:`atomic_write` (readers never see half a PNG);
    the format comes from the suffix. matplotlib is not imported here: ``fig`` brings it."""
    path = Path(path)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format=path.suffix.lstrip(".") or "png", dpi=dpi, **savefig_kw)
    return path
