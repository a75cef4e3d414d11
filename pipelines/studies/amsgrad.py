"""amsgrad: a non-increasing denominator, on Reddi et al.'s counterexample and on a gradient
scale that falls and comes back.

(a) Reddi, Kale & Kumar (2018), sec. 3: f_t(x) = C x when t mod 3 == 1, else -x, on
    [-1, 1] (projected after each step), beta1 = 0, beta2 = 1/(1+C^2), alpha_t = alpha/sqrt(t).
    The regret-minimising point is x = -1; Adam's normalised step lets the two -1 gradients
    outweigh the one C gradient, so it drifts to +1. Seeds draw the start in [-1, 1].
(b) gradients of size G, then g << G, then G again: Adam's v decays with the gradients
    and the effective step lr / sqrt(v_hat) rises (a spike when G returns); AMSGrad's max
    keeps it flat.
"""

from __future__ import annotations

import math

import numpy as np
import torch

import optim

from .common import generator
from .figures import band, plt, save
from .report import Check, Outcome, Table
from .stats import column, summarize

CLAIM = ("A non-increasing denominator prevents effective-step spikes: on Reddi et al.'s "
         "counterexample Adam converges to the worst point x=+1 while AMSGrad reaches the "
         "optimum x=-1, and after a phase of small gradients Adam's effective step (and its "
         "update when large gradients return) rises while AMSGrad's does not.")
OPTIMIZERS = ("adam", "amsgrad")


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


def run(p, out_dir) -> Outcome:
    rows, paths, effs = [], {}, {}
    x0 = 2 * torch.rand(p.seeds, generator=generator(0), dtype=torch.float64) - 1
    for name in OPTIMIZERS:
        path, regret = reddi(name, x0, p.C, p.alpha, p.reddi_steps)
        paths[name] = path.numpy()
        for seed in range(p.seeds):
            rows.append({"part": "a_reddi", "optimizer": name, "seed": seed,
                         "x0": float(x0[seed]), "final_x": float(path[-1, seed]),
                         "distance_to_optimum": float(path[-1, seed] + 1),
                         "average_regret": float(regret[seed])})
        for seed in range(p.seeds):
            eff, (first, _, last) = rise(name, p, seed)
            effs[(name, seed)] = eff
            end1 = p.phase_steps[0] - 1
            rows.append({"part": "b_rise", "optimizer": name, "seed": seed,
                         "effective_step_rise": float(eff[end1:].max() / eff[end1]),
                         "max_update_over_lr_phase1": first,
                         "max_update_over_lr_phase3": last})
    part_a = [r for r in rows if r["part"] == "a_reddi"]
    part_b = [r for r in rows if r["part"] == "b_rise"]
    tables = [Table("(a) Reddi et al.'s counterexample", part_a, ["part", "optimizer"],
                    ["final_x", "distance_to_optimum", "average_regret"]),
              Table("(b) large, small, large gradients", part_b, ["part", "optimizer"],
                    ["effective_step_rise", "max_update_over_lr_phase1",
                     "max_update_over_lr_phase3"])]
    figures = [plot_reddi(paths, p, out_dir), plot_rise(effs, p, out_dir)]
    setup = [f"(a) C={p.C}, beta1=0, beta2=1/(1+C^2)={1 / (1 + p.C**2):.4g}, "
             f"alpha_t={p.alpha}/sqrt(t), eps=1e-8, {p.reddi_steps} steps, projection onto "
             f"[-1, 1]; start x0 ~ U(-1, 1) per seed. regret = (sum f_t(x_t) - sum f_t(-1)) / T.",
             f"(b) lr={p.lr}, betas={list(p.betas)}; gradients {p.G}, {p.g}, {p.G} (times "
             f"1 + {p.jitter} N(0, 1)) for {list(p.phase_steps)} steps. effective_step_rise = "
             "largest effective step after phase 1 / its value at the end of phase 1.",
             f"{p.seeds} seeds."]
    return Outcome(rows, tables, figures, checks(rows, p), setup)


def checks(rows, p) -> list[Check]:
    def mean(metric, name):
        return summarize(column(rows, metric, optimizer=name)).mean

    def worst(metric, name, fn):
        return fn(column(rows, metric, optimizer=name))

    # torch's AMSGrad keeps the max of the raw v and bias-corrects it afterwards: after the
    # max is set at step t, v_hat still falls by the factor 1 - beta2^t.
    allowed = 1 / math.sqrt(1 - p.betas[1] ** p.phase_steps[0])
    return [
        Check("Adam ends near +1 on the counterexample", worst("final_x", "adam", min) > 0.9,
              f"Adam's final x: mean {mean('final_x', 'adam'):.4g}, lowest "
              f"{worst('final_x', 'adam', min):.4g}"),
        Check("AMSGrad ends near -1", worst("final_x", "amsgrad", max) < -0.9,
              f"AMSGrad's final x: mean {mean('final_x', 'amsgrad'):.4g}, highest "
              f"{worst('final_x', 'amsgrad', max):.4g}"),
        Check("Adam's effective step rises after large gradients give way to small ones",
              mean("effective_step_rise", "adam") > 2,
              f"x{mean('effective_step_rise', 'adam'):.3g} the end-of-phase-1 value"),
        Check("AMSGrad's effective step rises no more than its bias correction allows",
              worst("effective_step_rise", "amsgrad", max) <= allowed * (1 + 1e-6),
              f"largest ratio x{worst('effective_step_rise', 'amsgrad', max):.4g}; "
              f"1/sqrt(1 - beta2^{p.phase_steps[0]}) = {allowed:.4g}"),
        Check("When large gradients return, Adam's update spikes above AMSGrad's",
              mean("max_update_over_lr_phase3", "adam")
              > mean("max_update_over_lr_phase3", "amsgrad"),
              f"largest |update| / lr in phase 3: Adam "
              f"{mean('max_update_over_lr_phase3', 'adam'):.3g}, AMSGrad "
              f"{mean('max_update_over_lr_phase3', 'amsgrad'):.3g}"),
    ]


def plot_reddi(paths, p, out_dir):
    fig, ax = plt.subplots(figsize=(6.5, 4))
    t = np.arange(p.reddi_steps + 1)
    for name, path in paths.items():
        band(ax, t, path.T, name)
    ax.axhline(-1, color="gray", ls=":", label="optimum x = -1")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlim(0, p.reddi_steps)
    ax.set(xlabel="step t", ylabel="x_t",
           title=f"Reddi et al. counterexample, C={p.C} (mean ± std over starts)")
    ax.legend()
    return save(fig, out_dir / "reddi_iterates.png")


def plot_rise(effs, p, out_dir):
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name in OPTIMIZERS:
        curves = np.stack([effs[(name, s)] for s in range(p.seeds)])
        ax.plot(np.arange(1, curves.shape[1] + 1), curves.mean(0), label=name)
    for edge in np.cumsum(p.phase_steps)[:-1]:
        ax.axvline(edge, color="gray", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="effective step lr / (sqrt(v_hat) + eps)",
           title=f"|g| = {p.G}, then {p.g}, then {p.G} (dotted: phase edges)")
    ax.legend()
    return save(fig, out_dir / "effective_step_rise.png")
