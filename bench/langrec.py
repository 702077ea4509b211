"""Language recognition (21 European languages) with letter n-gram hypervectors.

Train on the 22 training texts of ../shared/data/langrec, test on all 21,000 Europarl
sentences. Each class is the integer bipolar sum of the n-grams of its training text, each
distinct n-gram weighted by its number of occurrences (``count``, the classic model) or by
``round(16 sqrt(count))`` (``sqrt``, a sublinear term weight); each test sentence is the
packed majority of its n-grams, scored by cosine against the integer class counters through
bit-plane popcounts (hdc.hamming_matrix / hdc.popcount). The timed run is the whole job:
read (and SHA-256 check) the files, encode and train, encode and classify the 21,000
sentences.

Choices (the weighting, the ensemble's members) are made before the timed run on held-out
TRAINING data: the last 10% of each language's training lines (every 5th of
them scored), the models trained on the first 90%. The test sentences are never looked at.

Also: a trigram row, an ensemble row (models of several n and seeds, cosine scores summed),
and torchhd's MAP and BSC models beside ours on a stated subset.

    PYTHONPATH=. python bench/langrec.py            # full run, writes bench/results/langrec.json + .png
    PYTHONPATH=. python bench/langrec.py --quick    # subset, < 40 s
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import _torchhd_runs  # noqa: E402

import hdc  # noqa: E402
from hdc import datasets  # noqa: E402
from hdc.io import save_figure  # noqa: E402
from hdc.classifiers import CentroidClassifier, cosine_scores  # noqa: E402
from hdc.encoders import NGramEncoder  # noqa: E402

ALPHABET = "abcdefghijklmnopqrstuvwxyz "


def _subset(train, labels, texts, train_lines, test_per_lang):
    if train_lines is not None:
        train = {k: v[:train_lines] for k, v in train.items()}
    if test_per_lang is not None:
        keep, seen = [], {}
        for i, y in enumerate(labels):
            if seen.get(y, 0) < test_per_lang:
                keep.append(i)
                seen[y] = seen.get(y, 0) + 1
        labels = [labels[i] for i in keep]
        texts = [texts[i] for i in keep]
    return train, labels, texts


def train_model(train, *, dim, n, seed, weight="count"):
    """Fit one n-gram model: (encoder, classifier)."""
    enc = NGramEncoder(n=n, dim=dim, alphabet=ALPHABET, unknown="skip", seed=seed)
    langs = sorted(train)
    lines = [line for lang in langs for line in train[lang] if line]
    ys = [lang for lang in langs for line in train[lang] if line]
    classes, counters = enc.class_counters(lines, ys, weight=weight)
    return enc, CentroidClassifier.from_counters(counters, classes, dim)


def model_scores(train, texts, *, dim, n, seed, weight):
    """Cosine scores (m, K) of one model, and its classes."""
    enc, clf = train_model(train, dim=dim, n=n, seed=seed, weight=weight)
    return cosine_scores(clf.dot(enc.transform(texts)), clf.norms_, dim), clf.classes_


SINGLE_CANDIDATES = [(n, 0, w) for n in (3, 4) for w in ("count", "sqrt")]
ENSEMBLE_CANDIDATES = [
    [(4, 0, "sqrt"), (4, 1, "sqrt"), (4, 2, "sqrt")],
    [(3, 0, "sqrt"), (4, 0, "sqrt"), (5, 0, "sqrt")],
    [(3, 0, "sqrt"), (4, 0, "sqrt"), (5, 0, "sqrt"), (4, 1, "sqrt"), (5, 1, "sqrt"), (4, 2, "sqrt")],
]


def select_on_heldout_train(train, *, dim, single_n, quick=False):
    """Score the candidate models on held-out TRAINING lines: the last 10% of each language's lines
    (every 5th scored), models trained on the first 90%. Returns the table and the choices."""
    t0 = time.perf_counter()
    langs = sorted(train)
    kept = {lang: [ln for ln in train[lang] if ln] for lang in langs}
    fit = {lang: v[: int(len(v) * 0.9)] for lang, v in kept.items()}
    val = {lang: v[int(len(v) * 0.9):][::5] for lang, v in kept.items()}
    vtexts = [ln for lang in langs for ln in val[lang]]
    vy = np.array([lang for lang in langs for _ in val[lang]])
    cache = {}

    def scores(member):
        if member not in cache:
            cache[member] = model_scores(fit, vtexts, dim=dim, n=member[0], seed=member[1], weight=member[2])
        return cache[member]

    def acc(members):
        s = sum(scores(m)[0] for m in members)
        return float(np.mean(scores(members[0])[1][np.argmax(s, axis=1)] == vy))

    singles = [{"n": n, "seed": sd, "weight": w, "val_accuracy": acc([(n, sd, w)])}
               for n, sd, w in SINGLE_CANDIDATES if n == single_n]
    # --quick leaves out the 5-gram members (their gram keys are sorted, not histogrammed: slower)
    cands = [c for c in ENSEMBLE_CANDIDATES if not quick or all(m[0] < 5 for m in c)]
    ensembles = [{"members": [list(m) for m in c], "val_accuracy": acc(c)} for c in cands]
    best_single = max(singles, key=lambda r: r["val_accuracy"])  # ties: the first listed
    best_ens = max(ensembles, key=lambda r: r["val_accuracy"])
    return {"n_val_sentences": len(vtexts), "singles": singles, "ensembles": ensembles,
            "weight": best_single["weight"], "ensemble": best_ens["members"],
            "seconds": time.perf_counter() - t0}


def run_ours(train, labels, texts, *, dim, n, seed, weight="count", read_seconds=0.0):
    t0 = time.perf_counter()
    enc, clf = train_model(train, dim=dim, n=n, seed=seed, weight=weight)
    t1 = time.perf_counter()
    Q = enc.transform(texts)
    t2 = time.perf_counter()
    pred = clf.predict(Q)
    t3 = time.perf_counter()
    acc = float(np.mean(pred == np.asarray(labels)))
    return {"accuracy": acc, "train_seconds": t1 - t0, "encode_test_seconds": t2 - t1,
            "classify_seconds": t3 - t2, "seconds": read_seconds + (t3 - t0),
            "class_planes": int(clf.planes_.shape[1]), "pred": pred, "classes": clf.classes_}


def run_ensemble(train, labels, texts, *, dim, members):
    """Sum of the cosine scores of models (n, seed, weight)."""
    t0 = time.perf_counter()
    total = None
    for n, seed, weight in members:
        s, classes = model_scores(train, texts, dim=dim, n=n, seed=seed, weight=weight)
        total = s if total is None else total + s
    pred = classes[np.argmax(total, axis=1)]
    return {"accuracy": float(np.mean(pred == np.asarray(labels))), "seconds": time.perf_counter() - t0}


def plot_confusion(labels, pred, classes, acc, path: Path, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    true_classes = sorted(set(labels))
    ti = {c: i for i, c in enumerate(true_classes)}
    pi = {c: i for i, c in enumerate(classes)}
    cm = np.zeros((len(true_classes), len(classes)), np.int64)
    for t, p in zip(labels, pred):
        cm[ti[t], pi[p]] += 1
    fig, ax = plt.subplots(figsize=(9, 8))
    im = ax.imshow(np.log10(cm + 1), cmap="viridis")
    ax.set_xticks(range(len(classes)), classes, rotation=90)
    ax.set_yticks(range(len(true_classes)), true_classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if cm[i, j] < cm.max() / 2 else "black")
    fig.colorbar(im, ax=ax, label="log10(count + 1)")
    ax.set_title(f"{title}: accuracy {acc:.2%}")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return cm


def main(argv=None):
    p = _common.make_parser(__doc__.split("\n")[0])
    p.add_argument("--dim", type=int, default=10_000)
    p.add_argument("--ngram", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weight", choices=("count", "sqrt", "select"), default="select",
                   help="n-gram weighting; 'select' picks it on held-out training lines")
    p.add_argument("--no-extra", action="store_true", help="skip the trigram and ensemble rows")
    p.add_argument("--no-torchhd", action="store_true", help="skip the torchhd comparison")
    p.add_argument("--torchhd-train-lines", type=int, default=1000,
                   help="training lines per language in the torchhd comparison (subset)")
    p.add_argument("--torchhd-test-per-lang", type=int, default=100,
                   help="test sentences per language in the torchhd comparison (subset)")
    args = _common.parse_args(p, argv)

    train_lines = test_per_lang = None
    if args.quick:
        train_lines, test_per_lang = 3000, 200
        args.torchhd_train_lines, args.torchhd_test_per_lang = 20, 5

    # ---- choices on held-out training lines (before, and apart from, the timed run)
    selection = None
    weight = args.weight
    if args.weight == "select" or not args.no_extra:
        train0, _, _ = datasets.load_langrec()
        train0, _, _ = _subset(train0, [], [], train_lines, None)
        selection = select_on_heldout_train(train0, dim=args.dim, single_n=args.ngram, quick=args.quick)
        print(f"held-out training lines ({selection['n_val_sentences']}): "
              + ", ".join(f"{r['n']}-gram {r['weight']} {r['val_accuracy']:.4f}" for r in selection["singles"])
              + "; ensembles " + ", ".join(f"{len(r['members'])} models {r['val_accuracy']:.4f}"
                                           for r in selection["ensembles"])
              + f" ({selection['seconds']:.1f} s)")
        if args.weight == "select":
            weight = selection["weight"]

    # ---- the timed run: read + encode + train + test
    t0 = time.perf_counter()
    c0 = time.process_time()  # CPU seconds of all threads: the work, whatever else shares the machine
    train, labels, texts = datasets.load_langrec()
    train, labels, texts = _subset(train, labels, texts, train_lines, test_per_lang)
    read_s = time.perf_counter() - t0
    main_row = run_ours(train, labels, texts, dim=args.dim, n=args.ngram, seed=args.seed, weight=weight,
                        read_seconds=read_s)
    main_cpu = time.process_time() - c0
    rows = [{"model": f"hdc {args.ngram}-gram, {weight} weights", "n_test": len(texts),
             "accuracy": main_row["accuracy"], "seconds": main_row["seconds"],
             "note": "whole run: read+encode+train+test"}]
    print(f"read {read_s:.2f} s, train {main_row['train_seconds']:.2f} s, encode test "
          f"{main_row['encode_test_seconds']:.2f} s, classify {main_row['classify_seconds']:.2f} s")

    result = {
        "accuracy": main_row["accuracy"], "dim": args.dim, "ngram": args.ngram, "seconds": main_row["seconds"],
        "n_test": len(texts), "n_train_lines": sum(len(v) for v in train.values()), "quick": args.quick,
        "stages": {"read_seconds": read_s, **{k: main_row[k] for k in
                                              ("train_seconds", "encode_test_seconds", "classify_seconds")}},
        "weight": weight, "selection": selection, "cpu_seconds": main_cpu,
        "class_planes": main_row["class_planes"], "backend": hdc.get_backend_name(),
        "threads": hdc.get_num_threads(), "published": {"rahimi2016_trigram": 0.967, "joshi2016": 0.978},
    }

    if not args.no_extra:
        classic = run_ours(train, labels, texts, dim=args.dim, n=args.ngram, seed=args.seed, weight="count")
        rows.append({"model": f"hdc {args.ngram}-gram, count weights (classic)", "n_test": len(texts),
                     "accuracy": classic["accuracy"], "seconds": classic["seconds"],
                     "note": "encode+train+test (data already read)"})
        tri = run_ours(train, labels, texts, dim=args.dim, n=3, seed=args.seed, weight=weight)
        rows.append({"model": f"hdc 3-gram, {weight} weights", "n_test": len(texts), "accuracy": tri["accuracy"],
                     "seconds": tri["seconds"], "note": "encode+train+test (data already read)"})
        members = [tuple(m) for m in selection["ensemble"]]
        ens = run_ensemble(train, labels, texts, dim=args.dim, members=members)
        desc = ", ".join(f"{n}-gram seed {sd}" for n, sd, _ in members)
        rows.append({"model": f"hdc ensemble of {len(members)} ({members[0][2]} weights)", "n_test": len(texts),
                     "accuracy": ens["accuracy"], "seconds": ens["seconds"],
                     "note": f"{desc}; cosines summed; members chosen on held-out train"})
        result["classic_count_weights"] = {"accuracy": classic["accuracy"], "seconds": classic["seconds"]}
        result["trigram"] = {"accuracy": tri["accuracy"], "seconds": tri["seconds"], "weight": weight}
        result["ensemble"] = {**ens, "models": len(members), "members": [list(m) for m in members]}

    # ---- torchhd side by side on a subset (its per-sentence Python loop is slow)
    if not args.no_torchhd:
        if not _torchhd_runs.available():
            print("torchhd not installed (pip install torch-hd): comparison skipped")
            result["torchhd"] = "not installed"
        else:
            import numba
            import torch

            sub_train, sub_labels, sub_texts = _subset(train, labels, texts, args.torchhd_train_lines,
                                                       args.torchhd_test_per_lang)
            lines = [ln for lang in sorted(sub_train) for ln in sub_train[lang] if ln]
            ys = [lang for lang in sorted(sub_train) for ln in sub_train[lang] if ln]
            torch.set_num_threads(1)
            prev = hdc.get_num_threads()
            hdc.set_num_threads(1)
            numba.set_num_threads(1)
            comp = {"subset": {"train_lines_per_language": args.torchhd_train_lines,
                               "test_sentences": len(sub_texts)}, "threads": 1, "version": _torchhd_runs.version()}
            ours = run_ours(sub_train, sub_labels, sub_texts, dim=args.dim, n=args.ngram, seed=args.seed,
                            weight=weight)
            comp["hdc"] = {"accuracy": ours["accuracy"], "seconds": ours["seconds"]}
            rows.append({"model": f"hdc {args.ngram}-gram (subset, 1 thread)", "n_test": len(sub_texts),
                         "accuracy": ours["accuracy"], "seconds": ours["seconds"], "note": "same subset as torchhd"})
            for vsa in ("MAP", "BSC"):
                r = _torchhd_runs.langrec(lines, ys, sub_texts, sub_labels, dim=args.dim, n=args.ngram, vsa=vsa,
                                          alphabet=ALPHABET, seed=args.seed)
                comp[vsa] = r
                rows.append({"model": f"torchhd {vsa} {args.ngram}-gram Centroid (subset, 1 thread)",
                             "n_test": len(sub_texts), "accuracy": r["accuracy"], "seconds": r["seconds"],
                             "note": f"{r['seconds'] / ours['seconds']:.0f}x our time"})
            hdc.set_num_threads(prev)
            numba.set_num_threads(prev)
            result["torchhd"] = comp

    _common.print_table(rows, ["model", "n_test", "accuracy", "seconds", "note"])
    result["rows"] = rows
    name = "langrec_quick" if args.quick else "langrec"
    png = Path(args.out) / f"{name}_confusion.png"
    Path(args.out).mkdir(parents=True, exist_ok=True)
    cm = plot_confusion(labels, main_row["pred"], list(main_row["classes"]), main_row["accuracy"], png,
                        f"langrec {args.ngram}-grams, D={args.dim}")
    result["confusion"] = {"rows": sorted(set(labels)), "cols": list(main_row["classes"]), "counts": cm}
    result["plot"] = png.name
    path = _common.write_json(args.out, name, result, allow_dirty=args.allow_dirty)
    print(f"accuracy {main_row['accuracy']:.4f}  whole run {main_row['seconds']:.2f} s wall, {main_cpu:.2f} s CPU"
          f"  -> {path}")


if __name__ == "__main__":
    main()
