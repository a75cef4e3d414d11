"""Energy + force (+ stress) loss for interatomic potentials, with optional force-residual
clipping.

Defaults ``energy_weight=0.01, force_weight=1`` keep MACE's 1:100 ratio: the per-atom energy
MSE (eV²) is typically ~100x smaller than the per-component force MSE (eV²/Å²) once trained,
and MD quality is decided by forces, so forces dominate (SchNetPack's 0.01:0.99 is the same
idea). The energy term still pins the constant that forces cannot see. The overall scale is
irrelevant to Adam but not to gradient clipping: with force weight 1 a SchNet's gradient norm
on EMT Cu is O(1-10), so a ``max_norm`` of 1 clips the outlier-driven steps.

``force_clip`` (δ, eV/Å) makes the force term Huber-like on each atom's error-vector norm
``|r|``: ``|r|²`` below δ, ``δ(2|r| - δ)`` above (same value and slope at δ). A close-approach
configuration with a 50 eV/Å residual then pulls on the weights with a bounded gradient
instead of dominating the batch; ``force_clipped_fraction`` reports how often that happens.

``stress_weight`` multiplies the mean squared stress component (eV²/Å⁶; MACE's choice of
units) of batches whose structures all have a stress label. The weights are plain attributes so
that :class:`~pipelines.mlip.module.LossWeightSchedule` can raise the energy weight late in
training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class EnergyForceLoss:
    """Callable ``(pred, batch) -> dict`` of loss parts; ``loss`` is the one to minimise."""

    energy_weight: float = 0.01
    force_weight: float = 1.0
    force_clip: float | None = None
    stress_weight: float = 0.0

    def __call__(self, pred: dict, batch: dict) -> dict[str, torch.Tensor]:
        """Energies enter in float64 (absolute totals); the loss is float64."""
        energy_err = (pred["energy"] - batch["energy"]) / batch["n_atoms"]
        energy_mse = (energy_err**2).mean()
        sq = ((pred["forces"] - batch["forces"]) ** 2).sum(dim=-1)
        force_term, clipped = self._force_term(sq)
        loss = self.energy_weight * energy_mse + self.force_weight * force_term
        parts = {
            "energy_mse": energy_mse,
            "force_loss": force_term,
            "force_mse": sq.detach().mean() / 3,
            "force_clipped_fraction": clipped,
        }
        if "stress" in pred and "stress" in batch:
            stress_mse = ((pred["stress"] - batch["stress"]) ** 2).mean()
            loss = loss + self.stress_weight * stress_mse
            parts["stress_mse"] = stress_mse
        return {"loss": loss, **parts}

    def wants_stress(self, batch: dict) -> bool:
        """Whether the model must compute stress for this batch's loss."""
        return self.stress_weight > 0 and "stress" in batch

    def _force_term(self, sq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean per-component force error (plain or Huber-capped) and the capped fraction."""
        if self.force_clip is None:
            return sq.mean() / 3, sq.new_zeros(())
        delta = self.force_clip
        # clamp before sqrt: the gradient of |r| at r = 0 would be NaN
        norm = sq.clamp_min(1e-24).sqrt()
        capped = norm > delta
        huber = torch.where(capped, delta * (2 * norm - delta), sq)
        return huber.mean() / 3, capped.float().mean()
