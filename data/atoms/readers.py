"""Reading labelled structures (extxyz, ASE databases) and the checks that reject bad data early.

Every structure leaves here with a ``SinglePointCalculator`` holding ``energy`` and ``forces``
(and ``stress`` when the file has it), wherever the file kept them, so the rest of the code reads
labels one way, and with ``info["source"]`` naming its file and frame. Errors are
:class:`DataError`: they name the file and the frame index so a user can find the bad frame.

Where labels are looked up (``keys``, the config's ``energy_key`` ... ``virial_key``):

- extxyz: ``atoms.info`` (per structure) and ``atoms.arrays`` (per atom);
- ASE database: the row's ``key_value_pairs`` and its ``data`` (per-atom arrays by shape);
- then, for the standard names only (``energy``, ``forces``, ``stress``), the calculator results
  ASE attaches on reading. A custom key (``REF_energy``) never falls back to the calculator,
  whose numbers may be a model's prediction rather than the reference, and a key found in the
  frame wins over the calculator's value.

``virial`` (eV, as in MACE's extxyz files) becomes the stress ``-virial / volume``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ase.io
import numpy as np
import vesin
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import chemical_symbols
from ase.db import connect
from ase.io.formats import string2index
from ase.stress import voigt_6_to_full_3x3_stress

from data.atoms.graph import min_pair_distance, neighbour_list

_FORMATS = {".xyz": "extxyz", ".extxyz": "extxyz", ".db": "db"}
COINCIDENT = 0.1  # Å: closer atoms are a broken frame (NaN directions, infinite forces)


class DataError(ValueError):
    """A bad structure or file: ``where`` (file and frame), what is wrong, what is allowed."""

    def __init__(self, where: str, problem: str, allowed: str = "a labelled structure"):
        self.where, self.problem, self.allowed = where, problem, allowed
        super().__init__(f"{where}: {problem}; expected {allowed}")


@dataclass(frozen=True)
class LabelKeys:
    """Where a file keeps each label (``stress``/``virial`` may be absent from a frame)."""

    energy: str = "energy"
    forces: str = "forces"
    stress: str = "stress"
    virial: str = "virial"


def source(atoms: Atoms, default: str = "structure") -> str:
    """The file and frame a structure came from."""
    return atoms.info.get("source", default)


def read_structures(
    path: str | Path,
    keys: LabelKeys | None = None,
    index: str | int = ":",
    cutoff: float | None = None,
) -> list[Atoms]:
    """Frames with energies and forces (and stress where labelled) from extxyz or an ASE db.

    Each frame is checked (labels present, finite, of the right shape; positions finite; no two
    atoms closer than 0.1 Å). With ``cutoff`` set, a structure in which no atom has a neighbour
    within it is rejected: a model would see only isolated atoms.
    """
    path, keys = Path(path), keys or LabelKeys()
    if path.stat().st_size == 0:
        raise DataError(str(path), "empty file", "a file with labelled structures")
    is_db = _FORMATS.get(path.suffix.lower()) == "db"
    frames = _read_db(path, index) if is_db else _read(path, index)
    if not frames:
        raise DataError(str(path), f"no structures (index={index!r})", "at least one frame")
    structures = [_labelled(a, f"{path} frame {k}", keys) for k, a in enumerate(frames)]
    if cutoff is not None:
        check_cutoff(structures, cutoff)
    return structures


def _read(path: Path, index) -> list[Atoms]:
    frames = ase.io.read(path, index=index, format=_FORMATS.get(path.suffix.lower()))
    return [frames] if isinstance(frames, Atoms) else list(frames)


def _read_db(path: Path, index) -> list[Atoms]:
    """Rows as Atoms with ``key_value_pairs`` in ``info`` and ``data`` in ``info``/``arrays``
    (an entry with one row per atom is per-atom), which ``ase.io.read`` would drop."""
    with connect(path) as db:
        rows = list(db.select())
    picked = string2index(index) if isinstance(index, str) else index
    rows = rows[picked] if isinstance(picked, slice) else [rows[picked]]
    frames = []
    for row in rows:
        atoms = row.toatoms()
        atoms.info.update(row.key_value_pairs)
        for key, value in (row.data or {}).items():
            value = np.asarray(value)
            if value.ndim >= 1 and value.shape[0] == len(atoms):
                atoms.arrays[key] = value
            else:
                atoms.info[key] = value
        frames.append(atoms)
    return frames


def _labelled(atoms: Atoms, where: str, keys: LabelKeys) -> Atoms:
    n = len(atoms)
    if not np.isfinite(atoms.positions).all():
        raise DataError(where, "NaN or infinite positions", "finite positions")
    energy = _lookup(atoms, keys.energy, "energy", atoms.info)
    forces = _lookup(atoms, keys.forces, "forces", atoms.arrays)
    if energy is None:
        raise DataError(where, f"no energy (looked for '{keys.energy}')", "an energy label")
    if forces is None:
        raise DataError(where, f"no forces (looked for '{keys.forces}')", "a forces label")
    energy, forces = np.asarray(energy, dtype=float), np.asarray(forces, dtype=float)
    if energy.size != 1:
        raise DataError(where, f"energy has shape {energy.shape}", "a scalar")
    if forces.shape != (n, 3):
        raise DataError(where, f"forces have shape {forces.shape}", f"({n}, 3)")
    if not np.isfinite(energy).all() or not np.isfinite(forces).all():
        raise DataError(where, "NaN or infinite energy or forces", "finite labels")
    results = {"energy": float(energy.item()), "forces": forces}
    stress = _stress(atoms, keys, where)
    if stress is not None:
        results["stress"] = stress
    _check_coincident(atoms, where)
    out = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    out.info.update({k: v for k, v in atoms.info.items() if np.isscalar(v)}, source=where)
    out.calc = SinglePointCalculator(out, **results)
    return out


def _lookup(atoms: Atoms, key: str, result_name: str, store: dict):
    """A label from the frame's own data; calculator results only for the standard name."""
    if key in store:
        return store[key]
    if key == result_name and atoms.calc is not None:
        return atoms.calc.results.get(result_name)
    return None


