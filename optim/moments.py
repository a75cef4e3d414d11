"""Moment transforms: the adaptive (and momentum) part of each algorithm.

Each one follows the op order of torch's multi-tensor (foreach) implementation of the
same algorithm, so a chain that equals a torch algorithm gives the same numbers. State
tensors use the names torch uses (exp_avg, exp_avg_sq, ...). ADOPT and Lion, which torch
does not have, follow their papers' algorithms and reference implementations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from . import checks
from .base import LazyUpdate, Quotient, StepContext, Transform


def _zeros(p: Tensor) -> Tensor:
    return torch.zeros_like(p, dtype=_state_dtype(p), memory_format=torch.preserve_format)


def _state_dtype(p: Tensor) -> torch.dtype:
    """State precision: float32 for 16-bit params (bf16/fp16), the param's dtype otherwise."""
    return torch.float32 if p.dtype in (torch.bfloat16, torch.float16) else p.dtype


def _get(states: list[dict], key: str) -> list[Tensor]:
    return [s[key] for s in states]


def _adam_denominator(v: list[Tensor], steps: list[float], b2: float, eps: float):
    """sqrt(v) / sqrt(1 - b2^t) + eps, in torch's op order."""
    denom = torch._foreach_sqrt(v)
    torch._foreach_div_(denom, [(1 - b2**t) ** 0.5 for t in steps])
    torch._foreach_add_(denom, eps)
    return denom


class Moments(Transform):
    """A transform that turns gradients into an update direction (the moments); weight decay
    after one of these is decoupled."""

    moments = True


class ScaleByAdam(Moments):
    """Adam's moments: m/(sqrt(v)+eps) with bias correction.

    ``amsgrad`` keeps the running maximum of v (torch's convention: the maximum of the
    raw second moment, bias-corrected afterwards). ``nesterov`` is NAdam (Dozat 2016) with
    torch's momentum-decay schedule ``mu_t = beta1 (1 - 0.5 * 0.96**(t psi))``.
    """

    def __init__(self, betas=(0.9, 0.999), eps=1e-8, amsgrad=False, nesterov=False,
                 momentum_decay=4e-3):
        self.hparams = {"betas": tuple(betas), "eps": eps, "amsgrad": amsgrad,
                        "nesterov": nesterov, "momentum_decay": momentum_decay}
        self.validate(self.hparams)

    def validate(self, group):
        checks.betas("betas", group["betas"])
        checks.positive("eps", group["eps"])
        checks.choice("amsgrad", group["amsgrad"], (False, True))
        checks.choice("nesterov", group["nesterov"], (False, True))
        checks.non_negative("momentum_decay", group["momentum_decay"])

    def init_state(self, p, group):
        state = {"exp_avg": _zeros(p), "exp_avg_sq": _zeros(p)}
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = _zeros(p)
        if group["nesterov"]:
            state["mu_product"] = torch.ones((), dtype=torch.float32)
        return state

    def _second_moment(self, states, group) -> list[Tensor]:
        v = _get(states, "exp_avg_sq")
        if group["amsgrad"]:
            vmax = _get(states, "max_exp_avg_sq")
            torch._foreach_maximum_(vmax, v)
            return vmax
        return v

    def update(self, updates, ctx: StepContext):
        group, states = ctx.group, ctx.states
        b1, b2 = group["betas"]
        exp_avgs, exp_avg_sqs = _get(states, "exp_avg"), _get(states, "exp_avg_sq")
        torch._foreach_lerp_(exp_avgs, updates, 1 - b1)
        torch._foreach_mul_(exp_avg_sqs, b2)
        torch._foreach_addcmul_(exp_avg_sqs, updates, updates, 1 - b2)
        v = self._second_moment(states, group)
        if group["nesterov"]:
            return self._nesterov(updates, exp_avgs, v, ctx)
        denom = _adam_denominator(v, ctx.steps, b2, group["eps"])
        return Quotient([(exp_avgs, denom, [1.0] * len(denom), [1 - b1**t for t in ctx.steps])])

    def _nesterov(self, grads, exp_avgs, v, ctx):
        (b1, b2), psi = ctx.group["betas"], ctx.group["momentum_decay"]
        mus = [b1 * (1.0 - 0.5 * (0.96 ** (t * psi))) for t in ctx.steps]
        mu_nexts = [b1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * psi))) for t in ctx.steps]
        mu_products = _get(ctx.states, "mu_product")
        torch._foreach_mul_(mu_products, mus)
        denom = _adam_denominator(v, ctx.steps, b2, ctx.group["eps"])
        prods = [mp.item() for mp in mu_products]
        return Quotient([(grads, denom, [1.0 - mu for mu in mus], [1.0 - mp for mp in prods]),
                         (exp_avgs, denom, mu_nexts,
                          [1.0 - mp * mn for mp, mn in zip(prods, mu_nexts)])])

    def denominator(self, states, group):
        b2 = group["betas"][1]
        key = "max_exp_avg_sq" if group["amsgrad"] else "exp_avg_sq"
        return [
            1.0 / ((s[key] / (1 - b2 ** s["step"].item())).sqrt() + group["eps"]) for s in states
        ]


