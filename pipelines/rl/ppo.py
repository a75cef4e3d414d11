"""PPO with the clipped surrogate objective (Schulman et al. 2017).

Per update: a rollout of ``n_steps`` x num_envs transitions, GAE advantages, then
``update_epochs`` passes over shuffled minibatches of the clipped policy loss, the value
loss and the entropy bonus. The learning rate (via ``optim.schedules.linear``) and the clip
range anneal linearly to zero when asked. Defaults are rl-baselines3-zoo's CartPole-v1.

The value loss is ``mean((V - R)^2)`` (stable-baselines3's); ``clip_vloss`` takes the larger
of that and the loss of ``V_old + clip(V - V_old, -clip, clip)`` (CleanRL's default).
CleanRL writes its value loss as ``0.5 * mean(...)``: its ``vf_coef=0.5`` is ``0.25`` here.
``target_kl``: after each epoch, stop the update when the last minibatch's approximate KL
exceeds it (CleanRL's rule). Logged losses are means over the minibatches run.
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
    clip_vloss: bool = False      # clip V around the rollout's values (CleanRL), not SB3's
    target_kl: float | None = None  # early stop of the epochs (None: never)
    hidden: tuple[int, ...] = (64, 64)


def collect(collector: Collector, agent: Agent, hp: PPOConfig, generator) -> Rollout:
    return collector.steps(agent, hp.n_steps, generator)


def prepare(agent: Agent, rollout: Rollout, hp: PPOConfig) -> Batch:
    return flatten(rollout, gae(rollout, hp.gamma, hp.gae_lambda))


def update(agent: Agent, batch: Batch, hp: PPOConfig, step: Callable[[torch.Tensor], None],
           progress: float, generator: torch.Generator,
           all_mean: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> dict[str, float]:
    """``progress``: fraction of the run done before this update (for the clip annealing);
    ``all_mean``: the mean over DDP ranks, so that every rank stops at the same epoch."""
    clip = hp.clip_coef * (1.0 - progress) if hp.anneal_clip else hp.clip_coef
    names = ("policy_loss", "value_loss", "entropy", "old_approx_kl", "approx_kl", "clipfrac")
    totals = dict.fromkeys(names, 0.0)
    n_minibatches = epochs = 0
    while epochs < hp.update_epochs:
        epochs += 1
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
            if hp.clip_vloss:
                clipped = mb.values + (value - mb.values).clamp(-clip, clip)
                value_loss = torch.max((value - mb.returns) ** 2,
                                       (clipped - mb.returns) ** 2).mean()
            entropy = entropy.mean()
            step(policy_loss + hp.vf_coef * value_loss - hp.ent_coef * entropy)

            with torch.no_grad():  # http://joschu.net/blog/kl-approx.html
                old_approx_kl = (-log_ratio).mean()
                approx_kl = ((ratio - 1) - log_ratio).mean()
                clipfrac = ((ratio - 1).abs() > clip).float().mean()
            for key, item in zip(names, (policy_loss, value_loss, entropy, old_approx_kl,
                                         approx_kl, clipfrac), strict=True):
                totals[key] += item.detach()
            n_minibatches += 1
        if hp.target_kl is not None and float(all_mean(approx_kl)) > hp.target_kl:
            break
    metrics = {f"losses/{key}": float(total) / n_minibatches for key, total in totals.items()}
    metrics["losses/explained_variance"] = explained_variance(batch.values, batch.returns)
    metrics["charts/clip_coef"] = clip
    metrics["charts/update_epochs"] = epochs  # fewer than update_epochs: target_kl stopped it
    return metrics
