"""PPO with the clipped surrogate objective (Schulman et al. 2017).

Per update: a rollout of ``n_steps`` x num_envs transitions, GAE advantages, then
``update_epochs`` passes over shuffled minibatches of the clipped policy loss, the value
loss and the entropy bonus. The learning rate (via ``optim.schedules.linear``) and the clip
range anneal linearly to zero when asked. Defaults are rl-baselines3-zoo's CartPole-v1.
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
class PPOConfig:
    n_steps: int = 32             # transitions per env per update
    gamma: float = 0.98
    gae_lambda: float = 0.8
    update_epochs: int = 20
    minibatch_size: int = 256     # zoo's batch_size; 8 envs x 32 steps = one full batch
    clip_coef: float = 0.2
    anneal_clip: bool = True      # clip range -> 0 linearly over the run
    anneal_lr: bool = True        # lr -> 0 linearly (optim.schedules.linear), per update
    norm_adv: bool = True         # per minibatch
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    hidden: tuple[int, ...] = (64, 64)


def collect(collector: Collector, agent: Agent, hp: PPOConfig, generator) -> Rollout:
    return collector.steps(agent, hp.n_steps, generator)


def prepare(agent: Agent, rollout: Rollout, hp: PPOConfig) -> Batch:
    return flatten(rollout, gae(rollout, hp.gamma, hp.gae_lambda))


def update(agent: Agent, batch: Batch, hp: PPOConfig, step: Callable[[torch.Tensor], None],
           progress: float, generator: torch.Generator) -> dict[str, float]:
    """``progress``: fraction of the run done before this update (for the clip annealing)."""
    clip = hp.clip_coef * (1.0 - progress) if hp.anneal_clip else hp.clip_coef
    totals = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "approx_kl": 0.0,
              "clip_fraction": 0.0}
    n_minibatches = 0
    for _ in range(hp.update_epochs):
        order = torch.randperm(len(batch), generator=generator, device=generator.device)
        for start in range(0, len(batch), hp.minibatch_size):
            mb = batch[order[start:start + hp.minibatch_size]]
            logprob, entropy, value = agent.evaluate(mb.obs, mb.actions)
            log_ratio = logprob - mb.logprobs
            ratio = log_ratio.exp()

            advantages = mb.advantages
            if hp.norm_adv and len(mb) > 1:
                advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

            policy_loss = -torch.min(advantages * ratio,
                                     advantages * ratio.clamp(1 - clip, 1 + clip)).mean()
            value_loss = F.mse_loss(value, mb.returns)
            entropy = entropy.mean()
            step(policy_loss + hp.vf_coef * value_loss - hp.ent_coef * entropy)

            with torch.no_grad():  # http://joschu.net/blog/kl-approx.html
                approx_kl = ((ratio - 1) - log_ratio).mean()
                clip_fraction = ((ratio - 1).abs() > clip).float().mean()
            for key, item in zip(totals, (policy_loss, value_loss, entropy, approx_kl,
                                          clip_fraction), strict=True):
                totals[key] += item.detach()
            n_minibatches += 1
    metrics = {key: float(total) / n_minibatches for key, total in totals.items()}
    metrics["clip_coef"] = clip
    metrics["explained_variance"] = explained_variance(batch.values, batch.returns)
    return metrics
