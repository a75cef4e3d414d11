"""PPO's details (clipped value loss, target_kl, both KL estimates), the RL optimizer defaults
(Adam eps 1e-5, SB3's RMSprop for A2C), and DDP ranks that sample different envs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import types
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_rl import _last_state, agent_for, config

import optim
from data.rollouts import Batch
from pipelines.harness.validation import validate_common
from pipelines.rl import ppo
from pipelines.rl.module import RLModule
from pipelines.rl.pipeline import RLPipeline
from pipelines.train import run

pytestmark = pytest.mark.usefixtures("one_thread")


def batch_for(agent, n: int = 32, offset: float = 0.0) -> Batch:
    """Samples of the agent's own policy; ``offset`` shifts the stored log-probabilities."""
    torch.manual_seed(3)
    obs = torch.randn(n, 4)
    with torch.no_grad():
        actions = agent.dist(obs).sample()
        logprobs = agent.logprob(agent.dist(obs), actions) - offset
        values = agent.value(obs)
    return Batch(obs=obs, actions=actions, logprobs=logprobs, values=values,
                 advantages=torch.randn(n), returns=values + 2 * torch.randn(n))


HP = ppo.PPOConfig(update_epochs=1, minibatch_size=32, norm_adv=False, anneal_clip=False,
                   ent_coef=0.01, vf_coef=0.5)


def test_clipped_value_loss_is_cleanrls():
    agent = agent_for("CartPole-v1")
    batch = batch_for(agent)
    with torch.no_grad():  # move the critic so that some values leave the clip range
        agent.critic[-1].bias += 0.5
    losses = []
    metrics = ppo.update(agent, batch, replace(HP, clip_vloss=True), losses.append, 0.0,
                         torch.Generator().manual_seed(0))
    logprob, entropy, value = agent.evaluate(batch.obs, batch.actions)
    ratio = (logprob - batch.logprobs).exp()
    policy = -torch.min(batch.advantages * ratio,
                        batch.advantages * ratio.clamp(0.8, 1.2)).mean()
    clipped = batch.values + (value - batch.values).clamp(-0.2, 0.2)
    value_loss = torch.max((value - batch.returns) ** 2, (clipped - batch.returns) ** 2).mean()
    assert value_loss > F.mse_loss(value, batch.returns)  # the clip matters here
    expected = policy + 0.5 * value_loss - 0.01 * entropy.mean()
    assert losses[0].item() == pytest.approx(expected.item(), rel=1e-6)
    assert metrics["losses/value_loss"] == pytest.approx(value_loss.item(), rel=1e-6)
    plain = []
    ppo.update(agent, batch, HP, plain.append, 0.0, torch.Generator().manual_seed(0))
    assert plain[0].item() == pytest.approx(
        (policy + 0.5 * F.mse_loss(value, batch.returns) - 0.01 * entropy.mean()).item(),
        rel=1e-6)


def test_both_kl_estimates():
    """With stored log-probabilities offset by c, log(ratio) = c everywhere: CleanRL's
    old_approx_kl = -c and approx_kl = (e^c - 1) - c."""
    agent = agent_for("CartPole-v1")
    c = 0.1
    metrics = ppo.update(agent, batch_for(agent, offset=c), HP, lambda loss: None, 0.0,
                         torch.Generator().manual_seed(0))
    assert metrics["losses/old_approx_kl"] == pytest.approx(-c, rel=1e-5)
    assert metrics["losses/approx_kl"] == pytest.approx(math.exp(c) - 1 - c, rel=1e-4)
    assert metrics["losses/clipfrac"] == 0.0  # e^0.1 is inside [0.8, 1.2]


