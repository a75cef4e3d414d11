"""`chain`: a list of transforms wrapped as a real torch.optim.Optimizer.

Hyperparameters of all transforms become param-group keys (``lr`` included), so
per-group overrides, torch LR schedulers, ``state_dict``/``load_state_dict``,
Lightning's ``configure_optimizers`` and DDP all work as with a torch optimizer; a group
key that no transform reads is an error, not a silent no-op.

Every layout torch.optim accepts gets torch's numbers: complex parameters are viewed as
real (as torch does), any strides work (the fused kernels are used only where
everything is contiguous), gradients may be missing on some steps or start late.
Precision: state is kept in the parameter's dtype for float32/float64 parameters; a
bf16/fp16 parameter gets float32 state and a float32 master copy, the step is computed
in float32 on the master and rounded once into the parameter (so a decay or an update
smaller than half a bf16 ulp accumulates instead of rounding away). ``p.grad`` is not a
result of ``step()``: the fused path may leave it rescaled by clipping, as
``torch.nn.utils.clip_grad_norm_`` does.

``accumulate=k`` averages the gradients of k calls to ``step()`` and steps on every k-th
(optax's ``MultiSteps``; for loops with manual optimization, where Lightning's
``accumulate_grad_batches`` does not apply).
"""

from __future__ import annotations

import difflib
import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim import optimizer as torch_optimizer

from . import checks
from . import compiled as compiling
from . import fused as lowering
from .base import GroupStats, StepContext, Transform, global_norm, taken_by
from .clipping import ClipUpdateNorm, ClipUpdateValue
from .decay import AddDecayedWeights

_LOW_PRECISION = (torch.bfloat16, torch.float16)
_ONE = torch.tensor(1.0)  # read only
# group keys that are not hyperparameters: torch's own, and those torch's LR schedulers and
# Lightning's LearningRateMonitor ("name") put there
_NOT_HYPERPARAMETERS = {"params", "param_names", "name", "initial_lr", "max_lr", "min_lr",
                        "base_momentum", "max_momentum"}
# torch.optim's flags: dropped when loading a torch state_dict (they change no number),
# except a value adamlab does not implement
_TORCH_FLAGS = {"foreach": None, "capturable": None, "fused": None, "maximize": False,
                "differentiable": False}


@dataclass
class _Layout:
    """What a group's step may rely on until its parameters or state change."""

    key: tuple
    complex: bool  # some parameter is complex: compute on real views
    low: bool  # some parameter is bf16/fp16: compute on float32 masters
    uniform: bool  # one float32/float64 dtype on one CPU/CUDA device
    contiguous: bool  # every parameter and state tensor (as computed on) is contiguous


def _observed_only(step):
    """torch wraps every optimizer's ``step`` to name it for the profiler and run the step
    hooks: ~20 us a call on CPU, as much as the arithmetic of a small model's step. Here
    that wrapper (torch's own) runs only when a profiler or a hook is there to see it."""
    observed = Optimizer.profile_hook_step(step)
    global_hooks = (torch_optimizer._global_optimizer_pre_hooks,
                    torch_optimizer._global_optimizer_post_hooks)

    @functools.wraps(step)
    def wrapper(self, *args, **kwargs):
        if (self._optimizer_step_pre_hooks or self._optimizer_step_post_hooks
                or any(global_hooks) or torch.autograd._profiler_enabled()):
            return observed(self, *args, **kwargs)
        out = step(self, *args, **kwargs)
        self._optimizer_step_code()  # torch's profiler hook point, as torch calls it
        return out

    wrapper.hooked = True  # torch.optim.Optimizer then does not wrap it again
    return wrapper


