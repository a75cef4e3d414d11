"""Sweeps as job arrays, sbatch scripts and preemption on a real one-node Slurm.

Run `scripts/slurm_up.sh && pytest -m slurm; scripts/slurm_down.sh`. Every wait is bounded.
"""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from pipelines.slurm.sbatch import render
from pipelines.train import CONFIGS, run

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(shutil.which("sbatch") is None,
                       reason="no sbatch on PATH: run scripts/slurm_up.sh first"),
]
ADAMLAB = str(Path(sys.executable).parent / "adamlab")
TINY = ["data.num_nodes=600", "data.feature_dim=16", "trainer.enable_progress_bar=false",
        "telemetry_every=0"]


def _env(tmp_path):
    return {**os.environ, "ADAMLAB_RUNS": str(tmp_path / "runs"), "WANDB_MODE": "offline"}


def _state(job: str) -> tuple[str, str]:
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True,
                         timeout=10).stdout
    found = dict(re.findall(r"\b(JobState|Reason)=(\S+)", out))
    return found.get("JobState", "?"), found.get("Reason", "?")


def _wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def _sweep(tmp_path, *overrides, timeout=240):
    cmd = [ADAMLAB, "train", "-m", "hydra/launcher=slurm", *TINY, *overrides]
    return subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True,
                          timeout=timeout, cwd=tmp_path)


def test_sweep_is_one_job_array(tmp_path):
    done = _sweep(tmp_path, "seed=0,1", "trainer.max_epochs=2")
    assert done.returncode == 0, done.stderr[-3000:]
    runs = sorted((tmp_path / "runs" / "multirun").glob("*/*_*_*"))
    assert [r.name.split("_")[0] for r in runs] == ["0", "1"]  # <num>_<array id>_<task id>
    assert len({r.name.split("_")[1] for r in runs}) == 1      # one array
    for r in runs:
        assert json.loads((r / "summary.json").read_text())["pipeline"] == "gnn"


def test_failed_job_shows_its_error(tmp_path):
    done = _sweep(tmp_path, "optim.lr=-1", "trainer.max_epochs=1")
    assert done.returncode != 0
    assert "lr=-1" in done.stderr + done.stdout
    logs = list((tmp_path / "runs" / "multirun").glob("*/.submitit/*/*_log.err"))
    assert logs and "lr=-1 is invalid" in logs[0].read_text()


def test_sbatch_script_requeues_and_resumes_exactly(tmp_path):
    """SIGUSR1 mid-training -> hpc checkpoint -> requeue -> resume: same final metrics as an
    uninterrupted run, CSV with every epoch once, one W&B run id."""
    overrides = [*TINY, "trainer.max_epochs=40", "model.dropout=0.5"]
    script = tmp_path / "run.sbatch"
    script.write_text(render(overrides, name="rq", runs=str(tmp_path / "runs"),
                             adamlab=ADAMLAB))
    assert subprocess.run(["bash", "-n", str(script)], timeout=10).returncode == 0
    job = subprocess.run(["sbatch", "--parsable", str(script)], env=_env(tmp_path),
                         cwd=tmp_path, capture_output=True, text=True, timeout=30,
                         check=True).stdout.strip()
    run_dir = tmp_path / "runs" / "slurm" / f"rq-{job}"
    try:
        _wait(lambda: (run_dir / "checkpoints" / "last.ckpt").is_file(), 90, "first epoch")
        subprocess.run(["scancel", "--signal=USR1", job], check=True, timeout=10)
        # a requeued job waits 120 s (BeginTime): start it now, once the requeue has landed
        _wait(lambda: _state(job) == ("PENDING", "BeginTime"), 60, "the requeue")
        time.sleep(1.5)
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True,
                       timeout=10)
        _wait(lambda: _state(job)[0] in ("COMPLETED", "FAILED", "CANCELLED"), 120, "the end")
    finally:
        subprocess.run(["scancel", job], timeout=10)
    log = (tmp_path / f"rq-{job}.log").read_text()
    assert _state(job)[0] == "COMPLETED", log[-3000:]
    assert "restart 1" in log and "hpc_ckpt_1.ckpt" in log

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*overrides, "logger=csv"])
    straight = run(cfg, tmp_path / "straight")
    resumed = json.loads((run_dir / "summary.json").read_text())["metrics"]
    assert json.loads(json.dumps(straight, default=float)) == resumed

    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    epochs = [int(r["epoch"]) for r in rows if r["val_acc"]]
    assert epochs == list(range(40))
    ids = {p.name.rsplit("-", 1)[-1] for p in (run_dir / "wandb").glob("offline-run-*")}
    assert ids == {job}  # every attempt logs to the same W&B run (id rq-<stamp>-<job>)
