"""Atomistic data: EMT-generated and file-read structures, leak-free splits, neighbour-list
graphs, DataModule."""

from data.atoms.datamodule import TYPE_KEY, AtomsDataModule, load_structures
from data.atoms.emt import (
    FCC_METALS,
    emt_dataset,
    generate_emt_dataset,
    lindemann_ratio,
    nearest_neighbour_distance,
)
from data.atoms.graph import (
    AtomsDataset,
    atoms_to_graph,
    collate_atoms,
    min_pair_distance,
    neighbour_list,
)
from data.atoms.readers import (
    DataError,
    LabelKeys,
    check_cutoff,
    check_elements,
    fit_reference_energies,
    force_rms,
    force_scale,
    max_force_filter,
    read_structures,
    source,
)
from data.atoms.splits import matched_rmsd, nearest_rmsd, split_structures

__all__ = [
    "FCC_METALS",
    "TYPE_KEY",
    "AtomsDataModule",
    "AtomsDataset",
    "DataError",
    "LabelKeys",
    "atoms_to_graph",
    "check_cutoff",
    "check_elements",
    "collate_atoms",
    "emt_dataset",
    "fit_reference_energies",
    "force_rms",
    "force_scale",
    "generate_emt_dataset",
    "lindemann_ratio",
    "load_structures",
    "matched_rmsd",
    "max_force_filter",
    "min_pair_distance",
    "nearest_neighbour_distance",
    "nearest_rmsd",
    "neighbour_list",
    "read_structures",
    "source",
    "split_structures",
]
