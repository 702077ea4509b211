"""Accounting: operation counts from a real forward pass, energy estimate, JSON, plots."""
import json

import pytest
import torch
from torch import nn

from spiking_attention.accounting import ENERGY_PRESETS, account_model, energy_estimate, write_report
from spiking_attention.attention import SpikingKWTAAttention, TopKSoftmaxAttention

torch.set_num_threads(1)


class Tiny(nn.Module):
    """attention -> a Linear fed with binary spikes -> a Linear fed with real values."""

    def __init__(self, att):
        super().__init__()
        self.att = att
        self.spk = nn.Linear(32, 5)
        self.head = nn.Linear(32, 7)

    def forward(self, x):
        h = x + self.att(x)
        return self.head(h) + self.spk((h > 0).float()).sum() * 0


def test_counts_match_hand_computed_values():
    torch.manual_seed(0)
    att = SpikingKWTAAttention(32, 4, 8, 3, max_seq_len=16)
    model = Tiny(att)
    x = torch.randn(2, 10, 32)
    rep = account_model(model, x)
    B, T, nh, hs, cb, k = 2, 10, 4, 8, 8, 3
    n_causal = B * nh * T * (T + 1) // 2
    n_win = B * nh * sum(min(k, i + 1) for i in range(T))
    lay = rep["layers"][0]
    core = lay["core_ops"]
    assert lay["attended_per_query"] == pytest.approx(n_win / (B * nh * T))
    assert lay["attn_density"] == pytest.approx(n_win / n_causal)
    assert core["value_mac"] == n_win * hs
    assert core["select_ac"] == n_causal
    assert core["score_ac"] == pytest.approx(lay["q_firing_rate"] * n_causal * cb)
    assert core["packed_word_ops"] == n_causal * 1
    lin = rep["linear"]
    rows = B * T
    for name in ("att.q_proj", "att.k_proj", "att.v_proj", "att.c_proj"):
        assert lin[name]["mac"] == rows * 32 * 32 and lin[name]["ac"] == 0
    assert lin["head"]["mac"] == rows * 32 * 7
    # the binary-input layer: accumulates only, one per spike per output
    with torch.no_grad():
        h = x + att(x)
    nnz = int((h > 0).sum())
    assert lin["spk"]["mac"] == 0 and lin["spk"]["ac"] == nnz * 5
    assert lin["spk"]["input_rate"] == pytest.approx(nnz / h.numel())
    tot = rep["totals"]
    assert tot["mac"] == pytest.approx(sum(r["mac"] for r in lin.values()) + core["mac"])
    assert tot["ac_sops"] == pytest.approx(nnz * 5 + core["ac"])
    e = tot["energy_estimate_pJ"]
    assert e["fp32"] == pytest.approx(4.6 * tot["mac"] + 0.9 * tot["ac_sops"])


@pytest.mark.parametrize("code_bits, levels, score, words_per_pair", [
    (8, 2, "hamming", 1),          # binary: one word per pair
    (64, 2, "hamming", 1),
    (65, 2, "hamming", 2),
    (64, 4, "hamming", 9),         # kernel: (2^2 - 1)^2 x 64 expanded bits = 9 words
    (64, 8, "hamming", 49),        # (2^3 - 1)^2 x 64 bits = 49 words
    (32, 4, "overlap", 5),         # 9 x 32 = 288 bits = 5 words
    (64, 3, "hamming", 4),         # not a power of 2: plane-pair matrix path, P^2 = 4 pairs of 1 word
])
def test_packed_word_ops_count_the_words_the_packed_path_reads(code_bits, levels, score, words_per_pair):
    """A graded layer's packed_word_ops follows the path its packed form takes (expanded codes
    through the kernel, or every plane pair), and equals the words that form stores per code."""
    torch.manual_seed(0)
    att = SpikingKWTAAttention(32, 2, code_bits, 3, max_seq_len=16, levels=levels, score=score)
    rep = account_model(Tiny(att), torch.randn(2, 10, 32))
    n_causal = 2 * 2 * 10 * 11 // 2
    assert rep["layers"][0]["core_ops"]["packed_word_ops"] == n_causal * words_per_pair
    packed = att.packed()
    if packed.method == "kernel":      # the kernel reads one stored key code per pair
        assert packed.n_words == words_per_pair
    assert "ESTIMATE" in rep["energy_note"]


