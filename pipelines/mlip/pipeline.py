"""The mlip pipeline for the harness: config checks, module + data, summary metrics, figures.

    adamlab train pipeline=mlip data=emt model=schnet clip=grad_norm clip.max_norm=10
    adamlab train pipeline=mlip data=extxyz data.train=train.xyz data.test=test.xyz
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import torch
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from data.atoms import FCC_METALS, AtomsDataModule, generate_emt_dataset
from pipelines.harness.errors import ConfigError
from pipelines.mlip.figures import parity_plots
from pipelines.mlip.metrics import as_summary
from pipelines.mlip.models import MODELS
from pipelines.mlip.module import DTYPES, MLIPModule

PIPELINE_KEYS = (
    "name", "batch_size", "energy_weight", "force_weight", "force_clip", "max_force", "dtype",
    "val_fraction", "test_fraction", "num_workers",
)
FILE_SOURCES = ("extxyz", "ase_db")
FILE_KEYS = ("name", "train", "test", "energy_key", "forces_key", "seed")
EMT_KEYS = ("name", "cache_dir", *inspect.signature(generate_emt_dataset).parameters)


class MLIPPipeline:
    """Energies and forces of atomistic structures (see ``pipelines/registry.py``)."""

    monitor = ("val_force_mae_mev_per_ang", "min")

    def validate(self, cfg) -> None:
        """Every mlip key checked before any structure is generated or read."""
        p, d, m = (_plain(cfg, key) for key in ("pipeline", "data", "model"))
        _validate_pipeline(p)
        _validate_model(m)
        _validate_data(d)

    def build(self, cfg) -> tuple[MLIPModule, AtomsDataModule]:
        """The data first: the module's reference energies and energy scale are fitted on the
        training structures that survive the max-force filter."""
        p, d, m = (_plain(cfg, key) for key in ("pipeline", "data", "model"))
        split = dict(
            cutoff=float(m["cutoff"]),
            batch_size=p["batch_size"],
            val_fraction=p.get("val_fraction", 0.1),
            test_fraction=p.get("test_fraction", 0.1),
            seed=d.get("seed", 0),
            shuffle_seed=cfg.seed,
            max_force=p.get("max_force"),
            dtype=DTYPES[p.get("dtype", "float32")],
            num_workers=p.get("num_workers", 0),
        )
        if d["name"] == "emt":
            emt = {k: v for k, v in d.items() if k not in ("name", "cache_dir")}
            source = dict(cache_dir=to_absolute_path(d["cache_dir"]), emt=emt)
            datamodule = AtomsDataModule.from_source("emt", source=source, **split)
        else:
            test = to_absolute_path(d["test"]) if d.get("test") else None
            source = {k: d[k] for k in ("energy_key", "forces_key") if k in d}
            datamodule = AtomsDataModule.from_source(
                d["name"], to_absolute_path(d["train"]), test, source=source, **split
            )
        module = MLIPModule(cfg)
        module.model.set_energy_reference(datamodule.reference_energies, datamodule.force_rms)
        return module, datamodule

    def summary(self, trainer, module: MLIPModule, datamodule: AtomsDataModule) -> dict:
        """Validation and test errors of the final weights (EMA weights when averaging), and
        how much of the training set the max-force filter removed."""
        metrics = {}
        for split in ("val", "test"):
            loader = getattr(datamodule, f"{split}_dataloader")()
            metrics.update(as_summary(module.evaluate(loader), f"{split}_"))
        metrics.update(
            n_train=len(datamodule.train_structures),
            n_val=len(datamodule.val_structures),
            n_test=len(datamodule.test_structures),
            max_force_dropped=datamodule.n_dropped,
            max_force_dropped_fraction=datamodule.dropped_fraction,
        )
        return metrics

    def figures(self, trainer, module: MLIPModule, datamodule, out_dir) -> list[Path]:
        """Energy and force parity plots on the test set (written by rank 0 only)."""
        if trainer is not None and not trainer.is_global_zero:
            return []
        return parity_plots(prediction_arrays(module, datamodule.test_dataloader()), out_dir)


def prediction_arrays(module: MLIPModule, loader) -> dict[str, np.ndarray]:
    """Reference and predicted per-atom energies and force components as numpy arrays."""
    parts = {"energy_ref": [], "energy_pred": [], "forces_ref": [], "forces_pred": []}
    for pred, batch in module.predictions(loader):
        parts["energy_ref"].append(batch["energy"] / batch["n_atoms"])
        parts["energy_pred"].append(pred["energy"] / batch["n_atoms"])
        parts["forces_ref"].append(batch["forces"])
        parts["forces_pred"].append(pred["forces"])
    return {k: torch.cat(v).double().cpu().numpy() for k, v in parts.items()}


def _plain(cfg, key: str) -> dict:
    """``cfg[key]`` as a dict; a missing mandatory value (``???``) stays the string ``???``."""
    node = cfg.get(key) if isinstance(cfg, DictConfig | dict) else None
    if node is None:
        raise ConfigError(key, None, f"a `{key}` config group (pipeline=mlip sets one)")
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True, throw_on_missing=False)
    return dict(node)


def _number(key: str, value, low: float, *, inclusive: bool, allow_none: bool = False):
    if value is None and allow_none:
        return
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not (value >= low if inclusive else value > low):
        bound = f">= {low}" if inclusive else f"> {low}"
        raise ConfigError(key, value, ("null or " if allow_none else "") + f"a number {bound}")


def _integer(key: str, value, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(key, value, f"an integer >= {low}")


def _known_keys(group: str, node: dict, allowed) -> None:
    for key, value in node.items():
        if key not in allowed:
            known = ", ".join(allowed)
            raise ConfigError(f"{group}.{key}", value, f"a known {group} key: {known}")


def _validate_pipeline(p: dict) -> None:
    _known_keys("pipeline", p, PIPELINE_KEYS)
    _integer("pipeline.batch_size", p.get("batch_size"), 1)
    for key in ("energy_weight", "force_weight"):
        _number(f"pipeline.{key}", p.get(key), 0.0, inclusive=True)
    if p["energy_weight"] == 0 and p["force_weight"] == 0:
        raise ConfigError("pipeline.force_weight", 0, "a positive number when energy_weight is 0")
    for key in ("force_clip", "max_force"):
        _number(f"pipeline.{key}", p.get(key), 0.0, inclusive=False, allow_none=True)
    if p.get("dtype", "float32") not in DTYPES:
        raise ConfigError("pipeline.dtype", p["dtype"], "one of " + ", ".join(DTYPES))
    for key in ("val_fraction", "test_fraction"):
        value = p.get(key, 0.1)
        if not isinstance(value, int | float) or not 0 <= value < 1:
            raise ConfigError(f"pipeline.{key}", value, "a fraction in [0, 1)")
    if p.get("val_fraction", 0.1) + p.get("test_fraction", 0.1) >= 1:
        raise ConfigError("pipeline.test_fraction", p["test_fraction"],
                          "a fraction that leaves training data with val_fraction")
    _integer("pipeline.num_workers", p.get("num_workers", 0), 0)


def _validate_model(m: dict) -> None:
    name = m.get("name")
    if name not in MODELS:
        raise ConfigError("model.name", name, "one of " + ", ".join(sorted(MODELS)))
    signature = inspect.signature(MODELS[name]).parameters
    _known_keys("model", m, ("name", *signature))
    _number("model.cutoff", m.get("cutoff"), 0.0, inclusive=False)
    for key in ("hidden", "num_interactions", "num_rbf"):
        if key in m:
            _integer(f"model.{key}", m[key], 2 if key == "num_rbf" else 1)


def _validate_data(d: dict) -> None:
    name = d.get("name")
    if name == "emt":
        _known_keys("data", d, EMT_KEYS)
        if d.get("element") not in FCC_METALS:
            raise ConfigError("data.element", d.get("element"),
                              "an fcc metal EMT describes: " + ", ".join(FCC_METALS))
        _integer("data.n_configs", d.get("n_configs"), 1)
        _integer("data.seed", d.get("seed", 0), 0)
        return
    if name not in FILE_SOURCES:
        raise ConfigError("data.name", name, "one of emt, " + ", ".join(FILE_SOURCES))
    _known_keys("data", d, FILE_KEYS)
    if d.get("train") in (None, "???"):
        raise ConfigError("data.train", d.get("train"), f"the path of the {name} training file")
    for key in ("train", "test"):
        if d.get(key) is not None and not Path(to_absolute_path(str(d[key]))).is_file():
            raise ConfigError(f"data.{key}", d[key], "an existing file")
    for key in ("energy_key", "forces_key"):
        if not isinstance(d.get(key, key[:-4]), str):
            raise ConfigError(f"data.{key}", d[key], "a string")
