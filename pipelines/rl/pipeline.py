"""The rl pipeline: policy-gradient agents on gymnasium vector envs (see registry contract).

    adamlab train pipeline=rl algo=ppo env.id=CartPole-v1
    adamlab eval runs/rl/<run> episodes=20 video=mp4
"""

from __future__ import annotations

import logging
from pathlib import Path

import gymnasium as gym
import numpy as np

from pipelines.harness.errors import ConfigError
from pipelines.rl import algos
from pipelines.rl import envs as rl_envs
from pipelines.rl.evaluate import VIDEO_FORMATS, evaluate, record_episode
from pipelines.rl.figures import gradient_variance, return_curve
from pipelines.rl.module import EVAL_SEED_OFFSET, RLModule
from pipelines.rl.policy import Policy

log = logging.getLogger(__name__)


def _positive_int(key: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(key, value, f"an integer >= {minimum}")


def check_spaces(env_id: str, obs_space: gym.Space, action_space: gym.Space) -> None:
    """The agents are MLPs on flat vectors, with Discrete or 1-D Box actions."""
    if not isinstance(obs_space, gym.spaces.Box):
        raise ConfigError("env.id", env_id, f"an env with Box observations, not "
                          f"{type(obs_space).__name__} ({obs_space}); add env.wrappers="
                          "[{_target_: gymnasium.wrappers.FlattenObservation}] to flatten it "
                          "into one vector (one-hot for Discrete parts)")
    if len(obs_space.shape) >= 3 or (obs_space.dtype == np.uint8 and len(obs_space.shape) >= 2):
        raise ConfigError("env.id", env_id, f"an env with vector observations: it observes "
                          f"images {obs_space.shape} {obs_space.dtype}, and the agents here are "
                          "MLPs (no CNN encoder); choose a state-based env (e.g. "
                          "CarRacing-v3 -> LunarLanderContinuous-v3, Atari -> classic control)")
    if not (isinstance(action_space, gym.spaces.Discrete)
            or (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1)):
        raise ConfigError("env.id", env_id, "an env with Discrete or 1-D Box actions "
                          f"(every algorithm handles both), not {action_space}")


def check_video(env_cfg, video: str, key: str = "pipeline.video") -> None:
    """A video asked for must work before any episode is played: the env renders RGB frames
    and the encoder is installed."""
    if video == "mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise ConfigError(key, video, "gif, or install imageio-ffmpeg for "
                              "mp4 (make install has it)") from None
    try:
        env = rl_envs.make_one(env_cfg.id, rl_envs.make_kwargs(env_cfg),
                               rl_envs.wrapper_specs(env_cfg), render_mode="rgb_array")
        try:
            env.reset(seed=0)
            frame = env.render()
        finally:
            env.close()
    except Exception as error:  # noqa: BLE001 - reported, with its cause, as a config error
        raise ConfigError(key, video, f"null: {env_cfg.id} cannot render "
                          f"rgb_array frames here ({error!r})") from None
    if not isinstance(frame, np.ndarray) or frame.ndim != 3:
        raise ConfigError(key, video, f"null: {env_cfg.id} renders "
                          f"{type(frame).__name__}, not RGB frames")


class RLPipeline:
    logs_learning_rate = True  # charts/learning_rate, once per update (no LearningRateMonitor)

    def validate(self, cfg) -> None:
        """Every check that needs no training: env id, spaces, sizes, schedule."""
        env, pipeline = cfg.env, cfg.pipeline
        rl_envs.check_id(env.id)
        if env.get("vector", "sync") not in rl_envs.VECTOR:
            raise ConfigError("env.vector", env.vector, "one of " + ", ".join(rl_envs.VECTOR))
        _positive_int("env.num_envs", env.num_envs)
        for key in ("normalize_obs", "normalize_reward"):
            if not isinstance(env[key], bool):
                raise ConfigError(f"env.{key}", env[key], "true or false")
        for key in ("clip_obs", "clip_reward"):
            if isinstance(env[key], bool) or not isinstance(env[key], (int, float)) \
                    or env[key] <= 0:
                raise ConfigError(f"env.{key}", env[key], "a number > 0")
        _, hp = algos.resolve(cfg.algo)
        specs = rl_envs.wrapper_specs(env)
        obs_space, action_space, max_steps = rl_envs.spaces(env.id, rl_envs.make_kwargs(env),
                                                            specs)
        check_spaces(env.id, obs_space, action_space)
        video = pipeline.get("video")
        if video not in (None, False, *VIDEO_FORMATS):
            raise ConfigError("pipeline.video", video, "null, " + " or ".join(VIDEO_FORMATS))
        if video:
            check_video(env, video)

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
            "eval_return": module.history.last("eval/episodic_return"),
            "steps_to_threshold": collector.steps_to_threshold,
            "threshold": module.threshold,
            "mean_return_last20": collector.recent_mean(),
            "env_steps": collector.env_steps,
            "episodes": len(collector.episodes),
            "updates": module.updates_done,
        }  # no steps/s here: the summary of a seed is reproducible (SPS is in the CSV)

    def figures(self, trainer, module: RLModule, datamodule, out_dir) -> list[Path]:
        out_dir = Path(out_dir)
        title = f"{module.cfg.algo.name} on {module.cfg.env.id}"
        paths = [
            return_curve(module.collector.episodes, module.history, module.threshold,
                         module.collector.window, title, out_dir / "returns.png"),
            gradient_variance(module.history, title, out_dir / "pg_grad_variance.png"),
        ]
        video = module.cfg.pipeline.get("video")
        if video and trainer.is_global_zero:
            path = record_episode(Policy.from_module(module), module.cfg.seed + EVAL_SEED_OFFSET,
                                  out_dir / f"eval.{video}")
            log.info("evaluation video: %s", path)
        return paths

    def evaluate(self, cfg, checkpoint: Path, run_dir: Path, options: dict) -> dict:
        """``adamlab eval``: episodes of the checkpoint's policy on the run's env, its
        observation statistics frozen. Defaults reproduce the run's own ``eval_return``
        (``pipeline.eval_episodes`` greedy episodes on the evaluation seeds)."""
        settings = {"episodes": cfg.pipeline.eval_episodes, "deterministic": True,
                    "seed": cfg.seed + EVAL_SEED_OFFSET, "video": None}
        for key, value in options.items():
            if key not in settings:
                raise ConfigError(key, value, "an eval option: " + ", ".join(settings))
            settings[key] = value
        _positive_int("episodes", settings["episodes"])
        _positive_int("seed", settings["seed"], 0)
        if not isinstance(settings["deterministic"], bool):
            raise ConfigError("deterministic", settings["deterministic"], "true or false")
        if settings["video"] not in (None, *VIDEO_FORMATS):
            raise ConfigError("video", settings["video"], "null, " + " or ".join(VIDEO_FORMATS))
        if settings["video"]:
            check_video(cfg.env, settings["video"], key="video")
        policy = Policy.from_checkpoint(checkpoint, cfg)
        returns = evaluate(policy, settings["episodes"], settings["seed"],
                           settings["deterministic"])
        result = {"checkpoint": str(checkpoint), "env": cfg.env.id, **settings,
                  "mean_return": float(returns.mean()), "std_return": float(returns.std()),
                  "returns": returns.tolist()}
        if settings["video"]:
            result["video"] = str(record_episode(policy, settings["seed"],
                                                 run_dir / f"eval.{settings['video']}",
                                                 settings["deterministic"]))
        return result
