"""gymnasium vector environments: building them (with user wrappers), checking them, and
what of their state a checkpoint can hold.

Autoreset: every vector env here runs in gymnasium's SAME_STEP mode. The step that ends
an episode returns the terminal reward together with the *reset* observation of the next
episode, and ``infos["final_obs"]`` holds the true last observation. So every transition
of a rollout is real (no masked reset-steps, as the default NEXT_STEP mode would need),
and a truncated episode is bootstrapped with ``V(infos["final_obs"])``.

``env.wrappers`` is a list of gymnasium wrappers, each ``{_target_: dotted.Class, **kwargs}``,
applied in order to every sub-env (training and evaluation alike), right after
``gymnasium.make(env.id, **env.kwargs)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import gymnasium as gym
import numpy as np
from gymnasium.error import DependencyNotInstalled
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from pipelines.harness.errors import ConfigError
from pipelines.rl import env_state

LIST_IDS = 'python -c "import gymnasium; print(sorted(gymnasium.envs.registry))"'
VECTOR = ("sync", "async")
EXTRAS = {"mujoco": "gymnasium[mujoco] (make install has it)",
          "box2d": "gymnasium[box2d] (make install has it)",
          "ale_py": "ale-py (Atari; its image observations need a CNN, which this pipeline "
                    "does not have)"}


def check_id(env_id) -> None:
    if env_id not in gym.envs.registry:
        hint = f"a registered gymnasium id; list them with {LIST_IDS}"
        if isinstance(env_id, str) and "/" in env_id:
            hint += (f" (the namespace {env_id.split('/')[0]!r} is registered by the package "
                     "that provides it: install and import it first)")
        raise ConfigError("env.id", env_id, hint)


def plain(node, default):
    """A config node as plain Python (dicts and lists), ``default`` when it is missing."""
    if node is None:
        return default
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def make_kwargs(env_cfg) -> dict:
    """``env.kwargs`` as a plain dict for ``gymnasium.make``."""
    return dict(plain(env_cfg.get("kwargs"), {}))


def wrapper_specs(env_cfg) -> list[dict]:
    """``env.wrappers`` as plain dicts, each checked to name a gymnasium wrapper class."""
    specs = plain(env_cfg.get("wrappers"), [])
    if not isinstance(specs, list):
        raise ConfigError("env.wrappers", specs, "a list of {_target_: gymnasium wrapper class, "
                          "**kwargs}")
    for i, spec in enumerate(specs):
        target = spec.get("_target_") if isinstance(spec, dict) else None
        try:
            cls = get_class(target) if isinstance(target, str) else None
        except (ImportError, ValueError, AttributeError, InstantiationException):
            cls = None
        if not (isinstance(cls, type) and issubclass(cls, gym.Wrapper)):
            raise ConfigError(f"env.wrappers[{i}]", spec, "{_target_: <a gymnasium.Wrapper "
                              "subclass, e.g. gymnasium.wrappers.FlattenObservation>, **kwargs}")
    return specs


def wrappers(specs: list[dict]) -> list[Callable[[gym.Env], gym.Env]]:
    return [lambda env, spec=spec: instantiate(spec, env) for spec in specs]


def make_one(env_id: str, kwargs: dict, specs: list[dict], render_mode: str | None = None):
    """One env as every sub-env of ``make`` is built (for checks, videos and evaluation)."""
    _quiet_mujoco(env_id)
    env = gym.make(env_id, **kwargs, **({"render_mode": render_mode} if render_mode else {}))
    for wrap in wrappers(specs):
        env = wrap(env)
    return env


def spaces(env_id: str, kwargs: dict, specs: list[dict] = ()) -> tuple[gym.Space, gym.Space,
                                                                        int | None]:
    """Observation space (after the wrappers), action space and episode step limit of one env,
    built and closed. A missing optional package or a bad argument is a ConfigError."""
    try:
        _quiet_mujoco(env_id)
        env = gym.make(env_id, **kwargs)
    except DependencyNotInstalled as error:
        raise ConfigError("env.id", env_id, f"an env whose package is installed: {error} "
                          f"({_extra_hint(env_id)})") from None
    except TypeError as error:
        raise ConfigError("env.kwargs", kwargs, f"arguments {env_id} accepts ({error})") \
            from None
    try:
        for i, wrap in enumerate(wrappers(list(specs))):
            try:
                env = wrap(env)
            except (InstantiationException, TypeError, ValueError) as error:
                raise ConfigError(f"env.wrappers[{i}]", specs[i],
                                  f"a wrapper {env_id} accepts ({error})") from None
        return env.observation_space, env.action_space, gym.spec(env_id).max_episode_steps
    finally:
        env.close()


def _extra_hint(env_id: str) -> str:
    entry = str(gym.spec(env_id).entry_point)
    for key, extra in EXTRAS.items():
        if key in entry:
            return f"pip install {extra}"
    return "install the package the error names"


def _quiet_mujoco(env_id: str) -> None:
    """MuJoCo writes its warnings (v4/v5 models use a deprecated compiler attribute) to
    MUJOCO_LOG.TXT in the working directory; send them to Python logging instead."""
    if "mujoco" in str(gym.spec(env_id).entry_point):
        import mujoco

        log = logging.getLogger("mujoco")
        mujoco.set_mju_user_warning(lambda message: log.info(message.strip()))


def reward_threshold(env_id: str) -> float | None:
    """The return at which gymnasium calls the env solved (CartPole-v1: 475), if any."""
    return gym.spec(env_id).reward_threshold


def make(env_id: str, num_envs: int, vector: str = "sync", kwargs: dict | None = None,
         specs: list[dict] = (), render_mode: str | None = None) -> gym.vector.VectorEnv:
    """A SAME_STEP-autoreset vector env (see the module docstring)."""
    _quiet_mujoco(env_id)
    kwargs = dict(kwargs or {}, **({"render_mode": render_mode} if render_mode else {}))
    return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=vector,
                        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
                        wrappers=wrappers(list(specs)) or None, **kwargs)


def snapshot(envs: gym.vector.VectorEnv) -> list[list[dict]] | None:
    """The state of every sub-env as plain data (``env_state``), or None where it cannot be
    captured: AsyncVectorEnv (state lives in worker processes) and envs holding objects that
    are not plain data (Box2D worlds, ...)."""
    if not isinstance(envs, SyncVectorEnv):
        return None
    states = [env_state.capture(env) for env in envs.envs]
    return None if any(state is None for state in states) else states


def restore(envs: gym.vector.VectorEnv, states: list[list[dict]]) -> None:
    """Put the sub-env states of ``snapshot`` back, in place."""
    if len(states) != envs.num_envs:
        raise ValueError(f"env state holds {len(states)} envs, env.num_envs is {envs.num_envs}")
    for env, state in zip(envs.envs, states):
        env_state.restore(env, state)


def final_observations(infos: dict, which: np.ndarray) -> np.ndarray:
    """``infos["final_obs"]`` of the envs in ``which`` (a boolean mask), stacked."""
    return np.stack([infos["final_obs"][i] for i in np.flatnonzero(which)])
