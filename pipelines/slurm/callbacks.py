"""A Hydra callback for sweeps on Slurm (installed by ``hydra/launcher=slurm``).

Hydra only instantiates launchers from the ``hydra_plugins`` package, so instead of
subclassing hydra-submitit-launcher this callback runs inside each array job:
- it gives the job a W&B id derived from the sweep dir and the array job/task id, with
  resume allowed, so a requeued job continues its W&B run;
- it prints a failed job's traceback into the job's own log and hands the sweep a plain,
  picklable error (the harness's exceptions need not survive submitit's pickling).
"""

from __future__ import annotations

import hashlib
import os
import sys
import traceback
from pathlib import Path

from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback


class JobFailed(RuntimeError):
    """A job's error as text."""


def wandb_id(sweep_dir: str, job_id: str) -> str:
    """Stable across requeues (same sweep dir, same array task), unique across sweeps."""
    digest = hashlib.sha1(str(Path(sweep_dir).resolve()).encode()).hexdigest()[:8]
    return f"{digest}-{job_id}"


class SlurmJob(Callback):
    def on_job_start(self, config, **kwargs) -> None:
        if "SLURM_JOB_ID" in os.environ and not os.environ.get("WANDB_RUN_ID"):
            os.environ["WANDB_RUN_ID"] = wandb_id(str(config.hydra.sweep.dir),
                                                  str(config.hydra.job.id))
            os.environ["WANDB_RESUME"] = "allow"

    def on_job_end(self, config, job_return, **kwargs) -> None:
        if job_return.status != JobStatus.FAILED:
            return
        error = job_return._return_value
        where = f"job {config.hydra.job.num} ({config.hydra.job.id})"
        text = "".join(traceback.format_exception(error))
        print(f"adamlab {where} failed:\n{text}", file=sys.stderr, flush=True)
        overrides = " ".join(config.hydra.overrides.task)
        job_return._return_value = JobFailed(f"{where} [{overrides}]: {error}")
