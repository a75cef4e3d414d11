"""`adamlab eval` for an MLIP run: energy, force (and stress) errors and parity plots of its
weights, on the run's own validation and test structures or on any extxyz / ASE db.

    adamlab eval runs/mlip/<run>                       # reproduces summary.json's val/test
    adamlab eval runs/mlip/<run> file=other.xyz        # every frame of another file
    adamlab eval runs/mlip/<run>/checkpoints/best-epoch=7.ckpt

A run directory means the checkpoint its summary was computed from (``eval_checkpoint``:
``pipeline.evaluate`` picks last or best). Figures go to ``<run>/eval/``. Registered in
pipelines.registry.EVALUATORS.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import OmegaConf

from data.atoms import DataError, LabelKeys, check_elements, read_structures
from pipelines.harness.errors import ConfigError
from pipelines.mlip.figures import parity_plots
from pipelines.mlip.metrics import as_summary
from pipelines.mlip.pipeline import LABEL_KEYS, MLIPPipeline, prediction_arrays


def evaluate(cfg, checkpoint: Path, run_dir: Path, options: dict) -> dict:
    options = dict(options)
    path = options.pop("file", None)
    if options:
        key = next(iter(options))
        raise ConfigError(key, options[key], "an eval option: file=<extxyz or ASE db>")
    checkpoint = _summary_checkpoint(run_dir, checkpoint)
    pipeline = MLIPPipeline()
    pipeline.validate(cfg)
    module, dm = pipeline.build(cfg)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    splits = {"val": dm.val_dataloader, "test": dm.test_dataloader}
    if path is not None:
        d = OmegaConf.to_container(cfg.data, resolve=True)
        keys = LabelKeys(**{k[:-4]: d[k] for k in LABEL_KEYS if k in d})
        try:
            structures = read_structures(Path(path).expanduser(), keys,
                                         cutoff=cfg.model.get("cutoff"))
            check_elements(structures, {int(z) for a in dm.train_structures for z in a.numbers},
                           "evaluation")
        except (DataError, FileNotFoundError, OSError, ValueError) as error:
            raise ConfigError("file", path, f"an extxyz file or ASE db of labelled structures "
                              f"with the run's elements ({error})") from None
        dm.test_structures = structures
        dm.datasets.pop("test", None)
        splits = {"file": dm.test_dataloader}
    metrics = {}
    for split, loader in splits.items():
        metrics.update(as_summary(module.evaluate(loader()), f"{split}_" if split != "file"
                                  else "test_"))
    arrays = prediction_arrays(module, dm.test_dataloader())
    figures = parity_plots(arrays, run_dir / "eval")
    return {"checkpoint": str(checkpoint), "data": str(path) if path else "the run's splits",
            "n_structures": len(dm.test_structures), "metrics": metrics,
            "figures": [str(f) for f in figures]}


def _summary_checkpoint(run_dir: Path, checkpoint: Path) -> Path:
    """The checkpoint the run's summary scored when ``checkpoint`` is the run's last.ckpt."""
    summary = run_dir / "summary.json"
    if checkpoint.name != "last.ckpt" or not summary.is_file():
        return checkpoint
    named = json.loads(summary.read_text()).get("metrics", {}).get("eval_checkpoint")
    return run_dir / named if named and (run_dir / named).is_file() else checkpoint
