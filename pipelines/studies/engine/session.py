"""What a study's ``run`` works with: its parameters, its two seed sets, its arms, fair
tuning (recorded for the report) and a pool of worker processes for independent cells."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from omegaconf import DictConfig

from pipelines.harness.errors import ConfigError

from .protocol import Protocol, plain
from .tuning import Pick, aggregate, axis, tune

# evaluate(settings, seeds) -> for each setting, its rows (one per seed at least), each
# holding the tuning metric
Evaluate = Callable[[list[dict], list[int]], list[list[dict]]]


class Session:
    def __init__(self, p: DictConfig, protocol: Protocol, out_dir: Path, workers: int = 1):
        self.p, self.protocol, self.out_dir = p, protocol, Path(out_dir)
        self.workers = workers
        self.report_seeds: list[int] = protocol.seeds["report"]
        self.tuning_seeds: list[int] = protocol.seeds["tuning"]
        self.picks: list[Pick] = []
        self._pool: ProcessPoolExecutor | None = None
        self.tuning_rows: list[dict] = []
        self.arms = {name: self._arm(name, spec) for name, spec in (p.get("arms") or {}).items()}

    def _arm(self, name: str, spec) -> dict:
        spec = plain(spec)
        if not isinstance(spec, dict):
            raise ConfigError(f"study.arms.{name}", spec, "a mapping {optim: {...}, tune: {...}}")
        fixed = spec.get("optim", {})
        axes = [axis(k, v, f"study.arms.{name}.tune.{k}")
                for k, v in (spec.get("tune") or {}).items()]
        if axes and not self.tuning_seeds:
            raise ConfigError("study.seeds.tuning", 0, f">= 1: arm {name} is tuned")
        return {"fixed": fixed, "axes": axes}

    def fix(self, arm: str, **values) -> None:
        """Fix values an earlier step of the protocol chose (e.g. the bounds an LR range test
        gives on the tuning seeds) before ``arm`` is tuned; they are reported with it."""
        self.arms[arm]["fixed"] = {**self.arms[arm]["fixed"], **values}

    def settings(self, arm: str, chosen: dict) -> dict:
        """An arm's full hyperparameters: its fixed ``optim`` values and the tuned ones."""
        return {**self.arms[arm]["fixed"], **chosen}

    def tune(self, arm: str, evaluate: Evaluate, cell: dict | None = None) -> dict:
        """Tune ``arm`` on the tuning seeds by the protocol's metric; returns its full
        hyperparameters. An arm without a ``tune`` block is returned as fixed."""
        if arm not in self.arms:
            raise ConfigError("study.arms", arm, "an arm declared in the study's config")
        spec = self.arms[arm]
        cell = dict(cell or {})
        if not spec["axes"]:
            self.picks.append(Pick(arm, cell, {}, None, fixed=dict(spec["fixed"])))
            return self.settings(arm, {})
        t = self.protocol.tuning
        metric, goal = t["metric"], t["goal"]

        def score(settings):
            full = [self.settings(arm, s) for s in settings]
            results = evaluate(full, self.tuning_seeds)
            out = []
            for s, rows in zip(settings, results):
                if not rows or any(metric not in r for r in rows):
                    raise ValueError(f"arm {arm}: tuning rows lack the metric {metric!r}")
                self.tuning_rows += [{**cell, "arm": arm, **_tagged(s), **_scalars(r)}
                                     for r in rows]
                out.append(aggregate([r[metric] for r in rows], goal))
            return out

        axes = [type(a)(a.name, list(a.values), a.scale) for a in spec["axes"]]
        pick = tune(arm, axes, score, goal, int(t.get("extend", 0)), cell)
        pick.fixed = dict(spec["fixed"])
        self.picks.append(pick)
        return self.settings(arm, pick.chosen)

    def map(self, fn: Callable, jobs: Sequence[tuple]) -> list:
        """``fn(*job)`` for every job, in order; with ``workers > 1`` in spawned processes
        of one torch thread each (``fn`` must be importable), the same results either way.
        The processes live until ``close``: a study that maps many small grids pays for
        starting them (importing torch) once."""
        if self.workers <= 1 or len(jobs) <= 1:
            return [fn(*job) for job in jobs]
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers,
                                             mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_one_thread)
        return list(self._pool.map(fn, *zip(*jobs)))

    def close(self) -> None:
        """Stop the worker processes (the runner calls it when the study returns)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _tagged(setting: dict) -> dict:
    return {f"tune_{k}": v for k, v in setting.items()}


def _scalars(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("_")}
