"""REINFORCE (Williams 1992), with or without a learned value baseline.

Per update: every env plays from a fresh reset; the episodes that start before the last
env finishes its first one are kept whole, later ones dropped (their steps still count as
env steps): kept or dropped is decided when an episode starts, so short episodes are not
favoured (``Collector.episodes_per_env``). The policy follows the Monte Carlo return G_t,
minus V(s_t) with a baseline, in one gradient step on the whole batch; the baseline
regresses on G_t. A time-limit truncation is bootstrapped with V(final_obs) when there is a
baseline and treated as the end of the return without one. Updates vary in size, so no lr
schedule applies (there is no known number of updates to anneal over).
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
class ReinforceConfig:
    baseline: bool = True         # learn V(s) and subtract it from the return
    gamma: float = 0.99
    norm_adv: bool = True         # over the batch
    vf_coef: float = 0.5
    hidden: tuple[int, ...] = (64, 64)


def collect(collector: Collector, agent: Agent, hp: ReinforceConfig, generator) -> Rollout:
    return collector.episodes_per_env(agent, generator)


def prepare(agent: Agent, rollout: Rollout, hp: ReinforceConfig) -> Batch:
    """GAE with lambda=1 is the Monte Carlo return minus V(s) (V=0 without a baseline)."""
    return flatten(rollout, gae(rollout, hp.gamma, 1.0))


def update(agent: Agent, batch: Batch, hp: ReinforceConfig,
           step: Callable[[torch.Tensor], None], progress: float,
           generator: torch.Generator, all_mean=None) -> dict[str, float]:
    logprob, entropy, value = agent.evaluate(batch.obs, batch.actions)

    advantages = batch.advantages
    if hp.norm_adv and len(batch) > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

    policy_loss = -(advantages * logprob).mean()
    metrics = {"losses/policy_loss": policy_loss.item(),
               "losses/entropy": entropy.mean().item()}
    if hp.baseline:
        value_loss = F.mse_loss(value, batch.returns)
        step(policy_loss + hp.vf_coef * value_loss)
        metrics["losses/value_loss"] = value_loss.item()
        metrics["losses/explained_variance"] = explained_variance(batch.values, batch.returns)
    else:
        step(policy_loss)
    return metrics
