"""The domain studies (rl, mlip) end to end through `adamlab study` on a tiny budget: every
cell a real `adamlab train` run, the report's numbers are the CSV's, the figures are PNGs."""

from __future__ import annotations

import json

import pytest
import torch
from test_studies import check_study_run

from pipelines import study
from pipelines.studies import STUDIES, mlip

TINY_DOMAINS = {
    "rl": ["study.quick.seeds={report: 2, tuning: 0}", "study.quick.total_timesteps=2000",
           "study.quick.eval_episodes=2", "study.quick.algorithms_used=[reinforce_baseline,ppo]",
           "~study.arms.rmsprop"],
    "mlip": ["study.quick.seeds={report: 1, tuning: 0}", "study.quick.n_configs=40",
             "study.quick.epochs=2",
             "study.quick.handlings_used=[none,grad_clip,filter]",
             "study.quick.model=['model.hidden=8','model.num_interactions=1',"
             "'model.num_rbf=8','+data.size=[1,1,1]','+data.snapshots_per_run=5']"],
    "gnn": ["study.quick.seeds={report: 2, tuning: 1}", "study.quick.num_nodes=200",
            "study.quick.steps=6", "study.quick.minibatch_steps=8",
            "study.regimes.full.eval_every=2", "study.workers=1",
            "study.quick.graphs_used=[powerlaw_2.1,near_regular,cora]",
            "~study.quick.grid.adam_lr", "+study.quick.grid.adam_lr=[0.01]",
            "~study.quick.grid.sgd_lr", "+study.quick.grid.sgd_lr=[0.1]",
            "study.model.hidden=8", "study.model.embedding_dim=4"],
}


@pytest.fixture(autouse=True)
def _quiet(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("ADAMLAB_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_domain_studies_are_registered():
    assert {"rl", "mlip"} <= set(STUDIES)


@pytest.mark.parametrize("name", ["rl", "mlip"])
def test_domain_study_end_to_end(name, tmp_path):
    out = tmp_path / "run"
    study.main([name, f"hydra.run.dir={out}", *TINY_DOMAINS[name]])
    figures, results, _ = check_study_run(out)
    assert len(figures) == 2
    # every cell is a real training run with its own run directory and summary
    runs = sorted((out / "runs").iterdir())
    assert len(runs) == len(results)
    for run in runs:
        assert json.loads((run / "summary.json").read_text())["pipeline"] == name


def test_spikes_count_jumps_over_the_running_minimum():
    assert mlip.spikes([10.0, 5.0, 14.0, 16.0, 4.0, float("nan")], 3.0) == 2
    assert mlip.spikes([3.0, 2.0, 1.0], 3.0) == 0


def test_epoch_losses_group_steps_by_epoch():
    rows = [{"epoch": "0", "train_loss": "4"}, {"epoch": "0", "train_loss": "2"},
            {"epoch": "0", "train_loss": ""}, {"epoch": "1", "train_loss": "1"}]
    assert mlip.epoch_losses(rows) == ([4.0, 2.0, 1.0], [3.0, 1.0])


def test_cells_in_worker_processes_equal_cells_in_turn(tmp_path):
    """study.workers > 1: the same runs, in the same order, with the same results."""
    from pipelines.studies.problems.training import train_all

    cells = [(["pipeline=rl", "algo=ppo", f"seed={s}", "logger=csv",
               "pipeline.total_timesteps=1024", "trainer.enable_progress_bar=false"],
              tmp_path / f"{mode}-{s}") for mode in ("turn", "pool") for s in (0, 1)]
    in_turn = train_all(cells[:2], workers=1)
    in_pool = train_all(cells[2:], workers=2)
    assert [m for m, _ in in_pool] == [m for m, _ in in_turn]
    assert in_turn[0][0] != in_turn[1][0]  # two seeds, two results: the order is checked
    assert [len(rows) for _, rows in in_pool] == [len(rows) for _, rows in in_turn]
