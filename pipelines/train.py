"""`adamlab train`: a Hydra config becomes a seeded Lightning run.

    adamlab train pipeline=gnn data=cora model=gcn optim=adamw optim.lr=0.01 seed=0

The run directory gets config.yaml, checkpoints/ (last + best), csv/metrics.csv,
figures (png), the offline W&B run and summary.json. Rerunning the same command into the same
run directory (``hydra.run.dir=...``, or a Slurm job's) continues from its newest checkpoint.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import (
    LearningRateMonitor,
    ModelCheckpoint,
    TQDMProgressBar,
)
from omegaconf import OmegaConf

from pipelines import registry
from pipelines.harness import checkpoints, slurm
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
from pipelines.harness.validation import validate_common
from pipelines.slurm.launcher import trainer_from_launcher

os.environ.setdefault("WANDB_MODE", "offline")


def run(cfg, run_dir: Path, extra_callbacks=()) -> dict:
    """Validate everything, then train, evaluate and write the run directory."""
    slurm.install_signal_handler()  # before anything slow: SIGUSR1 would kill by default
    pipeline = registry.get(cfg.pipeline.name)
    validate_common(cfg, pipeline)
    pipeline.validate(cfg)
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
    monitor, mode = getattr(pipeline, "monitor", (None, "min"))
    trainer = L.Trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        logger=loggers,
        callbacks=[*_callbacks(cfg, run_dir, monitor, mode, header,
                               lr_monitor=not getattr(pipeline, "logs_learning_rate", False)),
                   *extra_callbacks],
        default_root_dir=str(run_dir),
        plugins=[AtomicCheckpointIO(),
                 *([SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else [])],
        inference_mode=False,  # MLIP forces need autograd in validation and test
    )
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=found and str(found.path),
                    weights_only=True)
        metrics = pipeline.summary(trainer, module, datamodule)
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
        summary = write_summary(run_dir, cfg.pipeline.name, metrics,
                                time.perf_counter() - started,
                                {"figures": figures, "wandb_dir": wandb,
                                 "resumed_from": found and str(found.path)})
        _report(run_dir, figures, wandb, summary)
    return metrics


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
    if cfg.trainer.enable_progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, cfg.trainer.log_every_n_steps)))
    if cfg.ema_decay:
        callbacks.append(WarmupEMA(cfg.ema_decay))
    return callbacks


def _describe(error: BaseException) -> str:
    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, SystemExit):
        return f"stopped (exit status {error.code})"
    return f"{type(error).__name__}: {error}"


def _report(run_dir: Path, figures: list, wandb: str | None, summary: Path) -> None:
    print(f"\nrun dir:  {run_dir}\nsummary:  {summary}")
    for f in figures:
        print(f"figure:   {f}")
    if wandb:
        print(f"W&B run:  {wandb} (offline; `wandb sync` uploads it)")


CONFIGS = str(Path(__file__).resolve().parent.parent / "configs")


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="train")
def main(cfg) -> dict:
    """A user's mistake (config, data, checkpoint, run dir) or a failed run (divergence,
    requeue) is one line on stderr and a non-zero status; a bug keeps its traceback. In a
    sweep the job's error goes to the launcher, which reports it."""
    try:
        return run(trainer_from_launcher(cfg), Path(HydraConfig.get().runtime.output_dir))
    except UserError as error:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        print(f"adamlab train: error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(error.exit_code) from None


if __name__ == "__main__":
    main()
