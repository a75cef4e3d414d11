"""Preemption on Slurm: checkpoint where resuming is exact, requeue, and stop cleanly."""

from __future__ import annotations

import logging
import os
import signal
import subprocess

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment

from pipelines.harness.loggers import finish

log = logging.getLogger(__name__)


class Requeued(SystemExit):
    """This attempt checkpointed and requeued its job; the rerun resumes from the checkpoint.

    A SystemExit with status 0, so that nothing on its way out (Hydra's job wrapper,
    submitit) records the attempt as a result or an error: the job is not done yet."""

    def __init__(self):
        super().__init__(0)


class DeferredRequeue(L.Callback):
    """Replaces Lightning's SIGUSR1 handler, which writes the hpc checkpoint the moment the
    signal lands (mid-step included) and then lets training run on until Slurm kills the job:
    the rerun can repeat or skip work and the logs get rows past the checkpoint.

    Here the signal is only noted. At the end of the training epoch (after its validation,
    where ``last.ckpt`` is written too and resuming is exact) every rank writes
    ``hpc_ckpt_N.ckpt``. At the start of the next epoch, once that epoch's metrics are
    logged, the loggers are flushed and closed, rank zero requeues the job and the attempt
    ends with :class:`Requeued`. A signal during the last epoch lets the run finish.
    """

    def __init__(self):
        self._pending = False
        self.checkpoint: str | None = None

    def on_fit_start(self, trainer, pl_module):
        env = trainer._accelerator_connector.cluster_environment
        if isinstance(env, SLURMEnvironment) and env.auto_requeue:
            signal.signal(signal.SIGUSR1, self._hold)

    def _hold(self, signum, frame):
        self._pending = True

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking or self.checkpoint:
            return
        # ranks get the signal at slightly different times: all save if any got it
        if trainer.strategy.reduce_boolean_decision(self._pending, all=False):
            path = trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir)
            trainer.save_checkpoint(path)
            self.checkpoint = path

    def on_train_epoch_start(self, trainer, pl_module):
        if not self.checkpoint:
            return
        for logger in trainer.loggers:
            logger.finalize("finished")
        finish(trainer.loggers)
        if trainer.is_global_zero:
            requeue()
            print(f"requeued after writing {self.checkpoint}; the rerun resumes from it",
                  flush=True)
        raise Requeued


def requeue() -> None:
    """``scontrol requeue`` this job (or array task); it keeps its id, hence its run dir."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ["SLURM_JOB_ID"]
    done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if done.returncode:
        log.warning("scontrol requeue %s failed (%s): %s", job, done.returncode, done.stderr)
    else:
        log.info("requeued Slurm job %s", job)
