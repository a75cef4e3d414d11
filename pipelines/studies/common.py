"""Small helpers every study shares: optimizers from config specs, seeded generators."""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

import optim


def make_optimizer(spec, params, **overrides) -> optim.ChainOptimizer:
    """``optim.create`` from a config spec such as ``{name: sgd, momentum: 0.9}``."""
    hp = OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) else dict(spec)
    hp.update(overrides)
    name = hp.pop("name")
    if "betas" in hp:
        hp["betas"] = tuple(hp["betas"])
    return optim.create(name, params, **hp)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def describe(spec) -> str:
    """``{name: sgd, momentum: 0.9}`` as ``sgd(momentum=0.9)``, for report setups."""
    hp = OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) else dict(spec)
    name = hp.pop("name")
    return f"{name}({', '.join(f'{k}={v}' for k, v in hp.items())})"
