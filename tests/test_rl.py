"""RL pipeline: envs and autoreset, GAE, diagnostics, validation, reproducibility, resume,
and a short learning check that a broken PPO fails. Fast (CPU, about a minute in all)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from data.rollouts import Batch, Rollout, gae
from pipelines.harness.errors import ConfigError
from pipelines.rl import envs as rl_envs
from pipelines.rl.agent import Agent
from pipelines.rl.collector import Collector
from pipelines.rl.diagnostics import pg_gradient_stats
from pipelines.rl.pipeline import RLPipeline
from pipelines.train import CONFIGS, run

QUIET = ["logger=csv", "trainer.enable_progress_bar=false"]


pytestmark = pytest.mark.usefixtures("one_thread")


def config(*overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name="train", overrides=["pipeline=rl", *QUIET, *overrides])


def agent_for(env_id: str, **kwargs) -> Agent:
    obs_space, action_space, _ = rl_envs.spaces(env_id, {})
    torch.manual_seed(0)
    return Agent(obs_space, action_space, **kwargs)


# ---- envs, collection, autoreset ------------------------------------------------------------
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1", "Pendulum-v1",
                                    "LunarLander-v3"])
def test_envs_build_and_collect(env_id):
    envs = rl_envs.make(env_id, 3)
    agent = agent_for(env_id)
    collector = Collector(envs, gamma=0.99, seed=0)
    rollout = collector.steps(agent, 16, torch.Generator().manual_seed(0))
    assert rollout.rewards.shape == rollout.dones.shape == (16, 3)
    assert rollout.obs.shape[:2] == (16, 3) and rollout.last_value.shape == (3,)
    assert rollout.actions.shape[:2] == (16, 3)
    assert collector.env_steps == 48 and rollout.valid.all()
    envs.close()


def test_same_step_autoreset_keeps_every_transition():
    """CartPole pays 1 per step: with SAME_STEP autoreset every recorded episode's return is
    its length and the step counts add up (no reset-steps slipped into the rollout)."""
    envs = rl_envs.make("CartPole-v1", 4)
    collector = Collector(envs, gamma=0.99, seed=0)
    rollout = collector.steps(agent_for("CartPole-v1"), 200, torch.Generator().manual_seed(0))
    assert len(collector.episodes) > 10
    assert all(ret == length for _, ret, length in collector.episodes)
    finished = int(rollout.dones.sum())
    assert finished == len(collector.episodes)
    in_flight = int(collector.running_length.sum())
    assert sum(length for *_, length in collector.episodes) + in_flight == 800
    assert torch.equal(rollout.rewards, torch.ones(200, 4))  # no truncation in 200 steps


def test_truncation_is_bootstrapped_with_final_observation_value():
    """Pendulum ends only by its 200-step limit: the learning reward at the truncated step is
    r + gamma * V(final_obs), and the final obs is the true last one, not the reset obs."""
    agent = agent_for("Pendulum-v1")
    seen = []

    def value(obs):
        seen.append(obs.clone())
        return obs[:, 0] * 0 + 10.0  # V = 10 everywhere
    agent.value = value
    envs = rl_envs.make("Pendulum-v1", 2)
    collector = Collector(envs, gamma=0.9, seed=0)
    rollout = collector.steps(agent, 201, torch.Generator().manual_seed(0))
    assert rollout.dones[199].tolist() == [1.0, 1.0] and rollout.dones[:199].sum() == 0
    raw = [ret for _, ret, _ in collector.episodes]
    assert rollout.rewards[:200].sum(0).tolist() == pytest.approx(
        [r + 0.9 * 10.0 for r in raw], rel=1e-5)
    final_obs = seen[-3]  # calls: ..., act(obs_199), final_obs, act(obs_200), last value
    assert final_obs.shape == (2, 3) and not torch.allclose(final_obs, rollout.obs[200])


def test_reinforce_collects_whole_episodes_and_masks_tails():
    envs = rl_envs.make("CartPole-v1", 4)
    collector = Collector(envs, gamma=0.99, seed=0)
    rollout = collector.episodes_per_env(agent_for("CartPole-v1"), torch.Generator())
    valid = rollout.valid.bool()
    for n in range(4):  # each env: a prefix of whole episodes (the later ones dropped)
        kept = int(valid[:, n].sum())
        assert kept > 0 and valid[:kept, n].all() and rollout.dones[kept - 1, n] == 1
    assert int(valid.sum()) <= sum(length for *_, length in collector.episodes)


def test_gae_matches_a_direct_computation():
    torch.manual_seed(0)
    T, N, gamma, lam = 7, 3, 0.9, 0.8
    rollout = Rollout(obs=torch.zeros(T, N, 1), actions=torch.zeros(T, N),
                      logprobs=torch.zeros(T, N), values=torch.randn(T, N),
                      rewards=torch.randn(T, N),
                      dones=(torch.rand(T, N) < 0.3).float(), valid=torch.ones(T, N),
                      last_value=torch.randn(N))
    expected = torch.zeros(T, N)
    for n in range(N):
        for t in range(T):
            total, discount = 0.0, 1.0
            for k in range(t, T):
                next_v = rollout.last_value[n] if k == T - 1 else rollout.values[k + 1, n]
                delta = (rollout.rewards[k, n] + gamma * next_v * (1 - rollout.dones[k, n])
                         - rollout.values[k, n])
                total += discount * delta
                if rollout.dones[k, n]:
                    break
                discount *= gamma * lam
            expected[t, n] = total
    assert torch.allclose(gae(rollout, gamma, lam), expected, atol=1e-5)


def test_pg_gradient_stats_equal_per_sample_statistics():
    """With one sample per minibatch the statistics no longer depend on the shuffle: the
    variance is the mean squared deviation of per-sample gradients, the cosine their mean
    cosine to the full-batch gradient."""
    agent = agent_for("CartPole-v1")
    torch.manual_seed(1)
    obs, actions, adv = torch.randn(12, 4), torch.randint(0, 2, (12,)), torch.randn(12)
    batch = Batch(obs=obs, actions=actions, logprobs=torch.zeros(12), values=torch.zeros(12),
                  advantages=adv, returns=torch.zeros(12))
    stats = pg_gradient_stats(agent, batch, 12, torch.Generator().manual_seed(0))
    norm_adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    params = agent.policy_parameters()

    def grad(i):
        loss = -(norm_adv[i] * agent.logprob(agent.dist(obs[i]), actions[i])).mean()
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])
    per_sample = torch.stack([grad(torch.tensor([i])) for i in range(12)])
    full = per_sample.mean(0)
    assert stats["pg_minibatch_grad_variance"] == pytest.approx(
        float((per_sample - full).pow(2).sum(1).mean()), rel=1e-4)
    assert stats["pg_minibatch_grad_cosine"] == pytest.approx(
        float(torch.nn.functional.cosine_similarity(per_sample, full[None]).mean()), rel=1e-4)
    assert stats["pg_grad_norm"] == pytest.approx(float(full.norm()), rel=1e-4)
    assert all(p.grad is None for p in params)


# ---- validation --------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, key", [
    (["env.id=CartPol-v1"], "env.id"),
    (["env.id=FrozenLake-v1"], "env.id"),                      # Discrete observations
    (["env.num_envs=0"], "env.num_envs"),
    (["env.vector=threads"], "env.vector"),
    (["algo.n_steps=0"], "algo.n_steps"),
    (["algo.minibatch_size=512"], "algo.minibatch_size"),       # > 8 envs * 32 steps
    (["algo.gamma=1.5"], "algo.gamma"),
    (["+algo.lr=0.1"], "algo.lr"),                              # lr lives in optim
    (["pipeline.total_timesteps=100"], "pipeline.total_timesteps"),
    (["pipeline.pg_grad_minibatches=1"], "pipeline.pg_grad_minibatches"),
    (["schedule=warmup_cosine"], "schedule.name"),              # and anneal_lr=true
    (["algo=reinforce", "schedule=linear"], "schedule.name"),
    (["+env.kwargs.bogus=1"], "env.kwargs"),
    (["env.id=CarRacing-v3"], "env.id"),                        # image observations
    (["env.id=Blackjack-v1"], "env.id"),                        # Tuple observations
    (["env.wrappers=[{_target_: os.system}]"], "env.wrappers[0]"),  # not a gymnasium wrapper
    (["env.wrappers=[{_target_: gymnasium.wrappers.ClipReward, bogus: 1}]"],
     "env.wrappers[0]"),
    (["env.normalize_obs=1"], "env.normalize_obs"),
    (["env.clip_reward=0"], "env.clip_reward"),
    (["algo.target_kl=0"], "algo.target_kl"),
    (["algo.clip_vloss=yes"], "algo.clip_vloss"),
    (["pipeline.video=avi"], "pipeline.video"),
])
def test_bad_config_is_refused_before_training(overrides, key):
    with pytest.raises(ConfigError) as error:
        RLPipeline().validate(config(*overrides))
    assert error.value.key == key


def test_unknown_env_id_says_how_to_list_ids():
    with pytest.raises(ConfigError, match=r"sorted\(gymnasium.envs.registry\)"):
        RLPipeline().validate(config("env.id=NoSuchEnv-v0"))


def test_unrepresentable_observations_name_what_to_choose():
    with pytest.raises(ConfigError, match=r"images \(96, 96, 3\).*state-based env"):
        RLPipeline().validate(config("env.id=CarRacing-v3"))
    with pytest.raises(ConfigError, match="Tuple.*FlattenObservation"):
        RLPipeline().validate(config("env.id=Blackjack-v1"))
    # the named wrapper makes the same env acceptable (Tuple of Discrete -> one-hot vector)
    flatten = "env.wrappers=[{_target_: gymnasium.wrappers.FlattenObservation}]"
    RLPipeline().validate(config("env.id=Blackjack-v1", flatten))


def test_dict_observations_and_missing_packages_are_config_errors():
    """An env with Dict observations, and one whose package is not installed (gymnasium's
    DependencyNotInstalled, as MuJoCo without `mujoco` raises), are refused naming env.id."""
    import gymnasium as gym

    class DictObs(gym.Env):
        observation_space = gym.spaces.Dict({"x": gym.spaces.Box(-1, 1, (2,))})
        action_space = gym.spaces.Discrete(2)

    def needs_package(**kwargs):
        raise gym.error.DependencyNotInstalled('foo is not installed, run `pip install foo`')

    gym.register("adamlab-test/DictObs-v0", entry_point=DictObs, max_episode_steps=10)
    gym.register("adamlab-test/NeedsPackage-v0", entry_point=needs_package)
    try:
        with pytest.raises(ConfigError, match="Dict.*FlattenObservation") as error:
            RLPipeline().validate(config("env.id=adamlab-test/DictObs-v0"))
        assert error.value.key == "env.id"
        with pytest.raises(ConfigError, match="pip install foo") as error:
            RLPipeline().validate(config("env.id=adamlab-test/NeedsPackage-v0"))
        assert error.value.key == "env.id"
    finally:
        for env_id in ("adamlab-test/DictObs-v0", "adamlab-test/NeedsPackage-v0"):
            gym.registry.pop(env_id)


def test_env_wrappers_apply_to_every_sub_env():
    cfg = config("env.wrappers=[{_target_: gymnasium.wrappers.TransformReward, "
                 "func: {_target_: operator.neg, _partial_: true}}]")
    envs = rl_envs.make(cfg.env.id, 3, specs=rl_envs.wrapper_specs(cfg.env))
    envs.reset(seed=0)
    _, reward, *_ = envs.step(np.zeros(3, dtype=np.int64))
    assert reward.tolist() == [-1.0, -1.0, -1.0]  # CartPole pays +1, negated by the wrapper
    envs.close()


def test_every_algorithm_validates_on_discrete_and_continuous_actions():
    for algo in ("ppo", "a2c", "reinforce"):
        for env_id in ("CartPole-v1", "Pendulum-v1"):
            extra = ["algo.minibatch_size=64"] if algo == "ppo" else []
            RLPipeline().validate(config(f"algo={algo}", f"env.id={env_id}", *extra))


# ---- through the harness ----------------------------------------------------------------------
def _last_state(run_dir: Path) -> dict:
    """Checkpoints hold tensors and plain values only: they load with weights_only=True."""
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


def test_same_seed_same_return_curve(tmp_path):
    common = ("pipeline.total_timesteps=2048", "pipeline.eval_every=2")
    a = run(config(*common), tmp_path / "a")
    b = run(config(*common), tmp_path / "b")
    c = run(config(*common, "seed=1"), tmp_path / "c")
    assert a == b and a != c
    curve = [_last_state(tmp_path / r)["rl"]["collector"]["episodes"] for r in "ab"]
    assert torch.equal(curve[0], curve[1]) and len(curve[0]) > 20


@pytest.mark.parametrize("algo, env_id, extra", [
    ("ppo", "CartPole-v1", []),
    ("a2c", "Pendulum-v1", ["env.num_envs=4"]),
])
def test_resume_continues_exactly(tmp_path, algo, env_id, extra):
    """4 updates straight equal 2 updates + checkpoint + resume for 2 more: policy,
    optimizer, schedule, sampling RNG, env state and counters all come back."""
    n_steps = {"ppo": 32, "a2c": 5}[algo]
    num_envs = 4 if extra else 8
    common = (f"algo={algo}", f"env.id={env_id}", *extra,
              f"pipeline.steps_per_epoch={n_steps * num_envs}",  # epochs of 2 updates
              f"pipeline.total_timesteps={4 * n_steps * num_envs}", "pipeline.eval_every=1",
              "algo.anneal_lr=true")
    straight = run(config(*common), tmp_path / "straight")
    run(config(*common, "trainer.max_epochs=1"), tmp_path / "first")
    assert _last_state(tmp_path / "first")["rl"]["updates_done"] == 2
    resumed = run(config(*common, f"resume={tmp_path / 'first'}"), tmp_path / "resumed")
    assert resumed == straight
    a, b = (_last_state(tmp_path / r) for r in ("straight", "resumed"))
    for key, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][key]), key
    history = a["rl"]["history"]
    assert len(history["charts/updates"]) == 4
    assert history.keys() == b["rl"]["history"].keys()
    for key in history.keys() - {"charts/SPS"}:
        torch.testing.assert_close(history[key], b["rl"]["history"][key], rtol=0, atol=0,
                                   equal_nan=True)
    assert torch.equal(a["rl"]["collector"]["episodes"], b["rl"]["collector"]["episodes"])


class CopyCheckpointAt(L.Callback):
    """Keeps a copy of the last.ckpt the harness wrote at the start of update ``update``,
    between two updates of an epoch (copied one update later: Lightning runs checkpoint
    callbacks after the others)."""

    def __init__(self, run_dir: Path, update: int, to: Path):
        self.path, self.update, self.to = run_dir / "checkpoints" / "last.ckpt", update, to

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if pl_module.updates_done == self.update + 1:
            shutil.copy(self.path, self.to)


def test_resume_mid_epoch_continues_the_epoch_exactly(tmp_path):
    """A checkpoint between two updates of an epoch (checkpoint_every in optimizer steps: one
    PPO update is 20) resumes into the rest of that epoch: same epochs, same result."""
    common = ("pipeline.total_timesteps=1536", "pipeline.steps_per_epoch=768",
              "checkpoint_every=20 steps", "pipeline.eval_every=2")
    copy = tmp_path / "mid.ckpt"
    straight = run(config(*common), tmp_path / "straight",
                   extra_callbacks=[CopyCheckpointAt(tmp_path / "straight", 2, copy)])
    mid = torch.load(copy, weights_only=True)
    assert mid["rl"]["updates_done"] == 2 and mid["epoch"] == 0  # epoch 0 has 4 updates
    resumed = run(config(*common, f"resume={copy}"), tmp_path / "resumed")
    assert resumed == straight
    a, b = (_last_state(tmp_path / r) for r in ("straight", "resumed"))
    assert a["epoch"] == b["epoch"] and a["rl"]["epoch_start"] == b["rl"]["epoch_start"]
    for key, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][key]), key
    rows = []
    for name in ("straight", "resumed"):
        with open(tmp_path / name / "csv" / "metrics.csv", newline="") as f:
            rows.append([{k: v for k, v in r.items() if v != "" and k != "charts/SPS"}
                         for r in csv.DictReader(f)])
    # the resumed run (its own run dir) logs the straight run's rows from update 2 on, once
    assert rows[1] == [r for r in rows[0] if int(r["step"]) >= 512]


def test_resume_with_async_envs_restarts_episodes_but_keeps_counters(tmp_path):
    """AsyncVectorEnv state lives in worker processes: resume starts fresh episodes, and
    keeps the step count, the finished episodes and the update count."""
    common = ("env.vector=async", "env.num_envs=2", "algo.minibatch_size=64",
              "pipeline.steps_per_epoch=64",
              "pipeline.total_timesteps=256")
    run(config(*common, "trainer.max_epochs=1"), tmp_path / "first")
    first = _last_state(tmp_path / "first")["rl"]
    assert first["collector"]["envs"] is None and first["updates_done"] == 2
    metrics = run(config(*common, f"resume={tmp_path / 'first'}"), tmp_path / "resumed")
    resumed = _last_state(tmp_path / "resumed")["rl"]
    assert metrics["env_steps"] == 256 and resumed["updates_done"] == 4
    n_first = len(first["collector"]["episodes"])
    assert torch.equal(resumed["collector"]["episodes"][:n_first], first["collector"]["episodes"])


def test_reinforce_and_async_envs_run(tmp_path):
    for baseline, vector in (("true", "async"), ("false", "sync")):
        metrics = run(config("algo=reinforce", f"algo.baseline={baseline}",
                             "pipeline.total_timesteps=1500", f"env.vector={vector}",
                             "env.num_envs=2"), tmp_path / baseline)
        assert metrics["env_steps"] >= 1500 and metrics["episodes"] > 0


def test_ppo_learns_cartpole_quickly(tmp_path):
    """A short version of the acceptance run: the default PPO reaches a mean return of 150
    (last 20 episodes) within 30k env steps; a learner with a sign error or no updates
    stays near 20."""
    metrics = run(config("pipeline.total_timesteps=30000", "pipeline.threshold=150",
                         "pipeline.eval_every=0", "pipeline.pg_grad_every=10"), tmp_path)
    assert metrics["steps_to_threshold"] is not None and metrics["steps_to_threshold"] <= 30000


def test_adamlab_train_rl_end_to_end(tmp_path):
    """The user's command, on a tiny budget: summary.json, CSV metrics, figures."""
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    cmd = [str(Path(sys.executable).parent / "adamlab"), "train", "pipeline=rl", "algo=ppo",
           "env.id=CartPole-v1", "logger=csv",
           "pipeline.total_timesteps=2560", "pipeline.eval_every=5",
           "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path}"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    metrics = summary["metrics"]
    assert summary["pipeline"] == "rl" and "steps_to_threshold" in metrics
    assert 8 <= metrics["eval_return"] <= 500 and metrics["env_steps"] == 2560
    with open(tmp_path / "csv" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    header = set(rows[0])
    assert {"charts/episodic_return", "charts/episodic_length", "charts/SPS",
            "charts/learning_rate", "losses/policy_loss", "losses/value_loss", "losses/entropy",
            "losses/old_approx_kl", "losses/approx_kl", "losses/clipfrac",
            "losses/explained_variance", "diagnostics/pg_minibatch_grad_variance",
            "diagnostics/pg_minibatch_grad_cosine", "eval/episodic_return", "global_step",
            # optimizer telemetry, although each PPO batch takes many optimizer steps
            "optim/g0/effective_step_p50", "optim/g0/clip_fraction"} <= header
    # one learning-rate entry, and every row (telemetry too) filed under the env steps
    # before its update (256 per update)
    assert not [key for key in header if key.startswith("lr-") or key == "lr"]
    assert {int(r["step"]) for r in rows} == set(range(0, 2560, 256))
    assert all(float(r["global_step"]) == int(r["step"]) for r in rows if r["global_step"])
    for name in ("returns.png", "pg_grad_variance.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_wandb_plots_rl_metrics_against_env_steps(tmp_path, monkeypatch):
    """The offline W&B run defines global_step as the x axis of charts/, losses/, eval/,
    diagnostics/ and optimizer metrics, and every RL row carries it (= the CSV's step)."""
    from wandb_records import history, records

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = config("pipeline.total_timesteps=768", "pipeline.eval_every=0",
                 "logger=default", "logger.wandb.name=axis")
    run(cfg, tmp_path)
    (wandb_run,) = (tmp_path / "wandb").glob("offline-run-*")
    (log,) = wandb_run.glob("run-*.wandb")
    metrics = {(r.metric.glob_name or r.metric.name): r.metric.step_metric
               for r in records(log) if r.WhichOneof("record_type") == "metric"}
    for prefix in ("charts", "losses", "eval", "diagnostics", "optim"):
        assert metrics[f"{prefix}/*"] == "global_step"
    rows = [r for r in history(wandb_run) if "charts/SPS" in r]
    assert [r["global_step"] for r in rows] == [0, 256, 512]
    assert [r["trainer/global_step"] for r in rows] == [0, 256, 512]
