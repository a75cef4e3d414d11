"""The LightningModule that runs any of the algorithms: one training_step per update.

The train dataloader only ticks (``data.rollouts.Updates``); training_step collects a fresh
rollout with the current policy, lets the algorithm update the agent through the library
optimizer (manual optimization, so clipping comes from the ``clip`` config via the chain,
and the lr schedule is stepped once per update), and logs what happened.

Logging follows CleanRL: ``charts/...`` and ``losses/...`` names, one row per update filed
under the global env steps before its rollout (``log_step``: the CSV's ``step`` column, W&B's
``global_step`` axis, and the step a resumed run continues its logs from).

DDP: every rank steps envs of its own (env and sampling seeds offset by rank), and the
gradients of each minibatch are averaged over the ranks before the optimizer step
(``manual_backward`` under Lightning's DDP), so an update learns from ``world_size`` times
the samples and the weights stay identical; ``pipeline.total_timesteps`` and every step
count are global (all ranks' env steps), so N ranks spend the budget in 1/N of the updates.
Rank 0 evaluates, logs and reports its own episodes; the normalisation statistics are per
rank (each estimates the same running moments).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from data.rollouts import Updates
from pipelines.harness.errors import ConfigError, FileError
from pipelines.harness.optimizers import configure_optimizers
from pipelines.rl import algos
from pipelines.rl import envs as rl_envs
from pipelines.rl.agent import Agent
from pipelines.rl.collector import Collector
from pipelines.rl.diagnostics import pg_gradient_stats
from pipelines.rl.evaluate import evaluate
from pipelines.rl.history import History
from pipelines.rl.normalize import Normalizer
from pipelines.rl.policy import Policy

EVAL_SEED_OFFSET = 10_000  # evaluation envs never share seeds with training envs
METRIC_PREFIXES = ("charts", "losses", "eval", "diagnostics")


def normalizer_for(cfg, obs_shape: tuple[int, ...], num_envs: int, gamma: float) -> Normalizer:
    env = cfg.env
    return Normalizer(obs_shape, num_envs, gamma, obs=bool(env.normalize_obs),
                      reward=bool(env.normalize_reward), clip_obs=float(env.clip_obs),
                      clip_reward=float(env.clip_reward))


class RLModule(L.LightningModule):
    def __init__(self, cfg) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.cfg = cfg
        self.algo, self.hp = algos.resolve(cfg.algo)
        self.env_kwargs = rl_envs.make_kwargs(cfg.env)
        self.wrappers = rl_envs.wrapper_specs(cfg.env)
        obs_space, action_space, _ = rl_envs.spaces(cfg.env.id, self.env_kwargs, self.wrappers)
        self.obs_shape = obs_space.shape
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.agent = Agent(obs_space, action_space, self.hp.hidden,
                               critic=getattr(self.hp, "baseline", True))
        self.threshold = cfg.pipeline.get("threshold")
        if self.threshold is None:
            self.threshold = rl_envs.reward_threshold(cfg.env.id)
        self.total_timesteps = int(cfg.pipeline.total_timesteps)
        self.num_updates: int | None = None
        self.updates_done = 0
        self._epoch_start = 0  # env steps when the current epoch began
        self._update_start: int | None = None  # env steps before the update in progress
        self.history = History()
        self.collector: Collector | None = None
        self.generator: torch.Generator | None = None
        self._generator_state: torch.Tensor | None = None

    @property
    def log_step(self) -> int:
        """The step rows are filed under (``pipelines.harness.callbacks.logger_step``): the
        global env steps before the update in progress, or the current ones between updates."""
        if self._update_start is not None:
            return self._update_start
        return self.collector.env_steps if self.collector is not None else 0

    # ---- Lightning plumbing -------------------------------------------------------------
    # Order in fit: setup -> on_load_checkpoint -> configure_optimizers -> the first
    # dataloader fetch -> on_train_start. The envs exist from setup on, so a checkpoint can
    # restore them and the ticker can read the restored step count; the sampling generator
    # lives on the module's device, known only at on_train_start.
    def setup(self, stage: str) -> None:
        if self.collector is not None:
            return
        env, world = self.cfg.env, self.trainer.world_size
        self.rank_seed = self.cfg.seed + self.global_rank * env.num_envs
        envs = rl_envs.make(env.id, env.num_envs, env.get("vector", "sync"), self.env_kwargs,
                            self.wrappers)
        self.collector = Collector(envs, self.hp.gamma, self.rank_seed, self.threshold,
                                   normalizer=normalizer_for(self.cfg, self.obs_shape,
                                                             env.num_envs, self.hp.gamma),
                                   step_scale=world)
        # Fixed-size rollouts give a known number of updates (the lr schedule's length);
        # REINFORCE's vary. Every run ends when the env-step budget is spent.
        n_steps = getattr(self.hp, "n_steps", None)
        if n_steps:
            self.num_updates = math.ceil(self.total_timesteps / (env.num_envs * n_steps * world))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(Updates(self._epoch), batch_size=None)

    def _epoch(self):
        """An epoch spans about ``pipeline.steps_per_epoch`` env steps, so the harness's
        epoch-end checkpoints come that often. Lightning fetches one item ahead, so the count
        is checked one update early: an epoch runs one update past the mark (the same in a
        straight and a resumed run, which start the epoch from the same state; a run resumed
        mid-epoch continues the epoch it was in, whose start the checkpoint holds)."""
        end = self._epoch_start + self.cfg.pipeline.steps_per_epoch
        update = self.updates_done
        while self.collector.env_steps < min(end, self.total_timesteps):
            yield update
            update += 1

    def configure_optimizers(self):
        """The ``optim``/``clip``/``schedule`` groups; ``algo.anneal_lr`` stands for
        ``schedule=linear`` (to zero), stepped once per update."""
        cfg = self.cfg
        if getattr(self.hp, "anneal_lr", False):
            cfg = OmegaConf.create({
                "optim": OmegaConf.to_container(cfg.optim, resolve=True),
                "clip": OmegaConf.to_container(cfg.clip, resolve=True) if cfg.get("clip")
                else None,
                "schedule": {"name": "linear", "end_factor": 0.0}})
        return configure_optimizers(self, cfg, self.num_updates)

    def on_fit_start(self) -> None:
        """W&B plots every RL metric against the env steps (``global_step``)."""
        for logger in self.loggers:
            define = getattr(getattr(logger, "experiment", None), "define_metric", None)
            if not self.trainer.is_global_zero or define is None:
                continue
            try:
                define("global_step")
                for prefix in (*METRIC_PREFIXES, "optim"):
                    define(f"{prefix}/*", step_metric="global_step")
            except Exception as error:  # noqa: BLE001 - logging must never kill training
                self.print(f"W&B define_metric failed ({error!r}); its x axis stays the step")

    def on_train_start(self) -> None:
        self.generator = torch.Generator(device=self.device).manual_seed(self.rank_seed)
        if self._generator_state is not None:
            self.generator.set_state(self._generator_state)
        self._clock = (time.perf_counter(), self.collector.env_steps)

    def on_train_epoch_end(self) -> None:
        self._epoch_start = self.collector.env_steps
        if self.collector.env_steps >= self.total_timesteps:  # also: resumed a finished run
            self.trainer.should_stop = True

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self._update_start = None  # after the callbacks' rows (telemetry) of this update

    def on_train_end(self) -> None:
        """Close the envs; rank 0 exports the policy as ``policy.pt`` in the run dir."""
        self.collector.envs.close()
        if self.trainer.is_global_zero:
            Policy.from_module(self).save(Path(self.trainer.default_root_dir) / "policy.pt")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rl"] = {"updates_done": self.updates_done, "epoch_start": self._epoch_start,
                            "history": self.history.state_dict(),
                            "generator": self.generator.get_state(),
                            "collector": self.collector.state_dict()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        try:
            state = checkpoint["rl"]
            self.updates_done = state["updates_done"]
            self._epoch_start = state["epoch_start"]
            self.history.load_state_dict(state["history"])
            self.collector.load_state_dict(state["collector"])
            self._generator_state = state["generator"]
        except ConfigError:
            raise
        except (KeyError, TypeError, ValueError) as error:
            raise FileError(self.trainer.ckpt_path, f"its RL state does not fit this run "
                            f"({type(error).__name__}: {error})",
                            "a checkpoint that `adamlab train pipeline=rl` wrote for this "
                            "config") from None

    # ---- one update ---------------------------------------------------------------------
    def _optimizer_step(self, loss: torch.Tensor) -> None:
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(loss)  # under DDP: averaged over the ranks (Lightning arms DDP)
        opt.step()

    def _all_mean(self, value: torch.Tensor) -> torch.Tensor:
        if self.trainer.world_size == 1:
            return value
        return self.trainer.strategy.reduce(value.detach().float(), reduce_op="mean")

    def training_step(self, update: int, batch_idx: int) -> None:
        pipeline = self.cfg.pipeline
        self._update_start = self.collector.env_steps
        episodes_before = len(self.collector.episodes)
        progress = (self.updates_done / self.num_updates if self.num_updates
                    else self.collector.env_steps / self.total_timesteps)
        lr = self.optimizers().param_groups[0]["lr"]

        rollout = self.algo.collect(self.collector, self.agent, self.hp, self.generator)
        batch = self.algo.prepare(self.agent, rollout, self.hp)
        metrics = {}
        if pipeline.pg_grad_every and self.updates_done % pipeline.pg_grad_every == 0:
            diag_generator = torch.Generator(device=self.device).manual_seed(
                self.rank_seed * 1_000_003 + self.updates_done)  # leaves training RNG alone
            metrics |= {f"diagnostics/{key}": value for key, value in pg_gradient_stats(
                self.agent, batch, pipeline.pg_grad_minibatches, diag_generator).items()}
        metrics |= self.algo.update(self.agent, batch, self.hp, self._optimizer_step, progress,
                                    self.generator, all_mean=self._all_mean)
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        self.updates_done += 1

        finished = self.collector.episodes[episodes_before:]
        if finished:
            metrics["charts/episodic_return"] = float(np.mean([ret for _, ret, _ in finished]))
            metrics["charts/episodic_length"] = float(np.mean([n for _, _, n in finished]))
        recent = self.collector.recent_mean()
        if recent is not None:
            metrics["charts/mean_return_last20"] = recent
        last = self.collector.env_steps >= self.total_timesteps
        if last:
            self.trainer.should_stop = True
        if self.trainer.is_global_zero and (
                last or (pipeline.eval_every and self.updates_done % pipeline.eval_every == 0)):
            metrics["eval/episodic_return"] = float(self.evaluate().mean())
        start, start_steps = self._clock
        metrics |= {"global_step": float(self.log_step),
                    "charts/learning_rate": lr,
                    "charts/SPS": (self.collector.env_steps - start_steps)
                    / (time.perf_counter() - start)}
        self._log(metrics)
        self.history.append({"charts/updates": self.updates_done, **metrics})

    def _log(self, metrics: dict[str, float]) -> None:
        """Straight to the loggers, one row per update at ``log_step``: ``self.log`` costs
        about a millisecond per key, a tenth of a PPO update for these dozen keys. Only the
        return goes through it, for the progress bar."""
        if "charts/episodic_return" in metrics:
            self.log("episodic_return", metrics["charts/episodic_return"], prog_bar=True,
                     logger=False, on_step=True, on_epoch=False, batch_size=1)
        if self.trainer.is_global_zero:
            for logger in self.loggers:
                logger.log_metrics(metrics, step=self.log_step)

    def evaluate(self) -> np.ndarray:
        """Greedy returns on fixed evaluation seeds, observations normalised with the
        training statistics, frozen."""
        return evaluate(Policy.from_module(self), self.cfg.pipeline.eval_episodes,
                        self.cfg.seed + EVAL_SEED_OFFSET)
