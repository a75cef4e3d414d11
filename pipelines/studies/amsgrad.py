"""amsgrad: a non-increasing denominator, on Reddi, Kale & Kumar's (2018) counterexamples
and on a gradient scale that falls and comes back.

(a) The sec. 3 example: f_t(x) = C x when t mod 3 == 1, else -x, on [-1, 1] (projected
    after each step), beta1 = 0, beta2 = 1/(1+C^2), alpha_t = alpha/sqrt(t). The optimum is
    x = -1; Adam's normalised step lets the two -1 gradients outweigh the one C gradient, so
    it drifts to +1. Fixed by the construction, not tuned.
(b) The synthetic experiments of sec. 5: online, f_t(x) = 1010 x when t mod 101 == 1, else
    -10 x; stochastic, f_t(x) = 1010 x with probability 0.01, else -10 x; beta1 = 0.9,
    beta2 = 0.99, alpha_t = alpha/sqrt(t) with alpha tuned per optimizer and problem.
    Average regret R_T/T = (sum_t f_t(x_t) - f_t(-1)) / T.
(c) gradients of size G, then g << G, then G again: Adam's v decays with the gradients and
    its effective step lr / sqrt(v_hat) rises (a spike when G returns); AMSGrad's max keeps
    it flat.
Seeds draw the start x0 ~ U(-1, 1) (and the stochastic gradients).
"""

from __future__ import annotations

import math

import numpy as np
import torch

import optim

from .engine import Result, Table
from .engine.arms import generator
from .engine.figures import band, plt, save


def reddi(name: str, x0: torch.Tensor, c: float, alpha: float, steps: int, eps: float = 1e-8):
    """Iterates (steps+1, rows) and regret / T per row for the online problem of sec. 3."""
    x = x0.clone().requires_grad_(True)
    opt = optim.create(name, [x], lr=alpha, betas=(0.0, 1 / (1 + c * c)), eps=eps)
    path, loss = [x0.clone()], torch.zeros_like(x0)
    optimum_loss = 0.0
    for t in range(1, steps + 1):
        slope = c if t % 3 == 1 else -1.0
        loss += slope * x.detach()
        optimum_loss += -slope
        x.grad = torch.full_like(x0, slope)
        opt.param_groups[0]["lr"] = alpha / math.sqrt(t)
        opt.step()
        with torch.no_grad():
            x.clamp_(-1.0, 1.0)
        path.append(x.detach().clone())
    return torch.stack(path), (loss - optimum_loss) / steps


def starts(seeds: list[int]) -> torch.Tensor:
    return torch.stack([2 * torch.rand((), generator=generator(s), dtype=torch.float64) - 1
                        for s in seeds])


def slopes(problem: str, p, seeds: list[int], steps: int) -> torch.Tensor:
    """(steps, seeds) gradients of the linear losses."""
    big, small = p.synthetic.big, p.synthetic.small
    if problem == "online":
        t = torch.arange(1, steps + 1)
        s = torch.where(t % p.synthetic.period == 1, big, small).double()
        return s[:, None].expand(steps, len(seeds))
    cols = [torch.where(torch.rand(steps, generator=generator(70_000 + s), dtype=torch.float64)
                        < p.synthetic.prob, big, small) for s in seeds]
    return torch.stack(cols, 1).double()


