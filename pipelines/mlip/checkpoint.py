"""A trained potential from a Lightning checkpoint alone: no data, config files or Trainer.

:class:`~pipelines.mlip.module.MLIPModule` saves the resolved run config and the model's
constructor arguments (data-derived ones included) as its hyperparameters and keeps the
reference energies and energy scale as model state, so the model's config and weights are all
in the ``.ckpt``. With the harness's EMA callback the checkpoint's ``state_dict`` already holds
the averaged weights, which are the ones evaluated.

A run directory stands for the checkpoint its ``summary.json`` evaluated (``eval_checkpoint``),
so ``MLIPCalculator.from_checkpoint(run_dir)`` runs the weights the summary's metrics describe.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pipelines.mlip.models import AtomisticModel, build_model


def checkpoint_path(path: str | Path) -> Path:
    """``path`` itself, or for a run directory the checkpoint its summary was computed with
    (``checkpoints/last.ckpt`` when the summary does not say)."""
    path = Path(path)
    if not path.is_dir():
        return path
    summary = path / "summary.json"
    if summary.is_file():
        named = json.loads(summary.read_text()).get("metrics", {}).get("eval_checkpoint")
        if named:
            return path / named
    return path / "checkpoints" / "last.ckpt"


def load_model(path: str | Path, map_location="cpu") -> tuple[AtomisticModel, dict]:
    """``(model in eval mode, resolved run config)`` from an MLIP checkpoint or run directory.

    Loaded with ``weights_only=True``: tensors and plain containers only, no arbitrary pickle.
    """
    path = checkpoint_path(path)
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    hparams = ckpt.get("hyper_parameters", {})
    cfg = hparams.get("cfg")
    if cfg is None or "model" not in cfg:
        raise ValueError(f"{path}: not an MLIP checkpoint (no hyper_parameters.cfg.model)")
    kwargs = hparams.get("model_kwargs")
    if kwargs is None:
        kwargs = {k: v for k, v in cfg["model"].items() if k != "name"}
    model = build_model(cfg["model"]["name"], **kwargs)
    prefix = "model."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    model.to(state["energy_scale"].dtype).load_state_dict(state)
    return model.eval(), cfg
