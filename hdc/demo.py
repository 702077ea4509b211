"""``python -m hdc.demo``: hyperdimensional classification end to end, in seconds.

With the shared language-recognition data present (``$HDSPIKE_DATA/langrec``), it trains
letter 4-gram hypervectors on 22 languages and classifies the 21,000 Europarl test
sentences. Otherwise it uses scikit-learn's bundled digits (no download): a random-projection
encoder with a one-pass centroid and an averaged-perceptron classifier.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def langrec(dim: int, n: int) -> None:
    from . import datasets
    from .classifiers import CentroidClassifier
    from .encoders import NGramEncoder

    t0 = time.perf_counter()
    train, labels, texts = datasets.load_langrec()
    enc = NGramEncoder(n=n, dim=dim, alphabet="abcdefghijklmnopqrstuvwxyz ", unknown="skip", seed=0)
    lines = [ln for lang in sorted(train) for ln in train[lang] if ln]
    ys = [lang for lang in sorted(train) for ln in train[lang] if ln]
    classes, counters = enc.class_counters(lines, ys)
    clf = CentroidClassifier.from_counters(counters, classes, dim)
    t1 = time.perf_counter()
    acc = clf.score(enc.transform(texts), np.asarray(labels))
    t2 = time.perf_counter()
    print(f"language recognition: {len(classes)} languages, {sum(map(len, lines)):,} training characters, "
          f"{len(texts):,} test sentences, {n}-grams, D={dim}")
    print(f"  accuracy {acc:.2%}   read+train {t1 - t0:.1f} s   encode+classify {t2 - t1:.1f} s   "
          f"total {t2 - t0:.1f} s")


def digits(dim: int) -> None:
    from sklearn.model_selection import train_test_split

    from . import datasets
    from .classifiers import CentroidClassifier, RetrainClassifier
    from .encoders import RandomProjectionEncoder

    X, y = datasets.load_digits()
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    print(f"scikit-learn digits: {len(Xtr)} train / {len(Xte)} test images, D={dim} "
          f"(set HDSPIKE_DATA to a folder with langrec/ for the language-recognition demo)")
    t0 = time.perf_counter()
    enc = RandomProjectionEncoder(dim=dim, center=True, seed=0).fit(Xtr)
    Htr, Hte = enc.transform(Xtr), enc.transform(Xte)
    for clf in (CentroidClassifier(dim=dim), RetrainClassifier(dim=dim, epochs=10, seed=0)):
        t = time.perf_counter()
        acc = clf.fit(Htr, ytr).score(Hte, yte)
        print(f"  {type(clf).__name__:20s} accuracy {acc:.2%}   {time.perf_counter() - t:.2f} s")
    print(f"  total {time.perf_counter() - t0:.2f} s")


def main(argv=None) -> None:
    from . import datasets

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", choices=("auto", "langrec", "digits"), default="auto")
    p.add_argument("--dim", type=int, default=10_000)
    p.add_argument("--ngram", type=int, default=4)
    args = p.parse_args(argv)
    which = args.data
    if which == "auto":
        which = "langrec" if datasets.langrec_available() else "digits"
    if which == "langrec":
        langrec(args.dim, args.ngram)
    else:
        digits(args.dim)


if __name__ == "__main__":
    main()
