"""Inference speed: packed-bit k-WTA attention against dense float attention of the same layer.

One attention layer of the nanoGPT CPU configuration (width 128, 4 heads, 32-bit codes per
head, k = 8) at contexts 256 .. 8,192, in one run:

* **prefill**: the whole causal sequence. Dense: ``F.scaled_dot_product_attention(is_causal)``
  on float q, k, v (torch's fused kernel). Packed: pack the binary codes, causal Hamming
  top-k (:func:`hdc.causal_topk`, the backend registry's kernel), softmax over the k
  winners, aggregate their values. Beside it, where they fit in memory: the plain matrix
  method (:func:`hdc.hamming_matrix` + NumPy selection) and the torch k-WTA training path
  (integer scores by matmul, exact k-WTA mask, softmax).
* **decode**: one new query against ``T`` cached keys. Dense: SDPA of one query row. Packed:
  the backend's causal top-k over the cached packed keys, softmax over k, k value rows.

Only the attention core is timed: the Q/K/V/output projections are the same dense matrix
products in both paths. Ratios are dense time / packed time (> 1: packed is faster), each
pair measured back to back in the same process, same thread count (default 1) for torch and
hdc; medians, with calls under ~20 ms looped inside each timed sample. Weights are random (timing does not depend on them except through silent codes, of
which random weights produce none); the packed output is checked against the torch path.

    python bench/lm_inference.py [--quick] [--threads 1] [--code-bits 32 256]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import hdc  # noqa: E402
from bench._common import make_parser, parse_args, print_table, time_it, write_json  # noqa: E402
from spiking_attention.attention import SpikingKWTAAttention, allowed_keys  # noqa: E402
from spiking_attention.kwta import kwta_mask  # noqa: E402
from hdc.io import save_figure  # noqa: E402
from hdc.provenance import repo_relative  # noqa: E402
from spiking_attention.packed import PackedSpikingAttention, pack_codes  # noqa: E402

NAME = "lm_inference"


def _repeats(t_sec: float, quick: bool) -> int:
    """Fewer repeats for slow cases, so the whole sweep stays within its budget."""
    if t_sec > 1.0:
        return 1 if quick else 3
    if t_sec > 0.1:
        return 3
    return 5 if quick else 9


def _timed(fn, quick: bool) -> dict:
    """Median seconds per call. Calls shorter than ~20 ms are looped inside each timed sample, so
    microsecond-scale decode steps are not dominated by timer jitter and scheduler noise."""
    t0 = time.perf_counter()
    fn()  # warm-up (JIT, caches) and a first estimate
    first = time.perf_counter() - t0
    inner = max(1, min(2000, int(0.02 / max(first, 1e-7))))
    if inner > 1:
        def loop():
            for _ in range(inner):
                fn()
        r = time_it(loop, repeats=_repeats(first * inner, quick), warmup=1)
        return {k: (v / inner if k.endswith("_s") else v) for k, v in r.items()} | {"inner_loops": inner}
    return time_it(fn, repeats=_repeats(first, quick), warmup=0)


def _kernel_calls() -> int | None:
    """Calls of the C causal_topk kernel so far (counted inside the kernel), None off the C backend."""
    if hdc.get_backend_name() != "c":
        return None
    return hdc.backends.load_backend("c").call_count("causal_topk")


def bench_context(T: int, *, C: int, nh: int, cb: int, k: int, quick: bool, torch_kwta_max: int,
                  threads: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    att = SpikingKWTAAttention(C, nh, cb, k, max_seq_len=T).eval()
    patt = PackedSpikingAttention(att, threads=threads)
    hs = C // nh
    x = torch.randn(1, T, C, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        q, kc, v, _ = att.codes(x)                                   # (1, nh, T, cb), v (1, nh, T, hs)
        # dense float attention of the same layer: real-valued q, k of the head size
        qf = (x @ torch.randn(C, C) / C ** 0.5).view(1, T, nh, hs).transpose(1, 2).contiguous()
        kf = (x @ torch.randn(C, C) / C ** 0.5).view(1, T, nh, hs).transpose(1, 2).contiguous()
    v_np = v.float().numpy()
    row = {"T": T, "code_bits": cb}

    # ---------------- prefill
    def dense_prefill():
        with torch.no_grad():
            return F.scaled_dot_product_attention(qf, kf, v, is_causal=True)

    def packed_prefill():
        return patt.core_from_codes(pack_codes(q), pack_codes(kc), v_np)[0]

    patt_matrix = PackedSpikingAttention(att, threads=threads, method="matrix")

    def packed_prefill_matrix():
        return patt_matrix.core_from_codes(pack_codes(q), pack_codes(kc), v_np)[0]

    def torch_kwta_prefill():
        with torch.no_grad():
            s = att.integer_scores(q, kc)
            win = kwta_mask(s, att.k, allowed_keys(att, T, T))
            return att.aggregate(s, win, v)

    calls0 = _kernel_calls()
    r_d = _timed(dense_prefill, quick)
    r_p = _timed(packed_prefill, quick)
    if calls0 is not None and _kernel_calls() == calls0:
        raise RuntimeError("the C causal_topk kernel did not run")
    row.update(prefill_dense_s=r_d["median_s"], prefill_packed_s=r_p["median_s"],
               prefill_speedup=r_d["median_s"] / r_p["median_s"])
    if T <= torch_kwta_max:
        r_m = _timed(packed_prefill_matrix, quick)
        row["prefill_packed_matrix_s"] = r_m["median_s"]
        if not np.allclose(packed_prefill(), packed_prefill_matrix(), atol=1e-6):
            raise RuntimeError("the kernel and matrix methods disagree")
        r_t = _timed(torch_kwta_prefill, quick)
        row["prefill_torch_kwta_s"] = r_t["median_s"]
        y_ref = torch_kwta_prefill().numpy()
        row["packed_vs_torch_max_abs_diff"] = float(np.abs(packed_prefill() - y_ref).max())

    # ---------------- decode: the last token's query against all T keys
    cache = patt.new_cache(T)
    patt.append(cache, pack_codes(kc[0]), v_np[0])
    q_last = pack_codes(q[0, :, -1])                                  # (nh, W)
    qf_last, kf_all, v_all = qf[:, :, -1:], kf, v

    def dense_decode():
        with torch.no_grad():
            return F.scaled_dot_product_attention(qf_last, kf_all, v_all)

    def packed_decode():
        return patt.step_core(q_last, cache)

    r_d = _timed(dense_decode, quick)
    r_p = _timed(packed_decode, quick)
    row.update(decode_dense_s=r_d["median_s"], decode_packed_s=r_p["median_s"],
               decode_speedup=r_d["median_s"] / r_p["median_s"])
    if T <= torch_kwta_max:
        y_full = torch_kwta_prefill()[0, :, -1].numpy()
        row["decode_max_abs_diff"] = float(np.abs(packed_decode() - y_full).max())
    return row


@torch.no_grad()
def trained_check(ckpt: Path, *, n_seqs: int = 16, n_tie_seqs: int = 256) -> dict:
    """A trained SpikingTransformerLM on validation text: packed path vs torch path.

    Reports the largest logit difference, and per layer how many (query, head) rows chose a
    different set of winners (the claim is: none), plus firing rates and silent codes. Also the
    tie rule's weight: validation nats/char of the first ``n_tie_seqs`` non-overlapping chunks
    under the trained rule (recent key wins) and with ties flipped to the older key (no retraining).
    """
    from models.train import load_model, prepare_data

    model, tok, meta = load_model(ckpt)
    _, _, val = prepare_data()
    T = model.config.block_size
    idx = torch.stack([val[i * T:(i + 1) * T] for i in range(n_seqs)])   # (n_seqs, T)
    layer_in = {}
    mods = [m for m in model.modules() if isinstance(m, SpikingKWTAAttention)]
    if not mods:
        raise ValueError(f"{ckpt} holds no spiking attention layer")
    hooks = [m.register_forward_hook(lambda mod, a, o, i=i: layer_in.__setitem__(i, a[0]))
             for i, m in enumerate(mods)]
    ref, _ = model(idx)
    for h in hooks:
        h.remove()
    out, _ = model.packed()(idx)
    layers = []
    for i, m in enumerate(mods):
        x = layer_in[i]
        q, kc, _, _ = m.codes(x)
        win_t = kwta_mask(m.integer_scores(q, kc), m.k, allowed_keys(m, T, T))  # (B, nh, T, T)
        patt = PackedSpikingAttention(m)
        diff_rows = 0
        for n_bh, (w_idx, valid) in enumerate(patt.winners(x)):
            b, h = divmod(n_bh, m.n_head)
            mask = np.zeros((T, T), bool)
            rows = np.broadcast_to(np.arange(T)[:, None], w_idx.shape)
            mask[rows[valid], w_idx[valid]] = True
            diff_rows += int((mask != win_t[b, h].numpy()).any(1).sum())
        m(x)  # this layer's statistics on this input (stats protocol)
        st = m.layer_stats()
        layers.append({"layer": i, "rows": int(idx.shape[0] * m.n_head * T), "rows_with_different_winners": diff_rows,
                       "q_firing_rate": st["q_firing_rate"], "k_firing_rate": st["k_firing_rate"],
                       "q_silent_token_frac": st["q_silent_token_frac"],
                       "k_silent_token_frac": st["k_silent_token_frac"], "tie_at_cut_frac": st["tie_at_cut_frac"]})
    # tie-rule sensitivity on more text (torch path; the packed path implements "recent" only)
    n_tie = min(n_tie_seqs, (len(val) - 1) // T)
    xs = torch.stack([val[i * T:(i + 1) * T] for i in range(n_tie)])
    ys = torch.stack([val[i * T + 1:(i + 1) * T + 1] for i in range(n_tie)])
    tie = {}
    for rule in ("recent", "older"):
        for m in mods:
            m.tie_rule = rule
        losses = [model(xs[i:i + 32], ys[i:i + 32])[1].item() * len(xs[i:i + 32]) for i in range(0, n_tie, 32)]
        tie[rule] = sum(losses) / n_tie
    for m in mods:
        m.tie_rule = "recent"
    return {"checkpoint": repo_relative(ckpt), "family": meta["family"], "variant": meta.get("variant"),
            "tokens": int(idx.numel()),
            "max_abs_logit_diff": float((out - ref).abs().max()),
            "argmax_agreement": float((out.argmax(-1) == ref.argmax(-1)).float().mean()), "layers": layers,
            "tie_rule_val_nats_per_char": {**tie, "chars": n_tie * T,
                                           "note": "first chunks of the validation split; trained with 'recent'"}}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    Ts_all = sorted({r["T"] for r in rows})
    for cb in sorted({r["code_bits"] for r in rows}):
        rs = [r for r in rows if r["code_bits"] == cb]
        Ts = [r["T"] for r in rs]
        axes[0].plot(Ts, [r["prefill_speedup"] for r in rs], "o-", label=f"prefill, {cb}-bit codes")
        axes[0].plot(Ts, [r["decode_speedup"] for r in rs], "s--", label=f"decode, {cb}-bit codes")
        axes[1].plot(Ts, [r["prefill_packed_s"] * 1e3 for r in rs], "o:", label=f"packed prefill ({cb}-bit)")
        axes[1].plot(Ts, [r["decode_packed_s"] * 1e3 for r in rs], "s:", label=f"packed decode ({cb}-bit)")
    first = [r for r in rows if r["code_bits"] == rows[0]["code_bits"]]
    axes[1].plot([r["T"] for r in first], [r["prefill_dense_s"] * 1e3 for r in first], "ko-", label="dense prefill")
    axes[1].plot([r["T"] for r in first], [r["decode_dense_s"] * 1e3 for r in first], "ks-", label="dense decode")
    axes[0].axhline(1.0, color="k", lw=0.8)
    axes[0].set(xscale="log", yscale="log", xlabel="context T", ylabel="dense time / packed time",
                title="packed k-WTA vs dense float attention (>1: packed faster)")
    axes[1].set(xscale="log", yscale="log", xlabel="context T", ylabel="ms per call (one layer, 1 thread)",
                title="attention core time")
    for ax in axes:
        ax.legend(fontsize=7)
        ax.set_xticks(Ts_all, [str(t) for t in Ts_all])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    axes[0].yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[0].set_yticks([0.1, 0.2, 0.5, 1, 2, 5], ["0.1", "0.2", "0.5", "1", "2", "5"])
    ratios = [r[k] for r in rows for k in ("prefill_speedup", "decode_speedup")]
    lo, hi = min(ratios), max(ratios)
    axes[0].set_ylim(lo / 1.3, hi * 1.3)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def main(argv=None) -> dict:
    p = make_parser(__doc__.split("\n")[0])
    p.add_argument("--contexts", type=int, nargs="+", default=None)
    p.add_argument("--code-bits", type=int, nargs="+", default=None)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("-k", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="threads for torch and hdc alike")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="a trained SpikingTransformerLM checkpoint: check packed == torch on validation text")
    args = parse_args(p, argv)
    contexts = args.contexts or ([256, 1024, 2048] if args.quick else [256, 512, 1024, 2048, 4096, 8192])
    code_bits = args.code_bits or ([32] if args.quick else [32, 256])
    torch.set_num_threads(args.threads)
    hdc.set_num_threads(args.threads)
    torch_kwta_max = 1024 if args.quick else 2048
    rows = []
    t_start = time.perf_counter()
    for cb in code_bits:
        for T in contexts:
            r = bench_context(T, C=args.d_model, nh=args.n_head, cb=cb, k=args.k, quick=args.quick,
                              torch_kwta_max=torch_kwta_max, threads=args.threads)
            rows.append(r)
            print(f"  T={T:5d} cb={cb:4d}  prefill x{r['prefill_speedup']:.2f}  decode x{r['decode_speedup']:.2f}",
                  flush=True)
    print_table(rows, ["T", "code_bits", "prefill_dense_s", "prefill_packed_s", "prefill_packed_matrix_s",
                       "prefill_torch_kwta_s", "prefill_speedup", "decode_dense_s", "decode_packed_s", "decode_speedup",
                       "packed_vs_torch_max_abs_diff"])
    wins_pre = [(r["T"], r["code_bits"]) for r in rows if r["prefill_speedup"] > 1]
    wins_dec = [(r["T"], r["code_bits"]) for r in rows if r["decode_speedup"] > 1]
    summary = {"packed_wins_prefill_at": wins_pre, "packed_wins_decode_at": wins_dec}
    print("packed faster (prefill) at (T, code_bits):", wins_pre or "nowhere")
    print("packed faster (decode)  at (T, code_bits):", wins_dec or "nowhere")
    trained = None
    if args.checkpoint is not None:
        trained = trained_check(args.checkpoint)
        print(f"trained checkpoint {args.checkpoint}: max |logit diff| {trained['max_abs_logit_diff']:.2e}, "
              f"rows with different winners per layer "
              f"{[x['rows_with_different_winners'] for x in trained['layers']]}; val nats/char with ties to the "
              f"recent key {trained['tie_rule_val_nats_per_char']['recent']:.4f}, to the older key "
              f"{trained['tie_rule_val_nats_per_char']['older']:.4f}")
    out = Path(args.out)
    png = out / f"{NAME}.png"
    plot(rows, png)
    payload = {
        "config": {"d_model": args.d_model, "n_head": args.n_head, "k": args.k, "contexts": contexts,
                   "code_bits": code_bits, "threads": args.threads, "quick": args.quick,
                   "hdc_backend": hdc.get_backend_name(),
                   "timed": "attention core only (projections identical in both paths); median seconds",
                   "dense": "torch F.scaled_dot_product_attention, float32, causal (prefill) / one row (decode)",
                   "packed": "pack codes + hdc.causal_topk (matrix method beside it where it fits) + softmax "
                             "over k + k value rows; decode: the backend's causal_topk over the cached keys"},
        "rows": rows, "summary": summary, "trained_check": trained, "plot": repo_relative(png),
        "wall_s": time.perf_counter() - t_start,
    }
    path = write_json(out, NAME, payload, allow_dirty=args.allow_dirty)
    print(f"wrote {path} and {png}")
    return payload


if __name__ == "__main__":
    main()
