"""`adamlab train`: a Hydra config becomes a seeded Lightning run.

    adamlab train pipeline=gnn data=cora model=gcn optim=adamw optim.lr=0.01 seed=0

The run directory gets config.yaml, checkpoints/ (last + best), csv/metrics.csv,
figures (png), the offline W&B run and summary.json. Rerunning the same command into the same
run directory (``hydra.run.dir=...``, or a Slurm job's) continues from its newest checkpoint.
The app returns the best value of ``pipeline.monitor``, the objective of a Hydra sweeper
(``hydra/sweeper=optuna``).

Start-up: this module imports only Hydra; Lightning, torch and the pipeline's libraries are
imported once the config is composed (pipelines.harness.runner), so `--help`, `--cfg` and a
bad override answer fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from pipelines.harness.errors import UserError
from pipelines.harness.run_dir import register_resolvers
from pipelines.slurm.launcher import trainer_from_launcher

os.environ.setdefault("WANDB_MODE", "offline")
register_resolvers()
CONFIGS = str(Path(__file__).resolve().parent.parent / "configs")


def run(cfg, run_dir: Path, extra_callbacks=()):
    """Validate everything, then train, evaluate and write the run directory; the summary's
    metrics (a dict, with ``.objective``: the best monitored value)."""
    if cfg.logger.wandb.enabled:
        _import_wandb_first()
    from pipelines.harness.runner import run as train

    return train(cfg, Path(run_dir), extra_callbacks)


def _import_wandb_first() -> None:
    """W&B's ``init`` imports its launch package, whose pydantic models read their field
    docstrings through ``inspect.getmodule``, a scan of ``sys.modules`` per call: after
    torch, Lightning and PyG are loaded that costs about 1.2 CPU-s more than before them
    (bench/startup.py). Imported here first, when a W&B run is coming anyway."""
    if "torch" in sys.modules:
        return
    try:
        import wandb  # noqa: F401
        import wandb.sdk.launch.inputs.internal  # noqa: F401
    except Exception:  # noqa: BLE001 - W&B problems are reported (and survived) by the logger
        pass


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="train")
def main(cfg) -> float | None:
    """A user's mistake (config, data, checkpoint, run dir) or a failed run (divergence,
    requeue) is one line on stderr and a non-zero status; a bug keeps its traceback. In a
    sweep the job's error goes to the launcher, which reports it."""
    try:
        return run(trainer_from_launcher(cfg), Path(HydraConfig.get().runtime.output_dir)
                   ).objective
    except UserError as error:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        print(f"adamlab train: error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(error.exit_code) from None


if __name__ == "__main__":
    main()
