"""valley: how many steps GD, heavy-ball momentum and Adam need to reach f < tol in narrow
valleys: Rosenbrock and 2-d quadratics with condition number kappa, axis-aligned (Adam's
per-coordinate scaling can undo the conditioning) and rotated by 45 degrees (it cannot).

Every (problem, seed, lr) is one row of a batched run: the optimizers act elementwise, so
rows of one parameter tensor are independent runs; one param group per lr.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .common import describe, generator, make_optimizer
from .figures import plt, save
from .report import Check, Outcome, Table
from .stats import column, less, summarize

CLAIM = ("In ill-conditioned valleys Adam reaches f < tol in fewer steps than gradient descent "
         "and heavy-ball momentum (each with its best lr from a grid), and its advantage grows "
         "with the condition number.")


def problems(p) -> list[dict]:
    out = [{"problem": "rosenbrock", "kappa": None, "rotated": False}]
    for rotated in (False, True):
        for kappa in p.kappas:
            out.append({"problem": f"quad_k{int(kappa)}_{'rotated' if rotated else 'aligned'}",
                        "kappa": float(kappa), "rotated": rotated})
    return out


def hessian(kappa: float, rotated: bool) -> torch.Tensor:
    """Eigenvalues 1 and 1/kappa, in the coordinate axes or rotated by 45 degrees."""
    h = torch.diag(torch.tensor([1.0, 1.0 / kappa], dtype=torch.float64))
    if not rotated:
        return h
    c = math.sqrt(0.5)
    r = torch.tensor([[c, -c], [c, c]], dtype=torch.float64)
    return r @ h @ r.T


def starts(p, probs: list[dict], seed: int) -> torch.Tensor:
    """Rosenbrock: the classic (-1.2, 1) plus jitter; quadratics: a random point on the unit
    circle. One start per problem for this seed."""
    g = generator(seed)
    x0 = []
    for prob in probs:
        if prob["kappa"] is None:
            jitter = p.rosenbrock.jitter * torch.randn(2, generator=g, dtype=torch.float64)
            x0.append(torch.tensor(p.rosenbrock.start, dtype=torch.float64) + jitter)
        else:
            theta = 2 * math.pi * torch.rand((), generator=g, dtype=torch.float64)
            x0.append(torch.stack([theta.cos(), theta.sin()]))
    return torch.stack(x0)


class Objective:
    """f and its gradient for a batch of rows, each row on its own problem."""

    def __init__(self, p, probs: list[dict], row_problem: torch.Tensor):
        hs = [torch.zeros(2, 2, dtype=torch.float64) if q["kappa"] is None
              else hessian(q["kappa"], q["rotated"]) for q in probs]
        self.h = torch.stack(hs)[row_problem]
        self.rosen = torch.tensor([q["kappa"] is None for q in probs])[row_problem]
        self.a, self.b = p.rosenbrock.a, p.rosenbrock.b

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hx = torch.einsum("rij,...rj->...ri", self.h, x)
        f_quad, g_quad = 0.5 * (x * hx).sum(-1), hx
        u, v = x[..., 0], x[..., 1]
        bend = v - u * u
        f_ros = (self.a - u) ** 2 + self.b * bend**2
        g_ros = torch.stack([-2 * (self.a - u) - 4 * self.b * u * bend, 2 * self.b * bend], -1)
        return (torch.where(self.rosen, f_ros, f_quad),
                torch.where(self.rosen[:, None], g_ros, g_quad))

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)[0]


def run_optimizer(spec, lrs, x0, objective, steps: int, tol: float, keep_rows):
    """Steps until f < tol for every (lr, row), -1 where never within ``steps``; the final
    f; the trajectories of ``keep_rows``."""
    params = [x0.clone().requires_grad_(True) for _ in lrs]
    opt = make_optimizer(spec, [{"params": [x], "lr": lr} for x, lr in zip(params, lrs)])
    hit = torch.full((len(lrs), len(x0)), -1, dtype=torch.long)
    path = []
    for t in range(steps + 1):
        x = torch.stack([q.detach() for q in params])
        f, g = objective(x)
        path.append(x[:, keep_rows].clone())
        hit = torch.where((f < tol) & (hit < 0), t, hit)
        if t == steps or bool(((hit >= 0) | ~torch.isfinite(f)).all()):
            break
        for q, gq in zip(params, g):
            q.grad = gq.clone()
        opt.step()
    return hit, f, torch.stack(path)


def run(p, out_dir) -> Outcome:
    probs = problems(p)
    seeds = list(range(p.seeds))
    x0 = torch.cat([starts(p, probs, s) for s in seeds])
    row_problem = torch.arange(len(probs)).repeat(len(seeds))
    row_seed = torch.arange(len(seeds)).repeat_interleave(len(probs))
    objective = Objective(p, probs, row_problem)
    keep = torch.nonzero(row_seed == 0).flatten()  # trajectories of seed 0, one per problem
    rows, paths = [], {}
    for name, spec in p.optimizers.items():
        hit, final, path = run_optimizer(spec, list(p.lrs), x0, objective, p.steps, p.tol, keep)
        paths[name] = path
        for li, lr in enumerate(p.lrs):
            for r in range(len(x0)):
                prob = probs[row_problem[r]]
                rows.append({"problem": prob["problem"], "kappa": prob["kappa"],
                             "rotated": prob["rotated"], "optimizer": name, "lr": lr,
                             "seed": int(row_seed[r]),
                             "steps": int(hit[li, r]) if hit[li, r] >= 0 else p.steps,
                             "reached": int(hit[li, r] >= 0), "final_f": float(final[li, r])})
    best = tune(rows, probs, p.optimizers, p.lrs)
    order = {q["problem"]: i for i, q in enumerate(probs)}
    tuned = sorted((r for r in rows if best[(r["problem"], r["optimizer"])] == r["lr"]),
                   key=lambda r: order[r["problem"]])
    figures = [plot_steps(tuned, probs, p, out_dir),
               plot_paths(paths, best, probs, p, objective, x0[keep], out_dir)]
    table = Table("Steps to f < tol at each optimizer's best lr", tuned,
                  ["problem", "optimizer", "lr"], ["steps", "reached"])
    setup = [f"Rosenbrock (a={p.rosenbrock.a}, b={p.rosenbrock.b}) from (-1.2, 1) + "
             f"N(0, {p.rosenbrock.jitter}^2) jitter; quadratics f = x'Hx/2 with eigenvalues 1 "
             f"and 1/kappa, kappa in {list(p.kappas)}, axis-aligned and rotated 45 degrees, "
             "from a random point on the unit circle.",
             "Optimizers " + ", ".join(f"{n} = {describe(s)}" for n, s in p.optimizers.items())
             + f"; lr grid {list(p.lrs)}; the best lr per "
             "(problem, optimizer) maximises the fraction of seeds reaching tol, then "
             "minimises mean steps (tuned on the reported seeds: best case for every method).",
             f"Budget {p.steps} steps, tol {p.tol}, {p.seeds} seeds (start points), float64. "
             "A run that never reaches tol counts as the budget."]
    return Outcome(rows, [table], figures, checks(tuned, probs, p), setup)


def tune(rows, probs, optimizers, lrs) -> dict:
    best = {}
    for prob in probs:
        for name in optimizers:
            def score(lr, prob=prob, name=name):
                sel = dict(problem=prob["problem"], optimizer=name, lr=lr)
                final = np.asarray(column(rows, "final_f", **sel))
                return (-np.mean(column(rows, "reached", **sel)),
                        np.mean(column(rows, "steps", **sel)),
                        np.mean(np.log10(final)) if np.isfinite(final).all() else np.inf)
            best[(prob["problem"], name)] = min(lrs, key=score)
    return best


def checks(tuned, probs, p) -> list[Check]:
    def steps(problem, name):
        return column(tuned, "steps", problem=problem, optimizer=name)

    def faster(problem, label):
        a = summarize(steps(problem, "adam")).mean
        others = {n: summarize(steps(problem, n)).mean for n in ("gd", "momentum")}
        outcome = [less(steps(problem, "adam"), steps(problem, n)) for n in others]
        held = True if all(o is True for o in outcome) else (
            False if any(o is False for o in outcome) else None)
        evidence = f"Adam {a:.4g} steps vs " + ", ".join(
            f"{n} {m:.4g}" for n, m in others.items())
        return Check(f"Adam fastest on {label}", held, evidence)

    lo, hi = int(min(p.kappas)), int(max(p.kappas))
    out = [faster("rosenbrock", "Rosenbrock"),
           faster(f"quad_k{hi}_aligned", f"the aligned quadratic, kappa={hi}"),
           faster(f"quad_k{hi}_rotated", f"the rotated quadratic, kappa={hi}")]
    for kind in ("aligned", "rotated"):
        ratio = {k: summarize(steps(f"quad_k{k}_{kind}", "gd")).mean
                 / summarize(steps(f"quad_k{k}_{kind}", "adam")).mean for k in (lo, hi)}
        out.append(Check(f"Adam's advantage over GD grows with kappa ({kind})",
                         ratio[hi] > ratio[lo],
                         f"GD/Adam step ratio {ratio[lo]:.3g} at kappa={lo}, "
                         f"{ratio[hi]:.3g} at kappa={hi}"))
    return out


def plot_steps(tuned, probs, p, out_dir):
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [3, 1]})
    colors = dict(zip(p.optimizers, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for name in p.optimizers:
        for kind, style in (("aligned", "-"), ("rotated", "--")):
            stats = [summarize(column(tuned, "steps", problem=f"quad_k{int(k)}_{kind}",
                                      optimizer=name)) for k in p.kappas]
            ax.errorbar(list(p.kappas), [s.mean for s in stats], yerr=[s.std for s in stats],
                        ls=style, marker="o", color=colors[name], capsize=3,
                        label=f"{name} ({kind})")
        s = summarize(column(tuned, "steps", problem="rosenbrock", optimizer=name))
        bx.bar(name, s.mean, yerr=s.std, color=colors[name], capsize=3)
    for axis in (ax, bx):
        axis.axhline(p.steps, color="gray", ls=":", lw=1, label="budget (never reached)")
        axis.set_yscale("log")
        axis.set_ylabel(f"steps to f < {p.tol:g}")
    ax.set_xscale("log")
    ax.set_xlabel("condition number kappa")
    ax.set_title("Quadratics (best lr each)")
    ax.legend(fontsize=7)
    bx.set_title("Rosenbrock")
    return save(fig, out_dir / "steps_vs_kappa.png")


def plot_paths(paths, best, probs, p, objective, starts0, out_dir):
    """Seed 0's trajectory of each optimizer (at its best lr) over the contours."""
    names = list(p.trajectory_problems)
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        i = next(k for k, q in enumerate(probs) if q["problem"] == name)
        lim = ((-2.0, 2.0), (-1.0, 3.0)) if name == "rosenbrock" else ((-1.3, 1.3),) * 2
        gx, gy = np.meshgrid(np.linspace(*lim[0], 200), np.linspace(*lim[1], 200))
        grid = torch.tensor(np.stack([gx, gy], -1).reshape(-1, 1, 2))
        sub = Objective(p, [probs[i]], torch.zeros(1, dtype=torch.long))
        fz = sub.value(grid).reshape(gx.shape).numpy()
        ax.contour(gx, gy, fz, levels=np.logspace(-4, np.log10(fz.max()), 15),
                   colors="lightgray", linewidths=0.8)
        for name_opt, path in paths.items():
            li = list(p.lrs).index(best[(name, name_opt)])
            xy = path[:, li, i].numpy()
            ax.plot(xy[:, 0], xy[:, 1], lw=1, label=f"{name_opt} (lr={p.lrs[li]:g})")
        ax.plot(*starts0[i].numpy(), "ko", ms=4, label="start")
        optimum = (p.rosenbrock.a, p.rosenbrock.a**2) if name == "rosenbrock" else (0, 0)
        ax.plot(*optimum, "k*", ms=10, label="minimum")
        ax.set(xlabel="x1", ylabel="x2", title=name, xlim=lim[0], ylim=lim[1])
        ax.legend(fontsize=7)
    return save(fig, out_dir / "trajectories.png")
