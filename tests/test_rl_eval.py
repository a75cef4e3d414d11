"""`adamlab eval` on RL runs: it reproduces the run's own eval_return, takes options, and
records videos that fail loudly when rendering fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image
from test_rl import config

from pipelines import evaluate as eval_command
from pipelines.harness.errors import ConfigError
from pipelines.rl import envs as rl_envs
from pipelines.rl.evaluate import record_episode
from pipelines.rl.pipeline import RLPipeline
from pipelines.rl.policy import Policy
from pipelines.train import run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cartpole")
    metrics = run(config("pipeline.total_timesteps=1024", "pipeline.eval_every=0",
                         "pipeline.pg_grad_every=0", "telemetry_every=0",
                         "env.normalize_obs=true"), run_dir)
    return run_dir, metrics


def test_eval_reproduces_the_runs_eval_return(cartpole_run):
    run_dir, metrics = cartpole_run
    result = eval_command.evaluate(str(run_dir), [])
    # episodes of different lengths: equal means say the same episodes were played
    assert len(set(result["returns"])) > 1
    assert result["mean_return"] == metrics["eval_return"]
    assert result["episodes"] == 10 and result["deterministic"] is True
    assert json.loads((run_dir / "eval.json").read_text()) == result
    # the same from the checkpoint file, and a different seed gives other episodes
    same = eval_command.evaluate(str(run_dir / "checkpoints" / "last.ckpt"), [])
    assert same["returns"] == result["returns"]
    other = eval_command.evaluate(str(run_dir), ["seed=777", "episodes=4"])
    assert len(other["returns"]) == 4 and other["returns"] != result["returns"][:4]


def test_adamlab_eval_command(cartpole_run, tmp_path):
    run_dir, _ = cartpole_run
    adamlab = str(Path(sys.executable).parent / "adamlab")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([adamlab, "eval", str(run_dir), "episodes=3", "deterministic=false",
                           "video=gif"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert len(result["returns"]) == 3 and result["deterministic"] is False
    assert result["std_return"] == pytest.approx(np.std(result["returns"]))
    assert Image.open(result["video"]).n_frames > 5
    bad = subprocess.run([adamlab, "eval", str(tmp_path / "nowhere")], capture_output=True,
                         text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "checkpoint=" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize("options, key", [(["episodes=0"], "episodes"), (["bogus=1"], "bogus"),
                                          (["video=avi"], "video"), (["episodes"], "options")])
def test_bad_eval_options_exit_2_naming_the_key(cartpole_run, capsys, options, key):
    run_dir, _ = cartpole_run
    with pytest.raises(SystemExit) as exited:
        eval_command.main([str(run_dir), *options])
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith(f"adamlab eval: {key}")


@pytest.mark.parametrize("fmt", ["gif", "mp4"])
def test_video_of_one_episode(cartpole_run, tmp_path, fmt):
    run_dir, _ = cartpole_run
    policy = Policy.load(run_dir / "policy.pt")
    path = record_episode(policy, 0, tmp_path / f"episode.{fmt}")
    assert path.stat().st_size > 1000
    if fmt == "gif":  # Pillow merges identical frames, adding up their durations
        image = Image.open(path)
        duration = 0
        for index in range(image.n_frames):
            image.seek(index)
            duration += image.info["duration"]
        env = policy.make_env()
        obs, _ = env.reset(seed=0)
        steps, done = 0, False
        while not done:
            obs, _, terminated, truncated, _ = env.step(policy.act(obs[None])[0])
            steps, done = steps + 1, terminated or truncated
        fps = env.metadata["render_fps"]
        assert duration == (steps + 1) * round(1000 / fps)  # the reset frame, one per step


class BrokenRender(gym.Wrapper):
    def render(self):
        return None


def test_video_fails_when_rendering_fails(cartpole_run, tmp_path, monkeypatch):
    run_dir, _ = cartpole_run
    policy = Policy.load(run_dir / "policy.pt")
    broken = policy.make_env
    monkeypatch.setattr(policy, "make_env", lambda render_mode=None: BrokenRender(
        broken(render_mode)))
    with pytest.raises(RuntimeError, match="not an RGB frame"):
        record_episode(policy, 0, tmp_path / "episode.gif")
    assert not (tmp_path / "episode.gif").exists()
    # and a run asking for a video it cannot render is refused before training
    original = rl_envs.make_one
    monkeypatch.setattr(rl_envs, "make_one", lambda *a, **k: BrokenRender(original(*a, **k)))
    with pytest.raises(ConfigError) as error:
        RLPipeline().validate(config("pipeline.video=gif"))
    assert error.value.key == "pipeline.video"
