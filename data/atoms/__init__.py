"""Atomistic data: EMT-generated and file-read structures, neighbour-list graphs, DataModule."""

from data.atoms.datamodule import AtomsDataModule, load_structures
from data.atoms.emt import FCC_METALS, emt_dataset, generate_emt_dataset
from data.atoms.graph import (
    AtomsDataset,
    atoms_to_graph,
    collate_atoms,
    min_pair_distance,
    neighbour_list,
)
from data.atoms.readers import (
    check_cutoff,
    fit_reference_energies,
    force_rms,
    max_force_filter,
    read_structures,
)

__all__ = [
    "FCC_METALS",
    "AtomsDataModule",
    "AtomsDataset",
    "atoms_to_graph",
    "check_cutoff",
    "collate_atoms",
    "emt_dataset",
    "fit_reference_energies",
    "force_rms",
    "generate_emt_dataset",
    "load_structures",
    "max_force_filter",
    "min_pair_distance",
    "neighbour_list",
    "read_structures",
]
