"""`chain`: a list of transforms wrapped as a real torch.optim.Optimizer.

Hyperparameters of all transforms become param-group keys (``lr`` included), so
per-group overrides, torch LR schedulers, ``state_dict``/``load_state_dict``,
Lightning's ``configure_optimizers`` and DDP all work as with a torch optimizer.

Precision: state is kept in the parameter's dtype for float32/float64 parameters and
in float32 for bf16/fp16 parameters (the update is computed in float32 and rounded
once into the parameter). ``p.grad`` is not a result of ``step()``: the fused path may
leave it rescaled by clipping, as ``torch.nn.utils.clip_grad_norm_`` does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor
from torch.optim import Optimizer

from . import compiled as compiling
from . import fused as lowering
from .base import GroupStats, LazyUpdate, StepContext, Transform, global_norm
from .guards import SkipNonfinite

_LOW_PRECISION = (torch.bfloat16, torch.float16)


class ChainOptimizer(Optimizer):
    """An optimizer whose step is ``transforms`` applied in order to the gradients."""

    def __init__(self, params, transforms: Sequence[Transform], *, fused: bool | None = None,
                 compiled: bool = False, **hparams):
        """``fused``: None lowers onto a torch fused kernel where the chain equals one;
        False always runs transform by transform; True requires a lowering.
        ``compiled``: run an AdaBelief or Yogi chain as one torch.compile'd step (see
        optim.compiled: as fast as torch's fused Adam, after a compile per shape set)."""
        self.transforms = _checked_chain(transforms)
        defaults = _merged_defaults(self.transforms)
        unknown = sorted(set(hparams) - set(defaults))
        if unknown:
            raise ValueError(
                f"unknown hyperparameter(s) {unknown} for this chain: expected some of "
                f"{sorted(defaults)}"
            )
        defaults.update(hparams)
        self.stats: list[GroupStats] = []
        self.record_updates = False  # set by telemetry callbacks before the steps they log
        self._plan = None if fused is False else lowering.plan(self.transforms)
        if fused and self._plan is None:
            raise ValueError("fused=True is invalid for this chain: it equals no torch fused "
                             "kernel (adam, adamw, sgd with optional global-norm clipping)")
        if compiled and self._plan is None:  # a fused lowering is already the fast path
            self._plan = compiling.plan(self.transforms)
            if self._plan is None:
                raise ValueError("compiled=True is invalid for this chain: expected "
                                 "scale_by_belief or scale_by_yogi, then scale_by_lr (with "
                                 "unmasked weight decay where the presets put it)")
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        merged = {**self.defaults, **param_group}
        for t in self.transforms:
            t.validate(merged)
        super().add_param_group(param_group)
        self.stats.append(GroupStats())

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        contexts = [
            ctx for g, s in zip(self.param_groups, self.stats) if (ctx := self._context(g, s))
        ]
        if not all(t.admit(ctx) for ctx in contexts for t in self.transforms):
            for s in self.stats:
                s.skipped += 1
            return loss
        for ctx in contexts:
            self._step_group(ctx)
        return loss

    def _context(self, group: dict, stats: GroupStats) -> StepContext | None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return None
        if any(p.grad.is_sparse for p in params):
            raise RuntimeError("adamlab optimizers do not support sparse gradients")
        states = [self._state(p, group) for p in params]
        steps = (torch.stack([s["step"] for s in states]) + 1).tolist()
        grads = [p.grad.float() if p.dtype in _LOW_PRECISION else p.grad for p in params]
        recording = self.record_updates
        return StepContext(group, params, grads, states, steps, stats, recording)

    def _state(self, p: Tensor, group: dict) -> dict:
        state = self.state[p]
        if not state:
            device = p.device if self._plan and p.is_cuda else torch.device("cpu")
            state["step"] = torch.zeros((), dtype=torch.float32, device=device)
            for t in self.transforms:
                state.update(t.init_state(p, group))
        return state

    def _step_group(self, ctx: StepContext) -> None:
        before = [p.detach().clone() for p in ctx.params] if ctx.recording else None
        steps = [s["step"] for s in ctx.states]
        if steps[0].is_cpu:  # as torch does: one wrapped scalar, not one per tensor
            torch._foreach_add_(steps, torch.tensor(1.0), alpha=1.0)
        else:
            torch._foreach_add_(steps, 1.0)
        if ctx.recording:
            ctx.stats.grad_norm, ctx.stats.clipped_grad_norm = ctx.grad_norm(), None
        ctx.stats.steps += 1
        if self._plan and self._plan.eligible(ctx):
            self._plan.step(ctx)
        else:
            updates = ctx.grads
            for t in self.transforms[:-1]:
                updates = t.update(_as_taken_by(t, updates), ctx)
            last = self.transforms[-1]
            last.apply(ctx.params, _as_taken_by(last, updates), ctx)
        if before is not None:
            n = math.sqrt(sum(p.numel() for p in ctx.params))
            ctx.stats.update_rms = global_norm(torch._foreach_sub(ctx.params, before)) / n
            ctx.stats.weight_rms = global_norm(ctx.params) / n

    def state_dict(self) -> dict:
        sd = super().state_dict()
        sd["chain_stats"] = [s.state_dict() for s in self.stats]
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        for stats, saved in zip(self.stats, state_dict.get("chain_stats", [])):
            stats.load_state_dict(saved)
        self._restore_state_precision(state_dict)

    def _restore_state_precision(self, state_dict: dict) -> None:
        """torch casts loaded state to the param's dtype; keep float32 state for 16-bit
        params and the step where this chain keeps it."""
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for pid, p in zip(saved_ids, params):
            saved = state_dict["state"].get(pid)
            if saved is None:
                continue
            state = self.state[p]
            for key, value in saved.items():
                if not isinstance(value, Tensor):
                    continue
                if key == "step" or key == "mu_product":
                    state[key] = value.to(dtype=torch.float32, device=state[key].device)
                    if key == "step" and self._plan and p.is_cuda:
                        state[key] = state[key].to(p.device)
                elif p.dtype in _LOW_PRECISION:
                    state[key] = value.to(device=p.device, dtype=torch.float32)

    def __repr__(self) -> str:
        chain = ", ".join(repr(t) for t in self.transforms)
        return f"ChainOptimizer([{chain}], groups={len(self.param_groups)})"


