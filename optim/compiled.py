"""Opt-in compiled steps for Adam-family chains that torch has no fused kernel for.

AdaBelief and Yogi need passes torch's Adam does not (the residual g - m; sign(v - g^2)),
so transform by transform they cost 1.3-1.9x torch's foreach Adam and several times its
fused kernel. With ``compiled=True`` the step of such a chain is one ``torch.compile``
graph of per-tensor code, which inductor fuses into one loop per tensor: the speed of
torch's fused Adam. The price is a compile when a group's shapes are first seen (seconds
for a few tensors, minutes for hundreds; inductor caches it on disk for later processes).
Step-dependent scalars enter as 0-dim tensors, so one graph serves every step. Dynamo's
guards on thousands of tensors would cost as much as the step itself, so each graph is
compiled for one layout (dtype, device, every shape and stride, the constants), checked
here before the call, with dynamo's guards and inductor's size asserts off.

The rules are the transforms' own (moments.ScaleByBelief, moments.ScaleByYogi) with the
same state keys, so a state_dict moves freely between the compiled and the eager step.
"""

from __future__ import annotations

import math
import types

import torch

from .base import StepContext, Transform, taken_by
from .decay import AddDecayedWeights
from .guards import ScaleByLr, SkipNonfinite
from .moments import ScaleByBelief, ScaleByYogi


def _belief(params, grads, exp_avgs, exp_avg_vars, step_size, bc2_sqrt, keep,
            b1: float, b2: float, eps: float, wd: float, decay: bool):
    """AdaBelief, then decoupled decay as the preset chains it: p *= keep (1 - lr wd)."""
    for p, g, m, s in zip(params, grads, exp_avgs, exp_avg_vars):
        m.lerp_(g, 1 - b1)
        r = g - m
        s.mul_(b2).addcmul_(r, r, value=1 - b2).add_(eps)
        if decay:
            p.mul_(keep)
        p.add_(m / (s.sqrt() / bc2_sqrt + eps) * step_size)


def _yogi(params, grads, exp_avgs, exp_avg_sqs, step_size, bc2_sqrt, keep,
          b1: float, b2: float, eps: float, wd: float, decay: bool):
    """Yogi, after coupled L2 decay as the preset chains it: g + wd p."""
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
        if decay:
            g = g.add(p, alpha=wd)
        m.lerp_(g, 1 - b1)
        g2 = g * g
        v.add_(torch.sign(v - g2) * g2, alpha=-(1 - b2))
        p.add_(m / (v.sqrt() / bc2_sqrt + eps) * step_size)


# moments transform: (step, second-moment state key)
_RULES = {ScaleByBelief: (_belief, "exp_avg_var"), ScaleByYogi: (_yogi, "exp_avg_sq")}
# chains with a compiled step (weight decay unmasked, where the presets put it) -> moments
_CHAINS = {(ScaleByBelief, ScaleByLr): ScaleByBelief,
           (ScaleByBelief, AddDecayedWeights, ScaleByLr): ScaleByBelief,
           (ScaleByYogi, ScaleByLr): ScaleByYogi,
           (AddDecayedWeights, ScaleByYogi, ScaleByLr): ScaleByYogi}
_COMPILED: dict = {}  # (rule, layout) -> compiled step


def _layout(rule, tensor_lists, constants) -> tuple:
    """What a compiled step was specialised on: dtype, device, every shape and stride, and
    the Python constants. Checking it here costs a fraction of dynamo's guards on
    thousands of tensors, which this module's graphs therefore skip."""
    t0 = tensor_lists[0][0]
    return (rule, t0.dtype, t0.device, constants,
            *(tuple((t.shape, t.stride()) for t in ts) for ts in tensor_lists))


def _compiled(key: tuple):
    """One compiled graph per layout, on its own copy of the code object (dynamo keeps its
    cache per code object), with dynamo's guards and inductor's size asserts off:
    ``_layout`` is the guard."""
    if key not in _COMPILED:
        rule = key[0]
        code = rule.__code__.replace(co_name=f"{rule.__name__}_{len(_COMPILED)}")
        fn = types.FunctionType(code, rule.__globals__, code.co_name)
        _COMPILED[key] = torch.compile(fn, dynamic=False, options={
            "guard_filter_fn": torch.compiler.skip_all_guards_unsafe, "size_asserts": False})
    return _COMPILED[key]


class CompiledSegment(Transform):
    """The chain (after ``skip_nonfinite``) as one compiled step per group, where the group
    has one float dtype on one device and every tensor has taken the same number of steps;
    the original transforms otherwise."""

    position = "last"
    takes_lazy = True
    kind = "compiled"

    def __init__(self, moments: type, transforms: list[Transform]):
        self.moments, self.transforms = moments, transforms

    def apply(self, params, incoming, ctx: StepContext) -> None:
        if not (ctx.uniform and incoming is ctx.grads and len(set(ctx.steps)) == 1):
            u = incoming
            for t in self.transforms[:-1]:
                u = t.update(taken_by(t, u), ctx)
            return self.transforms[-1].apply(params, taken_by(self.transforms[-1], u), ctx)
        rule, second = _RULES[self.moments]
        g = ctx.group
        b1, b2 = g["betas"]
        t = ctx.steps[0]
        dtype = ctx.params[0].dtype
        step_size = torch.tensor(-g["lr"] / (1 - b1**t), dtype=dtype)
        bc2_sqrt = torch.tensor(math.sqrt(1 - b2**t), dtype=dtype)
        wd = float(g.get("weight_decay", 0.0))
        keep = torch.tensor(1 - g["lr"] * wd, dtype=dtype)
        tensors = (ctx.params, ctx.grads, [s["exp_avg"] for s in ctx.states],
                   [s[second] for s in ctx.states])
        constants = (float(b1), float(b2), float(g["eps"]), wd, wd != 0)
        step = _compiled(_layout(rule, tensors, constants))
        step(*tensors, step_size, bc2_sqrt, keep, *constants)


def lower(transforms: list[Transform]) -> tuple[list[Transform], CompiledSegment] | None:
    """The program with a compiled step, and that step: [skip_nonfinite] then one of
    _CHAINS; or None."""
    head = [t for t in transforms if isinstance(t, SkipNonfinite)]
    ts = transforms[len(head):]
    kinds = tuple(type(t) for t in ts)
    if kinds in _CHAINS and all(getattr(t, "mask", None) is None for t in ts):
        segment = CompiledSegment(_CHAINS[kinds], ts)
        return [*head, segment], segment
    return None
