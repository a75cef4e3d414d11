"""Accuracy of the mlip pipeline on the default EMT Cu data under a wall-clock budget, then NVE.

Runs the real entry point (``pipelines.train.run``, the config of ``adamlab train pipeline=mlip``)
with ``trainer.max_time`` set to the budget and a large epoch cap, so the budget decides when
training stops. Reports the held-out (test split) force and energy MAE from summary.json, the
wall time of the whole run (data generation included when the cache is cold) with the CPU time
it got (on a shared machine the two differ), and an NVE run with the trained calculator on a
32-atom cell. Target: force MAE <= 60 meV/Å in 10 minutes on 2 CPU cores.

On cores shared with other jobs use ``--threads 1``: each of the many small parallel regions of
a force-training step waits for its slowest thread, so two threads on two busy cores ran 18x
fewer epochs than one thread here (7 vs 125 in 10 minutes, runs an hour apart).

    python bench/mlip_accuracy.py [--minutes 10] [--threads 2] [--md-steps 1000] [override ...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from pipelines.mlip.calculator import MLIPCalculator
from pipelines.mlip.checkpoint import load_model
from pipelines.mlip.md import TRACE_KEYS, md_cell, run_nve
from pipelines.train import CONFIGS, run

METRICS = ("test_force_mae_mev_per_ang", "test_energy_mae_mev_per_atom",
           "test_force_rmse_mev_per_ang", "test_energy_rmse_mev_per_atom",
           "test_force_mae_mev_per_ang_by_force", "val_force_mae_mev_per_ang", "n_train", "n_test")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training time budget")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--md-steps", type=int, default=1000)
    parser.add_argument("--out", default=None, help="run directory (default runs/bench/...)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. optim.lr=3e-3")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out or f"runs/bench/mlip_accuracy/{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    minutes, seconds = divmod(round(60 * args.minutes), 60)
    budget = f"00:00:{minutes:02d}:{seconds:02d}"  # Lightning's DD:HH:MM:SS
    overrides = ["pipeline=mlip", "logger=csv", "trainer.enable_progress_bar=false",
                 "trainer.max_epochs=100000", f"+trainer.max_time={budget}", *args.overrides]
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    metrics = run(cfg, out)
    wall, cpu = time.perf_counter() - started, _cpu_seconds() - cpu_started
    summary = json.loads((out / "summary.json").read_text())

    model, cfg_dict = load_model(out / "checkpoints" / "last.ckpt")
    md = run_nve(md_cell(cfg_dict), MLIPCalculator(model), args.md_steps, 1.0, 300.0)
    md = {k: v for k, v in md.items() if k not in TRACE_KEYS}
    report = {
        "threads": args.threads,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "budget_minutes": args.minutes,
        "overrides": args.overrides,
        "epochs": _epochs(out),
        "run_wall_time_s": round(wall, 1),
        "run_cpu_time_s": round(cpu, 1),
        "summary_wall_time_s": summary["wall_time_s"],
        **{k: metrics[k] for k in METRICS},
        "md_nve_1fs": md,
        "run_dir": str(out),
    }
    (out / "bench_accuracy.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def _cpu_seconds() -> float:
    """CPU time of this process (all threads): on a shared machine, the compute it really got."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _epochs(out: Path) -> int:
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return int(ckpt["epoch"]) + 1


if __name__ == "__main__":
    main()
