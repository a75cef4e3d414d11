"""Checkpoints a run can always continue from, and the choice of which one it continues from.

Every checkpoint is written *between* optimizer steps (at the start of the next training batch,
or when training ends): everything before it, logged rows included, is done and flushed, and
nothing after it has started. A resumed run therefore repeats nothing and skips nothing.

- ``checkpoints/last.ckpt`` every ``checkpoint_every`` (``1``: epochs; ``"500 steps"``,
  ``"30 s"``, ``"10 min"``) and when training ends;
- ``hpc_ckpt_N.ckpt`` (run dir) at the next step after SIGUSR1 (Slurm's warning before a time
  limit or a preemption); the last two are kept;
- ``checkpoints/best-*.ckpt`` by the pipeline's monitor (Lightning's ``ModelCheckpoint``).

Each carries an ``adamlab`` header: schema version, pipeline, the model/optim/data config and
its hash, the logger step it resumes at. Rerunning a command into its run dir continues from
the newest checkpoint there that loads (:func:`choose`); an explicit ``resume=`` is used only
where it is newer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Checkpoint
from omegaconf import DictConfig, OmegaConf

from . import slurm
from .callbacks import logger_step
from .checkpoint_io import CHECKPOINT, load
from .errors import ConfigError, FileError
from .files import TMP_PREFIX, TMP_SUFFIX

log = logging.getLogger(__name__)

SCHEMA = 1
HEADER = "adamlab"
HPC = re.compile(r"hpc_ckpt_(\d+)\.ckpt")
KEEP_HPC = 2
STARTED = time.time()  # this process: older temporary files are torn writes of killed ones
# what a resumed run must share with its checkpoint: the model/optim/data config ...
TRACKED = ("pipeline", "model", "data", "optim", "clip", "schedule", "algo", "env")
# ... except keys that only say how long to train, what to report or where files live
UNTRACKED = ("pipeline.total_timesteps", "pipeline.eval_every", "pipeline.eval_episodes",
             "pipeline.video", "pipeline.num_workers", "pipeline.threshold", "pipeline.monitor",
             "pipeline.monitor_mode", "data.cache_dir", "data.root", "data.raw_dir",
             "data.download")


# ---- the interval -------------------------------------------------------------------------
UNITS = {"epoch": "epochs", "epochs": "epochs", "step": "steps", "steps": "steps",
         "s": "seconds", "sec": "seconds", "second": "seconds", "seconds": "seconds",
         "min": "minutes", "minute": "minutes", "minutes": "minutes", "h": "hours",
         "hour": "hours", "hours": "hours"}
SECONDS = {"seconds": 1, "minutes": 60, "hours": 3600}
EVERY_ALLOWED = ("a number of epochs (1), or a number with a unit: '200 steps', '30 s', "
                 "'10 min', '1 h', '2 epochs'")


@dataclass(frozen=True)
class Interval:
    """How often ``last.ckpt`` is written: every ``amount`` epochs, steps or seconds."""

    amount: float
    unit: str  # epochs | steps | seconds

    @classmethod
    def parse(cls, value) -> Interval:
        if isinstance(value, int) and not isinstance(value, bool):
            amount, unit = value, "epochs"
        else:
            found = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([a-z]+)\s*", str(value))
            if value is None or not found or found[2] not in UNITS:
                raise ConfigError("checkpoint_every", value, EVERY_ALLOWED)
            amount, unit = float(found[1]), UNITS[found[2]]
        if unit in SECONDS:
            amount, unit = amount * SECONDS[unit], "seconds"
        elif amount != int(amount):
            raise ConfigError("checkpoint_every", value, f"a whole number of {unit}")
        if amount <= 0:
            raise ConfigError("checkpoint_every", value, EVERY_ALLOWED + ", above zero")
        return cls(amount, unit)


# ---- the header ---------------------------------------------------------------------------
def tracked_config(cfg) -> dict:
    """The model/optim/data config as flat dotted keys (``optim.lr``: 0.001, ...)."""
    flat: dict = {}

    def walk(prefix: str, node) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(f"{prefix}.{key}", value)
        elif prefix not in UNTRACKED:
            flat[prefix] = node

    for group in TRACKED:
        node = cfg.get(group)
        if isinstance(node, DictConfig):
            node = OmegaConf.to_container(node, resolve=True, throw_on_missing=False)
        if node is not None:
            walk(group, node)
    return flat


def config_hash(flat: dict) -> str:
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:16]


def make_header(cfg, wandb_id: str | None) -> dict:
    flat = tracked_config(cfg)
    return {"schema": SCHEMA, "pipeline": cfg.pipeline.name, "config_hash": config_hash(flat),
            "config": flat, "wandb_id": wandb_id}


@dataclass
class Found:
    """A checkpoint that loads, with what the choice and the resumed run need from it."""

    path: Path
    header: dict
    progress: tuple  # (optimizer steps, epoch, logger step, time saved): newest is largest

    @property
    def next_step(self) -> int:
        return int(self.header.get("next_step", 0))


def read(path) -> Found:
    """A checkpoint's header and progress; FileError if it is truncated, foreign, pickled
    code or from a newer adamlab."""
    path = Path(path)
    ckpt = load(path, mmap=True)
    header = ckpt.get(HEADER)
    if not isinstance(header, dict) or not isinstance(header.get("schema"), int):
        raise FileError(path, "not written by `adamlab train` (no 'adamlab' header)", CHECKPOINT)
    if header["schema"] > SCHEMA:
        raise FileError(path, f"written by a newer adamlab (checkpoint schema "
                        f"{header['schema']}, this version reads up to {SCHEMA})",
                        f"a checkpoint of schema <= {SCHEMA}, or a newer adamlab")
    try:
        progress = (int(ckpt["global_step"]), int(ckpt["epoch"]), int(header["next_step"]),
                    float(header["saved_at"]))
    except (KeyError, TypeError, ValueError):
        raise FileError(path, "its header or training progress is incomplete",
                        CHECKPOINT) from None
    return Found(path, header, progress)


def candidates(run_dir: Path) -> list[Path]:
    """The checkpoints a run dir may continue from: last.ckpt and hpc_ckpt_N.ckpt (exact
    names, so no temporary file or ``last-v1.ckpt`` qualifies)."""
    found = [p for p in Path(run_dir).glob("hpc_ckpt_*.ckpt") if HPC.fullmatch(p.name)]
    last = Path(run_dir) / "checkpoints" / "last.ckpt"
    return ([last] if last.is_file() else []) + sorted(found)


def newest_in(run_dir: Path, *, quiet: bool = False) -> Found | None:
    """The newest checkpoint of a run dir that loads; the others are reported and skipped."""
    loaded = []
    for path in candidates(run_dir):
        try:
            loaded.append(read(path))
        except FileError as error:
            if not quiet:
                log.warning("skipping a checkpoint that does not load: %s", error)
    return max(loaded, key=lambda f: f.progress, default=None)


def choose(cfg, run_dir: Path) -> Found | None:
    """What this run continues from: the newest loadable checkpoint of its own run dir, or the
    ``resume=`` checkpoint (a file, or a run dir's newest) where that is newer. It must belong
    to the same pipeline and config (``resume_accept_changes`` lists keys allowed to differ).
    """
    own = newest_in(run_dir)
    explicit = None
    if cfg.get("resume") is not None:
        given = Path(str(cfg.resume)).expanduser()
        if given.is_dir():
            explicit = newest_in(given, quiet=given.resolve() == Path(run_dir).resolve())
            if explicit is None:
                raise FileError(given, "holds no checkpoint that loads",
                                "a .ckpt file, or a run directory with checkpoints/last.ckpt "
                                "or hpc_ckpt_N.ckpt (key: resume)")
        elif given.is_file() or given.suffix == ".ckpt":
            explicit = read(given)
        else:
            raise ConfigError("resume", str(cfg.resume),
                              "a .ckpt file or a run directory holding checkpoints/last.ckpt")
    chosen = max((f for f in (explicit, own) if f is not None), key=lambda f: f.progress,
                 default=None)  # max keeps the first of equals: ties go to the explicit one
    if chosen is not None:
        check_compatible(cfg, chosen)
    return chosen


def check_compatible(cfg, found: Found) -> None:
    header = found.header
    if header.get("pipeline") != cfg.pipeline.name:
        raise FileError(found.path, f"a checkpoint of pipeline={header.get('pipeline')}, "
                        f"not pipeline={cfg.pipeline.name}", "a checkpoint of the same pipeline")
    now = tracked_config(cfg)  # an older checkpoint may hold keys untracked since then
    before = {k: v for k, v in (header.get("config") or {}).items() if k not in UNTRACKED}
    accepted = [str(k) for k in cfg.get("resume_accept_changes") or []]
    changed = [k for k in sorted(before.keys() | now.keys())
               if before.get(k, "<unset>") != now.get(k, "<unset>")
               and not any(k == a or k.startswith(a + ".") for a in accepted)]
    if changed:
        shown = "; ".join(f"{k}: {before.get(k, '<unset>')!r} -> {now.get(k, '<unset>')!r}"
                          for k in changed[:8]) + ("; ..." if len(changed) > 8 else "")
        raise FileError(found.path, f"written with another config ({len(changed)} changed: "
                        f"{shown})", "the config the checkpoint was written with, or "
                        f"resume_accept_changes=[{','.join(changed)}] to continue anyway")


# ---- writing ------------------------------------------------------------------------------
class RunCheckpoints(Checkpoint):
    """Writes ``last.ckpt`` and ``hpc_ckpt_N.ckpt`` between optimizer steps (module doc).

    Ranks decide together (any rank's signal or clock counts), so DDP never deadlocks in a
    save only some ranks entered.
    """

    def __init__(self, run_dir: Path, interval: Interval, header: dict, max_requeues: int):
        self.run_dir, self.interval, self.header = Path(run_dir), interval, header
        self.max_requeues = max_requeues
        self.last_path = self.run_dir / "checkpoints" / "last.ckpt"
        self._between_steps = False
        self._kind = "last"
        self._resumed_between_steps = False

    # Lightning wants a stable key for this callback's (empty) state
    @property
    def state_key(self) -> str:
        return "RunCheckpoints"

    def on_fit_start(self, trainer, pl_module):
        self._saved_step = trainer.global_step
        self._saved_time = time.monotonic()
        if trainer.is_global_zero:
            remove_torn_writes(self.run_dir)

    def on_train_start(self, trainer, pl_module):
        self._saved_step = trainer.global_step
        self._saved_time = time.monotonic()
        if self._resumed_between_steps:
            _resume_data_mid_epoch(trainer)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        self._resumed_between_steps = bool(checkpoint.get(HEADER, {}).get("between_steps"))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._resumed_between_steps:
            # Lightning skips epoch-end plateau schedulers in the epoch it restarts in (its own
            # checkpoints are written before them); ours were written after: step them as usual
            trainer.fit_loop._restarting = False
            self._resumed_between_steps = False
        if trainer.global_step == self._saved_step:
            return  # nothing new since the last save (the first batch of a run, or resumed)
        signalled = slurm.pending()
        due = signalled or self._due(trainer)
        if not trainer.strategy.reduce_boolean_decision(due, all=False):
            return
        if trainer.strategy.reduce_boolean_decision(signalled, all=False):
            path = self._save(trainer, self._next_hpc_path(), "hpc")
            self._prune_hpc()
            slurm.clear()
            slurm.after_signal_checkpoint(trainer, path, self.max_requeues)
        else:
            self._save(trainer, self.last_path, "last")

    def on_train_end(self, trainer, pl_module):
        self._save(trainer, self.last_path, "last", between_steps=False)

    def _due(self, trainer) -> bool:
        unit, amount = self.interval.unit, self.interval.amount
        if unit == "steps":
            return trainer.global_step - self._saved_step >= amount
        if unit == "seconds":
            return time.monotonic() - self._saved_time >= amount
        epoch_loop = trainer.fit_loop.epoch_loop
        return (epoch_loop.batch_progress.current.completed == 0  # first batch of an epoch
                and trainer.current_epoch % int(amount) == 0)

    def _save(self, trainer, path: Path, kind: str, between_steps: bool = True) -> Path:
        for logger in trainer.loggers:  # every row before this point is on disk first
            logger.save()
        self._between_steps, self._kind = between_steps, kind
        try:
            trainer.save_checkpoint(path)
        finally:
            self._between_steps = False
        self._saved_step, self._saved_time = trainer.global_step, time.monotonic()
        return path

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        """The header, on every checkpoint (best ones too). A save between steps stores the
        loop state of the end of the previous step, as Lightning's restart logic reads it."""
        checkpoint[HEADER] = {**self.header, "next_step": logger_step(trainer),
                              "saved_at": time.time(), "kind": self._kind,
                              "between_steps": self._between_steps}
        self._kind = "best"  # Lightning's ModelCheckpoint saves without telling us
        if self._between_steps:
            fit = checkpoint["loops"]["fit_loop"]
            # at a batch start the logger step already counts the previous batch, and a
            # restarted epoch loop adds one more: store the value before the increment
            fit["epoch_loop.state_dict"]["_batches_that_stepped"] -= 1
            fit["epoch_loop.batch_progress"]["is_last_batch"] = False

    def _next_hpc_path(self) -> Path:
        numbers = [int(HPC.fullmatch(p.name)[1]) for p in candidates(self.run_dir)
                   if HPC.fullmatch(p.name)]
        return self.run_dir / f"hpc_ckpt_{max(numbers, default=0) + 1}.ckpt"

    def _prune_hpc(self) -> None:
        hpc = sorted((int(HPC.fullmatch(p.name)[1]), p) for p in candidates(self.run_dir)
                     if HPC.fullmatch(p.name))
        for _, path in hpc[:-KEEP_HPC]:
            path.unlink(missing_ok=True)


def remove_torn_writes(run_dir: Path) -> None:
    """Temporary files that a killed attempt left behind (never a checkpoint: see files.py)."""
    for folder in (run_dir, run_dir / "checkpoints", run_dir / "csv"):
        for path in folder.glob(f"{TMP_PREFIX}*{TMP_SUFFIX}"):
            if path.stat().st_mtime < STARTED:
                path.unlink(missing_ok=True)


def _resume_data_mid_epoch(trainer) -> None:
    """A run resumed between two steps of an epoch continues with the epoch's next batch.

    Lightning restores its counters but starts the epoch's loader from the beginning (unless
    the loader itself is stateful). Loaders whose order is a function of (seed, epoch)
    (``data.sampling.EpochShuffle``, or no shuffling) are rebuilt for this epoch and the
    batches already trained on are drawn and dropped. Iterable datasets carry their own
    position (RL's update ticker) and are left alone.
    """
    done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
    total = trainer.num_training_batches
    if not (0 < done < total) or math.isinf(total):
        return
    fetcher = trainer.fit_loop._data_fetcher
    for loader in trainer.fit_loop._combined_loader.flattened:
        for sampler in (getattr(loader, "sampler", None),
                        getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
            if callable(getattr(sampler, "set_epoch", None)):
                sampler.set_epoch(trainer.current_epoch)
    iter(fetcher)  # a fresh iterator (and workers) over this epoch's order
    with torch.no_grad():
        for _ in range(done):
            next(fetcher.iterator)
    log.info("resumed mid-epoch: skipped the %d batches of epoch %d trained before", done,
             trainer.current_epoch)
