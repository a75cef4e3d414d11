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


def bar(cfg, monitor: str | None = None) -> ProgressBar:
    if sys.stderr.isatty():
        return Bar(monitor, refresh_rate=max(1, cfg.trainer.log_every_n_steps))
    return EpochLines(monitor)


def shown(trainer, monitor: str | None = None) -> dict:
    """The progress-bar metrics as printable numbers, without ``v_num``, and the monitored
    metric where the module logged it but not to the bar."""
    out = {}
    for key, value in trainer.progress_bar_metrics.items():
        if key != "v_num":
            out[key] = float(value)
    if monitor and monitor not in out and monitor in trainer.callback_metrics:
        out[monitor] = float(trainer.callback_metrics[monitor])
    return out


class Bar(TQDMProgressBar):
    def __init__(self, monitor: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.monitor = monitor

    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        if self.monitor and self.monitor not in items and \
                self.monitor in trainer.callback_metrics:
            items[self.monitor] = f"{float(trainer.callback_metrics[self.monitor]):.4g}"
        return items


class EpochLines(ProgressBar):
    """``epoch 12/100  val_loss 0.913  val_acc 0.812  (3.4 s)`` on stdout, flushed."""

    def __init__(self, monitor: str | None = None, max_lines: int = MAX_LINES):
        super().__init__()
        self.monitor, self.max_lines = monitor, max_lines
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
        values = "  ".join(f"{k} {_fmt(v)}" for k, v in shown(trainer, self.monitor).items())
        print(f"epoch {epoch + 1}{of}  {values}  ({time.perf_counter() - self._started:.1f} s)",
              flush=True)


def _fmt(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)
