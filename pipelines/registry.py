"""The contract between the harness and a domain pipeline.

A pipeline is an object with four methods; the harness does everything else (seeding,
loggers, callbacks, checkpoints, resume, run dir, summary.json):

    validate(cfg)                       raise ConfigError for bad input, before any work
    build(cfg) -> (module, datamodule)  a LightningModule (+ LightningDataModule or None)
    summary(trainer, module, datamodule) -> dict   final metrics for summary.json
    figures(trainer, module, datamodule, out_dir) -> list[Path]   png files written

and optionally a fifth, for ``adamlab eval RUN_DIR_OR_CKPT [key=value ...]``:

    evaluate(cfg, checkpoint, run_dir, options) -> dict   score a trained checkpoint
        (cfg: the run's config.yaml; options: the key=value pairs; ConfigError for bad ones)

The LightningModule builds its optimizer with
``pipelines.harness.optimizers.configure_optimizers(self, cfg, total_steps)``.
Pipelines register by name here, imported lazily so `adamlab train pipeline=gnn` never
imports gymnasium or ase. A pipeline whose class has no ``evaluate`` may name a module-level
function with the same signature in ``EVALUATORS`` (one dispatch for `adamlab eval`).
"""

from __future__ import annotations

import importlib
from typing import Protocol

from .harness.errors import ConfigError

PIPELINES = {
    "gnn": "pipelines.gnn.pipeline:GNNPipeline",
    "rl": "pipelines.rl.pipeline:RLPipeline",
    "mlip": "pipelines.mlip.pipeline:MLIPPipeline",
}

# pipeline name -> "module:function" with evaluate's signature, for pipelines whose class
# does not define it
EVALUATORS = {
    "mlip": "pipelines.mlip.evaluate:evaluate",
}


class Pipeline(Protocol):
    def validate(self, cfg) -> None: ...

    def build(self, cfg): ...

    def summary(self, trainer, module, datamodule) -> dict: ...

    def figures(self, trainer, module, datamodule, out_dir) -> list: ...

    # optional: def evaluate(self, cfg, checkpoint, run_dir, options) -> dict: ...


def get(name: str) -> Pipeline:
    if name not in PIPELINES:
        raise ConfigError("pipeline.name", name, "one of " + ", ".join(sorted(PIPELINES)))
    module, cls = PIPELINES[name].split(":")
    return getattr(importlib.import_module(module), cls)()


def evaluator(name: str):
    """The pipeline's ``evaluate(cfg, checkpoint, run_dir, options)``, or None."""
    pipeline = get(name)
    if hasattr(pipeline, "evaluate"):
        return pipeline.evaluate
    if name in EVALUATORS:
        module, function = EVALUATORS[name].split(":")
        return getattr(importlib.import_module(module), function)
    return None
