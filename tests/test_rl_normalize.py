"""Observation/reward normalisation: the running statistics against a direct computation,
frozen during evaluation, and restored exactly by a resume (MuJoCo, short)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_rl import _last_state, agent_for, config

from pipelines.harness.errors import ConfigError
from pipelines.rl import envs as rl_envs
from pipelines.rl.evaluate import evaluate
from pipelines.rl.normalize import EPSILON, Normalizer
from pipelines.rl.policy import EnvSpec, Policy
from pipelines.train import run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_observation_statistics_are_the_moments_of_every_observation_seen():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(4, 5)) for _ in range(30)]
    norm = Normalizer((5,), 4, 0.99, obs=True, reward=False, clip_obs=10.0)
    for batch in batches:
        norm.update_obs(batch)
    seen = np.concatenate(batches)
    count = len(seen) + 1e-4  # RunningMeanStd starts from (mean 0, var 1, count 1e-4)
    mean = seen.sum(0) / count
    var = (1e-4 * (1 + mean ** 2) + ((seen - mean) ** 2).sum(0)) / count
    np.testing.assert_allclose(norm.obs_rms.mean, mean, rtol=1e-10)
    np.testing.assert_allclose(norm.obs_rms.var, var, rtol=1e-8)
    x = rng.normal(size=(2, 5)) * 100
    np.testing.assert_allclose(norm.obs(x), np.clip((x - mean) / np.sqrt(var + EPSILON), -10, 10))
    assert (np.abs(norm.obs(x)) <= 10).all() and (np.abs(norm.obs(x)) == 10).any()


def test_rewards_are_scaled_by_the_std_of_the_discounted_return():
    """SB3 VecNormalize: R <- gamma R + r per env, zeroed at episode ends; r / std(R)."""
    gamma, rewards = 0.9, np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 4.0], [2.0, 2.0]])
    dones = np.array([[False, False], [True, False], [False, False], [False, True]])
    norm = Normalizer((1,), 2, gamma, obs=False, reward=True, clip_reward=10.0)
    returns, seen = np.zeros(2), []
    for r, d in zip(rewards, dones):
        scaled = norm.reward(r, d)
        returns = gamma * returns + r
        seen.extend(returns)
        returns[d] = 0.0
    seen = np.array(seen)
    count = len(seen) + 1e-4
    mean = seen.sum() / count
    var = (1e-4 * (1 + mean ** 2) + ((seen - mean) ** 2).sum()) / count
    assert norm.return_rms.var == pytest.approx(var, rel=1e-10)
    np.testing.assert_allclose(scaled, np.clip(rewards[-1] / np.sqrt(var + EPSILON), -10, 10))
    assert norm.returns.tolist() == [returns[0], 0.0]  # env 1's episode just ended


def test_evaluation_uses_the_training_statistics_frozen():
    """Evaluation normalises with the statistics the policy trained under and leaves them
    as they were; different statistics give the policy different inputs."""
    agent = agent_for("Pendulum-v1")
    norm = Normalizer((3,), 2, 0.99, obs=True, reward=True)
    norm.update_obs(np.random.default_rng(0).normal(0.5, 0.3, size=(64, 3)))
    before = norm.state_dict()
    policy = Policy(agent, norm, EnvSpec("Pendulum-v1", {}, []),
                    rl_envs.spaces("Pendulum-v1", {})[1])
    first = evaluate(policy, 2, seed=3)
    after = norm.state_dict()
    for key in ("obs_rms", "return_rms"):
        for name in ("mean", "var"):
            assert torch.equal(before[key][name], after[key][name])
        assert before[key]["count"] == after[key]["count"]
    assert np.array_equal(first, evaluate(policy, 2, seed=3))
    raw = Policy(agent, Normalizer((3,), 2, 0.99, obs=False, reward=False), policy.env,
                 policy.action_space)
    assert not np.array_equal(first, evaluate(raw, 2, seed=3))


def test_mujoco_trains_with_normalisation_and_resumes_exactly(tmp_path):
    """A few thousand HalfCheetah steps with obs and reward normalisation (the
    ppo_continuous preset, small): 4 updates straight equal 2 + checkpoint + resume for 2.
    The statistics, the MuJoCo state and everything else come back bit for bit."""
    common = ("algo=ppo_continuous", "env.id=HalfCheetah-v4", "algo.n_steps=512",
              "algo.update_epochs=2", "pipeline.total_timesteps=2048",
              "pipeline.steps_per_epoch=512", "pipeline.eval_every=2",
              "pipeline.eval_episodes=1", "pipeline.pg_grad_every=0")
    straight = run(config(*common), tmp_path / "straight")
    run(config(*common, "trainer.max_epochs=1"), tmp_path / "first")
    first = _last_state(tmp_path / "first")["rl"]
    assert first["updates_done"] == 2 and first["collector"]["envs"] is not None
    resumed = run(config(*common, f"resume={tmp_path / 'first'}"), tmp_path / "resumed")
    assert resumed == straight
    a, b = (_last_state(tmp_path / r) for r in ("straight", "resumed"))
    for key, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][key]), key
    norm_a, norm_b = a["rl"]["collector"]["normalizer"], b["rl"]["collector"]["normalizer"]
    assert torch.equal(norm_a["returns"], norm_b["returns"])
    for key in ("obs_rms", "return_rms"):
        assert torch.equal(norm_a[key]["mean"], norm_b[key]["mean"])
        assert torch.equal(norm_a[key]["var"], norm_b[key]["var"])
        assert norm_a[key]["count"] == norm_b[key]["count"]
    assert norm_a["obs_rms"]["count"] == pytest.approx(1 + 2048 + 1e-4)  # reset + every step
    assert norm_a["return_rms"]["count"] == pytest.approx(2048 + 1e-4)
    history_a, history_b = a["rl"]["history"], b["rl"]["history"]
    for key in history_a.keys() - {"charts/SPS"}:
        torch.testing.assert_close(history_a[key], history_b[key], rtol=0, atol=0,
                                   equal_nan=True)


def test_resume_refuses_a_different_normalisation(tmp_path):
    """The harness refuses a changed env config; accepted anyway, the statistics still
    cannot be loaded into a normaliser that normalises something else."""
    common = ("pipeline.total_timesteps=512", "pipeline.steps_per_epoch=256",
              "pipeline.eval_every=0", "pipeline.pg_grad_every=0")
    run(config(*common, "trainer.max_epochs=1"), tmp_path / "first")
    resume = f"resume={tmp_path / 'first'}"
    with pytest.raises(ConfigError, match="env.normalize_obs"):
        run(config(*common, "env.normalize_obs=true", resume), tmp_path / "resumed")
    with pytest.raises(ConfigError) as error:
        run(config(*common, "env.normalize_obs=true", resume,
                   "resume_accept_changes=[env.normalize_obs]"), tmp_path / "accepted")
    assert error.value.key == "env.normalize_obs"
