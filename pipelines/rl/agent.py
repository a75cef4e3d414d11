"""Actor-critic MLPs: a Categorical policy for Discrete actions, a diagonal Gaussian with a
state-independent log-std for Box actions. Separate actor and critic networks with tanh and
orthogonal init, as in stable-baselines3's MlpPolicy (the zoo settings assume it).

Actions are sampled with an explicit ``torch.Generator`` so a run owns its randomness and
a checkpoint can restore it exactly.

Speed: the networks run layer by layer through ``F.linear``/``tanh`` (no module-call hooks)
and the log-probability and entropy are written out instead of built through
``torch.distributions`` objects: the same operations in the same order as ``Normal`` and
``Categorical`` (so the numbers are bit for bit theirs, ``tests/test_rl_ppo.py``), at a
fraction of the per-call Python cost that dominates a one-env rollout step.
"""

from __future__ import annotations

import math

import gymnasium as gym
import torch
import torch.nn.functional as F
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
        """The policy as a ``torch.distributions`` object (for code that wants one)."""
        out = self.actor(obs.flatten(1))
        if self.continuous:
            return Normal(out, self.log_std.exp().expand_as(out), validate_args=False)
        return Categorical(logits=out, validate_args=False)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(s); zero without a critic (REINFORCE without baseline)."""
        if self.critic is None:
            return torch.zeros(obs.shape[0], device=obs.device)
        return forward(self.critic, obs.flatten(1)).squeeze(-1)

    def logprob(self, dist, actions: torch.Tensor) -> torch.Tensor:
        logp = dist.log_prob(actions)
        return logp.sum(-1) if self.continuous else logp

    def entropy(self, dist) -> torch.Tensor:
        return dist.entropy().sum(-1) if self.continuous else dist.entropy()

    def _head(self, obs: torch.Tensor):
        """(mean, std) of the Gaussian, or the normalised logits: ``Normal``'s and
        ``Categorical``'s own parameters, computed as they compute them."""
        out = forward(self.actor, obs.flatten(1))
        if self.continuous:
            return out, self.log_std.exp().expand_as(out)
        return out - out.logsumexp(dim=-1, keepdim=True), None

    def _logprob(self, head, actions: torch.Tensor) -> torch.Tensor:
        loc, scale = head
        if self.continuous:  # Normal.log_prob, summed over the action dimensions
            var = scale**2
            logp = -((actions - loc) ** 2) / (2 * var) - scale.log() - LOG_SQRT_2PI
            return logp.sum(-1)
        return loc.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator):
        """Sampled action, its log-probability and V(s), for collecting a rollout."""
        head = self._head(obs)
        loc, scale = head
        if self.continuous:
            noise = torch.randn(loc.shape, generator=generator, device=obs.device)
            action = loc + scale * noise
        else:
            action = torch.multinomial(F.softmax(loc, dim=-1), 1, generator=generator).squeeze(-1)
        return action, self._logprob(head, action), self.value(obs)

    @torch.no_grad()
    def greedy(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic action: the mode (Discrete) or the mean (Box)."""
        loc, _ = self._head(obs)
        return loc if self.continuous else loc.argmax(-1)

    def evaluate(self, obs: torch.Tensor, actions: torch.Tensor):
        """Log-probability and entropy of ``actions`` under the current policy, and V(s)."""
        head = self._head(obs)
        loc, scale = head
        logprob = self._logprob(head, actions)  # first: autograd sums gradients in op order
        if self.continuous:  # Normal.entropy, summed
            entropy = (0.5 + 0.5 * math.log(2 * math.pi) + torch.log(scale)).sum(-1)
        else:  # Categorical.entropy
            logits = torch.clamp(loc, min=torch.finfo(loc.dtype).min)
            entropy = -(logits * F.softmax(loc, dim=-1)).sum(-1)
        return logprob, entropy, self.value(obs)


LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))


def forward(net: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``net(x)`` for an ``mlp``, without the per-module call overhead."""
    for layer in net:
        x = F.linear(x, layer.weight, layer.bias) if isinstance(layer, nn.Linear) \
            else torch.tanh(x)
    return x
