"""Named optimizers. Each is only a chain, with torch-like arguments.

Every preset also takes ``clip`` (a threshold, None for no clipping), ``clip_kind``
(``global_norm``, ``norm``, ``value`` or ``agc``), ``clip_at`` (``grad``: before the
moments; ``update``: after them, bounding the step direction, never the decoupled decay),
``clip_scope`` (``global``: one norm over every param group, as
``clip_grad_norm_(model.parameters())``; ``group``: per group), ``skip_nonfinite`` (and
``max_consecutive_skips``), ``accumulate`` (step every k calls on the mean gradient),
``fused`` and ``compiled``. Given a module instead of parameters, ``no_decay`` and
``module_lr`` build the param groups (see optim.groups).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

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
from .groups import check as check_groups
from .groups import param_groups
from .guards import ScaleByLr, SkipNonfinite
from .moments import (
    ScaleByAdam,
    ScaleByAdamax,
    ScaleByAdopt,
    ScaleByBelief,
    ScaleByLion,
    ScaleByRAdam,
    ScaleByRms,
    ScaleByYogi,
    Trace,
)
from .sparse import ScaleBySparseAdam

CLIPS: dict[str, dict[str, type[Transform]]] = {
    "grad": {"global_norm": ClipByGlobalNorm, "norm": ClipByNorm, "value": ClipByValue,
             "agc": AdaptiveGradClip},
    "update": {"global_norm": ClipUpdateNorm, "value": ClipUpdateValue},
}
SCOPED = (ClipByGlobalNorm, ClipUpdateNorm)
OPTIONS = ["clip", "clip_kind", "clip_at", "clip_scope", "skip_nonfinite",
           "max_consecutive_skips", "accumulate", "fused", "compiled", "no_decay", "module_lr"]


def _clip(clip, clip_kind, clip_at, clip_scope) -> Transform | None:
    checks.choice("clip_at", clip_at, CLIPS)
    checks.choice("clip_kind", clip_kind, CLIPS[clip_at])
    checks.choice("clip_scope", clip_scope, ("global", "group"))
    if clip is None:
        return None
    kind = CLIPS[clip_at][clip_kind]
    return kind(clip, scope=clip_scope) if kind in SCOPED else kind(clip)


def _build(params, moments: list[Transform], lr, *, clip=None, clip_kind="global_norm",
           clip_at="grad", clip_scope="global", skip_nonfinite=False,
           max_consecutive_skips=None, decay: list[Transform] = (), **options
           ) -> ChainOptimizer:
    """[skip] [grad clip] moments... [update clip] [decoupled decay] scale_by_lr."""
    clipper = _clip(clip, clip_kind, clip_at, clip_scope)
    if max_consecutive_skips is not None and not skip_nonfinite:
        raise ValueError(f"max_consecutive_skips={max_consecutive_skips!r} is invalid "
                         "without skip_nonfinite=True")
    head = [SkipNonfinite(max_consecutive=max_consecutive_skips)] if skip_nonfinite else []
    if clipper is not None and clip_at == "grad":
        head.append(clipper)
    tail = [clipper] if clipper is not None and clip_at == "update" else []
    return ChainOptimizer(params, [*head, *moments, *tail, *decay, ScaleByLr(lr)], **options)


def sgd(params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
        **kw):
    moments = [AddDecayedWeights(weight_decay), Trace(momentum, dampening, nesterov)]
    return _build(params, moments, lr, **kw)


def rmsprop(params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
            centered=False, **kw):
    """RMSprop; momentum is a group hyperparameter like any other (0: none)."""
    moments = [AddDecayedWeights(weight_decay), ScaleByRms(alpha, eps, centered),
               Trace(momentum)]
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
    return _build(params, [ScaleByAdam(betas, eps, amsgrad)], lr,
                  decay=[AddDecayedWeights(weight_decay)], **kw)


def amsgrad(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, **kw):
    return adam(params, lr, betas, eps, weight_decay, amsgrad=True, **kw)


def nadam(params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
          momentum_decay=4e-3, **kw):
    moments = [AddDecayedWeights(weight_decay),
               ScaleByAdam(betas, eps, nesterov=True, momentum_decay=momentum_decay)]
    return _build(params, moments, lr, **kw)


def nadamw(params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
           momentum_decay=4e-3, **kw):
    """NAdam with decoupled decay: torch's NAdam(decoupled_weight_decay=True)."""
    moments = [ScaleByAdam(betas, eps, nesterov=True, momentum_decay=momentum_decay)]
    return _build(params, moments, lr, decay=[AddDecayedWeights(weight_decay)], **kw)


