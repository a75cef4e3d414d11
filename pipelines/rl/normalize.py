"""Running observation and reward normalisation, with stable-baselines3 VecNormalize semantics.

One set of statistics for all sub-envs (CleanRL's per-env wrappers with its single env are
the same thing):

- observations: ``clip((obs - mean) / sqrt(var + eps), -clip_obs, clip_obs)``; the running
  mean/variance are updated with every observation the envs return (reset observations
  included); the true final observation of an episode is normalised without updating.
- rewards: ``clip(r / sqrt(var(R) + eps), -clip_reward, clip_reward)``, where ``R`` is the
  running discounted return of each env (``R <- gamma * R + r``, zeroed when an episode
  ends); the mean is not subtracted (openai/baselines#538). Episode returns are always
  reported raw.

The statistics are gymnasium's ``RunningMeanStd`` (gymnasium's own normalisation wrappers
need NEXT_STEP autoreset; the envs here run SAME_STEP). ``update=False`` freezes them, as
evaluation does. ``state_dict`` holds tensors and floats only, so a checkpoint restores them
exactly with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium.wrappers.utils import RunningMeanStd

from pipelines.harness.errors import ConfigError

EPSILON = 1e-8


class Normalizer:
    def __init__(self, obs_shape: tuple[int, ...], num_envs: int, gamma: float, *,
                 obs: bool, reward: bool, clip_obs: float = 10.0,
                 clip_reward: float = 10.0) -> None:
        self.gamma, self.clip_obs, self.clip_reward = gamma, clip_obs, clip_reward
        self.obs_rms = RunningMeanStd(shape=obs_shape) if obs else None
        self.return_rms = RunningMeanStd(shape=()) if reward else None
        self.returns = np.zeros(num_envs)

    def update_obs(self, obs: np.ndarray) -> None:
        """Fold a batch of raw observations (one per env) into the statistics."""
        if self.obs_rms is not None:
            update(self.obs_rms, obs)

    def obs(self, obs: np.ndarray) -> np.ndarray:
        """Normalised observations (the statistics are not touched)."""
        if self.obs_rms is None:
            return obs
        scaled = (obs - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + EPSILON)
        return np.clip(scaled, -self.clip_obs, self.clip_obs)

    def reward(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        """The learning reward for one vector step; updates the return statistics."""
        if self.return_rms is None:
            return reward
        self.returns = self.returns * self.gamma + reward
        update(self.return_rms, self.returns)
        self.returns[done] = 0.0
        scaled = reward / np.sqrt(self.return_rms.var + EPSILON)
        return np.clip(scaled, -self.clip_reward, self.clip_reward)

    def state_dict(self) -> dict:
        state = {"returns": torch.from_numpy(self.returns.copy())}
        for name in ("obs_rms", "return_rms"):
            rms = getattr(self, name)
            if rms is not None:
                state[name] = {"mean": torch.as_tensor(np.array(rms.mean)),
                               "var": torch.as_tensor(np.array(rms.var)),
                               "count": float(rms.count)}
        return state

    def load_state_dict(self, state: dict) -> None:
        """Statistics saved by ``state_dict``; both must normalise the same things."""
        for name, key in (("obs_rms", "env.normalize_obs"), ("return_rms", "env.normalize_reward")):
            if (getattr(self, name) is None) == (name in state):
                raise ConfigError(key, getattr(self, name) is not None,
                                  f"{name in state} (as in the checkpoint being loaded)")
        self.returns = state["returns"].numpy().copy()
        for name in ("obs_rms", "return_rms"):
            rms = getattr(self, name)
            if rms is not None:
                saved = state[name]
                rms.mean = saved["mean"].numpy().copy()
                rms.var = saved["var"].numpy().copy()
                rms.count = saved["count"]


def update(rms: RunningMeanStd, x: np.ndarray) -> None:
    """``rms.update(x)``; for one env the batch moments are the row itself and zero, exactly
    what ``np.mean``/``np.var`` return for it, without their cost on every step."""
    if x.shape[0] != 1:
        rms.update(x)
        return
    mean = x[0].copy() if isinstance(x[0], np.ndarray) else x[0]
    rms.update_from_moments(mean, np.zeros_like(mean), 1)
