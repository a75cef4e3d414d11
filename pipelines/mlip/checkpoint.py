"""A trained potential from a Lightning checkpoint alone: no data, config files or Trainer.

:class:`~pipelines.mlip.module.MLIPModule` saves the resolved run config as its hyperparameter
and keeps the reference energies and energy scale as model buffers, so the model's config and
weights are all in the ``.ckpt``. With the harness's EMA callback the checkpoint's
``state_dict`` already holds the averaged weights, which are the ones evaluated.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipelines.mlip.models import AtomisticModel, build_model


def load_model(path: str | Path, map_location="cpu") -> tuple[AtomisticModel, dict]:
    """``(model in eval mode, resolved run config)`` from an MLIP checkpoint.

    Loaded with ``weights_only=True``: tensors and plain containers only, no arbitrary pickle.
    """
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    cfg = ckpt.get("hyper_parameters", {}).get("cfg")
    if cfg is None or "model" not in cfg:
        raise ValueError(f"{path}: not an MLIP checkpoint (no hyper_parameters.cfg.model)")
    kwargs = {k: v for k, v in cfg["model"].items() if k != "name"}
    model = build_model(cfg["model"]["name"], **kwargs)
    prefix = "model."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    model.to(state["energy_scale"].dtype).load_state_dict(state)
    return model.eval(), cfg
