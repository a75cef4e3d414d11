"""What a run directory holds besides checkpoints and CSV (config.yaml, summary.json), and
the check that it can be created at all."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from .files import atomic_write

_CLAIMED: dict[str, str] = {}

PACKAGES = ("torch", "lightning", "torch-geometric", "hydra-core", "wandb", "gymnasium", "ase",
            "torchmetrics", "numpy")


def write_config(cfg, run_dir: Path) -> Path:
    return atomic_write(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))


def write_summary(run_dir: Path, pipeline: str, metrics: dict, wall_time_s: float,
                  extra: dict | None = None, status: str = "ok", error: str | None = None
                  ) -> Path:
    """summary.json: always valid JSON (NaN and inf become null), ``status`` "ok" or
    "failed" (with the ``error``)."""
    summary = {"pipeline": pipeline, "status": status, "error": error, "metrics": metrics,
               "wall_time_s": round(wall_time_s, 3), "versions": versions(),
               "git_sha": git_sha(), **(extra or {})}
    text = json.dumps(json_safe(summary), indent=2, allow_nan=False)
    return atomic_write(run_dir / "summary.json", text)


def json_safe(value):
    """Plain JSON values: tensors and numpy scalars as numbers, non-finite numbers as null."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, int):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if hasattr(value, "dtype") and "int" in str(value.dtype):
        return int(value)
    return number if math.isfinite(number) else None


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class RunDirCheck(Callback):
    """Refuses a run dir (or sweep dir) that cannot be created, before Hydra tries to and
    fails with a traceback: ``hydra.run.dir`` / ``ADAMLAB_RUNS`` under a regular file, say."""

    def on_run_start(self, config, **kwargs) -> None:
        _check_creatable("hydra.run.dir", config.hydra.run.dir)

    def on_multirun_start(self, config, **kwargs) -> None:
        _check_creatable("hydra.sweep.dir", config.hydra.sweep.dir)


def _check_creatable(key: str, target: str) -> None:
    path = Path(target).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        what = "is not a directory" if not existing.is_dir() else "is not writable"
        print(f"adamlab: error: {key}={target!r} is invalid: {existing} {what}; expected a "
              "directory this user can create and write (set hydra.run.dir or ADAMLAB_RUNS)",
              file=sys.stderr, flush=True)
        raise SystemExit(2)


def register_resolvers() -> None:
    """``${adamlab_unique:PATH}``: the default run dir (configs/train.yaml)."""
    OmegaConf.register_new_resolver("adamlab_unique", unique_dir, replace=True, use_cache=True)


def unique_dir(path: str) -> str:
    """``path``, or ``path_1``, ``path_2``, ... : the first this process could create. Two
    runs started in the same second (the default run dir is a timestamp) get two run dirs;
    the same process asking again gets the same answer. A path that cannot be created is
    returned as it is, for RunDirCheck to report."""
    if path in _CLAIMED:
        return _CLAIMED[path]
    claimed, n = path, 0
    while True:
        try:
            Path(claimed).mkdir(parents=True)
            break
        except FileExistsError:
            n += 1
            claimed = f"{path}_{n}"
        except OSError:
            claimed = path
            break
    _CLAIMED[path] = claimed
    return claimed
