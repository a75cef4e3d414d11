"""valley: steps to f < tol in narrow valleys for GD, heavy-ball momentum (beta tuned) and
Adam, each tuned per problem on its own grid.

Problems (every minimum has f = 0): Rosenbrock in 2-D and N-d (the chained form), the 2-D
Rosenbrock behind a fixed rotation, Beale's function, and 2-d quadratics with eigenvalues
1 and 1/kappa, axis-aligned (Adam's per-coordinate scaling can undo the conditioning) or
rotated by 45 degrees (it cannot). A seed draws the start. Every (setting, seed) of one
problem is a row of one batched run, one param group per setting.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .engine import Result, Table
from .engine.arms import describe, generator, grouped_optimizer
from .engine.figures import plt, save
from .engine.stats import column, summarize


def rotation(d: int, seed: int = 0) -> torch.Tensor:
    if d == 2:
        c = math.sqrt(0.5)
        return torch.tensor([[c, -c], [c, c]], dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=generator(seed), dtype=torch.float64))
    return q


class Problem:
    """f and its gradient on rows x (..., d), and the seeded start points."""

    def __init__(self, name: str, p):
        self.name, self.p = name, p
        self.rotate = None
        if name.startswith("quad"):
            _, kappa, kind = name.split("_")
            self.kappa, self.family = float(kappa[1:]), f"quadratic_{kind}"
            self.d = 2
            h = torch.diag(torch.tensor([1.0, 1.0 / self.kappa], dtype=torch.float64))
            self.h = rotation(2) @ h @ rotation(2).T if kind == "rotated" else h
        elif name == "beale":
            self.kappa, self.family, self.d = math.nan, "beale", 2
        else:
            self.kappa, self.family = math.nan, "rosenbrock"
            self.d = p.rosenbrock.nd if name == "rosenbrock_nd" else 2
            if name == "rosenbrock_rotated":
                self.rotate = rotation(2)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.family.startswith("quadratic"):
            hx = x @ self.h
            return 0.5 * (x * hx).sum(-1), hx
        if self.family == "beale":
            return beale(x)
        if self.rotate is not None:  # f(R x): gradient R' grad f(R x)
            f, g = rosenbrock(x @ self.rotate.T, self.p.rosenbrock.b)
            return f, g @ self.rotate
        return rosenbrock(x, self.p.rosenbrock.b)

    def starts(self, seeds: list[int]) -> torch.Tensor:
        out = []
        for s in seeds:
            g = generator(1000 * s + sum(map(ord, self.name)))
            if self.family.startswith("quadratic"):
                theta = 2 * math.pi * torch.rand((), generator=g, dtype=torch.float64)
                out.append(torch.stack([theta.cos(), theta.sin()]))
                continue
            base = (torch.tensor([-1.2, 1.0] * (self.d // 2) + [-1.2] * (self.d % 2),
                                 dtype=torch.float64) if self.family == "rosenbrock"
                    else torch.tensor(self.p.beale_start, dtype=torch.float64))
            x0 = base + self.p.jitter * torch.randn(self.d, generator=g, dtype=torch.float64)
            out.append(x0 @ self.rotate if self.rotate is not None else x0)  # R' x0
        return torch.stack(out)


def rosenbrock(x: torch.Tensor, b: float) -> tuple[torch.Tensor, torch.Tensor]:
    """sum_i b (x_{i+1} - x_i^2)^2 + (1 - x_i)^2, minimum 0 at (1, ..., 1)."""
    u, v = x[..., :-1], x[..., 1:]
    bend = v - u * u
    f = (b * bend**2 + (1 - u) ** 2).sum(-1)
    g = torch.zeros_like(x)
    g[..., :-1] += -4 * b * u * bend - 2 * (1 - u)
    g[..., 1:] += 2 * b * bend
    return f, g


def beale(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(1.5 - u + uv)^2 + (2.25 - u + uv^2)^2 + (2.625 - u + uv^3)^2, minimum 0 at (3, 0.5)."""
    u, v = x[..., 0], x[..., 1]
    terms = [(1.5, 1), (2.25, 2), (2.625, 3)]
    f, gu, gv = 0.0, 0.0, 0.0
    for c, k in terms:
        r = c - u + u * v**k
        f = f + r * r
        gu = gu + 2 * r * (v**k - 1)
        gv = gv + 2 * r * u * k * v ** (k - 1)
    return f, torch.stack([gu, gv], -1)


