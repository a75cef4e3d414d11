"""Checks of the shared config keys, run before any data is built."""

from __future__ import annotations

import os

import torch
from omegaconf import ListConfig, OmegaConf

from .checkpoints import Interval
from .errors import ConfigError
from .optimizers import build_optimizer, build_scheduler

ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
PRECISIONS = ("32-true", "32", "64-true", "64", "bf16-mixed", "16-mixed", "bf16-true")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "fsdp", "deepspeed")
NONFINITE = ("error", "skip")
MODES = ("min", "max")


def _int(key: str, value, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(key, value, f"an integer >= {low}")


def validate_common(cfg, pipeline=None) -> None:
    _int("seed", cfg.seed, 0)
    _int("telemetry_every", cfg.telemetry_every, 0)
    Interval.parse(cfg.checkpoint_every)
    _int("max_requeues", cfg.max_requeues, 0)
    accepted = cfg.resume_accept_changes
    if not isinstance(accepted, ListConfig | list) or not all(isinstance(k, str)
                                                               for k in accepted):
        raise ConfigError("resume_accept_changes", accepted,
                          "a list of config keys or groups, e.g. [optim.lr] or [optim]")
    if cfg.nonfinite.action not in NONFINITE:
        raise ConfigError("nonfinite.action", cfg.nonfinite.action, "error or skip")
    _int("nonfinite.max_consecutive", cfg.nonfinite.max_consecutive, 1)
    if cfg.ema_decay is not None and not (isinstance(cfg.ema_decay, float)
                                          and 0 < cfg.ema_decay < 1):
        raise ConfigError("ema_decay", cfg.ema_decay, "null or a number in (0, 1)")
    _validate_trainer(cfg.trainer, pipeline)
    _validate_callbacks(cfg, monitor_of(cfg)[0])
    _validate_loggers(cfg.logger)
    if not isinstance(cfg.compile, bool) and not OmegaConf.is_dict(cfg.compile):
        raise ConfigError("compile", cfg.compile, "true, false or a dict of torch.compile "
                          "arguments, e.g. {backend: aot_eager}")
    probe = torch.zeros(1, requires_grad=True)  # optimizer and schedule checked on a dummy
    opt = build_optimizer([probe], cfg.optim, cfg.get("clip"))
    build_scheduler(opt, cfg.get("schedule"), total_steps=1000)


def _validate_trainer(t, pipeline) -> None:
    if t.accelerator not in ACCELERATORS:
        raise ConfigError("trainer.accelerator", t.accelerator, "one of " + ", ".join(ACCELERATORS))
    if str(t.precision) not in PRECISIONS:
        raise ConfigError("trainer.precision", t.precision, "one of " + ", ".join(PRECISIONS))
    if t.strategy not in STRATEGIES:
        raise ConfigError("trainer.strategy", t.strategy, "one of " + ", ".join(STRATEGIES))
    if t.devices != "auto":
        _int("trainer.devices", t.devices, 1)
    _int("trainer.num_nodes", t.num_nodes, 1)
    if t.max_epochs != -1:
        _int("trainer.max_epochs", t.max_epochs, 1)
    if t.max_steps != -1:
        _int("trainer.max_steps", t.max_steps, 1)
    _int("trainer.log_every_n_steps", t.log_every_n_steps, 1)
    if t.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError("trainer.accelerator", t.accelerator,
                          "cpu here: no CUDA device is visible (use trainer=cpu)")
    world = (t.devices if isinstance(t.devices, int) else 1) * t.num_nodes
    refusal = getattr(pipeline, "distributed_refusal", None)
    if world > 1 and refusal:
        raise ConfigError("trainer.devices", t.devices, f"1 with num_nodes=1 for this pipeline "
                          f"({refusal})")
    tasks = os.environ.get("SLURM_NTASKS")
    if tasks and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive") \
            and t.devices != "auto" and world != int(tasks):
        raise ConfigError("trainer.devices", t.devices,
                          f"devices x num_nodes = the job's SLURM_NTASKS={tasks} tasks "
                          f"(one process per device under srun; now {t.devices} x "
                          f"{t.num_nodes})")


def monitor_of(cfg) -> tuple[str | None, str]:
    """(metric, mode) the best checkpoint, early stopping and a sweeper's objective follow:
    ``pipeline.monitor`` and ``pipeline.monitor_mode`` from the config, the one place they
    are set; null or absent (rl: no validation metric each epoch) means none."""
    p = cfg.pipeline
    if "monitor" not in p:
        return None, "min"
    metric, mode = p.monitor, p.get("monitor_mode", "min")
    if metric is not None and (not isinstance(metric, str) or not metric):
        raise ConfigError("pipeline.monitor", metric, "null or a logged metric name")
    if mode not in MODES:
        raise ConfigError("pipeline.monitor_mode", mode, "min or max")
    return metric, mode


def _validate_callbacks(cfg, monitor: str | None) -> None:
    stopping = cfg.callbacks.early_stopping
    if stopping.patience is None:
        return
    _int("callbacks.early_stopping.patience", stopping.patience, 1)
    if not monitor:
        raise ConfigError("callbacks.early_stopping.patience", stopping.patience,
                          "null for a pipeline without pipeline.monitor (nothing to watch)")
    if not isinstance(stopping.min_delta, int | float) or stopping.min_delta < 0:
        raise ConfigError("callbacks.early_stopping.min_delta", stopping.min_delta,
                          "a number >= 0")


def _validate_loggers(logger) -> None:
    if logger.tensorboard.enabled:
        from lightning.fabric.loggers.tensorboard import (
            _TENSORBOARD_AVAILABLE,
            _TENSORBOARDX_AVAILABLE,
        )

        if not (_TENSORBOARD_AVAILABLE or _TENSORBOARDX_AVAILABLE):
            raise ConfigError("logger.tensorboard.enabled", True, "false here: tensorboard is "
                              "not installed (pip install 'adamlab[tensorboard]')")
