"""LightningDataModule for labelled structures: split, filter, neighbour lists, batching."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from ase import Atoms
from torch.utils.data import DataLoader

from data.atoms.emt import emt_dataset
from data.atoms.graph import AtomsDataset, collate_atoms
from data.atoms.readers import (
    check_cutoff,
    fit_reference_energies,
    force_rms,
    max_force_filter,
    read_structures,
)
from data.sampling import EpochShuffle


def load_structures(
    name: str = "emt",
    train: str | Path | None = None,
    test: str | Path | None = None,
    cache_dir: str | Path = ".cache/adamlab/emt",
    energy_key: str = "energy",
    forces_key: str = "forces",
    cutoff: float | None = None,
    emt: dict | None = None,
) -> tuple[list[Atoms], list[Atoms] | None]:
    """Structures named the way the config names them: ``emt`` (generated, cached) or ``extxyz``
    (``train`` path, optional ``test`` path; ASE databases work too).

    Returns ``(train, test)``; ``test`` is None when it must be split off ``train``.
    """
    if name == "emt":
        structures = emt_dataset(cache_dir, **(emt or {}))
        if cutoff is not None:
            check_cutoff(
                structures, cutoff, [f"EMT data frame {k}" for k in range(len(structures))]
            )
        return structures, None
    if name in ("extxyz", "ase_db"):
        if train is None:
            raise ValueError(f"data={name} needs a train path")
        read = dict(energy_key=energy_key, forces_key=forces_key, cutoff=cutoff)
        return read_structures(train, **read), (read_structures(test, **read) if test else None)
    raise ValueError(f"unknown atoms data source {name!r}; known: emt, extxyz, ase_db")


class AtomsDataModule(L.LightningDataModule):
    """Train/val/test loaders of batched structure graphs.

    Missing ``val``/``test`` are split off ``train`` with a permutation seeded by ``seed``;
    the training order is a function of (``shuffle_seed``, epoch), so resuming is exact.
    ``max_force`` drops training structures whose largest reference force exceeds it (eV/Å);
    validation and test keep everything so metrics stay comparable across force-handling options.
    ``n_dropped``, ``reference_energies`` and ``force_rms`` describe the final training set.
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
    ):
        super().__init__()
        self.cutoff, self.batch_size, self.dtype = cutoff, batch_size, dtype
        self.num_workers, self.shuffle_seed = num_workers, shuffle_seed
        splits = _split(train, val, test, val_fraction, test_fraction, seed)
        self.train_structures, self.val_structures, self.test_structures = splits
        self.n_dropped = 0
        if max_force is not None:
            self.train_structures, self.n_dropped = max_force_filter(
                self.train_structures, max_force
            )
        if not self.train_structures:
            raise ValueError(f"no training structures left (max_force={max_force})")
        self.reference_energies = fit_reference_energies(self.train_structures)
        self.force_rms = force_rms(self.train_structures)
        self.datasets: dict[str, AtomsDataset] = {}

    @property
    def dropped_fraction(self) -> float:
        """Fraction of the training split the max-force filter removed."""
        return self.n_dropped / (self.n_dropped + len(self.train_structures))

    @classmethod
    def from_source(
        cls, name: str = "emt", train=None, test=None, source: dict | None = None, **kwargs
    ) -> AtomsDataModule:
        """Build from config-like arguments; ``source`` goes to :func:`load_structures`."""
        source = dict(source or {}, cutoff=kwargs.get("cutoff", 5.0))
        train_structures, test_structures = load_structures(name, train, test, **source)
        return cls(train_structures, test=test_structures, **kwargs)

    def setup(self, stage: str | None = None) -> None:
        """Neighbour lists are built once per split, on first use."""
        for split in ("train", "val", "test"):
            if split not in self.datasets:
                structures = getattr(self, f"{split}_structures")
                self.datasets[split] = AtomsDataset(structures, self.cutoff, self.dtype)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        dataset = self.datasets[split]
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


def _split(train, val, test, val_fraction, test_fraction, seed):
    """Seeded split of whatever of val/test was not given."""
    order = np.random.default_rng(seed).permutation(len(train))
    n_test = 0 if test is not None else int(round(test_fraction * len(train)))
    n_val = 0 if val is not None else int(round(val_fraction * len(train)))
    pick = [train[k] for k in order]
    test = test if test is not None else pick[:n_test]
    val = val if val is not None else pick[n_test : n_test + n_val]
    return pick[n_test + n_val :], val, test
