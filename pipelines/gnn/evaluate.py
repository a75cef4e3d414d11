"""`adamlab eval` for a GNN run: its weights scored on its own graph or another one.

    adamlab eval runs/gnn/<run>                          # reproduces summary.json's metrics
    adamlab eval runs/gnn/<run> weights=last             # the last training weights instead
    adamlab eval runs/gnn/<run> data.seed=7              # another DC-SBM draw, same sizes
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from pipelines.harness.errors import ConfigError

from . import figures

WEIGHTS = ("best", "last")


def evaluate(pipeline, cfg, checkpoint: Path, run_dir: Path, options: dict) -> dict:
    options = dict(options)
    weights = options.pop("weights", "best")
    data_options = options.pop("data", {}) or {}
    if options:
        key = next(iter(options))
        raise ConfigError(key, options[key], "an eval option: weights=best|last or data.<key>")
    if weights not in WEIGHTS:
        raise ConfigError("weights", weights, " or ".join(WEIGHTS))
    if not isinstance(data_options, dict) or set(data_options) - set(cfg.data):
        raise ConfigError("data", data_options, "data.<key>=value with keys of the run's data "
                          f"config: {', '.join(cfg.data)}")
    cfg = OmegaConf.merge(cfg, {"data": data_options})
    pipeline.validate(cfg)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if weights == "best":
        if not state.get("best_weights"):
            raise ConfigError("weights", weights, "last: this checkpoint holds no best-epoch "
                              "weights (written before adamlab eval kept them)")
        params = state["best_weights"]
    else:
        params = {k.removeprefix("model."): v for k, v in state["state_dict"].items()
                  if k.startswith("model.")}
    module, dm = pipeline.build(cfg)
    try:
        module.model.load_state_dict(params)
    except RuntimeError as error:
        raise ConfigError("data", data_options, "a graph the trained model fits (same feature "
                          f"width and classes; nodes too with an embedding): {error}") from None
    module.eval()
    with torch.no_grad():
        logits = module()
    graph, data = module.graph, dm.data
    node_loss = F.cross_entropy(logits, graph.y, reduction="none")
    correct = (logits.argmax(1) == graph.y).float()
    metrics = {}
    for split in ("val", "test"):
        index = graph.index(split)
        metrics[f"{split}_acc"] = correct[index].mean().item()
        metrics[f"{split}_loss"] = node_loss[index].mean().item()
    if weights == "best":
        metrics["best_epoch"] = state["best"]["epoch"]
    from .pipeline import degree_tables

    nodes = {"pred": logits.argmax(1), "loss": node_loss}
    metrics |= degree_tables(data, nodes["pred"], nodes["loss"])
    out_dir = run_dir / "eval"
    out_dir.mkdir(exist_ok=True)
    return {"checkpoint": str(checkpoint), "weights": weights,
            "data": OmegaConf.to_container(cfg.data, resolve=True), "metrics": metrics,
            "figures": [str(figures.by_degree(data, nodes, out_dir))]}
