"""What a run directory holds besides checkpoints and CSV: config.yaml and summary.json."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

from omegaconf import OmegaConf

PACKAGES = ("torch", "lightning", "torch-geometric", "hydra-core", "wandb", "gymnasium", "ase",
            "torchmetrics", "numpy")


def write_config(cfg, run_dir: Path) -> Path:
    path = run_dir / "config.yaml"
    _atomic_write(path, OmegaConf.to_yaml(cfg, resolve=True))
    return path


def write_summary(run_dir: Path, pipeline: str, metrics: dict, wall_time_s: float,
                  extra: dict | None = None) -> Path:
    summary = {"pipeline": pipeline, "metrics": metrics, "wall_time_s": round(wall_time_s, 3),
               "versions": versions(), "git_sha": git_sha(), **(extra or {})}
    path = run_dir / "summary.json"
    _atomic_write(path, json.dumps(summary, indent=2, default=float))
    return path


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


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
