"""Moment transforms: the adaptive (and momentum) part of each algorithm.

Each one follows the op order of torch's multi-tensor implementation of the same
algorithm, so a chain that equals a torch algorithm gives the same numbers.
State tensors use the names torch uses (exp_avg, exp_avg_sq, ...).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import checks
from .base import Quotient, StepContext, Transform


def _zeros(p: Tensor) -> Tensor:
    return torch.zeros_like(p, dtype=_state_dtype(p), memory_format=torch.preserve_format)


def _state_dtype(p: Tensor) -> torch.dtype:
    """State precision: float32 for 16-bit params (bf16/fp16), the param's dtype otherwise."""
    return torch.float32 if p.dtype in (torch.bfloat16, torch.float16) else p.dtype


def _get(states: list[dict], key: str) -> list[Tensor]:
    return [s[key] for s in states]


class ScaleByAdam(Transform):
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
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, [(1 - b2**t) ** 0.5 for t in ctx.steps])
        torch._foreach_add_(denom, group["eps"])
        return Quotient([(exp_avgs, denom, [1 / (1 - b1**t) for t in ctx.steps])])

    def _nesterov(self, grads, exp_avgs, v, ctx):
        (b1, b2), psi = ctx.group["betas"], ctx.group["momentum_decay"]
        denom = torch._foreach_div(v, [1 - b2**t for t in ctx.steps])
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, ctx.group["eps"])
        mus = [b1 * (1.0 - 0.5 * (0.96 ** (t * psi))) for t in ctx.steps]
        mu_nexts = [b1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * psi))) for t in ctx.steps]
        mu_products = _get(ctx.states, "mu_product")
        torch._foreach_mul_(mu_products, mus)
        prods = [mp.item() for mp in mu_products]
        grad_coef = [(1.0 - mu) / (1.0 - mp) for mu, mp in zip(mus, prods)]
        avg_coef = [mn / (1.0 - mp * mn) for mn, mp in zip(mu_nexts, prods)]
        return Quotient([(grads, denom, grad_coef), (exp_avgs, denom, avg_coef)])

    def denominator(self, states, group):
        b2 = group["betas"][1]
        key = "max_exp_avg_sq" if group["amsgrad"] else "exp_avg_sq"
        return [
            1.0 / ((s[key] / (1 - b2 ** s["step"].item())).sqrt() + group["eps"]) for s in states
        ]


class ScaleByRAdam(Transform):
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
    def _rectification(t: float, b2: float) -> float:
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * t * (b2**t) / (1 - b2**t)
        if rho_t <= 5.0:
            return 0.0
        return math.sqrt(
            (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
        )

    def update(self, updates, ctx):
        b1, b2 = ctx.group["betas"]
        exp_avgs, exp_avg_sqs = _get(ctx.states, "exp_avg"), _get(ctx.states, "exp_avg_sq")
        torch._foreach_lerp_(exp_avgs, updates, 1 - b1)
        torch._foreach_mul_(exp_avg_sqs, b2)
        torch._foreach_addcmul_(exp_avg_sqs, updates, updates, 1 - b2)
        rects = [self._rectification(t, b2) for t in ctx.steps]
        bc1 = [1 - b1**t for t in ctx.steps]
        if all(r > 0 for r in rects):  # the usual case: one addcdiv at the end
            denom = torch._foreach_sqrt(exp_avg_sqs)
            torch._foreach_add_(denom, ctx.group["eps"])
            coef = [math.sqrt(1 - b2**t) * r / c for t, r, c in zip(ctx.steps, rects, bc1)]
            return Quotient([(exp_avgs, denom, coef)])
        # buf = rect * sqrt(bc2) / bc1 / (sqrt(v) + eps)  (rectified)  or  1 / bc1  (not yet)
        buf = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_add_(buf, ctx.group["eps"])
        scale = [math.sqrt(1 - b2**t) * r / c for t, r, c in zip(ctx.steps, rects, bc1)]
        torch._foreach_div_(buf, scale)
        torch._foreach_reciprocal_(buf)
        torch._foreach_add_(buf, [0.0 if r > 0 else 1.0 / c for r, c in zip(rects, bc1)])
        return torch._foreach_mul(exp_avgs, buf)

    def denominator(self, states, group):
        b2 = group["betas"][1]
        return [
            math.sqrt(1 - b2 ** s["step"].item()) / (s["exp_avg_sq"].sqrt() + group["eps"])
            for s in states
        ]


class ScaleByAdamax(Transform):
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
        return Quotient([(exp_avgs, exp_infs, [1 / (1 - b1**t) for t in ctx.steps])])

    def denominator(self, states, group):
        return [1.0 / s["exp_inf"] for s in states]


class ScaleByBelief(Transform):
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
        denom = torch._foreach_sqrt(exp_avg_vars)
        torch._foreach_div_(denom, [(1 - b2**t) ** 0.5 for t in ctx.steps])
        torch._foreach_add_(denom, eps)
        return Quotient([(exp_avgs, denom, [1 / (1 - b1**t) for t in ctx.steps])])

    def denominator(self, states, group):
        b2 = group["betas"][1]
        return [
            1.0 / ((s["exp_avg_var"] / (1 - b2 ** s["step"].item())).sqrt() + group["eps"])
            for s in states
        ]


class ScaleByYogi(Transform):
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
        denom = torch._foreach_sqrt(vs)
        torch._foreach_div_(denom, [(1 - b2**t) ** 0.5 for t in ctx.steps])
        torch._foreach_add_(denom, ctx.group["eps"])
        return Quotient([(exp_avgs, denom, [1 / (1 - b1**t) for t in ctx.steps])])

    def denominator(self, states, group):
        b2 = group["betas"][1]
        return [
            1.0 / ((s["exp_avg_sq"] / (1 - b2 ** s["step"].item())).sqrt() + group["eps"])
            for s in states
        ]


class ScaleByRms(Transform):
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
        return Quotient([(updates, avg, [1.0] * len(avg))])

    def denominator(self, states, group):
        return torch._foreach_reciprocal(self._avg(states, group))


class Trace(Transform):
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
        return {"momentum_buffer": _zeros(p)}

    def update(self, updates, ctx):
        m, d = ctx.group["momentum"], ctx.group["dampening"]
        if m == 0:
            return updates
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


scale_by_adam = ScaleByAdam
scale_by_radam = ScaleByRAdam
scale_by_adamax = ScaleByAdamax
scale_by_belief = ScaleByBelief
scale_by_yogi = ScaleByYogi
scale_by_rms = ScaleByRms
trace = Trace
