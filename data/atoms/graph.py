"""Periodic neighbour lists and batched graphs of atoms, as tensors a model can differentiate.

The neighbour list (who neighbours whom, through which periodic image) is integer data computed
once with vesin on numpy positions. Edge vectors are rebuilt in torch by the model as
``pos[j] - pos[i] + shifts @ cell`` so they carry gradients to positions (forces) and to a
strain of the cell (stress).

Each structure's directed edges are its ``P`` pairs followed by the same pairs reversed, so
edges ``e`` and ``e + P`` are one pair with one distance. A batch carries ``pair_first`` (the
forward edge of each pair) and ``pair_index`` (the pair of each edge): models compute their
radial filters once per pair, half the work of once per edge.
"""

from __future__ import annotations

import numpy as np
import torch
import vesin
from ase import Atoms
from ase.stress import voigt_6_to_full_3x3_stress
from torch.utils.data import Dataset

LABEL_KEYS = ("energy", "forces", "stress")


def neighbour_list(atoms: Atoms, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full neighbour list ``(i, j, S)`` within ``cutoff``: the ``P`` pairs of the half list,
    then the same pairs reversed (``j, i, -S``)."""
    nl = vesin.NeighborList(cutoff=float(cutoff), full_list=False)
    i, j, shifts = nl.compute(atoms.positions, atoms.cell.array, atoms.pbc, quantities="ijS")
    i, j, shifts = i.astype(np.int64), j.astype(np.int64), shifts.astype(np.int64)
    return np.concatenate([i, j]), np.concatenate([j, i]), np.concatenate([shifts, -shifts])


def min_pair_distance(atoms: Atoms, search_cutoff: float = 4.0, max_cutoff: float = 64.0) -> float:
    """Shortest interatomic distance including periodic images (minimum image and beyond).

    The search radius doubles until a pair is found, so sparse structures cost little more than
    dense ones; ``inf`` means no pair within ``max_cutoff`` (e.g. a single isolated atom).
    """
    cutoff = search_cutoff
    while cutoff <= max_cutoff:
        nl = vesin.NeighborList(cutoff=cutoff, full_list=False)
        (d,) = nl.compute(atoms.positions, atoms.cell.array, atoms.pbc, quantities="d")
        if len(d):
            return float(d.min())
        cutoff *= 2
    return float("inf")


def atoms_to_graph(
    atoms: Atoms, cutoff: float, dtype: torch.dtype = torch.float32, labels: bool = True
) -> dict[str, torch.Tensor]:
    """One structure as a dict of tensors; labels come from ``atoms.calc.results`` when asked."""
    i, j, shifts = neighbour_list(atoms, cutoff)
    graph = {
        "z": torch.as_tensor(atoms.numbers, dtype=torch.long),
        "pos": torch.as_tensor(atoms.positions, dtype=dtype),
        "cell": torch.as_tensor(atoms.cell.array, dtype=dtype).unsqueeze(0),
        "pbc": torch.as_tensor(atoms.pbc, dtype=torch.bool).unsqueeze(0),
        "n_atoms": torch.tensor([len(atoms)], dtype=torch.long),
        "edge_index": torch.as_tensor(np.stack([i, j])),
        "shifts": torch.as_tensor(shifts),
        "n_pairs": torch.tensor([len(i) // 2], dtype=torch.long),
    }
    if labels:
        graph.update(_label_tensors(atoms, dtype))
    return graph


def _label_tensors(atoms: Atoms, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Energies stay float64 whatever ``dtype``: a total energy of -1.6e7 eV has 1-2 eV of
    float32 resolution, more than the interaction energy a model learns."""
    results = atoms.calc.results if atoms.calc is not None else {}
    out = {
        "energy": torch.tensor([results["energy"]], dtype=torch.float64),
        "forces": torch.as_tensor(results["forces"], dtype=dtype),
    }
    if "stress" in results:
        stress = np.asarray(results["stress"])
        if stress.shape == (6,):
            stress = voigt_6_to_full_3x3_stress(stress)
        out["stress"] = torch.as_tensor(stress, dtype=dtype).unsqueeze(0)
    return out


def collate_atoms(graphs: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate structures into one disconnected graph.

    Adds ``batch`` (structure index per atom), offsets ``edge_index`` by the atoms before each
    structure, and adds ``pair_first``/``pair_index`` (see the module docstring). ``stress`` is
    kept only when every structure has it, so a batch never mixes labelled and unlabelled
    stresses.
    """
    counts = torch.cat([g["n_atoms"] for g in graphs])
    offsets = torch.cumsum(counts, 0) - counts
    pairs = torch.cat([g["n_pairs"] for g in graphs])
    pair_offsets = torch.cumsum(pairs, 0) - pairs
    local = torch.arange(int(pairs.max())) if len(pairs) else torch.arange(0)
    batch = {
        "batch": torch.repeat_interleave(torch.arange(len(graphs)), counts),
        "edge_index": torch.cat(
            [g["edge_index"] + o for g, o in zip(graphs, offsets, strict=True)], dim=1
        ),
        "pair_first": torch.cat([local[:p] + 2 * o for p, o in zip(pairs, pair_offsets)]),
        "pair_index": torch.cat([(local[:p] + o).repeat(2) for p, o in zip(pairs, pair_offsets)]),
    }
    for key in ("z", "pos", "cell", "pbc", "n_atoms", "shifts", "n_pairs"):
        batch[key] = torch.cat([g[key] for g in graphs])
    for key in LABEL_KEYS:
        if all(key in g for g in graphs):
            batch[key] = torch.cat([g[key] for g in graphs])
    return batch


class AtomsDataset(Dataset):
    """Labelled structures with neighbour lists precomputed once (positions never move in training).

    ``cutoff`` may exceed the model's cutoff (a skin); the model's smooth cutoff function zeroes
    the extra edges.
    """

    def __init__(self, structures: list[Atoms], cutoff: float, dtype: torch.dtype = torch.float32):
        self.cutoff = cutoff
        self.graphs = [atoms_to_graph(a, cutoff, dtype) for a in structures]

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        return self.graphs[idx]
