"""Offline training data: structures labelled by ASE's EMT calculator, cached as extxyz.

EMT is cheap (ms per 32-atom cell), so a seeded generator can cover what a potential must see:
thermal MD of the solid, a liquid, strained and compressed cells, vacancies, surfaces, and a
small, explicitly sized subset of close-approach pairs whose repulsive forces reach tens of
eV/Å (the outliers the force-handling options of the mlip pipeline are about).

Held-out frames must not be near-copies of training frames. Each MD run is one *group*
(``info["group"]``); its frames are ``sample_interval`` (default 50) steps apart, and the
pipeline splits by group, so frames of one trajectory never straddle train and test
(:func:`data.atoms.splits.nearest_rmsd` measures the closest match).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import tempfile
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms, units
from ase.build import bulk, fcc100, fcc111
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_numbers, reference_states
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

FCC_METALS = ("Ag", "Al", "Au", "Cu", "Ni", "Pd", "Pt")
MELTING_POINT_K = {"Ag": 1235, "Al": 933, "Au": 1337, "Cu": 1358, "Ni": 1728, "Pd": 1828,
                   "Pt": 2041}  # experimental; EMT's own melting points differ somewhat
_ADSORBATES = ("H", "C", "N", "O")
DEFAULT_MIX = {"bulk": 0.35, "strained": 0.2, "vacancy": 0.1, "surface": 0.15, "melt": 0.15,
               "close": 0.05}
_GENERATOR_VERSION = 2


def generate_emt_dataset(
    element: str = "Cu",
    n_configs: int = 1000,
    seed: int = 0,
    size: tuple[int, int, int] = (2, 2, 2),
    temperatures: tuple[float, ...] = (300, 600, 900, 1200),
    mix: dict[str, float] | None = None,
    snapshots_per_run: int = 10,
    equilibration_steps: int = 100,
    sample_interval: int = 50,
    timestep_fs: float = 2.0,
    melt_factor: float = 1.35,
    melt_equilibration_steps: int = 300,
    close_range: tuple[float, float] = (1.2, 1.8),
    max_strain: float = 0.04,
    scale_range: tuple[float, float] = (0.94, 1.03),
    vacuum: float = 6.0,
) -> list[Atoms]:
    """Seeded EMT-labelled structures of one fcc metal (same arguments give the same data).

    ``mix`` sets the fraction of each kind: ``bulk`` (Langevin MD of the cubic supercell
    ``size``), ``strained`` (random shear up to ``max_strain`` and linear scale in
    ``scale_range``), ``vacancy`` (one or two atoms removed), ``surface`` (an fcc(100) or (111)
    slab, ``size[0] x size[1]`` wide and ``2 * size[2]`` layers, with ``vacuum`` on each side,
    periodic in all directions), ``melt`` (a liquid: atoms placed at random in the 2 %
    expanded supercell, then MD at ``melt_factor`` times the melting point for
    ``melt_equilibration_steps``; a perfect lattice superheats far above it within any
    affordable run) and ``close`` (a bulk MD snapshot with one nearest-neighbour pair pushed to a
    distance in ``close_range``). Each solid MD run starts from Maxwell-Boltzmann velocities at
    one of ``temperatures`` (in turn), equilibrates ``equilibration_steps``, then yields
    ``snapshots_per_run`` frames ``sample_interval`` steps apart; the frames of a run share
    ``info["group"]`` (``"{kind}-{run}"``).
    """
    _check_element(element)
    rng = np.random.default_rng(seed)
    counts = _split_counts(n_configs, mix or DEFAULT_MIX)
    builders = {
        "bulk": lambda: _supercell(element, size),
        "strained": lambda: _strained(_supercell(element, size), rng, max_strain, scale_range),
        "vacancy": lambda: _vacancy(_supercell(element, size), rng),
        "surface": lambda: _slab(element, size, rng, vacuum),
        "melt": lambda: _random_packing(_supercell(element, size), rng),
        "close": lambda: _supercell(element, size),
    }
    md = {"snapshots": snapshots_per_run, "interval": sample_interval,
          "timestep_fs": timestep_fs}
    melt_temperature = melt_factor * MELTING_POINT_K[element]
    structures = []
    for kind, count in counts.items():
        for run, n in enumerate(_run_sizes(count, snapshots_per_run)):
            melt = kind == "melt"
            temperature = melt_temperature if melt else temperatures[run % len(temperatures)]
            steps = melt_equilibration_steps if melt else equilibration_steps
            for atoms in _md_snapshots(builders[kind](), temperature, n, rng, md, steps):
                if kind == "close":
                    atoms = _push_pair(atoms, rng, close_range)
                structures.append(_label(atoms, kind, temperature, f"{kind}-{run}"))
    return structures


def nearest_neighbour_distance(element: str) -> float:
    """Ideal fcc nearest-neighbour distance (Å) of ``element``."""
    return reference_states[atomic_numbers[element]]["a"] / np.sqrt(2)


def lindemann_ratio(frames: list[Atoms], nn_distance: float) -> float:
    """RMS displacement of atoms about their mean positions over ``frames`` (one trajectory,
    unwrapped positions, centre-of-mass drift removed) over the nearest-neighbour distance.
    A solid stays below ~0.15 up to its melting point; in a liquid atoms diffuse and it grows
    with the length of the trajectory."""
    positions = np.stack([a.positions for a in frames])
    positions = positions - positions.mean(axis=1, keepdims=True)
    deviation = positions - positions.mean(axis=0)
    return float(np.sqrt((deviation**2).sum(-1).mean()) / nn_distance)


def _check_element(element: str) -> None:
    if element in FCC_METALS:
        return
    allowed = ", ".join(FCC_METALS)
    if element in _ADSORBATES:
        raise ValueError(
            f"EMT element {element!r}: its parameters describe adsorbates on the fcc metals, not a "
            f"solid or gas this generator samples; allowed: {allowed}"
        )
    raise ValueError(f"EMT element {element!r}: EMT has no parameters for it; allowed: {allowed}")


def _split_counts(n: int, mix: dict[str, float]) -> dict[str, int]:
    """Largest-remainder split of ``n`` over the kinds of ``mix`` (fractions need not sum to 1)."""
    unknown = set(mix) - set(DEFAULT_MIX)
    if unknown:
        raise ValueError(f"unknown structure kinds {sorted(unknown)}; known: {list(DEFAULT_MIX)}")
    total = sum(mix.values())
    exact = {k: n * v / total for k, v in mix.items()}
    counts = {k: int(v) for k, v in exact.items()}
    by_remainder = sorted(exact, key=lambda k: counts[k] - exact[k])
    for k in by_remainder[: n - sum(counts.values())]:
        counts[k] += 1
    return counts


def _run_sizes(count: int, per_run: int) -> list[int]:
    full, rest = divmod(count, per_run)
    return [per_run] * full + ([rest] if rest else [])


def _supercell(element: str, size: tuple[int, int, int]) -> Atoms:
    return bulk(element, "fcc", cubic=True).repeat(size)


def _strained(atoms: Atoms, rng: np.random.Generator, max_strain: float, scale_range) -> Atoms:
    shear = rng.uniform(-max_strain, max_strain, (3, 3))
    deformation = rng.uniform(*scale_range) * (np.eye(3) + 0.5 * (shear + shear.T))
    atoms.set_cell(atoms.cell.array @ deformation, scale_atoms=True)
    return atoms


def _vacancy(atoms: Atoms, rng: np.random.Generator) -> Atoms:
    del atoms[rng.choice(len(atoms), size=rng.integers(1, 3), replace=False).tolist()]
    return atoms


def _slab(element: str, size, rng: np.random.Generator, vacuum: float) -> Atoms:
    build = fcc100 if rng.random() < 0.5 else fcc111
    return build(element, (size[0], size[1], 2 * size[2]), vacuum=vacuum, periodic=True)


def _random_packing(lattice: Atoms, rng: np.random.Generator, expansion: float = 1.02,
                    min_distance: float = 0.7, attempts: int = 10_000) -> Atoms:
    """The atoms of ``lattice`` placed uniformly at random in its cell expanded by
    ``expansion``, none closer than ``min_distance`` nearest-neighbour distances (random
    sequential addition; about a third below its jamming density, so it always finishes)."""
    cell = lattice.cell.array * expansion
    nn = np.min(lattice.get_all_distances(mic=True)[np.triu_indices(len(lattice), 1)])
    fractional = [rng.random(3)]
    for _ in range(attempts * len(lattice)):
        if len(fractional) == len(lattice):
            break
        trial = rng.random(3)
        delta = np.asarray(fractional) - trial
        delta -= np.round(delta)
        if np.linalg.norm(delta @ cell, axis=1).min() >= min_distance * nn:
            fractional.append(trial)
    if len(fractional) < len(lattice):
        raise RuntimeError("random packing did not finish; lower min_distance")
    return Atoms(lattice.numbers, scaled_positions=fractional, cell=cell, pbc=True)


def _md_snapshots(atoms: Atoms, temperature: float, n: int, rng, md: dict,
                  equilibration: int) -> list[Atoms]:
    """Langevin NVT frames; strong friction (1/50 fs) thermalises within the equilibration."""
    atoms.calc = EMT()
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    dyn = Langevin(
        atoms,
        md["timestep_fs"] * units.fs,
        temperature_K=temperature,
        friction=0.02 / units.fs,
        fixcm=False,
        rng=rng,
    )
    dyn.run(equilibration)
    frames = []
    for _ in range(n):
        dyn.run(md["interval"])
        frames.append(atoms.copy())
    return frames


def _push_pair(atoms: Atoms, rng: np.random.Generator, close_range) -> Atoms:
    """Move atom ``i`` and its nearest neighbour symmetrically to a random short distance."""
    i = int(rng.integers(len(atoms)))
    vectors = atoms.get_distances(i, range(len(atoms)), mic=True, vector=True)
    dist = np.linalg.norm(vectors, axis=1)
    dist[i] = np.inf
    j = int(np.argmin(dist))
    unit = vectors[j] / dist[j]
    step = 0.5 * (dist[j] - rng.uniform(*close_range)) * unit
    positions = atoms.positions
    positions[i] += step
    positions[j] -= step
    atoms.positions = positions
    return atoms


def _label(atoms: Atoms, kind: str, temperature: float, group: str) -> Atoms:
    out = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    out.calc = EMT()
    results = {
        "energy": out.get_potential_energy(),
        "forces": out.get_forces(),
        "stress": out.get_stress(),
    }
    out.calc = SinglePointCalculator(out, **results)
    out.info.update(config_type=kind, group=group, temperature_K=float(temperature))
    return out


def emt_dataset(cache_dir: str | Path, **kwargs) -> list[Atoms]:
    """``generate_emt_dataset(**kwargs)`` cached in ``cache_dir`` as extxyz.

    The file name hashes every generation parameter (defaults included) and the generator
    version, so a changed setting never reads stale data. The file is written to a temporary
    name and renamed, so concurrent jobs never read a half-written file. Always returns what the
    file holds, so a first and a cached call give identical structures.
    """
    params = inspect.signature(generate_emt_dataset).bind(**kwargs)
    params.apply_defaults()
    spec = dict(params.arguments, version=_GENERATOR_VERSION)
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    path = Path(cache_dir) / f"emt_{spec['element']}_{spec['n_configs']}_{digest[:12]}.extxyz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, generate_emt_dataset(**params.arguments))
    return ase.io.read(path, index=":", format="extxyz")


def _write_atomically(path: Path, structures: list[Atoms]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            ase.io.write(f, structures, format="extxyz")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
