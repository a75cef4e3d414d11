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

from data.atoms import (
    FCC_METALS,
    AtomsDataModule,
    DataError,
    LabelKeys,
    generate_emt_dataset,
)
from pipelines.harness.errors import ConfigError
from pipelines.mlip import mace
from pipelines.mlip.figures import parity_plots
from pipelines.mlip.metrics import HEADLINE, as_summary
from pipelines.mlip.models import MODELS, model_class
from pipelines.mlip.module import DTYPES, MLIPModule

PIPELINE_KEYS = (
    "name", "batch_size", "energy_weight", "force_weight", "stress_weight", "stage_two",
    "force_clip", "max_force", "score_max_force", "dtype", "val_fraction", "test_fraction",
    "num_workers", "evaluate", "monitor", "monitor_mode",
)
STAGE_TWO_KEYS = ("start", "energy_weight", "force_weight", "lr_factor")
EVALUATE = ("last", "best")
FILE_SOURCES = ("extxyz", "ase_db")
FILES = ("train", "val", "test")
LABEL_KEYS = ("energy_key", "forces_key", "stress_key", "virial_key")
FILE_KEYS = ("name", *FILES, *LABEL_KEYS, "group_key", "seed")
EMT_KEYS = ("name", "cache_dir", "group_key",
            *inspect.signature(generate_emt_dataset).parameters)
DATA_DERIVED = ("elements", "avg_num_neighbors")  # model arguments the training data decides


class MLIPPipeline:
    """Energies and forces of atomistic structures (see ``pipelines/registry.py``)."""

    def validate(self, cfg) -> None:
        """Every mlip key checked before any structure is generated or read."""
        p, d, m = (_plain(cfg, key) for key in ("pipeline", "data", "model"))
        _validate_pipeline(p)
        _validate_model(m)
        _validate_data(d)

    def build(self, cfg) -> tuple[MLIPModule, AtomsDataModule]:
        """The data first: the module's reference energies, energy scale and (MACE) element
        list and neighbour count come from the training structures that survive the max-force
        filter. A bad structure is a ConfigError naming its file and frame."""
        p, d, m = (_plain(cfg, key) for key in ("pipeline", "data", "model"))
        try:
            datamodule = _datamodule(cfg, p, d, m)
        except DataError as error:
            raise ConfigError(error_key(error, d), error.where,
                              f"{error.allowed} ({error.problem})") from None
        module = MLIPModule(cfg, model_kwargs(m, datamodule))
        module.model.set_energy_reference(datamodule.reference_energies, datamodule.force_scale)
        return module, datamodule

    def summary(self, trainer, module: MLIPModule, datamodule: AtomsDataModule) -> dict:
        """Validation and test errors (per config_type too) of the weights ``pipeline.evaluate``
        names, which weights those are, and how much of the training set the max-force filter
        removed. ``eval_checkpoint`` is the file holding exactly these weights."""
        weights = evaluated_weights(trainer, module)
        metrics = {}
        for split in ("val", "test"):
            loader = getattr(datamodule, f"{split}_dataloader")()
            metrics.update(as_summary(module.evaluate(loader), f"{split}_"))
        by_type = {}
        for name, indices in sorted(datamodule.config_types("test").items()):
            values = module.evaluate(datamodule.subset_dataloader("test", indices))
            by_type[name] = {"n_structures": len(indices),
                             **{k: float(v) for k, v in values.items() if k in HEADLINE}}
        if by_type:
            metrics["test_by_config_type"] = by_type
        split = module.cfg["pipeline"].get("score_max_force")
        split = split if split is not None else module.cfg["pipeline"].get("max_force")
        if split is not None:
            metrics["test_by_max_force"] = by_max_force(module, datamodule, split)
        metrics.update(
            weights,
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


def by_max_force(module: MLIPModule, datamodule: AtomsDataModule, threshold: float) -> dict:
    """Test errors of the structures a max-force filter at ``threshold`` (eV/Å) would keep
    (largest reference force <= it) and of the tail it would drop: a filter is scored on
    both, since the whole test set still holds what it removed from training."""
    largest = [float(np.linalg.norm(a.get_forces(), axis=1).max())
               for a in datamodule.test_structures]
    out = {"threshold_ev_per_ang": threshold}
    for part, keep in (("kept", True), ("dropped", False)):
        indices = [k for k, f in enumerate(largest) if (f <= threshold) == keep]
        values = (module.evaluate(datamodule.subset_dataloader("test", indices))
                  if indices else {})
        out[part] = {"n_structures": len(indices),
                     **{k: _finite_or_none(float(v)) for k, v in values.items()
                        if k in HEADLINE}}
    return out


def _finite_or_none(value: float) -> float | None:
    return value if np.isfinite(value) else None


def _datamodule(cfg, p: dict, d: dict, m: dict) -> AtomsDataModule:
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
        group_key=d.get("group_key"),
    )
    if d["name"] == "emt":
        emt = {k: v for k, v in d.items() if k not in ("name", "cache_dir", "group_key")}
        source = dict(cache_dir=to_absolute_path(d["cache_dir"]), emt=emt)
        return AtomsDataModule.from_source("emt", source=source, **split)
    files = {f: to_absolute_path(d[f]) if d.get(f) else None for f in FILES}
    keys = LabelKeys(**{k[:-4]: d[k] for k in LABEL_KEYS if k in d})
    return AtomsDataModule.from_source(d["name"], **files, source={"keys": keys}, **split)


