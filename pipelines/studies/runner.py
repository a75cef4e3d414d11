"""Run one study from its config and write what every study writes.

The run directory gets config.yaml, results.csv (every seed), summary.csv (mean, std and
95% CI per table cell), report.md, the png figures, summary.json and an offline W&B run.
"""

from __future__ import annotations

import importlib
import logging
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipelines.harness.errors import ConfigError
from pipelines.harness.run_dir import write_config, write_summary

from . import STUDIES
from .report import render, summary_rows, verdict, write_csv
from .tracking import log_study

SIZES = ("quick", "full")
log = logging.getLogger(__name__)


def study_params(study: DictConfig, size: str) -> DictConfig:
    """The study's top-level keys merged with its ``quick`` or ``full`` block. The two
    hold disjoint keys, so an override has one place to go."""
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
    if not isinstance(params.get("seeds"), int) or params.seeds < 1:
        raise ConfigError(f"study.{size}.seeds", params.get("seeds"), "an integer >= 1")
    return params


def run(cfg: DictConfig, run_dir: Path, overrides: list[str] = ()) -> dict:
    """Validate, run the study, write the run directory; returns summary.json's content."""
    name = cfg.study.name
    if name not in STUDIES:
        raise ConfigError("study", name, "one of " + ", ".join(STUDIES))
    params = study_params(cfg.study, cfg.size)
    module = importlib.import_module(f"pipelines.studies.{name}")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(cfg, run_dir)
    started = time.perf_counter()
    outcome = module.run(params, run_dir)
    write_csv(run_dir / "results.csv", outcome.rows)
    write_csv(run_dir / "summary.csv", summary_rows(outcome.tables))
    shown = [o for o in overrides if not o.startswith("study=")]
    command = " ".join(["adamlab study", name, *shown])
    report = render(name, module.CLAIM, outcome, OmegaConf.to_yaml(params), command)
    (run_dir / "report.md").write_text(report)
    label, reason = verdict(outcome.checks)
    checks = [{"claim": c.claim, "outcome": c.outcome, "evidence": c.evidence}
              for c in outcome.checks]
    wall = time.perf_counter() - started
    write_summary(run_dir, "study", {"checks_held": sum(c.outcome is True for c in outcome.checks),
                                     "checks": len(checks)}, wall,
                  {"study": name, "size": cfg.size, "verdict": label, "reason": reason,
                   "checks": checks, "figures": [p.name for p in outcome.figures]})
    log_study(cfg, run_dir, outcome.rows, outcome.figures,
              {"verdict": label, "reason": reason, "wall_time_s": wall})
    log.info("study %s (%s): %s in %.1f s; report: %s", name, cfg.size, label, wall,
             run_dir / "report.md")
    return {"study": name, "verdict": label, "reason": reason, "wall_time_s": wall}
