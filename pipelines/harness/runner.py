"""One training run: a composed config becomes a seeded Lightning run and a run directory.

Kept apart from the Hydra app (pipelines.train) so that composing a config, `adamlab train
--help` and a user's mistake in an override cost no Lightning import.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from omegaconf import OmegaConf

from pipelines import registry
from pipelines.harness import checkpoints, progress, report, slurm
from pipelines.harness.callbacks import OptimizerTelemetry, StepSeeds, WarmupEMA
from pipelines.harness.checkpoint_io import AtomicCheckpointIO
from pipelines.harness.errors import FileError, UserError
from pipelines.harness.loggers import (
    OfflineWandbResume,
    build_loggers,
    finish,
    wandb_dir,
    wandb_run_id,
)
from pipelines.harness.nonfinite import NonFiniteGuard
from pipelines.harness.run_dir import write_config, write_summary
from pipelines.harness.validation import monitor_of, validate_common


class _NoAdverts(logging.Filter):
    """Lightning's advert, and its note on every full checkpoint the harness writes."""

    NOISE = ("💡 Tip", "`weights_only` was not set")

    def filter(self, record):
        return not str(record.msg).startswith(self.NOISE)


def _quiet_lightning_logging() -> None:
    """Lightning's messages once, plainly, on stderr: imported after Hydra has configured the
    root logger, Lightning would print each twice (its own handler and the root's); without
    its advert for another logging service or its note on each full checkpoint."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(logging.StreamHandler())
        logger.propagate = False
        for handler in logger.handlers:
            handler.addFilter(_NoAdverts())


_quiet_lightning_logging()
# Lightning 2.6 under torch 2.13, once per run: nothing a user can act on
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


class Metrics(dict):
    """The summary's metrics, plus ``objective``: the best value of ``pipeline.monitor``
    (what `adamlab train` returns to a Hydra sweeper), None without a monitor."""

    objective: float | None = None


def run(cfg, run_dir: Path, extra_callbacks=()) -> Metrics:
    """Validate everything, then train, evaluate and write the run directory."""
    slurm.install_signal_handler()  # before anything slow: SIGUSR1 would kill by default
    pipeline = registry.get(cfg.pipeline.name)
    validate_common(cfg, pipeline)
    pipeline.validate(cfg)
    monitor, mode = monitor_of(cfg)
    found = checkpoints.choose(cfg, Path(run_dir))
    run_dir = usable_run_dir(Path(run_dir))
    same_run = found is not None and found.path.resolve().is_relative_to(run_dir.resolve())
    started = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    write_config(cfg, run_dir)
    module, datamodule = pipeline.build(cfg)
    loggers = build_loggers(cfg, run_dir, resume_step=found.next_step if found else 0,
                            wandb_id=found.header.get("wandb_id") if same_run else None)
    header = checkpoints.make_header(cfg, wandb_run_id(loggers))
    callbacks = _callbacks(cfg, run_dir, monitor, mode, header,
                           lr_monitor=not getattr(pipeline, "logs_learning_rate", False))
    trainer = L.Trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        logger=loggers,
        callbacks=[*callbacks, *extra_callbacks],
        default_root_dir=str(run_dir),
        plugins=[AtomicCheckpointIO(),
                 *([SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else [])],
        inference_mode=False,  # MLIP forces need autograd in validation and test
    )
    try:
        trainer.fit(compiled(module, cfg.compile), datamodule=datamodule,
                    ckpt_path=found and str(found.path), weights_only=True)
        metrics = Metrics(pipeline.summary(trainer, module, datamodule))
        metrics.objective = objective(trainer, monitor)
        figures = [str(p) for p in pipeline.figures(trainer, module, datamodule, run_dir) if p]
    except slurm.Requeued:
        raise
    except BaseException as error:
        finish(loggers)
        if trainer.is_global_zero:
            write_summary(run_dir, cfg.pipeline.name, {}, time.perf_counter() - started,
                          status="failed", error=_describe(error))
        raise
    wandb = wandb_dir(loggers)
    finish(loggers)
    if trainer.is_global_zero:
        wall = time.perf_counter() - started
        extra = {"figures": figures, "wandb_dir": wandb,
                 "resumed_from": found and str(found.path)}
        if monitor:
            extra["objective"] = {"metric": monitor, "mode": mode, "best": metrics.objective}
        summary = write_summary(run_dir, cfg.pipeline.name, metrics, wall, extra)
        print(report.end_of_run(cfg.pipeline.name, metrics, wall, run_dir, summary, figures,
                                wandb, tensorboard=_tensorboard_dir(trainer)), flush=True)
    return metrics


def compiled(module: L.LightningModule, setting) -> L.LightningModule:
    """``compile``: false, true (torch.compile's defaults: inductor) or a dict of
    torch.compile keyword arguments (``{backend: aot_eager}``, ``{mode: max-autotune}``).
    Lightning unwraps the compiled module and compiles its forward; checkpoints keep the
    uncompiled parameter names."""
    if not setting:
        return module
    import torch

    kwargs = OmegaConf.to_container(setting) if OmegaConf.is_config(setting) else {}
    return torch.compile(module, **(kwargs if isinstance(kwargs, dict) else {}))


def objective(trainer, monitor: str | None) -> float | None:
    """The best monitored value the run reached (its best-checkpoint callback's), else the
    last one logged."""
    if not monitor:
        return None
    best = next((cb.best_model_score for cb in trainer.checkpoint_callbacks
                 if getattr(cb, "monitor", None) == monitor
                 and cb.best_model_score is not None), None)
    value = best if best is not None else trainer.callback_metrics.get(monitor)
    return None if value is None else float(value)


def usable_run_dir(run_dir: Path) -> Path:
    """The run dir and its checkpoints/ exist and take files, or FileError now (not after an
    epoch, when the first checkpoint is written)."""
    allowed = "a directory this user can create and write (set hydra.run.dir or ADAMLAB_RUNS)"
    for path in (run_dir, run_dir / "checkpoints"):
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / f".adamlab-probe-{os.getpid()}.tmp"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise FileError(path, f"cannot be used ({error.strerror or error})",
                            allowed) from None
    return run_dir


def _callbacks(cfg, run_dir: Path, monitor, mode, header: dict, lr_monitor: bool = True) -> list:
    interval = checkpoints.Interval.parse(cfg.checkpoint_every)
    callbacks = [
        checkpoints.RunCheckpoints(run_dir, interval, header, cfg.max_requeues),
        *([LearningRateMonitor(logging_interval="step")] if lr_monitor else []),
        OptimizerTelemetry(cfg.telemetry_every),
        StepSeeds(cfg.seed),
        NonFiniteGuard(cfg.nonfinite.action, cfg.nonfinite.max_consecutive, cfg.optim.get("lr")),
        OfflineWandbResume(),
    ]
    if monitor:  # the best epoch by the pipeline's monitor, for evaluation (not for resuming)
        callbacks.append(ModelCheckpoint(
            dirpath=run_dir / "checkpoints", filename="best-{epoch}", monitor=monitor, mode=mode,
            save_top_k=1, save_last=False, enable_version_counter=False,
            every_n_epochs=int(interval.amount) if interval.unit == "epochs" else 1))
    stopping = cfg.callbacks.early_stopping
    if stopping.patience is not None:  # checked against the monitor in validate_common
        callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=stopping.patience,
                                       min_delta=stopping.min_delta))
    if cfg.trainer.enable_progress_bar:
        callbacks.append(progress.bar(cfg, monitor))
    if cfg.ema_decay:
        callbacks.append(WarmupEMA(cfg.ema_decay))
    return callbacks


def _tensorboard_dir(trainer) -> str | None:
    from lightning.pytorch.loggers import TensorBoardLogger

    found = [lg.log_dir for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
    return found[0] if found else None


def _describe(error: BaseException) -> str:
    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, SystemExit):
        return f"stopped (exit status {error.code})"
    return f"{type(error).__name__}: {error}"
