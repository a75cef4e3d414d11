"""Run one study from its config and write what every study writes.

The run directory gets config.yaml, results.csv (every reported run), tuning.csv (every
setting tried on the tuning seeds), summary.csv (mean, std, 95% CI per table cell),
report.md, the png figures, summary.json (everything `adamlab report` shows) and an offline
W&B run.
"""

from __future__ import annotations

import importlib
import logging
import os
import resource
import subprocess
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipelines.harness.errors import ConfigError
from pipelines.harness.run_dir import write_config, write_summary

from .. import STUDIES
from . import checks, protocol
from .report import render, summary_rows, write_csv
from .session import Session
from .tracking import log_study
from .verdict import verdict

SIZES = ("quick", "full")
CODE_PATHS = ("optim", "pipelines", "data", "configs")
log = logging.getLogger(__name__)


def study_params(study: DictConfig, size: str) -> DictConfig:
    """The study's top-level keys merged with its ``quick`` or ``full`` block. The two
    hold disjoint keys, so an override has one place to go (a shared key that depends on
    the size interpolates it: ``${study.${size}.grid.lr}``)."""
    if size not in SIZES:
        raise ConfigError("size", size, " or ".join(SIZES))
    plain = OmegaConf.to_container(study, resolve=True)
    block = plain.get(size)
    if not isinstance(block, dict):
        raise ConfigError(f"study.{size}", block, "a mapping of the size-dependent settings")
    common = {k: v for k, v in plain.items() if k not in ("name", *SIZES)}
    clash = sorted(set(common) & set(block))
    if clash:
        raise ConfigError(f"study.{clash[0]}", common[clash[0]],
                          f"no top-level value: study.{size}.{clash[0]} sets it for this size")
    params = OmegaConf.create({**common, **block})
    workers = params.get("workers", 1)
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError("study.workers", workers, "an integer >= 1")
    return params


def git_state() -> tuple[str | None, list[str]]:
    """HEAD and the code paths with uncommitted changes (what the commit does not hold)."""
    repo = Path(__file__).resolve().parents[3]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=repo, timeout=10).stdout.strip() or None
        status = subprocess.run(["git", "status", "--porcelain", "--", *CODE_PATHS],
                                capture_output=True, text=True, cwd=repo, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None, []
    return sha, sorted({line[3:].strip() for line in status.splitlines() if line.strip()})


def cpu_seconds() -> float:
    """CPU time of this process and of its finished worker processes."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run(cfg: DictConfig, run_dir: Path, overrides: list[str] = ()) -> dict:
    """Validate, run the study, write the run directory; returns summary.json's content."""
    name = cfg.study.name
    if name not in STUDIES:
        raise ConfigError("study", name, "one of " + ", ".join(STUDIES))
    module = importlib.import_module(f"pipelines.studies.{name}")
    params = study_params(cfg.study, cfg.size)
    proto = protocol.load(params, cfg.protocol)
    session = Session(params, proto, run_dir, params.get("workers", 1))
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(cfg, run_dir)
    commit, dirty = git_state()
    load_start = os.getloadavg()[0]
    started, cpu_start = time.perf_counter(), cpu_seconds()
    try:
        result = module.run(session)
    finally:
        session.close()
    results = checks.evaluate(proto, result.rows)
    label, reason = verdict(results)
    wall = time.perf_counter() - started
    shown = [o for o in overrides if not o.startswith("study=")]
    info = {"study": name, "about": STUDIES[name], "size": cfg.size, "claim": proto.claim,
            "verdict": label, "reason": reason,
            "command": " ".join(["adamlab study", name, *shown]),
            "commit": commit, "dirty": dirty, "workers": session.workers,
            "cpu_time_s": cpu_seconds() - cpu_start,
            "cores": os.cpu_count(), "load_avg": [load_start, os.getloadavg()[0]],
            "wall_time_s": wall, "seeds": proto.seeds,
            "statistics": {"alpha": proto.alpha, "level": proto.level,
                           "resamples": proto.resamples},
            "tuning": {**proto.tuning, "picks": [pk.as_dict() for pk in session.picks]},
            "checks": [r.as_dict() for r in results],
            "figures": [p.name for p in result.figures],
            "tables": [{"title": t.title, "keys": t.keys, "metrics": t.metrics}
                       for t in result.tables],
            "setup": result.setup, "notes": result.notes}
    write_csv(run_dir / "results.csv", result.rows)
    if session.tuning_rows:
        write_csv(run_dir / "tuning.csv", session.tuning_rows)
    write_csv(run_dir / "summary.csv", summary_rows(result.tables))
    (run_dir / "report.md").write_text(render(info, result, results, OmegaConf.to_yaml(params)))
    held = sum(r.outcome == checks.SUPPORTED for r in results)
    write_summary(run_dir, "study", {"checks_supported": held, "checks": len(results)}, wall,
                  {k: v for k, v in info.items() if k != "wall_time_s"})
    log_study(cfg, run_dir, result.rows, result.figures,
              {"verdict": label, "reason": reason, "wall_time_s": wall})
    log.info("study %s (%s): %s in %.1f s; report: %s", name, cfg.size, label, wall,
             run_dir / "report.md")
    return {"study": name, "verdict": label, "reason": reason, "wall_time_s": wall}
