"""Telemetry: the quantities the studies are about, read from a chain optimizer.

Counters (steps, skipped, clipped) are kept always; the effective step is computed
from the optimizer state only when asked; update/weight RMS are recorded only on
steps taken with ``opt.record_updates = True``. Nobody asking costs nothing.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import GroupStats
from .chain import ChainOptimizer

_MAX_QUANTILE_INPUT = 1 << 24  # torch.quantile's input limit


def telemetry(opt: ChainOptimizer) -> list[dict[str, float | None]]:
    """Per param group: effective step percentiles, update/weight RMS ratio, gradient norm
    before and after clipping, fraction of steps clipped, steps skipped as non-finite."""
    return [_group_figures(opt, group, stats) for group, stats in zip(opt.param_groups,
                                                                      opt.stats)]


def effective_step(opt: ChainOptimizer, param: Tensor) -> Tensor | None:
    """lr / (sqrt(v_hat) + eps) for each element of ``param`` (same shape), or None before
    its first step or for chains without an adaptive denominator."""
    for group in opt.param_groups:
        if any(p is param for p in group["params"]):
            steps = _effective_steps(opt, group, [param])
            return steps[0] if steps else None
    raise ValueError("param is not optimized by this optimizer")


def _effective_steps(opt, group, params) -> list[Tensor]:
    states = [opt.state[p] for p in params if opt.state[p]]
    if not states:
        return []
    for t in opt.transforms:
        denominators = t.denominator(states, group)
        if denominators is not None:
            return [group["lr"] * d for d in denominators]
    return []


def _group_figures(opt, group, stats: GroupStats) -> dict:
    figures = {"steps": stats.steps, "skipped_steps": stats.skipped,
               "clip_fraction": _as_float(stats.clipped) / max(stats.steps, 1)}
    steps = _effective_steps(opt, group, group["params"])
    if steps:
        flat = torch.cat([s.detach().flatten().float().cpu() for s in steps])
        if flat.numel() > _MAX_QUANTILE_INPUT:
            flat = flat[:: flat.numel() // _MAX_QUANTILE_INPUT + 1]
        q = torch.quantile(flat, torch.tensor([0.05, 0.5, 0.95]))
        figures.update(effective_step_p5=q[0].item(), effective_step_p50=q[1].item(),
                       effective_step_p95=q[2].item())
    figures["grad_norm"] = _as_float(stats.grad_norm)
    figures["clipped_grad_norm"] = _as_float(stats.clipped_grad_norm)
    if stats.update_rms is not None and stats.weight_rms is not None:
        figures["update_to_weight"] = _as_float(stats.update_rms) / max(
            _as_float(stats.weight_rms), 1e-30)
    return figures


def _as_float(value) -> float | None:
    if value is None:
        return None
    return float(value.item()) if isinstance(value, Tensor) else float(value)
