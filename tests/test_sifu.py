"""The SiFu graph language model (models/sifu.py) and the bigram baseline (models/bigram.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import models
from models.data import CharTokenizer
from models.sifu import SiFuConfig, SiFuLM, edge_energy_trace, fit_config, observed_bigrams
from models.train import TrainConfig, load_model, train_run
from tests.lm_checks import check_fits_batch

torch.set_num_threads(1)

TEXT = "the cat sat on the mat. the hat is on the cat.\n" * 12


def _tiny(**kw) -> SiFuLM:
    cfg = dict(vocab_size=4, block_size=8, d=3, graph="bigrams", bigrams=[[0, 1], [1, 2], [2, 0], [1, 1]],
               mix_range=3)
    torch.manual_seed(0)
    m = SiFuLM(SiFuConfig(**{**cfg, **kw}))
    with torch.no_grad():   # every parameter away from its symmetric init, so nothing cancels by luck
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return m


def _reference_energies(m: SiFuLM, seq: list[int]) -> torch.Tensor:
    """A deliberately plain SiFu: Python dict of edges, loops over positions, earlier signals and candidates."""
    d, V, R = m.config.d, m.config.vocab_size, m.config.mix_range
    edges = {tuple(map(int, uc)): k for k, uc in enumerate(np.argwhere(m.edge_index.numpy() >= 0))}
    order = {tuple(map(int, uc)): int(m.edge_index[uc[0], uc[1]]) for uc in edges}

    def W(u, c):
        if (u, c) in order:
            return m.edge_weight[order[(u, c)]], m.edge_bias[order[(u, c)]]
        return m.shared_weight, m.shared_bias

    def pe(i):
        out = torch.zeros(d)
        for k in range(d):
            j = k if k < (d + 1) // 2 else k - (d + 1) // 2
            ang = i / (10000 ** (2 * j / max(d, 2)))
            out[k] = math.sin(ang) if k < (d + 1) // 2 else math.cos(ang)
        return out

    w = m.mix_logits
    e = [F.gelu(1.0 + m.node_bias[seq[0]] + pe(0))]
    rows = []
    for i, u in enumerate(seq):
        logit = torch.stack([w[min(i - j, R - 1)] for j in range(i + 1)])
        a = torch.softmax(logit, 0)
        h = sum(a[j] * e[j] for j in range(i + 1))
        row = []
        for c in range(V):
            Wm, b = W(u, c)
            row.append(torch.linalg.vector_norm(F.gelu(h @ Wm + b + pe(i + 1))))
        rows.append(torch.stack(row))
        if i + 1 < len(seq):
            Wm, b = W(u, seq[i + 1])
            e.append(F.gelu(h @ Wm + b + pe(i + 1)))
    return torch.stack(rows)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_energies_match_slow_reference(temperature):
    m = _tiny(temperature=temperature)
    seq = [0, 1, 1, 2, 3, 0, 1, 2]   # (3, *) edges are all shared; T = 8 > mix_range exercises the tail
    with torch.no_grad():
        logits, _ = m(torch.tensor([seq]))
        ref = _reference_energies(m, seq)
    torch.testing.assert_close(logits[0] * temperature, ref, rtol=1e-5, atol=1e-5)


def test_shared_edges_are_one_tensor():
    m = _tiny()
    n_own = 4
    assert m.edge_weight.shape == (n_own, 3, 3) and m.shared_weight.shape == (3, 3)
    unseen = (m.edge_index < 0).nonzero()
    assert len(unseen) == 16 - n_own
    W, b = m.edge_params(unseen[:, 0], unseen[:, 1])
    assert torch.equal(W, m.shared_weight.expand_as(W)) and torch.equal(b, m.shared_bias.expand_as(b))
    # the shared matrix is not trained by default (a real flag), and it does train when asked
    x, y = torch.tensor([[3, 2, 3, 0]]), torch.tensor([[2, 3, 0, 3]])
    for flag in (False, True):
        mm = _tiny(train_shared=flag)
        assert mm.shared_weight.requires_grad is flag
        before = mm.shared_weight.detach().clone()
        opt = mm.configure_optimizer(0.0, 0.1)
        _, loss = mm(x, y)
        loss.backward()
        opt.step()
        assert torch.equal(mm.shared_weight, before) is (not flag)
    # one change to the shared tensor moves the energy of every unseen edge (the signal itself
    # flows along owned edges here, so the owned edges' energies stay)
    x = torch.tensor([[0, 1, 2, 0]])
    with torch.no_grad():
        e0 = m(x)[0]
        m.shared_weight.mul_(2.0)
        e1 = m(x)[0]
    own = m.edge_index[x[0]] >= 0                                            # (T, V)
    assert torch.equal(e0[0][own], e1[0][own]) and not torch.isclose(e0[0][~own], e1[0][~own]).any()


def test_padding_does_not_change_the_loss():
    m = _tiny()
    x, y = torch.tensor([[0, 1, 2, 0]]), torch.tensor([[1, 2, 0, 1]])
    _, loss = m(x, y)
    xp = torch.tensor([[0, 1, 2, 0, 3, 3, 3], [1, 1, 2, 0, 1, 2, 3]])
    yp = torch.tensor([[1, 2, 0, 1, -1, -1, -1], [-1] * 7])                  # right padding, a padding row
    _, loss_p = m(xp, yp)
    torch.testing.assert_close(loss_p, loss)
    mp = _tiny(pad_id=3)
    mp.load_state_dict(m.state_dict())
    _, loss_id = mp(torch.tensor([[0, 1, 2, 0, 3, 3]]), torch.tensor([[1, 2, 0, 1, 3, 3]]))
    torch.testing.assert_close(loss_id, loss)
    # a padding input is masked even where its target is a real token
    _, loss_mid = mp(torch.tensor([[0, 1, 2, 0, 3, 1]]), torch.tensor([[1, 2, 0, 1, 1, 3]]))
    torch.testing.assert_close(loss_mid, loss)


def test_parameter_count_does_not_depend_on_context():
    sizes = {}
    for T in (8, 64, 1024):
        m = _tiny(block_size=T)
        sizes[T] = (m.num_params(), {k: tuple(v.shape) for k, v in m.state_dict().items()})
    assert sizes[8] == sizes[64] == sizes[1024]


def test_param_report_dense_vs_sparse():
    m = _tiny()
    rep = m.param_report()
    per_edge = 3 * 3 + 3
    assert rep["owned_edges"] == 4 and rep["shared_edges"] == 12
    assert rep["sparse_params"] == m.num_params() == 4 * per_edge + per_edge + 4 * 3 + 3
    assert rep["dense_params"] == 16 * per_edge + 4 * 3 + 3
    dense = _tiny(graph="dense", bigrams=None)
    assert dense.num_params() - dense.shared_weight.numel() - dense.shared_bias.numel() == rep["dense_params"]
    assert rep["trainable_params"] == m.num_params() - per_edge


def test_decoder_prefill_and_steps_equal_the_full_forward():
    m = _tiny(block_size=16).eval()
    x = torch.tensor([[0, 1, 1, 2, 0, 1, 2, 3, 1, 1, 2, 0], [3, 0, 1, 2, 2, 0, 1, 1, 2, 0, 1, 2]])
    full, _ = m(x)
    dec = m.decoder()
    logits, state = dec.prefill(x[:, :5])
    torch.testing.assert_close(logits, full[:, :5])
    for t in range(5, x.shape[1]):
        torch.testing.assert_close(dec.step(x[:, t:t + 1], state), full[:, t], rtol=1e-5, atol=1e-5)
    # a prompt longer than mix_range: the prefill's recurrence moves signals into the tail sum
    assert x.shape[1] > m.config.mix_range
    torch.testing.assert_close(dec.prefill(x)[0], full, rtol=1e-5, atol=1e-5)
    out = m.generate(x[:1, :3], 20, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 23) and torch.equal(out[:, :3], x[:1, :3])


def test_sampled_negatives_score_only_the_candidates():
    m = _tiny(n_negatives=1).train()
    m.token_counts.copy_(torch.tensor([0, 0, 9, 0]))                         # token 2 is "most frequent"
    x, y = torch.tensor([[0, 1, 1]]), torch.tensor([[1, 1, 1]])                # candidates: target 1, frequent 2
    logits, loss = m(x, y)
    assert torch.isinf(logits[..., [0, 3]]).all() and torch.isfinite(logits[..., [1, 2]]).all()
    full = m.eval()(x)[0]
    torch.testing.assert_close(logits[..., [1, 2]], full[..., [1, 2]])
    ref = F.cross_entropy(full[0][:, [1, 2]], torch.tensor([0, 0, 0]))
    torch.testing.assert_close(loss, ref)


def test_tiny_model_overfits_a_short_text():
    tok = CharTokenizer.from_text(TEXT)
    ids = torch.from_numpy(tok.encode(TEXT))
    cfg = fit_config({"vocab_size": tok.vocab_size, "block_size": 32, "d": 8}, ids.numpy())
    torch.manual_seed(0)
    m = SiFuLM(SiFuConfig(**cfg))
    opt = m.configure_optimizer(0.0, 3e-2)
    x, y = ids[:-1][:96].view(3, 32), ids[1:][:96].view(3, 32)
    check_fits_batch(m, opt, x, y)


def test_save_load_round_trip_through_the_harness(tmp_path):
    tok = CharTokenizer.from_text(TEXT)
    bigrams = observed_bigrams(tok.encode(TEXT), tok.vocab_size)[0].tolist()
    cfg = TrainConfig(max_iters=4, batch_size=2, warmup_iters=1, log_every=1)
    res = train_run("sifu", tmp_path, cfg, variant="d16", progress=False, text=TEXT,
                    overrides={"block_size": 16, "graph": "bigrams", "bigrams": bigrams})
    assert res["n_params"] == models.build_model("sifu", res["config"]).num_params()
    model, tok2, _ = load_model(tmp_path / "ckpt.pt")
    assert isinstance(model, SiFuLM) and tok2.vocab_size == tok.vocab_size
    x = torch.from_numpy(tok.encode(TEXT[:16]))[None]
    again = models.build_model("sifu", res["config"]).eval()
    again.load_state_dict(model.state_dict())
    torch.testing.assert_close(model(x)[0], again(x)[0])
    assert not torch.equal(model(x)[0], models.build_model("sifu", res["config"]).eval()(x)[0])


@pytest.mark.parametrize("bad, match", [
    ({"graph": "bigrams"}, "needs bigrams"),
    ({"graph": "bigrams", "bigrams": [[0, 9]]}, "outside"),
    ({"graph": "bigrams", "bigrams": [[0, 1, 2]]}, "pairs"),
    ({"graph": "dense", "bigrams": [[0, 1]]}, "set graph='bigrams'"),
    ({"graph": "words"}, "graph must be one of"),
    ({"graph": "dense", "d": 0}, "d must be an integer"),
    ({"graph": "dense", "temperature": 0.0}, "temperature"),
    ({"graph": "dense", "pad_id": 7}, "pad_id"),
    ({"graph": "dense", "train_shared": 1}, "train_shared"),
    ({"graph": "dense", "mix_range": 0}, "mix_range"),
])
def test_bad_configs_raise_clear_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        SiFuConfig(**{"vocab_size": 4, **bad})
    with pytest.raises(ValueError, match="unknown SiFuConfig keys"):
        models.make_config("sifu", {"vocab_size": 4, "graph": "dense", "n_layer": 2})


def test_corpus_graph_needs_the_corpus_vocabulary():
    from models.data import tinyshakespeare_path
    if not tinyshakespeare_path().is_file():
        pytest.skip("tiny-shakespeare is not in the data directory")
    with pytest.raises(ValueError, match="vocabulary of 65 characters but vocab_size=12"):
        SiFuLM(SiFuConfig(vocab_size=12))


def test_edge_energy_trace_ranks_the_edges():
    m = _tiny()
    x = torch.tensor([[0, 1, 2, 0, 1]])
    tr = edge_energy_trace(m, x, top=2)
    full = m.eval()(x)[0][0]
    assert tr["energy"].shape == (5, 2)
    torch.testing.assert_close(tr["energy"], full.topk(2, -1).values)       # shared edges tie: compare energies
    torch.testing.assert_close(full.gather(1, tr["target"]), tr["energy"])
    torch.testing.assert_close(tr["prob"], torch.softmax(full, -1).topk(2, -1).values)
    torch.testing.assert_close(tr["chosen_energy"], full[:-1].gather(1, x[0, 1:, None])[:, 0])


def test_edge_energy_plot_is_written(tmp_path):
    from models.sifu import plot_edge_energies
    m = _tiny()
    path = plot_edge_energies(m, torch.tensor([[0, 1, 2, 0, 1]]), lambda ids: "abcd"[ids[0]], tmp_path / "e.png", top=3)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bigram_baseline_learns_the_table_and_decodes():
    m = models.build_model("bigram", {"vocab_size": 3, "init": "zeros"})
    x, y = torch.tensor([[0, 1, 2, 0]]), torch.tensor([[1, 2, 0, 1]])
    opt = m.configure_optimizer(0.1, 0.5)
    for _ in range(50):
        _, loss = m(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    logits, st = m.decoder().prefill(x)
    torch.testing.assert_close(m.decoder().step(torch.tensor([[1]]), st), logits[:, 1])
    assert m.num_params() == 9


def test_harness_fits_the_graph_to_the_text_it_trains_on(tmp_path):
    # the registry's fit_config hook: the graph holds the bigrams of the run's own training ids
    # (held-out preset: the held-out tail's bigrams are left out), and the checkpoint stores it
    from models.train import TrainConfig, load_model, prepare_data, run_config, train_run
    text = TEXT * 3 + "zq"   # "zq" only in the tail: in the held-out split, never in its train part
    for held_out in (False, True):
        tok, train_ids, _ = prepare_data(held_out, text)
        cfg = run_config("sifu", tok.vocab_size, "d16", {"block_size": 16}, train_ids=train_ids)
        pairs, _ = observed_bigrams(train_ids.numpy(), tok.vocab_size)
        assert cfg["graph"] == "bigrams" and cfg["bigrams"] == pairs.tolist()
        z, q = tok.encode("zq").tolist()
        assert [z, q] not in cfg["bigrams"]
    assert run_config("sifu", tok.vocab_size, "d16", {"graph": "dense"}, train_ids=train_ids)["graph"] == "dense"
    res = train_run("sifu", tmp_path, TrainConfig(max_iters=2, batch_size=2, held_out=True), variant="d16",
                    overrides={"block_size": 16}, progress=False, text=text)
    model, _, ck = load_model(tmp_path / "ckpt.pt")
    assert res["config"]["bigrams"] == ck["config"]["bigrams"] == cfg["bigrams"]


def test_accounting_counts_the_edge_products():
    # SiFu's products are einsums over gathered edges, not nn.Linear calls: it reports them itself
    from spiking_attention.accounting import account_model
    m = _tiny(block_size=8)
    B, T, C, d = 2, 8, 4, 3
    rep = account_model(m, torch.randint(0, 4, (B, T)))
    want = B * T * C * (d * d + d) + B * (T - 1) * d * d + B * T * (T + 1) // 2 * d
    assert rep["totals"]["mac"] == want and rep["totals"]["mac_per_token"] == want / (B * T)
