"""Real data sets for the HDC benchmarks: language recognition, Fashion-MNIST, digits.

The data directory comes from the environment variable ``HDSPIKE_DATA`` (default:
``<repo>/../shared/data``). Nothing is copied into the repository; a missing file raises
:class:`DatasetMissing` naming the upstream address, and every language-recognition file is
checked against its published SHA-256 (of the uncompressed contents).

Example::

    from hdc import datasets
    train, test_labels, test_texts = datasets.load_langrec()
    (Xtr, ytr), (Xte, yte) = datasets.load_fashion_mnist()
"""
from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np

__all__ = [
    "DatasetMissing",
    "DatasetCorrupt",
    "data_dir",
    "LANGREC_UPSTREAM",
    "LANGREC_LANGUAGES",
    "ISO3_TO_ISO1",
    "load_langrec",
    "langrec_available",
    "FASHION_MNIST_DIRS",
    "FASHION_MNIST_CLASSES",
    "load_fashion_mnist",
    "fashion_mnist_available",
    "load_digits",
]

LANGREC_UPSTREAM = ("github.com/abbas-rahimi/HDC-Language-Recognition "
                    "@ b3be34dd7caa2dc0c13be60447e74956e64cfd33 (folders training_texts/ and testing_texts/)")
FASHION_MNIST_UPSTREAM = "github.com/zalandoresearch/fashion-mnist"
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")


class DatasetMissing(FileNotFoundError):
    """A data file is not on this machine; the message says where it comes from."""


class DatasetCorrupt(ValueError):
    """A data file is present but its contents are not what was published."""


def data_dir() -> Path:
    """The data directory: ``$HDSPIKE_DATA`` or ``<repo>/../shared/data``."""
    env = os.environ.get("HDSPIKE_DATA", "").strip()
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


# ---------------------------------------------------------------- language recognition
# ISO 639-3 file names -> ISO 639-1 codes of the test file (Afrikaans has no test sentences).
ISO3_TO_ISO1 = {
    "afr": "af", "bul": "bg", "ces": "cs", "dan": "da", "deu": "de", "ell": "el", "eng": "en",
    "est": "et", "fin": "fi", "fra": "fr", "hun": "hu", "ita": "it", "lav": "lv", "lit": "lt",
    "nld": "nl", "pol": "pl", "por": "pt", "ron": "ro", "slk": "sk", "slv": "sl", "spa": "es",
    "swe": "sv",
}
LANGREC_LANGUAGES = tuple(sorted(ISO3_TO_ISO1))

