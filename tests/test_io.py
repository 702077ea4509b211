"""hdc.io: the atomic writer. Content, file mode, failure and SIGKILL mid-write, stale temps."""
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hdc import io as hio

IO_PY = Path(hio.__file__)


def _temps(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped (so os.kill(pid, 0) fails)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# The child loads hdc/io.py alone (not the hdc package, which imports Numba and the C backend),
# writes one MiB, says so, then either sleeps chunk by chunk (to be killed) or waits for a line.
_CHILD = textwrap.dedent("""
    import importlib.util, sys, time
    spec = importlib.util.spec_from_file_location("hio", sys.argv[1])
    hio = importlib.util.module_from_spec(spec); spec.loader.exec_module(hio)
    chunk = b"n" * (1 << 20)
    with hio.atomic_write(sys.argv[2]) as f:
        f.write(chunk); f.flush()
        print("writing", flush=True)
        if sys.argv[3] == "wait":
            sys.stdin.readline()
        for _ in range(600):  # slow: 600 MiB over a minute, so the kill lands mid-write
            f.write(chunk); f.flush(); time.sleep(0.1 if sys.argv[3] == "slow" else 0)
            if sys.argv[3] == "wait":
                break
""")


def _start_writer(target: Path, how: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", _CHILD, str(IO_PY), str(target), how],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "writing"
    return p


# ---------------------------------------------------------------- content and mode
def test_binary_and_text_content(tmp_path):
    p = tmp_path / "sub" / "dir" / "a.bin"  # parents are created
    with hio.atomic_write(p) as f:
        f.write(b"\x00\x01binary")
    assert p.read_bytes() == b"\x00\x01binary"
    with hio.atomic_write(p, "w", encoding="utf-8") as f:
        f.write("größe\n")
    assert p.read_bytes() == "größe\n".encode("utf-8")
    hio.write_json(tmp_path / "r.json", {"acc": 0.5, "name": "ü"})
    text = (tmp_path / "r.json").read_text(encoding="utf-8")
    assert text.endswith("}\n") and json.loads(text) == {"acc": 0.5, "name": "ü"}
    assert _temps(tmp_path) == [] and _temps(p.parent) == []


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_new_file_mode_follows_umask(tmp_path, umask):
    p = tmp_path / "m.bin"
    p.write_bytes(b"old")
    os.chmod(p, 0o600)  # an existing private file is replaced by a file with the normal mode
    old = os.umask(umask)
    try:
        with hio.atomic_write(p) as f:
            f.write(b"new")
        hio.write_json(tmp_path / "r.json", [1])
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o666 & ~umask


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd to name the fsynced files")
def test_fsyncs_file_and_directory(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.path.realpath(f"/proc/self/fd/{fd}"))
                        or real(fd))
    p = tmp_path / "m.bin"
    with hio.atomic_write(p) as f:
        f.write(b"x")
    assert len(synced) == 2
    assert Path(synced[0]).name.startswith(".m.bin.")  # the temp file, before the rename
    assert synced[1] == os.path.realpath(tmp_path)  # then the directory, after it


# ---------------------------------------------------------------- failures
@pytest.mark.parametrize("exc", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failure_mid_write_leaves_target_and_no_temp(tmp_path, exc):
    p = tmp_path / "m.bin"
    p.write_bytes(b"old complete")
    with pytest.raises(type(exc)):
        with hio.atomic_write(p) as f:
            f.write(b"partial" * 1000)
            f.flush()
            assert len(_temps(tmp_path)) == 1  # the write really went to a temp
            raise exc
    assert p.read_bytes() == b"old complete"
    assert _temps(tmp_path) == []


def test_json_that_cannot_serialise_touches_nothing(tmp_path):
    p = tmp_path / "r.json"
    with pytest.raises(TypeError):
        hio.write_json(p, {"x": object()})
    assert list(tmp_path.iterdir()) == []


def test_bad_paths_name_the_path(tmp_path):
    with pytest.raises(ValueError, match="path is empty"):
        with hio.atomic_write(""):
            pass
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        with hio.atomic_write(tmp_path):
            pass
    with pytest.raises(ValueError, match="ends with a separator"):
        hio.write_json(str(tmp_path / "nodir") + os.sep, {})
    with pytest.raises(ValueError, match="mode"):
        with hio.atomic_write(tmp_path / "x", "a"):
            pass
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- SIGKILL and stale temps
@pytest.mark.parametrize("cleaner", ["next write", "clean_stale_temps"])
def test_sigkill_mid_write_keeps_old_target_and_temp_is_cleaned_next_time(tmp_path, cleaner):
    p = tmp_path / "big.bin"
    old = os.urandom(1 << 16)
    p.write_bytes(old)
    child = _start_writer(p, "slow")
    (leftover,) = _temps(tmp_path)
    assert (tmp_path / leftover).stat().st_size >= 1 << 20  # killed with a MiB already written
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    assert p.read_bytes() == old  # the old target is complete
    assert _temps(tmp_path) == [leftover]  # SIGKILL leaves the temp (nothing can remove it)
    if cleaner == "next write":
        with hio.atomic_write(p) as f:
            f.write(b"new")
        assert p.read_bytes() == b"new"
    else:
        assert hio.clean_stale_temps(p) == [tmp_path / leftover]
    assert _temps(tmp_path) == []


def test_live_writers_temp_is_not_removed(tmp_path):
    p = tmp_path / "m.bin"
    child = _start_writer(p, "wait")
    try:
        (theirs,) = _temps(tmp_path)
        assert hio.clean_stale_temps(p) == []
        with hio.atomic_write(p) as f:  # a second writer of the same target, concurrently
            f.write(b"ours")
        assert _temps(tmp_path) == [theirs]
        assert p.read_bytes() == b"ours"
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert p.read_bytes() == b"n" * (2 << 20)  # the last rename wins, whole
    assert _temps(tmp_path) == []


def test_only_temps_of_this_target_are_cleaned(tmp_path):
    dead = _dead_pid()
    p = tmp_path / "m.safetensors"
    names = {
        f".m.safetensors.{dead}.ab12.tmp": True,                 # ours, writer dead: removed
        f".m.safetensors.{os.getpid()}.ab12.tmp": False,         # ours, writer alive (this process)
        f".m.safetensors.1.{dead}.ab12.tmp": False,              # a temp of target 'm.safetensors.1'
        f".x.m.safetensors.{dead}.ab12.tmp": False,              # of target 'x.m.safetensors'
        f".m.safetensors.{dead}.ab12.tmp.keep": False,           # not a temp name
        "m.safetensors.abc.tmp": False,                          # not hidden: not one of ours
    }
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    removed = hio.clean_stale_temps(p)
    assert sorted(r.name for r in removed) == sorted(n for n, gone in names.items() if gone)
    assert sorted(x.name for x in tmp_path.iterdir()) == sorted(n for n, gone in names.items() if not gone)
