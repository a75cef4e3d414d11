"""A trained model as an ASE calculator: the hand-off from training to MD."""

from __future__ import annotations

import copy

import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.data import chemical_symbols
from ase.stress import full_3x3_to_voigt_6_stress

from data.atoms import atoms_to_graph, collate_atoms
from pipelines.mlip.checkpoint import load_model
from pipelines.mlip.models import AtomisticModel


class MLIPCalculator(Calculator):
    """Energy (eV), forces (eV/Å) and, for fully periodic cells, stress (eV/Å³).

    The model is deep-copied and put in eval mode, so training it further (or moving it) never
    changes a running MD. Results are cached by ASE's ``check_state``: asking again for a
    property of unchanged atoms does not call the model, and one call fills energy and forces
    together. The neighbour list is rebuilt on every call, so ``cutoff`` is just the model's.
    An element the model never saw in training is refused: its energy would be made up.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(
        self,
        model: AtomisticModel,
        cutoff: float | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        dtype = dtype or next(model.parameters()).dtype
        self.cutoff = float(cutoff if cutoff is not None else model.cutoff)
        if self.cutoff < model.cutoff:
            raise ValueError(
                f"neighbour cutoff {self.cutoff} Å is below the model cutoff {model.cutoff} Å"
            )
        self.device, self.dtype = torch.device(device), dtype
        self.model = copy.deepcopy(model).to(device=self.device, dtype=dtype).eval()

    @classmethod
    def from_model(cls, model: AtomisticModel, **kwargs) -> MLIPCalculator:
        """Calculator for an in-memory model (checkpoint loaders build on this)."""
        return cls(model, **kwargs)

    @classmethod
    def from_checkpoint(cls, path, **kwargs) -> MLIPCalculator:
        """Calculator for a Lightning checkpoint of the mlip pipeline, or a run directory (the
        checkpoint its summary evaluated; see ``load_model``)."""
        model, _ = load_model(path)
        return cls(model, **kwargs)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        unseen = sorted(set(self.atoms.numbers.tolist()) - set(self.model.elements))
        if self.model.elements and unseen:
            names = ", ".join(chemical_symbols[z] for z in unseen)
            known = ", ".join(chemical_symbols[z] for z in self.model.elements)
            raise ValueError(f"elements {names} were not in this model's training data "
                             f"(trained on {known})")
        want_stress = "stress" in properties
        if want_stress and not self.atoms.pbc.all():
            raise PropertyNotImplementedError("stress needs a cell periodic in all directions")
        graph = atoms_to_graph(self.atoms, self.cutoff, self.dtype, labels=False)
        batch = {k: v.to(self.device) for k, v in collate_atoms([graph]).items()}
        out = self.model(batch, compute_stress=want_stress)
        energy = float(out["energy"].item())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": out["forces"].detach().cpu().double().numpy(),
        }
        if want_stress:
            stress = out["stress"][0].detach().cpu().double().numpy()
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress)