@dataclass
class RAdamDirection(LazyUpdate):
    """The rectified step, applied with torch's multi-tensor ops:
    p += m * (1 / ((sqrt(v) + eps) / (sqrt(1 - b2^t) * lr * r_t / (1 - b1^t) * -1))
              - lr * [r_t = 0] / (1 - b1^t))."""

    exp_avgs: list[Tensor]
    exp_avg_sqs: list[Tensor]
    eps: float
    b1: float
    b2: float
    steps: list[float]

    def _buffer(self, lr: float) -> list[Tensor]:
        rects = [ScaleByRAdam.rectification(t, self.b2) for t in self.steps]
        bc1 = [1 - self.b1**t for t in self.steps]
        unrect = [(lr * (0 if r > 0 else 1.0) / c) * -1 for r, c in zip(rects, bc1)]
        rect = [((1 - self.b2**t) ** 0.5) * (lr * r / c) * -1
                for t, r, c in zip(self.steps, rects, bc1)]
        buffer = torch._foreach_sqrt(self.exp_avg_sqs)
        torch._foreach_add_(buffer, self.eps)
        torch._foreach_div_(buffer, rect)
        torch._foreach_reciprocal_(buffer)
        torch._foreach_add_(buffer, unrect)
        return buffer

    def materialize(self) -> list[Tensor]:
        return torch._foreach_mul(self.exp_avgs, self._buffer(-1.0))

    def add_to(self, params, lr):
        torch._foreach_addcmul_(params, self.exp_avgs, self._buffer(lr))


class ScaleByRAdam(Moments):
    """Rectified Adam (Liu et al. 2020): Adam once the variance of v is tractable, momentum SGD
    before (rho_t <= 5)."""

    def __init__(self, betas=(0.9, 0.999), eps=1e-8):
        self.hparams = {"betas": tuple(betas), "eps": eps}
        self.validate(self.hparams)

    def validate(self, group):
        checks.betas("betas", group["betas"])
        checks.positive("eps", group["eps"])

    def init_state(self, p, group):
        return {"exp_avg": _zeros(p), "exp_avg_sq": _zeros(p)}

    @staticmethod
    def rectification(t: float, b2: float) -> float:
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * t * (b2**t) / (1 - b2**t)
        if rho_t <= 5:
            return 0
        return ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
                ) ** 0.5

    def update(self, updates, ctx):
        b1, b2 = ctx.group["betas"]
        exp_avgs, exp_avg_sqs = _get(ctx.states, "exp_avg"), _get(ctx.states, "exp_avg_sq")
        torch._foreach_lerp_(exp_avgs, updates, 1 - b1)
        torch._foreach_mul_(exp_avg_sqs, b2)
        torch._foreach_addcmul_(exp_avg_sqs, updates, updates, 1 - b2)
        return RAdamDirection(exp_avgs, exp_avg_sqs, ctx.group["eps"], b1, b2, ctx.steps)

    def denominator(self, states, group):
        b2 = group["betas"][1]
        return [
            math.sqrt(1 - b2 ** s["step"].item()) / (s["exp_avg_sq"].sqrt() + group["eps"])
            for s in states
        ]


