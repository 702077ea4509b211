"""Generation speed of whole models: prompt processing and per-token decoding against context length.

Every registered family whose model offers the incremental decoding protocol
(``model.decoder()`` -> ``prefill(idx (1, T))``, ``step(token (1, 1), state)``) is timed at the
nanoGPT CPU width (4 layers, 4 heads, 128 wide), untrained (speed does not depend on the
weights, except through how often spiking codes fire: untrained codes fire about half their
bits, as trained ones do), in one run and one process, at each context length and thread count:

* **prefill**: the whole prompt of T tokens, tokens/s;
* **decode**: one new token after T cached tokens (the mean over ``--steps`` steps), tokens/s,
  and the ratio to the dense twin (``gpt/dense`` with its own float KV cache) at the same
  context and threads (> 1: faster than dense).

The spiking variants decode through their packed form: packed keys in the cache and the hdc
causal top-k (the C kernel's call counter is checked to have moved). Real-valued top-k
variants form the T x T scores at prefill, so their prefill is skipped above ``--max-dense-prefill``.

    python bench/lm_generate.py [--quick] [--families gpt,spiking_kwta] [--contexts 1024 8192]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import hdc  # noqa: E402
from bench._common import make_parser, parse_args, print_table, write_json  # noqa: E402
from hdc.io import save_figure  # noqa: E402
from hdc.provenance import repo_relative  # noqa: E402
from models import FAMILIES  # noqa: E402
from models.train import import_plugins  # noqa: E402

NAME = "lm_generate"
SHAPE = {"vocab_size": 65, "n_layer": 4, "n_head": 4, "n_embd": 128}


def _variants(families: list[str] | None) -> list[tuple[str, str]]:
    out = []
    for name, fam in FAMILIES.items():
        if families and name not in families:
            continue
        out += [(name, v) for v in fam.variants]
    return out


def _build(family: str, variant: str, block_size: int):
    """The untrained model at the bench's shape, or a string saying why it cannot decode."""
    fam = FAMILIES[family]
    values = fam.variant_config(variant, **fam.applicable({**SHAPE, "block_size": block_size}))
    torch.manual_seed(0)
    model = fam.build(values).eval()
    if not hasattr(model, "decoder"):
        return "no decoder()"
    try:
        model.decoder()
    except ValueError as exc:   # a trunk whose layers lack the incremental form says so
        return f"no decoder: {exc}"
    return model


def _c_calls() -> int | None:
    if hdc.get_backend_name() != "c":
        return None
    return hdc.backends.load_backend("c").call_count("causal_topk")