def error_key(error: DataError, d: dict) -> str:
    """The config key a bad structure traces back to: the file it came from, or the cutoff."""
    if "cutoff" in error.allowed:
        return "model.cutoff"
    for name in FILES:
        if d.get(name) and error.where.startswith(to_absolute_path(str(d[name]))):
            return f"data.{name}"
    return "data"


def model_kwargs(m: dict, datamodule: AtomsDataModule) -> dict:
    """The model's constructor arguments, data-derived ones (MACE's ``elements`` and
    ``avg_num_neighbors``) filled in from the training structures where the config has null."""
    kwargs = {k: v for k, v in m.items() if k != "name"}
    accepted = inspect.signature(model_class(m["name"])).parameters
    if "elements" in accepted and kwargs.get("elements") is None:
        kwargs["elements"] = sorted(datamodule.reference_energies)
    if "avg_num_neighbors" in accepted and kwargs.get("avg_num_neighbors") is None:
        kwargs["avg_num_neighbors"] = datamodule.avg_num_neighbors()
    return kwargs


def evaluated_weights(trainer, module: MLIPModule) -> dict:
    """Put the weights ``pipeline.evaluate`` asks for into ``module`` and say which they are.

    ``last``: the weights training ended with (the EMA average when ``ema_decay`` is set; the
    harness's ``checkpoints/last.ckpt`` holds them). ``best``: the ``best-*.ckpt`` of the
    validation force MAE (EMA weights too, when averaging), loaded back.
    """
    which = module.cfg["pipeline"].get("evaluate", "last")
    ema = module.cfg.get("ema_decay")
    kind = f"EMA {ema}" if ema else "raw (no EMA)"
    root = Path(trainer.default_root_dir) if trainer is not None else None
    best = _best_checkpoint(trainer)
    if which == "best" and best is not None:
        state = torch.load(best, map_location=module.device, weights_only=True)["state_dict"]
        module.load_state_dict(state)
        path = best
    else:
        which, path = "last", root / "checkpoints" / "last.ckpt" if root else None
    relative = str(Path(path).relative_to(root)) if path and root else None
    return {"eval_weights": f"{which} ({kind})", "eval_checkpoint": relative}


def _best_checkpoint(trainer) -> str | None:
    for callback in getattr(trainer, "checkpoint_callbacks", []) or []:
        best = getattr(callback, "best_model_path", "")
        if best:
            return best
    return None


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
    for key in ("energy_weight", "force_weight", "stress_weight"):
        _number(f"pipeline.{key}", p.get(key, 0.0), 0.0, inclusive=True)
    if p["energy_weight"] == 0 and p["force_weight"] == 0:
        raise ConfigError("pipeline.force_weight", 0, "a positive number when energy_weight is 0")
    stage = p.get("stage_two")
    if stage is not None:
        if not isinstance(stage, dict):
            raise ConfigError("pipeline.stage_two", stage, "null or {start, energy_weight, "
                              "force_weight, lr_factor}")
        _known_keys("pipeline.stage_two", stage, STAGE_TWO_KEYS)
        start = stage.get("start")
        if start is not None and not (isinstance(start, int | float) and 0 <= start <= 1):
            raise ConfigError("pipeline.stage_two.start", start,
                              "null or a fraction of the training budget in [0, 1]")
        for key in ("energy_weight", "force_weight"):
            _number(f"pipeline.stage_two.{key}", stage.get(key), 0.0, inclusive=True,
                    allow_none=True)
        _number("pipeline.stage_two.lr_factor", stage.get("lr_factor"), 0.0, inclusive=False,
                allow_none=True)
    for key in ("force_clip", "max_force", "score_max_force"):
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
    if p.get("evaluate", "last") not in EVALUATE:
        raise ConfigError("pipeline.evaluate", p["evaluate"], "one of " + ", ".join(EVALUATE))


def _validate_model(m: dict) -> None:
    name = m.get("name")
    if name not in MODELS:
        raise ConfigError("model.name", name, "one of " + ", ".join(MODELS))
    if name == "mace" and not mace.available():
        raise ConfigError("model.name", name, mace.INSTALL_HINT)
    _known_keys("model", m, ("name", *inspect.signature(model_class(name)).parameters))
    _number("model.cutoff", m.get("cutoff"), 0.0, inclusive=False)
    for key in ("hidden", "num_interactions", "num_rbf", "max_ell", "correlation"):
        if key in m:
            _integer(f"model.{key}", m[key], 2 if key == "num_rbf" else 1)


def _validate_data(d: dict) -> None:
    name = d.get("name")
    group_key = d.get("group_key")
    if group_key is not None and not isinstance(group_key, str):
        raise ConfigError("data.group_key", group_key, "null (split by frame) or an info key")
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
    for key in FILES:
        if d.get(key) is not None and not Path(to_absolute_path(str(d[key]))).is_file():
            raise ConfigError(f"data.{key}", d[key], "an existing file")
    for key in LABEL_KEYS:
        if not isinstance(d.get(key, key[:-4]), str):
            raise ConfigError(f"data.{key}", d[key], "a string")
