"""models/train.py under torchrun (two gloo ranks on loopback) and its single-process twin
--grad-accum 2: bit-identical parameters, reruns, a killed rank and resume, bad input."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from models.train import TrainConfig, train
from models import build_model

torch.set_num_threads(1)
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
TINY = ["--set", "block_size=16", "--set", "n_layer=2", "--set", "n_head=2", "--set", "n_embd=32",
        "--set", "code_bits=16", "--set", "k=4"]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("text") / "tiny.txt"
    path.write_text("".join(rng.choice(list("abcdefgh"), 48)) * 40)
    return path


def _args(text_file, out, iters, *extra):
    return ["-m", "models.train", "--family", "spiking_kwta", "--text-file", str(text_file), "--iters", str(iters),
            "--batch-size", "4", "--no-progress", "--ckpt-every", "3", "--out", str(out), *TINY, *extra]


def _run(cmd, timeout=180):
    env = {**os.environ, "HDSPIKE_DIST_TIMEOUT_S": "20", "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=Path(__file__).parents[1])


def _state(out):
    ck = torch.load(Path(out) / "ckpt.pt", weights_only=True)
    return ck


def _assert_same(a, b):
    assert a["step"] == b["step"]
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for sa, sb in zip(a["learner"]["optimizer"]["state"].values(), b["learner"]["optimizer"]["state"].values()):
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k


@pytest.mark.slow
def test_two_ranks_equal_grad_accum_and_reruns(tmp_path, text_file):
    r1 = _run(TORCHRUN + _args(text_file, tmp_path / "ddp", 8))
    assert r1.returncode == 0, r1.stderr[-3000:]
    r2 = _run(TORCHRUN + _args(text_file, tmp_path / "ddp2", 8))
    assert r2.returncode == 0, r2.stderr[-3000:]
    r3 = _run([sys.executable] + _args(text_file, tmp_path / "acc", 8, "--grad-accum", "2"))
    assert r3.returncode == 0, r3.stderr[-3000:]
    ddp, ddp2, acc = _state(tmp_path / "ddp"), _state(tmp_path / "ddp2"), _state(tmp_path / "acc")
    assert ddp["step"] == 8 and ddp["world_size"] == 2 and "world_size" not in acc
    _assert_same(ddp, acc)
    _assert_same(ddp, ddp2)
    assert ddp["history"] == acc["history"]
    # the same identity: the grad-accum run could resume the DDP checkpoint; the plain
    # one-process run (one micro-batch) is a different run and computes different bits
    r4 = _run([sys.executable] + _args(text_file, tmp_path / "ddp", 8))
    assert r4.returncode != 0 and "micro_batches" in r4.stderr


@pytest.mark.slow
def test_killed_rank_exits_nonzero_and_rerun_resumes_bit_identical(tmp_path, text_file):
    iters = 120
    ref = _run([sys.executable] + _args(text_file, tmp_path / "ref", iters, "--grad-accum", "2"), timeout=300)
    assert ref.returncode == 0, ref.stderr[-3000:]
    out = tmp_path / "ddp"
    env = {**os.environ, "HDSPIKE_DIST_TIMEOUT_S": "20", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(TORCHRUN + _args(text_file, out, iters), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=Path(__file__).parents[1])
    psutil = pytest.importorskip("psutil")
    t0 = time.monotonic()
    killed = None
    while time.monotonic() - t0 < 120 and proc.poll() is None and killed is None:
        if (out / "ckpt.pt").exists():
            for child in psutil.Process(proc.pid).children(recursive=True):
                try:
                    if child.environ().get("RANK") == "1":
                        os.kill(child.pid, signal.SIGKILL)
                        killed = child.pid
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
        time.sleep(0.02)
    _, err = proc.communicate(timeout=120)
    if killed is None:
        pytest.skip("the run finished before a rank could be killed (machine too fast for this size)")
    assert proc.returncode != 0
    assert time.monotonic() - t0 < 100
    assert "rank" in err and ("local_rank: 1" in err or "rank: 1" in err), err[-3000:]
    assert _state(out)["step"] < iters
    again = _run(TORCHRUN + _args(text_file, out, iters), timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    _assert_same(_state(out), _state(tmp_path / "ref"))


@pytest.mark.slow
def test_ranks_with_different_configs_are_refused(tmp_path):
    script = tmp_path / "two_configs.py"
    script.write_text(
        "import os, torch\n"
        "from models.train import TrainConfig, train, init_distributed\n"
        "from models import build_model\n"
        "world, rank = init_distributed()\n"
        "m = build_model('spiking_kwta', {'vocab_size': 8, 'block_size': 8, 'n_layer': 1, 'n_head': 1,"
        " 'n_embd': 16, 'code_bits': 16, 'k': 4})\n"
        "cfg = TrainConfig(max_iters=2, batch_size=4, learning_rate=1e-3 if rank == 0 else 2e-3)\n"
        "try:\n"
        "    train(m, torch.arange(200) % 8, cfg, family='spiking_kwta', progress=False)\n"
        "except ValueError as e:\n"
        "    print('REFUSED', e, flush=True)\n"
        "    raise SystemExit(3)\n")
    r = _run(TORCHRUN + [str(script)])
    assert r.returncode != 0
    assert "REFUSED ranks were started with different configs: rank 1 differs from rank 0 " \
           "(train.learning_rate: 0.002 there, 0.001 asked)" in r.stdout, r.stdout + r.stderr[-2000:]


def test_batch_not_divisible_and_grad_accum_checked():
    with pytest.raises(ValueError, match=r"grad_accum must be an integer >= 1, got 0"):
        TrainConfig(grad_accum=0)
    m = build_model("spiking_kwta", {"vocab_size": 8, "block_size": 8, "n_layer": 1, "n_head": 1, "n_embd": 16,
                                     "code_bits": 16, "k": 4})
    with pytest.raises(ValueError, match=r"batch_size=5 is not divisible by world_size x grad_accum = 1 x 2 = 2"):
        train(m, torch.arange(200) % 8, TrainConfig(max_iters=1, batch_size=5, grad_accum=2), progress=False)


def test_identity_unchanged_at_defaults():
    """Old checkpoints and cached results match: the default identity has no new key."""
    ident = TrainConfig().identity()
    assert "grad_accum" not in ident and "micro_batches" not in ident
    assert TrainConfig(grad_accum=2).identity() == TrainConfig().identity(world_size=2)
    assert TrainConfig(grad_accum=2).identity()["micro_batches"] == 2
