"""Holographic robustness: accuracy as a growing fraction of each hypervector is damaged.

Information in a hypervector is spread over all its bits, so a vector cut in half should
still be recognised. Trained once (language recognition, 4-grams, D = 10,000; scikit-learn
digits with a retrained random-projection model when the langrec data is absent), then
the test queries are damaged in three ways:

- flip: a random fraction of each query's bits inverted (noise);
- drop: a random fraction of the dimensions erased from queries and classes alike (the
  class counters there set to 0, so the dropped bits carry no vote);
- truncate: only the first fraction of the dims kept (a shorter vector, retrained on
  nothing: the classes are cut the same way).

    PYTHONPATH=. python bench/robustness.py [--quick]   # bench/results/robustness.json + .png
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import hdc  # noqa: E402
from hdc import datasets  # noqa: E402
from hdc.io import save_figure  # noqa: E402
from hdc.classifiers import CentroidClassifier, RetrainClassifier  # noqa: E402
from hdc.encoders import NGramEncoder, RandomProjectionEncoder  # noqa: E402

FLIP = [0.0, 0.05, 0.1, 0.2, 0.3, 0.35, 0.4, 0.45, 0.5]
KEEP = [1.0, 0.75, 0.5, 0.25, 0.1, 0.05, 0.02, 0.01]


def build_langrec(dim, quick):
    train, labels, texts = datasets.load_langrec()
    if quick:
        train = {k: v[:2000] for k, v in train.items()}
        texts, labels = texts[::10], labels[::10]
    enc = NGramEncoder(n=4, dim=dim, alphabet="abcdefghijklmnopqrstuvwxyz ", unknown="skip", seed=0)
    lines = [ln for lang in sorted(train) for ln in train[lang] if ln]
    ys = [lang for lang in sorted(train) for ln in train[lang] if ln]
    classes, C = enc.class_counters(lines, ys)
    return "langrec 4-grams", C, classes, enc.transform(texts), np.asarray(labels)


def build_digits(dim, quick):
    from sklearn.model_selection import train_test_split

    X, y = datasets.load_digits()
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    enc = RandomProjectionEncoder(dim=dim, center=True, seed=0).fit(Xtr)
    clf = RetrainClassifier(dim=dim, epochs=10).fit(enc.transform(Xtr), ytr)
    return "digits random projection + averaged perceptron", clf.counters_, clf.classes_, enc.transform(Xte), yte


def accuracy(C, classes, Q, y, dim):
    return CentroidClassifier.from_counters(C, classes, dim).score(Q, y)


def main(argv=None):
    p = _common.make_parser(__doc__.split("\n")[0])
    p.add_argument("--dim", type=int, default=10_000)
    p.add_argument("--data", choices=("auto", "langrec", "digits"), default="auto")
    p.add_argument("--seed", type=int, default=0)
    args = _common.parse_args(p, argv)
    data = args.data
    if data == "auto":
        data = "langrec" if datasets.langrec_available() else "digits"
    D = args.dim
    t0 = time.perf_counter()
    name, C, classes, Q, y = (build_langrec if data == "langrec" else build_digits)(D, args.quick)
    rng = np.random.default_rng(args.seed)
    bits = hdc.to_bool(Q, D)  # (m, D)
    rows = []
    for f in FLIP:
        mask = rng.random(bits.shape) < f
        acc = accuracy(C, classes, hdc.from_bool(bits ^ mask), y, D)
        rows.append({"damage": "flip", "fraction": f, "accuracy": acc})
    for keep in KEEP:
        kept = rng.random(D) < keep
        acc = accuracy(C * kept[None, :], classes, Q, y, D)
        rows.append({"damage": "drop", "fraction": 1 - keep, "accuracy": acc})
    for keep in KEEP:
        d = max(1, int(round(keep * D)))
        acc = accuracy(np.ascontiguousarray(C[:, :d]), classes, hdc.from_bool(bits[:, :d]), y, d)
        rows.append({"damage": "truncate", "fraction": 1 - keep, "accuracy": acc, "dim": d})
    _common.print_table(rows, ["damage", "fraction", "accuracy", "dim"])

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for dmg, style in (("flip", "o-"), ("drop", "s-"), ("truncate", "^--")):
        r = [x for x in rows if x["damage"] == dmg]
        ax.plot([x["fraction"] for x in r], [100 * x["accuracy"] for x in r], style,
                label={"flip": "bits flipped (query noise)", "drop": "dims erased at random",
                       "truncate": "vector truncated to first (1-f) D bits"}[dmg])
    ax.axhline(100 / len(classes), color="grey", ls=":", label=f"chance ({100 / len(classes):.1f}%)")
    ax.set_xlabel("fraction of the hypervector damaged")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Holographic robustness: {name}, D={D}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    stem = "robustness_quick" if args.quick else "robustness"
    png = save_figure(fig, Path(args.out) / f"{stem}.png")
    plt.close(fig)
    half = next(x for x in rows if x["damage"] == "truncate" and x["fraction"] == 0.5)["accuracy"]
    res = {"data": name, "dim": D, "n_test": len(y), "rows": rows, "truncated_half_accuracy": half,
           "full_accuracy": rows[0]["accuracy"], "seconds": time.perf_counter() - t0, "plot": png.name,
           "quick": args.quick}
    print(f"full {rows[0]['accuracy']:.4f}, cut in half {half:.4f} -> {_common.write_json(args.out, stem, res, allow_dirty=args.allow_dirty)}")


if __name__ == "__main__":
    main()
