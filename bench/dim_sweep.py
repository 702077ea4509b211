"""Accuracy and time against hypervector dimension (512 .. 16,384 bits).

Language recognition (4-grams, full data; the time is the whole train + test run, the data
read once beforehand) and, where installed, Fashion-MNIST on a stated subset (random
projection; one-pass centroid and averaged perceptron, epochs chosen on held-out training
data).

    PYTHONPATH=. python bench/dim_sweep.py [--quick]   # bench/results/dim_sweep.json + .png
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from hdc import datasets  # noqa: E402
from hdc.io import save_figure  # noqa: E402
from hdc.classifiers import CentroidClassifier, RetrainClassifier  # noqa: E402
from hdc.encoders import NGramEncoder, RandomProjectionEncoder  # noqa: E402

DIMS = [512, 1024, 2048, 4096, 8192, 10_000, 16_384]


def langrec_row(train, labels, texts, dim):
    t0 = time.perf_counter()
    enc = NGramEncoder(n=4, dim=dim, alphabet="abcdefghijklmnopqrstuvwxyz ", unknown="skip", seed=0)
    lines = [ln for lang in sorted(train) for ln in train[lang] if ln]
    ys = [lang for lang in sorted(train) for ln in train[lang] if ln]
    classes, C = enc.class_counters(lines, ys)
    t1 = time.perf_counter()
    acc = CentroidClassifier.from_counters(C, classes, dim).score(enc.transform(texts), np.asarray(labels))
    t2 = time.perf_counter()
    return {"task": "langrec", "dim": dim, "accuracy": acc, "train_s": t1 - t0, "test_s": t2 - t1,
            "seconds": t2 - t0}


def fashion_rows(Xtr, ytr, Xte, yte, dim, epochs):
    t0 = time.perf_counter()
    enc = RandomProjectionEncoder(dim=dim, center=True, seed=0).fit(Xtr)
    Htr, Hte = enc.transform(Xtr), enc.transform(Xte)
    t_enc = time.perf_counter() - t0
    t = time.perf_counter()
    acc_c = CentroidClassifier(dim=dim).fit(Htr, ytr).score(Hte, yte)
    t_c = time.perf_counter() - t
    t = time.perf_counter()
    r = RetrainClassifier(dim=dim, epochs=epochs, seed=0).fit(Htr, ytr)
    acc_r = r.score(Hte, yte)
    t_r = time.perf_counter() - t
    return [{"task": "fashion one-pass", "dim": dim, "accuracy": acc_c, "encode_s": t_enc, "seconds": t_c},
            {"task": "fashion averaged perceptron", "dim": dim, "accuracy": acc_r, "encode_s": t_enc,
             "seconds": t_r, "best_epoch": r.best_epoch_}]


def main(argv=None):
    p = _common.make_parser(__doc__.split("\n")[0])
    p.add_argument("--fashion-train", type=int, default=20_000, help="Fashion-MNIST training subset")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--no-fashion", action="store_true")
    args = _common.parse_args(p, argv)
    dims = DIMS
    rows = []
    res = {"quick": args.quick}
    if datasets.langrec_available():
        train, labels, texts = datasets.load_langrec()
        if args.quick:
            train = {k: v[:2000] for k, v in train.items()}
            texts, labels = texts[::10], labels[::10]
            dims = [512, 2048, 10_000, 16_384]
        res["langrec_n_test"] = len(texts)
        # warm-up (loads the compiled kernels) so the first timed dim does not pay for it
        langrec_row({k: v[:50] for k, v in train.items()}, labels[:50], texts[:50], 512)
        for d in dims:
            rows.append(langrec_row(train, labels, texts, d))
            print(rows[-1])
    else:
        res["langrec"] = f"skipped: data not in {datasets.data_dir()}"
    if not args.no_fashion and datasets.fashion_mnist_available():
        (Xtr, ytr), (Xte, yte) = datasets.load_fashion_mnist()
        n_tr = 3000 if args.quick else args.fashion_train
        n_te = 1000 if args.quick else len(Xte)
        epochs = 2 if args.quick else args.epochs
        res["fashion_subset"] = {"train": n_tr, "test": n_te, "max_epochs": epochs}
        for d in (dims if not args.quick else [512, 2048, 10_000]):
            rows += fashion_rows(Xtr[:n_tr], ytr[:n_tr], Xte[:n_te], yte[:n_te], d, epochs)
            print(rows[-2], rows[-1], sep="\n")
    _common.print_table(rows, ["task", "dim", "accuracy", "encode_s", "train_s", "test_s", "seconds"])

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for task in dict.fromkeys(r["task"] for r in rows):
        rr = [r for r in rows if r["task"] == task]
        a1.plot([r["dim"] for r in rr], [100 * r["accuracy"] for r in rr], "o-", label=task)
        a2.plot([r["dim"] for r in rr], [r["seconds"] + r.get("encode_s", 0.0) for r in rr], "o-", label=task)
    for a in (a1, a2):
        a.set_xscale("log", base=2)
        a.set_xlabel("dim (bits)")
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    a1.set_ylabel("test accuracy (%)")
    a2.set_ylabel("seconds (train + test, incl. encoding)")
    a2.set_yscale("log")
    fig.suptitle("Accuracy and time against hypervector dimension")
    fig.tight_layout()
    stem = "dim_sweep_quick" if args.quick else "dim_sweep"
    png = save_figure(fig, Path(args.out) / f"{stem}.png")
    plt.close(fig)
    res.update({"rows": rows, "plot": png.name})
    print(f"-> {_common.write_json(args.out, stem, res, allow_dirty=args.allow_dirty)}")


if __name__ == "__main__":
    main()
