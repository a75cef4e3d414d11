"""LightningModule that trains an interatomic potential on energies, forces and stresses.

The optimizer, its gradient/update clipping and the LR schedule all come from the config groups
(``optim``, ``clip``, ``schedule``) through the harness, so that clip placement is a property of
the optimizer chain and never a hand-written ``clip_grad_norm_`` here. What this module owns is
the loss (force-residual clipping and the late energy-weight stage included) and the metrics:
loss parts, the fraction of atoms whose residual was capped, the fraction of training structures
the max-force filter dropped, and energy/force/stress errors on validation and test. Gradient
norms before and after clipping are the harness's optimizer telemetry (``optim/g0/grad_norm``),
not logged twice here.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer
from omegaconf import DictConfig, OmegaConf

from pipelines.harness.optimizers import configure_optimizers
from pipelines.mlip.losses import EnergyForceLoss
from pipelines.mlip.metrics import EnergyForceMetrics
from pipelines.mlip.models import AtomisticModel, build_model

DTYPES = {"float32": torch.float32, "float64": torch.float64}
FLOAT64_LABELS = ("energy",)  # absolute energies stay float64 (see AtomisticModel)


def plain_config(cfg) -> dict:
    """A resolved plain dict, so checkpoints hold no OmegaConf objects (weights-only loadable)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg)


def training_progress(trainer) -> float:
    """Fraction of the training budget spent: the largest of epochs, steps and wall time (the
    ``max_time`` Timer) over their limits, whichever ends training first."""
    fractions = [0.0]
    if trainer.max_epochs is not None and trainer.max_epochs > 0:
        fractions.append(trainer.current_epoch / trainer.max_epochs)
    if trainer.max_steps is not None and trainer.max_steps > 0:
        fractions.append(trainer.global_step / trainer.max_steps)
    for callback in trainer.callbacks:
        if isinstance(callback, Timer) and callback.time_remaining() is not None:
            elapsed = callback.time_elapsed()
            fractions.append(elapsed / max(elapsed + callback.time_remaining(), 1e-9))
    return min(1.0, max(fractions))


@dataclass
class LossWeightSchedule:
    """MACE's "stage two": from ``start`` (a fraction of the training budget) on, the loss
    weighs energies ``energy_weight`` and forces ``force_weight``, and the learning rate is
    multiplied by ``lr_factor`` once (MACE's lower stage-two rate; later plateau reductions
    continue from it). Forces alone fix energies only up to what their integral carries; the
    late stage spends the end of training on the per-structure energies, once forces are
    learned. ``start: null`` keeps the first weights."""

    start: float | None = None
    energy_weight: float | None = None
    force_weight: float | None = None
    lr_factor: float | None = None

    def apply(self, loss: EnergyForceLoss, first: tuple[float, float], progress: float) -> bool:
        """Set the weights for ``progress``; True when stage two is on."""
        late = self.start is not None and progress >= self.start
        if late:
            loss.energy_weight = first[0] if self.energy_weight is None else self.energy_weight
            loss.force_weight = first[1] if self.force_weight is None else self.force_weight
        else:
            loss.energy_weight, loss.force_weight = first
        return late