def descend(prob: Problem, settings: list[dict], seeds: list[int], steps: int, tol: float,
            keep: bool = False):
    """Per setting and seed: steps until f < tol (-1 if never), final f; the path of every
    row when ``keep``."""
    x0 = prob.starts(seeds)
    xs = [x0.clone().requires_grad_(True) for _ in settings]
    opt = grouped_optimizer(settings, xs)
    hit = torch.full((len(settings), len(seeds)), -1, dtype=torch.long)
    path = []
    for t in range(steps + 1):
        x = torch.stack([q.detach() for q in xs])
        f, g = prob(x)
        if keep:
            path.append(x.clone())
        hit = torch.where((f < tol) & (hit < 0), t, hit)
        done = ((hit >= 0) | ~torch.isfinite(f)).all(-1)
        if t == steps or bool(done.all()):
            break
        for q, gq, finished in zip(xs, g, done.tolist()):
            q.grad = None if finished else gq.clone()  # a group without grads is skipped
        opt.step()
    return hit, f, (torch.stack(path) if keep else None)


def rows_for(prob: Problem, arm: str, settings, seeds, p, keep=False):
    hit, final, path = descend(prob, settings, seeds, p.steps, p.tol, keep)
    out = []
    for si in range(len(settings)):
        rows = []
        for j, seed in enumerate(seeds):
            h, f = int(hit[si, j]), float(final[si, j])
            ok = math.isfinite(f)
            steps = h if h >= 0 else p.steps
            # never reached: the budget plus the decades still to go, so censored runs rank
            score = steps if h >= 0 else p.steps * (1 + math.log10(max(f, p.tol) / p.tol))
            rows.append({"part": "runs", "problem": prob.name, "family": prob.family,
                         "kappa": prob.kappa, "optimizer": arm, "seed": seed,
                         "steps": steps, "reached": int(h >= 0),
                         "final_f": f if ok else math.inf,
                         "tuning_score": score if ok else math.inf})
        out.append(rows)
    return out, path


def problem_names(p) -> list[str]:
    names = list(p.rosenbrock.variants) + ["beale"]
    for kind in ("aligned", "rotated"):
        names += [f"quad_k{int(k)}_{kind}" for k in p.kappas]
    return names


def growth(rows: list[dict], p) -> list[dict]:
    """Per seed and quadratic family: how much Adam's advantage (log2 of the other's steps
    over Adam's; a never-reached run at the budget) grows from the smallest kappa to the
    largest."""
    lo, hi = int(min(p.kappas)), int(max(p.kappas))

    def advantage(kind, other, seed, k):
        sel = dict(problem=f"quad_k{k}_{kind}", seed=seed)
        (a,) = column(rows, "steps", optimizer="adam", **sel)
        (b,) = column(rows, "steps", optimizer=other, **sel)
        return math.log2(max(b, 1) / max(a, 1))

    out = []
    for kind in ("aligned", "rotated"):
        for other in ("gd", "momentum"):
            for seed in sorted({r["seed"] for r in rows}):
                out.append({"part": "growth", "family": f"quadratic_{kind}", "versus": other,
                            "seed": seed, "advantage_growth": advantage(kind, other, seed, hi)
                            - advantage(kind, other, seed, lo)})
    return out