class ChainOptimizer(Optimizer):
    """An optimizer whose step is ``transforms`` applied in order to the gradients."""

    def __init__(self, params, transforms: Sequence[Transform], *, fused: bool | None = None,
                 compiled: bool = False, accumulate: int = 1, **hparams):
        """``fused``: None lowers onto a torch fused kernel where the chain equals one;
        False always runs transform by transform; True requires a lowering.
        ``compiled``: run an AdaBelief or Yogi chain as one torch.compile'd step (see
        optim.compiled: as fast as torch's fused Adam, after a compile per shape set).
        ``accumulate``: step on every k-th call with the mean of the k gradients."""
        self.transforms = _checked_chain(transforms)
        defaults = _merged_defaults(self.transforms)
        unknown = sorted(set(hparams) - set(defaults))
        if unknown:
            raise ValueError(
                f"unknown hyperparameter(s) {unknown} for this chain: expected some of "
                f"{sorted(defaults)}"
            )
        defaults.update(hparams)
        self.accumulate = checks.positive_int("accumulate", accumulate)
        self.stats: list[GroupStats] = []
        self.record_updates = False  # set by telemetry callbacks before the steps they log
        self._micro_steps = 0
        self._epoch = 0  # bumped whenever parameters' state is created or loaded
        self._layouts: dict[int, _Layout] = {}
        self._written: dict[int, int] = {}  # id(16-bit param) -> its _version after our write
        self._gates = [t for t in self.transforms if t.position == "first"]
        self._program, self._plan = self._lowered(fused, compiled)
        self._sparse_only = any(getattr(t, "requires_sparse", False) for t in self.transforms)
        refused = [t.name for t in self.transforms if not t.accepts_sparse]
        if self._sparse_only and refused:
            raise ValueError(f"{refused} cannot follow sparse gradients: a sparse_adam chain "
                             "is [skip_nonfinite,] scale_by_sparse_adam, scale_by_lr")
        self._decoupled = any(isinstance(t, AddDecayedWeights) and t.decoupled
                              for t in self.transforms)
        super().__init__(params, defaults)

    def _lowered(self, fused, compiled):
        program = [t for t in self.transforms if t.position != "first"]
        lowered = None if fused is False else lowering.lower(program)
        if fused and lowered is None:
            raise ValueError("fused=True is invalid for this chain: it equals no torch fused "
                             "kernel (adam, adamw, sgd with optional global-norm clipping)")
        if compiled and lowered is None:  # a fused lowering is already the fast path
            lowered = compiling.lower(program)
            if lowered is None:
                raise ValueError("compiled=True is invalid for this chain: expected "
                                 "scale_by_belief or scale_by_yogi, then scale_by_lr (with "
                                 "unmasked weight decay where the presets put it)")
        return lowered if lowered is not None else (program, None)

    def add_param_group(self, param_group: dict) -> None:
        index = len(self.param_groups)
        _check_keys(f"param_groups[{index}]", param_group, self.defaults)
        merged = {**self.defaults, **param_group}
        for t in self.transforms:
            try:
                t.validate(merged)
            except ValueError as error:
                raise ValueError(f"param_groups[{index}]: {error}") from None
        super().add_param_group(param_group)
        for t in self.transforms:
            t.validate_groups(self.param_groups)
        self.stats.append(GroupStats())

    @_observed_only
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_mode = torch.set_grad_enabled(False)  # no_grad, without a decorator's cost
        try:
            accumulated = self.accumulate > 1
            if accumulated and not self._accumulate():
                return loss
            ctxs = [ctx for i, (g, s) in enumerate(zip(self.param_groups, self.stats))
                    if (ctx := self._context(i, g, s, accumulated))]
            for gate in self._gates:
                ctxs = gate.admit(ctxs) if ctxs else ctxs
            if ctxs:
                self._step(ctxs)
            if accumulated:
                self._reset_accumulators()
        finally:
            torch.set_grad_enabled(grad_mode.prev)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """torch's ``zero_grad``, without its profiler label when no profiler runs (its
        cost, ~15 us, is that of setting a small model's gradients to None)."""
        if not set_to_none or torch.autograd._profiler_enabled():
            return super().zero_grad(set_to_none)
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    # --- one step --------------------------------------------------------------------

    def _step(self, ctxs: list[StepContext]) -> None:
        steps = [s["step"] for ctx in ctxs for s in ctx.states]
        if all(t.is_cpu for t in steps):  # as torch does: one wrapped scalar, not one a tensor
            torch._foreach_add_(steps, _ONE, alpha=1.0)
        else:
            torch._foreach_add_(steps, 1.0)
        for ctx in ctxs:
            ctx.stats.steps += 1
        recording = ctxs[0].recording
        before = [[p.detach().clone() for p in ctx.params] for ctx in ctxs] if recording else None
        if recording:
            for ctx in ctxs:
                ctx.stats.grad_norm = ctx.grad_norm()
        updates = [ctx.grads for ctx in ctxs]
        for t in self._program[:-1]:
            updates = t.update_groups([taken_by(t, u) for u in updates], ctxs)
        last = self._program[-1]
        for u, ctx in zip(updates, ctxs):
            last.apply(ctx.params, taken_by(last, u), ctx)
        for ctx in ctxs:
            if ctx.clipped is not None:
                ctx.stats.clipped = ctx.stats.clipped + ctx.clipped.to(torch.int64)
        if recording:
            for ctx, old in zip(ctxs, before):
                n = math.sqrt(max(sum(p.numel() for p in ctx.params), 1))
                ctx.stats.update_rms = global_norm(torch._foreach_sub(ctx.params, old)) / n
                ctx.stats.weight_rms = global_norm(ctx.params) / n
        for ctx in ctxs:
            if self._layouts[ctx.index].low:
                self._write_back(ctx)

    def _context(self, index: int, group: dict, stats: GroupStats,
                 accumulated: bool) -> StepContext | None:
        if accumulated:
            params = [p for p in group["params"]
                      if self.state.get(p, {}).get("grad_acc_count")]
            grads = [self.state[p]["grad_acc"] for p in params]
        else:
            params = [p for p in group["params"] if p.grad is not None]
            grads = [p.grad for p in params]
        if not params:
            return None
        states = self._states(params, group)
        layout = self._layout(index, params, states)
        if layout.low:
            for p, state in zip(params, states):
                if p.dtype in _LOW_PRECISION:
                    self._sync_master(p, state)
        steps = ([s["step"].item() + 1 for s in states] if len(states) < 16 else
                 (torch.stack([s["step"] for s in states]) + 1).tolist())
        ctx = StepContext(group, index, params, grads, states, steps, stats,
                          self.record_updates, layout.uniform, layout.contiguous,
                          originals=params)
        if layout.complex or layout.low:
            ctx.params, ctx.grads, ctx.states = self._computed_on(params, grads, states)
            if layout.complex:
                ctx.norm_grads = [g if p.is_complex() else c
                                  for p, g, c in zip(params, grads, ctx.grads)]
        self._check_gradients(ctx)
        return ctx

    def _check_gradients(self, ctx: StepContext) -> None:
        """Sparse gradients only where the chain takes them; contiguity, for the kernels."""
        contiguous = ctx.contiguous
        for i, g in enumerate(ctx.grads):
            if g.is_sparse != self._sparse_only:
                raise ValueError(self._sparse_message(ctx, i, g.is_sparse))
            if contiguous and not self._sparse_only and not g.is_contiguous():
                contiguous = False
        ctx.contiguous = contiguous

    def _sparse_message(self, ctx: StepContext, i: int, sparse: bool) -> str:
        chain = ", ".join(t.name for t in self.transforms)
        if sparse:
            return (f"parameter {ctx.param_name(i)} has a sparse gradient (e.g. from "
                    f"nn.Embedding(sparse=True)), which this chain [{chain}] does not take: "
                    "optimize it with optim.create('sparse_adam', ...) (lazy Adam, as "
                    "torch.optim.SparseAdam), or use a dense gradient (sparse=False)")
        return (f"parameter {ctx.param_name(i)} has a dense gradient; sparse_adam takes "
                "sparse gradients only (as torch.optim.SparseAdam): use adam for it")

    def _states(self, params: list[Tensor], group: dict) -> list[dict]:
        """The parameters' state, created where missing."""
        states = [self.state[p] for p in params]
        if not all("step" in s for s in states):
            states = [self._state(p, group) for p in params]
        return states

    def _state(self, p: Tensor, group: dict) -> dict:
        state = self.state[p]
        if "step" not in state:
            device = p.device if self._plan and p.is_cuda else torch.device("cpu")
            state["step"] = torch.zeros((), dtype=torch.float32, device=device)
            for t in self.transforms:
                state.update(t.init_state(p, group))
            self._epoch += 1
        return state

    def _sync_master(self, p: Tensor, state: dict) -> None:
        """The float32 master follows the parameter unless the parameter is still what the
        last step wrote (anyone may assign to a parameter between steps)."""
        master = state.get("master_param")
        if master is None:
            state["master_param"] = p.detach().float().contiguous()
            self._epoch += 1
        elif self._written.get(id(p)) != p._version:
            if id(p) in self._written or not torch.equal(master.to(p.dtype), p):
                master.copy_(p)
        self._written[id(p)] = p._version

    def _write_back(self, ctx: StepContext) -> None:
        for p, state in zip(ctx.originals, ctx.states):
            if p.dtype in _LOW_PRECISION:
                p.copy_(state["master_param"])  # the one rounding of this step
                self._written[id(p)] = p._version

    def _layout(self, index: int, params: list[Tensor], states: list[dict]) -> _Layout:
        """Cached per group until its set of parameters with a gradient or any state
        changes: the step then costs what it cost before these checks."""
        key = (self._epoch, tuple(map(id, params)))
        cached = self._layouts.get(index)
        if cached is not None and cached.key == key:
            return cached
        for p, state in zip(params, states):
            if p.dtype in _LOW_PRECISION and "master_param" not in state:
                self._sync_master(p, state)  # a new master: a new epoch
        key = (self._epoch, key[1])
        complex_ = any(p.is_complex() for p in params)
        low = any(p.dtype in _LOW_PRECISION for p in params)
        computed, _, computed_states = (self._computed_on(params, None, states)
                                        if complex_ or low else (params, None, states))
        p0 = computed[0]
        uniform = (p0.device.type in ("cpu", "cuda")
                   and p0.dtype in (torch.float32, torch.float64)
                   and all(p.device == p0.device and p.dtype == p0.dtype for p in computed))
        tensors = [v for s in computed_states for k, v in s.items()
                   if isinstance(v, Tensor) and k not in ("step", "mu_product")]
        contiguous = all(t.is_contiguous() for t in [*computed, *tensors])
        self._layouts[index] = layout = _Layout(key, complex_, low, uniform, contiguous)
        return layout

    @staticmethod
    def _computed_on(params, grads, states):
        """What the transforms compute on: real views of complex tensors (torch's
        convention), the float32 master and gradient of a 16-bit parameter."""
        params, states = list(params), list(states)
        grads = list(grads) if grads is not None else None
        for i, p in enumerate(params):
            if p.is_complex():
                params[i] = torch.view_as_real(p)
                states[i] = {k: torch.view_as_real(v)
                             if isinstance(v, Tensor) and v.is_complex() else v
                             for k, v in states[i].items()}
                if grads is not None:
                    grads[i] = torch.view_as_real(grads[i])
            elif p.dtype in _LOW_PRECISION:
                params[i] = states[i]["master_param"]
                if grads is not None:
                    grads[i] = grads[i].float()
        return params, grads, states

    # --- gradient accumulation -----------------------------------------------------------

    def _accumulate(self) -> bool:
        """Add this call's gradients into the accumulators; True on every k-th call."""
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if p.grad.is_sparse:
                    raise ValueError(f"accumulate={self.accumulate} does not take sparse "
                                     "gradients: accumulate them with accumulate=1 and "
                                     "zero_grad() every k-th step instead")
                state = self.state[p]
                if "grad_acc" not in state:
                    dtype = torch.float32 if p.dtype in _LOW_PRECISION else p.dtype
                    state["grad_acc"] = torch.zeros_like(p, dtype=dtype)
                state["grad_acc_count"] = state.get("grad_acc_count", 0) + 1
            if params:
                torch._foreach_add_([self.state[p]["grad_acc"] for p in params],
                                    [p.grad for p in params])
        self._micro_steps += 1
        if self._micro_steps < self.accumulate:
            return False
        accs = [s["grad_acc"] for s in self.state.values() if s.get("grad_acc_count")]
        if accs:
            torch._foreach_div_(accs, float(self.accumulate))
        return True

    def _reset_accumulators(self) -> None:
        self._micro_steps = 0
        accs = []
        for s in self.state.values():
            if s.get("grad_acc_count"):
                s["grad_acc_count"] = 0
                accs.append(s["grad_acc"])
        if accs:
            torch._foreach_zero_(accs)

    # --- state_dict ----------------------------------------------------------------------

    def state_dict(self) -> dict:
        sd = super().state_dict()
        sd["chain_stats"] = [s.state_dict() for s in self.stats]
        sd["chain_micro_steps"] = self._micro_steps
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        """Also takes the state_dict of the equivalent torch.optim optimizer (Adam, AdamW,
        SGD, RMSprop, NAdam, RAdam, Adamax, SparseAdam) and of older adamlab versions: keys
        they lack take their current values (hyperparameters) or their initial ones
        (state)."""
        current = [dict(g) for g in self.param_groups]
        translated = self._translated(state_dict)
        super().load_state_dict(translated)
        for group, before in zip(self.param_groups, current):
            for key, value in before.items():
                group.setdefault(key, value)
            for t in self.transforms:
                t.validate(group)
        for t in self.transforms:
            t.validate_groups(self.param_groups)
        clip_names = [t.label for t in self.transforms if hasattr(t, "measures")]
        for stats, saved in zip(self.stats, state_dict.get("chain_stats", [])):
            stats.load_state_dict(saved, clip_names)
        self._micro_steps = state_dict.get("chain_micro_steps", 0)
        self._restore_state_precision(translated)
        self._fill_missing_state()
        self._epoch += 1
        self._written.clear()

    def _translated(self, state_dict: dict) -> dict:
        """A torch.optim or older adamlab state_dict in this chain's terms."""
        groups = []
        for i, saved in enumerate(state_dict["param_groups"]):
            g = dict(saved)
            where = f"state_dict param_groups[{i}]"
            for flag, neutral in _TORCH_FLAGS.items():
                if flag in g and flag not in self.defaults:
                    value = g.pop(flag)
                    if neutral is not None and value != neutral:
                        raise ValueError(f"{where}: {flag}={value!r} is not supported by "
                                         f"adamlab chains: expected {neutral!r}")
            if "decoupled_weight_decay" in g:
                decoupled = g.pop("decoupled_weight_decay")
                if g.get("weight_decay") and decoupled != self._decoupled:
                    raise ValueError(
                        f"{where}: decoupled_weight_decay={decoupled!r} does not match this "
                        f"chain, whose weight decay is {'de' if self._decoupled else ''}"
                        "coupled: load torch's AdamW/NAdamW/RAdamW state into adamw/nadamw/"
                        "radamw and torch's Adam/NAdam/RAdam state into adam/nadam/radam")
            _check_keys(where, g, self.defaults)
            groups.append(g)
        state = {}
        for pid, saved in state_dict["state"].items():
            s = {k: v for k, v in saved.items() if v is not None}
            if isinstance(s.get("step"), (int, float)):  # torch's SparseAdam
                s["step"] = torch.tensor(float(s["step"]))
            elif s and "step" not in s:
                # torch's SGD keeps no step count; its rule only asks whether a step was taken
                s["step"] = torch.tensor(1.0)
            state[pid] = s
        return {**state_dict, "param_groups": groups, "state": state}

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
                if key in ("step", "mu_product"):
                    device = p.device if key == "step" and self._plan and p.is_cuda else "cpu"
                    state[key] = value.to(dtype=torch.float32, device=device)
                elif p.dtype in _LOW_PRECISION:
                    state[key] = value.to(device=p.device, dtype=torch.float32)

    def _fill_missing_state(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p)
                if state and "step" in state:
                    for t in self.transforms:
                        for key, value in t.init_state(p, group).items():
                            state.setdefault(key, value)

    def __repr__(self) -> str:
        chain = ", ".join(repr(t) for t in self.transforms)
        return f"ChainOptimizer([{chain}], groups={len(self.param_groups)})"


