"""Clipping transforms, before the moments (on gradients) or after them (on the update).

Where clipping sits is the point: clipped before, the moment estimates see clipped
gradients (biased, but the optimizer state never sees an outlier); clipped after, the
moments stay unbiased and only the step taken is bounded.

The global-norm clips decide over every param group at once by default
(``scope="global"``): one norm over all parameters, as
``torch.nn.utils.clip_grad_norm_(model.parameters())`` and optax's
``clip_by_global_norm``; ``scope="group"`` clips each group by its own norm. Update
clipping bounds the adaptive direction only: a decoupled weight decay is never clipped.
Each transform counts the steps it clipped without a host sync.
"""

from __future__ import annotations

import torch

from . import checks
from .base import (
    LazyUpdate,
    Scaled,
    StepContext,
    Transform,
    combine_norms,
    max_abs,
    tensor_norms,
)
from .decay import Decoupled

_TINY = 1e-6  # as torch.nn.utils.clip_grad_norm_: scale = max_norm / (norm + 1e-6)
SCOPES = ("global", "group")


def clip_factor(norm, max_norm):
    """min(1, max_norm / (norm + 1e-6)), and whether it clipped."""
    return torch.clamp(max_norm / (norm + _TINY), max=1.0), norm > max_norm


class _GlobalNormClip(Transform):
    """Shared by the gradient and the update clip: one factor per scope."""

    key = "max_norm"
    measures = "grad"  # what the telemetry calls the clipped quantity

    def __init__(self, max_norm=1.0, scope="global"):
        self.hparams = {self.key: max_norm}
        self.scope = checks.choice("scope", scope, SCOPES)
        self.validate(self.hparams)

    def validate(self, group):
        checks.positive(self.key, group[self.key])

    def validate_groups(self, groups):
        if self.scope == "global":
            _same_in_every_group(self.key, groups, f"{self.name} with scope='global'")

    def update_groups(self, updates, ctxs):
        parts = [self._direction(u) for u in updates]
        norms = [self._norms(d, ctx) for d, ctx in zip(parts, ctxs)]
        if self.scope == "global":
            scale, clipped = clip_factor(combine_norms([n for ns in norms for n in ns]),
                                         ctxs[0].group[self.key])
            factors = [(scale, clipped)] * len(ctxs)
        else:
            factors = [clip_factor(combine_norms(ns), ctx.group[self.key])
                       for ns, ctx in zip(norms, ctxs)]
        out = []
        for u, d, ns, (scale, clipped), ctx in zip(updates, parts, norms, factors, ctxs):
            ctx.record_clip(self.label, clipped)
            if ctx.recording:
                self._record(ctx, combine_norms(ns), scale)
            out.append(self._rewrap(u, self._scaled(d, scale)))
        return out

    def _direction(self, u):
        return u

    def _rewrap(self, u, direction):
        return direction

    def _norms(self, d, ctx: StepContext) -> list:
        return ctx.grad_norms() if d is ctx.grads else tensor_norms(d)

    def _scaled(self, d, scale):
        return Scaled(d, scale)

    def _record(self, ctx: StepContext, before, scale) -> None:
        ctx.stats.clipped_grad_norm = before * scale


class ClipByGlobalNorm(_GlobalNormClip):
    """Scale the gradients so that their joint L2 norm is at most ``max_norm``: over every
    group (``scope="global"``, torch's ``clip_grad_norm_(all params)``) or per group."""


class ClipUpdateNorm(_GlobalNormClip):
    """After the moments: scale the update direction so that its global norm is at most
    ``max_update_norm`` (the step taken is then at most lr * max_update_norm, plus the
    decoupled decay, which is never clipped)."""

    key = "max_update_norm"
    measures = "update"
    takes_lazy = True

    def _direction(self, u):
        d = u.direction if isinstance(u, Decoupled) else u
        if isinstance(d, Scaled):  # a fused kernel's scratch: keep it unmaterialised
            return d
        return d.materialize() if isinstance(d, LazyUpdate) else d

    def _rewrap(self, u, direction):
        if isinstance(u, Decoupled):
            return Decoupled(direction, u.params, u.weight_decay)
        return direction

    def _norms(self, d, ctx):
        if isinstance(d, Scaled):
            return [n * d.factor.abs().to(n.device) for n in tensor_norms(d.tensors)]
        return tensor_norms(d)

    def _scaled(self, d, scale):
        if isinstance(d, Scaled):
            return Scaled(d.tensors, d.factor * scale.to(d.factor.device))
        return Scaled(d, scale)

    def _record(self, ctx, before, scale):
        ctx.stats.update_norm, ctx.stats.clipped_update_norm = before, before * scale


