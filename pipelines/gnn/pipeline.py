"""The GNN pipeline: config → graph + model, and the degree-bucket report."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from data.graphs import GraphDataModule, accuracy_by_degree, degree_report
from data.graphs.dcsbm import check_dcsbm_args
from pipelines.harness.errors import ConfigError

from . import figures
from .models import EMBEDDINGS, MODELS
from .module import GAT_KEYS, NodeClassification

DECAY_SCOPES = ("all", "first_layer")
SYNTHETIC_KEYS = ("num_nodes", "num_classes", "avg_degree", "exponent", "homophily",
                  "feature_dim", "snr", "split", "seed")


class GNNPipeline:
    logs_learning_rate = True  # the epoch's row has it: no LearningRateMonitor call per step
    # read by the harness: DDP would give every rank the whole graph (replicated, not shared work)
    distributed_refusal = "full-batch training on one graph: every rank would repeat the same work"

    def validate(self, cfg) -> None:
        m, d = cfg.model, cfg.data
        if m is None or m.get("name") not in MODELS:
            raise ConfigError("model.name", m and m.get("name"), "one of " + ", ".join(MODELS))
        if m.embedding not in EMBEDDINGS:
            raise ConfigError("model.embedding", m.embedding, "null, input or concat")
        for key in ("hidden", "num_layers", "embedding_dim", *(k for k in GAT_KEYS if k in m)):
            if not isinstance(m.get(key), int) or isinstance(m[key], bool) or m[key] < 1:
                raise ConfigError(f"model.{key}", m.get(key), "an integer >= 1")
        if m.get("weight_decay_on") not in DECAY_SCOPES:
            raise ConfigError("model.weight_decay_on", m.get("weight_decay_on"),
                              " or ".join(DECAY_SCOPES))
        for key in ("no_decay", "module_lr"):  # their groups are the whole module's
            if m.weight_decay_on == "first_layer" and cfg.optim.get(key):
                raise ConfigError(f"optim.{key}", OmegaConf.to_container(cfg.optim[key]),
                                  "empty with model.weight_decay_on=first_layer (or set "
                                  "model.weight_decay_on=all)")
        if not 0 <= m.dropout < 1:
            raise ConfigError("model.dropout", m.dropout, "a number in [0, 1)")
        if d is None or d.get("name") not in ("synthetic", "planetoid"):
            raise ConfigError("data.name", d and d.get("name"), "synthetic or planetoid")
        try:  # checks arguments (and for Planetoid, the raw files) before anything is built
            self._datamodule(cfg).prepare_data() if d.name == "planetoid" else self._check(d)
        except (ValueError, FileNotFoundError, RuntimeError) as error:
            raise ConfigError.under("data", error) from None

    @staticmethod
    def _check(d) -> None:
        check_dcsbm_args(**{k: d[k] for k in SYNTHETIC_KEYS if k != "seed"})

    @staticmethod
    def _datamodule(cfg) -> GraphDataModule:
        d = cfg.data
        if d.name == "planetoid":
            return GraphDataModule("planetoid", name=d.dataset, root=d.root, raw_dir=d.raw_dir,
                                   download=d.download)
        kwargs = {k: d[k] for k in SYNTHETIC_KEYS}
        kwargs["split"] = tuple(kwargs["split"])
        return GraphDataModule("synthetic", **kwargs)

    def build(self, cfg):
        dm = self._datamodule(cfg)
        data = dm.data
        if cfg.data.name == "planetoid":  # row-normalised bag-of-words, as in Kipf & Welling
            data.x = data.x / data.x.sum(1, keepdim=True).clamp(min=1)
        module = NodeClassification(cfg, data)
        return module, dm

    def summary(self, trainer, module, dm) -> dict:
        if module.best["epoch"] < 0:  # trained in spawned processes (ddp_spawn): read rank 0's
            module.on_load_checkpoint(torch.load(
                Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt", weights_only=True))
        data, best = dm.data, module.best
        out = {"val_acc": best["val_acc"], "test_acc": best["test_acc"],
               "best_epoch": best["epoch"]}
        if module.best_nodes:
            out |= degree_tables(data, module.best_nodes["pred"], module.best_nodes["loss"])
        return out

    def evaluate(self, cfg, checkpoint: Path, run_dir: Path, options: dict) -> dict:
        """``adamlab eval``: the run's evaluated weights at its best epoch (``weights=last``:
        the last training weights) on the run's graph, or on another one given by ``data.*``
        options (same feature width and classes; a model with a per-node embedding also needs
        the same nodes). Returns the summary's metrics, recomputed; figures go to
        ``<run>/eval/``."""
        from .evaluate import evaluate

        return evaluate(self, cfg, checkpoint, Path(run_dir), options)

    def figures(self, trainer, module, dm, out_dir) -> list:
        paths = []
        if module.best_nodes:
            paths.append(figures.by_degree(dm.data, module.best_nodes, out_dir))
        if module.model.embedding is not None and trainer.optimizers:
            paths.append(figures.embedding_step_vs_degree(
                trainer.optimizers[0], module.model.embedding.weight, dm.data.degree, out_dir))
        return paths



def degree_tables(data, pred: torch.Tensor, loss: torch.Tensor) -> dict:
    """The summary's degree tables of per-node predictions and losses on the test nodes."""
    out = {"test_acc_by_degree": accuracy_by_degree(pred, data.y, data.degree, data.test_mask)}
    report = degree_report(pred, data.y, loss, data.edge_index, data.test_mask,
                           int(data.y.max()) + 1)
    out["test_loss_variance_across_degree_groups"] = report.pop("rawls_loss_variance")
    out["test_degree_fairness"] = report
    return out
