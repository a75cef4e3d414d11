"""NVE molecular dynamics as a check of a potential: does total energy stay conserved?

A potential with discontinuous or inconsistent forces heats or cools an NVE run; one that has
never seen short distances lets atoms fall into each other. Both show up here as a drift (slope
of total energy per atom vs time), a max |ΔE|, or a collapsed pair distance. The default cell is
a rattled 108-atom supercell started at 600 K, so the model is exercised away from the perfect
lattice (where forces vanish by symmetry); the speed is reported as ns/day.

    python -m pipelines.mlip.md --ckpt runs/mlip/<run> --steps 1000
"""

from __future__ import annotations

import argparse
import json
import time

import ase.io
import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet

from data.atoms import min_pair_distance
from pipelines.mlip.calculator import MLIPCalculator
from pipelines.mlip.checkpoint import load_model

TRACE_KEYS = ("time_ps", "total_energy_ev_per_atom", "temperature_K")


class _Stop(Exception):
    """Raised by the observer to end a run that exploded or collapsed."""


def run_nve(
    atoms: Atoms,
    calculator: Calculator,
    steps: int = 1000,
    timestep_fs: float = 1.0,
    temperature_K: float = 600,
    seed: int = 0,
    log_interval: int = 10,
    collapse_distance: float = 0.5,
) -> dict:
    """Velocity-Verlet NVE from Maxwell-Boltzmann velocities; a copy of ``atoms`` moves.

    Returns ``energy_drift_mev_per_atom_per_ps`` (slope of a linear fit of total energy per atom
    vs time), ``max_abs_delta_e_mev_per_atom`` (largest deviation from the start),
    ``min_distance_ang`` (smallest periodic pair distance seen), ``collapsed`` (it fell below
    ``collapse_distance``), ``exploded`` (non-finite energy), ``steps_completed`` and the logged
    trace (``time_ps``, ``total_energy_ev_per_atom``, ``temperature_K``), and ``ns_per_day`` (the
    simulated time over the wall time, observer included). A collapsed or exploded run stops
    early.
    """
    atoms = atoms.copy()
    atoms.calc = calculator
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    Stationary(atoms)
    dyn = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    trace = {"step": [], "etot": [], "temperature": [], "dmin": []}

    def observe():
        trace["step"].append(dyn.nsteps)
        trace["etot"].append(atoms.get_total_energy() / len(atoms))
        trace["temperature"].append(atoms.get_temperature())
        trace["dmin"].append(min_pair_distance(atoms))
        if not np.isfinite(trace["etot"][-1]) or trace["dmin"][-1] < collapse_distance:
            raise _Stop

    dyn.attach(observe, interval=log_interval)
    started = time.perf_counter()
    try:
        dyn.run(steps)
    except _Stop:
        pass
    wall = time.perf_counter() - started
    result = _summary(trace, timestep_fs, collapse_distance)
    simulated_ns = dyn.nsteps * timestep_fs * 1e-6
    result["ns_per_day"] = simulated_ns / (wall / 86400) if wall > 0 else float("nan")
    return result


def _summary(trace: dict, timestep_fs: float, collapse_distance: float) -> dict:
    time_ps = np.array(trace["step"]) * timestep_fs / 1000
    etot = np.array(trace["etot"])
    finite = np.isfinite(etot)
    drift = np.polyfit(time_ps[finite], etot[finite], 1)[0] if finite.sum() > 1 else np.nan
    min_distance = float(min(trace["dmin"]))
    return {
        "energy_drift_mev_per_atom_per_ps": 1000 * float(drift),
        "max_abs_delta_e_mev_per_atom": 1000 * float(np.abs(etot[finite] - etot[0]).max()),
        "min_distance_ang": min_distance,
        "collapsed": min_distance < collapse_distance,
        "exploded": not finite.all(),
        "steps_completed": int(trace["step"][-1]),
        "time_ps": time_ps.tolist(),
        "total_energy_ev_per_atom": etot.tolist(),
        "temperature_K": trace["temperature"],
    }


def md_cell(cfg: dict, structure: str | None = None, repeat: int = 3, rattle: float = 0.05,
            seed: int = 0) -> Atoms:
    """The cell to run, rattled by ``rattle`` Å (Gaussian, seeded): the first frame of
    ``structure``; else for EMT-trained potentials the cubic fcc cell of the training element
    repeated ``repeat`` times (108 atoms); else the first frame of the training file, repeated
    until every side is at least twice the model cutoff."""
    data = cfg.get("data", {})
    if structure is not None:
        atoms = ase.io.read(structure, index=0)
    elif data.get("name") == "emt":
        atoms = bulk(data["element"], "fcc", cubic=True).repeat(repeat)
    elif data.get("train"):
        atoms = ase.io.read(data["train"], index=0)
        if not atoms.pbc.all():
            raise ValueError(f"{data['train']} frame 0 is not periodic: pass --structure")
        widths = atoms.cell.volume / np.linalg.norm(np.cross(atoms.cell[[1, 2, 0]],
                                                              atoms.cell[[2, 0, 1]]), axis=1)
        cutoff = float(cfg.get("model", {}).get("cutoff", 5.0))
        atoms = atoms.repeat([max(1, int(np.ceil(2 * cutoff / w))) for w in widths])
    else:
        raise ValueError(f"data={data.get('name')}: pass --structure, a file with the MD cell")
    atoms = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    atoms.rattle(rattle, seed=seed)
    return atoms


def main(argv: list[str] | None = None) -> dict:
    """``python -m pipelines.mlip.md --ckpt PATH``: NVE with a trained checkpoint, JSON out."""
    parser = argparse.ArgumentParser(description=main.__doc__.split(":")[1].strip())
    parser.add_argument("--ckpt", required=True,
                        help="checkpoint of the mlip pipeline, or its run dir (the summary's)")
    parser.add_argument("--structure", help="extxyz/any ASE file; default: see md_cell")
    parser.add_argument("--rattle", type=float, default=0.05, help="Å, Gaussian")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--timestep-fs", type=float, default=1.0)
    parser.add_argument("--temperature", type=float, default=600.0, help="initial, in K")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--trace", action="store_true", help="include the logged trace")
    args = parser.parse_args(argv)
    model, cfg = load_model(args.ckpt)
    calc = MLIPCalculator(model, device=args.device)
    atoms = md_cell(cfg, args.structure, rattle=args.rattle, seed=args.seed)
    result = run_nve(atoms, calc, args.steps, args.timestep_fs, args.temperature, args.seed)
    if not args.trace:
        result = {k: v for k, v in result.items() if k not in TRACE_KEYS}
    result.update(n_atoms=len(atoms), timestep_fs=args.timestep_fs, checkpoint=args.ckpt)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
