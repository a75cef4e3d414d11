"""Accuracy of the mlip pipeline under a wall-clock budget (or a fixed step count), then NVE.

Runs the real entry point (``pipelines.train.run``, the config of ``adamlab train pipeline=mlip``)
with ``trainer.max_time`` set to the budget and a large epoch cap, so the budget decides when
training stops; or with ``--steps N`` for a fixed number of optimizer steps whatever the load
(what a quiet machine reaches in the budget, measured separately). Reports the held-out (test)
energy and force MAE from summary.json, the steps and structures/s it got, the machine's load
averages sampled during training (on a shared machine they decide how much compute a wall-clock
budget buys), and an NVE run of the trained calculator on a rattled supercell started at 600 K
(energy drift, ns/day).

    python bench/mlip_accuracy.py [--minutes 10 | --steps N] [--md-steps 1000] [override ...]
    python bench/mlip_accuracy.py data=zuo2020_ni model=painn
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import threading
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from pipelines.mlip.calculator import MLIPCalculator
from pipelines.mlip.checkpoint import load_model
from pipelines.mlip.md import TRACE_KEYS, md_cell, run_nve
from pipelines.train import CONFIGS, run

METRICS = ("test_energy_mae_mev_per_atom", "test_force_mae_mev_per_ang",
           "test_energy_rmse_mev_per_atom", "test_force_rmse_mev_per_ang",
           "test_stress_mae_mev_per_ang3", "val_force_mae_mev_per_ang", "eval_weights",
           "n_train", "n_test")


class LoadSampler(threading.Thread):
    """``os.getloadavg()`` every ``interval`` s while training runs (what ``uptime`` prints)."""

    def __init__(self, interval: float = 30.0):
        super().__init__(daemon=True)
        self.interval, self.samples, self._stop = interval, [], threading.Event()

    def run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg())
            self._stop.wait(self.interval)

    def stop(self) -> dict:
        self._stop.set()
        one = sorted(s[0] for s in self.samples) or [float("nan")]
        return {"load1_median": one[len(one) // 2], "load1_max": one[-1],
                "load_samples": len(self.samples), "cpus": os.cpu_count()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training time budget")
    parser.add_argument("--steps", type=int, default=None,
                        help="train this many optimizer steps instead (no time budget)")
    parser.add_argument("--md-steps", type=int, default=1000)
    parser.add_argument("--out", default=None, help="run directory (default runs/bench/...)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data=zuo2020_ni")
    args = parser.parse_args()
    out = Path(args.out or f"runs/bench/mlip_accuracy/{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    overrides = ["pipeline=mlip", "logger=csv", "trainer.enable_progress_bar=false",
                 "trainer.max_epochs=100000", *args.overrides]
    if args.steps:
        overrides.append(f"trainer.max_steps={args.steps}")
    else:
        minutes, seconds = divmod(round(60 * args.minutes), 60)
        overrides.append(f"trainer.max_time=00:00:{minutes:02d}:{seconds:02d}")
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    load = LoadSampler()
    load.start()
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    metrics = run(cfg, out)
    wall, cpu = time.perf_counter() - started, _cpu_seconds() - cpu_started
    load_report = load.stop()
    summary = json.loads((out / "summary.json").read_text())
    epochs, steps = _progress(out)

    model, cfg_dict = load_model(out)
    md = run_nve(md_cell(cfg_dict), MLIPCalculator(model), args.md_steps, 1.0, 600.0)
    md = {k: v for k, v in md.items() if k not in TRACE_KEYS}
    report = {
        "torch_threads": torch.get_num_threads(),
        "budget": f"{args.steps} steps" if args.steps else f"{args.minutes} min",
        "overrides": args.overrides,
        "epochs": epochs,
        "steps": steps,
        "structures_per_s": round(epochs * metrics["n_train"] / wall, 2),
        "run_wall_time_s": round(wall, 1),
        "run_cpu_time_s": round(cpu, 1),
        "summary_wall_time_s": summary["wall_time_s"],
        **load_report,
        **{k: metrics.get(k) for k in METRICS},
        "md_nve_600K_rattled_1fs": md,
        "run_dir": str(out),
    }
    (out / "bench_accuracy.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def _cpu_seconds() -> float:
    """CPU time of this process (all threads): on a shared machine, the compute it really got."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _progress(out: Path) -> tuple[int, int]:
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return int(ckpt["epoch"]) + 1, int(ckpt["global_step"])


if __name__ == "__main__":
    main()
