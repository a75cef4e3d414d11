"""Lazy Adam for sparse gradients (``nn.Embedding(sparse=True)``), as torch's SparseAdam.

Only the rows a gradient touches are read and written: the moments of the other rows
do not decay, so a rare feature keeps its history instead of having it shrink every
step. That is the point of the sparse-gradient and GNN-embedding studies, and the
reason dense Adam's numbers differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from . import checks
from .base import LazyUpdate
from .moments import Moments, _zeros


@dataclass
class SparseDirection(LazyUpdate):
    """Per parameter: the touched rows' m / (sqrt(v) + eps), and torch's bias terms."""

    grads: list[Tensor]  # coalesced sparse gradients (their indices)
    values: list[Tensor | None]  # None where the gradient touched nothing
    corrections: list[tuple[float, float]]  # (1 - b1^t, 1 - b2^t)

    def materialize(self):
        raise ValueError("sparse_adam's update cannot be clipped or decayed: the chain is "
                         "[skip_nonfinite] scale_by_sparse_adam, scale_by_lr")

    def add_to(self, params, lr):
        for p, g, values, (bc1, bc2) in zip(params, self.grads, self.values, self.corrections):
            if values is None:
                continue
            step_size = lr * math.sqrt(bc2) / bc1
            p.add_(g.new(g._indices(), -step_size * values, g.size()))


class ScaleBySparseAdam(Moments):
    """torch.optim.SparseAdam's rule: the moments of the rows in the gradient move,
    m_i += (1-b1)(g_i - m_i), v_i += (1-b2)(g_i^2 - v_i), and only those rows step by
    lr sqrt(1-b2^t)/(1-b1^t) m_i / (sqrt(v_i) + eps)."""

    accepts_sparse = True
    requires_sparse = True

    def __init__(self, betas=(0.9, 0.999), eps=1e-8):
        self.hparams = {"betas": tuple(betas), "eps": eps}
        self.validate(self.hparams)

    def validate(self, group):
        checks.betas("betas", group["betas"])
        checks.positive("eps", group["eps"])

    def init_state(self, p, group):
        return {"exp_avg": _zeros(p), "exp_avg_sq": _zeros(p)}

    def update(self, updates, ctx):
        b1, b2 = ctx.group["betas"]
        grads, values = [], []
        for g, state in zip(updates, ctx.states):
            g = g.coalesce()  # the update is non-linear: indices must be unique
            grads.append(g)
            values.append(self._rows(g, state, b1, b2, ctx.group["eps"]))
        return SparseDirection(grads, values, [(1 - b1**t, 1 - b2**t) for t in ctx.steps])

    @staticmethod
    def _rows(g, state, b1, b2, eps) -> Tensor | None:
        """Update the touched rows of both moments; return their m / (sqrt(v) + eps)."""
        grad_values = g._values()
        if grad_values.numel() == 0:
            return None
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        old_m = exp_avg.sparse_mask(g)._values()
        m_delta = grad_values.sub(old_m).mul_(1 - b1)
        exp_avg.add_(g.new(g._indices(), m_delta, g.size()))
        old_v = exp_avg_sq.sparse_mask(g)._values()
        v_delta = grad_values.pow(2).sub_(old_v).mul_(1 - b2)
        exp_avg_sq.add_(g.new(g._indices(), v_delta, g.size()))
        numer = m_delta.add_(old_m)
        denom = v_delta.add_(old_v).sqrt_().add_(eps)
        return numer.div_(denom)


scale_by_sparse_adam = ScaleBySparseAdam
