"""Planetoid citation graphs (Cora, CiteSeer, PubMed) with an offline path.

Runs must work without network: the raw files are copied from a read-only shared
folder into a writable cache, so PyG finds them and skips its download.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from torch_geometric.data import Data
from torch_geometric.datasets import Planetoid

NAMES = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}
RAW_SUFFIXES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
RAW_DIR_ENV = "ADAMLAB_PLANETOID_RAW"
_REPO = Path(__file__).resolve().parents[2]
DEFAULT_ROOT = _REPO / ".cache" / "planetoid"
DEFAULT_RAW_DIR = _REPO.parent / "shared" / "data" / "planetoid"


def load_planetoid(
    name: str = "Cora",
    root: str | os.PathLike | None = None,
    raw_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> Data:
    """Load a Planetoid graph with its public split and ``data.degree`` attached.

    ``raw_dir`` (default: ``$ADAMLAB_PLANETOID_RAW``, else ``<repo>/../shared/data/planetoid``)
    may hold ``<Name>/raw/ind.<name>.*`` (or the files directly); they are copied into
    ``<root>/<Name>/raw/`` (default root ``<repo>/.cache/planetoid``). Without raw files
    anywhere, PyG downloads them only if ``download`` is true.
    """
    canonical = _canonical_name(name)
    root = Path(root) if root is not None else DEFAULT_ROOT
    target = root / canonical / "raw"
    if not _has_raw_files(target, canonical):
        sources = _raw_candidates(canonical, raw_dir)
        found = next((d for d in sources if _has_raw_files(d, canonical)), None)
        if found is not None:
            _copy_raw_files(found, target, canonical)
        elif not download:
            raise FileNotFoundError(_missing_message(canonical, [target, *sources]))
    try:
        data = Planetoid(str(root), canonical)[0]
    except OSError as err:  # what fsspec/aiohttp raise for no network, DNS, HTTP errors
        message = _missing_message(canonical, [target, *_raw_candidates(canonical, raw_dir)])
        raise RuntimeError(f"{message}\nDownload failed: {err}") from err
    data.degree = torch.bincount(data.edge_index[0], minlength=data.num_nodes)
    return data


def _canonical_name(name: str) -> str:
    try:
        return NAMES[str(name).lower()]
    except KeyError:
        allowed = ", ".join(NAMES.values())
        raise ValueError(f"name={name!r} is not allowed; name must be one of {allowed}") from None


def _raw_files(canonical: str) -> list[str]:
    return [f"ind.{canonical.lower()}.{suffix}" for suffix in RAW_SUFFIXES]


def _has_raw_files(folder: Path, canonical: str) -> bool:
    return all((folder / f).is_file() for f in _raw_files(canonical))


def _raw_candidates(canonical: str, raw_dir) -> list[Path]:
    """Where raw files may be: <raw_dir>/<Name>/raw/ and <raw_dir>/ itself."""
    base = Path(raw_dir or os.environ.get(RAW_DIR_ENV) or DEFAULT_RAW_DIR)
    return [base / canonical / "raw", base]


def _copy_raw_files(source: Path, target: Path, canonical: str) -> None:
    """Copy contents only (not the read-only mode bits of the shared folder), each file
    through a temporary name so concurrent runs never see a half-written file."""
    target.mkdir(parents=True, exist_ok=True)
    for f in _raw_files(canonical):
        partial = target / f"{f}.{os.getpid()}.partial"
        shutil.copyfile(source / f, partial)
        os.replace(partial, target / f)


def _missing_message(canonical: str, looked_at: list[Path]) -> str:
    places = "\n".join(f"  - {p}" for p in looked_at)
    return (
        f"Planetoid {canonical}: raw files ind.{canonical.lower()}.* not found in:\n{places}\n"
        f"Fix: put them in <raw_dir>/{canonical}/raw/ and set data.raw_dir (or "
        f"${RAW_DIR_ENV}), or allow the download (download=True) with network access."
    )
