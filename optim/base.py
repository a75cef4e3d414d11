"""The two small types every transform shares: `Transform` and `StepContext`."""

from __future__ import annotations

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
    """

    hparams: dict = {}
    takes_lazy = False  # whether update() accepts a LazyUpdate

    def validate(self, group: dict) -> None:
        """Raise ValueError for a bad hyperparameter in ``group``."""

    def init_state(self, param: Tensor, group: dict) -> dict[str, Tensor]:
        return {}

    def update(self, updates: list[Tensor], ctx: StepContext) -> list[Tensor]:
        raise NotImplementedError

    def apply(self, params: list[Tensor], updates: list[Tensor], ctx: StepContext) -> None:
        """As the last transform: add the final update to the parameters."""
        torch._foreach_add_(params, self.update(updates, ctx))

    def admit(self, ctx: StepContext) -> bool:
        """Whether this step may happen at all (see `skip_nonfinite`)."""
        return True

    def denominator(self, states: list[dict], group: dict) -> list[Tensor] | None:
        """Per-element preconditioner 1/(sqrt(v_hat)+eps), for telemetry; None if none."""
        return None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hparams.items())
        return f"{type(self).__name__}({args})"


class LazyUpdate:
    """An update not yet materialised, so the last step can apply it as torch does."""

    def materialize(self) -> list[Tensor]:
        raise NotImplementedError


@dataclass
class Quotient(LazyUpdate):
    """A not-yet-divided update, sum of coef * num / den terms.

    Adam-type transforms return one so that the last step can be torch's single
    ``p.addcdiv_(num, den, value=-lr * coef)``: one pass fewer, and the same rounding as
    torch. Any transform not marked ``takes_quotient`` gets it materialised first.
    """

    terms: list[tuple[list[Tensor], list[Tensor], list[float]]]

    def materialize(self) -> list[Tensor]:
        out = None
        for num, den, coef in self.terms:
            part = torch._foreach_div(num, den)
            torch._foreach_mul_(part, coef)
            out = part if out is None else torch._foreach_add(out, part)
        return out

    def add_to(self, params: list[Tensor], scale: float) -> None:
        """params += scale * self, one addcdiv per term."""
        for num, den, coef in self.terms:
            torch._foreach_addcdiv_(params, num, den, [scale * c for c in coef])


@dataclass
class GroupStats:
    """Counters kept per param group; cheap enough to keep always."""

    steps: int = 0
    skipped: int = 0
    clipped: Tensor | int = 0
    grad_norm: Tensor | None = None
    clipped_grad_norm: Tensor | None = None
    update_rms: Tensor | None = None
    weight_rms: Tensor | None = None

    def state_dict(self) -> dict:
        return {"steps": self.steps, "skipped": self.skipped, "clipped": _as_int(self.clipped)}

    def load_state_dict(self, state: dict) -> None:
        self.steps, self.skipped, self.clipped = state["steps"], state["skipped"], state["clipped"]


def _as_int(value) -> int:
    return int(value.item()) if isinstance(value, Tensor) else int(value)


@dataclass
class StepContext:
    """What a transform may read during one step of one param group."""

    group: dict
    params: list[Tensor]
    grads: list[Tensor]
    states: list[dict]
    steps: list[float]
    stats: GroupStats
    recording: bool = False
    _grad_norm: Tensor | None = field(default=None, repr=False)

    def uniform_float(self) -> bool:
        """All params on one CPU or CUDA device in one float32/float64 dtype: what torch's
        fused kernels and the compiled steps take."""
        p0 = self.params[0]
        return (p0.device.type in ("cpu", "cuda") and p0.dtype in (torch.float32, torch.float64)
                and all(p.device == p0.device and p.dtype == p0.dtype for p in self.params))

    def grad_norm(self) -> Tensor:
        """Global L2 norm of this group's raw gradients, computed at most once a step."""
        if self._grad_norm is None:
            self._grad_norm = global_norm(self.grads)
        return self._grad_norm


def global_norm(tensors: list[Tensor]) -> Tensor:
    """L2 norm over a list of tensors (one read pass, multi-tensor); float64 if any tensor is
    float64, else float32."""
    if not tensors:
        return torch.zeros(())
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    norms = torch._foreach_norm(tensors)
    return torch.linalg.vector_norm(torch.stack([n.to(dtype) for n in norms]))
