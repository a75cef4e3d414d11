"""Learning-rate schedules, acting on ``lr`` only.

Thin wrappers over ``torch.optim.lr_scheduler``. torch's CyclicLR and OneCycleLR also
cycle momentum (Adam's beta1) by default; here that is off unless asked for by name,
so beta1 never cycles silently.
"""

from __future__ import annotations

import math

from torch.optim import lr_scheduler

from . import checks


def constant(opt):
    return lr_scheduler.LambdaLR(opt, lambda step: 1.0)


def linear(opt, total_steps: int, end_factor: float = 0.0):
    """Linear decay from the base lr to ``end_factor`` x base over ``total_steps``
    (the RL custom: anneal to 0)."""
    checks.positive("total_steps", total_steps)
    checks.non_negative("end_factor", end_factor)
    return lr_scheduler.LambdaLR(
        opt, lambda step: 1.0 - (1.0 - end_factor) * min(step, total_steps) / total_steps)


def warmup_cosine(opt, warmup_steps: int, total_steps: int, min_factor: float = 0.0):
    """Linear warmup from 0 to the base lr, then a cosine to ``min_factor`` x base."""
    checks.non_negative("warmup_steps", warmup_steps)
    checks.positive("total_steps", total_steps)
    if warmup_steps >= total_steps:
        raise ValueError(f"warmup_steps={warmup_steps!r} is invalid: expected < total_steps "
                         f"({total_steps})")
    checks.unit_interval("min_factor", min_factor)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min((step - warmup_steps) / (total_steps - warmup_steps), 1.0)
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    return lr_scheduler.LambdaLR(opt, factor)


def cyclical(opt, base_lr: float, max_lr: float, step_size_up: int = 2000,
             mode: str = "triangular", gamma: float = 1.0, cycle_momentum: bool = False):
    """Smith (2017) cyclical rates: triangular, triangular2 (amplitude halves each cycle)
    or exp_range (amplitude times gamma**step)."""
    checks.positive("base_lr", base_lr)
    checks.positive("max_lr", max_lr)
    checks.positive("step_size_up", step_size_up)
    checks.choice("mode", mode, ("triangular", "triangular2", "exp_range"))
    return lr_scheduler.CyclicLR(opt, base_lr=base_lr, max_lr=max_lr, step_size_up=step_size_up,
                                 mode=mode, gamma=gamma, cycle_momentum=cycle_momentum)


def one_cycle(opt, max_lr: float, total_steps: int, pct_start: float = 0.3,
              cycle_momentum: bool = False):
    """Smith & Topin (2019) one-cycle policy on lr."""
    checks.positive("max_lr", max_lr)
    checks.positive("total_steps", total_steps)
    checks.unit_interval("pct_start", pct_start)
    return lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=total_steps,
                                   pct_start=pct_start, cycle_momentum=cycle_momentum)


SCHEDULES = {f.__name__: f for f in (constant, linear, warmup_cosine, cyclical, one_cycle)}


def create(name: str, opt, **kwargs):
    """Build the schedule ``name`` for ``opt`` (e.g. from a config)."""
    checks.choice("schedule", name, sorted(SCHEDULES))
    return SCHEDULES[name](opt, **kwargs)
