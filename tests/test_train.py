"""Data, tokenizer, schedule, training (overfit), evaluation, checkpoints that resume exactly, sampling."""
from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch

from models import build_model
from models import data as sdata
from models.data import CharTokenizer, eval_chunks, get_batch, split_train_val
from models.train import (TrainConfig, evaluate, get_lr, load_checkpoint, load_model, main, save_checkpoint,
                          train, train_run)

torch.set_num_threads(1)

TINY = {"block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 32}


def _random_text(n=48, alphabet="abcdefgh", seed=0, reps=40) -> str:
    """A random string repeated: its next character needs several characters of context."""
    rng = np.random.default_rng(seed)
    return "".join(rng.choice(list(alphabet), n)) * reps


# ----------------------------------------------------------------------------- data

def test_tokenizer_roundtrip_and_errors(tmp_path):
    tok = CharTokenizer.from_text("hello world\n")
    assert tok.vocab_size == 9 and tok.chars == sorted(set("hello world\n"))
    ids = tok.encode("low")
    assert ids.dtype == np.int64 and tok.decode(ids) == "low"
    tok.save(tmp_path / "tok.json")
    assert CharTokenizer.load(tmp_path / "tok.json") == tok
    with pytest.raises(ValueError, match="'z'"):
        tok.encode("lz")
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([99])
    with pytest.raises(ValueError):
        CharTokenizer(["a", "a"])


def test_split_batches_and_chunks():
    ids = np.arange(1000)
    tr, va = split_train_val(ids)
    assert len(tr) == 900 and tr[-1] == 899 and va[0] == 900          # by position, first 90% train
    data = torch.arange(200)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    x, y = get_batch(data, 16, 5, g1)
    assert x.shape == y.shape == (5, 16) and torch.equal(y, x + 1)
    assert torch.equal(x, get_batch(data, 16, 5, g2)[0])              # same seed, same tokens
    chunks = eval_chunks(torch.arange(50), 16)
    targets = torch.cat([c[1] for c in chunks])
    assert torch.equal(targets, torch.arange(1, 50))                   # every target exactly once
    assert all(torch.equal(c[1], c[0] + 1) for c in chunks)


def test_missing_and_corrupt_data(tmp_path, monkeypatch):
    monkeypatch.setenv("HDSPIKE_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="karpathy/char-rnn"):
        sdata.load_tinyshakespeare()
    (tmp_path / "tinyshakespeare").mkdir()
    (tmp_path / "tinyshakespeare" / "input.txt").write_text("not shakespeare")
    with pytest.raises(ValueError, match="SHA-256"):
        sdata.load_tinyshakespeare()


def test_real_data_split():
    if not sdata.tinyshakespeare_path().is_file():
        pytest.skip(f"tiny-shakespeare not in {sdata.data_dir()} (get it from {sdata.TINYSHAKESPEARE_UPSTREAM})")
    text = sdata.load_tinyshakespeare()
    assert hashlib.sha256(text.encode()).hexdigest() == sdata.TINYSHAKESPEARE_SHA256
    tok = CharTokenizer.from_text(text)
    tr, va = split_train_val(tok.encode(text))
    assert tok.vocab_size == 65 and len(tr) == 1_003_854 and len(va) == 111_540


# ----------------------------------------------------------------------------- schedule

def test_lr_schedule():
    cfg = TrainConfig(max_iters=2000, warmup_iters=100, learning_rate=1e-3, min_lr=1e-4)
    lrs = [get_lr(i, cfg) for i in range(2001)]
    assert all(a < b for a, b in zip(lrs[:100], lrs[1:100]))          # linear warm-up
    assert lrs[100] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[100:], lrs[101:]))           # then cosine decay
    assert lrs[1050] == pytest.approx(5.5e-4, rel=1e-3)                # halfway: the mean of the ends
    assert lrs[2000] == pytest.approx(1e-4)
    with pytest.raises(ValueError):
        TrainConfig(max_iters=0)