def synthetic(name: str, problem: str, settings: list[dict], p, seeds: list[int], steps: int,
              record: int = 0):
    """Per setting and seed: final x, average regret at T and at T/10; and ``record`` points
    of the average regret curve of every run."""
    x0, g = starts(seeds), slopes(problem, p, seeds, steps)
    syn = p.synthetic
    expected = syn.prob * syn.big + (1 - syn.prob) * syn.small
    cost = g if problem == "online" else torch.full_like(g, expected)
    xs = [x0.clone().requires_grad_(True) for _ in settings]
    groups = [{"params": [x], "lr": st["lr"]} for x, st in zip(xs, settings)]
    opt = optim.create(name, groups, betas=tuple(p.synthetic.betas))
    alphas = [st["lr"] for st in settings]
    regret = torch.zeros(len(settings), len(seeds), dtype=torch.float64)
    at_tenth, curve = None, []
    marks = set(np.unique(np.geomspace(1, steps, record).astype(int)).tolist()) if record \
        else set()
    for t in range(1, steps + 1):
        x = torch.stack([q.detach() for q in xs])
        regret += cost[t - 1] * (x + 1)  # f_t(x_t) - f_t(-1)
        for q, group, alpha in zip(xs, opt.param_groups, alphas):
            q.grad = g[t - 1].clone()
            group["lr"] = alpha / math.sqrt(t)
        opt.step()
        with torch.no_grad():
            for q in xs:
                q.clamp_(-1.0, 1.0)
        if t == steps // 10:
            at_tenth = regret / t
        if t in marks:
            curve.append((t, (regret / t).clone()))
    final = torch.stack([q.detach() for q in xs])
    out = []
    for si in range(len(settings)):
        out.append([{"seed": seed, "final_x": float(final[si, j]),
                     "average_regret": float(regret[si, j] / steps),
                     "regret_ratio": float(regret[si, j] / steps / at_tenth[si, j])
                     if at_tenth[si, j] > 0 else math.nan}
                    for j, seed in enumerate(seeds)])
    return out, curve


def rise(name: str, p, seed: int):
    """Effective step per step, and the largest |update| / lr in each phase."""
    g = generator(seed)
    w = torch.zeros(1, requires_grad=True)
    opt = optim.create(name, [w], lr=p.lr, betas=tuple(p.betas))
    phases = [(p.G, p.phase_steps[0]), (p.g, p.phase_steps[1]), (p.G, p.phase_steps[2])]
    eff, updates = [], []
    for scale, n in phases:
        largest = 0.0
        for _ in range(n):
            w.grad = scale * (1 + p.jitter * torch.randn(1, generator=g))
            before = w.detach().clone()
            opt.step()
            largest = max(largest, ((w.detach() - before).abs() / p.lr).item())
            eff.append(optim.effective_step(opt, w).item())
        updates.append(largest)
    return np.array(eff), updates