class MLIPModule(L.LightningModule):
    """``MLIPModule(cfg, model_kwargs)``: the model of ``cfg.model``, the loss of ``cfg.pipeline``.

    ``model_kwargs`` are the model's constructor arguments with the data-derived ones filled in
    (MACE's elements and neighbour count); they and the resolved config are the saved
    hyperparameters, and the per-element reference energies and energy scale are model state,
    so a checkpoint alone rebuilds the potential (:func:`pipelines.mlip.checkpoint.load_model`).
    """

    def __init__(self, cfg, model_kwargs: dict | None = None):
        super().__init__()
        cfg = plain_config(cfg)
        if model_kwargs is None:
            model_kwargs = {k: v for k, v in cfg["model"].items() if k != "name"}
        self.save_hyperparameters({"cfg": cfg, "model_kwargs": model_kwargs})
        self.cfg = cfg
        p = cfg["pipeline"]
        self.model: AtomisticModel = build_model(cfg["model"]["name"], **model_kwargs)
        self.model.to(DTYPES[p.get("dtype", "float32")])
        self.loss_fn = EnergyForceLoss(p["energy_weight"], p["force_weight"], p.get("force_clip"),
                                       p.get("stress_weight", 0.0))
        self.first_weights = (p["energy_weight"], p["force_weight"])
        self.stage_two = LossWeightSchedule(**(p.get("stage_two") or {}))
        self.stage_two_lr_applied = False
        self.val_metrics = EnergyForceMetrics()
        self.test_metrics = EnergyForceMetrics()
        self.dropped_fraction = 0.0

    def forward(self, batch: dict) -> dict:
        return self.model(batch, compute_stress="stress" in batch)

    def on_fit_start(self) -> None:
        dm = self.trainer.datamodule
        if dm is not None:
            self.dropped_fraction = dm.dropped_fraction

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """The loss weights follow the budget step by step (a run resumed mid-epoch gets the
        same weights); everything is logged per step, as a resumed run logs it."""
        late = self.stage_two.apply(self.loss_fn, self.first_weights,
                                    training_progress(self.trainer))
        if late and self.stage_two.lr_factor is not None and not self.stage_two_lr_applied:
            self._scale_learning_rate(self.stage_two.lr_factor)
        pred = self.model(batch, compute_stress=self.loss_fn.wants_stress(batch))
        parts = self.loss_fn(pred, batch)
        n = batch["n_atoms"].numel()
        self.log_dict({f"train_{k}": v for k, v in parts.items()}, batch_size=n)
        self.log_dict({"train_max_force_dropped_fraction": self.dropped_fraction,
                       "train_energy_weight": self.loss_fn.energy_weight,
                       "train_stage_two": float(late)}, batch_size=1)
        return parts["loss"]

    def _scale_learning_rate(self, factor: float) -> None:
        """Once: every group's rate, and the base rates schedules compute theirs from."""
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] *= factor
        for config in self.trainer.lr_scheduler_configs:
            if hasattr(config.scheduler, "base_lrs"):
                config.scheduler.base_lrs = [lr * factor for lr in config.scheduler.base_lrs]
        self.stage_two_lr_applied = True

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["mlip_stage_two_lr_applied"] = self.stage_two_lr_applied

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.stage_two_lr_applied = bool(checkpoint.get("mlip_stage_two_lr_applied", False))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_metrics)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_metrics)

    def _eval_step(self, batch: dict, split: str, metrics: EnergyForceMetrics) -> None:
        """Forces need autograd here; the model enables it even under inference mode."""
        pred = self(batch)
        loss = self.loss_fn(pred, batch)["loss"]
        self.log(f"{split}_loss", loss, batch_size=batch["n_atoms"].numel(), sync_dist=True)
        metrics.update(pred, batch)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", self.test_metrics)

    def _log_metrics(self, split: str, metrics: EnergyForceMetrics) -> None:
        values = {f"{split}_{k}": v.float() for k, v in metrics.compute().items()}
        self.log_dict(values, batch_size=1)
        metrics.reset()

    @torch.no_grad()
    def evaluate(self, loader) -> dict[str, torch.Tensor]:
        """Errors of the current weights on every batch of ``loader`` (no Trainer needed)."""
        metrics = EnergyForceMetrics().to(self.device)
        for pred, batch in self.predictions(loader):
            metrics.update(pred, batch)
        return metrics.compute()

    def predictions(self, loader):
        """``(pred, batch)`` pairs on this module's device, in eval mode, detached."""
        was_training = self.training
        self.eval()
        try:
            for batch in loader:
                batch = {k: self._to_model(k, v) for k, v in batch.items()}
                pred = self(batch)
                yield {k: v.detach() for k, v in pred.items()}, batch
        finally:
            self.train(was_training)

    def _to_model(self, key: str, tensor: torch.Tensor) -> torch.Tensor:
        """On the model's device; floating tensors in its dtype (64-true casts the model), except
        the float64 energies."""
        cast = tensor.is_floating_point() and key not in FLOAT64_LABELS
        return tensor.to(self.device, self.model.energy_scale.dtype if cast else None)

    def configure_optimizers(self):
        cfg = OmegaConf.create(self.cfg)
        return configure_optimizers(self, cfg, self.trainer.estimated_stepping_batches)
