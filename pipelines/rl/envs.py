"""gymnasium vector environments, and what of their state a checkpoint can hold.

Autoreset: every vector env here runs in gymnasium's SAME_STEP mode. The step that ends
an episode returns the terminal reward together with the *reset* observation of the next
episode, and ``infos["final_obs"]`` holds the true last observation. So every transition
of a rollout is real (no masked reset-steps, as the default NEXT_STEP mode would need),
and a truncated episode is bootstrapped with ``V(infos["final_obs"])``.
"""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
from gymnasium.utils import EzPickle
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from omegaconf import OmegaConf

from pipelines.harness.errors import ConfigError

LIST_IDS = 'python -c "import gymnasium; print(sorted(gymnasium.envs.registry))"'
VECTOR = ("sync", "async")


def check_id(env_id) -> None:
    if env_id not in gym.envs.registry:
        raise ConfigError("env.id", env_id, f"a registered gymnasium id; list them with {LIST_IDS}")


def make_kwargs(env_cfg) -> dict:
    """``env.kwargs`` as a plain dict for ``gymnasium.make``."""
    kwargs = env_cfg.get("kwargs")
    return OmegaConf.to_container(kwargs, resolve=True) if OmegaConf.is_config(kwargs) \
        else dict(kwargs or {})


def spaces(env_id: str, kwargs: dict) -> tuple[gym.Space, gym.Space, int | None]:
    """Observation space, action space and episode step limit of one env (built and closed)."""
    env = gym.make(env_id, **kwargs)
    try:
        return env.observation_space, env.action_space, env.spec.max_episode_steps
    finally:
        env.close()


def reward_threshold(env_id: str) -> float | None:
    """The return at which gymnasium calls the env solved (CartPole-v1: 475), if any."""
    return gym.spec(env_id).reward_threshold


def make(env_id: str, num_envs: int, vector: str = "sync", kwargs: dict | None = None,
         render_mode: str | None = None) -> gym.vector.VectorEnv:
    """A SAME_STEP-autoreset vector env (see the module docstring)."""
    kwargs = dict(kwargs or {}, **({"render_mode": render_mode} if render_mode else {}))
    return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=vector,
                        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP}, **kwargs)


def snapshot(envs: gym.vector.VectorEnv) -> bytes | None:
    """The full state of every sub-env (physics, step counter, RNG), or None where it cannot
    be captured: AsyncVectorEnv (state lives in worker processes) and envs that pickle only
    their constructor arguments (``EzPickle``: Box2D, MuJoCo)."""
    if not isinstance(envs, SyncVectorEnv):
        return None
    if any(isinstance(env.unwrapped, EzPickle) for env in envs.envs):
        return None
    return pickle.dumps(envs.envs)


def restore(envs: gym.vector.VectorEnv, blob: bytes) -> gym.vector.VectorEnv:
    """A SyncVectorEnv over the sub-envs of ``snapshot``; closes ``envs``."""
    restored = pickle.loads(blob)
    envs.close()
    return SyncVectorEnv([lambda env=env: env for env in restored],
                         autoreset_mode=AutoresetMode.SAME_STEP)


def final_observations(infos: dict, which: np.ndarray) -> np.ndarray:
    """``infos["final_obs"]`` of the envs in ``which`` (a boolean mask), stacked."""
    return np.stack([infos["final_obs"][i] for i in np.flatnonzero(which)])
