"""Checkpoints: the header, no pickle, which checkpoint a rerun continues from, mid-epoch
resume, file modes and the kill-proof CSV."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from runs import config, overrides, table

from pipelines.harness import checkpoints
from pipelines.harness.checkpoints import Interval, choose, read
from pipelines.harness.errors import ConfigError, FileError
from pipelines.harness.files import atomic_write, is_temporary
from pipelines.harness.loggers import _RunWriter, read_rows
from pipelines.harness.run_dir import write_summary
from pipelines.train import run

pytestmark = pytest.mark.usefixtures("one_thread")


class Payload:
    """Unpickling this writes ``marker``: what a crafted checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny finished run per pipeline, reused read-only by the tests."""
    root = tmp_path_factory.mktemp("trained")
    out = {}
    for pipeline in ("gnn", "mlip", "rl"):
        args = overrides(pipeline, root)
        run(config(*args), root / pipeline)
        out[pipeline] = (args, root / pipeline)
    return out


def test_header_names_schema_pipeline_and_config(trained):
    args, run_dir = trained["gnn"]
    found = read(run_dir / "checkpoints" / "last.ckpt")
    cfg = config(*args)
    assert found.header["schema"] == checkpoints.SCHEMA and found.header["pipeline"] == "gnn"
    flat = checkpoints.tracked_config(cfg)
    assert found.header["config"] == flat and flat["optim.lr"] == cfg.optim.lr
    assert found.header["config_hash"] == checkpoints.config_hash(flat)
    assert "trainer.max_epochs" not in flat  # training longer is not another config
    assert found.next_step == 12 and found.progress[0] == 12


@pytest.mark.parametrize("pipeline", ["gnn", "mlip", "rl"])
def test_crafted_checkpoint_is_refused_without_running_it(trained, tmp_path, pipeline):
    """An object whose unpickling runs code, anywhere in the checkpoint: refused by
    ``weights_only`` before any work; the payload never runs."""
    args, run_dir = trained[pipeline]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    marker = tmp_path / "payload-ran"
    ckpt["state_dict"] = {**ckpt["state_dict"], "evil": Payload(marker)}
    crafted = tmp_path / "crafted.ckpt"
    torch.save(ckpt, crafted)
    with pytest.raises(FileError, match="refused to unpickle") as error:
        run(config(*args, f"resume={crafted}"), tmp_path / "victim")
    assert str(crafted) in str(error.value)
    assert not marker.exists() and not (tmp_path / "victim" / "config.yaml").exists()


@pytest.mark.parametrize("pipeline", ["gnn", "mlip", "rl"])
def test_pickled_bytes_in_a_checkpoint_are_never_unpickled(trained, tmp_path, pipeline):
    """``weights_only`` lets raw bytes through; nothing in the harness unpickles them (RL's
    env state where bytes used to be: tests/test_rl_checkpoints.py)."""
    args, run_dir = trained[pipeline]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    marker = tmp_path / "payload-ran"
    ckpt["blob"] = pickle.dumps(Payload(marker))
    crafted = tmp_path / "crafted.ckpt"
    torch.save(ckpt, crafted)
    run(config(*args, f"resume={crafted}"), tmp_path / "resumed")
    assert not marker.exists()


def _copy_run(run_dir: Path, to: Path) -> Path:
    shutil.copytree(run_dir, to)
    return to


@pytest.mark.parametrize("pipeline", ["gnn", "mlip", "rl"])
def test_rerunning_a_finished_run_reports_its_metrics_again(trained, tmp_path, pipeline):
    """A run killed after its last step (while testing or writing figures) resumes from a
    checkpoint with nothing left to train: Lightning then skips on_train_end, where the EMA
    average goes into the module; the rerun must still evaluate the weights the run ended
    with."""
    args, run_dir = trained[pipeline]
    here = _copy_run(run_dir, tmp_path / "run")
    before = json.loads((run_dir / "summary.json").read_text())["metrics"]
    again = run(config(*args), here)
    assert json.loads(json.dumps(again, default=float)) == before


def test_rerun_continues_from_the_newest_checkpoint_that_loads(trained, tmp_path):
    args, run_dir = trained["gnn"]
    here = _copy_run(run_dir, tmp_path / "run")
    last = here / "checkpoints" / "last.ckpt"
    older = torch.load(last, weights_only=True)
    older["global_step"] = 5
    torch.save(older, here / "hpc_ckpt_1.ckpt")
    (here / "hpc_ckpt_2.ckpt").write_bytes(last.read_bytes()[:1000])  # torn: skipped
    (here / ".adamlab-x9.tmp").write_bytes(b"junk")                      # never a candidate
    (here / ".hpc_ckpt_3.ckpt.abc123.tmp").write_bytes(b"junk")          # an old-style temp
    found = choose(config(*args), here)
    assert found.path == last  # step 12 beats step 5; the torn one and the temps are ignored
    last.unlink()
    assert choose(config(*args), here).path == here / "hpc_ckpt_1.ckpt"


def test_explicit_resume_never_overrides_a_newer_checkpoint_of_the_run(trained, tmp_path):
    """A requeued job launched with resume=<older run> continues from its own progress."""
    args, run_dir = trained["gnn"]
    here = _copy_run(run_dir, tmp_path / "run")
    older = torch.load(here / "checkpoints" / "last.ckpt", weights_only=True)
    older["global_step"], older["epoch"] = 3, 3
    torch.save(older, tmp_path / "older.ckpt")
    cfg = config(*args, f"resume={tmp_path / 'older.ckpt'}")
    assert choose(cfg, here).path == here / "checkpoints" / "last.ckpt"
    assert choose(cfg, tmp_path / "fresh").path == tmp_path / "older.ckpt"


def test_changed_config_is_named_and_can_be_accepted(trained, tmp_path):
    args, run_dir = trained["gnn"]
    here = _copy_run(run_dir, tmp_path / "run")
    lr = config(*args).optim.lr  # the GNN model's Adam default (model.adam_lr)
    with pytest.raises(FileError, match=rf"model.hidden: 8 -> 9; optim.lr: {lr} -> 0.002"):
        choose(config(*args, "optim.lr=0.002", "model.hidden=9"), here)
    with pytest.raises(FileError, match="model.hidden"):
        choose(config(*args, "optim.lr=0.002", "model.hidden=9",
                      "resume_accept_changes=[optim]"), here)
    found = choose(config(*args, "optim.lr=0.002", "resume_accept_changes=[optim.lr]"), here)
    assert found.path.name == "last.ckpt"
    assert choose(config(*args, "trainer.max_epochs=20"), here) is not None  # longer: same
    # what is reported is not the model's config: another monitor resumes as is
    assert choose(config(*args, "pipeline.monitor=val_loss", "pipeline.monitor_mode=min"),
                  here) is not None


def test_a_key_untracked_since_the_checkpoint_does_not_block_its_resume(trained, tmp_path):
    args, run_dir = trained["gnn"]
    here = _copy_run(run_dir, tmp_path / "run")
    path = here / "checkpoints" / "last.ckpt"
    ckpt = torch.load(path, weights_only=True)
    ckpt[checkpoints.HEADER]["config"]["pipeline.monitor_mode"] = "min"  # tracked before
    torch.save(ckpt, path)
    assert choose(config(*args), here).path == path


def test_hpc_checkpoints_keep_the_last_two(tmp_path):
    saver = checkpoints.RunCheckpoints(tmp_path, Interval(1, "epochs"), {}, max_requeues=1)
    for _ in range(4):
        path = saver._next_hpc_path()
        path.write_bytes(b"x")
        saver._prune_hpc()
    assert sorted(p.name for p in tmp_path.glob("hpc_ckpt_*")) == ["hpc_ckpt_3.ckpt",
                                                                    "hpc_ckpt_4.ckpt"]


@pytest.mark.parametrize("value, expected", [
    (1, Interval(1, "epochs")), (3, Interval(3, "epochs")), ("2 epochs", Interval(2, "epochs")),
    ("200steps", Interval(200, "steps")), ("1 step", Interval(1, "steps")),
    ("30 s", Interval(30, "seconds")), ("1.5 min", Interval(90, "seconds")),
    ("2h", Interval(7200, "seconds")),
])
def test_checkpoint_every_units(value, expected):
    assert Interval.parse(value) == expected


@pytest.mark.parametrize("value", [0, -1, "often", "10 parsecs", "1.5 steps", "0 s", None, 2.5])
def test_checkpoint_every_refuses_what_it_cannot_mean(value):
    with pytest.raises(ConfigError, match="checkpoint_every"):
        Interval.parse(value)


@pytest.mark.parametrize("every", ["3 steps", "2 epochs"])
def test_resume_between_steps_equals_an_uninterrupted_run(tmp_path, every):
    """MLIP has several batches an epoch and a plateau schedule: a run that crashes after
    checkpoints inside epochs and is rerun into its run dir trains, logs and scores exactly
    as one that never stopped."""
    # patience 0 and mode max on a falling loss: every epoch end halves the lr, so a
    # scheduler step missed after the resume would show
    args = overrides("mlip", tmp_path, f"checkpoint_every={every}", "trainer.max_epochs=4",
                     "schedule.patience=0", "schedule.mode=max")
    straight = run(config(*args), tmp_path / "straight")

    class Crash(L.Callback):
        def __init__(self, at):
            self.at = at

        def on_train_batch_end(self, trainer, *rest):
            if trainer.global_step == self.at:
                raise RuntimeError("crash")

    for at in (4, 8, 13):  # epochs have 5 steps
        with pytest.raises(RuntimeError, match="crash"):
            run(config(*args), tmp_path / "crashed", extra_callbacks=[Crash(at)])
        assert json.loads((tmp_path / "crashed" / "summary.json").read_text())["status"] \
            == "failed"
    resumed = run(config(*args), tmp_path / "crashed")
    assert resumed == straight
    assert table(tmp_path / "crashed") == table(tmp_path / "straight")
    summary = json.loads((tmp_path / "crashed" / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["resumed_from"].endswith("last.ckpt")


def test_files_respect_the_umask(tmp_path):
    old = os.umask(0o002)
    try:
        atomic_write(tmp_path / "shared.txt", "x")
        write_summary(tmp_path, "gnn", {"a": 1.0}, 1.0)
    finally:
        os.umask(old)
    for name in ("shared.txt", "summary.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o664
    assert not [p for p in tmp_path.iterdir() if is_temporary(p)]


def test_atomic_write_fsyncs_the_file_then_the_directory_after_the_rename(tmp_path,
                                                                          monkeypatch):
    """The data is durable before the rename, the rename once the directory is synced."""
    target = tmp_path / "last.ckpt"
    synced = []
    real = os.fsync

    def spy(fd):
        st = os.fstat(fd)
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            synced.append(("dir", os.path.samestat(st, os.stat(tmp_path)), target.exists()))
        else:
            synced.append(("file", st.st_size, target.exists()))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    atomic_write(target, b"12345")
    assert synced == [("file", 5, False), ("dir", True, True)]


def test_summary_is_valid_json_with_non_finite_metrics(tmp_path):
    path = write_summary(tmp_path, "gnn", {"loss": float("nan"), "x": [float("inf"), 1.0],
                                           "n": torch.tensor(3)}, 1.0, status="failed",
                         error="diverged")
    summary = json.loads(path.read_text())  # strict JSON: NaN would not parse in most readers
    assert summary["metrics"] == {"loss": None, "x": [None, 1.0], "n": 3}
    assert summary["status"] == "failed" and summary["error"] == "diverged"
    assert "NaN" not in path.read_text()


def test_csv_drops_a_torn_line_and_rows_past_the_resume_step(tmp_path):
    log_dir = tmp_path / "csv"
    writer = _RunWriter(str(log_dir), resume_step=0)
    for step in range(4):
        writer.log_metrics({"loss": float(step)}, step)
    writer.save()
    writer.log_metrics({"loss": 9.0, "acc": 0.5}, 4)  # a new column: atomic rewrite
    writer.save()
    path = log_dir / "metrics.csv"
    with open(path, "a") as f:
        f.write("5,0.12")  # a kill in the middle of a write
    assert [r["step"] for r in read_rows(path)[1]] == ["0", "1", "2", "3", "4"]
    again = _RunWriter(str(log_dir), resume_step=3)
    assert [r["step"] for r in again.earlier] == ["0", "1", "2"]
    keys, rows = read_rows(path)
    assert keys == ["acc", "loss", "step"] and [r["step"] for r in rows] == ["0", "1", "2"]
    assert path.read_text().endswith("\n")


def test_checkpoint_write_leaves_the_previous_one_when_interrupted(tmp_path):
    target = tmp_path / "last.ckpt"
    atomic_write(target, b"old")

    def torn(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, torn)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["last.ckpt"]


def test_a_time_interval_is_read_from_the_clock(tmp_path):
    """A time interval is read from the clock, not counted in steps."""
    saver = checkpoints.RunCheckpoints(tmp_path, Interval(0.05, "seconds"), {}, 1)
    saver._saved_time, saver._saved_step = time.monotonic(), 0
    assert not saver._due(None)
    time.sleep(0.06)
    assert saver._due(None)
