"""`adamlab eval` on a GNN run: the run's own metrics back exactly, other graphs, bad input."""

import json
import subprocess

import pytest
from runs import ADAMLAB, config, env, overrides

from pipelines import evaluate
from pipelines.harness.errors import ConfigError
from pipelines.train import run


@pytest.fixture(scope="module")
def gnn_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("gnn")
    # dropout and the embedding: eval must use eval mode and the best epoch's weights
    run(config(*overrides("gnn", run_dir), "model.embedding=concat", "trainer.max_epochs=15"),
        run_dir)
    return run_dir


def test_eval_reproduces_the_summary_exactly(gnn_run):
    summary = json.loads((gnn_run / "summary.json").read_text())["metrics"]
    result = evaluate.evaluate(str(gnn_run), [])
    got = result["metrics"]
    for key in ("val_acc", "test_acc", "best_epoch", "test_acc_by_degree",
                "test_degree_fairness", "test_loss_variance_across_degree_groups"):
        assert got[key] == summary[key], key
    assert json.loads((gnn_run / "eval.json").read_text())["metrics"]["test_acc"] == \
        summary["test_acc"]
    assert (gnn_run / "eval" / "accuracy_by_degree.png").stat().st_size > 1000


def test_eval_last_weights_and_another_graph(gnn_run):
    last = evaluate.evaluate(str(gnn_run), ["weights=last"])["metrics"]
    assert 0 <= last["test_acc"] <= 1 and "best_epoch" not in last
    # the same sizes, another draw of the DC-SBM (features and classes fit; the embedding
    # table is per node, so the node count must stay)
    other = evaluate.evaluate(str(gnn_run), ["data.seed=7"])
    assert other["data"]["seed"] == 7
    assert other["metrics"]["test_acc_by_degree"] != \
        json.loads((gnn_run / "summary.json").read_text())["metrics"]["test_acc_by_degree"]


@pytest.mark.parametrize("option, key", [("weights=first", "weights"), ("episodes=3", "episodes"),
                                         ("data.nonsense=1", "data"),
                                         ("data.feature_dim=5", "data")])
def test_eval_bad_options_name_the_key(gnn_run, option, key):
    with pytest.raises(ConfigError) as error:
        evaluate.evaluate(str(gnn_run), [option])
    assert str(error.value).startswith(key)


def test_adamlab_eval_command(gnn_run):
    done = subprocess.run([ADAMLAB, "eval", str(gnn_run)], env=env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["metrics"]["test_acc"] == \
        json.loads((gnn_run / "summary.json").read_text())["metrics"]["test_acc"]
    assert "test_acc" in done.stderr and "fraction" in done.stderr  # the table
    bad = subprocess.run([ADAMLAB, "eval", str(gnn_run), "weights=first"], env=env(),
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "weights" in bad.stderr and "Traceback" not in bad.stderr
