"""The image data the studies train on: Fashion-MNIST read offline from the shared copy (the
upstream IDX files), a missing copy failing with every place it looked, a download path
that is exercised without the network, and seeded disjoint subsets."""

from __future__ import annotations

import gzip
import hashlib
import urllib.request

import numpy as np
import pytest
import torch

from data.images import Images, fashion_mnist, load_digits, subset
from data.images.fashion_mnist import FILES, load_fashion_mnist, read_idx


def write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fake_copy(folder, n_train=6, n_test=4):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n_train, 28, 28)))
    write_idx(folder / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, n_train))
    write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n_test, 28, 28)))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, n_test))
    return folder


@pytest.fixture(autouse=True)
def _no_network_no_shared(monkeypatch, tmp_path):
    """No test reaches the network; the shared copy is only used where a test says so."""
    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setenv("ADAMLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(fashion_mnist.ENV, raising=False)


@pytest.mark.skipif(not all((fashion_mnist.SHARED / name).is_file() for name in FILES),
                    reason="the shared Fashion-MNIST copy (../shared/data/fashion-mnist) is "
                           "not on this machine")
def test_the_shared_copy_is_the_real_dataset():
    data = load_fashion_mnist(download=False)
    assert data["train"].x.shape == (60000, 1, 28, 28) and len(data["test"]) == 10000
    assert data["train"].x.dtype == torch.uint8
    assert torch.bincount(data["test"].y).tolist() == [1000] * 10  # balanced test set
    assert data["train"].y[:5].tolist() == [9, 0, 0, 3, 0]  # the upstream order
    for name, digest in FILES.items():
        assert hashlib.sha256((fashion_mnist.SHARED / name).read_bytes()).hexdigest() == digest


def test_an_explicit_root_and_the_torchvision_layout(tmp_path):
    fake_copy(tmp_path / "tv" / "FashionMNIST" / "raw")
    data = load_fashion_mnist(tmp_path / "tv", download=False)
    assert len(data["train"]) == 6 and len(data["test"]) == 4
    x, y = data["train"].floats()
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1


def test_a_missing_copy_without_network_names_every_place_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "SHARED", tmp_path / "no-shared")
    with pytest.raises(FileNotFoundError) as err:
        load_fashion_mnist(tmp_path / "nowhere", download=True)
    text = str(err.value)
    for place in (tmp_path / "nowhere", tmp_path / "no-shared", tmp_path / "cache"):
        assert str(place) in text
    assert "Download from http" in text and "network disabled" in text
    with pytest.raises(FileNotFoundError, match="or allow the download"):
        load_fashion_mnist(tmp_path / "nowhere", download=False)


def test_the_download_checks_every_file_against_its_published_sha256(tmp_path, monkeypatch):
    source = fake_copy(tmp_path / "upstream")
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda url, timeout: open(source / url.rsplit("/", 1)[1], "rb"))
    with pytest.raises(OSError, match="is not the published"):
        fashion_mnist.download(tmp_path / "target")
    assert not any((tmp_path / "target").glob("*.gz"))  # nothing unverified is kept
    monkeypatch.setattr(fashion_mnist, "FILES", {
        name: hashlib.sha256((source / name).read_bytes()).hexdigest() for name in FILES})
    fashion_mnist.download(tmp_path / "target")
    assert sorted(p.name for p in (tmp_path / "target").glob("*.gz")) == sorted(FILES)


def test_a_corrupt_idx_file_is_named(tmp_path):
    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\x00\x00\x08\x03" + np.asarray([5, 28, 28], ">u4").tobytes() + b"\x00" * 10)
    with pytest.raises(ValueError, match="bad.gz: header says"):
        read_idx(path)


def test_subsets_are_disjoint_seeded_and_nested_by_order():
    n = len(load_digits()["all"])
    images = Images(torch.arange(n).view(n, 1, 1, 1), torch.zeros(n, dtype=torch.long), 1)
    a = subset(images, {"val": 100, "train": 200}, seed=1)
    b = subset(images, {"val": 100, "train": 200}, seed=1)
    c = subset(images, {"val": 100, "train": 50}, seed=1)
    d = subset(images, {"val": 100, "train": 200}, seed=2)
    assert torch.equal(a["train"].x, b["train"].x) and not torch.equal(a["train"].x,
                                                                       d["train"].x)
    assert torch.equal(c["val"].x, a["val"].x) and torch.equal(c["train"].x, a["train"].x[:50])
    assert not set(a["val"].x.flatten().tolist()) & set(a["train"].x.flatten().tolist())
    with pytest.raises(ValueError, match="sizes="):
        subset(images, {"train": n + 1}, seed=0)
