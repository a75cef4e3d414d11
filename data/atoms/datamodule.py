"""LightningDataModule for labelled structures: split, check, filter, neighbour lists, batching."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from ase import Atoms
from torch.utils.data import DataLoader, Subset

from data.atoms.emt import emt_dataset
from data.atoms.graph import AtomsDataset, collate_atoms
from data.atoms.readers import (
    LabelKeys,
    check_cutoff,
    check_elements,
    fit_reference_energies,
    force_scale,
    max_force_filter,
    read_structures,
)
from data.atoms.splits import split_structures
from data.sampling import EpochShuffle

TYPE_KEY = "config_type"  # per-type metrics, as MACE reports them
DEFAULT_KEYS = LabelKeys()


def load_structures(
    name: str = "emt",
    train: str | Path | None = None,
    val: str | Path | None = None,
    test: str | Path | None = None,
    cache_dir: str | Path = ".cache/adamlab/emt",
    keys: LabelKeys = DEFAULT_KEYS,
    cutoff: float | None = None,
    emt: dict | None = None,
) -> tuple[list[Atoms], list[Atoms] | None, list[Atoms] | None]:
    """Structures named the way the config names them: ``emt`` (generated, cached) or
    ``extxyz``/``ase_db`` (a ``train`` file, optional ``val`` and ``test`` files).

    Returns ``(train, val, test)``; None for a split that must be taken off ``train``. Every
    structure's ``info["source"]`` names its file and frame.
    """
    if name == "emt":
        structures = emt_dataset(cache_dir, **(emt or {}))
        for k, atoms in enumerate(structures):
            atoms.info["source"] = f"EMT data frame {k}"
        if cutoff is not None:
            check_cutoff(structures, cutoff)
        return structures, None, None
    if name in ("extxyz", "ase_db"):
        if train is None:
            raise ValueError(f"data={name} needs a train path")

        def read(path):
            return read_structures(path, keys, cutoff=cutoff) if path else None

        return read(train), read(val), read(test)
    raise ValueError(f"unknown atoms data source {name!r}; known: emt, extxyz, ase_db")


class AtomsDataModule(L.LightningDataModule):
    """Train/val/test loaders of batched structure graphs.

    Missing ``val``/``test`` are split off ``train`` by whole groups of ``info[group_key]``
    (``None``: frame by frame) in a permutation seeded by ``seed``; the training order is a
    function of (``shuffle_seed``, epoch), so resuming is exact. Validation and test structures
    with an element the training set lacks are refused (:class:`~data.atoms.readers.DataError`).
    ``max_force`` drops training structures whose largest reference force exceeds it (eV/Å);
    validation and test keep everything so metrics stay comparable across force-handling options.
    ``n_dropped``, ``reference_energies`` (float64) and ``force_scale`` (robust) describe the
    final training set.
    """

    def __init__(
        self,
        train: list[Atoms],
        val: list[Atoms] | None = None,
        test: list[Atoms] | None = None,
        cutoff: float = 5.0,
        batch_size: int = 16,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 0,
        shuffle_seed: int = 0,
        max_force: float | None = None,
        dtype: torch.dtype = torch.float32,
        num_workers: int = 0,
        group_key: str | None = "group",
    ):
        super().__init__()
        self.cutoff, self.batch_size, self.dtype = cutoff, batch_size, dtype
        self.num_workers, self.shuffle_seed = num_workers, shuffle_seed
        splits = split_structures(train, val, test, val_fraction, test_fraction, seed, group_key)
        self.train_structures, self.val_structures, self.test_structures = splits
        self.n_dropped = 0
        if max_force is not None:
            self.train_structures, self.n_dropped = max_force_filter(
                self.train_structures, max_force
            )
        if not self.train_structures:
            raise ValueError(f"no training structures left (max_force={max_force})")
        known = {int(z) for a in self.train_structures for z in a.numbers}
        check_elements(self.val_structures, known, "validation")
        check_elements(self.test_structures, known, "test")
        self.reference_energies = fit_reference_energies(self.train_structures)
        self.force_scale = force_scale(self.train_structures)
        self.datasets: dict[str, AtomsDataset] = {}

    @property
    def dropped_fraction(self) -> float:
        """Fraction of the training split the max-force filter removed."""
        return self.n_dropped / (self.n_dropped + len(self.train_structures))

    @classmethod
    def from_source(
        cls, name: str = "emt", train=None, test=None, val=None, source: dict | None = None,
        **kwargs,
    ) -> AtomsDataModule:
        """Build from config-like arguments; ``source`` goes to :func:`load_structures`."""
        source = dict(source or {}, cutoff=kwargs.get("cutoff", 5.0))
        train_structures, val_structures, test_structures = load_structures(
            name, train, val, test, **source
        )
        return cls(train_structures, val=val_structures, test=test_structures, **kwargs)

    def setup(self, stage: str | None = None) -> None:
        """Neighbour lists are built once per split, on first use."""
        for split in ("train", "val", "test"):
            if split not in self.datasets:
                structures = getattr(self, f"{split}_structures")
                self.datasets[split] = AtomsDataset(structures, self.cutoff, self.dtype)

    def avg_num_neighbors(self) -> float:
        """Mean number of neighbours within the cutoff per training atom (MACE's message
        normalisation)."""
        self.setup()
        graphs = self.datasets["train"].graphs
        edges = sum(g["edge_index"].shape[1] for g in graphs)
        return edges / sum(int(g["n_atoms"]) for g in graphs)

    def config_types(self, split: str) -> dict[str, list[int]]:
        """Indices of the ``split`` structures per ``info["config_type"]`` (if any has one)."""
        types: dict[str, list[int]] = {}
        for k, atoms in enumerate(getattr(self, f"{split}_structures")):
            if TYPE_KEY in atoms.info:
                types.setdefault(str(atoms.info[TYPE_KEY]), []).append(k)
        return types

    def _loader(self, split: str, shuffle: bool, indices: list[int] | None = None) -> DataLoader:
        self.setup()
        dataset = self.datasets[split]
        if indices is not None:
            dataset = Subset(dataset, indices)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=EpochShuffle(len(dataset), self.shuffle_seed) if shuffle else None,
            collate_fn=collate_atoms,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def subset_dataloader(self, split: str, indices: list[int]) -> DataLoader:
        """The ``split`` structures at ``indices`` (e.g. one config_type), unshuffled."""
        return self._loader(split, shuffle=False, indices=indices)
