"""Weight decay as a transform: where it sits in the chain decides what it means.

Before the moments it is L2 regularisation (the decay is normalised by sqrt(v_hat),
so weights with a large gradient history decay less); after the moments it is
decoupled decay, AdamW (Loshchilov & Hutter 2019): every weight decays at rate lr*wd.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from . import checks
from .base import LazyUpdate, Transform

MASKS: dict[str, Callable[[Tensor], bool]] = {
    "matrices": lambda p: p.ndim >= 2,  # the usual "no decay on biases and norms"
}


@dataclass
class Decoupled(LazyUpdate):
    """direction + weight_decay * params, kept apart so that `scale_by_lr` can apply it as
    torch's AdamW does: p *= 1 - lr * wd, then p -= lr * direction (same rounding)."""

    direction: list[Tensor] | LazyUpdate
    params: list[Tensor]
    weight_decay: float

    def materialize(self) -> list[Tensor]:
        direction = self.direction
        if isinstance(direction, LazyUpdate):
            direction = direction.materialize()
        return torch._foreach_add(direction, self.params, alpha=self.weight_decay)

    def add_to(self, params: list[Tensor], lr: float) -> None:
        torch._foreach_mul_(self.params, 1 - lr * self.weight_decay)
        if isinstance(self.direction, LazyUpdate):
            self.direction.add_to(params, lr)
        else:
            torch._foreach_add_(params, self.direction, alpha=-lr)


class AddDecayedWeights(Transform):
    """update + weight_decay * param, for the params the mask selects (all by default).

    After a moments transform (``decoupled``, set by the chain from the position) the
    decay stays apart from the direction, so that ``scale_by_lr`` applies it as torch's
    decoupled optimizers do and update clipping leaves it alone.
    """

    takes_lazy = True
    decoupled = False

    def __init__(self, weight_decay=0.0, mask: str | Callable[[Tensor], bool] | None = None):
        if isinstance(mask, str):
            checks.choice("mask", mask, MASKS)
            mask = MASKS[mask]
        self.mask = mask
        self.hparams = {"weight_decay": weight_decay}
        self.validate(self.hparams)

    def validate(self, group):
        checks.non_negative("weight_decay", group["weight_decay"])

    def update(self, updates, ctx):
        wd = ctx.group["weight_decay"]
        if wd == 0:
            return updates
        if self.decoupled and self.mask is None and not isinstance(updates, Decoupled):
            return Decoupled(updates, ctx.params, wd)
        if isinstance(updates, LazyUpdate):
            updates = updates.materialize()
        if self.mask is None:
            return torch._foreach_add(updates, ctx.params, alpha=wd)
        return [u + wd * p if self.mask(p) else u for u, p in zip(updates, ctx.params)]


add_decayed_weights = AddDecayedWeights
