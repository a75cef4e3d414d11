"""ridge: Adam's distance to the closed-form ridge solution (X'X + lam I)^-1 X'y.

Full-batch gradients of (|Xw - y|^2 + lam |w|^2) / (2n) in float64, so the only obstacle
between Adam and the exact optimum is the optimizer itself. One optimizer per schedule;
each (lr, beta1, beta2) setting is a param group holding one row per seed.
"""

from __future__ import annotations

import numpy as np
import torch

import optim

from .engine import Result, Table
from .engine.arms import generator
from .engine.figures import plt, save
from .engine.stats import column


def design(p, seed: int):
    """X (n, d), y and the closed-form solution for one seed."""
    g = generator(seed)
    x = torch.randn(p.n, p.d, generator=g, dtype=torch.float64)
    w_true = torch.randn(p.d, generator=g, dtype=torch.float64)
    y = x @ w_true + p.noise * torch.randn(p.n, generator=g, dtype=torch.float64)
    w_ridge = torch.linalg.solve(x.T @ x + p.lam * torch.eye(p.d, dtype=torch.float64), x.T @ y)
    return x, y, w_ridge


def settings(p) -> list[dict]:
    """One factor at a time around the base setting: the alpha, beta1 and beta2 grids;
    ``varied`` names the factor a setting moves (base: none)."""
    base = {"lr": p.base.lr, "beta1": p.base.beta1, "beta2": p.base.beta2}
    out = [{**base, "varied": "base"}]
    for key in ("lr", "beta1", "beta2"):
        for value in p.grid[key]:
            s = {**base, key: value}
            if s != base:
                out.append({**s, "varied": key})
    return out


def schedule(name: str, opt, steps: int):
    """constant, or decaying to 0 over the run: cosine (optim.schedules.warmup_cosine with
    no warmup) or linear."""
    if name == "cosine":
        return optim.schedules.warmup_cosine(opt, 0, steps)
    if name == "linear":
        return optim.schedules.linear(opt, steps)
    return optim.schedules.constant(opt)


def distances(p, schedule_name: str, grid: list[dict], seeds: list[int], steps: int,
              every: int) -> np.ndarray:
    """Relative error |w - w_ridge| / |w_ridge| at steps 0, every, 2*every, ... for each
    (setting, seed): an array (settings, seeds, evaluations)."""
    data = [design(p, s) for s in seeds]
    xtx = torch.stack([x.T @ x for x, _, _ in data]) / p.n
    xty = torch.stack([x.T @ y for x, y, _ in data]) / p.n
    w_ridge = torch.stack([w for _, _, w in data])
    ws = [torch.zeros(len(seeds), p.d, dtype=torch.float64, requires_grad=True) for _ in grid]
    groups = [{"params": [w], "lr": s["lr"], "betas": (s["beta1"], s["beta2"])}
              for w, s in zip(ws, grid)]
    opt = optim.create("adam", groups, eps=p.eps)
    sched = schedule(schedule_name, opt, steps)
    out = []
    for t in range(steps + 1):
        w = torch.stack([q.detach() for q in ws])
        if t % every == 0:
            out.append(((w - w_ridge).norm(dim=-1) / w_ridge.norm(dim=-1)).numpy())
        if t == steps:
            break
        grad = torch.einsum("sij,gsj->gsi", xtx, w) - xty + p.lam / p.n * w
        for q, g in zip(ws, grad.contiguous()):  # torch's fused Adam misreads strided grads
            q.grad = g
        opt.step()
        sched.step()
    return np.stack(out, -1)


def alpha_slopes(rows: list[dict]) -> list[dict]:
    """Per seed, constant step size: the slope of log10(final error) on log10(alpha) over the
    alpha grid (1: the hovering distance proportional to alpha)."""
    out = []
    const = [r for r in rows if r["schedule"] == "constant" and r["varied"] in ("base", "lr")]
    for seed in sorted({r["seed"] for r in const}):
        rs = [r for r in const if r["seed"] == seed]
        x = np.log10([r["lr"] for r in rs])
        y = np.log10([max(r["final_rel_error"], 1e-300) for r in rs])
        out.append({"part": "alpha_slope", "schedule": "constant", "seed": seed,
                    "error_vs_alpha_slope": float(np.polyfit(x, y, 1)[0])})
    return out


