"""saddle: escape from a strict saddle, started exactly at it or at distance delta.

f(z) = sum_{i<d-k} z_i^2 + sum_{i>=d-k} (-z_i^2 + z_i^4/4): for d=2, k=1 this is
x^2 - y^2 + y^4/4. The saddle is z=0 with f=0; the minima have f=-k. Escape = the first
step with f < -threshold. Every (delta, noise, seed) is one row of a batched run.
"""

from __future__ import annotations

import torch

from .common import describe, generator, make_optimizer
from .figures import plt, save
from .report import Check, Outcome, Table
from .stats import column, less, summarize

CLAIM = ("Started exactly at a strict saddle, GD, momentum and Adam never move; any "
         "perturbation or gradient noise lets each escape, GD in a time growing like "
         "log(1/delta), while Adam, which normalises the tiny gradient, escapes from tiny "
         "perturbations faster than GD and with little dependence on delta.")


def objective(z: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """f and its gradient for rows z (..., d); the last k coordinates are the negative ones."""
    pos, neg = z[..., :-k], z[..., -k:]
    f = (pos**2).sum(-1) + (-(neg**2) + neg**4 / 4).sum(-1)
    return f, torch.cat([2 * pos, -2 * neg + neg**3], -1)


def escape(spec, lr: float, z0: torch.Tensor, noise: torch.Tensor, k: int, steps: int,
           threshold: float, seed: int, track: int | None = None):
    """Per row: steps to f < -threshold (-1 if never), the largest distance from the start,
    and, for row ``track``, the norm of the negative-curvature coordinates at every step."""
    z = z0.clone().requires_grad_(True)
    opt = make_optimizer(spec, [z], lr=lr)
    g_noise = generator(seed)
    hit = torch.full((len(z0),), -1, dtype=torch.long)
    moved = torch.zeros(len(z0), dtype=z0.dtype)
    path = []
    for t in range(steps + 1):
        f, grad = objective(z.detach(), k)
        moved = torch.maximum(moved, (z.detach() - z0).norm(dim=-1))
        if track is not None:
            path.append(z.detach()[track, -k:].norm().item())
        hit = torch.where((f < -threshold) & (hit < 0), t, hit)
        if t == steps or bool((hit >= 0).all()):
            break
        z.grad = grad + noise[:, None] * torch.randn(z.shape, generator=g_noise,
                                                     dtype=z.dtype)
        opt.step()
    return hit, moved, path


def run(p, out_dir) -> Outcome:
    rows, paths = [], {}
    cases = [(d, n) for d in p.deltas for n in p.noises]
    for shape in p.problems:
        dim, k = int(shape.d), int(shape.k)
        problem = f"d{dim}_k{k}"
        g = generator(1000 * dim + k)
        directions = torch.randn(len(cases) * p.seeds, dim, generator=g, dtype=torch.float64)
        directions /= directions.norm(dim=-1, keepdim=True)
        delta = torch.tensor([c[0] for c in cases for _ in range(p.seeds)], dtype=torch.float64)
        noise = torch.tensor([c[1] for c in cases for _ in range(p.seeds)], dtype=torch.float64)
        z0 = delta[:, None] * directions
        track = cases.index((min(d for d in p.deltas if d > 0), 0.0)) * p.seeds
        for name, spec in p.optimizers.items():
            hit, moved, path = escape(spec, p.lr, z0, noise, k, p.steps, p.threshold,
                                      seed=dim + k, track=track)
            paths[(problem, name)] = path
            for r in range(len(z0)):
                rows.append({"problem": problem, "optimizer": name, "delta": float(delta[r]),
                             "noise": float(noise[r]), "seed": r % p.seeds,
                             "escaped": int(hit[r] >= 0),
                             "escape_steps": int(hit[r]) if hit[r] >= 0 else p.steps,
                             "max_displacement": float(moved[r])})
    table = Table("Escape time (steps to f < -threshold; the budget if never)", rows,
                  ["problem", "optimizer", "delta", "noise"],
                  ["escape_steps", "escaped", "max_displacement"])
    figures = [plot_escape(rows, p, out_dir), plot_growth(paths, p, out_dir)]
    setup = [f"Problems (d, k) in {[(s.d, s.k) for s in p.problems]}; start at delta * u, u "
             f"a random unit vector per seed, delta in {list(p.deltas)}.",
             f"Gradient noise N(0, sigma^2) per coordinate, sigma in {list(p.noises)}.",
             "Optimizers " + ", ".join(f"{n} = {describe(s)}" for n, s in p.optimizers.items())
             + f", all at lr={p.lr}; budget {p.steps} steps; escape once f < -{p.threshold}; "
             f"{p.seeds} seeds; float64."]
    return Outcome(rows, [table], figures, checks(rows, p), setup)


def checks(rows, p) -> list[Check]:
    problem = f"d{p.problems[0].d}_k{p.problems[0].k}"
    at_saddle = [r for r in rows if r["delta"] == 0 and r["noise"] == 0]
    perturbed = [r for r in rows if r["delta"] > 0 or r["noise"] > 0]
    small, large = min(d for d in p.deltas if d > 0), max(p.deltas)

    def steps(name, delta):
        return column(rows, "escape_steps", problem=problem, optimizer=name, delta=delta,
                      noise=0.0)

    growth = {n: summarize(steps(n, small)).mean / summarize(steps(n, large)).mean
              for n in ("gd", "adam")}
    gd_small, adam_small = summarize(steps("gd", small)).mean, summarize(steps("adam", small)).mean
    return [
        Check("At the saddle without noise no optimizer moves",
              all(r["max_displacement"] == 0 for r in at_saddle),
              f"largest displacement {max(r['max_displacement'] for r in at_saddle):.3g} over "
              f"{len(at_saddle)} runs"),
        Check("With a perturbation or noise every run escapes",
              all(r["escaped"] for r in perturbed),
              f"{sum(r['escaped'] for r in perturbed)} of {len(perturbed)} runs escaped "
              f"within {p.steps} steps"),
        Check("GD's escape time grows as delta shrinks", growth["gd"] > 1.5,
              f"{problem}: GD needs {growth['gd']:.3g}x more steps from delta={small:g} than "
              f"from delta={large:g}"),
        Check("Adam escapes from the smallest delta faster than GD",
              less(steps("adam", small), steps("gd", small)),
              f"{problem}, delta={small:g}, no noise: Adam {adam_small:.4g} vs GD "
              f"{gd_small:.4g} steps"),
        Check("Adam's escape time depends less on delta than GD's",
              growth["adam"] < growth["gd"],
              f"steps(delta={small:g}) / steps(delta={large:g}): Adam {growth['adam']:.3g}, "
              f"GD {growth['gd']:.3g}"),
    ]


def plot_escape(rows, p, out_dir):
    """Escape steps vs delta; delta=0 drawn at the left edge, a run that never escapes at
    the budget."""
    fig, axes = plt.subplots(1, len(p.problems), figsize=(6 * len(p.problems), 4.2),
                             squeeze=False)
    colors = dict(zip(p.optimizers, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    smallest = min(d for d in p.deltas if d > 0)
    shown = [d if d > 0 else smallest / 100 for d in p.deltas]
    for ax, shape in zip(axes[0], p.problems):
        problem = f"d{shape.d}_k{shape.k}"
        for name in p.optimizers:
            for noise, style in zip(p.noises, ("-", "--", ":")):
                s = [summarize(column(rows, "escape_steps", problem=problem, optimizer=name,
                                      delta=d, noise=noise)) for d in p.deltas]
                ax.errorbar(shown, [x.mean for x in s], yerr=[x.std for x in s], ls=style,
                            marker="o", color=colors[name], capsize=3,
                            label=f"{name}, noise {noise:g}")
        ax.axhline(p.steps, color="gray", ls=":", lw=1, label="budget (never escaped)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(shown, ["0 (at saddle)" if d == 0 else f"{d:g}" for d in p.deltas],
                      fontsize=7)
        ax.set(xlabel="initial distance delta from the saddle", ylabel="steps to escape",
               title=f"d={shape.d}, k={shape.k} negative directions (lr={p.lr})")
        ax.legend(fontsize=7)
    return save(fig, out_dir / "escape_vs_delta.png")


def plot_growth(paths, p, out_dir):
    fig, ax = plt.subplots(figsize=(6, 4))
    problem = f"d{p.problems[0].d}_k{p.problems[0].k}"
    for name in p.optimizers:
        ax.plot(paths[(problem, name)], label=name)
    smallest = min(d for d in p.deltas if d > 0)
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="norm of the negative-curvature coordinates",
           title=f"{problem}, delta={smallest:g}, no noise, seed 0")
    ax.legend()
    return save(fig, out_dir / "escape_paths.png")
