"""The small types every transform shares: `Transform`, `StepContext` and the lazy updates."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import Tensor


class Transform:
    """One job in a chain: turns the incoming updates into new ones.

    Rules that keep chains composable and exact:
    - never write into the incoming ``updates`` (the first transform sees ``p.grad``);
      write only into your own state or into tensors you created;
    - hyperparameters live in the param group, read them from ``ctx.group`` (so torch
      schedulers and per-group overrides work); ``hparams`` holds their defaults;
    - per-parameter state lives in ``ctx.states[i]`` under the keys ``init_state`` makes.

    A step runs each transform over every param group before the next transform, so a
    transform that decides for all groups at once (global clipping) overrides
    ``update_groups``.
    """

    hparams: dict = {}
    takes_lazy = False  # whether update() accepts a LazyUpdate
    accepts_sparse = False  # whether sparse gradients may reach update()
    position: str | None = None  # "first": gates the step; "last": applies it (lr scaling)
    label: str = ""  # its name in telemetry, unique in its chain (set by the chain)

    @property
    def name(self) -> str:
        """The transform's snake_case name (``ClipUpdateNorm`` -> ``clip_update_norm``)."""
        return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", type(self).__name__).lower()

    def validate(self, group: dict) -> None:
        """Raise ValueError for a bad hyperparameter in ``group``."""

    def validate_groups(self, groups: list[dict]) -> None:
        """Raise ValueError where groups disagree on what must be one value for all."""

    def init_state(self, param: Tensor, group: dict) -> dict[str, Tensor]:
        return {}

    def update(self, updates: list[Tensor], ctx: StepContext) -> list[Tensor]:
        raise NotImplementedError

    def update_groups(self, updates: list, ctxs: list[StepContext]) -> list:
        """The updates of every group with a gradient; by default one group at a time."""
        return [self.update(u, ctx) for u, ctx in zip(updates, ctxs)]

    def apply(self, params: list[Tensor], updates: list[Tensor], ctx: StepContext) -> None:
        """As the last transform: add the final update to the parameters."""
        raise NotImplementedError(f"{self.name} cannot end a chain")

    def admit(self, ctxs: list[StepContext]) -> list[StepContext]:
        """The groups that may step at all (see `skip_nonfinite`); all by default."""
        return ctxs

    def denominator(self, states: list[dict], group: dict) -> list[Tensor] | None:
        """Per-element preconditioner 1/(sqrt(v_hat)+eps), for telemetry; None if none."""
        return None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hparams.items())
        return f"{type(self).__name__}({args})"


class LazyUpdate:
    """A direction ``u`` not yet materialised (the step is ``-lr * u``), so that the last
    transform can apply it with the very ops torch uses."""

    def materialize(self) -> list[Tensor]:
        raise NotImplementedError

    def add_to(self, params: list[Tensor], lr: float) -> None:
        """params -= lr * u."""
        torch._foreach_add_(params, self.materialize(), alpha=-lr)


def taken_by(t: Transform, updates):
    """``updates`` as ``t`` takes them: materialised unless it takes lazy updates."""
    if isinstance(updates, LazyUpdate) and not t.takes_lazy:
        return updates.materialize()
    return updates


@dataclass
class Quotient(LazyUpdate):
    """u = sum over terms of num / den * scale / divisor.

    Adam-type transforms return one so that the last step is torch's single
    ``p.addcdiv_(num, den, value=-(lr * scale / divisor))``: one pass fewer, and torch's
    rounding (scale and divisor are the numbers torch puts into its step size).
    """

    terms: list[tuple[list[Tensor], list[Tensor], list[float], list[float]]]

    def materialize(self) -> list[Tensor]:
        out = None
        for num, den, scale, divisor in self.terms:
            part = torch._foreach_div(num, den)
            torch._foreach_mul_(part, [s / d for s, d in zip(scale, divisor)])
            out = part if out is None else torch._foreach_add(out, part)
        return out

    def add_to(self, params: list[Tensor], lr: float) -> None:
        for num, den, scale, divisor in self.terms:
            torch._foreach_addcdiv_(params, num, den,
                                    [-(lr * s / d) for s, d in zip(scale, divisor)])


@dataclass
class Scaled(LazyUpdate):
    """u = factor * tensors, with ``factor`` a 0-dim tensor (a clip factor): kept apart so
    that a fused kernel can take it as its ``grad_scale`` and nothing syncs on it."""

    tensors: list[Tensor]
    factor: Tensor

    def materialize(self) -> list[Tensor]:
        factor = self.factor.to(self.tensors[0].device)
        out = list(torch._foreach_mul(self.tensors, factor))
        for i, (t, o) in enumerate(zip(self.tensors, out)):
            if o.dtype != t.dtype:  # a 0-dim tensor promotes; torch's in-place clip does not
                out[i] = t.clone().mul_(factor)
        return out

    def add_to(self, params: list[Tensor], lr: float) -> None:
        if self.tensors[0].is_cpu:  # a free read on CPU: the factor rides on the add
            torch._foreach_add_(params, self.tensors, alpha=-lr * self.factor.item())
        else:
            torch._foreach_add_(params, torch._foreach_mul(
                self.tensors, (-lr * self.factor).to(self.tensors[0].device)))


