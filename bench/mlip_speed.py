"""Speed of the mlip pipeline against a plain-PyTorch loop of the same model, data and optimizer.

Both sides share one model (copied), one DataLoader of precomputed neighbour lists and the same
optimizer config (``pipelines.harness.optimizers.build_optimizer``, the chain the pipeline
uses). Figures:

- training throughput (structures/s): Lightning ``Trainer.fit`` of ``MLIPModule`` (its per-step
  logging and a CSV logger on, as in a run) vs ``zero_grad / loss / backward / step``;
- ms per structure of a force evaluation over the validation split: ``Trainer.validate`` vs a
  plain loop, and ms per ``get_forces`` of the ASE calculator on a 32-atom cell (the MD use);
- the optimizer step's share of a training step (plain loop, timed separately).

The two sides alternate for ``--rounds`` rounds and the median epoch is reported, so load from
other processes on a shared machine hits both alike.

    python bench/mlip_speed.py [--threads 1] [--rounds 3] [--epochs 2] [--structures 256]
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from statistics import median

import lightning as L
import torch
from ase.build import bulk
from hydra import compose, initialize_config_dir
from lightning.pytorch.loggers import CSVLogger

from pipelines.harness.optimizers import build_optimizer
from pipelines.mlip.calculator import MLIPCalculator
from pipelines.mlip.pipeline import MLIPPipeline
from pipelines.train import CONFIGS


class EpochTimer(L.Callback):
    """Wall time of each training or validation epoch, hooks to hooks: what a run pays per
    epoch, without the one-off setup of a ``Trainer`` call."""

    def __init__(self):
        self.times: list[float] = []

    def _start(self, *_):
        self._started = time.perf_counter()

    def _stop(self, *_):
        self.times.append(time.perf_counter() - self._started)

    on_train_epoch_start = on_validation_epoch_start = _start
    on_train_epoch_end = on_validation_epoch_end = _stop


def lightning_epochs(module, datamodule, epochs: int, log_dir: str) -> list[float]:
    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=epochs, limit_val_batches=0, logger=CSVLogger(log_dir), callbacks=[timer],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        log_every_n_steps=1, inference_mode=False,
    )
    trainer.fit(module, datamodule=datamodule)
    return timer.times


def plain_epochs(model, loss_fn, opt, loader, epochs: int) -> tuple[list[float], list[float]]:
    """Epoch times and the optimizer-step time within each epoch."""
    model.train()
    epoch_times, opt_times = [], []
    for _ in range(epochs):
        start, in_opt = time.perf_counter(), 0.0
        for batch in loader:
            opt.zero_grad(set_to_none=True)
            loss_fn(model(batch), batch)["loss"].backward()
            t = time.perf_counter()
            opt.step()
            in_opt += time.perf_counter() - t
        epoch_times.append(time.perf_counter() - start)
        opt_times.append(in_opt)
    return epoch_times, opt_times


def plain_eval_seconds(model, loader) -> float:
    model.eval()
    start = time.perf_counter()
    for batch in loader:
        model(batch)
    return time.perf_counter() - start


def calculator_ms(model, element: str, repeats: int = 50) -> float:
    atoms = bulk(element, "fcc", cubic=True).repeat(2)
    atoms.calc = MLIPCalculator.from_model(model)
    atoms.get_forces()
    start = time.perf_counter()
    for _ in range(repeats):
        atoms.positions[0, 0] += 1e-6  # defeat the result cache
        atoms.get_forces()
    return 1000 * (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2, help="per round and side")
    parser.add_argument("--structures", type=int, default=256, help="training structures")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=painn")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        # no validation while timing training, so no plateau schedule to feed
        cfg = compose("train", ["pipeline=mlip", "schedule=none", *args.overrides])
    pipeline = MLIPPipeline()
    pipeline.validate(cfg)
    L.seed_everything(0, verbose=False)
    module, datamodule = pipeline.build(cfg)
    datamodule.train_structures = datamodule.train_structures[: args.structures]
    datamodule.val_structures = datamodule.val_structures[:64]
    datamodule.setup()

    model = copy.deepcopy(module.model)
    opt = build_optimizer(model.parameters(), cfg.optim, cfg.get("clip"))
    train_loader, val_loader = datamodule.train_dataloader(), datamodule.val_dataloader()
    n_train, n_val = len(datamodule.datasets["train"]), len(datamodule.datasets["val"])

    lightning_t, plain_t, opt_t, lightning_val, plain_val = [], [], [], [], []
    with tempfile.TemporaryDirectory() as log_dir:
        for _ in range(args.rounds):
            lightning_t += lightning_epochs(module, datamodule, args.epochs, log_dir)[1:]
            epochs, in_opt = plain_epochs(model, module.loss_fn, opt, train_loader, args.epochs)
            plain_t += epochs[1:]
            opt_t += [o / e for o, e in zip(in_opt[1:], epochs[1:], strict=True)]
            timer = EpochTimer()
            trainer = L.Trainer(logger=False, enable_progress_bar=False, inference_mode=False,
                                enable_model_summary=False, callbacks=[timer])
            trainer.validate(module, datamodule=datamodule, verbose=False)
            lightning_val += timer.times
            plain_val.append(plain_eval_seconds(model, val_loader))

    lightning_rate = n_train / median(lightning_t)
    plain_rate = n_train / median(plain_t)
    report = {
        "threads": args.threads,
        "model": dict(cfg.model),
        "batch_size": cfg.pipeline.batch_size,
        "optimizer": cfg.optim.name,
        "train_structures": n_train,
        "train_structures_per_s_lightning": round(lightning_rate, 2),
        "train_structures_per_s_plain": round(plain_rate, 2),
        "train_time_ratio_lightning_over_plain": round(plain_rate / lightning_rate, 3),
        "optimizer_step_share_of_train_step": round(median(opt_t), 4),
        "eval_ms_per_structure_lightning": round(1000 * median(lightning_val) / n_val, 3),
        "eval_ms_per_structure_plain": round(1000 * median(plain_val) / n_val, 3),
        "eval_time_ratio_lightning_over_plain": round(
            median(lightning_val) / median(plain_val), 3
        ),
        "calculator_ms_per_force_call_32_atoms": round(
            calculator_ms(module.model, cfg.data.element), 3
        ),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
