"""Checks every language-model family with a decoder must pass; used by the family test modules.

* :func:`check_decoder_matches_forward` - prefill a prompt, then step token by token: the logits of
  every step equal the full forward pass's logits at that position (within ``atol``);
* :func:`check_causal` - changing a future token never changes an earlier position's logits (exactly);
* :func:`check_overfits` - a tiny model memorises a repeated random string (needs context);
* :func:`check_fits_batch` - full-batch steps on one short batch bring the loss below 0.5;
* :func:`check_resume_exact` - a run stopped and resumed from its checkpoint equals an
  uninterrupted one, bit for bit (harness :func:`models.train.train`);
* :func:`check_train_run_roundtrip` - ``train_run`` writes result.json and a checkpoint that
  :func:`models.train.load_model` rebuilds into a model with the reported validation loss.
"""
from __future__ import annotations

import numpy as np
import torch

from models import build_model
from models.data import CharTokenizer
from models.train import TrainConfig, evaluate, load_checkpoint, load_model, prepare_data, train, train_run


def random_text(n=48, alphabet="abcdefgh", seed=0, reps=40) -> str:
    rng = np.random.default_rng(seed)
    return "".join(rng.choice(list(alphabet), n)) * reps


def data(text):
    tok = CharTokenizer.from_text(text)
    return tok, torch.from_numpy(tok.encode(text))


def state_numel(state) -> int:
    """Numbers held by a decoder state (nested dicts/lists/tuples of tensors)."""
    if isinstance(state, torch.Tensor):
        return state.numel()
    if isinstance(state, dict):
        return sum(state_numel(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_numel(v) for v in state)
    return 0


@torch.no_grad()
def check_decoder_matches_forward(model, idx: torch.Tensor, t0: int, atol: float) -> float:
    """Returns the largest |step logits - forward logits| over all steps (asserted <= atol)."""
    model.eval()
    full, _ = model(idx)                                         # (B, T, V)
    dec = model.decoder()
    logits, state = dec.prefill(idx[:, :t0])
    worst = float((logits - full[:, :t0]).abs().max())
    for t in range(t0, idx.shape[1]):
        step = dec.step(idx[:, t:t + 1], state)                  # (B, V)
        worst = max(worst, float((step - full[:, t]).abs().max()))
    assert worst <= atol, f"decoder differs from forward by {worst:.3g} > {atol}"
    return worst


@torch.no_grad()
def check_causal(model, idx: torch.Tensor, t: int) -> None:
    model.eval()
    a, _ = model(idx)
    other = idx.clone()
    other[:, t:] = (other[:, t:] + 1) % model.config.vocab_size
    b, _ = model(other)
    assert torch.equal(a[:, :t], b[:, :t]), "an earlier position changed when a later token did"
    assert not torch.equal(a[:, t:], b[:, t:]), "the changed positions did not change (vacuous check)"


def check_overfits(family: str, config: dict, *, steps=300, lr=1e-2, below=0.5) -> tuple[float, float]:
    tok, ids = data(random_text())
    torch.manual_seed(0)
    m = build_model(family, {"vocab_size": tok.vocab_size, **config})
    before = evaluate(m, ids[:400])["nats_per_char"]
    train(m, ids, TrainConfig(max_iters=steps, batch_size=16, warmup_iters=20, learning_rate=lr,
                              min_lr=lr / 10, weight_decay=0.0, seed=0), progress=False)
    after = evaluate(m, ids[:400])["nats_per_char"]
    assert before > 1.9, before
    assert after < below, f"{family} only reached {after:.3f} nats/char"
    return before, after


def check_fits_batch(model, opt, x: torch.Tensor, y: torch.Tensor, *, steps=150) -> tuple[float, float]:
    """Full-batch steps on one (x, y) batch: the loss starts above 2 nats and ends below 0.5
    (the model can memorise a short text; a family with its own training recipe brings ``opt``)."""
    first = None
    for _ in range(steps):
        _, loss = model(x, y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 2.0 and loss.item() < 0.5, (first, loss.item())
    return first, loss.item()


def check_resume_exact(tmp_path, family: str, config: dict) -> None:
    tok, ids = data(random_text(reps=5))
    mcfg = {"vocab_size": tok.vocab_size, **config}
    tc = TrainConfig(max_iters=10, batch_size=4, warmup_iters=3, ckpt_every=5, seed=1, data_seed=7)
    torch.manual_seed(1)
    a = build_model(family, mcfg)
    ra = train(a, ids, tc, ckpt_path=tmp_path / "a.pt", family=family, progress=False,
               extra_state={"config": mcfg})
    torch.manual_seed(1)
    b = build_model(family, mcfg)
    train(b, ids, tc, ckpt_path=tmp_path / "b.pt", family=family, stop_after=6, progress=False,
          extra_state={"config": mcfg})
    assert load_checkpoint(tmp_path / "b.pt")["step"] == 6
    torch.manual_seed(123)
    b2 = build_model(family, mcfg)
    rb = train(b2, ids, tc, ckpt_path=tmp_path / "b.pt", family=family, progress=False,
               extra_state={"config": mcfg})
    assert rb["step"] == ra["step"] == 10
    assert [h["loss"] for h in rb["history"]] == [h["loss"] for h in ra["history"]]
    sa, sb = a.state_dict(), b2.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{k} differs after resume"


def check_train_run_roundtrip(tmp_path, family: str, variant: str, overrides: dict) -> dict:
    text = random_text(reps=8)
    res = train_run(family, tmp_path / "run", TrainConfig(max_iters=4, batch_size=2, warmup_iters=1),
                    variant=variant, overrides=overrides, progress=False, text=text)
    assert res["family"] == family and res["steps"] == 4 and np.isfinite(res["val_nats_per_char"])
    model, tok, ck = load_model(tmp_path / "run" / "ckpt.pt")
    assert ck["family"] == family and ck["config"] == res["config"]
    again = train_run(family, tmp_path / "run", TrainConfig(max_iters=4, batch_size=2, warmup_iters=1),
                      variant=variant, overrides=overrides, progress=False, text=text)
    assert again["val_nats_per_char"] == res["val_nats_per_char"]      # the cached result
    _, _, val_ids = prepare_data(False, text)
    # the saved weights reproduce the validation loss the run reported
    assert evaluate(model, val_ids)["nats_per_char"] == res["val_nats_per_char"]
    return res