class ScaleByAdamax(Moments):
    """Adamax (Kingma & Ba 2015, sec. 7): the infinity-norm variant of Adam."""

    def __init__(self, betas=(0.9, 0.999), eps=1e-8):
        self.hparams = {"betas": tuple(betas), "eps": eps}
        self.validate(self.hparams)

    validate = ScaleByRAdam.validate

    def init_state(self, p, group):
        return {"exp_avg": _zeros(p), "exp_inf": _zeros(p)}

    def update(self, updates, ctx):
        b1, b2 = ctx.group["betas"]
        exp_avgs, exp_infs = _get(ctx.states, "exp_avg"), _get(ctx.states, "exp_inf")
        torch._foreach_lerp_(exp_avgs, updates, 1 - b1)
        torch._foreach_mul_(exp_infs, b2)
        norm = torch._foreach_abs(updates)
        torch._foreach_add_(norm, ctx.group["eps"])
        torch._foreach_maximum_(exp_infs, norm)
        return Quotient([(exp_avgs, exp_infs, [1.0] * len(exp_infs),
                          [1 - b1**t for t in ctx.steps])])

    def denominator(self, states, group):
        return [1.0 / s["exp_inf"] for s in states]


class ScaleByBelief(Moments):
    """AdaBelief (Zhuang et al. 2020, Alg. 2): v tracks the variance of g around m,
    s_t = b2 s + (1-b2)(g - m_t)^2 + eps, so steps grow where the gradient is predictable."""

    def __init__(self, betas=(0.9, 0.999), eps=1e-16):
        self.hparams = {"betas": tuple(betas), "eps": eps}
        self.validate(self.hparams)

    validate = ScaleByRAdam.validate

    def init_state(self, p, group):
        return {"exp_avg": _zeros(p), "exp_avg_var": _zeros(p)}

    def update(self, updates, ctx):
        b1, b2 = ctx.group["betas"]
        eps = ctx.group["eps"]
        exp_avgs, exp_avg_vars = _get(ctx.states, "exp_avg"), _get(ctx.states, "exp_avg_var")
        torch._foreach_lerp_(exp_avgs, updates, 1 - b1)
        residual = torch._foreach_sub(updates, exp_avgs)
        torch._foreach_mul_(exp_avg_vars, b2)
        torch._foreach_addcmul_(exp_avg_vars, residual, residual, 1 - b2)
        torch._foreach_add_(exp_avg_vars, eps)
        denom = _adam_denominator(exp_avg_vars, ctx.steps, b2, eps)
        return Quotient([(exp_avgs, denom, [1.0] * len(denom), [1 - b1**t for t in ctx.steps])])

    def denominator(self, states, group):
        b2 = group["betas"][1]
        return [
            1.0 / ((s["exp_avg_var"] / (1 - b2 ** s["step"].item())).sqrt() + group["eps"])
            for s in states
        ]


class ScaleByYogi(Moments):
    """Yogi (Zaheer et al. 2018): v moves additively, v -= (1-b2) sign(v - g^2) g^2, so a
    burst of large gradients raises the denominator no faster than a bounded rate.
    Bias correction as in Adam (the paper omits it for exposition; optax and TF keep it)."""

    def __init__(self, betas=(0.9, 0.999), eps=1e-3, initial_accumulator=1e-6):
        self.hparams = {"betas": tuple(betas), "eps": eps,
                        "initial_accumulator": initial_accumulator}
        self.validate(self.hparams)

    def validate(self, group):
        ScaleByRAdam.validate(self, group)
        checks.non_negative("initial_accumulator", group["initial_accumulator"])

    def init_state(self, p, group):
        v = torch.full_like(p, group["initial_accumulator"], dtype=_state_dtype(p))
        return {"exp_avg": _zeros(p), "exp_avg_sq": v}

    def update(self, updates, ctx):
        b1, b2 = ctx.group["betas"]
        exp_avgs, vs = _get(ctx.states, "exp_avg"), _get(ctx.states, "exp_avg_sq")
        torch._foreach_lerp_(exp_avgs, updates, 1 - b1)
        g2 = torch._foreach_mul(updates, updates)
        sign = torch._foreach_sub(vs, g2)
        torch._foreach_sign_(sign)
        torch._foreach_mul_(g2, sign)
        torch._foreach_add_(vs, g2, alpha=-(1 - b2))
        denom = _adam_denominator(vs, ctx.steps, b2, ctx.group["eps"])
        return Quotient([(exp_avgs, denom, [1.0] * len(denom), [1 - b1**t for t in ctx.steps])])

    def denominator(self, states, group):
        b2 = group["betas"][1]
        return [
            1.0 / ((s["exp_avg_sq"] / (1 - b2 ** s["step"].item())).sqrt() + group["eps"])
            for s in states
        ]


