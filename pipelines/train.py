"""`adamlab train`: a Hydra config becomes a seeded Lightning run.

    adamlab train pipeline=gnn data=cora model=gcn optim=adamw optim.lr=0.01 seed=0

The run directory gets config.yaml, checkpoints/ (last + best), csv/metrics.csv,
figures (png), the offline W&B run and summary.json.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import (
    EMAWeightAveraging,
    LearningRateMonitor,
    ModelCheckpoint,
    TQDMProgressBar,
)
from omegaconf import OmegaConf

from pipelines import registry
from pipelines.harness.callbacks import OptimizerTelemetry, StepSeeds
from pipelines.harness.checkpoint_io import AtomicCheckpointIO
from pipelines.harness.loggers import OfflineWandbResume, build_loggers, finish, wandb_dir
from pipelines.harness.run_dir import write_config, write_summary
from pipelines.harness.slurm import DeferredRequeue
from pipelines.harness.validation import resume_checkpoint, validate_common

os.environ.setdefault("WANDB_MODE", "offline")


def run(cfg, run_dir: Path, extra_callbacks=()) -> dict:
    """Validate everything, then train, evaluate and write the run directory."""
    validate_common(cfg)
    pipeline = registry.get(cfg.pipeline.name)
    pipeline.validate(cfg)
    started = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(cfg, run_dir)
    module, datamodule = pipeline.build(cfg)
    loggers = build_loggers(cfg, run_dir)
    monitor, mode = getattr(pipeline, "monitor", (None, "min"))
    trainer = L.Trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        logger=loggers,
        callbacks=[*_callbacks(cfg, run_dir, monitor, mode), *extra_callbacks],
        default_root_dir=str(run_dir),
        plugins=[AtomicCheckpointIO()],
        inference_mode=False,  # MLIP forces need autograd in validation and test
    )
    ckpt = resume_checkpoint(cfg.resume) if cfg.resume else None
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
    metrics = pipeline.summary(trainer, module, datamodule)
    figures = [str(p) for p in pipeline.figures(trainer, module, datamodule, run_dir) if p]
    wandb = wandb_dir(loggers)
    finish(loggers)
    if trainer.is_global_zero:
        summary = write_summary(run_dir, cfg.pipeline.name, metrics,
                                time.perf_counter() - started,
                                {"figures": figures, "wandb_dir": wandb})
        _report(run_dir, figures, wandb, summary)
    return metrics


def _callbacks(cfg, run_dir: Path, monitor, mode) -> list:
    callbacks = [
        ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, monitor=monitor,
                        mode=mode, save_top_k=1 if monitor else 0,
                        filename="best-{epoch}" if monitor else None,
                        every_n_epochs=cfg.checkpoint_every),
        LearningRateMonitor(logging_interval="step"),
        OptimizerTelemetry(cfg.telemetry_every),
        StepSeeds(cfg.seed),
        DeferredRequeue(),
        OfflineWandbResume(),
    ]
    if cfg.trainer.enable_progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, cfg.trainer.log_every_n_steps)))
    if cfg.ema_decay:
        callbacks.append(EMAWeightAveraging(decay=cfg.ema_decay))
    return callbacks


def _report(run_dir: Path, figures: list, wandb: str | None, summary: Path) -> None:
    print(f"\nrun dir:  {run_dir}\nsummary:  {summary}")
    for f in figures:
        print(f"figure:   {f}")
    if wandb:
        print(f"W&B run:  {wandb} (offline; `wandb sync` uploads it)")


CONFIGS = str(Path(__file__).resolve().parent.parent / "configs")


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="train")
def main(cfg) -> dict:
    return run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
