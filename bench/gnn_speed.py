"""GNN epoch time: the full pipeline (Lightning, CSV, checkpoints, telemetry) against a plain
PyG loop with the same model, optimizer and per-epoch evaluation, in the same run.

    python bench/gnn_speed.py [--epochs 60] [--million]

Reports the median ms per epoch of each (median over alternating repeats) and their
ratio, on Cora and on a 10^5-node synthetic graph; with --million, one epoch on a
10^6-node graph (time and peak RSS).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

import optim
from pipelines.gnn.pipeline import GNNPipeline
from pipelines.train import CONFIGS, run

CASES = {
    "cora": ["experiment=gcn_cora"],
    "synthetic-1e5": ["pipeline=gnn", "data.num_nodes=100000"],
}


class EpochTimer(L.Callback):
    def __init__(self):
        self.starts = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.starts.append(time.perf_counter())


def config(overrides):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def harness_ms(overrides, epochs) -> float:
    timer = EpochTimer()
    cfg = config([*overrides, f"trainer.max_epochs={epochs}", "logger=csv",
                  "trainer.enable_progress_bar=false"])
    with tempfile.TemporaryDirectory() as tmp:
        run(cfg, Path(tmp), extra_callbacks=[timer])
    return statistics.median(b - a for a, b in zip(timer.starts[1:], timer.starts[2:])) * 1e3


def plain_ms(overrides, epochs) -> float:
    """The PyG example loop: one training step, then accuracy on val and test."""
    cfg = config(overrides)
    module, dm = GNNPipeline().build(cfg)
    model, data = module.model, dm.data
    opt = optim.create(cfg.optim.name, model.parameters(), lr=cfg.optim.lr,
                       weight_decay=cfg.optim.weight_decay)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        model.train()
        opt.zero_grad()
        loss = F.cross_entropy(model(data.x, data.edge_index)[data.train_mask],
                               data.y[data.train_mask])
        loss.backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            pred = model(data.x, data.edge_index).argmax(1)
            for mask in (data.val_mask, data.test_mask):
                (pred[mask] == data.y[mask]).float().mean().item()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:]) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3, help="alternating plain/pipeline")
    parser.add_argument("--million", action="store_true")
    args = parser.parse_args()
    print(f"torch threads={torch.get_num_threads()}")
    print(f"{'graph':<15} {'plain ms':>9} {'pipeline ms':>12} {'ratio':>6}")
    for name, overrides in CASES.items():
        plain, ours = [], []
        for _ in range(args.repeats):  # alternate, so load from other processes hits both
            plain.append(plain_ms(overrides, args.epochs))
            ours.append(harness_ms(overrides, args.epochs))
        plain, ours = statistics.median(plain), statistics.median(ours)
        print(f"{name:<15} {plain:9.1f} {ours:12.1f} {ours / plain:6.2f}", flush=True)
    if args.million:
        overrides = ["pipeline=gnn", "data.num_nodes=1000000"]
        t0 = time.perf_counter()
        ms = harness_ms(overrides, 3)
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"synthetic-1e6: {ms:.0f} ms per epoch (pipeline, train + eval of all nodes), "
              f"peak RSS {peak_gb:.1f} GB, whole run incl. generation "
              f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