# ----------------------------------------------------------------------------- training

def _data(text):
    tok = CharTokenizer.from_text(text)
    return tok, torch.from_numpy(tok.encode(text))


@pytest.mark.parametrize("kind,cfg", [("gpt", {"attention": "dense"}),
                                      ("spiking_kwta", {"code_bits": 16, "k": 4, "score": "hamming"})],
                         ids=["dense", "spiking"])
def test_tiny_model_overfits(kind, cfg):
    """Memorising a repeated random string needs context: a unigram/bigram model stays above 1 nat."""
    tok, ids = _data(_random_text())
    torch.manual_seed(0)
    m = build_model(kind, {"vocab_size": tok.vocab_size, **TINY, **cfg})
    before = evaluate(m, ids[:400])["nats_per_char"]
    train(m, ids, TrainConfig(max_iters=300, batch_size=16, warmup_iters=20, learning_rate=1e-2,
                              min_lr=1e-3, weight_decay=0.0, seed=0), progress=False)
    after = evaluate(m, ids[:400])["nats_per_char"]
    assert before > 1.9                     # ~ln 8 at the start
    assert after < 0.5, f"{kind} only reached {after:.3f} nats/char"


def test_evaluate_matches_manual_loss():
    tok, ids = _data(_random_text(reps=3))
    torch.manual_seed(0)
    m = build_model("gpt", {"vocab_size": tok.vocab_size, **TINY}).eval()
    ids = ids[:70]                                       # 69 targets: 4 full chunks of 16 + 5
    ev = evaluate(m, ids, batch_size=3)
    tot = 0.0
    for s in range(0, 69, 16):
        x, y = ids[s:min(s + 16, 69)], ids[s + 1:min(s + 16, 69) + 1]
        with torch.no_grad():
            logits = m(x[None])[0][0]
        tot += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
    assert ev["n_chars"] == 69
    assert ev["nats_per_char"] == pytest.approx(tot / 69, rel=1e-6)
    assert ev["bits_per_char"] == pytest.approx(ev["nats_per_char"] / math.log(2))
    assert len(ev["layer_stats"]) == 2 and ev["layer_stats"][0]["attn_density"] == pytest.approx(1.0)


@pytest.mark.parametrize("kind,cfg", [("gpt", {"attention": "topk", "k": 3}),
                                      ("spiking_kwta", {"code_bits": 16, "k": 3})], ids=["topk", "spiking"])
def test_resume_equals_uninterrupted(tmp_path, kind, cfg):
    tok, ids = _data(_random_text(reps=5))
    mcfg = {"vocab_size": tok.vocab_size, **TINY, **cfg}
    tc = TrainConfig(max_iters=12, batch_size=4, warmup_iters=3, ckpt_every=5, seed=1, data_seed=7)

    torch.manual_seed(1)
    a = build_model(kind, mcfg)
    ra = train(a, ids, tc, ckpt_path=tmp_path / "a.pt", progress=False)

    torch.manual_seed(1)
    b = build_model(kind, mcfg)
    train(b, ids, tc, ckpt_path=tmp_path / "b.pt", stop_after=7, progress=False)   # "interrupted"
    assert load_checkpoint(tmp_path / "b.pt")["step"] == 7
    torch.manual_seed(123)                               # a fresh process: different RNG, new model
    b2 = build_model(kind, mcfg)
    rb = train(b2, ids, tc, ckpt_path=tmp_path / "b.pt", progress=False)

    assert rb["step"] == ra["step"] == 12
    assert [h["loss"] for h in rb["history"]] == [h["loss"] for h in ra["history"]]
    sa, sb = a.state_dict(), b2.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    oa = load_checkpoint(tmp_path / "a.pt")["learner"]["optimizer"]
    ob = load_checkpoint(tmp_path / "b.pt")["learner"]["optimizer"]
    for pid in oa["state"]:
        assert torch.equal(oa["state"][pid]["exp_avg_sq"], ob["state"][pid]["exp_avg_sq"])


