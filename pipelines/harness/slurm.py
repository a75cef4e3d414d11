"""Preemption on Slurm: Lightning's SIGUSR1 checkpoint taken where resuming is exact."""

from __future__ import annotations

import signal

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment


class DeferredRequeue(L.Callback):
    """Lightning's SLURM handler (hpc checkpoint + ``scontrol requeue``) runs the moment
    SIGUSR1 lands, mid-step included, and a rerun from such a checkpoint can repeat or skip
    work. This holds the signal until the training epoch ends (after its validation), where
    checkpoints resume exactly (as ``resume=`` does), then runs Lightning's handler."""

    def __init__(self):
        self._handler = self._pending = None

    def on_fit_start(self, trainer, pl_module):
        env = trainer._accelerator_connector.cluster_environment
        handler = signal.getsignal(signal.SIGUSR1)
        if isinstance(env, SLURMEnvironment) and env.auto_requeue and callable(handler):
            self._handler = handler
            signal.signal(signal.SIGUSR1, self._hold)

    def _hold(self, signum, frame):
        self._pending = (signum, frame)

    def on_train_epoch_end(self, trainer, pl_module):
        if self._pending and not trainer.sanity_checking:
            pending, self._pending = self._pending, None
            self._handler(*pending)
