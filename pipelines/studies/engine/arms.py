"""Arms as optimizers: ``optim.create`` from an arm's hyperparameters, a seeded generator,
and the one-line description reports use."""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

import optim


def _dict(spec) -> dict:
    return OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) \
        else dict(spec)


def make_optimizer(spec, params, **overrides) -> optim.ChainOptimizer:
    """``optim.create`` from a spec such as ``{name: sgd, lr: 0.1, momentum: 0.9}``."""
    hp = {**_dict(spec), **overrides}
    name = hp.pop("name")
    if "betas" in hp:
        hp["betas"] = tuple(hp["betas"])
    return optim.create(name, params, **hp)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def describe(spec) -> str:
    """``{name: sgd, momentum: 0.9}`` as ``sgd(momentum=0.9)``."""
    hp = _dict(spec)
    name = hp.pop("name", "?")
    return f"{name}({', '.join(f'{k}={_short(v)}' for k, v in hp.items())})"


def _short(v):
    return f"{v:.3g}" if isinstance(v, float) else v


def grouped_optimizer(settings: list, params: list) -> optim.ChainOptimizer:
    """One optimizer, one param group per setting (same preset name, each group its own
    hyperparameters): a grid of settings runs as one batched step. ``params[i]`` is the
    tensor (or list of tensors) of setting i."""
    hps = [_dict(s) for s in settings]
    names = {hp.pop("name") for hp in hps}
    if len(names) != 1:
        raise ValueError(f"settings name {sorted(names)}: one preset per grouped optimizer")
    groups = [{"params": list(p) if isinstance(p, (list, tuple)) else [p],
               **{k: tuple(v) if k == "betas" else v for k, v in hp.items()}}
              for p, hp in zip(params, hps)]
    return optim.create(names.pop(), groups)