def radam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, **kw):
    moments = [AddDecayedWeights(weight_decay), ScaleByRAdam(betas, eps)]
    return _build(params, moments, lr, **kw)


def radamw(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, **kw):
    """RAdam with decoupled decay: torch's RAdam(decoupled_weight_decay=True)."""
    return _build(params, [ScaleByRAdam(betas, eps)], lr,
                  decay=[AddDecayedWeights(weight_decay)], **kw)


def adamax(params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, **kw):
    moments = [AddDecayedWeights(weight_decay), ScaleByAdamax(betas, eps)]
    return _build(params, moments, lr, **kw)


def adabelief(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-16, weight_decay=0.0, **kw):
    return _build(params, [ScaleByBelief(betas, eps)], lr,
                  decay=[AddDecayedWeights(weight_decay)], **kw)


def yogi(params, lr=1e-2, betas=(0.9, 0.999), eps=1e-3, initial_accumulator=1e-6,
         weight_decay=0.0, **kw):
    moments = [AddDecayedWeights(weight_decay), ScaleByYogi(betas, eps, initial_accumulator)]
    return _build(params, moments, lr, **kw)


def adopt(params, lr=1e-3, betas=(0.9, 0.9999), eps=1e-6, weight_decay=0.0,
          clip_exponent=0.25, **kw):
    """ADOPT (Taniguchi et al. 2024); weight_decay is coupled (L2), as in the authors'
    default."""
    moments = [AddDecayedWeights(weight_decay), ScaleByAdopt(betas, eps, clip_exponent)]
    return _build(params, moments, lr, **kw)


def lion(params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, **kw):
    """Lion (Chen et al. 2023), with decoupled weight decay."""
    return _build(params, [ScaleByLion(betas)], lr, decay=[AddDecayedWeights(weight_decay)],
                  **kw)


def sparse_adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, skip_nonfinite=False,
                max_consecutive_skips=None, **options):
    """Lazy Adam for sparse gradients: torch.optim.SparseAdam."""
    return _build(params, [ScaleBySparseAdam(betas, eps)], lr, skip_nonfinite=skip_nonfinite,
                  max_consecutive_skips=max_consecutive_skips, **options)


PRESETS: dict[str, Callable[..., ChainOptimizer]] = {
    f.__name__: f
    for f in (sgd, rmsprop, adam, adamw, adam_l2, amsgrad, nadam, nadamw, radam, radamw,
              adamax, adabelief, yogi, adopt, lion, sparse_adam)
}
# what each preset takes besides its own arguments
_REFUSED = {"sparse_adam": {"clip", "clip_kind", "clip_at", "clip_scope", "accumulate",
                            "compiled"}}


def available() -> list[str]:
    """Names that `create` accepts."""
    return sorted(PRESETS)


def create(name: str, params, **hparams) -> ChainOptimizer:
    """Build the preset ``name`` (e.g. from a config: ``create(cfg.name, params, **cfg)``).

    ``params`` may be parameters, param groups, ``named_parameters()`` or a module; with a
    module, ``no_decay`` and ``module_lr`` split it into groups (optim.groups)."""
    checks.choice("name", name, available())
    preset = PRESETS[name]
    allowed = [a for a in inspect.signature(preset).parameters
               if a not in ("params", "kw", "options")]
    allowed += [o for o in OPTIONS if o not in _REFUSED.get(name, ()) and o not in allowed]
    for key in hparams:
        checks.choice(f"{name}: hyperparameter", key, allowed)
    no_decay, module_lr = hparams.pop("no_decay", None), hparams.pop("module_lr", None)
    if isinstance(params, nn.Module):
        if no_decay and "weight_decay" not in allowed:
            raise ValueError(f"no_decay={list(no_decay)!r} is invalid for {name}: it has no "
                             "weight decay")
        params = param_groups(params, no_decay, module_lr)
    elif no_decay or module_lr:
        check_groups(no_decay, module_lr)
        raise ValueError(f"no_decay={no_decay!r} / module_lr={module_lr!r} need the module: "
                         f"optim.create({name!r}, model, ...) instead of its parameters")
    return preset(params, **hparams)
