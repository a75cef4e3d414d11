"""The harness through its real entry points, on the GNN pipeline."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from pipelines.harness.errors import ConfigError
from pipelines.train import CONFIGS, run

SMALL_GRAPH = ["data.num_nodes=600", "data.feature_dim=16", "telemetry_every=1",
               "trainer.enable_progress_bar=false"]


def config(*overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def test_adamlab_train_end_to_end(tmp_path):
    """`adamlab train pipeline=gnn ...` in a subprocess: summary, CSV, figures, W&B."""
    env = {**os.environ, "WANDB_MODE": "offline"}
    cmd = [str(Path(sys.executable).parent / "adamlab"), "train", "pipeline=gnn",
           "model.embedding=concat", "trainer.max_epochs=3", *SMALL_GRAPH,
           f"hydra.run.dir={tmp_path}"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["pipeline"] == "gnn"
    m = summary["metrics"]
    assert 0 <= m["test_acc"] <= 1 and 0 <= m["val_acc"] <= 1
    assert {b["bucket"] for b in m["test_acc_by_degree"]["le5_gt5"]} == {"deg<=5", "deg>5"}
    assert sum(b["n"] for b in m["test_acc_by_degree"]["le5_gt5"]) == 120  # 20 % of 600
    assert summary["versions"]["torch"] and summary["wall_time_s"] > 0
    assert (tmp_path / "config.yaml").is_file()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    csv = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    header = csv[0].split(",")
    assert {"train_loss", "val_acc", "optim/g0/effective_step_p50"} <= set(header)
    assert len([line for line in csv[1:] if line.split(",")[header.index("val_acc")]]) == 3
    for name in ("accuracy_by_degree.png", "embedding_step_vs_degree.png"):
        assert (tmp_path / name).stat().st_size > 1000
    # the offline W&B run (one, in the run dir) holds the same metric keys as the CSV
    runs = list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    records = runs[0].read_bytes()  # protobuf records: metric keys are stored as strings
    for key in ("train_loss", "val_acc", "test_acc", "optim/g0/grad_norm"):
        assert key.encode() in records, key
    assert "run dir:" in done.stdout


def test_same_seed_same_metrics(tmp_path):
    a = run(config("trainer.max_epochs=4", *SMALL_GRAPH, "logger=csv"), tmp_path / "a")
    b = run(config("trainer.max_epochs=4", *SMALL_GRAPH, "logger=csv"), tmp_path / "b")
    c = run(config("trainer.max_epochs=4", *SMALL_GRAPH, "logger=csv", "seed=1"), tmp_path / "c")
    assert a == b
    assert a != c


def test_resume_continues_exactly(tmp_path):
    """10 epochs straight equal 5 epochs + resume for 5 more (dropout RNG included)."""
    common = ("logger=csv", *SMALL_GRAPH, "model.dropout=0.5")
    straight = run(config("trainer.max_epochs=10", *common), tmp_path / "straight")
    run(config("trainer.max_epochs=5", *common), tmp_path / "first")
    resumed = run(config("trainer.max_epochs=10", f"resume={tmp_path / 'first'}", *common),
                  tmp_path / "resumed")
    assert resumed == straight


def test_wandb_init_failure_does_not_stop_training(tmp_path, monkeypatch):
    import wandb

    def refuse(*args, **kwargs):
        raise RuntimeError("no network")

    monkeypatch.setattr(wandb, "init", refuse)
    with pytest.warns(UserWarning, match="W&B could not start"):
        metrics = run(config("trainer.max_epochs=2", *SMALL_GRAPH), tmp_path)
    assert "test_acc" in metrics and (tmp_path / "csv" / "metrics.csv").is_file()


def test_wandb_logging_failure_does_not_stop_training(tmp_path, monkeypatch):
    from wandb.sdk.wandb_run import Run

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Run, "log", broken)
    with pytest.warns(UserWarning, match="W&B log_metrics failed"):
        metrics = run(config("trainer.max_epochs=2", *SMALL_GRAPH), tmp_path)
    csv = (tmp_path / "csv" / "metrics.csv").read_text()
    assert "test_acc" in metrics and "val_acc" in csv


def test_ddp_is_refused_for_full_batch_training(tmp_path):
    """Full-batch GNN training under DDP would give every rank the whole graph: N devices
    doing the work of one. The real command refuses before any work (DDP that shards real
    work: tests/test_ddp.py, MLIP)."""
    cmd = [str(Path(sys.executable).parent / "adamlab"), "train", "trainer=ddp",
           "trainer.devices=2", "trainer.accelerator=cpu", "trainer.max_epochs=2", *SMALL_GRAPH,
           "logger=csv", f"hydra.run.dir={tmp_path / 'ddp'}"]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "trainer.devices=2 is invalid" in done.stderr and "full-batch" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "ddp" / "config.yaml").exists()


BAD = [
    (["optim.name=adamm"], "optim.name='adamm'"),
    (["optim.lr=-0.1"], "optim.lr=-0.1"),
    (["model.name=transformer"], "model.name='transformer'"),
    (["data=cora", "data.raw_dir=/nonexistent", "data.download=false",
      "data.root=/tmp/adamlab-missing-planetoid"], "data.*Cora"),
    (["seed=abc"], "seed='abc'"),
    (["seed=1.5"], "seed=1.5"),
    (["clip=grad_norm", "clip.kind=median"], "clip_kind='median'"),
    (["clip=grad_norm", "clip.at=moments"], "clip_at='moments'"),
    (["trainer.devices=0"], "trainer.devices=0"),
    (["trainer.accelerator=tpu"], "trainer.accelerator='tpu'"),
    (["schedule=cyclical", "schedule.mode=sawtooth"], "mode='sawtooth'"),
    (["data.exponent=1.5"], "exponent"),
    (["model.dropout=1.5"], "model.dropout=1.5"),
    (["resume=/nonexistent/run"], "resume='/nonexistent/run'"),
]


@pytest.mark.parametrize("overrides,match", BAD, ids=[b[1] for b in BAD])
def test_bad_config_fails_before_any_work(overrides, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        run(config(*overrides), tmp_path)
    assert not (tmp_path / "config.yaml").exists()  # nothing was built or written


def test_unknown_key_is_rejected_by_hydra():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="lrr"):
        config("optim.lrr=0.1")


def test_help_lists_groups_and_choices():
    done = subprocess.run([str(Path(sys.executable).parent / "adamlab"), "train", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    for group in ("optim: ", "clip: ", "trainer: ", "pipeline: ", "model: "):
        assert group in done.stdout
    assert "adamw" in done.stdout and "ddp" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("experiment,floor", [("gcn_cora", 0.810), ("gat_cora", 0.820)])
def test_cora_accuracy_over_ten_seeds(experiment, floor, tmp_path):
    accs = [run(config(f"experiment={experiment}", f"seed={s}", "logger=csv",
                       "telemetry_every=0", "trainer.enable_progress_bar=false"),
                tmp_path / str(s))["test_acc"] for s in range(10)]
    assert sum(accs) / len(accs) >= floor, accs


def test_resumed_run_keeps_one_offline_wandb_run(tmp_path, monkeypatch):
    """Offline W&B cannot resume a run, so each attempt would leave its own directory: the
    resumed attempt replays the earlier rows and keeps one run, equal to an uninterrupted
    one, with continuous steps."""
    from wandb_records import history

    monkeypatch.setenv("WANDB_MODE", "offline")
    common = (*SMALL_GRAPH, "model.dropout=0.5")
    run(config("trainer.max_epochs=6", *common), tmp_path / "straight")
    first = config("trainer.max_epochs=3", "logger.wandb.id=resumed-run", *common)
    run(first, tmp_path / "resumed")
    run(config("trainer.max_epochs=6", "logger.wandb.id=resumed-run", *common,
               f"resume={tmp_path / 'resumed' / 'checkpoints' / 'last.ckpt'}"),
        tmp_path / "resumed")
    (kept,) = (tmp_path / "resumed" / "wandb").glob("offline-run-*")
    assert "-resumed-run" in kept.name  # W&B adds "-1" when both attempts start in one second
    (straight,) = (tmp_path / "straight" / "wandb").glob("offline-run-*")

    def rows(d):
        return [{k: v for k, v in r.items() if k not in ("_runtime", "_timestamp")}
                for r in history(d)]
    logged = rows(kept)
    assert [r["_step"] for r in logged] == list(range(len(logged)))
    assert logged == rows(straight)
