"""Named optimizers. Each is only a chain, with torch-like arguments.

Every preset also takes ``clip`` (a threshold, None for no clipping), ``clip_kind``
(``global_norm``, ``norm``, ``value`` or ``agc``), ``clip_at`` (``grad``: before the
moments; ``update``: after them, bounding the step direction) and ``skip_nonfinite``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from . import checks
from .base import Transform
from .chain import ChainOptimizer
from .clipping import (
    AdaptiveGradClip,
    ClipByGlobalNorm,
    ClipByNorm,
    ClipByValue,
    ClipUpdateNorm,
    ClipUpdateValue,
)
from .decay import AddDecayedWeights
from .guards import ScaleByLr, SkipNonfinite
from .moments import (
    ScaleByAdam,
    ScaleByAdamax,
    ScaleByBelief,
    ScaleByRAdam,
    ScaleByRms,
    ScaleByYogi,
    Trace,
)

CLIPS: dict[str, dict[str, type[Transform]]] = {
    "grad": {"global_norm": ClipByGlobalNorm, "norm": ClipByNorm, "value": ClipByValue,
             "agc": AdaptiveGradClip},
    "update": {"global_norm": ClipUpdateNorm, "value": ClipUpdateValue},
}


def _clip(clip, clip_kind, clip_at) -> Transform | None:
    checks.choice("clip_at", clip_at, CLIPS)
    checks.choice("clip_kind", clip_kind, CLIPS[clip_at])
    if clip is None:
        return None
    return CLIPS[clip_at][clip_kind](clip)


def _build(params, moments: list[Transform], lr, *, clip=None, clip_kind="global_norm",
           clip_at="grad", skip_nonfinite=False, **hparams) -> ChainOptimizer:
    """[skip] [grad clip] moments... [update clip] scale_by_lr."""
    clipper = _clip(clip, clip_kind, clip_at)
    head = [SkipNonfinite()] if skip_nonfinite else []
    if clipper is not None and clip_at == "grad":
        head.append(clipper)
    tail = [clipper] if clipper is not None and clip_at == "update" else []
    return ChainOptimizer(params, [*head, *moments, *tail, ScaleByLr(lr)], **hparams)


def sgd(params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
        **kw):
    moments = [AddDecayedWeights(weight_decay), Trace(momentum, dampening, nesterov)]
    return _build(params, moments, lr, **kw)


def rmsprop(params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
            centered=False, **kw):
    moments = [AddDecayedWeights(weight_decay), ScaleByRms(alpha, eps, centered)]
    if momentum:
        moments.append(Trace(momentum))
    return _build(params, moments, lr, **kw)


def adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
         **kw):
    """Adam; a nonzero weight_decay is torch's coupled L2 (see adam_l2)."""
    return adam_l2(params, lr, betas, eps, weight_decay, amsgrad, **kw)


def adam_l2(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
            **kw):
    """Adam with L2: decay enters the moments and is divided by sqrt(v_hat)."""
    moments = [AddDecayedWeights(weight_decay), ScaleByAdam(betas, eps, amsgrad)]
    return _build(params, moments, lr, **kw)


def adamw(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
          **kw):
    """AdamW: decoupled decay after the moments, every weight shrinks at rate lr*wd."""
    moments = [ScaleByAdam(betas, eps, amsgrad), AddDecayedWeights(weight_decay)]
    return _build(params, moments, lr, **kw)


def amsgrad(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, **kw):
    return adam(params, lr, betas, eps, weight_decay, amsgrad=True, **kw)


def nadam(params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
          momentum_decay=4e-3, **kw):
    moments = [AddDecayedWeights(weight_decay),
               ScaleByAdam(betas, eps, nesterov=True, momentum_decay=momentum_decay)]
    return _build(params, moments, lr, **kw)


def radam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, **kw):
    moments = [AddDecayedWeights(weight_decay), ScaleByRAdam(betas, eps)]
    return _build(params, moments, lr, **kw)


def adamax(params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, **kw):
    moments = [AddDecayedWeights(weight_decay), ScaleByAdamax(betas, eps)]
    return _build(params, moments, lr, **kw)


def adabelief(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-16, weight_decay=0.0, **kw):
    moments = [ScaleByBelief(betas, eps), AddDecayedWeights(weight_decay)]
    return _build(params, moments, lr, **kw)


def yogi(params, lr=1e-2, betas=(0.9, 0.999), eps=1e-3, initial_accumulator=1e-6,
         weight_decay=0.0, **kw):
    moments = [AddDecayedWeights(weight_decay), ScaleByYogi(betas, eps, initial_accumulator)]
    return _build(params, moments, lr, **kw)


PRESETS: dict[str, Callable[..., ChainOptimizer]] = {
    f.__name__: f
    for f in (sgd, rmsprop, adam, adamw, adam_l2, amsgrad, nadam, radam, adamax, adabelief,
              yogi)
}


def available() -> list[str]:
    """Names that `create` accepts."""
    return sorted(PRESETS)


def create(name: str, params, **hparams) -> ChainOptimizer:
    """Build the preset ``name`` (e.g. from a config: ``create(cfg.name, params, **cfg)``)."""
    checks.choice("name", name, available())
    preset = PRESETS[name]
    allowed = [a for a in inspect.signature(preset).parameters if a not in ("params", "kw")]
    allowed += ["clip", "clip_kind", "clip_at", "skip_nonfinite", "fused", "compiled"]
    for key in hparams:
        checks.choice(f"{name}: hyperparameter", key, allowed)
    return preset(params, **hparams)