def run(s) -> Result:
    p = s.p
    rows, paths, chosen = [], {}, {}
    for name in problem_names(p):
        prob = Problem(name, p)
        for arm in s.arms:
            def evaluate(settings, seeds, prob=prob, arm=arm):
                return rows_for(prob, arm, settings, seeds, p)[0]
            hp = s.tune(arm, evaluate, {"problem": name})
            chosen[(name, arm)] = hp
            keep = name in p.trajectory_problems
            per, path = rows_for(prob, arm, [hp], s.report_seeds, p, keep)
            rows += per[0]
            if keep:
                paths[(name, arm)] = path[:, 0, 0].numpy()
    rows += growth([r for r in rows if r["part"] == "runs"], p)
    runs = [r for r in rows if r["part"] == "runs"]
    tables = [Table("Steps to f < tol at each optimizer's tuned setting (the budget when "
                    "never reached)", runs, ["part", "problem", "optimizer"],
                    ["steps", "reached", "final_f"]),
              Table("Growth of Adam's advantage from the smallest to the largest kappa "
                    "(log2 of the steps ratio)", [r for r in rows if r["part"] == "growth"],
                    ["part", "family", "versus"], ["advantage_growth"])]
    figures = [plot_steps(runs, p, s.out_dir), plot_paths(paths, chosen, p, s.out_dir)]
    setup = [f"Rosenbrock (b={p.rosenbrock.b}) {list(p.rosenbrock.variants)} (N-d: d="
             f"{p.rosenbrock.nd}; rotated: f(Rx), R a 45-degree rotation) from (-1.2, 1, ...) "
             f"+ N(0, {p.jitter}^2); Beale from {list(p.beale_start)} + the same jitter; "
             f"quadratics with eigenvalues 1 and 1/kappa, kappa in {list(p.kappas)}, aligned "
             "and rotated 45 degrees, from a random point on the unit circle.",
             "Arms " + ", ".join(f"{a} = {describe(s.arms[a]['fixed'])}" for a in s.arms)
             + "; each tuned per problem (lr, and beta for heavy-ball) on the tuning seeds by "
             "tuning_score: steps to tol, or for a run that never reaches it the budget times "
             "(1 + the decades f is still above tol); inf when diverged.",
             f"Budget {p.steps} steps, tol {p.tol}, float64; steps are censored at the budget "
             "(reached = 0) and the checks treat them as censored."]
    return Result(rows, tables, figures, setup)


def plot_steps(runs, p, out_dir):
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    arms = list(dict.fromkeys(r["optimizer"] for r in runs))
    colors = dict(zip(arms, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for arm in arms:
        for kind, style in (("aligned", "-"), ("rotated", "--")):
            st = [summarize(column(runs, "steps", problem=f"quad_k{int(k)}_{kind}",
                                   optimizer=arm)) for k in p.kappas]
            ax.errorbar(list(p.kappas), [x.median for x in st], ls=style, marker="o",
                        color=colors[arm], label=f"{arm} ({kind})")
    others = list(p.rosenbrock.variants) + ["beale"]
    width = 0.8 / len(arms)
    for i, arm in enumerate(arms):
        st = [summarize(column(runs, "steps", problem=n, optimizer=arm)) for n in others]
        bx.bar(np.arange(len(others)) + i * width, [x.median for x in st], width,
               color=colors[arm], label=arm)
    bx.set_xticks(np.arange(len(others)) + 0.4 - width / 2, others, rotation=20, fontsize=8)
    for axis in (ax, bx):
        axis.axhline(p.steps, color="gray", ls=":", lw=1, label="budget (never reached)")
        axis.set_yscale("log")
        axis.set_ylabel(f"median steps to f < {p.tol:g}")
    ax.set_xscale("log")
    ax.set(xlabel="condition number kappa", title="quadratics, each arm tuned per problem")
    bx.set_title("Rosenbrock variants and Beale")
    ax.legend(fontsize=7)
    bx.legend(fontsize=7)
    return save(fig, out_dir / "steps_to_tol.png")


def plot_paths(paths, chosen, p, out_dir):
    """The first report seed's trajectory of each optimizer over the contours."""
    names = list(p.trajectory_problems)
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        prob = Problem(name, p)
        lim = {"rosenbrock": ((-2, 2), (-1, 3)), "beale": ((-1, 4.5), (-1.5, 2))}.get(
            name, ((-1.3, 1.3), (-1.3, 1.3)))
        gx, gy = np.meshgrid(np.linspace(*lim[0], 200), np.linspace(*lim[1], 200))
        fz = prob(torch.tensor(np.stack([gx, gy], -1)))[0].numpy()
        ax.contour(gx, gy, fz, levels=np.logspace(-4, np.log10(fz.max()), 15),
                   colors="lightgray", linewidths=0.8)
        for (prob_name, arm), xy in paths.items():
            if prob_name == name:
                hp = chosen[(name, arm)]
                label = ", ".join(f"{k} {v:.3g}" for k, v in hp.items() if k != "name")
                ax.plot(xy[:, 0], xy[:, 1], lw=1, label=f"{arm} ({label})")
        ax.set(xlabel="x1", ylabel="x2", title=name, xlim=lim[0], ylim=lim[1])
        ax.legend(fontsize=7)
    return save(fig, out_dir / "trajectories.png")
