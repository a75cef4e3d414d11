"""Milliseconds per energy+force evaluation of the MLIP models on CPU (or a given device).

Cases: one 32-atom Cu cell (the MD use: through the ASE calculator, neighbour list included,
and on a prebuilt graph) and a batch of 32 such cells (the training use: evaluation, and a full
training step with the double backward that force training needs). Median of ``--repeats``
timed runs after warm-up.

On CPU, large batches can be dominated by page faults: glibc hands allocations above its mmap
threshold (max 32 MB) straight back to the OS, and PaiNN's [edges, 3, hidden] tensors exceed it.
``MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000`` shows the compute-bound
figure.

    python bench/mlip_forces.py [--threads 1] [--repeats 20] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from ase.build import bulk

from data.atoms import atoms_to_graph, collate_atoms
from pipelines.mlip.calculator import MLIPCalculator
from pipelines.mlip.losses import EnergyForceLoss
from pipelines.mlip.models import PaiNN, SchNet

CUTOFF = 5.0


def median_ms(fn, repeats: int, device: torch.device) -> float:
    """Median wall time of ``fn`` in ms, synchronising a GPU so its work is counted."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def structures(n: int):
    cells = []
    for seed in range(n):
        atoms = bulk("Cu", "fcc", cubic=True).repeat(2)
        atoms.rattle(0.05, seed=seed)
        cells.append(atoms)
    return cells


def graph_batch(cells, device):
    graphs = []
    for atoms in cells:
        graph = atoms_to_graph(atoms, CUTOFF, labels=False)
        graph["energy"] = torch.zeros(1)
        graph["forces"] = torch.zeros(len(atoms), 3)
        graphs.append(graph)
    return {k: v.to(device) for k, v in collate_atoms(graphs).items()}


def bench_model(model, device: torch.device, repeats: int) -> dict[str, float]:
    cells = structures(32)
    single, batch = graph_batch(cells[:1], device), graph_batch(cells, device)
    atoms = cells[0].copy()
    atoms.calc = MLIPCalculator(model, device=device)
    loss_fn = EnergyForceLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def calculator_call():
        atoms.positions[0, 0] += 1e-6  # defeat the result cache
        atoms.get_forces()

    def train_step():
        optimizer.zero_grad()
        loss_fn(model(batch), batch)["loss"].backward()
        optimizer.step()

    model.eval()
    figures = {
        "1 cell, ASE calculator": median_ms(calculator_call, repeats, device),
        "1 cell, graph": median_ms(lambda: model(single), repeats, device),
        "32 cells, graph": median_ms(lambda: model(batch), repeats, device),
    }
    model.train()
    figures["32 cells, train step"] = median_ms(train_step, repeats, device)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device={device} threads={args.threads} cutoff={CUTOFF} float32, median ms")
    for cls in (SchNet, PaiNN):
        torch.manual_seed(0)
        model = cls(cutoff=CUTOFF).to(device)
        for case, ms in bench_model(model, device, args.repeats).items():
            print(f"{cls.__name__:7s} {case:26s} {ms:8.2f}")


if __name__ == "__main__":
    main()
