"""Lowering: a chain that equals a torch algorithm runs on torch's fused kernel.

A chain of separate multi-tensor passes reads and writes every parameter-sized buffer
once per transform; torch's fused Adam/AdamW/SGD do the whole step in one pass. When
a chain is exactly one of those (optionally behind ``skip_nonfinite`` and
``clip_by_global_norm``, which become the kernel's ``grad_scale``), its step is
handed to the kernel. Anything else runs transform by transform.

Adam with ``clip_update_norm`` needs the update's global norm before any parameter moves.
The kernel then runs on a zeroed scratch list with lr=1: it updates the moments and leaves
minus the update in the scratch, in the one pass; the norm and the scaled add to the
parameters are the two passes the clip cannot avoid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import StepContext, Transform, global_norm
from .clipping import ClipByGlobalNorm, ClipUpdateNorm, global_clip_factor
from .decay import AddDecayedWeights
from .guards import ScaleByLr, SkipNonfinite
from .moments import ScaleByAdam, Trace


@dataclass
class FusedPlan:
    kind: str  # "adam", "adamw" or "sgd"
    clip: ClipByGlobalNorm | None
    decay: bool
    update_clip: bool = False
    _scratch: dict = field(default_factory=dict, repr=False)  # per group: the update buffer

    def eligible(self, ctx: StepContext) -> bool:
        if not ctx.uniform_float():
            return False
        if not all(g.is_contiguous() for g in ctx.grads):
            return False  # torch's CPU fused kernels mis-handle strided gradients
        if self.clip is not None and ctx.params[0].dtype == torch.float64:
            return False  # the kernel's grad_scale is float32: it would round the clip factor
        if self.kind == "sgd":
            return len(set(ctx.steps)) == 1
        if self.update_clip and self.decay and ctx.group["weight_decay"]:
            return False  # coupled L2 needs the parameters inside the kernel
        return not ctx.group["nesterov"]

    def _grad_scale(self, ctx: StepContext):
        if self.clip is None:
            return None
        scale = global_clip_factor(ctx, ctx.grad_norm(), ctx.group["max_norm"])
        return (1.0 / scale).to(ctx.params[0].device)

    def step(self, ctx: StepContext) -> None:
        g, states = ctx.group, ctx.states
        wd = g["weight_decay"] if self.decay else 0.0
        grad_scale = self._grad_scale(ctx)
        if self.kind == "sgd":
            momentum = g.get("momentum", 0.0)
            bufs = [s["momentum_buffer"] for s in states] if momentum else []
            torch._fused_sgd_(
                ctx.params, ctx.grads, bufs, weight_decay=wd, momentum=momentum, lr=g["lr"],
                dampening=g.get("dampening", 0.0), nesterov=g.get("nesterov", False),
                maximize=False, is_first_step=ctx.steps[0] == 1, grad_scale=grad_scale,
            )
            return
        kernel = torch._fused_adamw_ if self.kind == "adamw" else torch._fused_adam_
        b1, b2 = g["betas"]
        targets = self._zeroed_scratch(ctx) if self.update_clip else ctx.params
        kernel(
            targets, ctx.grads, [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [s["max_exp_avg_sq"] for s in states] if g["amsgrad"] else [],
            [s["step"] for s in states], lr=1.0 if self.update_clip else g["lr"], beta1=b1,
            beta2=b2, weight_decay=wd, eps=g["eps"], amsgrad=g["amsgrad"], maximize=False,
            grad_scale=grad_scale,
        )
        if self.update_clip:
            self._clipped_update(ctx, targets)

    def _zeroed_scratch(self, ctx: StepContext) -> list:
        """One update-sized buffer per group, kept between steps: a fresh allocation costs
        a page fault per page on CPU, more than the whole fused kernel."""
        key = id(ctx.group)
        scratch = self._scratch.get(key)
        if scratch is None or [s.shape for s in scratch] != [p.shape for p in ctx.params]:
            scratch = self._scratch[key] = [torch.zeros_like(p) for p in ctx.params]
        else:
            torch._foreach_zero_(scratch)
        return scratch

    def _clipped_update(self, ctx: StepContext, negated: list) -> None:
        """params -= lr * clip(update), with ``negated`` = -update (as ClipUpdateNorm)."""
        scale = global_clip_factor(ctx, global_norm(negated), ctx.group["max_update_norm"])
        if negated[0].is_cpu:  # a free read on CPU: the scale rides on the add
            torch._foreach_add_(ctx.params, negated, alpha=ctx.group["lr"] * scale.item())
        else:
            torch._foreach_mul_(negated, (scale * ctx.group["lr"]).to(negated[0].device))
            torch._foreach_add_(ctx.params, negated)


def plan(transforms: list[Transform]) -> FusedPlan | None:
    """The fused kernel this chain equals, or None."""
    ts = [t for t in transforms if not isinstance(t, SkipNonfinite)]
    clip = ts.pop(0) if ts and type(ts[0]) is ClipByGlobalNorm else None
    kinds = [_kind(t) for t in ts]
    if kinds[-2:] == ["update_clip", "lr"] and kinds[:-2] in (["adam"], ["decay", "adam"]):
        return FusedPlan("adam", clip, kinds[0] == "decay", update_clip=True)
    patterns = {
        ("adam", "lr"): ("adam", False),
        ("decay", "adam", "lr"): ("adam", True),
        ("adam", "decay", "lr"): ("adamw", True),
        ("lr",): ("sgd", False),
        ("trace", "lr"): ("sgd", False),
        ("decay", "lr"): ("sgd", True),
        ("decay", "trace", "lr"): ("sgd", True),
    }
    match = patterns.get(tuple(kinds))
    return FusedPlan(match[0], clip, match[1]) if match else None


def _kind(t: Transform) -> str | None:
    if type(t) is ScaleByAdam and not t.hparams["nesterov"]:
        return "adam"
    if type(t) is AddDecayedWeights and t.mask is None:
        return "decay"
    if type(t) is Trace:
        return "trace"
    if type(t) is ScaleByLr:
        return "lr"
    if type(t) is ClipUpdateNorm:
        return "update_clip"
    return None