def _stress(atoms: Atoms, keys: LabelKeys, where: str) -> np.ndarray | None:
    """Full 3x3 stress (eV/Å³) from a stress label, else from a virial label, else None."""
    stress = _lookup(atoms, keys.stress, "stress", atoms.info)
    virial = atoms.info.get(keys.virial)
    if stress is None and virial is None:
        return None
    label = keys.stress if stress is not None else keys.virial
    value = np.asarray(stress if stress is not None else virial, dtype=float)
    if value.shape == (6,):
        value = voigt_6_to_full_3x3_stress(value)
    elif value.size == 9:
        value = value.reshape(3, 3)
    else:
        raise DataError(where, f"{label} has shape {value.shape}", "6 (Voigt), 9 or 3x3 values")
    if not np.isfinite(value).all():
        raise DataError(where, f"NaN or infinite {label}", "finite labels")
    if stress is None:
        if not atoms.pbc.all():
            raise DataError(where, "a virial on a cell not periodic in all directions",
                            "a fully periodic cell for stress")
        value = -value / atoms.get_volume()
    return value


def _check_coincident(atoms: Atoms, where: str) -> None:
    if len(atoms) < 2:
        return
    nl = vesin.NeighborList(cutoff=COINCIDENT, full_list=False)
    i, j, d = nl.compute(atoms.positions, atoms.cell.array, atoms.pbc, quantities="ijd")
    if len(d):
        k = int(np.argmin(d))
        first, second = sorted((int(i[k]), int(j[k])))
        raise DataError(where, f"atoms {first} and {second} are {float(d[k]):.3f} Å apart",
                        f"no two atoms closer than {COINCIDENT} Å")


def check_cutoff(structures: list[Atoms], cutoff: float) -> None:
    """Reject structures with no pair within ``cutoff`` (a cutoff below the nearest distance)."""
    for k, atoms in enumerate(structures):
        if len(atoms) < 2 and not atoms.pbc.any():
            continue
        i, _, _ = neighbour_list(atoms, cutoff)
        if len(i) == 0:
            nearest = min_pair_distance(atoms)
            raise DataError(source(atoms, f"structure {k}"),
                            f"cutoff {cutoff} Å is smaller than the nearest-neighbour distance "
                            f"{nearest:.3f} Å; no atom has a neighbour",
                            "a model cutoff above the nearest-neighbour distance")


def check_elements(structures: list[Atoms], known: set[int], split: str) -> None:
    """Reject ``split`` structures holding an element the training structures never had."""
    for k, atoms in enumerate(structures):
        unseen = sorted(set(atoms.numbers.tolist()) - known)
        if unseen:
            symbols = ", ".join(chemical_symbols[z] for z in unseen)
            allowed = ", ".join(chemical_symbols[z] for z in sorted(known))
            raise DataError(source(atoms, f"{split} structure {k}"),
                            f"element {symbols} never occurs in the training structures",
                            f"elements the model is trained on ({allowed})")


def fit_reference_energies(structures: list[Atoms]) -> dict[int, float]:
    """Per-element energies by least squares on composition counts, in float64.

    Subtracting them leaves the small interaction part for the model to learn. With one element
    this is the mean energy per atom.
    """
    elements = sorted({int(z) for a in structures for z in a.numbers})
    counts = np.array([[np.sum(a.numbers == z) for z in elements] for a in structures], float)
    energies = np.array([a.get_potential_energy() for a in structures], dtype=np.float64)
    coef, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return {z: float(c) for z, c in zip(elements, coef, strict=True)}


def force_rms(structures: list[Atoms]) -> float:
    """Root mean square force component."""
    forces = np.concatenate([a.get_forces() for a in structures])
    return float(np.sqrt(np.mean(forces**2)))


def force_scale(structures: list[Atoms]) -> float:
    """Robust scale of the force components (eV/Å): ``median(|F|) / 0.6745``, the standard
    deviation for Gaussian components. The natural scale of a model's per-atom energy, which a
    few close-approach atoms with 50 eV/Å forces would set if it were the RMS."""
    forces = np.abs(np.concatenate([a.get_forces() for a in structures]).ravel())
    scale = float(np.median(forces) / 0.6745)
    return scale if scale > 0 else max(force_rms(structures), 1.0)


def max_force_filter(structures: list[Atoms], max_force: float) -> tuple[list[Atoms], int]:
    """Drop structures whose largest reference force norm exceeds ``max_force`` (eV/Å).

    Returns the kept structures and how many were dropped.
    """
    kept = [a for a in structures if np.linalg.norm(a.get_forces(), axis=1).max() <= max_force]
    return kept, len(structures) - len(kept)
