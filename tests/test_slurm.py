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
from wandb_records import history

from pipelines.slurm.sbatch import render
from pipelines.train import CONFIGS, run

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(shutil.which("sbatch") is None,
                       reason="no sbatch on PATH: run scripts/slurm_up.sh first"),
]
ADAMLAB = str(Path(sys.executable).parent / "adamlab")
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
         "PREEMPTED", "BOOT_FAIL", "DEADLINE")  # Slurm's final job states
TINY = ["data.num_nodes=600", "data.feature_dim=16", "trainer.enable_progress_bar=false",
        "telemetry_every=0", "checkpoint_every=1"]  # gnn.yaml saves every 30 s: these are faster


def _env(tmp_path):
    return {**os.environ, "ADAMLAB_RUNS": str(tmp_path / "runs"), "WANDB_MODE": "offline"}


def _state(job: str) -> tuple[str, str]:
    try:
        out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True,
                             timeout=30).stdout
    except subprocess.TimeoutExpired:  # a busy slurmctld: ask again at the next poll
        return "?", "?"
    found = dict(re.findall(r"\b(JobState|Reason)=(\S+)", out))
    return found.get("JobState", "?"), found.get("Reason", "?")


def _wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def _requeued(job: str) -> bool:
    """The requeue has landed (the job waits for its BeginTime); a job that ended instead
    fails the test at once (the signal came after its last step)."""
    state = _state(job)
    if state[0] in ENDED:
        pytest.fail(f"job {job} ended ({state[0]}) instead of being requeued")
    return state == ("PENDING", "BeginTime")


def _sweep(tmp_path, *overrides, timeout=600):
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


def test_requeued_array_task_resumes_and_the_sweep_completes(tmp_path):
    """USR1 to a running array task: checkpoint, requeue of that task, resume; the sweep
    (hydra-submitit-launcher) waits through it and the run equals an uninterrupted one."""
    overrides = ["trainer.max_epochs=40", "model.dropout=0.5"]
    cmd = [ADAMLAB, "train", "-m", "hydra/launcher=slurm", *TINY, *overrides, "seed=0,1"]
    sweep = subprocess.Popen(cmd, env=_env(tmp_path), cwd=tmp_path, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    task = None
    try:
        ckpt = _wait(lambda: next((tmp_path / "runs" / "multirun").glob(
            "*/0_*_0/checkpoints/last.ckpt"), None), 300, "the task's first epoch")
        run_dir = ckpt.parent.parent
        task = "_".join(run_dir.name.split("_")[1:])  # <array job id>_<task id>
        subprocess.run(["scancel", "--signal=USR1", task], check=True, timeout=10)
        _wait(lambda: _requeued(task), 120, "the requeue")
        time.sleep(1.5)
        subprocess.run(["scontrol", "update", f"JobId={task}", "StartTime=now"], check=True,
                       timeout=10)
        out, err = sweep.communicate(timeout=600)
    finally:
        if sweep.poll() is None:
            sweep.kill()
        if task:
            subprocess.run(["scancel", task], timeout=10)
    assert sweep.returncode == 0, err[-3000:]
    logs = "".join(p.read_text() for p in run_dir.parent.glob(".submitit/*/*_log.*"))
    assert "requeued job" in logs and "hpc_ckpt_1.ckpt" in logs

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*TINY, *overrides, "seed=0"])
    straight = run(cfg, tmp_path / "straight")
    resumed = json.loads((run_dir / "summary.json").read_text())["metrics"]
    assert json.loads(json.dumps(straight, default=float)) == resumed
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1


def test_failed_job_shows_its_error(tmp_path):
    done = _sweep(tmp_path, "optim.lr=-1", "trainer.max_epochs=1")
    assert done.returncode != 0
    assert "lr=-1" in done.stderr + done.stdout
    logs = list((tmp_path / "runs" / "multirun").glob("*/.submitit/*/*_log.err"))
    assert logs and "lr=-1 is invalid" in logs[0].read_text()


TINY_MLIP = ["pipeline=mlip", "data.n_configs=40", "+data.size=[1,1,1]",
             "+data.snapshots_per_run=5", "model.cutoff=4.0", "model.hidden=16",
             "model.num_interactions=2", "model.num_rbf=8", "pipeline.batch_size=8",
             "trainer.enable_progress_bar=false", "telemetry_every=2"]


