"""`adamlab train -m hydra/sweeper=optuna ...`: the app returns the monitored metric, so
Hydra's Optuna sweeper optimises it (3 trials of the quick GNN config, shrunk)."""

import json
import subprocess

import yaml
from runs import ADAMLAB, TINY, env


def test_optuna_sweep_maximises_the_monitored_metric(tmp_path):
    args = [ADAMLAB, "train", "-m", "experiment=quick", *TINY["gnn"][1:],
            "logger=csv", "trainer.enable_progress_bar=false",
            "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=1",
            "hydra.sweeper.direction=maximize", "hydra.sweeper.sampler.seed=0",
            "optim.lr=tag(log, interval(0.001, 0.1))", f"hydra.sweep.dir={tmp_path}"]
    done = subprocess.run(args, env=env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = sorted(p.parent for p in tmp_path.glob("*/summary.json"))
    assert len(trials) == 3
    best = []
    for trial in trials:
        summary = json.loads((trial / "summary.json").read_text())
        assert summary["objective"]["metric"] == "val_acc"
        assert summary["objective"]["best"] == summary["metrics"]["val_acc"]
        best.append(summary["objective"]["best"])
    lrs = {yaml.safe_load((t / "config.yaml").read_text())["optim"]["lr"] for t in trials}
    assert len(lrs) == 3  # three points of the search space
    result = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert result["best_value"] == max(best)
