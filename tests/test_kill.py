"""Real `adamlab train` processes SIGKILLed at random moments (mid-step, mid-checkpoint-write)
and rerun with the same command: the final metrics equal an uninterrupted run's exactly, and
metrics.csv holds each row once.

Default suite: a few kills per pipeline. `make test-slow`: 20 per pipeline.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runs import command, config, env, overrides, table, train

from pipelines.harness.checkpoints import read
from pipelines.train import run

pytestmark = pytest.mark.usefixtures("one_thread")
KILL_IN_CHECKPOINT = str(Path(__file__).parent / "kill_in_checkpoint.py")
# runs long enough (a few seconds of training) for a random kill to land inside them
LONGER = {"gnn": ["trainer.max_epochs=150"],
          "mlip": ["trainer.max_epochs=8", "checkpoint_every=3 steps"],
          "rl": ["pipeline.total_timesteps=1280"]}
# twenty kills: each attempt trains at least to its first checkpoint, so the run must be
# longer than 20 checkpoint intervals plus the kills' random delays
LONGEST = {"gnn": ["trainer.max_epochs=400"],
           "mlip": ["trainer.max_epochs=100", "checkpoint_every=3 steps"],
           "rl": ["pipeline.total_timesteps=6400"]}


def _last_checkpoint_time(run_dir: Path) -> float:
    try:
        return (run_dir / "checkpoints" / "last.ckpt").stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _kill_at_random(run_dir: Path, args: list[str], rng: random.Random, window: float) -> bool:
    """Start the command, wait until it has written a checkpoint, SIGKILL it after a random
    delay. False if it finished first."""
    started = time.time()
    proc = subprocess.Popen(command(run_dir, args), env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        while proc.poll() is None and _last_checkpoint_time(run_dir) < started:
            time.sleep(0.02)
        time.sleep(rng.uniform(0, window))
        if proc.poll() is not None:
            assert proc.returncode == 0, proc.stderr.read()[-3000:]
            return False
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        return True
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stderr.close()


def _kill_in_checkpoint(run_dir: Path, args: list[str], nth: int) -> None:
    cmd = [sys.executable, KILL_IN_CHECKPOINT, str(nth), *command(run_dir, args)[1:]]
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]


def _check_survives(pipeline: str, tmp_path: Path, kills: int, seed: int,
                    in_checkpoint: tuple[int, ...] = (), longer: dict = LONGER) -> int:
    args = overrides(pipeline, tmp_path, *longer[pipeline])
    started = time.perf_counter()
    straight = run(config(*args), tmp_path / "straight")
    # a kill lands within a share of the training time (the training part of a whole
    # command), so that `kills` attempts together leave the run unfinished until the last
    window = 0.8 * (time.perf_counter() - started) / max(kills, 1)
    run_dir, rng, landed = tmp_path / "killed", random.Random(seed), 0
    for nth in in_checkpoint:
        _kill_in_checkpoint(run_dir, args, nth)
        assert list(run_dir.rglob(".adamlab-*.tmp"))  # the torn write is left behind ...
        if nth > 1:                                    # ... and the previous checkpoint loads
            read(run_dir / "checkpoints" / "last.ckpt")
        landed += 1
    for _ in range(kills):
        landed += _kill_at_random(run_dir, args, rng, window)
    done = train(run_dir, args)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "ok"
    assert summary["metrics"] == json.loads(json.dumps(straight, default=float))
    assert table(run_dir) == table(tmp_path / "straight")  # every row once, same values
    assert not list(run_dir.rglob(".adamlab-*.tmp"))  # torn writes were cleaned up
    return landed


@pytest.mark.parametrize("pipeline, kills, in_checkpoint", [
    ("gnn", 1, ()),
    ("mlip", 0, (2,)),
    ("rl", 1, ()),
])
def test_killed_runs_rerun_to_the_same_result(tmp_path, pipeline, kills, in_checkpoint):
    landed = _check_survives(pipeline, tmp_path, kills, seed=len(pipeline),
                             in_checkpoint=in_checkpoint)
    assert landed >= 1


@pytest.mark.slow
@pytest.mark.timeout(3600)  # 23 processes: ~3 min each pipeline on a quiet 2-core machine
@pytest.mark.parametrize("pipeline", ["gnn", "mlip", "rl"])
def test_twenty_kills(tmp_path, pipeline):
    landed = _check_survives(pipeline, tmp_path, kills=20, seed=17, in_checkpoint=(1, 3),
                             longer=LONGEST)
    assert landed >= 20
