"""Study cells that are real `adamlab train` runs, one after another or in worker processes.

A cell is (overrides, run dir). ``workers > 1`` runs cells in that many spawned processes,
each with one torch thread: on a many-core machine a grid of small runs goes ``workers``
times faster, and every run is the same function of its config as when run alone.
"""

from __future__ import annotations

import csv
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra


def compose_train(overrides: list[str]):
    """The `adamlab train` config for ``overrides``; a running Hydra app (the study) keeps
    its global state."""
    from pipelines.train import CONFIGS

    gh = GlobalHydra.instance()
    saved = gh.hydra if gh.is_initialized() else None
    gh.clear()
    try:
        with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
            return compose(config_name="train", overrides=list(overrides))
    finally:
        gh.clear()
        if saved is not None:
            gh.initialize(saved)


def train(overrides: list[str], run_dir: Path) -> tuple[dict, list[dict]]:
    """One training run: its summary metrics and the rows of its csv/metrics.csv."""
    from pipelines.train import run

    metrics = run(compose_train(overrides), run_dir)
    path = next(iter(sorted(run_dir.rglob("metrics.csv"))), None)
    if path is None:
        return metrics, []
    with open(path, newline="") as f:
        return metrics, list(csv.DictReader(f))


def train_all(cells: list[tuple[list[str], Path]], workers: int = 1):
    """``train`` for every cell, results in the order of ``cells``."""
    if workers <= 1 or len(cells) <= 1:
        return [train(overrides, run_dir) for overrides, run_dir in cells]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread) as pool:
        return list(pool.map(train, *zip(*cells)))


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)
