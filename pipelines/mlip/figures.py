"""Parity plots of a potential on held-out structures: predicted vs reference energy and forces.

Forces span four decades (thermal 0.1 eV/Å up to 50 eV/Å at close approach), so the force plot
uses symmetric-log axes, linear within ±1 eV/Å, where a linear plot would squeeze every thermal
force into a dot at the origin.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def _parity(ax, ref, pred, label: str, unit: str, mae: str, size: float) -> None:
    lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], color="0.5", lw=1, zorder=0)
    ax.scatter(ref, pred, s=size, alpha=0.5, lw=0)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_box_aspect(1)
    ax.set_xlabel(f"reference {label} ({unit})")
    ax.set_ylabel(f"predicted {label} ({unit})")
    ax.text(0.04, 0.96, mae, transform=ax.transAxes, va="top")


def parity_plots(arrays: dict[str, np.ndarray], out_dir: str | Path) -> list[Path]:
    """``parity_energy.png`` (eV/atom) and ``parity_forces.png`` (components, eV/Å) from
    ``energy_ref``/``energy_pred`` (per atom) and ``forces_ref``/``forces_pred`` arrays."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    e_ref, e_pred = arrays["energy_ref"], arrays["energy_pred"]
    f_ref, f_pred = arrays["forces_ref"].ravel(), arrays["forces_pred"].ravel()

    fig = Figure(figsize=(4.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    mae = f"MAE {1000 * np.abs(e_pred - e_ref).mean():.2f} meV/atom\n{len(e_ref)} structures"
    _parity(ax, e_ref, e_pred, "energy", "eV/atom", mae, size=12)
    ax.set_title("Energy per atom, test set")
    energy_path = out_dir / "parity_energy.png"
    fig.savefig(energy_path, dpi=150)

    fig = Figure(figsize=(4.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    mae = f"MAE {1000 * np.abs(f_pred - f_ref).mean():.1f} meV/Å\n{len(f_ref)} components"
    _parity(ax, f_ref, f_pred, "force component", "eV/Å", mae, size=3)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_title("Forces, test set (symlog beyond ±1 eV/Å)")
    forces_path = out_dir / "parity_forces.png"
    fig.savefig(forces_path, dpi=150)
    return [energy_path, forces_path]
