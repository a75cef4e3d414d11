"""The LightningModule that runs any of the algorithms: one training_step per update.

The train dataloader only ticks (``data.rollouts.Updates``); training_step collects a fresh
rollout with the current policy, lets the algorithm update the agent through the library
optimizer (manual optimization, so clipping comes from the ``clip`` config via the chain,
and the lr schedule is stepped once per update), and logs what happened.
"""

from __future__ import annotations

import math
import time

import lightning as L
import numpy as np
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from data.rollouts import Updates
from pipelines.harness.optimizers import configure_optimizers
from pipelines.rl import algos
from pipelines.rl import envs as rl_envs
from pipelines.rl.agent import Agent
from pipelines.rl.collector import Collector
from pipelines.rl.diagnostics import pg_gradient_stats
from pipelines.rl.evaluate import evaluate
from pipelines.rl.history import History

EVAL_SEED_OFFSET = 10_000  # evaluation envs never share seeds with training envs


class RLModule(L.LightningModule):
    def __init__(self, cfg) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.cfg = cfg
        self.algo, self.hp = algos.resolve(cfg.algo)
        self.env_kwargs = rl_envs.make_kwargs(cfg.env)
        obs_space, action_space, _ = rl_envs.spaces(cfg.env.id, self.env_kwargs)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.agent = Agent(obs_space, action_space, self.hp.hidden,
                               critic=getattr(self.hp, "baseline", True))
        self.threshold = cfg.pipeline.get("threshold")
        if self.threshold is None:
            self.threshold = rl_envs.reward_threshold(cfg.env.id)
        self.total_timesteps = int(cfg.pipeline.total_timesteps)
        # Fixed-size rollouts give a known number of updates (the lr schedule's length);
        # REINFORCE's vary. Every run ends when the env-step budget is spent.
        n_steps = getattr(self.hp, "n_steps", None)
        self.num_updates = (math.ceil(self.total_timesteps / (cfg.env.num_envs * n_steps))
                            if n_steps else None)
        self.updates_done = 0
        self.history = History()
        self.collector: Collector | None = None
        self.generator: torch.Generator | None = None
        self._generator_state: torch.Tensor | None = None

    # ---- Lightning plumbing -------------------------------------------------------------
    # Order in fit: setup -> on_load_checkpoint -> configure_optimizers -> the first
    # dataloader fetch -> on_train_start. The envs exist from setup on, so a checkpoint can
    # restore them and the ticker can read the restored step count; the sampling generator
    # lives on the module's device, known only at on_train_start.
    def setup(self, stage: str) -> None:
        if self.collector is None:
            env = self.cfg.env
            envs = rl_envs.make(env.id, env.num_envs, env.get("vector", "sync"),
                                self.env_kwargs)
            self.collector = Collector(envs, self.hp.gamma, self.cfg.seed, self.threshold)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(Updates(self._epoch), batch_size=None)

    def _epoch(self):
        """An epoch spans about ``pipeline.steps_per_epoch`` env steps, so the harness's
        epoch-end checkpoints come that often. Lightning fetches one item ahead, so the count
        is checked one update early: an epoch runs one update past the mark (the same in a
        straight and a resumed run, which start the epoch from the same state)."""
        end = self.collector.env_steps + self.cfg.pipeline.steps_per_epoch
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

    def on_train_start(self) -> None:
        self.generator = torch.Generator(device=self.device).manual_seed(self.cfg.seed)
        if self._generator_state is not None:
            self.generator.set_state(self._generator_state)
        self._clock = (time.perf_counter(), self.collector.env_steps)

    def on_train_epoch_end(self) -> None:
        if self.collector.env_steps >= self.total_timesteps:  # also: resumed a finished run
            self.trainer.should_stop = True

    def on_train_end(self) -> None:
        self.collector.envs.close()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rl"] = {"updates_done": self.updates_done,
                            "history": self.history.state_dict(),
                            "generator": self.generator.get_state(),
                            "collector": self.collector.state_dict()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["rl"]
        self.updates_done = state["updates_done"]
        self.history.load_state_dict(state["history"])
        self.collector.load_state_dict(state["collector"])
        self._generator_state = state["generator"]

    # ---- one update ---------------------------------------------------------------------
    def _optimizer_step(self, loss: torch.Tensor) -> None:
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()

    def training_step(self, update: int, batch_idx: int) -> None:
        pipeline = self.cfg.pipeline
        episodes_before = len(self.collector.episodes)
        progress = (self.updates_done / self.num_updates if self.num_updates
                    else self.collector.env_steps / self.total_timesteps)
        lr = self.optimizers().param_groups[0]["lr"]

        rollout = self.algo.collect(self.collector, self.agent, self.hp, self.generator)
        batch = self.algo.prepare(self.agent, rollout, self.hp)
        metrics = {}
        if pipeline.pg_grad_every and self.updates_done % pipeline.pg_grad_every == 0:
            diag_generator = torch.Generator(device=self.device).manual_seed(
                self.cfg.seed * 1_000_003 + self.updates_done)  # leaves training RNG alone
            metrics |= pg_gradient_stats(self.agent, batch, pipeline.pg_grad_minibatches,
                                         diag_generator)
        metrics |= self.algo.update(self.agent, batch, self.hp, self._optimizer_step, progress,
                                    self.generator)
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        self.updates_done += 1

        finished = self.collector.episodes[episodes_before:]
        if finished:
            metrics["episodic_return"] = float(np.mean([ret for _, ret, _ in finished]))
            metrics["episodic_length"] = float(np.mean([length for _, _, length in finished]))
        recent = self.collector.recent_mean()
        if recent is not None:
            metrics["mean_return_last20"] = recent
        last = self.collector.env_steps >= self.total_timesteps
        if last:
            self.trainer.should_stop = True
        if last or (pipeline.eval_every and self.updates_done % pipeline.eval_every == 0):
            metrics["eval_return"] = float(self.evaluate().mean())
        start, start_steps = self._clock
        metrics |= {"env_steps": float(self.collector.env_steps), "lr": lr,
                    "sps": (self.collector.env_steps - start_steps)
                    / (time.perf_counter() - start)}
        self._log(metrics)
        self.history.append({"update": self.updates_done, **metrics})

    def _log(self, metrics: dict[str, float]) -> None:
        """Straight to the loggers, at the step Lightning's own logging and the LR monitor use
        (one per update): ``self.log`` costs about a millisecond per key, a tenth of a PPO
        update for these dozen keys. Only the return goes through it, for the progress bar."""
        if "episodic_return" in metrics:
            self.log("episodic_return", metrics["episodic_return"], prog_bar=True, logger=False,
                     on_step=True, on_epoch=False, batch_size=1)
        step = self.trainer.fit_loop.epoch_loop._batches_that_stepped
        for logger in self.loggers:
            logger.log_metrics(metrics, step=step)

    def evaluate(self) -> np.ndarray:
        """Greedy returns on fixed evaluation seeds."""
        return evaluate(self.agent, self.cfg.env.id, self.env_kwargs,
                        self.cfg.pipeline.eval_episodes, self.cfg.seed + EVAL_SEED_OFFSET)
