"""The same HDC models in torchhd (its MAP and BSC models, its Centroid classifier), run side
by side with hdc in the benchmarks when torchhd is installed (``pip install torch-hd``).

They follow torchhd's own examples: language recognition as in
``examples/language_recognition.py`` (each line -> ngrams -> hard_quantize for MAP, majority
for BSC -> Centroid.add; cosine / Hamming scoring), Fashion-MNIST with its position x level
record encoder (``embeddings.Random`` keys, ``embeddings.Level`` values, ``hash_table``).
"""
from __future__ import annotations

import time

import numpy as np


def available() -> bool:
    try:
        import torchhd  # noqa: F401
        return True
    except Exception:  # noqa: BLE001 - any import problem means "not installed"
        return False


def version() -> str:
    import torchhd

    return getattr(torchhd, "__version__", "?")


def _quantize(torchhd, s):
    """MAP sign quantisation (torchhd.normalize in new versions, hard_quantize in old ones)."""
    fn = getattr(torchhd, "normalize", None) or torchhd.hard_quantize
    return fn(s)


def _symbol_ids(texts, alphabet):
    lut = {c: i for i, c in enumerate(alphabet)}
    return [[lut[c] for c in t if c in lut] for t in texts]


def langrec(train_texts, train_y, test_texts, test_y, *, dim, n, vsa, alphabet, seed=0):
    """torchhd n-gram language recognition (MAP or BSC, Centroid). Returns accuracy, seconds."""
    import torch
    import torchhd
    from torchhd.models import Centroid

    torch.manual_seed(seed)
    t0 = time.perf_counter()
    classes = sorted(set(train_y))
    cidx = {c: i for i, c in enumerate(classes)}
    sym = torchhd.embeddings.Random(len(alphabet), dim, vsa=vsa)
    K = len(classes)

    def encode(ids):
        ids = ids if len(ids) >= n else ids + [0] * (n - len(ids))
        hv = sym(torch.tensor(ids))
        s = torchhd.ngrams(hv, n=n)
        return _quantize(torchhd, s) if vsa == "MAP" else s

    with torch.no_grad():
        if vsa == "MAP":
            model = Centroid(dim, K)
            for ids, y in zip(_symbol_ids(train_texts, alphabet), train_y):
                model.add(encode(ids).unsqueeze(0), torch.tensor([cidx[y]]))
            model.normalize()
            t_train = time.perf_counter() - t0
            correct = 0
            for ids, y in zip(_symbol_ids(test_texts, alphabet), test_y):
                correct += int(model(encode(ids).unsqueeze(0), dot=True).argmax(1).item() == cidx.get(y, -1))
        else:  # BSC: count bits per class, majority class vectors, Hamming similarity
            counts = torch.zeros(K, dim)
            totals = torch.zeros(K)
            for ids, y in zip(_symbol_ids(train_texts, alphabet), train_y):
                counts[cidx[y]] += encode(ids).float()
                totals[cidx[y]] += 1
            proto = torchhd.BSCTensor(counts > totals[:, None] / 2)
            t_train = time.perf_counter() - t0
            correct = 0
            for ids, y in zip(_symbol_ids(test_texts, alphabet), test_y):
                sim = torchhd.hamming_similarity(encode(ids), proto)
                correct += int(sim.argmax().item() == cidx.get(y, -1))
    seconds = time.perf_counter() - t0
    return {"accuracy": correct / len(test_texts), "seconds": seconds, "train_seconds": t_train}


def fashion(Xtr, ytr, Xte, yte, *, dim, vsa, n_levels=100, seed=0, batch=256):
    """torchhd record encoding (pixel keys bound to pixel levels, multiset) + Centroid."""
    import torch
    import torchhd
    from torchhd.models import Centroid

    torch.manual_seed(seed)
    t0 = time.perf_counter()
    n_feat = Xtr.shape[1]
    keys = torchhd.embeddings.Random(n_feat, dim, vsa=vsa)
    vals = torchhd.embeddings.Level(n_levels, dim, vsa=vsa)

    def encode(x):
        x = torch.tensor(np.asarray(x, np.float32)) / 255.0
        s = torchhd.hash_table(keys.weight, vals(x))  # (b, dim): multiset of key * value
        return _quantize(torchhd, s) if vsa == "MAP" else s

    with torch.no_grad():
        if vsa == "MAP":
            model = Centroid(dim, 10)
            for s in range(0, len(Xtr), batch):
                model.add(encode(Xtr[s:s + batch]), torch.tensor(np.array(ytr[s:s + batch], np.int64)))
            model.normalize()
            t_train = time.perf_counter() - t0
            pred = torch.cat([model(encode(Xte[s:s + batch]), dot=True).argmax(1)
                              for s in range(0, len(Xte), batch)])
        else:
            counts = torch.zeros(10, dim)
            totals = torch.zeros(10)
            for s in range(0, len(Xtr), batch):
                h = encode(Xtr[s:s + batch]).float()
                yb = torch.tensor(np.array(ytr[s:s + batch], np.int64))
                counts.index_add_(0, yb, h)
                totals += torch.bincount(yb, minlength=10)
            proto = torchhd.BSCTensor(counts > totals[:, None] / 2)
            t_train = time.perf_counter() - t0
            pred = torch.cat([torchhd.hamming_similarity(encode(Xte[s:s + batch]), proto).argmax(1)
                              for s in range(0, len(Xte), batch)])
    acc = float((pred.numpy() == np.asarray(yte)).mean())
    return {"accuracy": acc, "seconds": time.perf_counter() - t0, "train_seconds": t_train}
