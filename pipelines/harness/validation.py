"""Checks of the shared config keys, run before any data is built."""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import ConfigError
from .optimizers import build_optimizer, build_scheduler

ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
PRECISIONS = ("32-true", "32", "64-true", "64", "bf16-mixed", "16-mixed", "bf16-true")


def _int(key: str, value, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(key, value, f"an integer >= {low}")


def validate_common(cfg) -> None:
    _int("seed", cfg.seed, 0)
    _int("telemetry_every", cfg.telemetry_every, 0)
    _int("checkpoint_every", cfg.checkpoint_every, 1)
    if cfg.ema_decay is not None and not (isinstance(cfg.ema_decay, float)
                                          and 0 < cfg.ema_decay < 1):
        raise ConfigError("ema_decay", cfg.ema_decay, "null or a number in (0, 1)")
    t = cfg.trainer
    if t.accelerator not in ACCELERATORS:
        raise ConfigError("trainer.accelerator", t.accelerator, "one of " + ", ".join(ACCELERATORS))
    if str(t.precision) not in PRECISIONS:
        raise ConfigError("trainer.precision", t.precision, "one of " + ", ".join(PRECISIONS))
    if t.devices != "auto":
        _int("trainer.devices", t.devices, 1)
    _int("trainer.num_nodes", t.num_nodes, 1)
    if t.max_epochs != -1:
        _int("trainer.max_epochs", t.max_epochs, 1)
    if t.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError("trainer.accelerator", t.accelerator,
                          "cpu here: no CUDA device is visible (use trainer=cpu)")
    probe = torch.zeros(1, requires_grad=True)  # optimizer and schedule checked on a dummy
    opt = build_optimizer([probe], cfg.optim, cfg.get("clip"))
    build_scheduler(opt, cfg.get("schedule"), total_steps=1000)
    if cfg.resume is not None:
        resume_checkpoint(cfg.resume)


def resume_checkpoint(resume) -> str:
    """``resume=`` may name a checkpoint or a run directory (its ``checkpoints/last.ckpt``)."""
    path = Path(str(resume))
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise ConfigError("resume", str(resume),
                          "a .ckpt file or a run directory holding checkpoints/last.ckpt")
    return str(path)
