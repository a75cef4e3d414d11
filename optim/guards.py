"""Step-level transforms: the step guard and the learning rate."""

from __future__ import annotations

import torch

from . import checks
from .base import LazyUpdate, StepContext, Transform, max_abs

SCOPES = ("global", "group")


class SkipNonfinite(Transform):
    """If a gradient holds a NaN or Inf, the step changes nothing (parameters, moments,
    step counts) and ``stats.skipped`` counts it: for every group (``scope="global"``, the
    default: one bad gradient anywhere skips the whole step, as torch's GradScaler does) or
    for the group it is in (``scope="group"``).

    ``max_consecutive=N`` raises FloatingPointError after N skipped steps in a row, instead
    of skipping forever. It must come first in a chain: nothing may touch state before the
    step is admitted. The check uses the infinity norm, so huge but finite gradients never
    overflow it.
    """

    position = "first"
    accepts_sparse = True

    def __init__(self, scope="global", max_consecutive: int | None = None):
        self.scope = checks.choice("scope", scope, SCOPES)
        if max_consecutive is not None:
            checks.positive_int("max_consecutive", max_consecutive)
        self.max_consecutive = max_consecutive

    def update(self, updates, ctx):
        return updates

    def admit(self, ctxs: list[StepContext]) -> list[StepContext]:
        finite = torch.stack([_finite(ctx.grads).cpu() for ctx in ctxs]).tolist()
        if self.scope == "global" and not all(finite):
            finite = [False] * len(ctxs)
        for ctx, ok in zip(ctxs, finite):
            if ok:
                ctx.stats.skipped_in_a_row = 0
                continue
            ctx.stats.skipped += 1
            ctx.stats.skipped_in_a_row += 1
            if self.max_consecutive and ctx.stats.skipped_in_a_row >= self.max_consecutive:
                raise FloatingPointError(
                    f"skip_nonfinite: {ctx.stats.skipped_in_a_row} steps in a row had "
                    f"non-finite gradients (max_consecutive={self.max_consecutive}); in this "
                    f"step: {_first_nonfinite(ctxs)}")
        return [ctx for ctx, ok in zip(ctxs, finite) if ok]

    def __repr__(self) -> str:
        return f"SkipNonfinite(scope={self.scope!r}, max_consecutive={self.max_consecutive!r})"


def _values(g):
    return g._values() if g.is_sparse else g


def _finite(grads) -> torch.Tensor:
    return torch.isfinite(max_abs([_values(g) for g in grads]))


def _first_nonfinite(ctxs) -> str:
    for ctx in ctxs:
        for i, g in enumerate(ctx.grads):
            if not torch.isfinite(_values(g)).all():
                return f"parameter {ctx.param_name(i)}"
    return "none"


class ScaleByLr(Transform):
    """Multiply by -lr and add to the parameters, reading ``lr`` from the param group so
    every torch LR scheduler drives it. Every chain ends in it; a lazy update (an Adam
    quotient, a decoupled decay) is applied with torch's own ops."""

    takes_lazy = True
    accepts_sparse = True
    position = "last"

    def __init__(self, lr=1e-3):
        self.hparams = {"lr": lr}
        self.validate(self.hparams)

    def validate(self, group):
        checks.non_negative("lr", group["lr"])

    def apply(self, params, updates, ctx):
        if isinstance(updates, LazyUpdate):
            updates.add_to(params, ctx.group["lr"])
        else:
            torch._foreach_add_(params, updates, alpha=-ctx.group["lr"])


skip_nonfinite = SkipNonfinite
scale_by_lr = ScaleByLr
