"""A2C: synchronous advantage actor-critic (Mnih et al. 2016, the A2C variant).

Per update: a short rollout of ``n_steps`` x num_envs transitions, n-step returns
(``gae_lambda=1``) or GAE, and a single gradient step on the whole batch of the policy
loss, the value loss and the entropy bonus. Defaults are stable-baselines3's A2C;
``algo=a2c_sb3`` adds its optimizer too (RMSprop, lr 7e-4, alpha 0.99, eps 1e-5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from data.rollouts import Batch, Rollout, flatten, gae
from pipelines.rl.agent import Agent
from pipelines.rl.collector import Collector
from pipelines.rl.diagnostics import explained_variance


@dataclass
class A2CConfig:
    n_steps: int = 5              # transitions per env per update
    gamma: float = 0.99
    gae_lambda: float = 1.0       # 1: plain n-step returns
    anneal_lr: bool = False       # lr -> 0 linearly (optim.schedules.linear), per update
    norm_adv: bool = False        # over the batch
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    hidden: tuple[int, ...] = (64, 64)


def collect(collector: Collector, agent: Agent, hp: A2CConfig, generator) -> Rollout:
    return collector.steps(agent, hp.n_steps, generator)


def prepare(agent: Agent, rollout: Rollout, hp: A2CConfig) -> Batch:
    return flatten(rollout, gae(rollout, hp.gamma, hp.gae_lambda))


def update(agent: Agent, batch: Batch, hp: A2CConfig, step: Callable[[torch.Tensor], None],
           progress: float, generator: torch.Generator, all_mean=None) -> dict[str, float]:
    logprob, entropy, value = agent.evaluate(batch.obs, batch.actions)

    advantages = batch.advantages
    if hp.norm_adv and len(batch) > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

    policy_loss = -(advantages * logprob).mean()
    value_loss = F.mse_loss(value, batch.returns)
    entropy = entropy.mean()
    step(policy_loss + hp.vf_coef * value_loss - hp.ent_coef * entropy)

    return {"losses/policy_loss": policy_loss.item(), "losses/value_loss": value_loss.item(),
            "losses/entropy": entropy.item(),
            "losses/explained_variance": explained_variance(batch.values, batch.returns)}
