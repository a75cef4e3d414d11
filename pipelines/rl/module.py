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
        # Fixed-size rollouts give a known number of updates; REINFORCE's vary, so its
        # ticker runs to an upper bound (>= 1 vector step per update) and the run stops when
        # the env-step budget is spent.
        n_steps = getattr(self.hp, "n_steps", None)
        batch = cfg.env.num_envs * n_steps if n_steps else None
        self.num_updates = math.ceil(self.total_timesteps / batch) if batch else None
        self.max_updates = self.num_updates or math.ceil(self.total_timesteps / cfg.env.num_envs)
        self.updates_done = 0
        self.history: list[dict] = []  # one row per update, for the figures
        self.collector: Collector | None = None
        self.generator: torch.Generator | None = None
        self._restored: dict | None = None

    # ---- Lightning plumbing -------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        """An epoch is ``pipeline.updates_per_epoch`` updates, so the harness's epoch-end
        checkpoints come that often; the run stops when the env-step budget is spent."""
        per_epoch = self.cfg.pipeline.updates_per_epoch
        return DataLoader(Updates(lambda: range(
            self.updates_done, min(self.updates_done + per_epoch, self.max_updates))),
            batch_size=None)

    def configure_optimizers(self):
        """The ``optim``/``clip``/``schedule`` groups; ``algo.anneal_lr`` stands for
        ``schedule=linear`` (to zero), stepped once per update."""
        cfg = self.cfg
        if getattr(self.hp, "anneal_lr", False):
            cfg = OmegaConf.create({"optim": cfg.optim, "clip": cfg.get("clip"),
                                    "schedule": {"name": "linear", "end_factor": 0.0}})
        return configure_optimizers(self, cfg, self.num_updates)

    def on_train_start(self) -> None:
        """Envs and the sampling generator live on this process and device, and are
        restored from the checkpoint here, after Lightning has loaded it."""
        env = self.cfg.env
        envs = rl_envs.make(env.id, env.num_envs, env.get("vector", "sync"), self.env_kwargs)
        self.collector = Collector(envs, self.hp.gamma, self.cfg.seed, self.threshold)
        self.generator = torch.Generator(device=self.device).manual_seed(self.cfg.seed)
        if self._restored is not None:
            self.collector.load_state_dict(self._restored["collector"])
            self.generator.set_state(self._restored["generator"])
            self._restored = None
        self._clock = (time.perf_counter(), self.collector.env_steps)

    def on_train_epoch_end(self) -> None:
        if self.collector.env_steps >= self.total_timesteps:  # also: resumed a finished run
            self.trainer.should_stop = True

    def on_train_end(self) -> None:
        self.collector.envs.close()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rl"] = {"updates_done": self.updates_done, "history": self.history,
                            "generator": self.generator.get_state(),
                            "collector": self.collector.state_dict()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["rl"]
        self.updates_done, self.history = state["updates_done"], state["history"]
        self._restored = state

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
        self.log_dict(metrics, on_step=True, on_epoch=False, batch_size=1)
        self.history.append({"update": self.updates_done, **metrics})

    def evaluate(self, episodes: int | None = None) -> np.ndarray:
        """Greedy returns on fixed evaluation seeds."""
        return evaluate(self.agent, self.cfg.env.id, self.env_kwargs,
                        episodes or self.cfg.pipeline.eval_episodes,
                        self.cfg.seed + EVAL_SEED_OFFSET)
