"""A family added from one file (tests/toy_family.py) trains, resumes exactly and joins the table.

Issue 10's promise: a new family is one file plus one registry entry, with no edit to the
harness or to bench/lm_compare.py. The toy family registers itself at import, like a plug-in.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))   # tests.toy_family and bench.lm_compare are imported by path

import models  # noqa: E402
from hdc import provenance  # noqa: E402
from models.data import CharTokenizer, tinyshakespeare_path  # noqa: E402
from models.train import TrainConfig, load_checkpoint, train  # noqa: E402
from tests import toy_family  # noqa: E402,F401  (registers "toy")
from bench import lm_compare  # noqa: E402

torch.set_num_threads(1)

# a random string repeated: a bigram model learns part of it, so the candidates' losses differ
TEXT = "".join(np.random.default_rng(0).choice(list("abcdefghij \n"), 300)) * 12


def test_toy_is_registered_by_its_one_file():
    fam = models.get_family("toy")
    assert fam is toy_family.TOY and models.FAMILIES["toy"] is fam
    m = models.build_model("toy", {**fam.variants["wide"], "vocab_size": 12})
    logits, loss = m(torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 5, dtype=torch.long))
    assert logits.shape == (2, 5, 12) and loss.ndim == 0
    assert m.generate(torch.zeros(1, 1, dtype=torch.long), 4).shape == (1, 5)


def _train_toy(ckpt, cfg, ids, stop_after=None):
    torch.manual_seed(cfg.seed)
    model = models.build_model("toy", {"vocab_size": 12, "block_size": 16, "d_hidden": 4})
    info = train(model, ids, cfg, ckpt_path=ckpt, family="toy", stop_after=stop_after, progress=False,
                 extra_state={"config": {"vocab_size": 12, "block_size": 16, "d_hidden": 4}})
    return model, info


def test_toy_resumes_exactly(tmp_path):
    """Stopped at step 7 (checkpoint) and resumed in a fresh model == 20 uninterrupted steps, bit for bit."""
    ids = torch.from_numpy(CharTokenizer.from_text(TEXT).encode(TEXT))
    cfg = TrainConfig(max_iters=20, batch_size=4, warmup_iters=3, log_every=1, ckpt_every=5, seed=3)
    whole, info_whole = _train_toy(tmp_path / "whole.pt", cfg, ids)
    _, info_part = _train_toy(tmp_path / "split.pt", cfg, ids, stop_after=7)
    assert info_part["step"] == 7 and load_checkpoint(tmp_path / "split.pt")["step"] == 7
    resumed, info_resumed = _train_toy(tmp_path / "split.pt", cfg, ids)
    assert info_resumed["step"] == 20
    assert [h["loss"] for h in info_resumed["history"]] == [h["loss"] for h in info_whole["history"]]
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), f"{name} differs after resume"
    assert load_checkpoint(tmp_path / "split.pt")["family"] == "toy"


def test_toy_in_the_comparison_table(tmp_path, monkeypatch):
    """lm_compare's quick sweep over ``--families toy``: a bench row, a selection on held-out
    training text recorded with both candidates' scores, the chosen row, repo-relative run paths."""
    monkeypatch.setattr(provenance, "REPO", tmp_path.resolve())   # tmp_path plays the repository
    runs = tmp_path / "runs"
    families = lm_compare.table_families(["toy"])
    assert families == ["toy"]
    jobs = lm_compare.jobs_for(["main-bench", "select", "main-selected"], runs, families, quick=True)
    done = []
    for preset, family, variant, seed in jobs:   # lazily: the selected row's job follows the selection runs
        lm_compare.run_one(runs, preset, family, variant, seed, text=TEXT)
        done.append((preset, variant))
    sel = lm_compare.choose_variant(runs, "quick-select", "toy")
    scores = sel["heldout_train_nats_per_char"]
    assert set(scores) == {"narrow", "wide"} and sel["chosen"] == min(scores, key=scores.get)
    assert scores["narrow"] != scores["wide"]
    assert done[:3] == [("quick", "narrow"), ("quick-select", "narrow"), ("quick-select", "wide")]

    rows, selection = lm_compare.table_rows_spec(runs, families, "quick-select")
    assert rows[0] == ("toy", "narrow") and ("toy", sel["chosen"]) in rows
    summary = lm_compare.summarise(runs, "quick", rows)
    labels = [r["family"] for r in lm_compare.table_rows(summary)]
    assert "toy/narrow" in labels and f"toy/{sel['chosen']}" in labels
    assert summary["toy/narrow"]["gap_to_dense_nats"] is None     # no gpt/dense row in this table

    args = type("Args", (), {"quick": True, "out": tmp_path / "out", "imports": ["tests.toy_family"],
                             "allow_dirty": True})()
    lm_compare.report(args, runs, families)
    data = json.loads((tmp_path / "out" / "lm_compare_quick.json").read_text())
    assert data["selection"]["toy"]["chosen"] == sel["chosen"]
    assert data["selection"]["toy"]["heldout_train_nats_per_char"] == pytest.approx(scores)
    assert data["rows"]["toy/narrow"]["seeds"]["0"]["run_dir"] == "runs/quick/toy/narrow/seed0"
    assert data["runs_dir"] == "runs" and data["meta"]["allow_dirty"] is True


