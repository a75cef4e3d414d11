"""CSV always; W&B offline by default, and never allowed to stop training.

A user with an account sets ``WANDB_MODE=online``. Any W&B failure (no key, a bad
directory, a network error while logging) becomes a warning and the run goes on with CSV.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from omegaconf import OmegaConf


class SafeWandbLogger(WandbLogger):
    """WandbLogger whose logging calls warn instead of raising."""

    def _safely(self, name, *args, **kwargs):
        try:
            return getattr(super(), name)(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - logging must never kill training
            warnings.warn(f"W&B {name} failed ({error!r}); continuing with CSV only",
                          stacklevel=2)

    def log_metrics(self, *args, **kwargs):
        return self._safely("log_metrics", *args, **kwargs)

    def log_hyperparams(self, *args, **kwargs):
        return self._safely("log_hyperparams", *args, **kwargs)

    def log_image(self, *args, **kwargs):
        return self._safely("log_image", *args, **kwargs)

    def after_save_checkpoint(self, *args, **kwargs):
        return self._safely("after_save_checkpoint", *args, **kwargs)


class _ContinuingWriter(ExperimentWriter):
    """Keeps an existing metrics.csv (Lightning's writer deletes it): a requeued run resumes
    in the same run dir. Rows the killed run logged at or past the step (or epoch) the resumed run
    starts from are dropped, so no epoch appears twice. ``earlier`` keeps the rows found."""

    def __init__(self, log_dir: str) -> None:
        path = Path(log_dir) / self.NAME_METRICS_FILE
        with open(path, newline="") if path.is_file() else open(os.devnull) as f:
            self.earlier = [{k: v for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
        self._merged = not self.earlier
        super().__init__(log_dir)

    def save(self) -> None:
        if not self._merged and self.metrics:
            step = min(int(m["step"]) for m in self.metrics)
            epoch = min((int(m["epoch"]) for m in self.metrics if "epoch" in m), default=None)
            self.metrics = rows_before(self.earlier, step, epoch) + self.metrics
            self._merged = True
        super().save()


def rows_before(rows: list[dict], step: int, epoch: int | None) -> list[dict]:
    """The csv rows an earlier attempt logged before the (step, epoch) a run resumes at."""
    return [r for r in rows if int(r["step"]) < step
            and (epoch is None or not r.get("epoch") or int(float(r["epoch"])) < epoch)]


class ContinuingCSVLogger(CSVLogger):
    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment


class OfflineWandbResume(L.Callback):
    """One offline W&B run per run dir, also across requeues.

    Offline, W&B cannot resume: every attempt of a requeued job writes a new
    ``offline-run-<time>-<id>`` directory, even with the same id. When a run resumes from a
    checkpoint, this replays the rows the earlier attempts logged before that point (from
    csv/metrics.csv, which gets every logged row too) into the new W&B run, through the same
    ``log_metrics`` call, and then removes the earlier directories: the run dir keeps one W&B
    run whose steps continue. Online, ``resume="allow"`` continues the run on the server and
    this does nothing.
    """

    def on_train_start(self, trainer, pl_module):
        step = trainer.fit_loop.epoch_loop._batches_that_stepped  # the loggers' step
        wb = next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
        if not trainer.is_global_zero or wb is None or (step == 0 == trainer.current_epoch):
            return
        try:
            run = wb.experiment
            here = Path(run.settings.sync_dir)
            # offline-run-<date>_<time>-<id>, W&B adds -<n> when a second starts alike
            same_run = re.compile(rf"offline-run-\d{{8}}_\d{{6}}-{re.escape(run.id)}(-\d+)?")
            earlier = [d for d in here.parent.glob("offline-run-*")
                       if d != here and same_run.fullmatch(d.name)]
            if not run.settings._offline or not earlier:
                return
            table = next(lg for lg in trainer.loggers if isinstance(lg, ContinuingCSVLogger))
            rows = rows_before(table.experiment.earlier, step, trainer.current_epoch)
            for row in rows:
                values = {k: float(v) for k, v in row.items() if k != "step"}
                wb.log_metrics(values, step=int(row["step"]))
            for d in earlier:
                shutil.rmtree(d)
        except Exception as error:  # noqa: BLE001 - logging must never kill training
            warnings.warn(f"W&B offline resume failed ({error!r}); earlier attempts stay in "
                          "their own offline-run directories", stacklevel=2)


def build_loggers(cfg, run_dir: Path) -> list:
    loggers = [ContinuingCSVLogger(save_dir=str(run_dir), name="", version="csv")]
    wb = cfg.logger.wandb
    if wb.enabled:
        wandb_logger = _wandb(cfg, wb, run_dir)
        if wandb_logger is not None:
            loggers.append(wandb_logger)
    return loggers


def _wandb(cfg, wb, run_dir: Path):
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        logger = SafeWandbLogger(
            project=wb.project, group=wb.group, name=wb.name, tags=list(wb.tags),
            save_dir=str(run_dir), id=wb.get("id"), resume="allow" if wb.get("id") else None,
            log_model=bool(wb.log_checkpoints),
            config=OmegaConf.to_container(cfg, resolve=True))
        _ = logger.experiment  # start the run now, so a failure surfaces here
        return logger
    except Exception as error:  # noqa: BLE001
        warnings.warn(f"W&B could not start ({error!r}); training goes on with CSV only",
                      stacklevel=2)
        return None


def wandb_dir(loggers) -> str | None:
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            try:
                return logger.experiment.dir
            except Exception:  # noqa: BLE001
                return None
    return None


def finish(loggers) -> None:
    """Close the W&B run so its summary and history are flushed to the run directory."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            try:
                logger.experiment.finish()
            except Exception as error:  # noqa: BLE001
                warnings.warn(f"W&B finish failed ({error!r})", stacklevel=2)