def test_target_kl_stops_the_epochs():
    agent = agent_for("CartPole-v1")
    opt = optim.create("adam", agent.parameters(), lr=0.05)
    steps = []

    def step(loss):
        steps.append(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    hp = replace(HP, update_epochs=5, minibatch_size=8)
    stopped = ppo.update(agent, batch_for(agent), replace(hp, target_kl=1e-9), step, 0.0,
                         torch.Generator().manual_seed(0))
    assert stopped["charts/update_epochs"] == 1 and len(steps) == 4
    steps.clear()
    full = ppo.update(agent, batch_for(agent), hp, step, 0.0, torch.Generator().manual_seed(0))
    assert full["charts/update_epochs"] == 5 and len(steps) == 20


def test_rl_optimizer_defaults():
    """A plain `pipeline=rl` run gets Adam with eps 1e-5; other optimizers keep their own
    keys (sgd has no eps); other pipelines keep 1e-8; algo=a2c_sb3 is SB3's RMSprop."""
    assert config().optim.eps == 1e-5 and config().optim.name == "adam"
    assert config("optim.eps=1e-8").optim.eps == 1e-8
    sgd = config("optim=sgd")
    assert "eps" not in sgd.optim
    validate_common(sgd, RLPipeline())
    a2c = config("algo=a2c_sb3")
    assert (a2c.algo.name, a2c.algo.n_steps, a2c.algo.gae_lambda) == ("a2c", 5, 1.0)
    assert (a2c.optim.name, a2c.optim.lr, a2c.optim.alpha, a2c.optim.eps) == \
        ("rmsprop", 7e-4, 0.99, 1e-5)
    RLPipeline().validate(a2c)
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from pipelines.train import CONFIGS

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        assert compose(config_name="train", overrides=["pipeline=gnn"]).optim.eps == 1e-8


def test_sb3_rmsprop_is_torchs():
    """algo=a2c_sb3's optimizer steps as torch.optim.RMSprop(alpha=0.99, eps=1e-5) does."""
    torch.manual_seed(0)
    a = torch.randn(5, requires_grad=True)
    b = a.detach().clone().requires_grad_(True)
    ours = optim.create("rmsprop", [a], lr=7e-4, alpha=0.99, eps=1e-5)
    theirs = torch.optim.RMSprop([b], lr=7e-4, alpha=0.99, eps=1e-5)
    for _ in range(5):
        g = torch.randn(5)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
    assert torch.equal(a, b)


def test_ddp_ranks_use_distinct_env_seeds():
    """Rank r seeds its envs and its action sampling with seed + r * num_envs, and counts
    every rank's env steps (the budget and all step counts are global)."""
    cfg = config("pipeline.total_timesteps=2048")
    modules = []
    for rank in (0, 1):
        module = RLModule(cfg)
        module._trainer = types.SimpleNamespace(global_rank=rank, world_size=2)
        module.setup("fit")
        modules.append(module)
    first, second = (m.collector for m in modules)
    assert (first.seed, second.seed) == (0, 8) and first.step_scale == 2
    assert not (first.obs == second.obs).all()
    assert modules[0].num_updates == 4  # 2048 / (2 ranks * 8 envs * 32 steps)
    for m in modules:
        m.collector.envs.close()


def test_ddp_run_through_the_command(tmp_path):
    """`adamlab train pipeline=rl trainer=ddp trainer.devices=2` on CPU (gloo): the ranks'
    gradients are averaged (Lightning's DDP), the budget is global: 2048 env steps in 4
    updates of 2 x 256 samples."""
    cmd = [str(Path(sys.executable).parent / "adamlab"), "train", "pipeline=rl", "trainer=ddp",
           "trainer.devices=2", "trainer.accelerator=cpu", "logger=csv",
           "trainer.enable_progress_bar=false", "pipeline.total_timesteps=2048",
           "pipeline.eval_every=0", "pipeline.eval_episodes=2", f"hydra.run.dir={tmp_path}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "summary.json").read_text())["metrics"]
    assert metrics["env_steps"] == 2048 and metrics["updates"] == 4
    assert metrics["eval_return"] is not None


def test_ppo_continuous_preset_is_cleanrls():
    cfg = config("algo=ppo_continuous", "env.id=HalfCheetah-v4")
    algo = cfg.algo
    assert (algo.n_steps, algo.minibatch_size, algo.update_epochs, algo.gamma,
            algo.gae_lambda, algo.clip_coef, algo.clip_vloss, algo.anneal_lr,
            algo.anneal_clip, algo.max_grad_norm) == (2048, 64, 10, 0.99, 0.95, 0.2, True,
                                                      True, False, 0.5)
    assert algo.vf_coef == 0.25  # CleanRL: vf_coef 0.5 on 0.5 * MSE
    assert (cfg.env.num_envs, cfg.env.normalize_obs, cfg.env.normalize_reward) == (1, True, True)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.eps) == ("adam", 3e-4, 1e-5)
    assert cfg.pipeline.total_timesteps == 1_000_000 and cfg.clip.max_norm == 0.5
    for env_id in ("HalfCheetah-v4", "Hopper-v4", "LunarLanderContinuous-v3",
                   "BipedalWalker-v3"):
        RLPipeline().validate(config("algo=ppo_continuous", f"env.id={env_id}"))



def test_box2d_continuous_envs_train_through_the_same_path(tmp_path):
    metrics = run(config("algo=ppo_continuous", "env.id=LunarLanderContinuous-v3",
                         "algo.n_steps=256", "algo.update_epochs=1",
                         "pipeline.total_timesteps=512", "pipeline.eval_every=0",
                         "pipeline.eval_episodes=1", "pipeline.pg_grad_every=0"), tmp_path)
    assert metrics["env_steps"] == 512 and metrics["updates"] == 2
    assert _last_state(tmp_path)["rl"]["collector"]["envs"] is None  # Box2D: restarts


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_agent_fast_path_is_torch_distributions_bit_for_bit(env_id):
    """act/evaluate/greedy skip torch.distributions for speed; they must still give Normal's
    and Categorical's numbers exactly, gradients included."""
    agent = agent_for(env_id)
    obs = torch.randn(64, agent.actor[0].in_features, generator=torch.Generator().manual_seed(1))
    dist = agent.dist(obs)
    generator = torch.Generator().manual_seed(2)
    action, logprob, value = agent.act(obs, generator)
    reference = torch.Generator().manual_seed(2)
    if agent.continuous:
        expected = dist.mean + dist.stddev * torch.randn(dist.mean.shape, generator=reference)
    else:
        expected = torch.multinomial(dist.probs, 1, generator=reference).squeeze(-1)
    assert torch.equal(action, expected)
    assert torch.equal(logprob, agent.logprob(dist, action))
    assert torch.equal(value, agent.critic(obs).squeeze(-1))
    assert torch.equal(agent.greedy(obs), dist.mean if agent.continuous else dist.probs.argmax(-1))

    grads, outputs = [], []
    for fast in (True, False):
        agent.zero_grad()
        if fast:
            logp, entropy, v = agent.evaluate(obs, action)
        else:
            d = agent.dist(obs)
            logp, entropy, v = agent.logprob(d, action), agent.entropy(d), agent.critic(obs)[:, 0]
        (logp.mean() - 0.1 * entropy.mean() + v.square().mean()).backward()
        grads.append([p.grad.clone() for p in agent.parameters()])
        outputs.append((logp, entropy, v))
    assert all(torch.equal(a, b) for a, b in zip(*outputs, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))
