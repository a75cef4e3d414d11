"""SIGUSR1 and requeue without a cluster: the checkpoint lands at the next optimizer step, a
failed requeue is an error (exit 3) that says how to continue, requeues are capped, and the
log tells a time limit from a preemption. (Under a real Slurm: tests/test_slurm.py.)"""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime
from pathlib import Path

import lightning as L
import pytest
from runs import config, overrides

from pipelines.harness import slurm
from pipelines.harness.checkpoints import read
from pipelines.harness.errors import RunFailed
from pipelines.train import run

pytestmark = pytest.mark.usefixtures("one_thread")


def _fake_scontrol(tmp_path: Path, body: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\n{body}\n")
    (bin_dir / "scontrol").chmod(0o755)
    return bin_dir


@pytest.fixture
def in_a_job(monkeypatch):
    for key in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")


def test_a_failed_scontrol_requeue_is_an_error(tmp_path, monkeypatch, in_a_job):
    bin_dir = _fake_scontrol(tmp_path, 'echo "scontrol: error: Requeue of job 4242 denied" >&2'
                                       "; exit 1")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    with pytest.raises(RunFailed, match=r"scontrol requeue 4242` failed with status 1 "
                                        r"\(scontrol: error: Requeue of job 4242 denied\)"):
        slurm.requeue("4242")


def test_no_scontrol_anywhere_is_an_error_not_a_crash(monkeypatch, in_a_job):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RunFailed, match="scontrol requeue 4242"):
        slurm.requeue("4242")


def test_array_tasks_are_requeued_by_their_own_id(monkeypatch, in_a_job):
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "100")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert slurm.job_id() == "100_3"


@pytest.mark.parametrize("left, said", [(80, "before the job's time limit ("),
                                        (3600, "a preemption or a manual")])
def test_the_log_tells_a_time_limit_from_a_preemption(tmp_path, monkeypatch, left, said):
    end = datetime.fromtimestamp(time.time() + left).strftime("%Y-%m-%dT%H:%M:%S")
    bin_dir = _fake_scontrol(tmp_path, f'echo "JobId=4242 JobState=RUNNING EndTime={end}"')
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("ADAMLAB_SIGNAL_S", "90")
    assert said in slurm.signal_reason("4242")


class SignalAt(L.Callback):
    """Sends this process SIGUSR1 during the given optimizer step."""

    def __init__(self, step: int):
        self.step = step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGUSR1)


def test_sigusr1_checkpoints_at_the_next_step_and_training_goes_on(tmp_path, monkeypatch):
    """Outside Slurm the signal only writes hpc_ckpt_1.ckpt, between steps 3 and 4 (inside an
    epoch: MLIP epochs have 5 steps), and the run ends normally."""
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    metrics = run(config(*overrides("mlip", tmp_path)), tmp_path / "run",
                  extra_callbacks=[SignalAt(3)])
    found = read(tmp_path / "run" / "hpc_ckpt_1.ckpt")
    assert found.progress[0] == 4 and found.header["between_steps"]
    assert metrics["n_train"] > 0 and not slurm.pending()


def test_requeues_are_capped(tmp_path, monkeypatch, in_a_job):
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    bin_dir = _fake_scontrol(tmp_path, "exit 0")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    with pytest.raises(RunFailed, match=r"requeued 2 times \(max_requeues=2\).*continue from"):
        run(config(*overrides("mlip", tmp_path, "max_requeues=2")), tmp_path / "run",
            extra_callbacks=[SignalAt(1)])
    assert (tmp_path / "run" / "hpc_ckpt_1.ckpt").is_file()  # checkpointed before stopping
