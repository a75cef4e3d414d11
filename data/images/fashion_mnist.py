"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): 60,000 train and 10,000 test 28x28 images.

Read from the four gzipped IDX files of the upstream repository, looked for in order in
``root``, ``$ADAMLAB_FASHION_MNIST``, ``<repo>/../shared/data/fashion-mnist`` and the
download cache; each folder may hold the files directly or in torchvision's
``FashionMNIST/raw/``. With none found and ``download`` true, the upstream files are
fetched into the cache and checked against their published sha256. Without a copy and
without network the error names every place it looked.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import torch

from .splits import Images

ENV = "ADAMLAB_FASHION_MNIST"
_REPO = Path(__file__).resolve().parents[2]
SHARED = _REPO.parent / "shared" / "data" / "fashion-mnist"
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FILES = {  # name -> sha256, as the upstream README and ../shared/data/fashion-mnist list them
    "train-images-idx3-ubyte.gz":
        "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz":
        "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz":
        "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz":
        "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
           "Sneaker", "Bag", "Ankle boot")


def cache() -> Path:
    """Where a download goes: ``$ADAMLAB_CACHE/fashion-mnist`` (default ``<repo>/.cache``)."""
    return Path(os.environ.get("ADAMLAB_CACHE", _REPO / ".cache")) / "fashion-mnist"


def candidates(root: str | os.PathLike | None = None) -> list[Path]:
    """Where the files are looked for, in order."""
    bases = [Path(root)] if root else []
    if os.environ.get(ENV):
        bases.append(Path(os.environ[ENV]))
    bases += [SHARED, cache()]
    out = []
    for base in bases:
        out += [base, base / "FashionMNIST" / "raw"]
    return out


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in FILES)


def read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX file: big-endian magic (0x0000 0x08 ndim: unsigned bytes), dims, data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} ({int(np.prod(dims))} bytes), file holds "
                         f"{data.size}")
    return data.reshape(dims)


def download(target: Path, url: str = URL) -> Path:
    """The four upstream files into ``target``, each checked against its sha256."""
    target.mkdir(parents=True, exist_ok=True)
    for name, digest in FILES.items():
        if (target / name).is_file():
            continue
        with urllib.request.urlopen(url + name, timeout=60) as response:
            fd, tmp = tempfile.mkstemp(dir=target, prefix=f".{name}.")
            with os.fdopen(fd, "wb") as f:
                shutil.copyfileobj(response, f)
        got = hashlib.sha256(Path(tmp).read_bytes()).hexdigest()
        if got != digest:
            os.unlink(tmp)
            raise OSError(f"{url + name}: sha256 {got} is not the published {digest}")
        os.replace(tmp, target / name)
    return target


def locate(root=None, download_missing: bool = True) -> Path:
    """The folder holding the four files; downloads them into the cache if allowed."""
    places = candidates(root)
    found = next((d for d in places if _complete(d)), None)
    if found is not None:
        return found
    looked = "\n  ".join(str(p) for p in places)
    missing = (f"Fashion-MNIST not found: none of these folders holds {', '.join(FILES)}:"
               f"\n  {looked}\nSet {ENV} (or the study's data_root) to a folder with the "
               f"four upstream files")
    if not download_missing:
        raise FileNotFoundError(missing + ", or allow the download.")
    try:
        return download(cache())
    except OSError as err:
        raise FileNotFoundError(f"{missing}.\nDownload from {URL} into {cache()} failed: "
                                f"{err}") from err


def load_fashion_mnist(root: str | os.PathLike | None = None,
                       download: bool = True) -> dict[str, Images]:
    """{"train": 60,000 images, "test": 10,000}, uint8 (n, 1, 28, 28) and int64 labels."""
    folder = locate(root, download)
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
        y = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"{folder}: {split} images {x.shape} and labels {y.shape} do not "
                             "match")
        out[split] = Images(torch.from_numpy(x.copy()).unsqueeze(1),
                            torch.from_numpy(y.astype(np.int64)), 255)
    return out
