"""The gnn study: end to end on a tiny budget (the protocol, never the verdict), and the
mechanisms of its training loop (pipelines/studies/problems/graphs.py): lazy Adam leaves
the rows a batch does not reach alone, mini-batches reach rows by the 2-hop receptive
field, the per-row effective step is the optimizer's, runs are reproducible."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_studies import check_study_run
from test_studies_domains import TINY_DOMAINS

import optim
from pipelines import study
from pipelines.studies.problems import graphs


@pytest.fixture(autouse=True)
def _quiet(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("ADAMLAB_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_job(**overrides) -> dict:
    job = {"graph": {"kind": "dcsbm", "num_nodes": 200, "exponent": 2.1, "feature_dim": 8},
           "seed": 0, "model": {"hidden": 8, "embedding_dim": 4, "dropout": 0.5},
           "optim": {"name": "adam", "lr": 0.01}, "regime": "full", "steps": 12,
           "eval_every": 3, "batch_size": 8, "record_rows": True}
    return {**job, **overrides}


def test_gnn_study_end_to_end(tmp_path):
    out = tmp_path / "run"
    study.main(["gnn", f"hydra.run.dir={out}", *TINY_DOMAINS["gnn"]])
    figures, results, summary = check_study_run(out)
    assert set(figures) == {"degree_gap.png", "embedding_step_by_degree.png"}
    runs = [r for r in results if r["kind"] == "run"]
    # every (graph, regime, arm) cell ran on every report seed; lazy Adam only mini-batch
    cells = {(r["graph"], r["regime"], r["optimizer"]) for r in runs}
    assert ("powerlaw_2.1", "full", "lazy_adam") not in cells
    assert ("cora", "minibatch", "lazy_adam") in cells
    assert len(runs) == len(cells) * len(summary["seeds"]["report"])
    # each arm was tuned in each cell on its own grid, on the tuning seeds only
    picks = summary["tuning"]["picks"]
    assert {(pk["cell"]["graph"], pk["cell"]["regime"], pk["arm"]) for pk in picks} == cells
    for pk in picks:
        assert pk["tuned"] and pk["chosen"]["lr"] in pk["axes"]["lr"]
        run_lrs = {float(r["lr"]) for r in runs if (r["graph"], r["regime"], r["optimizer"])
                   == (pk["cell"]["graph"], pk["cell"]["regime"], pk["arm"])}
        assert run_lrs == {pk["chosen"]["lr"]}
    tuning = (out / "tuning.csv").read_text().splitlines()
    seed_col = tuning[0].split(",").index("seed")
    assert {int(line.split(",")[seed_col]) for line in tuning[1:]} == set(
        summary["seeds"]["tuning"])
    bins = [r for r in results if r["kind"] == "gradients_by_degree"]
    assert bins and {r["degree_bin"] for r in bins} >= {"[1,2)", "[2,4)"}
    assert {r["optimizer"] for r in results if r["kind"] == "steps_by_degree"} == {
        "adam", "lazy_adam"}  # SGD has no second moment
    info = json.loads((out / "summary.json").read_text())
    assert info["checks"][0]["id"] == "adam_smaller_gap_heavy_tails"


def test_each_seed_draws_its_own_graph_and_cora_is_one():
    a = graphs.graph({"kind": "dcsbm", "num_nodes": 100, "feature_dim": 4}, 0)
    b = graphs.graph({"kind": "dcsbm", "num_nodes": 100, "feature_dim": 4}, 10000)
    assert not torch.equal(a.edge_index[:, :50], b.edge_index[:, :50])
    assert graphs.graph({"kind": "dcsbm", "num_nodes": 100, "feature_dim": 4}, 0) is a


def test_receptive_rows_by_hand():
    # path 0-1-2-3-4 and an isolated node 5
    src = torch.tensor([0, 1, 1, 2, 2, 3, 3, 4])
    dst = torch.tensor([1, 0, 2, 1, 3, 2, 4, 3])
    reached = graphs.receptive_rows((src, dst), torch.tensor([0]), 6, 2)
    assert reached.tolist() == [True, True, True, False, False, False]
    reached = graphs.receptive_rows((src, dst), torch.tensor([5, 4]), 6, 1)
    assert reached.tolist() == [False, False, False, True, True, True]


def test_lazy_adam_leaves_unreached_rows_alone(monkeypatch):
    """With mini-batches, sparse_adam moves only the rows within 2 hops of a batch; dense
    Adam keeps moving every row it has moments for (its momentum), so the two differ."""
    seen = {}
    real = graphs._optimizers

    def spy(spec, lazy, model):
        seen[lazy] = (model, real(spec, lazy, model))
        return seen[lazy][1]

    monkeypatch.setattr(graphs, "_optimizers", spy)
    sparse_graph = {"kind": "dcsbm", "num_nodes": 200, "exponent": 100.0, "avg_degree": 2.0,
                    "feature_dim": 8}
    job = tiny_job(graph=sparse_graph, regime="minibatch", batch_size=2, steps=4, eval_every=4,
                   model={"hidden": 8, "embedding_dim": 4, "dropout": 0.0})
    lazy = graphs.fit({**job, "optim": {"name": "adam", "lr": 0.01,
                                        "embedding_optimizer": "lazy"}})
    dense = graphs.fit(job)
    model, opts = seen[True]
    table = model.embedding.weight.detach()
    counts = lazy["_rows"]["counts"]
    assert (counts == 0).any() and (counts > 0).any()
    # the embedding starts at zero: rows never reached never moved, the others did
    assert torch.all(table[torch.from_numpy(counts == 0)] == 0)
    moved = table[torch.from_numpy(counts > 0)].abs().sum(1) > 0
    assert moved.float().mean() > 0.8  # a reached row may still get a zero gradient (ReLU)
    assert isinstance(opts[1], optim.ChainOptimizer) and len(opts) == 2
    assert not lazy["_rows"]["moved"][counts == 0].any()
    dense_table = seen[False][0].embedding.weight.detach()
    assert not torch.equal(dense_table, table)
    assert dense["best_step"] > 0 and lazy["best_step"] > 0


def test_row_steps_are_the_optimizers_effective_step():
    table = torch.nn.Parameter(torch.zeros(5, 3))
    opt = optim.create("adam", [table], lr=0.01)
    for k in range(3):
        table.grad = torch.randn(5, 3, generator=torch.Generator().manual_seed(k))
        opt.step()
    steps, moved = graphs.row_steps([opt], table)
    assert np.allclose(steps, optim.effective_step(opt, table).mean(1).numpy(), rtol=1e-6)
    assert moved.all()
    sgd = optim.create("sgd", [table], lr=0.1, momentum=0.9)
    table.grad = torch.ones(5, 3)
    sgd.step()
    assert graphs.row_steps([sgd], table) is None


def test_same_seed_same_run_and_minibatch_differs_from_full():
    a, b = graphs.fit(tiny_job()), graphs.fit(tiny_job())
    assert {k: v for k, v in a.items() if k != "_rows"} == {
        k: v for k, v in b.items() if k != "_rows"}
    mini = graphs.fit(tiny_job(regime="minibatch"))
    assert mini["_rows"]["fraction_steps"].mean() < a["_rows"]["fraction_steps"].mean()
    for key in graphs.REPORT_KEYS:
        assert key in a