def test_dense_style_attention_is_counted_as_macs():
    torch.manual_seed(0)
    att = TopKSoftmaxAttention(32, 4, 3, max_seq_len=16)
    rep = account_model(nn.Sequential(att), torch.randn(1, 6, 32))
    core = rep["layers"][0]["core_ops"]
    assert core["score_mac"] == 4 * 21 * 8
    assert core["value_mac"] == 4 * sum(min(3, i + 1) for i in range(6)) * 8
    assert core["ac"] == 0


def test_energy_presets_and_report_roundtrip(tmp_path):
    assert ENERGY_PRESETS["fp32"] == {"mac_pJ": 4.6, "ac_pJ": 0.9}
    assert ENERGY_PRESETS["fp16"] == {"mac_pJ": 1.5, "ac_pJ": 0.4}
    assert ENERGY_PRESETS["int8"] == {"mac_pJ": 0.23, "ac_pJ": 0.03}
    e = energy_estimate(10, 100)
    assert e["fp32"] == pytest.approx(136.0) and e["int8"] == pytest.approx(5.3)
    torch.manual_seed(0)
    rep = account_model(Tiny(SpikingKWTAAttention(32, 4, 8, 3, max_seq_len=16)), torch.randn(1, 5, 32))
    p = write_report(tmp_path / "sub" / "acc.json", rep)
    assert json.loads(p.read_text())["totals"]["mac"] == rep["totals"]["mac"]
    assert not list((tmp_path / "sub").glob(".*tmp"))


def test_plots_write_pngs(tmp_path):
    from spiking_attention.plots import attention_map, plot_model, record_run, spike_raster
    torch.manual_seed(0)
    model = Tiny(SpikingKWTAAttention(32, 4, 8, 3, max_seq_len=16))
    paths = plot_model(model, torch.randn(1, 12, 32), tmp_path, prefix="t")
    assert set(paths) == {"raster", "attention", "rates"}
    for p in paths.values():
        assert p.exists() and p.read_bytes()[:4] == b"\x89PNG"
    assert model.att.record is False  # restored
    rep, paths2 = record_run(model, torch.randn(1, 12, 32), tmp_path / "run", prefix="r")
    assert json.loads(paths2["accounting"].read_text())["totals"]["mac"] == rep["totals"]["mac"]
    assert paths2["raster"].exists()
    with pytest.raises(ValueError, match="spike_raster"):
        spike_raster(torch.zeros(3), tmp_path / "x.png")
    with pytest.raises(ValueError, match="attention_map"):
        attention_map(torch.zeros(3), tmp_path / "y.png")


@pytest.mark.parametrize("family", ["spiking_rwkv", "nord", "hybrid"])
def test_mean_firing_rate_covers_every_spiking_layer(family):
    # LIF output layers report ``firing_rate`` (not q/k rates): the model's mean must include them
    from models import build_model
    torch.manual_seed(0)
    m = build_model(family, {"vocab_size": 11, "block_size": 8, "n_layer": 2, "n_head": 2, "n_embd": 16})
    rep = account_model(m, torch.randint(0, 11, (2, 8)))
    rates = [v for lay in rep["layers"] for k, v in lay.items()
             if k.endswith("firing_rate") and isinstance(v, float)]
    if family == "hybrid":   # graded spike counts: sparsity is reported, there is no binary firing rate
        assert any("spike_sparsity" in lay for lay in rep["layers"])
        assert rep["totals"]["mean_firing_rate"] is None or rates
    else:
        assert rates, rep["layers"]
        assert rep["totals"]["mean_firing_rate"] == pytest.approx(sum(rates) / len(rates))