@pytest.mark.parametrize("pipeline", ["gnn", "mlip"])
def test_sbatch_script_requeues_and_resumes_exactly(tmp_path, pipeline):
    """SIGUSR1 mid-training -> hpc checkpoint at the next optimizer step (inside an MLIP
    epoch) -> requeue -> resume: the same final metrics, csv rows and W&B history as an
    uninterrupted run, in one W&B run directory."""
    overrides = ([*TINY, "trainer.max_epochs=40", "model.dropout=0.5"] if pipeline == "gnn"
                 else [*TINY_MLIP, f"data.cache_dir={tmp_path / 'cache'}",
                       "trainer.max_epochs=12"])
    script = tmp_path / "run.sbatch"
    script.write_text(render(overrides, name="rq", runs=str(tmp_path / "runs"),
                             adamlab=ADAMLAB))
    assert subprocess.run(["bash", "-n", str(script)], timeout=10).returncode == 0
    job = subprocess.run(["sbatch", "--parsable", str(script)], env=_env(tmp_path),
                         cwd=tmp_path, capture_output=True, text=True, timeout=30,
                         check=True).stdout.strip()
    run_dir = tmp_path / "runs" / "slurm" / f"rq-{job}"
    try:
        _wait(lambda: (run_dir / "checkpoints" / "last.ckpt").is_file(), 300, "first epoch")
        subprocess.run(["scancel", "--signal=USR1", job], check=True, timeout=10)
        # a requeued job waits 120 s (BeginTime): start it now, once the requeue has landed
        _wait(lambda: _requeued(job), 120, "the requeue")
        time.sleep(1.5)
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True,
                       timeout=10)
        _wait(lambda: _state(job)[0] in ENDED, 600, "the end")
    finally:
        subprocess.run(["scancel", job], timeout=10)
    log = (tmp_path / f"rq-{job}.log").read_text()
    assert _state(job)[0] == "COMPLETED", log[-3000:]
    assert "restart 1" in log and "hpc_ckpt_1.ckpt" in log
    assert f"requeued job {job} after writing" in log and "a preemption or a manual" in log

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    straight = run(cfg, tmp_path / "straight")
    resumed = json.loads((run_dir / "summary.json").read_text())["metrics"]
    assert json.loads(json.dumps(straight, default=float)) == resumed

    def table(d):
        with open(d / "csv" / "metrics.csv", newline="") as f:
            return [{k: v for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
    rows = table(run_dir)
    epochs = 40 if pipeline == "gnn" else 12
    assert [int(r["epoch"]) for r in rows if "val_loss" in r] == list(range(epochs))
    assert rows == table(tmp_path / "straight")  # every row once, same steps, same values

    (wandb_run,) = (run_dir / "wandb").glob("offline-run-*")  # one W&B run directory ...
    assert f"-{job}" in wandb_run.name                       # ... with the job's id
    (straight_run,) = (tmp_path / "straight" / "wandb").glob("offline-run-*")
    logged, expected = history(wandb_run), history(straight_run)
    assert [r["_step"] for r in logged] == list(range(len(logged)))  # continuous steps
    assert [_metrics(r) for r in logged] == [_metrics(r) for r in expected]


def _metrics(row: dict) -> dict:
    """A W&B history row without W&B's own clocks."""
    return {k: v for k, v in row.items() if k not in ("_runtime", "_timestamp")}


def _submit(tmp_path, script_text: str, env: dict | None = None) -> str:
    script = tmp_path / "run.sbatch"
    script.write_text(script_text)
    return subprocess.run(["sbatch", "--parsable", str(script)], env=env or _env(tmp_path),
                          cwd=tmp_path, capture_output=True, text=True, timeout=30,
                          check=True).stdout.strip()


def _finish(job: str, timeout: float) -> str:
    try:
        return _wait(lambda: (s := _state(job)[0]) in ENDED and s, timeout, "the job's end")
    finally:
        subprocess.run(["scancel", job], timeout=10)


def test_a_failed_requeue_fails_the_job(tmp_path):
    """scontrol refuses the requeue: the job ends FAILED (exit 3), saying how to continue,
    instead of COMPLETED with a promise to resume."""
    fake = tmp_path / "bin"
    fake.mkdir()
    real = shutil.which("scontrol")
    (fake / "scontrol").write_text(
        '#!/bin/sh\nif [ "$1" = requeue ]; then\n'
        '  echo "scontrol: error: Requested operation is presently disabled" >&2; exit 1\nfi\n'
        f'exec {real} "$@"\n')
    (fake / "scontrol").chmod(0o755)
    env = {**_env(tmp_path), "PATH": f"{fake}:{os.environ['PATH']}"}
    overrides = [*TINY, "trainer.max_epochs=100000"]  # ends at the signal
    job = _submit(tmp_path, render(overrides, name="rq", runs=str(tmp_path / "runs"),
                                   adamlab=ADAMLAB), env)
    run_dir = tmp_path / "runs" / "slurm" / f"rq-{job}"
    try:
        _wait(lambda: (run_dir / "checkpoints" / "last.ckpt").is_file(), 300, "first epoch")
        subprocess.run(["scancel", "--signal=USR1", job], check=True, timeout=10)
    finally:
        state = _finish(job, 300)
    log = (tmp_path / f"rq-{job}.log").read_text()
    assert state == "FAILED", log[-3000:]
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True,
                         timeout=10).stdout
    assert "ExitCode=3:0" in out
    assert "failed with status 1" in log and "presently disabled" in log
    assert "submit it again to continue from" in log and "requeued job" not in log
    assert (run_dir / "hpc_ckpt_1.ckpt").is_file()


@pytest.mark.parametrize("pipeline", ["gnn", "mlip", "rl"])
def test_srun_two_tasks_one_cpu_each(tmp_path, pipeline):
    """Two DDP ranks (gloo) under srun, for every pipeline: MLIP and RL train to the end;
    the full-batch GNN refuses (every rank would repeat the same work)."""
    from runs import overrides

    args = overrides(pipeline, tmp_path, "trainer.max_epochs=2" if pipeline != "rl"
                     else "pipeline.total_timesteps=256")
    job = _submit(tmp_path, render(args, tasks_per_node=2, cpus=1, name="ddp",
                                   runs=str(tmp_path / "runs"), adamlab=ADAMLAB))
    state = _finish(job, 600)
    log = (tmp_path / f"ddp-{job}.log").read_text()
    run_dir = tmp_path / "runs" / "slurm" / f"ddp-{job}"
    if pipeline == "gnn":
        assert state == "FAILED" and "full-batch" in log and "Traceback" not in log
        return
    assert state == "COMPLETED", log[-3000:]
    assert "MEMBER: 2/2" in log
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "ok"


def test_the_log_tells_a_time_limit_and_max_requeues_stops_the_job(tmp_path):
    """Slurm's own SIGUSR1 before the time limit (the limit shortened once training runs, so
    Slurm signals within its 30 s check): the log says "before the job's time limit", and
    with max_requeues=0 the job ends FAILED (status 3) instead of requeueing."""
    overrides = [*TINY, "trainer.max_epochs=100000", "max_requeues=0"]  # ends at the signal
    job = _submit(tmp_path, render(overrides, name="tl", time_limit="30:00", signal_s=90,
                                   runs=str(tmp_path / "runs"), adamlab=ADAMLAB))
    run_dir = tmp_path / "runs" / "slurm" / f"tl-{job}"
    try:
        _wait(lambda: (run_dir / "checkpoints" / "last.ckpt").is_file(), 300, "first epoch")
        out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True,
                             timeout=10).stdout
        h, m, s = (int(x) for x in re.search(r"RunTime=(?:\d+-)?(\S+)", out)[1].split(":"))
        minutes = (h * 3600 + m * 60 + s) // 60 + 2  # ends 60-120 s from now: within 90 + 30
        subprocess.run(["scontrol", "update", f"JobId={job}", f"TimeLimit={minutes}"],
                       check=True, timeout=10)
    finally:
        state = _finish(job, 300)
    log = (tmp_path / f"tl-{job}.log").read_text()
    assert state == "FAILED", log[-3000:]
    assert re.search(r"SIGUSR1 \d+ s before the job's time limit \(", log), log[-3000:]
    assert "a preemption" not in log
    assert f"job {job} was requeued 0 times (max_requeues=0)" in log
    assert "ExitCode=3:0" in subprocess.run(["scontrol", "show", "job", job],
                                            capture_output=True, text=True, timeout=10).stdout
    assert (run_dir / "hpc_ckpt_1.ckpt").is_file()
