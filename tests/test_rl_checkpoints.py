"""What an RL checkpoint holds: env state as plain data (never pickle), restored exactly where
it can be represented; a crafted checkpoint is refused without running its payload; the
exported policy loads without Lightning."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_rl import _last_state, config

from pipelines.harness.errors import ConfigError
from pipelines.rl import envs as rl_envs
from pipelines.train import run

pytestmark = pytest.mark.usefixtures("one_thread")


def _roundtrip(value):
    """Through torch.save / torch.load(weights_only=True), as a checkpoint goes."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1", "Pendulum-v1",
                                    "Hopper-v4"])
def test_env_state_is_plain_data_and_restores_exactly(env_id):
    """Step, snapshot, restore into envs seeded differently: the next 200 steps (resets and
    Hopper's terminations included) are identical, bit for bit."""
    a, b = rl_envs.make(env_id, 2), rl_envs.make(env_id, 2)
    a.reset(seed=3)
    b.reset(seed=99)
    a.action_space.seed(0)
    actions = [a.action_space.sample() for _ in range(300)]
    for action in actions[:100]:
        a.step(action)
    state = rl_envs.snapshot(a)
    assert state is not None
    assert not any(isinstance(v, bytes) for v in _leaves(state))
    rl_envs.restore(b, _roundtrip(state))
    for action in actions[100:]:
        for x, y in zip(a.step(action)[:4], b.step(action)[:4]):
            assert np.array_equal(x, y)
    a.close()
    b.close()


def _leaves(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def test_env_state_is_none_where_it_cannot_be_represented():
    lander = rl_envs.make("LunarLander-v3", 2)  # a Box2D world
    lander.reset(seed=0)
    assert rl_envs.snapshot(lander) is None
    lander.close()


def test_restore_refuses_state_for_attributes_the_env_lacks():
    envs = rl_envs.make("CartPole-v1", 1)
    envs.reset(seed=0)
    state = rl_envs.snapshot(envs)
    state[0][-1]["injected"] = 1
    with pytest.raises(ValueError, match="injected"):
        rl_envs.restore(envs, state)
    envs.close()


class Payload:
    """Unpickling this writes a marker file: proof that loading ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


@pytest.mark.parametrize("where", ["env_bytes", "object"])
def test_crafted_checkpoint_is_refused_without_running_code(tmp_path, where):
    """The old hole: env state stored as pickle bytes and unpickled on resume. Today no
    pickle is ever loaded: bytes where env state belongs are refused, and an object in the
    checkpoint itself is refused by torch.load(weights_only=True). The payload never runs."""
    common = ("pipeline.total_timesteps=512", "pipeline.steps_per_epoch=256",
              "pipeline.eval_every=0", "pipeline.pg_grad_every=0")
    run(config(*common, "trainer.max_epochs=1"), tmp_path / "first")
    path = tmp_path / "first" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, weights_only=True)
    marker = tmp_path / "marker"
    if where == "env_bytes":
        checkpoint["rl"]["collector"]["envs"] = pickle.dumps(Payload(marker))
    else:
        checkpoint["rl"]["collector"]["envs"] = Payload(marker)
    torch.save(checkpoint, path)
    with pytest.raises(ConfigError, match="pickle|weights_only|load"):
        run(config(*common, f"resume={path}"), tmp_path / "resumed")
    assert not marker.exists()


def test_policy_file_loads_without_lightning_and_acts_as_the_run(tmp_path):
    run(config("pipeline.total_timesteps=1024", "pipeline.eval_every=0",
               "pipeline.pg_grad_every=0", "env.normalize_obs=true"), tmp_path)
    policy_file = tmp_path / "policy.pt"
    assert policy_file.stat().st_size < 200_000
    state = torch.load(policy_file, weights_only=True)
    assert state["normalizer"]["obs_rms"]["count"] > 1024  # the training statistics
    code = f"""
import sys
import numpy as np
from pipelines.rl.policy import Policy
policy = Policy.load({str(policy_file)!r})
env = policy.make_env()
obs, _ = env.reset(seed=0)
actions = [int(policy.act(obs[None])[0])]
for _ in range(20):
    obs, *_ = env.step(actions[-1])
    actions.append(int(policy.act(obs[None])[0]))
assert not any(m == "lightning" or m.startswith("lightning.") for m in sys.modules), "lightning"
print(actions)
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    from pipelines.rl.policy import Policy

    policy = Policy.from_checkpoint(tmp_path / "checkpoints" / "last.ckpt",
                                    _last_config(tmp_path))
    env_ = policy.make_env()
    obs, _ = env_.reset(seed=0)
    actions = [int(policy.act(obs[None])[0])]
    for _ in range(20):
        obs, *_ = env_.step(actions[-1])
        actions.append(int(policy.act(obs[None])[0]))
    assert done.stdout.strip() == str(actions)


def _last_config(run_dir: Path):
    from omegaconf import OmegaConf

    return OmegaConf.load(run_dir / "config.yaml")


def test_checkpoint_holds_no_pickled_objects(tmp_path):
    run(config("pipeline.total_timesteps=512", "pipeline.eval_every=0"), tmp_path)
    state = _last_state(tmp_path)["rl"]
    assert isinstance(state["collector"]["envs"], list)
