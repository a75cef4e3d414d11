"""Tiny runs of each pipeline, in-process (``run``) or as the real command, for the checkpoint,
kill, bad-input and Slurm tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from pipelines.harness.loggers import read_rows
from pipelines.train import CONFIGS

ADAMLAB = str(Path(sys.executable).parent / "adamlab")
QUIET = ["trainer.enable_progress_bar=false", "logger=csv"]
TINY = {
    "gnn": ["pipeline=gnn", "data.num_nodes=300", "data.feature_dim=8", "model.hidden=8",
            "model.dropout=0.5", "trainer.max_epochs=12", "telemetry_every=3",
            "checkpoint_every=1"],  # gnn.yaml saves every 30 s: these runs take less
    "mlip": ["pipeline=mlip", "data.n_configs=24", "+data.size=[1,1,1]",
             "+data.snapshots_per_run=4", "model.cutoff=4.0", "model.hidden=8",
             "model.num_interactions=1", "model.num_rbf=6", "pipeline.batch_size=4",
             "trainer.max_epochs=3", "telemetry_every=2"],
    "rl": ["pipeline=rl", "algo=ppo", "env.id=CartPole-v1", "env.num_envs=2", "algo.n_steps=32",
           "algo.minibatch_size=32", "algo.update_epochs=2", "pipeline.steps_per_epoch=64",
           "pipeline.total_timesteps=512", "pipeline.eval_every=2", "pipeline.eval_episodes=2",
           "pipeline.pg_grad_every=0", "telemetry_every=4"],
}
# columns that measure wall-clock speed differ between any two runs
CLOCKS = ("sps", "charts/SPS")


def overrides(pipeline: str, tmp_path: Path, *extra: str) -> list[str]:
    cache = [f"data.cache_dir={tmp_path / 'emt-cache'}"] if pipeline == "mlip" else []
    return [*TINY[pipeline], *cache, *QUIET, *extra]


def config(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def env() -> dict:
    return {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1",
            "HYDRA_FULL_ERROR": "0"}


def command(run_dir: Path, args: list[str]) -> list[str]:
    return [ADAMLAB, "train", *args, f"hydra.run.dir={run_dir}"]


def train(run_dir: Path, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """The real `adamlab train` command, to its end."""
    return subprocess.run(command(run_dir, args), env=env(), capture_output=True, text=True,
                          timeout=timeout)


def table(run_dir: Path) -> list[dict]:
    """The rows of a run's metrics.csv, without wall-clock columns."""
    _, rows = read_rows(Path(run_dir) / "csv" / "metrics.csv")
    return [{k: v for k, v in r.items() if k not in CLOCKS} for r in rows]
