"""Progress on screen: Lightning's bar on a terminal, one line per epoch in a log.

Without a terminal (CI, a Slurm job log, ``make run | tee``) a progress bar writes a fragment
at every refresh; there each reported epoch is one line instead, at most ``MAX_LINES`` a run
(the first, every k-th and the last epoch). Both show what the module puts on the progress
bar (``self.log(..., prog_bar=True)``: the monitored metric and the loss), without Lightning's
``v_num``.
"""

from __future__ import annotations

import math
import sys
import time

from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar

MAX_LINES = 20


def bar(cfg) -> ProgressBar:
    if sys.stderr.isatty():
        return Bar(refresh_rate=max(1, cfg.trainer.log_every_n_steps))
    return EpochLines()


def shown(trainer) -> dict:
    """The progress-bar metrics as printable numbers, without ``v_num``."""
    out = {}
    for key, value in trainer.progress_bar_metrics.items():
        if key != "v_num":
            out[key] = float(value)
    return out


class Bar(TQDMProgressBar):
    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items


class EpochLines(ProgressBar):
    """``epoch 12/100  val_loss 0.913  val_acc 0.812  (3.4 s)`` on stdout, flushed."""

    def __init__(self, max_lines: int = MAX_LINES):
        super().__init__()
        self.max_lines = max_lines
        self._enabled = True
        self._started = time.perf_counter()

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer, pl_module):
        self._started = time.perf_counter()

    def _due(self, epoch: int, total: int) -> bool:
        if total <= 0:
            return True
        every = max(1, math.ceil(total / self.max_lines))
        return epoch == 0 or (epoch + 1) % every == 0 or epoch + 1 == total

    def on_train_epoch_end(self, trainer, pl_module):
        epoch, total = trainer.current_epoch, trainer.max_epochs or -1
        last = trainer.should_stop
        if not (self._enabled and trainer.is_global_zero and (self._due(epoch, total) or last)):
            return
        of = f"/{total}" if total > 0 else ""
        values = "  ".join(f"{k} {_fmt(v)}" for k, v in shown(trainer).items())
        print(f"epoch {epoch + 1}{of}  {values}  ({time.perf_counter() - self._started:.1f} s)",
              flush=True)


def _fmt(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)