def chain(params: Iterable, *transforms: Transform, **hparams) -> ChainOptimizer:
    """``chain(model.parameters(), clip_by_global_norm(1.0), scale_by_adam(), scale_by_lr(),
    lr=1e-3)``: the optimizer whose step applies ``transforms`` in order."""
    return ChainOptimizer(params, transforms, **hparams)


def _check_keys(where: str, group: dict, defaults: dict) -> None:
    for key in group:
        if key in defaults or key in _NOT_HYPERPARAMETERS:
            continue
        close = difflib.get_close_matches(key, list(defaults), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{where}: key {key!r} is not a hyperparameter of this chain{hint}: "
                         f"expected some of {sorted(defaults)}")


def _checked_chain(transforms: Sequence[Transform]) -> list[Transform]:
    """The chain, checked for what would otherwise fail at the first step or silently
    misbehave (a chain not ending in scale_by_lr never applies, or ascends)."""
    transforms = list(transforms)
    if not transforms:
        raise ValueError("transforms=[] is invalid: expected at least one transform")
    for i, t in enumerate(transforms):
        if not isinstance(t, Transform):
            raise ValueError(f"transforms[{i}]={t!r} is invalid: expected a Transform")
    names = [t.name for t in transforms]
    for i, t in enumerate(transforms):
        if t.position == "first" and any(u.position != "first" for u in transforms[:i]):
            raise ValueError(
                f"{t.name} at position {i} is invalid: expected it first, so no state "
                "changes before the step is admitted")
        if t.position == "last" and i != len(transforms) - 1:
            raise ValueError(f"{t.name} at position {i} is invalid: expected it last, as the "
                             "step that applies the update")
        if isinstance(t, (ClipUpdateNorm, ClipUpdateValue)) and not any(
                getattr(u, "moments", False) for u in transforms[:i]):
            raise ValueError(f"{t.name} at position {i} is invalid: expected it after a "
                             "moments transform (scale_by_adam, ...); to clip gradients use "
                             "clip_by_global_norm or clip_by_value")
    if transforms[-1].position != "last":
        raise ValueError(f"the chain [{', '.join(names)}] ends in {names[-1]}: expected "
                         "scale_by_lr last (it applies the update, scaled by -lr)")
    seen: dict[str, int] = {}
    for i, t in enumerate(transforms):
        seen[t.name] = seen.get(t.name, 0) + 1
        t.label = t.name if seen[t.name] == 1 else f"{t.name}_{seen[t.name]}"
        if isinstance(t, AddDecayedWeights):  # after the moments: decoupled (AdamW)
            t.decoupled = any(getattr(u, "moments", False) for u in transforms[:i])
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
