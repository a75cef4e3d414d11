"""A trained policy on its own: the actor, its frozen observation statistics and the env it
acts in, saved as a small file that loads without Lightning.

    from pipelines.rl.policy import Policy
    policy = Policy.load("runs/rl/<run>/policy.pt")
    env = policy.make_env()
    obs, _ = env.reset(seed=0)
    action = policy.act(obs[None])[0]

The file holds tensors and plain values only (``torch.load(weights_only=True)``): the agent's
state_dict, its layer widths, the observation mean/variance/count and clip, and the env's
id, kwargs and wrappers. A training run writes it as ``policy.pt`` next to its checkpoints
(``Policy.from_module``); ``Policy.from_checkpoint`` rebuilds it from any RL checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from pipelines.rl import envs as rl_envs
from pipelines.rl.agent import Agent
from pipelines.rl.normalize import Normalizer

FORMAT = "adamlab-rl-policy"
VERSION = 1


@dataclass
class EnvSpec:
    """What builds the env a policy acts in (training and evaluation alike)."""

    id: str
    kwargs: dict
    wrappers: list[dict]


@dataclass
class Policy:
    agent: Agent
    normalizer: Normalizer  # only its observation statistics are used, frozen
    env: EnvSpec
    action_space: gym.Space

    def act(self, obs: np.ndarray, deterministic: bool = True,
            generator: torch.Generator | None = None) -> np.ndarray:
        """Env actions for a batch of raw observations: the mode/mean of the policy, or a
        sample drawn with ``generator``; Box actions clipped to the action space."""
        device = next(self.agent.parameters()).device
        x = torch.as_tensor(self.normalizer.obs(obs), dtype=torch.float32, device=device)
        action = self.agent.greedy(x) if deterministic else self.agent.act(x, generator)[0]
        action = action.cpu().numpy()
        space = self.action_space
        return np.clip(action, space.low, space.high) if self.agent.continuous else action

    def make_env(self, render_mode: str | None = None) -> gym.Env:
        return rl_envs.make_one(self.env.id, self.env.kwargs, self.env.wrappers, render_mode)

    @classmethod
    def from_module(cls, module) -> Policy:
        """The policy a training run (``RLModule``) is acting with, sharing its tensors."""
        return cls(module.agent, module.collector.normalizer,
                   EnvSpec(module.cfg.env.id, module.env_kwargs, module.wrappers),
                   module.collector.envs.single_action_space)

    @classmethod
    def from_checkpoint(cls, path, cfg) -> Policy:
        """The policy in an RL checkpoint (``cfg``: the config of the run that wrote it)."""
        from pipelines.rl.module import normalizer_for

        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        env = EnvSpec(cfg.env.id, rl_envs.make_kwargs(cfg.env), rl_envs.wrapper_specs(cfg.env))
        agent, obs_space, action_space = _build(env, cfg.algo.hidden,
                                                cfg.algo.get("baseline", True))
        agent.load_state_dict({k.removeprefix("agent."): v
                               for k, v in checkpoint["state_dict"].items()
                               if k.startswith("agent.")})
        normalizer = normalizer_for(cfg, obs_space.shape, cfg.env.num_envs, 1.0)
        normalizer.load_state_dict(checkpoint["rl"]["collector"]["normalizer"])
        return cls(agent.eval(), normalizer, env, action_space)

    def save(self, path) -> Path:
        """Written to a temporary file and renamed: a crash never leaves half a file."""
        state = {"format": FORMAT, "version": VERSION,
                 "env": {"id": self.env.id, "kwargs": self.env.kwargs,
                         "wrappers": self.env.wrappers},
                 "hidden": [m.out_features for m in self.agent.actor[:-1]
                            if isinstance(m, torch.nn.Linear)],
                 "critic": self.agent.critic is not None,
                 "agent": {k: v.detach().cpu() for k, v in self.agent.state_dict().items()},
                 "normalizer": self.normalizer.state_dict(),
                 "clip_obs": float(self.normalizer.clip_obs)}
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(state, tmp)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path) -> Policy:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"{path} is not an adamlab RL policy file")
        if state["version"] > VERSION:
            raise ValueError(f"{path} is policy format {state['version']}; this adamlab reads "
                             f"up to {VERSION}")
        env = EnvSpec(**state["env"])
        agent, obs_space, action_space = _build(env, state["hidden"], state["critic"])
        agent.load_state_dict(state["agent"])
        saved = state["normalizer"]
        normalizer = Normalizer(obs_space.shape, len(saved["returns"]), 1.0,
                                obs="obs_rms" in saved, reward="return_rms" in saved,
                                clip_obs=state["clip_obs"])
        normalizer.load_state_dict(saved)
        return cls(agent.eval(), normalizer, env, action_space)


def _build(env: EnvSpec, hidden, critic: bool) -> tuple[Agent, gym.Space, gym.Space]:
    obs_space, action_space, _ = rl_envs.spaces(env.id, env.kwargs, env.wrappers)
    return Agent(obs_space, action_space, tuple(int(h) for h in hidden), critic=critic), \
        obs_space, action_space