def run(s) -> Result:
    p, out_dir = s.p, s.out_dir
    grid, seeds = settings(p), s.report_seeds
    every = max(1, p.steps // p.evaluations)
    curves = {s: distances(p, s, grid, seeds, p.steps, every) for s in p.schedules}
    rows = []
    for name, err in curves.items():
        for gi, setting in enumerate(grid):
            for si, seed in enumerate(seeds):
                below = np.nonzero(err[gi, si] <= p.tol)[0]
                rows.append({"part": "runs", "schedule": name, **setting, "seed": seed,
                             "final_rel_error": float(err[gi, si, -1]),
                             "min_rel_error": float(err[gi, si].min()),
                             "steps_to_tol": int(below[0] * every) if len(below) else p.steps,
                             "reached_tol": int(err[gi, si, -1] <= p.tol)})
    slopes = alpha_slopes(rows)
    tables = [Table(f"Relative error to the closed form after {p.steps} steps", rows,
                    ["part", "schedule", "varied", "lr", "beta1", "beta2"],
                    ["final_rel_error", "min_rel_error", "steps_to_tol", "reached_tol"]),
              Table("Constant step size: slope of log10(final error) on log10(alpha)", slopes,
                    ["part", "schedule"], ["error_vs_alpha_slope"])]
    figures = [plot_curves(curves, every, p, out_dir), plot_grid(rows, grid, p, out_dir)]
    setup = [f"Random design: n={p.n}, d={p.d}, X ~ N(0, 1), w ~ N(0, 1), noise std {p.noise}; "
             f"ridge lam={p.lam}; the closed form solved in float64.",
             f"Adam (eps={p.eps}) from w=0 on the full-batch gradient for {p.steps} steps; "
             f"schedules {list(p.schedules)}; base setting {dict(p.base)}, varied one factor "
             f"at a time over {dict(p.grid)}.",
             f"Relative error |w - w_ridge| / |w_ridge| every {every} steps; tol={p.tol}; "
             f"reached_tol means the final error is <= tol; seeds draw the designs. Not tuned: "
             "the claim is about the grid itself."]
    return Result(rows + slopes, tables, figures, setup, notes(rows, p))


def notes(rows, p) -> list[str]:
    """Constant-alpha runs that touched tol and left it again: Adam near an optimum where
    v -> 0 keeps a step of order alpha, so reaching the optimum is not staying there."""
    left = [r for r in rows if r["schedule"] == "constant" and r["min_rel_error"] <= p.tol
            and r["final_rel_error"] > p.tol]
    if not left:
        return []
    worst = max(r["final_rel_error"] for r in left)
    return [f"{len(left)} constant-alpha runs came within tol (first after "
            f"{min(r['steps_to_tol'] for r in left)} steps) and left it again, ending as far "
            f"as {worst:.3g}: with a constant step Adam reaches the optimum without staying."]


def plot_curves(curves, every, p, out_dir):
    """Relative error vs steps at the base setting, one line per seed and schedule."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    steps = np.arange(next(iter(curves.values())).shape[-1]) * every
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for color, (name, err) in zip(colors, curves.items()):
        for si in range(err.shape[1]):
            ax.plot(steps, err[0, si], color=color, lw=1, alpha=0.8,
                    label=name if si == 0 else None)
    ax.axhline(p.tol, color="gray", ls=":", label=f"tol {p.tol:g}")
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="|w - w_ridge| / |w_ridge|",
           title=f"Adam, lr={p.base.lr:g}, betas=({p.base.beta1:g}, {p.base.beta2:g})")
    ax.legend()
    return save(fig, out_dir / "distance_vs_steps.png")


def plot_grid(rows, grid, p, out_dir):
    """Final relative error against each varied factor, the others at the base setting."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True)
    base = dict(lr=p.base.lr, beta1=p.base.beta1, beta2=p.base.beta2)
    grid = [{k: v for k, v in g.items() if k != "varied"} for g in grid]
    for ax, key in zip(axes, ("lr", "beta1", "beta2")):
        values = sorted({s[key] for s in grid if all(s[k] == base[k] for k in base if k != key)})
        for name in p.schedules:
            finals = [column(rows, "final_rel_error", schedule=name, **{**base, key: v})
                      for v in values]
            xs = [1 - v for v in values] if key == "beta2" else values
            ax.errorbar(xs, [np.median(f) for f in finals], marker="o", capsize=3,
                        yerr=[[np.median(f) - min(f) for f in finals],
                              [max(f) - np.median(f) for f in finals]], label=name)
        ax.axhline(p.tol, color="gray", ls=":", label=f"tol {p.tol:g}")
        ax.set_yscale("log")
        if key != "beta1":
            ax.set_xscale("log")
        label = {"lr": "alpha (lr)", "beta1": "beta1", "beta2": "1 - beta2"}[key]
        ax.set(xlabel=label, title=f"varying {label}")
    axes[0].set_ylabel("final |w - w_ridge| / |w_ridge|")
    axes[0].legend()
    fig.suptitle(f"after {p.steps} steps; median and range over seeds; other factors at base")
    return save(fig, out_dir / "final_error_grid.png")

