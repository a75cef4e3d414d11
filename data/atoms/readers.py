"""Reading labelled structures (extxyz, ASE databases) and the checks that reject bad data early.

Every structure leaves here with a ``SinglePointCalculator`` holding ``energy`` and ``forces``
(and ``stress`` when the file has it), wherever the file kept them, so the rest of the code reads
labels one way. Errors name the file and the frame index so a user can find the bad frame.
"""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from data.atoms.graph import min_pair_distance, neighbour_list

_FORMATS = {".xyz": "extxyz", ".extxyz": "extxyz", ".db": "db"}


def read_structures(
    path: str | Path,
    energy_key: str = "energy",
    forces_key: str = "forces",
    index: str | int = ":",
    cutoff: float | None = None,
) -> list[Atoms]:
    """Read frames with energies and forces from an extxyz file or an ASE database.

    Labels are looked up in ``atoms.info[energy_key]`` / ``atoms.arrays[forces_key]`` (e.g.
    ``REF_energy``/``REF_forces``) and, for the default keys, in the calculator results that ASE
    attaches on reading. With ``cutoff`` set, a structure in which no atom has a neighbour
    within it is rejected: a model would see only isolated atoms.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file, no structures")
    frames = ase.io.read(path, index=index, format=_FORMATS.get(path.suffix.lower()))
    frames = [frames] if isinstance(frames, Atoms) else list(frames)
    if not frames:
        raise ValueError(f"{path}: no structures (index={index!r})")
    where = [f"{path} frame {k}" for k in range(len(frames))]
    structures = [
        _labelled(a, w, energy_key, forces_key) for a, w in zip(frames, where, strict=True)
    ]
    if cutoff is not None:
        check_cutoff(structures, cutoff, where)
    return structures


def _labelled(atoms: Atoms, where: str, energy_key: str, forces_key: str) -> Atoms:
    energy = _lookup(atoms, energy_key, "energy", atoms.info)
    forces = _lookup(atoms, forces_key, "forces", atoms.arrays)
    if energy is None:
        raise ValueError(f"{where}: no energy (looked for '{energy_key}')")
    if forces is None:
        raise ValueError(f"{where}: no forces (looked for '{forces_key}')")
    energy, forces = np.asarray(energy, dtype=float), np.asarray(forces, dtype=float)
    if energy.size != 1:
        raise ValueError(f"{where}: energy has shape {energy.shape}, expected a scalar")
    if forces.shape != (len(atoms), 3):
        raise ValueError(f"{where}: forces have shape {forces.shape}, expected ({len(atoms)}, 3)")
    if not np.isfinite(energy).all() or not np.isfinite(forces).all():
        raise ValueError(f"{where}: NaN or infinite energy or forces")
    results = {"energy": float(energy), "forces": forces}
    stress = atoms.calc.results.get("stress") if atoms.calc is not None else None
    if stress is not None and np.isfinite(stress).all():
        results["stress"] = np.asarray(stress, dtype=float)
    out = atoms.copy()
    out.calc = SinglePointCalculator(out, **results)
    return out


def _lookup(atoms: Atoms, key: str, result_name: str, store: dict):
    """A label from ``info``/``arrays``; calculator results only for the default key name.

    A custom key (``REF_energy``) never silently falls back to the calculator, whose numbers may
    be a model's prediction rather than the reference.
    """
    if key in store:
        return store[key]
    if key == result_name and atoms.calc is not None:
        return atoms.calc.results.get(result_name)
    return None


def check_cutoff(structures: list[Atoms], cutoff: float, where: list[str]) -> None:
    """Reject structures with no pair within ``cutoff`` (a cutoff below the nearest distance)."""
    for atoms, label in zip(structures, where, strict=True):
        if len(atoms) < 2 and not atoms.pbc.any():
            continue
        i, _, _ = neighbour_list(atoms, cutoff)
        if len(i) == 0:
            nearest = min_pair_distance(atoms)
            raise ValueError(
                f"{label}: cutoff {cutoff} Å is smaller than the nearest-neighbour distance "
                f"{nearest:.3f} Å; no atom has a neighbour"
            )


def fit_reference_energies(structures: list[Atoms]) -> dict[int, float]:
    """Per-element energies by least squares on composition counts.

    Subtracting them leaves the small interaction part for the model to learn. With one element
    this is the mean energy per atom.
    """
    elements = sorted({int(z) for a in structures for z in a.numbers})
    counts = np.array([[np.sum(a.numbers == z) for z in elements] for a in structures], float)
    energies = np.array([a.get_potential_energy() for a in structures])
    coef, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return {z: float(c) for z, c in zip(elements, coef, strict=True)}


def force_rms(structures: list[Atoms]) -> float:
    """Root mean square force component, the natural scale of a model's per-atom energy."""
    forces = np.concatenate([a.get_forces() for a in structures])
    return float(np.sqrt(np.mean(forces**2)))


def max_force_filter(structures: list[Atoms], max_force: float) -> tuple[list[Atoms], int]:
    """Drop structures whose largest reference force norm exceeds ``max_force`` (eV/Å).

    Returns the kept structures and how many were dropped.
    """
    kept = [a for a in structures if np.linalg.norm(a.get_forces(), axis=1).max() <= max_force]
    return kept, len(structures) - len(kept)