@torch.no_grad()
def time_one(model, T: int, steps: int, *, prefill: bool) -> dict:
    """Prefill T tokens, then ``steps`` decode steps; seconds of each."""
    dec = model.decoder()
    idx = torch.randint(0, SHAPE["vocab_size"], (1, T + steps), generator=torch.Generator().manual_seed(T))
    row = {}
    if prefill:   # a warm-up on a short prompt first (JIT, allocator)
        dec.prefill(idx[:, :8])
    t0 = time.perf_counter()
    _, state = dec.prefill(idx[:, :T])
    t_pre = time.perf_counter() - t0
    if prefill:
        row.update(prefill_s=t_pre, prefill_tok_s=T / t_pre)
    dec.step(idx[:, T:T + 1], state)   # warm-up step
    t0 = time.perf_counter()
    for t in range(T + 1, T + steps):
        dec.step(idx[:, t:t + 1], state)
    dt = (time.perf_counter() - t0) / (steps - 1)
    row.update(decode_ms_per_token=dt * 1e3, decode_tok_s=1.0 / dt)
    return row


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threads = sorted({r["threads"] for r in rows})
    fig, axes = plt.subplots(1, len(threads), figsize=(5.5 * len(threads), 4), squeeze=False)
    for ax, th in zip(axes[0], threads):
        for name in dict.fromkeys(r["name"] for r in rows):
            rs = [r for r in rows if r["name"] == name and r["threads"] == th]
            ax.plot([r["T"] for r in rs], [r["decode_ms_per_token"] for r in rs], "o-", label=name)
        ax.set(xscale="log", yscale="log", xlabel="context (tokens already cached)",
               ylabel="ms per generated token (whole model)", title=f"decoding, {th} thread(s)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def main(argv=None) -> dict:
    p = make_parser(__doc__.split("\n")[0])
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE")
    p.add_argument("--families", default=None, help="comma-separated families (default: all with a decoder)")
    p.add_argument("--variants", default=None, help="comma-separated family/variant names (default: all)")
    p.add_argument("--contexts", type=int, nargs="+", default=None)
    p.add_argument("--threads", type=int, nargs="+", default=None)
    p.add_argument("--steps", type=int, default=None, help="decode steps timed per context")
    p.add_argument("--max-dense-prefill", type=int, default=4096,
                   help="largest context at which variants that form T x T float scores run prefill")
    args = parse_args(p, argv)
    import_plugins(args.imports)
    contexts = args.contexts or ([256, 1024, 2048] if args.quick else [256, 1024, 2048, 4096, 8192])
    threads = args.threads or ([1] if args.quick else [1, 2])
    steps = args.steps or (8 if args.quick else 24)
    families = args.families.split(",") if args.families else None
    names = _variants(families)
    if args.variants:
        keep = set(args.variants.split(","))
        names = [nv for nv in names if f"{nv[0]}/{nv[1]}" in keep]
    block = max(contexts) + steps + 1
    rows, skipped = [], []
    t_start = time.perf_counter()
    for family, variant in names:
        model = _build(family, variant, block)
        if isinstance(model, str):
            skipped.append(f"{family}/{variant}: {model}")
            continue
        scores_t2 = (family == "gpt" and model.config.attention == "topk")
        for th in threads:
            torch.set_num_threads(th)
            hdc.set_num_threads(th)
            for T in contexts:
                c0 = _c_calls()
                r = time_one(model, T, steps, prefill=not (scores_t2 and T > args.max_dense_prefill))
                moved = None if c0 is None else _c_calls() > c0
                rows.append({"name": f"{family}/{variant}", "family": family, "variant": variant, "T": T,
                             "threads": th, "hdc_causal_topk_ran": moved, **r})
                print(f"  {family}/{variant:10s} T={T:5d} threads={th}  decode {r['decode_ms_per_token']:.3f} "
                      f"ms/token" + (f", prefill {r['prefill_tok_s']:.0f} tok/s" if "prefill_tok_s" in r else ""),
                      flush=True)
    dense = {(r["T"], r["threads"]): r for r in rows if r["name"] == "gpt/dense"}
    for r in rows:
        d = dense.get((r["T"], r["threads"]))
        if d is not None:
            r["decode_speedup_vs_dense"] = d["decode_ms_per_token"] / r["decode_ms_per_token"]
            if "prefill_s" in r and "prefill_s" in d:
                r["prefill_speedup_vs_dense"] = d["prefill_s"] / r["prefill_s"]
    print_table(rows, ["name", "T", "threads", "prefill_tok_s", "decode_ms_per_token", "decode_tok_s",
                       "decode_speedup_vs_dense", "prefill_speedup_vs_dense", "hdc_causal_topk_ran"])
    out = Path(args.out)
    png = out / f"{NAME}.png"
    plot(rows, png)
    payload = {
        "config": {**SHAPE, "contexts": contexts, "threads": threads, "decode_steps": steps, "quick": args.quick,
                   "hdc_backend": hdc.get_backend_name(), "weights": "untrained (seed 0)",
                   "timed": "whole model: embeddings, every block, head; batch 1; median-free mean over steps"},
        "rows": rows, "skipped": skipped, "plot": repo_relative(png), "wall_s": time.perf_counter() - t_start,
    }
    path = write_json(out, NAME, payload, allow_dirty=args.allow_dirty)
    print(f"wrote {path} and {png}")
    return payload


if __name__ == "__main__":
    main()
