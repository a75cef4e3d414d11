"""SchNet- and PaiNN-style interatomic potentials (MACE in ``mace.py``): per-atom energies,
forces and stress by autograd.

Both models see a structure only through edge vectors ``pos[j] - pos[i] + shifts @ cell`` built
here in torch, so forces are exactly ``-dE/dpos`` and the stress is ``dE/dstrain / V``. Every
radial dependence is multiplied by a cosine cutoff whose value and slope vanish at the cutoff:
an atom crossing the cutoff sphere changes neither energy nor forces abruptly, which keeps NVE
energy conserved.
"""

from __future__ import annotations

import math

import torch
from torch import nn

MAX_Z = 100


def cosine_cutoff(r: torch.Tensor, cutoff: float) -> torch.Tensor:
    """0.5 (cos(pi r / rc) + 1) inside the cutoff, 0 outside; smooth to first order at rc."""
    return torch.where(r < cutoff, 0.5 * (torch.cos(math.pi * r / cutoff) + 1.0), 0.0 * r)


def scatter_sum(src: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Sum rows of ``src`` into ``size`` rows by ``index`` (out of place, double-differentiable)."""
    out = src.new_zeros((size, *src.shape[1:]))
    return out.index_add(0, index, src)


class AtomisticModel(nn.Module):
    """Shared bookkeeping; subclasses only implement :meth:`atomic_energies`.

    The total energy is ``sum_atoms(energy_scale * e_atom + atom_ref[z])``. ``atom_ref`` (fitted
    per-element energies, eV) and ``energy_scale`` (a robust force scale) are set from the
    training data by :meth:`set_energy_reference`, so the network only learns an O(1) residual
    and a checkpoint carries everything needed to predict absolute energies. ``atom_ref`` is
    kept as float64 Python numbers (the module's extra state, untouched by ``.to(float32)``) and
    the energy is summed in float64: a DFT total of -1.6e7 eV has 1-2 eV of float32 resolution,
    far more than the interaction energy the model learns. ``elements`` are those with a
    reference, i.e. the elements seen in training.
    """

    def __init__(self, cutoff: float):
        super().__init__()
        self.cutoff = float(cutoff)
        self.register_buffer("energy_scale", torch.ones(()))
        self.atom_ref: dict[int, float] = {}
        self._ref_table: torch.Tensor | None = None

    @property
    def elements(self) -> list[int]:
        return sorted(self.atom_ref)

    def set_energy_reference(self, atom_ref: dict[int, float], scale: float = 1.0) -> None:
        self.atom_ref = {int(z): float(e) for z, e in atom_ref.items()}
        self._ref_table = None
        self.energy_scale.fill_(scale)

    def get_extra_state(self) -> dict:
        return {"atom_ref": dict(self.atom_ref)}

    def set_extra_state(self, state: dict) -> None:
        self.atom_ref = {int(z): float(e) for z, e in state["atom_ref"].items()}
        self._ref_table = None

    def reference_energy(self, z: torch.Tensor) -> torch.Tensor:
        """Per-atom reference energies in float64 on ``z``'s device."""
        table = self._ref_table
        if table is None or table.device != z.device:
            table = torch.zeros(MAX_Z + 1, dtype=torch.float64)
            for element, energy in self.atom_ref.items():
                table[element] = energy
            self._ref_table = table = table.to(z.device)
        return table[z]

    def atomic_energies(self, z, vec, edge_index, pairs=None) -> torch.Tensor:
        """Per-atom energy (before scale and reference) from edge vectors ``vec`` (i -> j).

        ``pairs`` is ``(pair_first, pair_index)`` when the edges come as pairs and their
        reverses (see ``data.atoms.graph``), so that radial terms can be computed per pair.
        """
        raise NotImplementedError

    def forward(self, batch: dict[str, torch.Tensor], compute_stress: bool = False) -> dict:
        """``{"energy": [n_struct] float64, "forces": [n_atoms, 3]}`` (+ ``"stress"``
        [n_struct, 3, 3], eV/Å³, ASE's sign: positive under tension).

        Gradients are enabled even under ``torch.no_grad`` or ``torch.inference_mode`` (Lightning's
        default for validation) because forces need them; inference tensors are cloned into
        normal ones. The graph of the force computation is kept (for force training) only in
        training mode.
        """
        with torch.inference_mode(False), torch.enable_grad():
            batch = {k: v.clone() if v.is_inference() else v for k, v in batch.items()}
            pos = batch["pos"]
            if not pos.requires_grad:
                pos = pos.detach().requires_grad_(True)
            n_struct = batch["cell"].shape[0]
            strain = pos.new_zeros((n_struct, 3, 3), requires_grad=True) if compute_stress else None
            vec = edge_vectors(pos, batch, strain)
            pairs = (batch["pair_first"], batch["pair_index"]) if "pair_index" in batch else None
            e_atom = self.energy_scale * self.atomic_energies(
                batch["z"], vec, batch["edge_index"], pairs
            )
            e_atom = e_atom.double() + self.reference_energy(batch["z"])
            energy = scatter_sum(e_atom, batch["batch"], n_struct)
            inputs = [pos, strain] if compute_stress else [pos]
            grads = torch.autograd.grad(energy.sum(), inputs, create_graph=self.training)
        out = {"energy": energy, "forces": -grads[0]}
        if compute_stress:
            out["stress"] = grads[1] / torch.linalg.det(batch["cell"]).abs()[:, None, None]
        return out


def edge_vectors(pos: torch.Tensor, batch: dict, strain: torch.Tensor | None = None):
    """``pos[j] - pos[i] + S @ cell``, optionally after a (zero-valued) symmetric strain.

    Straining positions and cells together makes d(energy)/d(strain) the virial.
    """
    cell = batch["cell"]
    if strain is not None:
        eye = torch.eye(3, dtype=pos.dtype, device=pos.device)
        deform = eye + 0.5 * (strain + strain.transpose(1, 2))
        pos = torch.einsum("nk,nkl->nl", pos, deform[batch["batch"]])
        cell = cell @ deform
    i, j = batch["edge_index"]
    offsets = torch.einsum("ek,ekl->el", batch["shifts"].to(pos.dtype), cell[batch["batch"][i]])
    return pos[j] - pos[i] + offsets


class ShiftedSoftplus(nn.Module):
    """softplus(x) - log 2: zero at zero, smooth everywhere (SchNet's activation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(x) - math.log(2.0)


class GaussianRBF(nn.Module):
    """Gaussians on an even grid from 0 to the cutoff, width equal to the spacing."""

    def __init__(self, num_rbf: int, cutoff: float):
        super().__init__()
        self.register_buffer("centers", torch.linspace(0.0, cutoff, num_rbf))
        self.width = cutoff / (num_rbf - 1)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return torch.exp(-0.5 * ((r[:, None] - self.centers) / self.width) ** 2)


class SchNetInteraction(nn.Module):
    """Continuous-filter convolution: neighbour features times a filter learned from distance."""

    def __init__(self, hidden: int, num_rbf: int):
        super().__init__()
        self.filter = nn.Sequential(
            nn.Linear(num_rbf, hidden), ShiftedSoftplus(), nn.Linear(hidden, hidden)
        )
        self.in2f = nn.Linear(hidden, hidden, bias=False)
        self.f2out = nn.Sequential(
            nn.Linear(hidden, hidden), ShiftedSoftplus(), nn.Linear(hidden, hidden)
        )

    def forward(self, x, rbf, fcut, edge_index, pair_index=None) -> torch.Tensor:
        """``rbf``/``fcut`` per pair when ``pair_index`` maps edges to pairs, else per edge."""
        i, j = edge_index
        weights = self.filter(rbf) * fcut[:, None]
        if pair_index is not None:
            weights = weights[pair_index]
        messages = self.in2f(x)[j] * weights
        return x + self.f2out(scatter_sum(messages, i, x.shape[0]))


class SchNet(AtomisticModel):
    """SchNet (Schütt et al. 2017): invariant features updated by distance-filtered messages."""

    def __init__(
        self, cutoff: float = 5.0, hidden: int = 64, num_interactions: int = 3, num_rbf: int = 32
    ):
        super().__init__(cutoff)
        self.embedding = nn.Embedding(MAX_Z + 1, hidden)
        self.rbf = GaussianRBF(num_rbf, cutoff)
        self.interactions = nn.ModuleList(
            SchNetInteraction(hidden, num_rbf) for _ in range(num_interactions)
        )
        self.readout = nn.Sequential(
            nn.Linear(hidden, hidden // 2), ShiftedSoftplus(), nn.Linear(hidden // 2, 1)
        )

    def atomic_energies(self, z, vec, edge_index, pairs=None) -> torch.Tensor:
        first, pair_index = pairs if pairs is not None else (None, None)
        r = (vec if first is None else vec[first]).norm(dim=-1)
        rbf, fcut = self.rbf(r), cosine_cutoff(r, self.cutoff)
        x = self.embedding(z)
        for interaction in self.interactions:
            x = interaction(x, rbf, fcut, edge_index, pair_index)
        return self.readout(x).squeeze(-1)


class SineRBF(nn.Module):
    """sin(n pi r / rc) / r, PaiNN's radial basis."""

    def __init__(self, num_rbf: int, cutoff: float):
        super().__init__()
        self.register_buffer("freqs", math.pi / cutoff * torch.arange(1, num_rbf + 1.0))

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return torch.sin(r[:, None] * self.freqs) / r[:, None]


class PaiNNMessage(nn.Module):
    """Scalar and vector messages; vectors enter only linearly or along edge directions."""

    def __init__(self, hidden: int, num_rbf: int):
        super().__init__()
        self.hidden = hidden
        self.phi = nn.Sequential(
            nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 3 * hidden)
        )
        self.filter = nn.Linear(num_rbf, 3 * hidden)

    def forward(self, s, v, rbf, fcut, unit, edge_index, pair_index=None):
        i, j = edge_index
        weights = self.filter(rbf) * fcut[:, None]
        if pair_index is not None:
            weights = weights[pair_index]
        x = self.phi(s)[j] * weights
        ds, dvv, dvs = x.split(self.hidden, dim=-1)
        dv = dvv[:, None, :] * v[j] + dvs[:, None, :] * unit[:, :, None]
        n = s.shape[0]
        return s + scatter_sum(ds, i, n), v + scatter_sum(dv, i, n)


class PaiNNUpdate(nn.Module):
    """Per-atom mixing of scalar and vector channels through rotation-invariant products."""

    def __init__(self, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.U = nn.Linear(hidden, hidden, bias=False)
        self.V = nn.Linear(hidden, hidden, bias=False)
        self.mlp = nn.Sequential(
            nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, 3 * hidden)
        )

    def forward(self, s, v):
        uv, vv = self.U(v), self.V(v)
        # the epsilon keeps the norm (and its second derivative) finite at v = 0
        norm = torch.sqrt((vv**2).sum(dim=1) + 1e-8)
        a_vv, a_sv, a_ss = self.mlp(torch.cat([s, norm], dim=-1)).split(self.hidden, dim=-1)
        return s + a_sv * (uv * vv).sum(dim=1) + a_ss, v + a_vv[:, None, :] * uv


class PaiNN(AtomisticModel):
    """PaiNN (Schütt et al. 2021): equivariant vector features alongside invariant scalars."""

    def __init__(
        self, cutoff: float = 5.0, hidden: int = 64, num_interactions: int = 3, num_rbf: int = 20
    ):
        super().__init__(cutoff)
        self.hidden = hidden
        self.embedding = nn.Embedding(MAX_Z + 1, hidden)
        self.rbf = SineRBF(num_rbf, cutoff)
        self.messages = nn.ModuleList(
            PaiNNMessage(hidden, num_rbf) for _ in range(num_interactions)
        )
        self.updates = nn.ModuleList(PaiNNUpdate(hidden) for _ in range(num_interactions))
        self.readout = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def atomic_energies(self, z, vec, edge_index, pairs=None) -> torch.Tensor:
        first, pair_index = pairs if pairs is not None else (None, None)
        r = (vec if first is None else vec[first]).norm(dim=-1)
        rbf, fcut = self.rbf(r), cosine_cutoff(r, self.cutoff)
        unit = vec / (r if pair_index is None else r[pair_index])[:, None]
        s = self.embedding(z)
        v = s.new_zeros((s.shape[0], 3, self.hidden))
        for message, update in zip(self.messages, self.updates, strict=True):
            s, v = message(s, v, rbf, fcut, unit, edge_index, pair_index)
            s, v = update(s, v)
        return self.readout(s).squeeze(-1)


MODELS = ("schnet", "painn", "mace")


def model_class(name: str) -> type[AtomisticModel]:
    """The class of a config's ``model.name``; ``mace`` imports the optional mace-torch."""
    if name == "schnet":
        return SchNet
    if name == "painn":
        return PaiNN
    if name == "mace":
        from pipelines.mlip.mace import MACEModel

        return MACEModel
    raise ValueError(f"unknown MLIP model {name!r}; known: {', '.join(MODELS)}")


def build_model(name: str, **kwargs) -> AtomisticModel:
    """Model by config name (``schnet``/``painn``/``mace``)."""
    return model_class(name)(**kwargs)
