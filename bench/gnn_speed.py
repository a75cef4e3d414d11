"""GNN training speed against PyG's own recipe, and against an earlier adamlab, same run.

    OMP_NUM_THREADS=1 .venv/bin/python bench/gnn_speed.py [--repeats 5]
        [--cases cora,sbm-1e5,sbm-1e6] [--previous /tmp/adamlab-038be65] [--model gcn]

Arms, each run in a fresh interpreter, in an order that rotates every round (the machine is
shared: load from other processes hits every arm alike):

- ``recipe``: PyG's ``examples/gcn.py`` as PyG ships it: dense features, two
  ``GCNConv(cached=True)``, dropout 0.5, Adam (lr 0.01, weight decay 5e-4 on the first layer
  only), a plain loop of one training step and one evaluation per epoch; on Cora with
  ``NormalizeFeatures``. With ``--model gat``: PyG's ``examples/gat.py`` (8 heads of 8,
  dropout 0.6, lr 0.005, weight decay 5e-4 on every parameter).
- ``adamlab``: ``adamlab train`` with the matching preset (``experiment=gcn_cora``,
  ``gat_cora``), the whole harness on (default loggers: CSV and offline W&B, checkpoints,
  telemetry), through :func:`pipelines.train.run`.
- ``previous``: the same command on an earlier checkout (``--previous DIR``, e.g.
  ``git worktree add /tmp/adamlab-038be65 038be65``), imported from there.

Per arm and case: the median time per epoch (a training step and an evaluation of every
node, as each arm runs them; after 10 warm-up epochs, 1 on the large graphs), the whole
run (from the config to the final accuracy, in-process: loading or generating the graph
included, interpreter start and imports not), the whole process, and the test accuracy at
the best validation epoch. Ratios are taken within each round, then their median printed.
The DC-SBM cases (``data=synthetic``, 64 dense features, average degree 10) run fewer
epochs, so their accuracies are not converged values.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "bench"
CASES = {  # name: (data, epochs, warm-up epochs)
    "cora": ("cora", 200, 10),
    "sbm-1e5": (100_000, 20, 1),
    "sbm-1e6": (1_000_000, 5, 1),
}
EXTRA = os.environ.get("GNN_BENCH_OVERRIDES", "").split()
RECIPES = {  # PyG examples/gcn.py and examples/gat.py
    "gcn": {"experiment": "gcn_cora", "lr": 0.01, "dropout": 0.5},
    "gat": {"experiment": "gat_cora", "lr": 0.005, "dropout": 0.6},
}


# ---- one arm, in its own interpreter ------------------------------------------------------
def recipe_arm(case: str, model: str, seed: int) -> dict:
    import torch
    import torch.nn.functional as F
    import torch_geometric.transforms as T
    from torch_geometric.datasets import Planetoid
    from torch_geometric.nn import GATConv, GCNConv

    data_name, epochs, warmup = CASES[case]
    started = time.perf_counter()
    torch.manual_seed(seed)
    if data_name == "cora":
        data = Planetoid(str(CACHE / "planetoid"), "Cora", transform=T.NormalizeFeatures())[0]
    else:
        from data.graphs import dcsbm

        data = dcsbm(num_nodes=data_name)
    num_classes = int(data.y.max()) + 1
    p = RECIPES[model]["dropout"]

    class GCN(torch.nn.Module):
        def __init__(self, d_in, d_hidden, d_out):
            super().__init__()
            self.conv1 = GCNConv(d_in, d_hidden, cached=True)
            self.conv2 = GCNConv(d_hidden, d_out, cached=True)

        def forward(self, x, edge_index):
            x = F.dropout(x, p=p, training=self.training)
            x = self.conv1(x, edge_index).relu()
            x = F.dropout(x, p=p, training=self.training)
            return self.conv2(x, edge_index)

    class GAT(torch.nn.Module):
        def __init__(self, d_in, d_hidden, d_out, heads=8):
            super().__init__()
            self.conv1 = GATConv(d_in, d_hidden, heads, dropout=p)
            self.conv2 = GATConv(d_hidden * heads, d_out, heads=1, concat=False, dropout=p)

        def forward(self, x, edge_index):
            x = F.dropout(x, p=p, training=self.training)
            x = F.elu(self.conv1(x, edge_index))
            x = F.dropout(x, p=p, training=self.training)
            return self.conv2(x, edge_index)

    if model == "gcn":
        net = GCN(data.num_features, 16, num_classes)
        optimizer = torch.optim.Adam([dict(params=net.conv1.parameters(), weight_decay=5e-4),
                                      dict(params=net.conv2.parameters(), weight_decay=0)],
                                     lr=0.01)
    else:
        net = GAT(data.num_features, 8, num_classes)
        optimizer = torch.optim.Adam(net.parameters(), lr=0.005, weight_decay=5e-4)

    def train():
        net.train()
        optimizer.zero_grad()
        out = net(data.x, data.edge_index)
        loss = F.cross_entropy(out[data.train_mask], data.y[data.train_mask])
        loss.backward()
        optimizer.step()
        return float(loss)

    @torch.no_grad()
    def test():
        net.eval()
        pred = net(data.x, data.edge_index).argmax(dim=-1)
        return [int((pred[m] == data.y[m]).sum()) / int(m.sum())
                for m in (data.train_mask, data.val_mask, data.test_mask)]

    best_val = test_acc = 0
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        train()
        _, val_acc, tmp_test_acc = test()
        times.append(time.perf_counter() - start)
        if val_acc > best_val:
            best_val, test_acc = val_acc, tmp_test_acc
    return {"epoch_ms": statistics.median(times[warmup:]) * 1e3,
            "run_s": time.perf_counter() - started, "test_acc": test_acc}


def adamlab_arm(case: str, model: str, seed: int, logger: str = "default") -> dict:
    """``adamlab train experiment=...`` in-process, with an epoch timer added."""
    import lightning as L
    from hydra import compose, initialize_config_dir

    import pipelines.gnn.pipeline  # noqa: F401 - imported before the clock, as the recipe's are
    from pipelines.train import CONFIGS, run

    class EpochTimer(L.Callback):
        def __init__(self):
            self.starts = []

        def on_train_epoch_start(self, trainer, pl_module):
            self.starts.append(time.perf_counter())

        def on_train_end(self, trainer, pl_module):
            self.starts.append(time.perf_counter())

    data_name, epochs, warmup = CASES[case]
    overrides = [f"experiment={RECIPES[model]['experiment']}", f"seed={seed}",
                 f"trainer.max_epochs={epochs}", "trainer.enable_progress_bar=false",
                 f"logger={logger}", *EXTRA, f"data.root={CACHE / 'planetoid'}"]
    if data_name != "cora":
        overrides[-1:] = ["data=synthetic", f"data.num_nodes={data_name}"]
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides)
        metrics = run(cfg, Path(tmp) / "run", extra_callbacks=[timer])
        run_s = time.perf_counter() - started
    epoch_s = [b - a for a, b in zip(timer.starts, timer.starts[1:])]
    return {"epoch_ms": statistics.median(epoch_s[warmup:]) * 1e3, "run_s": run_s,
            "test_acc": metrics["test_acc"]}


# ---- the driver ---------------------------------------------------------------------------
def measure(arm: str, case: str, model: str, seed: int, previous: Path | None,
            logger: str) -> dict:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    if arm == "previous":
        env["PYTHONPATH"] = os.pathsep.join([str(previous), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, __file__, "--case", case, "--model", model, "--seed", str(seed)]
    cmd += ["--arm", "recipe"] if arm == "recipe" else ["--arm", "adamlab", "--logger", logger]
    start = time.perf_counter()
    cwd = previous if arm == "previous" else REPO
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{arm} on {case} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "process_s": time.perf_counter() - start}


def prepare() -> None:
    """Planetoid Cora processed once into the bench cache (no timing includes it)."""
    from data.graphs.planetoid import load_planetoid

    load_planetoid("Cora", root=CACHE / "planetoid", download=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", default="cora,sbm-1e5,sbm-1e6")
    parser.add_argument("--model", choices=sorted(RECIPES), default="gcn")
    parser.add_argument("--previous", type=Path, help="checkout of an earlier adamlab")
    parser.add_argument("--seed", type=int, default=0, help="first seed (one per round)")
    parser.add_argument("--logger", default="default",
                        help="adamlab's logger config (default: CSV + offline W&B; csv)")
    parser.add_argument("--arm", choices=("recipe", "adamlab"), help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))  # this checkout's packages, not an installed one's
    if args.arm:  # a child: one measurement, printed as the last line
        sys.path.insert(0, str(Path.cwd()))  # the previous checkout, for that arm
        if args.arm == "recipe":
            result = recipe_arm(args.case, args.model, args.seed)
        else:
            result = adamlab_arm(args.case, args.model, args.seed, args.logger)
        print(json.dumps(result))
        return
    prepare()
    arms = ["recipe", "adamlab"] + (["previous"] if args.previous else [])
    print(f"model={args.model} logger={args.logger} repeats={args.repeats} "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}", flush=True)
    for case in args.cases.split(","):
        rows = {arm: [] for arm in arms}
        for r in range(args.repeats):
            for arm in arms[r % len(arms):] + arms[:r % len(arms)]:
                rows[arm].append(measure(arm, case, args.model, args.seed + r, args.previous,
                                         args.logger))
        report(case, rows)


def report(case: str, rows: dict) -> None:
    recipe = rows["recipe"]
    print(f"\n{case} ({CASES[case][1]} epochs), medians of {len(recipe)} rounds")
    print(f"{'arm':<9} {'ms/epoch':>9} {'x recipe':>9} {'run s':>7} {'x recipe':>9} "
          f"{'process s':>10} {'x recipe':>9} {'test acc':>9}")
    for arm, results in rows.items():
        cells = []
        for key in ("epoch_ms", "run_s", "process_s"):
            ratios = [a[key] / b[key] for a, b in zip(results, recipe)]
            cells += [statistics.median(r[key] for r in results), statistics.median(ratios)]
        accs = [r["test_acc"] for r in results]
        print(f"{arm:<9} {cells[0]:9.1f} {cells[1]:9.2f} {cells[2]:7.2f} {cells[3]:9.2f} "
              f"{cells[4]:10.2f} {cells[5]:9.2f} {statistics.mean(accs):9.3f}", flush=True)
    print("json", json.dumps({"case": case, "rows": rows}))


if __name__ == "__main__":
    main()