class ScaleByRms(Moments):
    """RMSprop (Hinton 2012): g / (sqrt(EMA of g^2) + eps); ``centered`` subtracts the
    squared EMA of g (an estimate of the variance instead of the raw second moment)."""

    def __init__(self, alpha=0.99, eps=1e-8, centered=False):
        self.hparams = {"alpha": alpha, "eps": eps, "centered": centered}
        self.validate(self.hparams)

    def validate(self, group):
        checks.unit_interval("alpha", group["alpha"])
        checks.positive("eps", group["eps"])
        checks.choice("centered", group["centered"], (False, True))

    def init_state(self, p, group):
        state = {"square_avg": _zeros(p)}
        if group["centered"]:
            state["grad_avg"] = _zeros(p)
        return state

    def _avg(self, states, group) -> list[Tensor]:
        square_avgs = _get(states, "square_avg")
        if group["centered"]:
            grad_avgs = _get(states, "grad_avg")
            avg = torch._foreach_addcmul(square_avgs, grad_avgs, grad_avgs, value=-1)
            torch._foreach_sqrt_(avg)
        else:
            avg = torch._foreach_sqrt(square_avgs)
        torch._foreach_add_(avg, group["eps"])
        return avg

    def update(self, updates, ctx):
        alpha = ctx.group["alpha"]
        square_avgs = _get(ctx.states, "square_avg")
        torch._foreach_mul_(square_avgs, alpha)
        torch._foreach_addcmul_(square_avgs, updates, updates, 1 - alpha)
        if ctx.group["centered"]:
            torch._foreach_lerp_(_get(ctx.states, "grad_avg"), updates, 1 - alpha)
        avg = self._avg(ctx.states, ctx.group)
        return Quotient([(updates, avg, [1.0] * len(avg), [1.0] * len(avg))])

    def denominator(self, states, group):
        return torch._foreach_reciprocal(self._avg(states, group))


class Trace(Moments):
    """Heavy-ball momentum as torch's SGD defines it: buf = g on the first step, then
    buf = momentum * buf + (1 - dampening) * g; ``nesterov`` returns g + momentum * buf."""

    def __init__(self, momentum=0.9, dampening=0.0, nesterov=False):
        self.hparams = {"momentum": momentum, "dampening": dampening, "nesterov": nesterov}
        self.validate(self.hparams)

    def validate(self, group):
        checks.unit_interval("momentum", group["momentum"])
        checks.unit_interval("dampening", group["dampening"])
        checks.choice("nesterov", group["nesterov"], (False, True))
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                f"nesterov=True is invalid with momentum={group['momentum']!r} and "
                f"dampening={group['dampening']!r}: expected momentum > 0 and dampening = 0"
            )

    def init_state(self, p, group):
        return {"momentum_buffer": _zeros(p)} if group["momentum"] else {}

    takes_lazy = True  # passes a lazy update through untouched when momentum is 0

    def update(self, updates, ctx):
        m, d = ctx.group["momentum"], ctx.group["dampening"]
        if m == 0:
            return updates
        if isinstance(updates, LazyUpdate):
            updates = updates.materialize()
        bufs = _get(ctx.states, "momentum_buffer")
        first = [b for b, t in zip(bufs, ctx.steps) if t == 1]
        if first:
            torch._foreach_copy_(first, [u for u, t in zip(updates, ctx.steps) if t == 1])
        rest = [i for i, t in enumerate(ctx.steps) if t != 1]
        if rest:
            later = [bufs[i] for i in rest]
            torch._foreach_mul_(later, m)
            torch._foreach_add_(later, [updates[i] for i in rest], alpha=1 - d)
        if ctx.group["nesterov"]:
            return torch._foreach_add(updates, bufs, alpha=m)
        return bufs


