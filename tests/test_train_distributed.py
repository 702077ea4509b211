"""models/train.py under torchrun (two gloo ranks on loopback) and its single-process twin
--grad-accum 2: bit-identical parameters, reruns, a killed rank and resume, bad input."""
from __future__ import annotations

import os
import re
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
REPO = Path(__file__).parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
# the smallest spiking LM the family builds: these tests check bits, not learning
TINY = ["--set", "block_size=8", "--set", "n_layer=1", "--set", "n_head=1", "--set", "n_embd=16",
        "--set", "code_bits=16", "--set", "k=4"]
ITERS, CKPT_EVERY, KILL_AT_STEP = 6, 3, 5  # a checkpoint at step 3, rank 1 dies in step 5
ENV = {**os.environ, "HDSPIKE_DIST_TIMEOUT_S": "60", "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
LAUNCH_TIMEOUT_S = 300  # generous for a loaded 2-core CI runner; a stuck launch is killed, never waited on

# Runs models.train's CLI with rank 1 SIGKILLing itself as it draws the batch of step
# KILL_AT_STEP. Deterministic where a kill from outside is a race: rank 1 can only reach that
# step after the all-reduce of the step before, which rank 0 joins after writing the step-3
# checkpoint, so the checkpoint exists and the run is mid-way when the rank dies.
KILLER = f"""
import os, signal, sys
import models.train as T

_get_batch, _calls = T.get_batch, [0]

def get_batch(*args, **kwargs):
    _calls[0] += 1
    if os.environ.get("RANK") == "1" and _calls[0] == {KILL_AT_STEP}:
        os.kill(os.getpid(), signal.SIGKILL)
    return _get_batch(*args, **kwargs)

T.get_batch = get_batch
sys.exit(T.main(sys.argv[1:]))
"""


def _args(text_file, out, *extra):
    return ["--family", "spiking_kwta", "--text-file", str(text_file), "--iters", str(ITERS), "--batch-size", "4",
            "--no-progress", "--ckpt-every", str(CKPT_EVERY), "--out", str(out), *TINY, *extra]


def _start(cmd):
    # own session: on timeout the whole group (torchrun and both ranks) is killed
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO,
                            start_new_session=True)


def _finish(proc, timeout=LAUNCH_TIMEOUT_S):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        pytest.fail(f"{' '.join(proc.args[:6])} ... gave no exit within {timeout} s (killed)")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _run(cmd, timeout=LAUNCH_TIMEOUT_S):
    return _finish(_start(cmd), timeout)


def _state(out):
    return torch.load(Path(out) / "ckpt.pt", weights_only=True)


def _assert_same(a, b):
    assert a["step"] == b["step"]
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    sa_all, sb_all = a["learner"]["optimizer"]["state"], b["learner"]["optimizer"]["state"]
    assert sa_all.keys() == sb_all.keys()
    for sa, sb in zip(sa_all.values(), sb_all.values()):
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k
    assert a["history"] == b["history"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every launch the two slow tests need, once: the --grad-accum 2 twin, an uninterrupted
    2-rank run and a 2-rank run whose rank 1 is killed start together (independent processes,
    deterministic bits); the killed run's command is then rerun, which resumes it."""
    tmp = tmp_path_factory.mktemp("ddp")
    rng = np.random.default_rng(0)
    text_file = tmp / "tiny.txt"
    text_file.write_text("".join(rng.choice(list("abcdefgh"), 48)) * 20)
    killer = tmp / "kill_rank1.py"
    killer.write_text(KILLER)
    acc = _start([sys.executable, "-m", "models.train"] + _args(text_file, tmp / "acc", "--grad-accum", "2"))
    ddp = _start(TORCHRUN + ["-m", "models.train"] + _args(text_file, tmp / "ddp"))
    t0 = time.monotonic()
    killed = _start(TORCHRUN + [str(killer)] + _args(text_file, tmp / "resumed"))
    killed = _finish(killed)
    killed_s = time.monotonic() - t0
    step_after_kill = _state(tmp / "resumed")["step"] if (tmp / "resumed" / "ckpt.pt").exists() else None
    resumed = _run(TORCHRUN + ["-m", "models.train"] + _args(text_file, tmp / "resumed"))
    return {"tmp": tmp, "text_file": text_file, "acc": _finish(acc), "ddp": _finish(ddp), "killed": killed,
            "killed_s": killed_s, "step_after_kill": step_after_kill, "resumed": resumed}


@pytest.mark.slow
def test_two_ranks_equal_grad_accum_and_reruns(runs):
    tmp = runs["tmp"]
    for name in ("acc", "ddp", "resumed"):
        assert runs[name].returncode == 0, f"{name}: {runs[name].stderr[-3000:]}"
    ddp, acc = _state(tmp / "ddp"), _state(tmp / "acc")
    assert ddp["step"] == ITERS and ddp["world_size"] == 2 and "world_size" not in acc
    _assert_same(ddp, acc)
    # a rerun of the same command (interrupted, then resumed) ends on the same bits
    _assert_same(_state(tmp / "resumed"), ddp)
    # the grad-accum run could resume the DDP checkpoint; the plain one-process run (one
    # micro-batch) is a different run and computes different bits, so it is refused
    from models.train import main

    with pytest.raises(ValueError, match=r"micro_batches"):
        main(_args(runs["text_file"], tmp / "ddp"))


@pytest.mark.slow
def test_killed_rank_exits_nonzero_and_rerun_resumes_bit_identical(runs):
    killed = runs["killed"]
    assert killed.returncode != 0, killed.stderr[-3000:]
    assert re.search(r"rank\s*:\s*1\b", killed.stderr), killed.stderr[-3000:]  # torchrun names the dead rank
    assert "SIGKILL" in killed.stderr or "Signal 9" in killed.stderr, killed.stderr[-3000:]
    assert runs["step_after_kill"] == CKPT_EVERY  # it died mid-run, after the step-3 checkpoint
    assert runs["resumed"].returncode == 0, runs["resumed"].stderr[-3000:]
    _assert_same(_state(runs["tmp"] / "resumed"), _state(runs["tmp"] / "acc"))


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
