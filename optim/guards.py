"""Step-level transforms: the step guard and the learning rate."""

from __future__ import annotations

import torch

from . import checks
from .base import LazyUpdate, Quotient, StepContext, Transform
from .decay import Decoupled


class SkipNonfinite(Transform):
    """If any gradient of any group holds a NaN or Inf, the whole step changes nothing
    (parameters, moments, step counts) and ``stats.skipped`` counts it.

    It must come first in a chain: nothing may touch state before the step is admitted.
    The check uses the infinity norm, so huge but finite gradients never overflow it.
    """

    def update(self, updates, ctx):
        return updates

    def admit(self, ctx: StepContext) -> bool:
        peaks = torch._foreach_norm(ctx.grads, float("inf"))
        return bool(torch.isfinite(torch.stack([p.float() for p in peaks])).all())


class ScaleByLr(Transform):
    """Multiply by -lr, reading ``lr`` from the param group so every torch LR scheduler
    drives it. As the last transform it folds into the parameter update itself
    (``p += -lr * u`` in one multi-tensor pass)."""

    takes_lazy = True

    def __init__(self, lr=1e-3):
        self.hparams = {"lr": lr}
        self.validate(self.hparams)

    def validate(self, group):
        checks.non_negative("lr", group["lr"])

    def update(self, updates, ctx):
        if isinstance(updates, LazyUpdate):
            updates = updates.materialize()
        return torch._foreach_mul(updates, -ctx.group["lr"])

    def apply(self, params, updates, ctx):
        lr = ctx.group["lr"]
        if isinstance(updates, Quotient):
            updates.add_to(params, -lr)
        elif isinstance(updates, Decoupled):
            torch._foreach_mul_(updates.params, 1 - lr * updates.weight_decay)
            self.apply(params, updates.direction, ctx)
        else:
            torch._foreach_add_(params, updates, alpha=-lr)


skip_nonfinite = SkipNonfinite
scale_by_lr = ScaleByLr
