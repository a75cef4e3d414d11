"""Clipping transforms, before the moments (on gradients) or after them (on the update).

Where clipping sits is the point: clipped before, the moment estimates see clipped
gradients (biased, but the optimizer state never sees an outlier); clipped after, the
moments stay unbiased and only the step taken is bounded.
Each transform counts the steps it clipped (``stats.clipped``) without a host sync.
"""

from __future__ import annotations

import torch

from . import checks
from .base import LazyUpdate, StepContext, Transform, global_norm

_TINY = 1e-6  # as torch.nn.utils.clip_grad_norm_: scale = max_norm / (norm + 1e-6)


def _record(ctx: StepContext, before, after, clipped) -> None:
    ctx.stats.clipped = ctx.stats.clipped + clipped.to(torch.int64)
    ctx.stats.grad_norm, ctx.stats.clipped_grad_norm = before, after


def global_clip_factor(ctx: StepContext, norm, max_norm):
    """min(1, max_norm / (norm + 1e-6)) for a global norm, recorded in the group's clip
    statistics; the transforms and the fused lowerings all clip through it."""
    scale = torch.clamp(max_norm / (norm + _TINY), max=1.0)
    _record(ctx, norm, norm * scale, norm > max_norm)
    return scale


class ClipByGlobalNorm(Transform):
    """Scale all of a group's gradients so their joint L2 norm is at most ``max_norm``
    (torch.nn.utils.clip_grad_norm_ over the group)."""

    def __init__(self, max_norm=1.0):
        self.hparams = {"max_norm": max_norm}
        self.validate(self.hparams)

    def validate(self, group):
        checks.positive("max_norm", group["max_norm"])

    def update(self, updates, ctx):
        norm = ctx.grad_norm() if updates is ctx.grads else global_norm(updates)
        scale = global_clip_factor(ctx, norm, ctx.group["max_norm"])
        return torch._foreach_mul(updates, scale.to(updates[0].device))


class ClipByNorm(Transform):
    """Scale each tensor separately so its L2 norm is at most ``max_norm``."""

    def __init__(self, max_norm=1.0):
        self.hparams = {"max_norm": max_norm}
        self.validate(self.hparams)

    validate = ClipByGlobalNorm.validate

    def update(self, updates, ctx):
        max_norm = ctx.group["max_norm"]
        norms = torch.stack([n.float() for n in torch._foreach_norm(updates)])
        scales = torch.clamp(max_norm / (norms + _TINY), max=1.0)
        out = torch._foreach_mul(updates, list(scales.to(updates[0].device).unbind()))
        before = torch.linalg.vector_norm(norms)
        _record(ctx, before, torch.linalg.vector_norm(norms * scales), (norms > max_norm).any())
        return out


class ClipByValue(Transform):
    """Clamp every element to [-clip_value, clip_value]."""

    key = "clip_value"

    def __init__(self, clip_value=1.0):
        self.hparams = {self.key: clip_value}
        self.validate(self.hparams)

    def validate(self, group):
        checks.positive(self.key, group[self.key])

    def update(self, updates, ctx):
        c = ctx.group[self.key]
        peak = torch.stack([n.float() for n in torch._foreach_norm(updates, float("inf"))]).max()
        out = torch._foreach_clamp_min(updates, -c)
        torch._foreach_clamp_max_(out, c)
        before = global_norm(updates) if ctx.recording else None
        after = global_norm(out) if ctx.recording else None
        _record(ctx, before, after, peak > c)
        return out


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
        before = global_norm(updates) if ctx.recording else None
        after = global_norm(out) if ctx.recording else None
        _record(ctx, before, after, clipped)
        return out


class ClipUpdateNorm(ClipByGlobalNorm):
    """After the moments: scale the update direction so its global norm is at most
    ``max_update_norm`` (the step taken is then at most lr * max_update_norm)."""

    takes_lazy = True  # materialises it itself, then scales its own tensors in place

    def __init__(self, max_norm=1.0):
        self.hparams = {"max_update_norm": max_norm}
        self.validate(self.hparams)

    def validate(self, group):
        checks.positive("max_update_norm", group["max_update_norm"])

    def update(self, updates, ctx):
        owned = isinstance(updates, LazyUpdate)  # materialised here: scale it in place
        if owned:
            updates = updates.materialize()
        scale = global_clip_factor(ctx, global_norm(updates), ctx.group["max_update_norm"])
        scale = scale.to(updates[0].device)
        if owned:
            torch._foreach_mul_(updates, scale)
            return updates
        return torch._foreach_mul(updates, scale)


class ClipUpdateValue(ClipByValue):
    """After the moments: clamp every element of the update direction."""

    key = "max_update_value"


clip_by_global_norm = ClipByGlobalNorm
clip_by_norm = ClipByNorm
clip_by_value = ClipByValue
adaptive_grad_clip = AdaptiveGradClip
clip_update_norm = ClipUpdateNorm
clip_update_value = ClipUpdateValue
