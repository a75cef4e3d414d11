"""Callbacks every pipeline gets: optimizer telemetry, RNG state in checkpoints."""

from __future__ import annotations

import copy
import random

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import WeightAveraging

import optim


def warmup_ema_avg_fn(decay: float):
    """EMA update whose decay ramps up as ``min(decay, (1 + n) / (10 + n))`` over the ``n``
    updates so far (TensorFlow's ``ExponentialMovingAverage(num_updates=...)``, timm's EMA
    warm-up): with a fixed 0.99 the average of a short run stays dominated by its first,
    untrained weights for ~100 steps. Integer buffers are copied, not averaged."""

    def update(average, current, num_averaged):
        if not average.is_floating_point():
            return current
        rate = min(decay, (1.0 + float(num_averaged)) / (10.0 + float(num_averaged)))
        return average + (1.0 - rate) * (current - average)

    return update


class WarmupEMA(WeightAveraging):
    """The run's ``ema_decay``: Lightning's weight averaging with :func:`warmup_ema_avg_fn`.

    When training ends Lightning copies the average into the module (what is evaluated and
    handed on); the checkpoint written after that still records the raw weights as the ones
    to continue training from, so extending a finished run resumes exactly."""

    def __init__(self, decay: float):
        super().__init__(avg_fn=warmup_ema_avg_fn(decay))
        self._raw_at_end = None

    def on_train_end(self, trainer, pl_module):
        self._raw_at_end = {k: v.detach().clone() if torch.is_tensor(v) else copy.deepcopy(v)
                            for k, v in pl_module.state_dict().items()}
        super().on_train_end(trainer, pl_module)

    def on_fit_end(self, trainer, pl_module):
        """A run resumed from a checkpoint written after its last step trains nothing, and
        Lightning then skips ``on_train_end``: the average goes into the module here, so the
        rerun evaluates the weights the run ended with."""
        if self._raw_at_end is None and self._average_model is not None:
            self.on_train_end(trainer, pl_module)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if self._raw_at_end is not None and "current_model_state" in checkpoint:
            checkpoint["current_model_state"] = self._raw_at_end


class OptimizerTelemetry(L.Callback):
    """Logs ``optim.telemetry`` every ``every`` optimizer steps as ``optim/g{i}/{figure}``.

    It asks the optimizer to record update/weight RMS only on the steps it logs, so
    the other steps pay nothing.
    """

    def __init__(self, every: int):
        self.every = every

    def _due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._steps_before = trainer.global_step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if isinstance(optimizer, optim.ChainOptimizer):
            optimizer.record_updates = self._due(trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        """Log once per batch if a multiple of ``every`` was stepped during it (a PPO batch
        takes many optimizer steps)."""
        first, last = getattr(self, "_steps_before", 0), trainer.global_step
        if not any(self._due(s) for s in range(first, last)):
            return
        values = {}
        for k, opt in enumerate(trainer.optimizers):
            if not isinstance(opt, optim.ChainOptimizer):
                continue
            for i, figures in enumerate(optim.telemetry(opt)):
                prefix = f"optim{k or ''}/g{i}"
                values |= {f"{prefix}/{name}": float(v) for name, v in figures.items()
                           if v is not None}
        log_now(trainer, values)


def log_now(trainer, values: dict) -> None:
    """Straight to the loggers at this batch's step. ``self.log`` would also repeat the values
    on every later step of the epoch (Lightning keeps step values until the epoch ends), so a
    run resumed mid-epoch could not log the same rows."""
    if values and trainer.is_global_zero:
        step = logger_step(trainer)
        for logger in trainer.loggers:
            logger.log_metrics(values, step=step)


def logger_step(trainer) -> int:
    """The step rows logged now are filed under, and a resumed run continues from: the
    module's ``log_step`` where it keeps an axis of its own (RL: env steps before the update
    in progress), else Lightning's count of batches that stepped."""
    step = getattr(trainer.lightning_module, "log_step", None)
    return trainer.fit_loop.epoch_loop._batches_that_stepped if step is None else int(step)


class StepSeeds(L.Callback):
    """Reseeds Python, NumPy and torch from (seed, global step) before every training batch.

    Dropout masks and any other draws inside a step are then a function of the step alone,
    so a resumed run trains exactly as an uninterrupted one, with no RNG state to carry in
    checkpoints. (Data order is the datamodule's business: give shuffling loaders their own
    seeded generator.)
    """

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        s = (self.seed * 1_000_003 + trainer.global_step) % (2**32)
        random.seed(s)
        np.random.seed(s)
        if pl_module.device.type == "cpu":
            # torch.manual_seed's CPU draws, without the lazy CUDA seed it also queues (with a
            # formatted traceback: about 0.5 ms every step)
            torch.default_generator.manual_seed(s)
        else:
            torch.manual_seed(s)
