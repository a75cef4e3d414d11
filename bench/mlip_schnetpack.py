"""Our SchNet against SchNetPack's at equal size on DFT Ni: structures/s and test MAEs in the
same wall time, the two libraries alternating.

Both models: 128 features, 6 interactions, 20 Gaussians, cosine cutoff 5 Å, shifted-softplus,
a 128-64-1 readout; forces by autograd with the graph kept (force training). Both are trained by
the same plain loop (Adam, lr 5e-4, batch 4, loss = per-atom energy MSE + force-component MSE,
per-atom mean energy removed from the targets), both with neighbour lists computed once per
structure (SchNetPack's ``MatScipyNeighborList`` transform, samples collated by its
``_atoms_collate_fn``; ours by vesin, collated by ``collate_atoms``). What differs is each
library's model and batch code. The sides take turns of ``--slice`` seconds until each has had
``--minutes``, so load from other processes hits both alike; then both are scored on the test
file. Rounds and medians: ``--rounds`` independent repeats (fresh models, seeds 0, 1, ...).

SchNetPack 2.1.1 pins sympy<=1.12 (torch 2.13 needs >=1.13.3) and imports ``T_co`` from
``torch.utils.data.dataloader`` (gone in torch 2.13), so it is installed without its pins and
the name is put back before import:

    pip install --no-deps schnetpack==2.1.1
    pip install h5py hydra-colorlog fasteners dirsync torch-ema matscipy tensorboardX \
        pytorch-lightning   # its other imports (pytorch-lightning matches the lightning here)
    python bench/mlip_schnetpack.py [--minutes 5] [--slice 30] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import time
import typing
from pathlib import Path
from statistics import median

import ase.io
import numpy as np
import torch
import torch.utils.data.dataloader as torch_dataloader

from data.atoms import AtomsDataset, collate_atoms
from pipelines.mlip.models import SchNet

DATA = Path(os.environ.get("ADAMLAB_DATA", "../shared/data")) / "dft" / "zuo2020"
SIZE = dict(features=128, interactions=6, rbf=20, cutoff=5.0)


def spk():
    """schnetpack, imported after restoring the name it needs from torch."""
    if not hasattr(torch_dataloader, "T_co"):
        torch_dataloader.T_co = typing.TypeVar("T_co", covariant=True)
    import schnetpack

    return schnetpack


class Side:
    """One library's model, optimizer and precomputed inputs; ``train(seconds)`` continues."""

    def __init__(self, name, model, inputs, collate, keys, mean, lr, seed):
        """``keys``: (predicted energy, predicted forces, atom count) in the model's output;
        labels are ``energy``/``forces`` in the batch."""
        self.name, self.model, self.inputs, self.collate = name, model, inputs, collate
        self.energy_key, self.forces_key, self.n_key = keys
        self.mean, self.rng = mean, np.random.default_rng(seed)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        self.order, self.cursor = [], 0
        self.structures, self.seconds = 0, 0.0

    def _batch(self, size: int):
        if self.cursor + size > len(self.order):
            self.order, self.cursor = self.rng.permutation(len(self.inputs)).tolist(), 0
        picked = [self.inputs[k] for k in self.order[self.cursor:self.cursor + size]]
        self.cursor += size
        return self.collate(picked)

    def loss(self, batch):
        out = self.model(batch)
        n = batch[self.n_key]
        target = batch["energy"] - self.mean * n
        energy = ((out[self.energy_key].double() - target.double()) / n) ** 2
        forces = (out[self.forces_key] - batch["forces"]) ** 2
        return energy.mean() + forces.mean()

    def train(self, seconds: float, batch_size: int) -> None:
        self.model.train()
        end = time.perf_counter() + seconds
        started = time.perf_counter()
        while time.perf_counter() < end:
            batch = self._batch(batch_size)  # collate counts: it is each library's batch code
            self.optimizer.zero_grad(set_to_none=True)
            self.loss(batch).backward()
            self.optimizer.step()
            self.structures += int(batch[self.n_key].numel())
        self.seconds += time.perf_counter() - started

    def test(self, inputs) -> dict:
        self.model.eval()
        e_err, f_err, n_comp = [], 0.0, 0
        for k in range(0, len(inputs), 4):
            batch = self.collate(inputs[k:k + 4])
            out = self.model(batch)
            n = batch[self.n_key]
            pred = out[self.energy_key].detach().double() + self.mean * n
            e_err += ((pred - batch["energy"].double()) / n).abs().tolist()
            diff = (out[self.forces_key].detach() - batch["forces"]).abs()
            f_err, n_comp = f_err + float(diff.sum()), n_comp + diff.numel()
        return {"energy_mae_mev_per_atom": 1000 * float(np.mean(e_err)),
                "force_mae_mev_per_ang": 1000 * f_err / n_comp,
                "structures_per_s": self.structures / self.seconds,
                "structures_trained": self.structures}


