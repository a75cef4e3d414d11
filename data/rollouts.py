"""Rollout storage for on-policy RL: time-major tensors, GAE, and the update ticker.

A rollout is collected fresh from the current policy for every update, so it is not a
dataset in the usual sense; the Lightning dataloader only ticks once per update
(``Updates``) and the module collects the rollout itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields

import torch
from torch.utils.data import IterableDataset


@dataclass
class Rollout:
    """``T`` steps of ``N`` envs, time-major ``[T, N, ...]``.

    ``rewards`` already include ``gamma * V(final_obs)`` on truncated steps, so ``dones``
    (terminated or truncated) can cut the return without bias. ``valid`` masks steps that
    belong to no complete episode (REINFORCE drops the unfinished tails).
    """

    obs: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    valid: torch.Tensor
    last_value: torch.Tensor


@dataclass
class Batch:
    """Flat training samples, one row per valid transition."""

    obs: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor

    def __len__(self) -> int:
        return self.obs.shape[0]

    def __getitem__(self, index) -> Batch:
        return Batch(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


def gae(rollout: Rollout, gamma: float, lam: float) -> torch.Tensor:
    """Generalized advantage estimates ``[T, N]`` (Schulman et al. 2016); ``lam=1`` gives
    Monte Carlo returns minus values, bootstrapped with ``last_value`` at the cut."""
    advantages = torch.zeros_like(rollout.rewards)
    running = torch.zeros_like(rollout.last_value)
    next_value = rollout.last_value
    for t in reversed(range(rollout.rewards.shape[0])):
        nonterminal = 1.0 - rollout.dones[t]
        delta = rollout.rewards[t] + gamma * next_value * nonterminal - rollout.values[t]
        running = delta + gamma * lam * nonterminal * running
        advantages[t] = running
        next_value = rollout.values[t]
    return advantages


def flatten(rollout: Rollout, advantages: torch.Tensor) -> Batch:
    """The valid transitions of ``rollout`` as a flat ``Batch`` (returns = A + V)."""
    valid = rollout.valid.bool()
    return Batch(obs=rollout.obs[valid], actions=rollout.actions[valid],
                 logprobs=rollout.logprobs[valid], values=rollout.values[valid],
                 advantages=advantages[valid], returns=(advantages + rollout.values)[valid])


class Updates(IterableDataset):
    """One item per policy update: iterating calls ``epoch()`` anew each epoch, so the module
    decides (from its restored counters, after a resume) which updates an epoch holds."""

    def __init__(self, epoch: Callable[[], Iterator[int]]) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return self.epoch()