def chain(params: Iterable, *transforms: Transform, **hparams) -> ChainOptimizer:
    """``chain(model.parameters(), clip_by_global_norm(1.0), scale_by_adam(), scale_by_lr(),
    lr=1e-3)``: the optimizer whose step applies ``transforms`` in order."""
    return ChainOptimizer(params, transforms, **hparams)


def _as_taken_by(t: Transform, updates):
    if isinstance(updates, LazyUpdate) and not t.takes_lazy:
        return updates.materialize()
    return updates


def _checked_chain(transforms: Sequence[Transform]) -> list[Transform]:
    transforms = list(transforms)
    if not transforms:
        raise ValueError("transforms=[] is invalid: expected at least one transform")
    for i, t in enumerate(transforms):
        if not isinstance(t, Transform):
            raise ValueError(f"transforms[{i}]={t!r} is invalid: expected a Transform")
        if isinstance(t, SkipNonfinite) and i != 0:
            raise ValueError(
                f"skip_nonfinite at position {i} is invalid: expected it first, so no state "
                "changes before the step is admitted"
            )
    return transforms


def _merged_defaults(transforms: list[Transform]) -> dict:
    defaults: dict = {}
    for t in transforms:
        for key, value in t.hparams.items():
            if key in defaults and defaults[key] != value:
                raise ValueError(
                    f"hyperparameter {key!r} is set twice in the chain ({defaults[key]!r} and "
                    f"{value!r}): transforms sharing a key must agree"
                )
            defaults[key] = value
    return defaults