def test_checkpoint_is_atomic_and_weights_only(tmp_path):
    p = tmp_path / "x.pt"
    save_checkpoint(p, {"model": {"w": torch.ones(3)}, "step": 4, "name": "x"})
    assert load_checkpoint(p)["step"] == 4
    assert list(tmp_path.iterdir()) == [p]               # no temp file left behind
    torch.save({"evil": object()}, tmp_path / "bad.pt")
    with pytest.raises(Exception):
        load_checkpoint(tmp_path / "bad.pt")             # arbitrary objects are never unpickled


def test_train_run_save_load_and_sample(tmp_path, capsys):
    text = _random_text(reps=30)
    cfg = TrainConfig(max_iters=30, batch_size=8, warmup_iters=5, eval_batch_size=8)
    res = train_run("spiking_kwta", tmp_path / "run", cfg, text=text, progress=False,
                    overrides={**TINY, "code_bits": 16, "k": 4})
    assert res["split"] == "validation" and res["steps"] == 30 and res["eval_chars"] == len(text) // 10 - 1
    assert 0 < res["val_nats_per_char"] < 3 and res["peak_rss_mb"] > 0
    stats = res["layer_stats"]
    assert len(stats) == 2 and 0 < stats[0]["q_firing_rate"] < 1 and stats[0]["attn_density"] <= 1
    on_disk = json.loads((tmp_path / "run" / "result.json").read_text())
    assert on_disk["val_nats_per_char"] == res["val_nats_per_char"]
    # cached: a second call returns the stored result without training again
    assert train_run("spiking_kwta", tmp_path / "run", cfg, text=text,
                     overrides={**TINY, "code_bits": 16, "k": 4})["train_time_s"] == res["train_time_s"]

    model, tok, ck = load_model(tmp_path / "run" / "ckpt.pt")
    assert ck["family"] == "spiking_kwta" and tok.decode(tok.encode("abc")) == "abc"
    ids = torch.from_numpy(tok.encode(text[:16]))[None]
    torch.manual_seed(0)
    fresh = build_model(ck["family"], ck["config"]).eval()
    assert not torch.allclose(fresh(ids)[0], model(ids)[0])   # the weights really were loaded
    fresh.load_state_dict(load_checkpoint(tmp_path / "run" / "ckpt.pt")["model"])
    assert torch.equal(fresh(ids)[0], model(ids)[0])

    assert main(["--sample", "--ckpt", str(tmp_path / "run" / "ckpt.pt"), "--prompt", "ab", "--n", "25"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ab") and len(out.rstrip("\n")) >= 25 and set(out) <= set(text) | {"\n"}


# ----------------------------------------------------------------------------- runs that must be refused

def _tiny_run(tmp_path, text, *, family="spiking_kwta", iters=6, **over):
    cfg = TrainConfig(max_iters=iters, batch_size=4, warmup_iters=2, eval_batch_size=8, ckpt_every=3)
    return train_run(family, tmp_path / "run", cfg, text=text, progress=False,
                     overrides={**TINY, **({"code_bits": 16, "k": 4} if family == "spiking_kwta" else {}), **over})


def test_cached_result_of_another_run_is_refused(tmp_path):
    """A result.json made by another family or config is never returned as this run's result."""
    text = _random_text(reps=12)
    _tiny_run(tmp_path, text, family="gpt", iters=5)
    with pytest.raises(ValueError, match=r"family: 'gpt' there, 'spiking_kwta' asked"):
        _tiny_run(tmp_path, text, iters=5)
    with pytest.raises(ValueError, match=r"train\.max_iters: 5 there, 9 asked"):
        _tiny_run(tmp_path, text, family="gpt", iters=9)
    with pytest.raises(ValueError, match=r"config\.n_layer: 2 there, 1 asked"):
        _tiny_run(tmp_path, text, family="gpt", iters=5, n_layer=1)
    assert _tiny_run(tmp_path, text, family="gpt", iters=5)["steps"] == 5    # the same run: cached


def test_resume_with_another_config_is_refused(tmp_path):
    tok, ids = _data(_random_text(reps=5))
    mcfg = {"vocab_size": tok.vocab_size, **TINY, "code_bits": 16, "k": 3}
    tc = TrainConfig(max_iters=8, batch_size=4, warmup_iters=2, ckpt_every=2, seed=1)
    m = build_model("spiking_kwta", mcfg)
    train(m, ids, tc, ckpt_path=tmp_path / "c.pt", stop_after=4, progress=False, family="spiking_kwta",
          extra_state={"config": mcfg})
    with pytest.raises(ValueError, match=r"config\.k: 3 there, 5 asked"):
        train(build_model("spiking_kwta", {**mcfg, "k": 5}), ids, tc, ckpt_path=tmp_path / "c.pt",
              progress=False, family="spiking_kwta", extra_state={"config": {**mcfg, "k": 5}})
    with pytest.raises(ValueError, match=r"family: 'spiking_kwta' there, 'gpt' asked"):
        dense = {k: v for k, v in mcfg.items() if k not in ("code_bits", "k")}
        train(build_model("gpt", dense), ids, tc, ckpt_path=tmp_path / "c.pt", progress=False, family="gpt",
              extra_state={"config": dense})
    with pytest.raises(ValueError, match=r"train\.learning_rate"):
        train(build_model("spiking_kwta", mcfg), ids, TrainConfig(**{**tc.__dict__, "learning_rate": 5e-4}),
              ckpt_path=tmp_path / "c.pt", progress=False, family="spiking_kwta", extra_state={"config": mcfg})
    # what does not change the computation may differ: threads, checkpoint/log cadence
    r = train(build_model("spiking_kwta", mcfg), ids, TrainConfig(**{**tc.__dict__, "ckpt_every": 3}),
              ckpt_path=tmp_path / "c.pt", progress=False, family="spiking_kwta", extra_state={"config": mcfg})
    assert r["step"] == 8


def test_unreadable_checkpoints_name_the_path(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"model": {"w": torch.ones(1000)}, "step": 1})
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ValueError, match="truncated.pt.*not a readable hdspike checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(IsADirectoryError, match="directory"):
        load_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "foreign.pt").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="foreign.pt"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_format_1_checkpoint_loads(tmp_path):
    """Checkpoints written before the family registry (model_kind, model_config, optimizer, arm)."""
    tok, ids = _data(_random_text(reps=3))
    cfg = {"vocab_size": tok.vocab_size, **TINY, "code_bits": 16, "k": 3, "neuron": None}
    torch.manual_seed(0)
    m = build_model("spiking_kwta", {**cfg, "neuron": "heaviside"})
    opt = m.configure_optimizer(0.1, 1e-3)
    old = {"model_kind": "spiking", "model_config": cfg, "arm": "spiking", "tokenizer": tok.to_dict(),
           "model": m.state_dict(), "optimizer": opt.state_dict(), "step": 0}
    torch.save(old, tmp_path / "old.pt")
    loaded, _, ck = load_model(tmp_path / "old.pt")
    assert ck["family"] == "spiking_kwta" and ck["variant"] == "spiking" and "optimizer" in ck["learner"]
    x = ids[:16][None]
    assert torch.equal(loaded(x)[0], m.eval()(x)[0])
    torch.save({**old, "model_kind": "rnn"}, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match="unknown model_kind 'rnn'.*retrain"):
        load_model(tmp_path / "odd.pt")


def test_cli_lists_families_and_refuses_unknown(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "gpt:" in out and "spiking_kwta:" in out and "window" in out
    with pytest.raises(SystemExit):
        main(["--family", "nope", "--out", "x"])
    assert "unknown family 'nope'" in capsys.readouterr().err
