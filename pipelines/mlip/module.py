"""LightningModule that trains an interatomic potential on energies and forces.

The optimizer, its gradient/update clipping and the LR schedule all come from the config groups
(``optim``, ``clip``, ``schedule``) through the harness, so that clip placement is a property of
the optimizer chain and never a hand-written ``clip_grad_norm_`` here. What this module owns is
the loss (force-residual clipping included) and the metrics: loss parts, the fraction of atoms
whose residual was capped, the fraction of training structures the max-force filter dropped, and
energy/force errors on validation and test. Gradient norms before and after clipping are the
harness's optimizer telemetry (``optim/g0/grad_norm``), not logged twice here.
"""

from __future__ import annotations

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from pipelines.harness.optimizers import configure_optimizers
from pipelines.mlip.losses import EnergyForceLoss
from pipelines.mlip.metrics import EnergyForceMetrics
from pipelines.mlip.models import AtomisticModel, build_model

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def plain_config(cfg) -> dict:
    """A resolved plain dict, so checkpoints hold no OmegaConf objects (weights-only loadable)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg)


class MLIPModule(L.LightningModule):
    """``MLIPModule(cfg)``: the model of ``cfg.model``, the loss of ``cfg.pipeline``.

    The resolved config is saved as the only hyperparameter, and the per-element reference
    energies and energy scale are model buffers, so a checkpoint alone rebuilds the potential
    (:func:`pipelines.mlip.checkpoint.load_model`).
    """

    def __init__(self, cfg):
        super().__init__()
        cfg = plain_config(cfg)
        self.save_hyperparameters({"cfg": cfg})
        self.cfg = cfg
        p = cfg["pipeline"]
        model_kwargs = {k: v for k, v in cfg["model"].items() if k != "name"}
        self.model: AtomisticModel = build_model(cfg["model"]["name"], **model_kwargs)
        self.model.to(DTYPES[p.get("dtype", "float32")])
        self.loss_fn = EnergyForceLoss(p["energy_weight"], p["force_weight"], p.get("force_clip"))
        self.val_metrics = EnergyForceMetrics()
        self.test_metrics = EnergyForceMetrics()
        self.dropped_fraction = 0.0

    def forward(self, batch: dict) -> dict:
        return self.model(batch)

    def on_fit_start(self) -> None:
        dm = self.trainer.datamodule
        if dm is not None:
            self.dropped_fraction = dm.dropped_fraction

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        parts = self.loss_fn(self.model(batch), batch)
        n = batch["n_atoms"].numel()
        self.log_dict({f"train_{k}": v for k, v in parts.items()}, batch_size=n)
        return parts["loss"]

    def on_train_epoch_end(self) -> None:
        # at the end, not the start: a run resumed mid-epoch does not rerun epoch-start hooks
        self.log("train_max_force_dropped_fraction", self.dropped_fraction, batch_size=1)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_metrics)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_metrics)

    def _eval_step(self, batch: dict, split: str, metrics: EnergyForceMetrics) -> None:
        """Forces need autograd here; the model enables it even under inference mode."""
        pred = self.model(batch)
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
                batch = {k: self._to_model(v) for k, v in batch.items()}
                pred = self.model(batch)
                yield {k: v.detach() for k, v in pred.items()}, batch
        finally:
            self.train(was_training)

    def _to_model(self, tensor: torch.Tensor) -> torch.Tensor:
        """On the model's device; floating tensors also in its dtype (64-true casts the model)."""
        dtype = self.model.energy_scale.dtype if tensor.is_floating_point() else None
        return tensor.to(self.device, dtype)

    def configure_optimizers(self):
        cfg = OmegaConf.create(self.cfg)
        return configure_optimizers(self, cfg, self.trainer.estimated_stepping_batches)
