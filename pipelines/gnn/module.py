"""Full-batch node classification as a LightningModule.

Each epoch is one optimizer step on the training nodes, then one evaluation of every
node (Lightning's validation loop, so EMA weights and ``trainer.validate`` work as
usual). The test accuracy reported is the one at the best validation epoch (highest
validation accuracy, ties to the lower validation loss), with the per-node predictions and
losses of that epoch kept for the degree analysis.

Speed: the graph lives in the module (``GraphTensors``), so it moves to the device once;
the dataloader's batch is only the signal that an epoch runs. An epoch's metrics are
computed on the device, read back in one transfer and written as one row straight to the
loggers (``self.log`` costs about half a millisecond per key, as much as Cora's whole
training step); only the monitored values go through ``self.log``, for checkpoints and the
progress bar.
"""

from __future__ import annotations

import warnings

import lightning as L
import torch
import torch.nn.functional as F

from pipelines.harness.callbacks import log_now
from pipelines.harness.optimizers import build_optimizer, build_scheduler, configure_optimizers

from .graph import GraphTensors
from .models import NodeClassifier

GAT_KEYS = ("heads", "output_heads")
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")
warnings.filterwarnings("ignore", message="You have overridden `transfer_batch_to_device`")


class NodeClassification(L.LightningModule):
    def __init__(self, cfg, data):
        super().__init__()
        self.cfg = cfg
        m = cfg.model
        self.graph = GraphTensors(data, m.name)
        self.model = NodeClassifier(
            m.name, data.num_features, int(data.y.max()) + 1, data.num_nodes, hidden=m.hidden,
            num_layers=m.num_layers, dropout=m.dropout, embedding=m.embedding,
            embedding_dim=m.embedding_dim, **{k: m[k] for k in GAT_KEYS if k in m})
        self.best = {"val_acc": -1.0, "epoch": -1, "test_acc": None}
        self.best_nodes: dict[str, torch.Tensor] = {}
        self.best_weights: dict[str, torch.Tensor] = {}
        self._train_metrics: list[torch.Tensor] = []

    def forward(self, graph: GraphTensors | None = None):
        return self.model(self.graph if graph is None else graph)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        """Nothing to move: ``self.graph`` went to the device with the module."""
        return batch

    def training_step(self, batch, batch_idx):
        index = self.graph.train_index
        logits = self()[index]
        y = self.graph.y[index]
        loss = F.cross_entropy(logits, y)
        self._train_metrics = [loss.detach(), (logits.argmax(1) == y).float().mean()]
        return loss

    def validation_step(self, batch, batch_idx):
        if self.trainer.sanity_checking:
            return
        logits = self()
        node_loss = F.cross_entropy(logits, self.graph.y, reduction="none")
        correct = (logits.argmax(1) == self.graph.y).float()
        values, self._train_metrics = self._train_metrics, []  # none in trainer.validate()
        for split in ("val", "test"):
            index = self.graph.index(split)
            values += [node_loss[index].mean(), correct[index].mean()]
        tensors = dict(zip(METRICS[len(METRICS) - len(values):], values, strict=True))
        metrics = dict(zip(tensors, torch.stack(values).tolist(), strict=True))  # one sync
        score = (metrics["val_acc"], -metrics["val_loss"])
        if score > self._best_score():
            self.best = {"val_acc": score[0], "val_loss": -score[1], "epoch": self.current_epoch,
                         "test_acc": metrics["test_acc"]}
            self.best_nodes = {"pred": logits.argmax(1).cpu(), "loss": node_loss.cpu()}
            # the evaluated weights (EMA's when on) behind these metrics: `adamlab eval`
            self.best_weights = {k: v.detach().cpu().clone()
                                 for k, v in self.model.state_dict().items()}
        if self.trainer.state.fn != "fit":  # trainer.validate(): Lightning's own results
            self.log_dict(tensors, batch_size=1)
            return
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        log_now(self.trainer, {**metrics, "lr": lr, "epoch": self.current_epoch})
        self.log_dict({k: tensors[k] for k in ("val_loss", "val_acc")}, logger=False,
                      prog_bar=True, batch_size=1)

    def _best_score(self) -> tuple[float, float]:
        """Best validation accuracy; ties (500 Cora val nodes: steps of 0.002) go to the lower
        validation loss."""
        return (self.best["val_acc"], -self.best.get("val_loss", float("inf")))

    def configure_optimizers(self):
        steps = self.trainer.max_epochs
        if self.cfg.model.weight_decay_on == "all":
            return configure_optimizers(self, self.cfg, total_steps=steps)
        opt = build_optimizer(self.first_layer_groups(), self.cfg.optim, self.cfg.get("clip"))
        sched = build_scheduler(opt, self.cfg.get("schedule"), total_steps=steps)
        return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}

    def first_layer_groups(self) -> list[dict]:
        """``model.weight_decay_on: first_layer`` (Kipf & Welling; PyG's examples/gcn.py):
        the first layer and the node embedding keep ``optim.weight_decay``, the later layers
        get none."""
        first = ("convs.0.", "embedding.")
        named = list(self.model.named_parameters())
        return [{"params": [p for n, p in named if n.startswith(first)]},
                {"params": [p for n, p in named if not n.startswith(first)],
                 "weight_decay": 0.0}]

    def on_save_checkpoint(self, checkpoint):
        checkpoint["best"] = {**self.best, **self.best_nodes}
        if self.best_weights:
            checkpoint["best_weights"] = self.best_weights

    def on_load_checkpoint(self, checkpoint):
        saved = dict(checkpoint.get("best", {}))
        self.best_nodes = {k: saved.pop(k) for k in ("pred", "loss") if k in saved}
        self.best = saved or self.best
        self.best_weights = dict(checkpoint.get("best_weights", {}))