def run(s) -> Result:
    p = s.p
    rows, paths, curves, effs = [], {}, {}, {}
    seeds = s.report_seeds
    # torch's AMSGrad keeps the max of the raw v and bias-corrects it afterwards: after the
    # max is set at step t, v_hat still falls by the factor 1 - beta2^t
    allowed = 1 / math.sqrt(1 - p.betas[1] ** p.phase_steps[0])
    for arm in s.arms:
        name = s.arms[arm]["fixed"]["name"]
        path, regret = reddi(name, starts(seeds), p.C, p.alpha, p.reddi_steps)
        paths[arm] = path.numpy()
        for j, seed in enumerate(seeds):
            rows.append({"part": "a_reddi", "problem": "sec3", "optimizer": arm, "seed": seed,
                         "final_x": float(path[-1, j]), "average_regret": float(regret[j])})
        for problem in ("online", "stochastic"):
            def evaluate(settings, tseeds, name=name, problem=problem):
                return synthetic(name, problem, settings, p, tseeds, p.synthetic_steps)[0]
            hp = s.tune(arm, evaluate, {"problem": problem})
            out, curve = synthetic(name, problem, [hp], p, seeds, p.synthetic_steps, 60)
            curves[(problem, arm)] = curve
            rows += [{"part": "b_synthetic", "problem": problem, "optimizer": arm,
                      "lr": hp["lr"], **r} for r in out[0]]
        for seed in seeds:
            eff, (first, _, last) = rise(name, p, seed)
            effs[(arm, seed)] = eff
            end1 = p.phase_steps[0] - 1
            growth = float(eff[end1:].max() / eff[end1])
            rows.append({"part": "c_rise", "optimizer": arm, "seed": seed,
                         "effective_step_rise": growth, "rise_over_allowance": growth / allowed,
                         "max_update_over_lr_phase1": first,
                         "max_update_over_lr_phase3": last})
    tables = [Table("(a) Reddi et al.'s sec. 3 counterexample", [r for r in rows if r["part"]
                    == "a_reddi"], ["part", "problem", "optimizer"],
                    ["final_x", "average_regret"]),
              Table("(b) Reddi et al.'s synthetic experiments, alpha tuned per optimizer",
                    [r for r in rows if r["part"] == "b_synthetic"],
                    ["part", "problem", "optimizer", "lr"],
                    ["final_x", "average_regret", "regret_ratio"]),
              Table("(c) large, small, large gradients", [r for r in rows if r["part"] ==
                    "c_rise"], ["part", "optimizer"],
                    ["effective_step_rise", "rise_over_allowance", "max_update_over_lr_phase1",
                     "max_update_over_lr_phase3"])]
    figures = [plot_reddi(paths, p, s.out_dir), plot_regret(curves, s.out_dir),
               plot_rise(effs, p, seeds, s.out_dir)]
    syn = p.synthetic
    setup = [f"(a) C={p.C}, beta1=0, beta2=1/(1+C^2)={1 / (1 + p.C**2):.4g}, "
             f"alpha_t={p.alpha}/sqrt(t), eps=1e-8, {p.reddi_steps} steps, projection onto "
             "[-1, 1]. regret = (sum f_t(x_t) - sum f_t(-1)) / T.",
             f"(b) slopes {syn.big} / {syn.small}: online every {syn.period}th step, stochastic "
             f"with probability {syn.prob}; betas {list(syn.betas)}; alpha_t = alpha/sqrt(t), "
             f"alpha tuned per optimizer and problem by the average regret after "
             f"{p.synthetic_steps} steps on the tuning seeds. regret_ratio = average regret at "
             "T / at T/10 (below 1: the average regret falls).",
             f"(c) lr={p.lr}, betas={list(p.betas)}; gradients {p.G}, {p.g}, {p.G} (times "
             f"1 + {p.jitter} N(0, 1)) for {list(p.phase_steps)} steps. effective_step_rise = "
             "largest effective step after phase 1 / its value at the end of phase 1; "
             f"rise_over_allowance divides it by 1/sqrt(1 - beta2^{p.phase_steps[0]}) = "
             f"{allowed:.4g}, the rise AMSGrad's bias correction allows."]
    return Result(rows, tables, figures, setup)


def plot_reddi(paths, p, out_dir):
    fig, ax = plt.subplots(figsize=(6.5, 4))
    t = np.arange(p.reddi_steps + 1)
    for name, path in paths.items():
        band(ax, t, path.T, name)
    ax.axhline(-1, color="gray", ls=":", label="optimum x = -1")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlim(0, p.reddi_steps)
    ax.set(xlabel="step t", ylabel="x_t",
           title=f"Reddi et al. sec. 3, C={p.C} (mean ± std over starts)")
    ax.legend()
    return save(fig, out_dir / "reddi_iterates.png")


def plot_regret(curves, out_dir):
    problems = sorted({k[0] for k in curves})
    fig, axes = plt.subplots(1, len(problems), figsize=(6 * len(problems), 4), squeeze=False)
    for ax, problem in zip(axes[0], problems):
        for (prob, arm), curve in curves.items():
            if prob != problem:
                continue
            t = [c[0] for c in curve]
            band(ax, t, np.stack([c[1][0].numpy() for c in curve], 1), arm)
        ax.axhline(0, color="gray", ls=":")
        ax.set_xscale("log")
        ax.set(xlabel="step t", ylabel="average regret R_t / t",
               title=f"{problem} synthetic problem (tuned alpha; mean ± std over seeds)")
        ax.legend()
    return save(fig, out_dir / "average_regret.png")


def plot_rise(effs, p, seeds, out_dir):
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for arm in dict.fromkeys(k[0] for k in effs):
        curves = np.stack([effs[(arm, s)] for s in seeds])
        ax.plot(np.arange(1, curves.shape[1] + 1), curves.mean(0), label=arm)
    for edge in np.cumsum(p.phase_steps)[:-1]:
        ax.axvline(edge, color="gray", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="effective step lr / (sqrt(v_hat) + eps)",
           title=f"|g| = {p.G}, then {p.g}, then {p.G} (dotted: phase edges)")
    ax.legend()
    return save(fig, out_dir / "effective_step_rise.png")
