"""Rollout collection with the current policy, and the episode bookkeeping around it.

The collector owns everything a resumed run needs besides the weights and the optimizer:
the env-step counter, the last observation, the returns of episodes in flight, the finished
episodes, when the return threshold was first reached, the normalisation statistics, and
(where their state is plain data) the envs themselves.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from data.rollouts import Rollout
from pipelines.rl import envs as rl_envs
from pipelines.rl.agent import Agent
from pipelines.rl.normalize import Normalizer


class Collector:
    """Steps a SAME_STEP-autoreset vector env (see ``pipelines.rl.envs``) with an agent.

    ``normalizer``: observation/reward normalisation (``pipelines.rl.normalize``); the agent
    sees normalised observations and learns from normalised rewards, while episode returns
    are recorded raw. ``threshold``: ``steps_to_threshold`` is the env-step count at which the
    mean return of the last ``window`` finished episodes first reaches it (None: never, or no
    threshold). ``step_scale``: env steps one step of each env counts for (the number of DDP
    ranks, each stepping envs of its own: the counters are global).
    """

    def __init__(self, envs: gym.vector.VectorEnv, gamma: float, seed: int,
                 threshold: float | None = None, window: int = 20,
                 normalizer: Normalizer | None = None, step_scale: int = 1) -> None:
        self.envs, self.gamma, self.seed = envs, gamma, seed
        self.threshold, self.window, self.step_scale = threshold, window, step_scale
        self.num_envs = envs.num_envs
        self.normalizer = normalizer or Normalizer(envs.single_observation_space.shape,
                                                   self.num_envs, gamma, obs=False,
                                                   reward=False)
        space = envs.single_action_space
        self.bounds = (space.low, space.high) if isinstance(space, gym.spaces.Box) else None
        self.env_steps = 0
        self.episodes: list[tuple[int, float, int]] = []  # (env step at its end, return, length)
        self.steps_to_threshold: int | None = None
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        """Start fresh episodes in every env (episodes in flight are dropped)."""
        self.obs, _ = self.envs.reset(seed=seed)
        self.normalizer.update_obs(self.obs)
        self.normalizer.returns[:] = 0.0
        self.running_return = np.zeros(self.num_envs)
        self.running_length = np.zeros(self.num_envs, dtype=np.int64)

    def steps(self, agent: Agent, n_steps: int, generator: torch.Generator) -> Rollout:
        """``n_steps`` transitions per env, continuing the episodes in flight."""
        return self._collect(agent, generator, n_steps)

    def episodes_per_env(self, agent: Agent, generator: torch.Generator) -> Rollout:
        """Whole episodes from fresh resets, selected without a length bias: the cutoff is
        the step at which the last env finishes its first episode; every episode that
        started at or before it is kept (each env steps on until its episode in progress
        at the cutoff ends), every later one is dropped (marked invalid). Whether an
        episode is kept is decided when it starts, never by how long it runs; keeping only
        the episodes that end before the cutoff would favour short ones."""
        self.reset()
        return self._collect(agent, generator, None)

    def _collect(self, agent: Agent, generator: torch.Generator, n_steps: int | None) -> Rollout:
        """Preallocated ``[T, N]`` buffers for a fixed ``n_steps`` (grown by doubling for
        whole episodes), filled in place under ``inference_mode``: no per-step lists, dicts
        or stacks."""
        device = next(agent.parameters()).device
        capacity = n_steps if n_steps is not None else 64
        buffers = self._buffers(agent, capacity, device)
        last_done = np.full(self.num_envs, -1)   # end of each env's last kept episode
        start = np.zeros(self.num_envs, dtype=np.int64)  # start of its episode in progress
        cutoff = None  # whole episodes: those starting after it are dropped
        t = 0
        with torch.inference_mode():
            while (t < n_steps) if n_steps is not None else (
                    cutoff is None or (start <= cutoff).any()):
                if t == capacity:
                    buffers = {key: torch.cat([item, torch.empty_like(item)])
                               for key, item in buffers.items()}
                    capacity *= 2
                obs = buffers["obs"][t]
                obs.copy_(torch.from_numpy(np.asarray(self.normalizer.obs(self.obs))))
                action, logprob, value = agent.act(obs, generator)
                buffers["actions"][t] = action
                buffers["logprobs"][t] = logprob
                buffers["values"][t] = value
                done = self._step(agent, action.cpu().numpy(), device, buffers["rewards"][t])
                buffers["dones"][t] = torch.from_numpy(done)
                last_done[done if cutoff is None else done & (start <= cutoff)] = t
                start[done] = t + 1
                if n_steps is None and cutoff is None and (last_done >= 0).all():
                    cutoff = t
                t += 1
            last_value = agent.value(self._tensor(self.normalizer.obs(self.obs), device))
        # clones: inference tensors cannot be saved for backward, the update needs them to
        rollout = {key: item[:t].clone() for key, item in buffers.items()}
        valid = torch.ones_like(rollout["rewards"])
        if n_steps is None:
            steps = torch.arange(t, device=device)[:, None]
            valid = (steps <= torch.as_tensor(last_done, device=device)).float()
        return Rollout(**rollout, valid=valid, last_value=last_value.clone())

    def _buffers(self, agent: Agent, capacity: int, device) -> dict[str, torch.Tensor]:
        n = (capacity, self.num_envs)
        space = self.envs.single_action_space
        action_shape, action_dtype = ((*n, *space.shape), torch.float32) if agent.continuous \
            else (n, torch.int64)
        return {"obs": torch.empty((*n, *self.envs.single_observation_space.shape),
                                   device=device),
                "actions": torch.empty(action_shape, dtype=action_dtype, device=device),
                **{key: torch.empty(n, device=device)
                   for key in ("logprobs", "values", "rewards", "dones")}}

    def _step(self, agent: Agent, action: np.ndarray, device,
              learn_reward: torch.Tensor) -> np.ndarray:
        """One vector step: writes the learning reward into ``learn_reward`` (normalised if
        asked, truncations bootstrapped with V of the normalised final observation) and
        returns the done flags."""
        env_action = np.clip(action, *self.bounds) if self.bounds is not None else action
        self.obs, reward, terminated, truncated, infos = self.envs.step(env_action)
        done = terminated | truncated
        self.env_steps += self.num_envs * self.step_scale
        self._count(reward, done)
        self.normalizer.update_obs(self.obs)
        learn_reward.copy_(torch.from_numpy(np.asarray(self.normalizer.reward(reward, done))))
        cut = truncated & ~terminated
        if cut.any():
            final = self.normalizer.obs(rl_envs.final_observations(infos, cut))
            learn_reward[torch.as_tensor(cut, device=device)] += (
                self.gamma * agent.value(self._tensor(final, device)))
        return done

    @staticmethod
    def _tensor(array: np.ndarray, device) -> torch.Tensor:
        return torch.as_tensor(array, dtype=torch.float32, device=device)

    def _count(self, reward: np.ndarray, done: np.ndarray) -> None:
        self.running_return += reward
        self.running_length += 1
        for i in np.flatnonzero(done):
            self.episodes.append((self.env_steps, float(self.running_return[i]),
                                  int(self.running_length[i])))
            self.running_return[i], self.running_length[i] = 0.0, 0
            if self.steps_to_threshold is None and self.threshold is not None:
                recent = self.recent_mean()
                if recent is not None and recent >= self.threshold:
                    self.steps_to_threshold = self.env_steps

    def recent_mean(self) -> float | None:
        """Mean return of the last ``window`` finished episodes (None before ``window``)."""
        if len(self.episodes) < self.window:
            return None
        return float(np.mean([ret for _, ret, _ in self.episodes[-self.window:]]))

    def state_dict(self) -> dict:
        """Tensors and plain values only (``torch.load(weights_only=True)`` reads them)."""
        return {"env_steps": self.env_steps, "obs": torch.as_tensor(self.obs),
                "running_return": torch.as_tensor(self.running_return),
                "running_length": torch.as_tensor(self.running_length),
                "episodes": torch.tensor(self.episodes, dtype=torch.float64).reshape(-1, 3),
                "steps_to_threshold": self.steps_to_threshold,
                "normalizer": self.normalizer.state_dict(),
                "envs": rl_envs.snapshot(self.envs)}

    def load_state_dict(self, state: dict) -> None:
        """Restore counters, episodes and normalisation statistics; the envs exactly where
        their state was captured, otherwise fresh episodes seeded from the step count (the
        episodes in flight are lost)."""
        self.env_steps = state["env_steps"]
        self.episodes = [(int(step), ret, int(length))
                         for step, ret, length in state["episodes"].tolist()]
        self.steps_to_threshold = state["steps_to_threshold"]
        self.normalizer.load_state_dict(state["normalizer"])
        if not isinstance(state["envs"], (list, type(None))):
            raise ValueError(f"its env state is a {type(state['envs']).__name__}, not plain data "
                             "(a pickle?); it is never unpickled")
        if state["envs"] is None:
            self.reset(self.seed + self.env_steps)
            return
        rl_envs.restore(self.envs, state["envs"])
        self.obs = state["obs"].numpy().copy()
        self.running_return = state["running_return"].numpy().copy()
        self.running_length = state["running_length"].numpy().copy()