# SHA-256 of the uncompressed files, as published in shared/data/README.md (= upstream bytes).
_LANGREC_SHA256 = {
    "training_texts/afr.txt": "43d8340fc7580bd57ea4889bdb0fe55be432b97cf24396048d36d0e6b72787ba",
    "training_texts/bul.txt": "c8c4a8076920b8df08364beb91f3c78ff1f9ae49e09158ea8c1d8dc2e77f149e",
    "training_texts/ces.txt": "773febc4cf10d180d58333bf02b37e3277dac79bcae3005337c3552d81ab1f82",
    "training_texts/dan.txt": "f25ef8f381559cf835ebf9edafc59adec2ffde8b48da9901422bd36094f5f2f1",
    "training_texts/deu.txt": "c3e27cff76090d0c79fdccb8a8835c30f9ef51e9768c233fc428fb98a548bdb5",
    "training_texts/ell.txt": "b70dd896aaef0b11e3a001dc72899ff60717dd3a6aec9022f6bbc49e76081588",
    "training_texts/eng.txt": "8018d511a4ba2514b2bbb62e92618b58ff6b1028baca6084672aa6522214e748",
    "training_texts/est.txt": "9a488b25b12f5e3e0f09b441a8ce72377774dca97afc710e5c9e30fb087914fe",
    "training_texts/fin.txt": "67ebbed37e2b8e9863ebc40b047be4068bbd9597615304d21f2c47318ed20e37",
    "training_texts/fra.txt": "40298c377e6079d8f1cf1bff6fe0030e19cf35c7f3dd8084750d3528cfb4e784",
    "training_texts/hun.txt": "efc094ce4fbd83ab69f6afebc6baa07071c5af304f1aaa163bd681cce1fcaf8d",
    "training_texts/ita.txt": "5a718cf671e462729b0b8521a45a1de0edb02e02e110dbddc52b8327c730a3d1",
    "training_texts/lav.txt": "e02c593c427475217c7df9b8e119861e0d5bfb4ff865126bda6c29b384438125",
    "training_texts/lit.txt": "0692e76571826d6b4fcd9e8cf441c09bacce67a50fb7081e461f98cae32fc654",
    "training_texts/nld.txt": "f06707e159798e2731e1ef9c6e6d6d222eb0c7a4fc5fe6a1339a2e0746367142",
    "training_texts/pol.txt": "ad9a061ddc663ba693d5cd942ea740dd8fe3a4f0c8ee27c5000cb05616836139",
    "training_texts/por.txt": "553b4ad0dc49352b747f556a67eda1b8ae577a560418267235d7cc51d9005199",
    "training_texts/ron.txt": "b6c9b24370e4ddd6ca99a41f35838222a783a3d81fabeb37f007ab62f7e6fa43",
    "training_texts/slk.txt": "5ddcdad7be5cd3748875a589a15d94337c2353f8cf9a116e1751320f9ba0df20",
    "training_texts/slv.txt": "9c684340b5cffde781b0d6cb389447356d7969482afc5d39c6012a422b2fa392",
    "training_texts/spa.txt": "f0956a5539eff4f9fc0ebe87fcca78128d887e47b3d7a9948845fefe94f658cf",
    "training_texts/swe.txt": "abc3c8a8a14941691bac905a6c1418e5466a3cfb7275b4bc0c06b47d0f5a9678",
    "testing_texts.tsv": "e4ab33cabb37ecb3419c9b192d19eb23bce2ae3effead955cac5d242c1e4915d",
}


def _langrec_root(root) -> Path:
    return Path(root) if root is not None else data_dir() / "langrec"


def langrec_available(root=None) -> bool:
    """True when every language-recognition file is present (contents not checked)."""
    base = _langrec_root(root)
    return all((base / (rel + ".gz")).is_file() for rel in _LANGREC_SHA256)


def _read_checked(base: Path, rel: str, verify: bool) -> str:
    path = base / (rel + ".gz")
    if not path.is_file():
        raise DatasetMissing(
            f"language-recognition file {path} is missing; get it from {LANGREC_UPSTREAM} "
            f"(stored gzip-compressed, see shared/data/README.md) or set HDSPIKE_DATA to the "
            f"directory that holds langrec/")
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DatasetCorrupt(f"{path} is not a readable gzip file ({exc}); fetch it again from "
                             f"{LANGREC_UPSTREAM}") from exc
    if verify:
        got = hashlib.sha256(raw).hexdigest()
        if got != _LANGREC_SHA256[rel]:
            raise DatasetCorrupt(f"{path}: SHA-256 of the uncompressed contents is {got}, expected "
                                 f"{_LANGREC_SHA256[rel]} (upstream {LANGREC_UPSTREAM})")
    return raw.decode("utf-8")


