"""Data loaders: data directory setting, checksums, clear errors naming the upstream source."""
import gzip
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hdc import datasets as D


def test_data_dir_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("HDSPIKE_DATA", str(tmp_path))
    assert D.data_dir() == tmp_path
    monkeypatch.delenv("HDSPIKE_DATA")
    assert D.data_dir().name == "data" and D.data_dir().parent.name == "shared"


def test_langrec_missing_names_upstream(tmp_path):
    with pytest.raises(D.DatasetMissing, match="github.com/abbas-rahimi/HDC-Language-Recognition"):
        D.load_langrec(tmp_path)
    assert not D.langrec_available(tmp_path)


def test_langrec_wrong_contents_fail_checksum(tmp_path):
    (tmp_path / "training_texts").mkdir()
    with gzip.open(tmp_path / "training_texts" / "afr.txt.gz", "wt") as f:
        f.write("not the real text\n")
    with pytest.raises(D.DatasetCorrupt, match="SHA-256"):
        D.load_langrec(tmp_path, languages=["afr"])
    (tmp_path / "training_texts" / "afr.txt.gz").write_bytes(b"not gzip at all")
    with pytest.raises(D.DatasetCorrupt, match="gzip"):
        D.load_langrec(tmp_path, languages=["afr"])
    with pytest.raises(ValueError, match="unknown language"):
        D.load_langrec(tmp_path, languages=["xx"])


def test_langrec_real_data():
    if not D.langrec_available():
        pytest.skip(f"langrec data not in {D.data_dir()} (upstream {D.LANGREC_UPSTREAM})")
    train, labels, texts = D.load_langrec()
    assert sorted(train) == list(D.LANGREC_LANGUAGES) and len(train) == 22
    assert len(labels) == len(texts) == 21000
    assert {lab: labels.count(lab) for lab in set(labels)} == {k: 1000 for k in D.LANGREC_LANGUAGES if k != "afr"}
    assert set("".join(texts)) <= set("abcdefghijklmnopqrstuvwxyz ")


def test_fashion_missing_names_package_and_upstream(tmp_path):
    with pytest.raises(D.DatasetMissing, match="dataset-fashion-mnist.*github.com/zalandoresearch/fashion-mnist"):
        D.load_fashion_mnist(tmp_path)


def _write_idx(path, arr, magic=0x08):
    hdr = bytes([0, 0, magic, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(hdr + arr.astype(np.uint8).tobytes())


def test_fashion_idx_parsing_and_bad_files(tmp_path):
    rng = np.random.default_rng(0)
    xtr, xte = rng.integers(0, 256, (5, 28, 28)), rng.integers(0, 256, (3, 28, 28))
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", xtr)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(5))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", xte)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(3))
    (a, b), (c, d) = D.load_fashion_mnist(tmp_path)
    assert np.array_equal(a, xtr.reshape(5, 784)) and b.tolist() == list(range(5)) and c.shape == (3, 784)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(3), magic=0x0D)
    with pytest.raises(D.DatasetCorrupt, match="magic"):
        D.load_fashion_mnist(tmp_path)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(4))
    with pytest.raises(D.DatasetCorrupt, match="counts differ"):
        D.load_fashion_mnist(tmp_path)


def test_fashion_real_data():
    if not D.fashion_mnist_available():
        pytest.skip("Fashion-MNIST not installed (`make data`, or apt-get install dataset-fashion-mnist)")
    (a, b), (c, d) = D.load_fashion_mnist()
    assert a.shape == (60000, 784) and c.shape == (10000, 784) and a.dtype == np.uint8
    assert np.bincount(b).tolist() == [6000] * 10 and np.bincount(d).tolist() == [1000] * 10


def test_digits():
    X, y = D.load_digits()
    assert X.shape == (1797, 64) and set(y) == set(range(10))


@pytest.mark.parametrize("target", ["test", "test-fast", "bench-quick", "demo"])
def test_make_targets_install_no_system_package(target):
    """Data fetching (apt-get, as root) is the explicit `make data` step, never a prerequisite."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    root = Path(__file__).resolve().parents[1]
    plan = subprocess.run(["make", "-n", "-B", target], cwd=root, capture_output=True, text=True, check=True).stdout
    assert "apt-get" not in plan
    data = subprocess.run(["make", "-n", "-B", "data"], cwd=root, capture_output=True, text=True, check=True).stdout
    assert "apt-get install" in data  # what the assertion above would see if `data` were a prerequisite
