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
    """Per param group: effective step percentiles, update/weight RMS ratio, the raw
    gradient's norm (``grad_norm``), after gradient clipping (``clipped_grad_norm``), the
    update direction's norm before and after update clipping (``update_norm``,
    ``clipped_update_norm``), the fraction of steps on which any clip fired
    (``clip_fraction``) and each clip transform did (``clip_fraction/<transform>``), and
    the steps skipped as non-finite. Norms are of the last step recorded."""
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
    steps = max(stats.steps, 1)
    figures = {"steps": stats.steps, "skipped_steps": stats.skipped,
               "clip_fraction": _as_float(stats.clipped) / steps}
    clips = [t for t in opt.transforms if hasattr(t, "measures")]
    for t in clips:
        figures[f"clip_fraction/{t.label}"] = _as_float(stats.clipped_by.get(t.label, 0)) / steps
    effective = _effective_steps(opt, group, group["params"])
    if effective:
        flat = torch.cat([s.detach().flatten().float().cpu() for s in effective])
        if flat.numel() > _MAX_QUANTILE_INPUT:
            flat = flat[:: flat.numel() // _MAX_QUANTILE_INPUT + 1]
        q = torch.quantile(flat, torch.tensor([0.05, 0.5, 0.95]))
        figures.update(effective_step_p5=q[0].item(), effective_step_p50=q[1].item(),
                       effective_step_p95=q[2].item())
    figures["grad_norm"] = _as_float(stats.grad_norm)
    measured = {t.measures for t in clips}
    if "grad" in measured:
        figures["clipped_grad_norm"] = _as_float(stats.clipped_grad_norm)
    if "update" in measured:
        figures["update_norm"] = _as_float(stats.update_norm)
        figures["clipped_update_norm"] = _as_float(stats.clipped_update_norm)
    if stats.update_rms is not None and stats.weight_rms is not None:
        figures["update_to_weight"] = _as_float(stats.update_rms) / max(
            _as_float(stats.weight_rms), 1e-30)
    return figures


def _as_float(value) -> float | None:
    if value is None:
        return None
    return float(value.item()) if isinstance(value, Tensor) else float(value)