def load_langrec(root=None, *, verify: bool = True, languages=None):
    """Load the HDC language-recognition benchmark (22 training texts, 21,000 test sentences).

    Returns ``(train, test_labels, test_texts)``: ``train`` maps ISO 639-3 codes to the list
    of training lines (without newlines); ``test_labels`` are the ISO 639-3 codes of the
    test sentences (converted from the file's ISO 639-1), ``test_texts`` the sentences.
    ``languages`` restricts the training texts (default: all 22, including Afrikaans, which
    has no test sentences but competes as a class, as upstream does).

    Example: ``train, y, texts = load_langrec(); len(texts) == 21000``
    """
    base = _langrec_root(root)
    langs = LANGREC_LANGUAGES if languages is None else tuple(languages)
    unknown = [lang for lang in langs if lang not in ISO3_TO_ISO1]
    if unknown:
        raise ValueError(f"unknown language codes {unknown}; choose from {LANGREC_LANGUAGES}")
    train = {}
    for lang in langs:
        text = _read_checked(base, f"training_texts/{lang}.txt", verify)
        train[lang] = text.splitlines()
    iso1_to_3 = {v: k for k, v in ISO3_TO_ISO1.items()}
    tsv = _read_checked(base, "testing_texts.tsv", verify)
    lines = tsv.splitlines()
    if not lines or lines[0].split("\t")[:3] != ["lang", "idx", "sentence"]:
        raise DatasetCorrupt(f"{base / 'testing_texts.tsv.gz'} lacks the header lang<TAB>idx<TAB>sentence")
    labels, texts = [], []
    for i, line in enumerate(lines[1:], start=2):
        parts = line.split("\t", 2)
        if len(parts) != 3 or parts[0] not in iso1_to_3:
            raise DatasetCorrupt(f"testing_texts.tsv line {i} is malformed: {line[:60]!r}")
        labels.append(iso1_to_3[parts[0]])
        texts.append(parts[2])
    return train, labels, texts


# ---------------------------------------------------------------- Fashion-MNIST
def _fashion_dirs(root):
    if root is not None:
        return [Path(root)]
    return [data_dir() / "fashion-mnist", *map(Path, FASHION_MNIST_DIRS)]


def _find_fashion(root):
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    for d in _fashion_dirs(root):
        if all((d / n).is_file() for n in names):
            return d
    return None


def fashion_mnist_available(root=None) -> bool:
    """True when the four Fashion-MNIST idx files are found."""
    return _find_fashion(root) is not None


def _read_idx(path: Path, expect_ndim: int) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DatasetCorrupt(f"{path} is not a readable gzip file ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetCorrupt(f"{path} is not an unsigned-byte idx file (bad magic number)")
    ndim = raw[3]
    if ndim != expect_ndim or len(raw) < 4 + 4 * ndim:
        raise DatasetCorrupt(f"{path} has {ndim} dimensions, expected {expect_ndim}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DatasetCorrupt(f"{path} holds {body.size} bytes of data, its header says {shape}")
    return body.reshape(shape)


def load_fashion_mnist(root=None):
    """Fashion-MNIST: ``((X_train, y_train), (X_test, y_test))``.

    Shapes: X_train (60000, 784) uint8, y_train (60000,) uint8, X_test (10000, 784),
    y_test (10000,). Looked up in ``root``, else ``$HDSPIKE_DATA/fashion-mnist``, else
    ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).
    """
    d = _find_fashion(root)
    if d is None:
        where = ", ".join(str(p) for p in _fashion_dirs(root))
        raise DatasetMissing(
            f"Fashion-MNIST idx files not found in {where}; run `make data` (as root on Debian: "
            f"apt-get install dataset-fashion-mnist) or download the four "
            f"*-ubyte.gz files from {FASHION_MNIST_UPSTREAM} into $HDSPIKE_DATA/fashion-mnist")
    xtr = _read_idx(d / "train-images-idx3-ubyte.gz", 3)
    ytr = _read_idx(d / "train-labels-idx1-ubyte.gz", 1)
    xte = _read_idx(d / "t10k-images-idx3-ubyte.gz", 3)
    yte = _read_idx(d / "t10k-labels-idx1-ubyte.gz", 1)
    if xtr.shape[0] != ytr.shape[0] or xte.shape[0] != yte.shape[0]:
        raise DatasetCorrupt(f"Fashion-MNIST in {d}: image and label counts differ")
    return (xtr.reshape(len(xtr), -1), ytr), (xte.reshape(len(xte), -1), yte)


# ---------------------------------------------------------------- digits
def load_digits():
    """scikit-learn's bundled 8x8 digits (1,797 images, no network): ``(X (1797, 64) float, y)``."""
    from sklearn.datasets import load_digits as _ld

    d = _ld()
    return d.data, d.target
