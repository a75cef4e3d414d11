"""The W&B side of a study: one run per study invocation in the group ``study-<name>``.

Offline unless WANDB_MODE says otherwise; ``disabled`` skips it. W&B is a mirror of the
run directory, never a requirement: any failure warns and the study's files stand.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from omegaconf import OmegaConf


def log_study(cfg, run_dir: Path, rows: list[dict], figures: list[Path], summary: dict) -> None:
    mode = os.environ.get("WANDB_MODE", cfg.wandb.mode)
    if mode == "disabled":
        return
    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        import wandb

        run = wandb.init(mode=mode, dir=str(run_dir), project=cfg.wandb.project,
                         group=f"study-{cfg.study.name}", job_type=cfg.size,
                         name=f"{cfg.study.name}-{cfg.size}-{run_dir.name}",
                         config=OmegaConf.to_container(cfg, resolve=True))
        columns = list(dict.fromkeys(k for row in rows for k in row if not k.startswith("_")))
        table = wandb.Table(columns=columns,
                            data=[[_plain(row.get(c)) for c in columns] for row in rows])
        run.log({"results": table, **{p.stem: wandb.Image(str(p)) for p in figures}})
        run.summary.update(summary)
        run.finish()
    except Exception as error:  # noqa: BLE001 - W&B must never stop a study
        warnings.warn(f"W&B logging failed ({error!r}); the study's files are complete",
                      stacklevel=2)


def _plain(value):
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
