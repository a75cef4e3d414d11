"""The rl pipeline: policy-gradient agents on gymnasium vector envs (see registry contract).

    adamlab train pipeline=rl algo=ppo env.id=CartPole-v1 optim=adam optim.eps=1e-5
"""

from __future__ import annotations

import logging
from pathlib import Path

import gymnasium as gym

from pipelines.harness.errors import ConfigError
from pipelines.rl import algos
from pipelines.rl import envs as rl_envs
from pipelines.rl.evaluate import record_episode
from pipelines.rl.figures import gradient_variance, return_curve
from pipelines.rl.module import EVAL_SEED_OFFSET, RLModule

log = logging.getLogger(__name__)


def _positive_int(key: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(key, value, f"an integer >= {minimum}")


class RLPipeline:
    def validate(self, cfg) -> None:
        """Every check that needs no training: env id, spaces, sizes, schedule."""
        env, pipeline = cfg.env, cfg.pipeline
        rl_envs.check_id(env.id)
        if env.get("vector", "sync") not in rl_envs.VECTOR:
            raise ConfigError("env.vector", env.vector, "one of " + ", ".join(rl_envs.VECTOR))
        _positive_int("env.num_envs", env.num_envs)
        _, hp = algos.resolve(cfg.algo)
        kwargs = rl_envs.make_kwargs(env)
        try:
            obs_space, action_space, max_steps = rl_envs.spaces(env.id, kwargs)
        except TypeError as error:
            raise ConfigError("env.kwargs", kwargs, f"arguments {env.id} accepts ({error})") \
                from None
        if not isinstance(obs_space, gym.spaces.Box):
            raise ConfigError("env.id", env.id, f"an env with Box observations, not {obs_space}")
        if not (isinstance(action_space, gym.spaces.Discrete)
                or (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1)):
            raise ConfigError("env.id", env.id, "an env with Discrete or 1-D Box actions "
                              f"(every algorithm handles both), not {action_space}")

        batch = env.num_envs * getattr(hp, "n_steps", 1)
        _positive_int("pipeline.total_timesteps", pipeline.total_timesteps, batch)
        if hasattr(hp, "minibatch_size") and hp.minibatch_size > batch:
            raise ConfigError("algo.minibatch_size", hp.minibatch_size,
                              f"at most the batch env.num_envs * algo.n_steps = {batch}")
        for key in ("eval_every", "pg_grad_every"):
            _positive_int(f"pipeline.{key}", pipeline[key], 0)
        _positive_int("pipeline.eval_episodes", pipeline.eval_episodes)
        _positive_int("pipeline.steps_per_epoch", pipeline.steps_per_epoch)
        _positive_int("pipeline.pg_grad_minibatches", pipeline.pg_grad_minibatches, 2)
        threshold = pipeline.get("threshold")
        if threshold is not None and (isinstance(threshold, bool)
                                      or not isinstance(threshold, (int, float))):
            raise ConfigError("pipeline.threshold", threshold,
                              "a number, or null for the env's reward_threshold")

        schedule = (cfg.get("schedule") or {}).get("name")
        if cfg.algo.name == "reinforce":
            if max_steps is None:
                raise ConfigError("env.id", env.id, "an env with a time limit for algo=reinforce "
                                  "(it waits for whole episodes)")
            if schedule is not None:
                raise ConfigError("schedule.name", schedule, "null for algo=reinforce (updates "
                                  "vary in size, so a schedule has no known length)")
        if schedule == "plateau":
            raise ConfigError("schedule.name", schedule, "a step schedule (rl has no val_loss)")
        if schedule is not None and getattr(hp, "anneal_lr", False):
            raise ConfigError("schedule.name", schedule,
                              "null while algo.anneal_lr=true (set algo.anneal_lr=false to use it)")

    def build(self, cfg):
        return RLModule(cfg), None

    def summary(self, trainer, module: RLModule, datamodule) -> dict:
        collector = module.collector
        return {
            "eval_return": module.history.last("eval_return"),
            "steps_to_threshold": collector.steps_to_threshold,
            "threshold": module.threshold,
            "mean_return_last20": collector.recent_mean(),
            "env_steps": collector.env_steps,
            "episodes": len(collector.episodes),
            "updates": module.updates_done,
        }  # no steps/s here: the summary of a seed is reproducible (sps is in the CSV)

    def figures(self, trainer, module: RLModule, datamodule, out_dir) -> list[Path]:
        out_dir = Path(out_dir)
        title = f"{module.cfg.algo.name} on {module.cfg.env.id}"
        paths = [
            return_curve(module.collector.episodes, module.history, module.threshold,
                         module.collector.window, title, out_dir / "returns.png"),
            gradient_variance(module.history, title, out_dir / "pg_grad_variance.png"),
        ]
        if module.cfg.pipeline.get("video"):
            video = record_episode(module.agent, module.cfg.env.id, module.env_kwargs,
                                   module.cfg.seed + EVAL_SEED_OFFSET, out_dir / "eval.gif")
            if video is not None:
                log.info("evaluation video: %s", video)
        return paths
