"""Energy, force and stress errors in the units summary.json reports, accumulated over a split.

A potential's force error grows with the force: the few close-approach atoms with 20 eV/Å
reference forces can dominate a single MAE or hide behind it. So the force MAE is also reported
per bin of the reference force norm, each with its atom count. Sums are kept in float64 and
reduced across processes (torchmetrics), so a DDP validation gives the single-process numbers.
"""

from __future__ import annotations

import math

import torch
from torchmetrics import Metric

FORCE_BIN_EDGES = (1.0, 5.0, 20.0)  # eV/Å: |F| < 1, 1-5, 5-20, > 20
FORCE_BINS = ("lt1", "1to5", "5to20", "gt20")
HEADLINE = ("energy_mae_mev_per_atom", "energy_rmse_mev_per_atom", "force_mae_mev_per_ang",
            "force_rmse_mev_per_ang", "stress_mae_mev_per_ang3", "stress_rmse_mev_per_ang3")


class EnergyForceMetrics(Metric):
    """MAE and RMSE of energy per atom (meV/atom) and force components (meV/Å), force MAE per
    reference-force bin, and stress-component MAE/RMSE (meV/Å³) over the structures whose batch
    had stress labels (keys present only when some had). ``compute()`` gives NaN for a bin
    without atoms."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        zero = torch.zeros((), dtype=torch.float64)
        for name in ("energy_abs", "energy_sq", "n_structures", "force_abs", "force_sq",
                     "stress_abs", "stress_sq", "n_stress"):
            self.add_state(name, default=zero.clone(), dist_reduce_fx="sum")
        bins = torch.zeros(len(FORCE_BINS), dtype=torch.float64)
        self.add_state("bin_abs", default=bins.clone(), dist_reduce_fx="sum")
        self.add_state("bin_atoms", default=bins.clone(), dist_reduce_fx="sum")

    def update(self, pred: dict, batch: dict) -> None:
        energy_err = ((pred["energy"] - batch["energy"]) / batch["n_atoms"]).detach().double()
        force_err = (pred["forces"] - batch["forces"]).detach().double().abs()
        self.energy_abs += energy_err.abs().sum()
        self.energy_sq += (energy_err**2).sum()
        self.n_structures += energy_err.numel()
        self.force_abs += force_err.sum()
        self.force_sq += (force_err**2).sum()
        edges = torch.tensor(FORCE_BIN_EDGES, dtype=torch.float64, device=force_err.device)
        which = torch.bucketize(batch["forces"].detach().double().norm(dim=-1), edges)
        self.bin_abs += torch.zeros_like(self.bin_abs).index_add(0, which, force_err.sum(-1))
        self.bin_atoms += torch.bincount(which, minlength=len(FORCE_BINS)).double()
        if "stress" in pred and "stress" in batch:
            stress_err = (pred["stress"] - batch["stress"]).detach().double()
            self.stress_abs += stress_err.abs().sum()
            self.stress_sq += (stress_err**2).sum()
            self.n_stress += stress_err.numel()

    def compute(self) -> dict[str, torch.Tensor]:
        n_components = 3 * self.bin_atoms.sum()
        out = {
            "energy_mae_mev_per_atom": 1000 * self.energy_abs / self.n_structures,
            "energy_rmse_mev_per_atom": 1000 * (self.energy_sq / self.n_structures).sqrt(),
            "force_mae_mev_per_ang": 1000 * self.force_abs / n_components,
            "force_rmse_mev_per_ang": 1000 * (self.force_sq / n_components).sqrt(),
        }
        bin_mae = 1000 * self.bin_abs / (3 * self.bin_atoms)
        for k, name in enumerate(FORCE_BINS):
            out[f"force_mae_mev_per_ang_{name}"] = bin_mae[k]
            out[f"force_n_atoms_{name}"] = self.bin_atoms[k]
        if self.n_stress > 0:
            out["stress_mae_mev_per_ang3"] = 1000 * self.stress_abs / self.n_stress
            out["stress_rmse_mev_per_ang3"] = 1000 * (self.stress_sq / self.n_stress).sqrt()
        return out


def as_summary(metrics: dict[str, torch.Tensor], prefix: str) -> dict:
    """Plain floats under ``prefix``; the per-bin figures grouped as
    ``{prefix}force_mae_mev_per_ang_by_force: {bin: {mae_mev_per_ang, n_atoms}}``, the MAE JSON
    null for an empty bin."""
    values = {k: float(v) for k, v in metrics.items()}
    by_force = {
        name: {
            "mae_mev_per_ang": _finite_or_none(values.pop(f"force_mae_mev_per_ang_{name}")),
            "n_atoms": int(values.pop(f"force_n_atoms_{name}")),
        }
        for name in FORCE_BINS
    }
    out = {f"{prefix}{k}": _finite_or_none(v) for k, v in values.items()}
    out[f"{prefix}force_mae_mev_per_ang_by_force"] = by_force
    return out


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else value