class ClipByNorm(Transform):
    """Scale each tensor separately so its L2 norm is at most ``max_norm``."""

    def __init__(self, max_norm=1.0):
        self.hparams = {"max_norm": max_norm}
        self.validate(self.hparams)

    def validate(self, group):
        checks.positive("max_norm", group["max_norm"])

    def update(self, updates, ctx):
        max_norm = ctx.group["max_norm"]
        norms = torch.stack([n.float() for n in tensor_norms(updates)])
        scales = torch.clamp(max_norm / (norms + _TINY), max=1.0)
        out = torch._foreach_mul(updates, list(scales.to(updates[0].device).unbind()))
        ctx.record_clip(self.label, (norms > max_norm).any())
        if ctx.recording:
            ctx.stats.clipped_grad_norm = torch.linalg.vector_norm(norms * scales)
        return out


class ClipByValue(Transform):
    """Clamp every element to [-clip_value, clip_value]."""

    key = "clip_value"
    measures = "grad"

    def __init__(self, clip_value=1.0):
        self.hparams = {self.key: clip_value}
        self.validate(self.hparams)

    def validate(self, group):
        checks.positive(self.key, group[self.key])

    def update(self, updates, ctx):
        c = ctx.group[self.key]
        peak = max_abs(updates)
        out = torch._foreach_clamp_min(updates, -c)
        torch._foreach_clamp_max_(out, c)
        ctx.record_clip(self.label, peak > c)
        if ctx.recording:
            self._record(ctx, combine_norms(tensor_norms(updates)),
                         combine_norms(tensor_norms(out)))
        return out

    def _record(self, ctx, before, after):
        ctx.stats.clipped_grad_norm = after


class ClipUpdateValue(ClipByValue):
    """After the moments: clamp every element of the update direction (not the decoupled
    decay)."""

    key = "max_update_value"
    measures = "update"
    takes_lazy = True

    def update(self, updates, ctx):
        if isinstance(updates, Decoupled):
            direction = updates.direction
            if isinstance(direction, LazyUpdate):
                direction = direction.materialize()
            return Decoupled(super().update(direction, ctx), updates.params,
                             updates.weight_decay)
        if isinstance(updates, LazyUpdate):
            updates = updates.materialize()
        return super().update(updates, ctx)

    def _record(self, ctx, before, after):
        ctx.stats.update_norm, ctx.stats.clipped_update_norm = before, after


class AdaptiveGradClip(Transform):
    """Unit-wise adaptive gradient clipping (Brock et al. 2021, NFNets): each row's gradient
    norm is capped at ``agc_clip * max(||W_row||, agc_eps)``, a bound relative to the weight."""

    def __init__(self, clipping=0.01, eps=1e-3):
        self.hparams = {"agc_clip": clipping, "agc_eps": eps}
        self.validate(self.hparams)

    def validate(self, group):
        checks.positive("agc_clip", group["agc_clip"])
        checks.positive("agc_eps", group["agc_eps"])

    @staticmethod
    def _unit_norm(t):
        if t.ndim <= 1:
            return torch.linalg.vector_norm(t)
        return torch.linalg.vector_norm(t, dim=tuple(range(1, t.ndim)), keepdim=True)

    def update(self, updates, ctx):
        clip, eps = ctx.group["agc_clip"], ctx.group["agc_eps"]
        out, clipped = [], torch.zeros((), dtype=torch.bool, device=updates[0].device)
        for u, p in zip(updates, ctx.params):
            max_norm = clip * self._unit_norm(p.detach()).clamp(min=eps)
            norm = self._unit_norm(u)
            out.append(u * torch.clamp(max_norm / (norm + _TINY), max=1.0).to(u.dtype))
            clipped = clipped | (norm > max_norm).any()
        ctx.record_clip(self.label, clipped)
        if ctx.recording:
            ctx.stats.clipped_grad_norm = combine_norms(tensor_norms(out))
        return out


def _same_in_every_group(key: str, groups: list[dict], what: str) -> None:
    first = groups[0][key]
    for i, g in enumerate(groups[1:], start=1):
        if g[key] != first:
            raise ValueError(
                f"param_groups[{i}]: {key}={g[key]!r} differs from param_groups[0] "
                f"({first!r}): {what} takes one threshold for all groups; to clip each "
                "group by its own norm pass clip_scope='group' to optim.create (scope='group' "
                "to the transform)")


clip_by_global_norm = ClipByGlobalNorm
clip_by_norm = ClipByNorm
clip_by_value = ClipByValue
adaptive_grad_clip = AdaptiveGradClip
clip_update_norm = ClipUpdateNorm
clip_update_value = ClipUpdateValue