class ScaleByAdopt(Moments):
    """ADOPT (Taniguchi et al. 2024, Alg. 1 with the clipping of their code): the gradient is
    normalised by the *previous* second moment, then averaged,
    m_t = b1 m + (1-b1) clip(g_t / max(sqrt(v_{t-1}), eps), (t-1)^clip_exponent),
    v_t = b2 v + (1-b2) g_t^2, with v_0 = g_0^2 from the first step, which moves nothing.
    The direction is m_t itself (no bias correction). ``clip_exponent=None``: no clipping."""

    def __init__(self, betas=(0.9, 0.9999), eps=1e-6, clip_exponent=0.25):
        self.hparams = {"betas": tuple(betas), "eps": eps, "clip_exponent": clip_exponent}
        self.validate(self.hparams)

    def validate(self, group):
        ScaleByRAdam.validate(self, group)
        if group["clip_exponent"] is not None:
            checks.non_negative("clip_exponent", group["clip_exponent"])

    def init_state(self, p, group):
        return {"exp_avg": _zeros(p), "exp_avg_sq": _zeros(p)}

    def update(self, updates, ctx):
        b1, b2 = ctx.group["betas"]
        first = [i for i, t in enumerate(ctx.steps) if t == 1]
        if first:  # v_0 = g_0^2; no step yet
            torch._foreach_addcmul_([ctx.states[i]["exp_avg_sq"] for i in first],
                                    [updates[i] for i in first], [updates[i] for i in first])
        rest = [i for i, t in enumerate(ctx.steps) if t != 1]
        if not rest:
            return [torch.zeros_like(u) for u in updates]
        grads = [updates[i] for i in rest]
        exp_avgs = [ctx.states[i]["exp_avg"] for i in rest]
        exp_avg_sqs = [ctx.states[i]["exp_avg_sq"] for i in rest]
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_clamp_min_(denom, ctx.group["eps"])
        normed = torch._foreach_div(grads, denom)
        exponent = ctx.group["clip_exponent"]
        if exponent is not None:
            bounds = [(ctx.steps[i] - 1) ** exponent for i in rest]
            torch._foreach_clamp_min_(normed, [-c for c in bounds])
            torch._foreach_clamp_max_(normed, bounds)
        torch._foreach_lerp_(exp_avgs, normed, 1 - b1)
        torch._foreach_mul_(exp_avg_sqs, b2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - b2)
        if not first:
            return exp_avgs
        out = [torch.zeros_like(u) for u in updates]
        for i, m in zip(rest, exp_avgs):
            out[i] = m
        return out


class ScaleByLion(Moments):
    """Lion (Chen et al. 2023, Alg. 2): the direction is sign(b1 m + (1-b1) g), then
    m = b2 m + (1-b2) g. Every coordinate moves by exactly lr (plus the decoupled decay),
    so Lion wants a 3-10x smaller lr than AdamW."""

    def __init__(self, betas=(0.9, 0.99)):
        self.hparams = {"betas": tuple(betas)}
        self.validate(self.hparams)

    def validate(self, group):
        checks.betas("betas", group["betas"])

    def init_state(self, p, group):
        return {"exp_avg": _zeros(p)}

    def update(self, updates, ctx):
        b1, b2 = ctx.group["betas"]
        exp_avgs = _get(ctx.states, "exp_avg")
        direction = torch._foreach_lerp(exp_avgs, updates, 1 - b1)
        torch._foreach_sign_(direction)
        torch._foreach_lerp_(exp_avgs, updates, 1 - b2)
        return direction


scale_by_adam = ScaleByAdam
scale_by_radam = ScaleByRAdam
scale_by_adamax = ScaleByAdamax
scale_by_belief = ScaleByBelief
scale_by_yogi = ScaleByYogi
scale_by_rms = ScaleByRms
trace = Trace
scale_by_adopt = ScaleByAdopt
scale_by_lion = ScaleByLion
