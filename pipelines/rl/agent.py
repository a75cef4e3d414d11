"""Actor-critic MLPs: a Categorical policy for Discrete actions, a diagonal Gaussian with a
state-independent log-std for Box actions. Separate actor and critic networks with tanh and
orthogonal init, as in stable-baselines3's MlpPolicy (the zoo settings assume it).

Actions are sampled with an explicit ``torch.Generator`` so a run owns its randomness and
a checkpoint can restore it exactly.
"""

from __future__ import annotations

import math

import gymnasium as gym
import torch
from torch import nn
from torch.distributions import Categorical, Normal


def mlp(inputs: int, hidden: tuple[int, ...], outputs: int, out_gain: float) -> nn.Sequential:
    layers, width = [], inputs
    for size in hidden:
        layers += [nn.Linear(width, size), nn.Tanh()]
        width = size
    layers.append(nn.Linear(width, outputs))
    for layer in layers:
        if isinstance(layer, nn.Linear):
            last = layer is layers[-1]
            nn.init.orthogonal_(layer.weight, out_gain if last else math.sqrt(2))
            nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


class Agent(nn.Module):
    def __init__(self, obs_space: gym.Space, action_space: gym.Space,
                 hidden: tuple[int, ...] = (64, 64), critic: bool = True) -> None:
        super().__init__()
        obs_dim = int(math.prod(obs_space.shape))
        self.continuous = isinstance(action_space, gym.spaces.Box)
        n_out = int(math.prod(action_space.shape)) if self.continuous else int(action_space.n)
        self.actor = mlp(obs_dim, hidden, n_out, out_gain=0.01)
        self.log_std = nn.Parameter(torch.zeros(n_out)) if self.continuous else None
        self.critic = mlp(obs_dim, hidden, 1, out_gain=1.0) if critic else None

    def policy_parameters(self) -> list[nn.Parameter]:
        """The parameters the policy gradient flows into (the critic's excluded)."""
        return [*self.actor.parameters(), *([self.log_std] if self.continuous else [])]

    def dist(self, obs: torch.Tensor):
        out = self.actor(obs.flatten(1))
        if self.continuous:
            return Normal(out, self.log_std.exp().expand_as(out), validate_args=False)
        return Categorical(logits=out, validate_args=False)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(s); zero without a critic (REINFORCE without baseline)."""
        if self.critic is None:
            return torch.zeros(obs.shape[0], device=obs.device)
        return self.critic(obs.flatten(1)).squeeze(-1)

    def logprob(self, dist, actions: torch.Tensor) -> torch.Tensor:
        logp = dist.log_prob(actions)
        return logp.sum(-1) if self.continuous else logp

    def entropy(self, dist) -> torch.Tensor:
        return dist.entropy().sum(-1) if self.continuous else dist.entropy()

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator):
        """Sampled action, its log-probability and V(s), for collecting a rollout."""
        dist = self.dist(obs)
        if self.continuous:
            noise = torch.randn(dist.mean.shape, generator=generator, device=obs.device)
            action = dist.mean + dist.stddev * noise
        else:
            action = torch.multinomial(dist.probs, 1, generator=generator).squeeze(-1)
        return action, self.logprob(dist, action), self.value(obs)

    @torch.no_grad()
    def greedy(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic action: the mode (Discrete) or the mean (Box)."""
        dist = self.dist(obs)
        return dist.mean if self.continuous else dist.probs.argmax(-1)

    def evaluate(self, obs: torch.Tensor, actions: torch.Tensor):
        """Log-probability and entropy of ``actions`` under the current policy, and V(s)."""
        dist = self.dist(obs)
        return self.logprob(dist, actions), self.entropy(dist), self.value(obs)
