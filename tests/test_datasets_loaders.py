"""Dataset loaders on files the tests write, on the shared real MNIST test set when present, and
the offline error (the network is replaced by a failing stub: tests never download)."""
from __future__ import annotations

import gzip
import hashlib
import io
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from symdl import datasets
from symdl.datasets import _fetch, cifar10, fashion_mnist, mnist
from symdl.datasets.idx import parse_idx, read_idx

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def idx_bytes(a: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(np.uint8).tobytes()


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty data folder and a network that always fails."""
    monkeypatch.setenv("SYMDL_DATA_DIR", str(tmp_path / "data"))

    def no_network(url):
        raise OSError("network unreachable (test stub)")
    monkeypatch.setattr(_fetch, "urlopen", no_network)
    return tmp_path / "data"


def test_idx_roundtrip_raw_and_gzip(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.idx").write_bytes(idx_bytes(a))
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(idx_bytes(a)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), a)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx.gz"), a)
    with pytest.raises(ValueError, match="not an IDX file"):
        parse_idx(b"PK\x03\x04junk")
    with pytest.raises(ValueError, match="bytes"):
        parse_idx(idx_bytes(a)[:-1])


def test_offline_load_data_raises_a_clear_error(offline):
    for module in (mnist, fashion_mnist, cifar10):
        with pytest.raises(datasets.DownloadError) as err:
            module.load_data()
        msg = str(err.value)
        assert "no network access" in msg and str(offline) in msg and "SYMDL_DATA_DIR" in msg
        assert not any(p.suffix == ".part" for p in offline.rglob("*"))  # no partial files left


def test_mnist_load_data_from_cached_files(offline, monkeypatch):
    rng = np.random.default_rng(0)
    files = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (5, 28, 28)),
             "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 5),
             "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (3, 28, 28)),
             "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 3)}
    folder = offline / "mnist"
    folder.mkdir(parents=True)
    sums = {}
    for name, a in files.items():
        data = gzip.compress(idx_bytes(a))
        (folder / name).write_bytes(data)
        sums[name] = hashlib.sha256(data).hexdigest()
    monkeypatch.setattr(mnist, "SHA256", sums)
    (xtr, ytr), (xte, yte) = mnist.load_data()
    assert xtr.shape == (5, 28, 28) and xtr.dtype == np.uint8 and ytr.shape == (5,) and ytr.dtype == np.uint8
    np.testing.assert_array_equal(xte, files["t10k-images-idx3-ubyte.gz"])
    np.testing.assert_array_equal(yte, files["t10k-labels-idx1-ubyte.gz"])
    # a damaged cached file is discarded and fetched again, which fails offline
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"damaged")
    with pytest.raises(datasets.DownloadError):
        mnist.load_data()
    assert not (folder / "t10k-labels-idx1-ubyte.gz").exists()


def test_download_checks_sha256_and_writes_atomically(offline, monkeypatch):
    payload = b"hello dataset"

    def fake(url):
        return io.BytesIO(payload)
    monkeypatch.setattr(_fetch, "urlopen", fake)
    good = hashlib.sha256(payload).hexdigest()
    path = _fetch.fetch("toy", "f.bin", ("https://mirror.invalid/",), good)
    assert path.read_bytes() == payload
    with pytest.raises(datasets.DownloadError, match="SHA-256"):
        _fetch.fetch("toy", "g.bin", ("https://mirror.invalid/",), "0" * 64)
    assert sorted(p.name for p in (offline / "toy").iterdir()) == ["f.bin"]


def cifar_archive(path: Path, rng) -> dict:
    truth = {}
    with tarfile.open(path, "w:gz") as tar:
        for name in (*cifar10.TRAIN, *cifar10.TEST):
            labels = rng.integers(0, 10, 2).astype(np.uint8)
            images = rng.integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
            planes = images.transpose(0, 3, 1, 2).reshape(2, -1)  # R plane, G plane, B plane
            data = np.concatenate([labels[:, None], planes], axis=1).tobytes()
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            truth[name] = (images, labels)
    return truth


def test_cifar10_binary_records(tmp_path):
    truth = cifar_archive(tmp_path / "c.tar.gz", np.random.default_rng(1))
    (xtr, ytr), (xte, yte) = cifar10.read_archive(tmp_path / "c.tar.gz")
    assert xtr.shape == (10, 32, 32, 3) and ytr.shape == (10, 1) and xtr.dtype == np.uint8
    np.testing.assert_array_equal(xtr[:2], truth["data_batch_1.bin"][0])
    np.testing.assert_array_equal(yte[:, 0], truth["test_batch.bin"][1])
    with pytest.raises(ValueError, match="records"):
        cifar10.parse_batch(b"\x00" * 100)


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"no shared MNIST data at {SHARED_MNIST}")
def test_real_mnist_test_set():
    x, y = mnist.read_split(SHARED_MNIST, "t10k")
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8 and y.shape == (10000,)
    assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert x.mean() == pytest.approx(33.79, abs=0.01)