@dataclass
class GroupStats:
    """Counters kept per param group; cheap enough to keep always (no host sync)."""

    steps: int = 0
    skipped: int = 0
    skipped_in_a_row: int = 0
    clipped: Tensor | int = 0  # steps on which any clip transform clipped
    clipped_by: dict = field(default_factory=dict)  # per clip transform (telemetry name)
    grad_norm: Tensor | None = None
    clipped_grad_norm: Tensor | None = None
    update_norm: Tensor | None = None
    clipped_update_norm: Tensor | None = None
    update_rms: Tensor | None = None
    weight_rms: Tensor | None = None

    def state_dict(self) -> dict:
        return {"steps": self.steps, "skipped": self.skipped,
                "skipped_in_a_row": self.skipped_in_a_row, "clipped": _as_int(self.clipped),
                "clipped_by": {k: _as_int(v) for k, v in self.clipped_by.items()}}

    def load_state_dict(self, state: dict, clip_names: list[str]) -> None:
        """Older state dicts lack the newer keys (they take their defaults); their single
        ``clipped`` count belongs to the chain's one clip transform, if it has one."""
        self.steps, self.skipped = state.get("steps", 0), state.get("skipped", 0)
        self.skipped_in_a_row = state.get("skipped_in_a_row", 0)
        self.clipped = state.get("clipped", 0)
        by = state.get("clipped_by")
        if by is None and len(clip_names) == 1:
            by = {clip_names[0]: self.clipped}
        self.clipped_by = dict(by or {})


def _as_int(value) -> int:
    return int(value.item()) if isinstance(value, Tensor) else int(value)


@dataclass
class StepContext:
    """What a transform may read during one step of one param group.

    ``params``, ``grads`` and the tensors in ``states`` are what the transforms compute
    on: complex tensors viewed as real (as torch does), float32 master copies for 16-bit
    parameters.
    """

    group: dict
    index: int  # of the param group
    params: list[Tensor]
    grads: list[Tensor]
    states: list[dict]
    steps: list[float]
    stats: GroupStats
    recording: bool = False
    uniform: bool = False  # one float32/float64 dtype on one CPU/CUDA device, all dense
    contiguous: bool = False  # params, grads and state all contiguous (fused kernels)
    originals: list[Tensor] | None = None  # the parameters themselves, as in the group
    norm_grads: list[Tensor] | None = None  # complex gradients as complex, for their norms
    clipped: Tensor | None = field(default=None, repr=False)  # any clip fired this step
    _grad_norms: list[Tensor] | None = field(default=None, repr=False)

    def grad_norms(self) -> list[Tensor]:
        """Per-tensor L2 norms of this group's raw gradients, computed at most once a step."""
        if self._grad_norms is None:  # of complex gradients as torch takes them
            self._grad_norms = tensor_norms(self.norm_grads or self.grads)
        return self._grad_norms

    def grad_norm(self) -> Tensor:
        return combine_norms(self.grad_norms())

    def param_name(self, i: int) -> str:
        """How an error message names the i-th parameter of this step: by its name where
        the optimizer was given ``named_parameters()``."""
        p = (self.originals or self.params)[i]
        j = next(k for k, q in enumerate(self.group["params"]) if q is p)
        if "param_names" in self.group:
            return repr(self.group["param_names"][j])
        return f"{j} of param group {self.index} (shape {tuple(p.shape)})"

    def record_clip(self, name: str, clipped: Tensor) -> None:
        stats = self.stats
        stats.clipped_by[name] = stats.clipped_by.get(name, 0) + clipped.to(torch.int64)
        self.clipped = clipped if self.clipped is None else self.clipped | clipped


def tensor_norms(tensors: list[Tensor]) -> list[Tensor]:
    """Per-tensor L2 norms (one multi-tensor read pass)."""
    return list(torch._foreach_norm(tensors)) if tensors else []


def combine_norms(norms: list[Tensor]) -> Tensor:
    """The L2 norm of the concatenation, from per-tensor norms, as
    ``torch.nn.utils.clip_grad_norm_`` combines them: float64 if any is float64."""
    if not norms:
        return torch.zeros(())
    dtypes = list(dict.fromkeys(n.dtype for n in norms))
    if len(dtypes) > 1:  # torch groups tensors by dtype before it stacks their norms
        norms = [n for d in dtypes for n in norms if n.dtype == d]
    dtype = torch.float64 if torch.float64 in dtypes else torch.float32
    device = norms[0].device
    return torch.linalg.vector_norm(torch.stack([n.to(device, dtype) for n in norms]))


def max_abs(tensors: list[Tensor]) -> Tensor:
    """The largest |element| over the tensors (0 if they hold none); NaN if any is NaN."""
    tensors = [t for t in tensors if t.numel()]
    if not tensors:
        return torch.zeros(())
    return torch.stack([n.float() for n in torch._foreach_norm(tensors, float("inf"))]).max()


def global_norm(tensors: list[Tensor]) -> Tensor:
    """L2 norm over a list of tensors."""
    return combine_norms(tensor_norms(tensors))