class OurSchNet(torch.nn.Module):
    """``pipelines.mlip.models.SchNet`` with the per-atom mean energy as its only reference."""

    def __init__(self):
        super().__init__()
        self.net = SchNet(cutoff=SIZE["cutoff"], hidden=SIZE["features"],
                          num_interactions=SIZE["interactions"], num_rbf=SIZE["rbf"])

    def forward(self, batch):
        out = self.net(batch, compute_stress=False)
        return {"pred_energy": out["energy"], "pred_forces": out["forces"]}


def ours(train, test, mean, lr, seed) -> tuple[Side, list]:
    torch.manual_seed(seed)
    graphs = AtomsDataset(train, SIZE["cutoff"]).graphs
    side = Side("adamlab", OurSchNet(), graphs, collate_atoms,
                ("pred_energy", "pred_forces", "n_atoms"), mean, lr, seed)
    return side, AtomsDataset(test, SIZE["cutoff"]).graphs


def schnetpack(train, test, mean, lr, seed) -> tuple[Side, list]:
    schnetpack = spk()
    from schnetpack import properties
    from schnetpack.data.loader import _atoms_collate_fn

    torch.manual_seed(seed)
    cutoff = SIZE["cutoff"]
    representation = schnetpack.representation.SchNet(
        n_atom_basis=SIZE["features"], n_interactions=SIZE["interactions"],
        radial_basis=schnetpack.nn.GaussianRBF(n_rbf=SIZE["rbf"], cutoff=cutoff),
        cutoff_fn=schnetpack.nn.CosineCutoff(cutoff))
    model = schnetpack.model.NeuralNetworkPotential(
        representation=representation,
        input_modules=[schnetpack.atomistic.PairwiseDistances()],
        output_modules=[schnetpack.atomistic.Atomwise(n_in=SIZE["features"],
                                                      output_key="pred_energy"),
                        schnetpack.atomistic.Forces(energy_key="pred_energy",
                                                    force_key="pred_forces")],
        do_postprocessing=False)
    neighbours = schnetpack.transform.MatScipyNeighborList(cutoff=cutoff)
    cast = schnetpack.transform.CastTo32()

    def inputs(frames):
        """Samples as SchNetPack's ASEAtomsData yields them, neighbour list included."""
        out = []
        for atoms in frames:
            item = {properties.n_atoms: torch.tensor([len(atoms)]),
                    properties.Z: torch.from_numpy(atoms.numbers),
                    properties.R: torch.from_numpy(atoms.positions.copy()),
                    properties.cell: torch.from_numpy(atoms.cell.array.copy()).view(-1, 3, 3),
                    properties.pbc: torch.from_numpy(atoms.pbc.copy()).view(-1, 3)}
            item = cast(neighbours(item))
            item["energy"] = torch.tensor([atoms.get_potential_energy()], dtype=torch.float64)
            item["forces"] = torch.as_tensor(atoms.get_forces(), dtype=torch.float32)
            out.append(item)
        return out

    def collate(items):
        return _atoms_collate_fn(items)

    side = Side("schnetpack", model, inputs(train), collate,
                ("pred_energy", "pred_forces", properties.n_atoms), mean, lr, seed)
    return side, inputs(test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="training time per side")
    parser.add_argument("--slice", type=float, default=30.0, help="seconds per turn")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--element", default="Ni")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train = ase.io.read(DATA / f"{args.element}_train.xyz", ":")
    test = ase.io.read(DATA / f"{args.element}_test.xyz", ":")
    mean = float(np.mean([a.get_potential_energy() / len(a) for a in train]))
    results = []
    for seed in range(args.rounds):
        sides = [build(train, test, mean, args.lr, seed) for build in (ours, schnetpack)]
        turns = max(1, round(60 * args.minutes / args.slice))
        for turn in range(turns):
            for side, _ in sides if turn % 2 == 0 else sides[::-1]:
                side.train(args.slice, args.batch_size)
        results.append({side.name: side.test(test_inputs) for side, test_inputs in sides})
        print(json.dumps({"seed": seed, **results[-1]}), flush=True)
    report = {"size": SIZE, "minutes_per_side": args.minutes, "slice_s": args.slice,
              "batch_size": args.batch_size, "lr": args.lr, "threads": args.threads,
              "load_average": os.getloadavg(), "rounds": results}
    for name in ("adamlab", "schnetpack"):
        for key in ("structures_per_s", "energy_mae_mev_per_atom", "force_mae_mev_per_ang"):
            report[f"median_{name}_{key}"] = median(r[name][key] for r in results)
    report["speedup"] = (report["median_adamlab_structures_per_s"]
                         / report["median_schnetpack_structures_per_s"])
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
