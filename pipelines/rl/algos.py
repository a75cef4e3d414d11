"""The algorithm registry, and ``algo`` config -> hyperparameter dataclass, checked.

Each algorithm module exposes a hyperparameter dataclass and three functions:
``collect(collector, agent, hp, generator) -> Rollout``, ``prepare(agent, rollout, hp) ->
Batch`` and ``update(agent, batch, hp, step, progress, generator) -> metrics``.

``algo.max_grad_norm`` is the one key outside the dataclass: the algorithm's default clip
threshold (stable-baselines3's 0.5 for PPO and A2C; null, no clipping, for REINFORCE, whose
Monte Carlo value loss would otherwise swamp the policy gradient under a global-norm clip).
``configs/pipeline/rl.yaml`` interpolates it into ``clip.max_norm``: gradients are clipped by
the optimizer chain, never here. Presets of an algorithm (``algo=ppo_continuous``,
``algo=a2c_sb3``, ...) are config files that set its keys, and may set env, pipeline and
optim keys as well.
"""

from __future__ import annotations

import dataclasses
from types import ModuleType

from omegaconf import OmegaConf

from pipelines.harness.errors import ConfigError
from pipelines.rl import a2c, ppo, reinforce

ALGOS: dict[str, tuple[ModuleType, type]] = {
    "ppo": (ppo, ppo.PPOConfig),
    "a2c": (a2c, a2c.A2CConfig),
    "reinforce": (reinforce, reinforce.ReinforceConfig),
}
POSITIVE_INT = ("n_steps", "update_epochs", "minibatch_size")
UNIT_INTERVAL = ("gamma", "gae_lambda")
NON_NEGATIVE = ("ent_coef", "vf_coef")


def resolve(algo_cfg) -> tuple[ModuleType, object]:
    """The algorithm module and its hyperparameters; ConfigError names the bad key."""
    spec = OmegaConf.to_container(algo_cfg, resolve=True) if OmegaConf.is_config(algo_cfg) \
        else dict(algo_cfg)
    name = spec.pop("name", None)
    if name not in ALGOS:
        raise ConfigError("algo.name", name, "one of " + ", ".join(ALGOS))
    module, config_cls = ALGOS[name]
    max_grad_norm = spec.pop("max_grad_norm", None)
    if max_grad_norm is not None and (isinstance(max_grad_norm, bool)
                                      or not isinstance(max_grad_norm, (int, float))
                                      or max_grad_norm <= 0):
        raise ConfigError("algo.max_grad_norm", max_grad_norm, "null or a number > 0")
    allowed = {f.name: f for f in dataclasses.fields(config_cls)}
    for key, value in spec.items():
        if key not in allowed:
            raise ConfigError(f"algo.{key}", value,
                              f"a {name} hyperparameter: one of " + ", ".join(allowed))
        _check(key, value, allowed[key].default)
    if "hidden" in spec:
        spec["hidden"] = tuple(spec["hidden"])
    return module, config_cls(**spec)


def _check(key: str, value, default) -> None:
    if key == "target_kl":
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or value <= 0):
            raise ConfigError("algo.target_kl", value, "null (no early stop) or a number > 0")
    elif isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"algo.{key}", value, "true or false")
    elif key == "hidden":
        if not value or not all(isinstance(v, int) and v > 0 for v in value):
            raise ConfigError("algo.hidden", value, "a non-empty list of positive layer widths")
    elif key in POSITIVE_INT:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"algo.{key}", value, "a positive integer")
    elif not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ConfigError(f"algo.{key}", value, "a number")
    elif key in UNIT_INTERVAL and not 0 <= value <= 1:
        raise ConfigError(f"algo.{key}", value, "a number in [0, 1]")
    elif key in NON_NEGATIVE and value < 0:
        raise ConfigError(f"algo.{key}", value, "a number >= 0")
    elif key == "clip_coef" and value <= 0:
        raise ConfigError("algo.clip_coef", value, "a number > 0")