def test_unknown_family_named_in_the_error():
    with pytest.raises(ValueError, match=r"unknown families \['nope'\].*'toy'.*--import"):
        lm_compare.table_families(["nope"])


def test_toy_trains_through_the_cli(tmp_path):
    """``python -m models.train --import tests.toy_family --family toy``: needs the real corpus
    (the loader checks its SHA-256), so it skips without it."""
    if not tinyshakespeare_path().is_file():
        pytest.skip(f"tiny-shakespeare not at {tinyshakespeare_path()}: the CLI trains on the real corpus only")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "models.train", "--import", "tests.toy_family", "--family", "toy",
           "--variant", "wide", "--out", str(tmp_path / "run"), "--iters", "5", "--batch-size", "4",
           "--block-size", "8", "--no-progress"]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["family"] == "toy" and out["variant"] == "wide" and math_isfinite(out["val_nats_per_char"])
    res = json.loads((tmp_path / "run" / "result.json").read_text())
    assert res["config"]["d_hidden"] == 16 and res["config"]["block_size"] == 8


def math_isfinite(x) -> bool:
    return isinstance(x, float) and np.isfinite(x)


def test_carry_keeps_rows_this_sweep_did_not_make(tmp_path):
    # rows recomputed now win; the others come back marked with the commit that made them
    def row(v):
        return {"family": "gpt", "variant": v, "val_nats_per_char_mean": v == "dense" and 2.0 or 2.5,
                "seeds": {}, "n_seeds": 3}
    prev = {"meta": {"commit": "abc", "time_utc": "t"},
            "presets": {k: lm_compare.PRESETS[k] for k in ("main", "select", "long")},
            "rows": {"gpt/dense": row("dense"), "gpt/topk": row("topk")}, "long_context": {},
            "selection": {"spiking_kwta": {"chosen": "hamming", "heldout_train_nats_per_char": {"hamming": 1.0}}}}
    path = tmp_path / "prev.json"
    path.write_text(json.dumps(prev))
    summary = {"gpt/dense": {**row("dense"), "val_nats_per_char_mean": 1.9}}
    selection = {}
    out = lm_compare.carry_rows(path, summary, {}, selection)
    assert out["rows"] == ["gpt/topk"] and "carried_from" not in summary["gpt/dense"]
    assert summary["gpt/dense"]["val_nats_per_char_mean"] == 1.9
    assert summary["gpt/topk"]["carried_from"]["commit"] == "abc"
    assert summary["gpt/topk"]["gap_to_dense_nats"] == pytest.approx(0.6)   # against this sweep's dense
    assert selection["spiking_kwta"]["carried_from"]["commit"] == "abc"
    prev["presets"]["main"] = {**prev["presets"]["main"], "iters": 1}
    path.write_text(json.dumps(prev))
    with pytest.raises(ValueError, match="preset 'main'"):
        lm_compare.carry_rows(path, {}, {}, {})


def test_targets_resolve_selected_rows_and_read_layer_stats():
    """Gap targets subtract means; a bare family means its selected variant; tie and firing
    targets take each seed's worst layer; rows missing from their table are not checked."""
    def row(loss, *layers):
        return {"val_nats_per_char_mean": loss, "seeds": {"0": {"layer_stats": list(layers)}}}

    summary = {"gpt/dense": row(1.9), "gpt/topk": row(1.95),
               "spiking_kwta/graded": row(1.85, {"tie_at_cut_frac": 0.05}, {"tie_at_cut_frac": 0.2}),
               "spiking_kwta/sparse": row(1.87, {"q_firing_rate": 0.08, "k_firing_rate": 0.12})}
    long = {"gpt/window32": row(1.70), "spiking_kwta/brain_prior_graded": row(1.69)}
    sel = {"spiking_kwta": {"chosen": "graded"}}
    got = {(t["table"], t["row"], t["measure"], t["limit"]): t for t in lm_compare.check_targets(summary, sel, long)}
    t = got[("main", "spiking_kwta/graded", "gap", 0.0)]
    assert t["reference"] == "gpt/dense" and abs(t["value"] + 0.05) < 1e-12 and t["met"]
    assert not got[("main", "gpt/topk", "gap", 0.02)]["met"]                    # +0.05 > 0.02
    t = got[("main", "spiking_kwta/graded", "tie_at_cut", 0.10)]
    assert t["value"] == 0.2 and not t["met"]                                  # the worst layer counts
    t = got[("main", "spiking_kwta/sparse", "firing", 0.10)]
    assert t["value"] == 0.12 and not t["met"]
    assert got[("main", "spiking_kwta/sparse", "gap", 0.03)]["reference"] == "spiking_kwta/graded"
    t = got[("long", "spiking_kwta/brain_prior_graded", "gap", -0.02)]
    assert abs(t["value"] + 0.01) < 1e-12 and not t["met"]                     # better, but not by 0.02
    assert not any(k[1] == "spiking_kwta/brain_prior" for k in got)            # not in the long table
    assert not any(k[1] == "nord/lif" for k in got)
