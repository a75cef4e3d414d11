"""CSV always; W&B offline by default, and never allowed to stop training.

A user with an account sets ``WANDB_MODE=online``. Any W&B failure (no key, a bad
directory, a network error while logging) becomes a warning and the run goes on with CSV.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import warnings
from pathlib import Path

import lightning as L
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from omegaconf import OmegaConf

from .callbacks import logger_step
from .files import atomic_write


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


class _RunWriter(ExperimentWriter):
    """``metrics.csv`` that a kill cannot tear and that continues across attempts.

    A resumed attempt keeps the rows earlier attempts logged before the logger step it resumes
    at (``earlier``) and drops the rest, which it logs again. Rows are appended with one
    ``write`` and an fsync per flush (the checkpoint callback flushes before every save); new
    columns rewrite the file atomically. Lightning's writer deletes the file instead.
    """

    def __init__(self, log_dir: str, resume_step: int) -> None:
        self.metrics: list[dict] = []
        self.metrics_keys: list[str] = []
        self.log_dir = log_dir
        self.metrics_file_path = os.path.join(log_dir, self.NAME_METRICS_FILE)
        self.hparams: dict = {}
        self._fs = get_filesystem(log_dir)
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        keys, rows = read_rows(Path(self.metrics_file_path))
        self.earlier = [r for r in rows if _step(r) < resume_step]
        self.metrics_keys = keys
        if rows and len(self.earlier) < len(rows) or _torn(Path(self.metrics_file_path)):
            self._rewrite(self.earlier)

    def save(self) -> None:
        if not self.metrics:
            return
        new_keys = set().union(*self.metrics) - set(self.metrics_keys)
        path = Path(self.metrics_file_path)
        if new_keys or not path.is_file():
            self.metrics_keys = sorted({*self.metrics_keys, *new_keys})
            self._rewrite(read_rows(path)[1] + self.metrics)
        else:
            out = io.StringIO()
            csv.DictWriter(out, fieldnames=self.metrics_keys).writerows(self.metrics)
            data = out.getvalue().encode()
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            try:
                while data:
                    data = data[os.write(fd, data):]
                os.fsync(fd)
            finally:
                os.close(fd)
        self.metrics = []

    def _rewrite(self, rows: list[dict]) -> None:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=self.metrics_keys)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.metrics_file_path, out.getvalue())


def _step(row: dict) -> int:
    return int(float(row["step"]))


def _torn(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")


def read_rows(path: Path) -> tuple[list[str], list[dict]]:
    """The header and complete rows of a metrics.csv (a torn last line is left out); values
    stay the strings written, empty cells dropped."""
    if not path.is_file():
        return [], []
    text = path.read_text()
    text = text[:text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(text))
    rows = [{k: v for k, v in r.items() if v not in ("", None) and k is not None}
            for r in reader]
    return list(reader.fieldnames or []), [r for r in rows if "step" in r]


class RunCSVLogger(CSVLogger):
    """Lightning's CSVLogger with :class:`_RunWriter` (rows of earlier attempts kept up to the
    step this attempt resumes at)."""

    def __init__(self, save_dir: str, resume_step: int = 0) -> None:
        super().__init__(save_dir=save_dir, name="", version="csv")
        self.resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._experiment = _RunWriter(self.log_dir, self.resume_step)
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
        step = logger_step(trainer)
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
            table = next(lg for lg in trainer.loggers if isinstance(lg, RunCSVLogger))
            for row in table.experiment.earlier:
                values = {k: float(v) for k, v in row.items() if k != "step"}
                wb.log_metrics(values, step=int(row["step"]))
            for d in earlier:
                shutil.rmtree(d)
        except Exception as error:  # noqa: BLE001 - logging must never kill training
            warnings.warn(f"W&B offline resume failed ({error!r}); earlier attempts stay in "
                          "their own offline-run directories", stacklevel=2)


def build_loggers(cfg, run_dir: Path, resume_step: int = 0, wandb_id: str | None = None) -> list:
    """CSV (always: resuming replays it; earlier attempts' rows kept before ``resume_step``),
    W&B (continuing ``wandb_id`` when the run dir's checkpoint names one and the config sets
    none) and TensorBoard (``logger=tensorboard``: Lightning's logger, in tensorboard/)."""
    loggers = [RunCSVLogger(str(run_dir), resume_step)]
    if cfg.logger.tensorboard.enabled:
        loggers.append(TensorBoardLogger(str(run_dir), name="", version="tensorboard",
                                         default_hp_metric=False))
    wb = cfg.logger.wandb
    if wb.enabled:
        wandb_logger = _wandb(cfg, wb, run_dir, wb.get("id") or wandb_id)
        if wandb_logger is not None:
            loggers.append(wandb_logger)
    return loggers


def _wandb(cfg, wb, run_dir: Path, run_id: str | None):
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        logger = SafeWandbLogger(
            project=wb.project, group=wb.group, name=wb.name, tags=list(wb.tags),
            save_dir=str(run_dir), id=run_id, resume="allow" if run_id else None,
            log_model=bool(wb.log_checkpoints),
            config=OmegaConf.to_container(cfg, resolve=True))
        _ = logger.experiment  # start the run now, so a failure surfaces here
        return logger
    except Exception as error:  # noqa: BLE001
        warnings.warn(f"W&B could not start ({error!r}); training goes on with CSV only",
                      stacklevel=2)
        return None


def _wandb_attr(loggers, name: str) -> str | None:
    """An attribute of the W&B run (``id``, ``dir``), None without W&B or when it failed."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            try:
                return getattr(logger.experiment, name)
            except Exception:  # noqa: BLE001
                return None
    return None


def wandb_run_id(loggers) -> str | None:
    return _wandb_attr(loggers, "id")


def wandb_dir(loggers) -> str | None:
    """The offline run's folder (``wandb/offline-run-<time>-<id>``, what ``wandb sync``
    takes), not its ``files/`` subfolder."""
    files = _wandb_attr(loggers, "dir")
    return None if files is None else str(Path(files).parent)


def finish(loggers) -> None:
    """Close the W&B run so its summary and history are flushed to the run directory."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            try:
                logger.experiment.finish()
            except Exception as error:  # noqa: BLE001
                warnings.warn(f"W&B finish failed ({error!r})", stacklevel=2)
