"""Callbacks every pipeline gets: optimizer telemetry, RNG state in checkpoints."""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch

import optim


class OptimizerTelemetry(L.Callback):
    """Logs ``optim.telemetry`` every ``every`` optimizer steps as ``optim/g{i}/{figure}``.

    It asks the optimizer to record update/weight RMS only on the steps it logs, so
    the other steps pay nothing.
    """

    def __init__(self, every: int):
        self.every = every

    def _due(self, trainer) -> bool:
        return self.every > 0 and trainer.global_step % self.every == 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if isinstance(optimizer, optim.ChainOptimizer):
            optimizer.record_updates = self._due(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not self.every or (trainer.global_step - 1) % self.every:
            return
        for k, opt in enumerate(trainer.optimizers):
            if not isinstance(opt, optim.ChainOptimizer):
                continue
            for i, figures in enumerate(optim.telemetry(opt)):
                prefix = f"optim{k or ''}/g{i}"
                values = {f"{prefix}/{name}": float(v) for name, v in figures.items()
                          if v is not None}
                pl_module.log_dict(values, on_step=True, on_epoch=False, batch_size=1)


class RNGState(L.Callback):
    """Puts the Python, NumPy and torch RNG states into every checkpoint and restores them,
    so that a resumed run draws the same dropout masks as an uninterrupted one."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        checkpoint["rng_states"] = {"python": random.getstate(),
                                    "numpy": np.random.get_state(),
                                    "torch": torch.get_rng_state()}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        self._pending = checkpoint.get("rng_states")

    def on_train_start(self, trainer, pl_module):
        states = getattr(self, "_pending", None)
        if states:
            random.setstate(states["python"])
            np.random.set_state(states["numpy"])
            torch.set_rng_state(states["torch"])
            self._pending = None
