"""Lowering: a chain that equals a torch algorithm runs on torch's fused kernel.

A chain of separate multi-tensor passes reads and writes every parameter-sized buffer
once per transform; torch's fused Adam/AdamW/SGD do the whole step in one pass. When
the tail of a chain is exactly one of those (optionally behind ``skip_nonfinite`` and
``clip_by_global_norm``, whose factor becomes the kernel's ``grad_scale``), that tail is
replaced by a `FusedSegment`, which hands each group's step to the kernel where it
qualifies and runs the original transforms where it does not.

A group qualifies when its parameters, gradients and every state tensor are dense,
contiguous, of one float32/float64 dtype on one CPU/CUDA device (torch's CPU kernel
indexes raw memory: a transposed or sliced parameter would be mis-updated). The chain
caches the parameter and state half of that check; gradients are checked every step.

Adam with ``clip_update_norm`` needs the update's global norm before any parameter moves.
The kernel then runs on a zeroed scratch list with lr=1: it updates the moments and leaves
minus the update in the scratch, in the one pass (`FusedDirection`); the clip takes the
norm (over every group) and ``scale_by_lr`` adds the scaled scratch to the parameters.
"""

from __future__ import annotations

import torch

from .base import Scaled, StepContext, Transform, taken_by
from .clipping import ClipByGlobalNorm, ClipUpdateNorm
from .decay import AddDecayedWeights
from .guards import ScaleByLr, SkipNonfinite
from .moments import ScaleByAdam, Trace


class _Lowered(Transform):
    """A run of transforms replaced by one kernel where a group qualifies."""

    takes_lazy = True

    def __init__(self, kind: str, decay: bool, transforms: list[Transform]):
        self.kind, self.decay, self.transforms = kind, decay, transforms

    def _raw_grads(self, incoming, ctx: StepContext):
        """The kernel's gradients and grad_scale, or None if this step does not qualify."""
        if not (ctx.uniform and ctx.contiguous):
            return None
        if incoming is ctx.grads:
            return ctx.grads, None
        if isinstance(incoming, Scaled) and incoming.tensors is ctx.grads:
            if ctx.params[0].dtype == torch.float64:
                return None  # grad_scale is float32: it would round the clip factor
            return ctx.grads, (1.0 / incoming.factor).to(ctx.params[0].device, torch.float32)
        return None

    def _eligible(self, ctx: StepContext) -> bool:
        g = ctx.group
        if self.kind == "sgd":
            return len(set(ctx.steps)) == 1
        return not g["nesterov"]

    def _run(self, transforms, incoming, ctx):
        """The original transforms, for a step the kernel does not take."""
        u = incoming
        for t in transforms:
            u = t.update(taken_by(t, u), ctx)
        return u

    def _adam(self, targets, grads, grad_scale, ctx: StepContext, lr: float) -> None:
        g, states = ctx.group, ctx.states
        kernel = torch._fused_adamw_ if self.kind == "adamw" else torch._fused_adam_
        b1, b2 = g["betas"]
        kernel(
            targets, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
            [s["max_exp_avg_sq"] for s in states] if g["amsgrad"] else [],
            [s["step"] for s in states], lr=lr, beta1=b1, beta2=b2,
            weight_decay=g["weight_decay"] if self.decay else 0.0, eps=g["eps"],
            amsgrad=g["amsgrad"], maximize=False, grad_scale=grad_scale,
        )


class FusedSegment(_Lowered):
    """The chain's tail, moments to lr, as one fused kernel call per group."""

    position = "last"
    update_clip = False

    def apply(self, params, incoming, ctx):
        raw = self._raw_grads(incoming, ctx)
        if raw is None or not self._eligible(ctx):
            last = self.transforms[-1]
            update = self._run(self.transforms[:-1], incoming, ctx)
            return last.apply(params, taken_by(last, update), ctx)
        grads, grad_scale = raw
        g = ctx.group
        if self.kind == "sgd":
            momentum = g.get("momentum", 0.0)
            torch._fused_sgd_(
                ctx.params, grads,
                [s["momentum_buffer"] for s in ctx.states] if momentum else [],
                weight_decay=g["weight_decay"] if self.decay else 0.0, momentum=momentum,
                lr=g["lr"], dampening=g.get("dampening", 0.0),
                nesterov=g.get("nesterov", False), maximize=False,
                is_first_step=ctx.steps[0] == 1, grad_scale=grad_scale,
            )
        else:
            self._adam(ctx.params, grads, grad_scale, ctx, g["lr"])


class FusedDirection(_Lowered):
    """[decay,] Adam as the kernel on a zeroed scratch (lr=1): the direction for an update
    clip, as a `Scaled` (-1 * scratch), the moments updated in the same pass."""

    update_clip = True

    def __init__(self, kind, decay, transforms):
        super().__init__(kind, decay, transforms)
        self._scratch: dict = {}  # per group: the update buffer, kept between steps

    def _eligible(self, ctx):
        if self.decay and ctx.group["weight_decay"]:
            return False  # coupled L2 needs the parameters inside the kernel
        return super()._eligible(ctx)

    def update(self, incoming, ctx):
        raw = self._raw_grads(incoming, ctx)
        if raw is None or not self._eligible(ctx):
            return self._run(self.transforms, incoming, ctx)
        scratch = self._zeroed_scratch(ctx)
        self._adam(scratch, *raw, ctx, 1.0)
        return Scaled(scratch, torch.tensor(-1.0, dtype=scratch[0].dtype))

    def _zeroed_scratch(self, ctx: StepContext) -> list:
        """A fresh allocation costs a page fault per page on CPU, more than the kernel."""
        key = id(ctx.group)
        scratch = self._scratch.get(key)
        if scratch is None or [s.shape for s in scratch] != [p.shape for p in ctx.params]:
            scratch = self._scratch[key] = [torch.zeros_like(p) for p in ctx.params]
        else:
            torch._foreach_zero_(scratch)
        return scratch


_PATTERNS = {
    ("adam", "lr"): ("adam", False),
    ("decay", "adam", "lr"): ("adam", True),
    ("adam", "decay", "lr"): ("adamw", True),
    ("lr",): ("sgd", False),
    ("trace", "lr"): ("sgd", False),
    ("decay", "lr"): ("sgd", True),
    ("decay", "trace", "lr"): ("sgd", True),
}


def lower(transforms: list[Transform]) -> tuple[list[Transform], _Lowered] | None:
    """The program with its tail on a fused kernel, and the lowered segment; or None.
    Accepted: [skip_nonfinite] [clip_by_global_norm] then one of _PATTERNS, or
    [decay] adam, clip_update_norm, lr."""
    head = 0
    while head < len(transforms) and type(transforms[head]) in (SkipNonfinite,
                                                                ClipByGlobalNorm):
        head += 1
    if [type(t) for t in transforms[:head]] not in ([], [SkipNonfinite], [ClipByGlobalNorm],
                                                      [SkipNonfinite, ClipByGlobalNorm]):
        return None
    tail = transforms[head:]
    kinds = [_kind(t) for t in tail]
    if kinds[-2:] == ["update_clip", "lr"] and kinds[:-2] in (["adam"], ["decay", "adam"]):
        segment = FusedDirection("adam", kinds[0] == "decay", tail[:-2])
        return [*transforms[:head], segment, *tail[-2:]], segment
    match = _PATTERNS.get(tuple(kinds))
    if match is None:
        return None
    segment = FusedSegment(match[0], match[1], tail)
    return [*transforms[:head], segment], segment


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
