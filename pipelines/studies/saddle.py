"""saddle: escape from a strict saddle, started exactly at it or at distance delta.

f(z) = sum_{i<d-k} z_i^2 + sum_{i>=d-k} (-z_i^2 + z_i^4/4): for d=2, k=1 this is
x^2 - y^2 + y^4/4. The saddle is z=0 with f=0; the minima have f=-k. A run escapes at the
first step with f < -threshold and has settled if f is still below it ``settle`` steps
after its last row escaped (an lr that escapes but cannot stay in the minimum is not
stable). Each seed draws the direction u of the start delta * u and the gradient noise.
Every optimizer is tuned on its own grid per problem; every (setting, delta, noise, seed) is
one row of one batched run.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .engine import Result, Table
from .engine.arms import describe, generator, grouped_optimizer
from .engine.figures import plt, save
from .engine.stats import column, summarize


def objective(z: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """f and its gradient for rows z (..., d); the last k coordinates are the negative ones."""
    pos, neg = z[..., :-k], z[..., -k:]
    f = (pos**2).sum(-1) + (-(neg**2) + neg**4 / 4).sum(-1)
    return f, torch.cat([2 * pos, -2 * neg + neg**3], -1)


def starts(dim: int, k: int, deltas: list[float], noises: list[float], seeds: list[int]):
    """Start points, noise levels, and (delta, noise, seed) per row."""
    cases = [(d, n, s) for s in seeds for d in deltas for n in noises]
    u = {s: torch.randn(dim, generator=generator(100_003 * s + 1000 * dim + k),
                        dtype=torch.float64) for s in seeds}
    z0 = torch.stack([d * u[s] / u[s].norm() for d, _, s in cases])
    noise = torch.tensor([n for _, n, _ in cases], dtype=torch.float64)
    return z0, noise, cases


def escape(settings: list[dict], z0: torch.Tensor, noise: torch.Tensor, k: int, steps: int,
           threshold: float, settle: int, noise_seed: int, track: int | None = None):
    """Per setting and row: the escape step (-1 if never), whether f < -threshold still
    holds at the end, the largest distance from the start; and the norm of the negative
    coordinates at every step for row ``track`` of every setting."""
    zs = [z0.clone().requires_grad_(True) for _ in settings]
    opt = grouped_optimizer(settings, zs)
    g = generator(noise_seed)
    shape = (len(settings), len(z0))
    hit = torch.full(shape, -1, dtype=torch.long)
    moved = torch.zeros(shape, dtype=z0.dtype)
    paths = []
    for t in range(steps + 1):
        z = torch.stack([q.detach() for q in zs])
        f, grad = objective(z, k)
        moved = torch.maximum(moved, (z - z0).norm(dim=-1).nan_to_num(math.inf))
        if track is not None:
            paths.append(z[:, track, -k:].norm(dim=-1))
        hit = torch.where((f < -threshold) & (hit < 0), t, hit)
        if t == steps or (bool((hit >= 0).all()) and t >= int(hit.max()) + settle):
            break
        kick = noise[:, None] * torch.randn(z.shape[1:], generator=g, dtype=z.dtype)
        for q, gq in zip(zs, grad):
            q.grad = gq + kick
        opt.step()
    settled = f < -threshold
    return hit, settled, moved, (torch.stack(paths, -1) if paths else None)


def run_cell(s, arm: str, settings: list[dict], dim: int, k: int, deltas, noises, seeds,
             track_delta: float | None = None) -> tuple[list[list[dict]], list]:
    """Rows per setting for every (delta, noise, seed), and the tracked paths."""
    p = s.p
    z0, noise, cases = starts(dim, k, deltas, noises, seeds)
    track = (cases.index((track_delta, 0.0, seeds[0])) if track_delta is not None else None)
    hit, settled, moved, paths = escape(settings, z0, noise, k, p.steps, p.threshold,
                                        p.settle, noise_seed=7 * dim + k + seeds[0], track=track)
    out = []
    for si in range(len(settings)):
        rows = []
        for r, (delta, n, seed) in enumerate(cases):
            h = int(hit[si, r])
            rows.append({"part": "runs", "problem": f"d{dim}_k{k}", "optimizer": arm,
                         "delta": delta,
                         "noise": n, "seed": seed, "perturbed": int(delta > 0 or n > 0),
                         "escaped": int(h >= 0), "settled": int(bool(settled[si, r])),
                         "escape_steps": h if h >= 0 else p.steps,
                         "max_displacement": float(moved[si, r])})
        out.append(rows)
    return out, (paths[0].tolist() if paths is not None else [])


def tuning_score(s, arm: str, dim: int, k: int):
    """The tuning metric per seed: mean escape steps over delta > 0 without noise, inf if a
    run never escaped or did not stay escaped (an unstable lr)."""
    deltas = [d for d in s.p.deltas if d > 0]

    def evaluate(settings, seeds):
        per_setting, _ = run_cell(s, arm, settings, dim, k, deltas, [0.0], seeds)
        out = []
        for rows in per_setting:
            by_seed = {}
            for r in rows:
                ok = r["escaped"] and r["settled"]
                by_seed.setdefault(r["seed"], []).append(r["escape_steps"] if ok else math.inf)
            out.append([{"seed": seed, "mean_escape_steps": float(np.mean(v))}
                        for seed, v in by_seed.items()])
        return out
    return evaluate


def slopes(rows: list[dict]) -> list[dict]:
    """Per (problem, optimizer, seed) without noise: the least-squares slope of escape steps
    on log10(1/delta) over delta > 0 (steps per decade); inf if a run never escaped."""
    out = []
    runs = [r for r in rows if r["noise"] == 0 and r["delta"] > 0]
    keys = dict.fromkeys((r["problem"], r["optimizer"], r["seed"]) for r in runs)
    for problem, opt, seed in keys:
        rs = [r for r in runs if (r["problem"], r["optimizer"], r["seed"]) == (problem, opt, seed)]
        x = np.log10([1 / r["delta"] for r in rs])
        y = np.asarray([r["escape_steps"] for r in rs], float)
        slope = float(np.polyfit(x, y, 1)[0]) if all(r["escaped"] for r in rs) else math.inf
        out.append({"part": "slopes", "problem": problem, "optimizer": opt, "seed": seed,
                    "steps_per_decade": slope})
    return out


def run(s) -> Result:
    p = s.p
    rows, paths, chosen = [], {}, {}
    smallest = min(d for d in p.deltas if d > 0)
    for shape in p.problems:
        dim, k = int(shape.d), int(shape.k)
        problem = f"d{dim}_k{k}"
        for arm in s.arms:
            hp = s.tune(arm, tuning_score(s, arm, dim, k), {"problem": problem})
            chosen[(problem, arm)] = hp
            per, path = run_cell(s, arm, [hp], dim, k, list(p.deltas), list(p.noises),
                                 s.report_seeds, track_delta=smallest)
            rows += per[0]
            paths[(problem, arm)] = path
    rows += slopes(rows)
    runs = [r for r in rows if "escape_steps" in r]
    tables = [Table("Escape time (steps to f < -threshold; the budget if never)", runs,
                    ["part", "problem", "optimizer", "delta", "noise"],
                    ["escape_steps", "escaped", "settled", "max_displacement"]),
              Table("Steps per decade of 1/delta (slope of escape steps on log10(1/delta), "
                    "no noise)", [r for r in rows if "steps_per_decade" in r],
                    ["part", "problem", "optimizer"], ["steps_per_decade"])]
    figures = [plot_escape(runs, p, chosen, s.arms, s.out_dir),
               plot_paths(paths, p, chosen, smallest, s.out_dir)]
    setup = [f"Problems (d, k) in {[(q.d, q.k) for q in p.problems]}; start at delta * u, u "
             f"a random unit vector per seed, delta in {list(p.deltas)}; gradient noise "
             f"N(0, sigma^2) per coordinate, sigma in {list(p.noises)}.",
             "Arms: " + "; ".join(f"{a} = {describe(s.arms[a]['fixed'])}" for a in s.arms)
             + f"; tuned per problem (see Tuning). Budget {p.steps} steps; escape once f < "
             f"-{p.threshold}; settled = still below {settle_text(p)}; float64.",
             "steps_per_decade: per seed, the least-squares slope of escape steps against "
             "log10(1/delta) over delta > 0 without noise; GD's linear theory predicts "
             "ln(10)/ln(1 + 2 lr) near the saddle."]
    return Result(rows, tables, figures, setup, notes(rows, chosen))


def settle_text(p) -> str:
    return f"-{p.threshold} {p.settle} steps after the last row's escape"


def notes(rows, chosen) -> list[str]:
    out = []
    for (problem, arm), hp in chosen.items():
        if arm == "gd":
            s = summarize(column(rows, "steps_per_decade", problem=problem, optimizer=arm))
            theory = math.log(10) / math.log(1 + 2 * hp["lr"])
            out.append(f"{problem}: GD at lr={hp['lr']:.3g} escapes in {s.mean:.3g} steps per "
                       f"decade of 1/delta; the linearised rate ln(10)/ln(1+2 lr) is "
                       f"{theory:.3g}.")
    return out


def plot_escape(rows, p, chosen, arms, out_dir):
    """Escape steps vs delta at each optimizer's tuned lr; delta=0 drawn at the left edge."""
    fig, axes = plt.subplots(1, len(p.problems), figsize=(6 * len(p.problems), 4.2),
                             squeeze=False)
    colors = dict(zip(arms, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    smallest = min(d for d in p.deltas if d > 0)
    shown = [d if d > 0 else smallest / 100 for d in p.deltas]
    for ax, shape in zip(axes[0], p.problems):
        problem = f"d{shape.d}_k{shape.k}"
        for arm in arms:
            for noise, style in zip(p.noises, ("-", "--", ":")):
                st = [summarize(column(rows, "escape_steps", problem=problem, optimizer=arm,
                                       delta=d, noise=noise)) for d in p.deltas]
                lr = chosen[(problem, arm)]["lr"]
                ax.errorbar(shown, [x.mean for x in st], yerr=[x.std for x in st], ls=style,
                            marker="o", color=colors[arm], capsize=3,
                            label=f"{arm} (lr {lr:.3g}), noise {noise:g}")
        ax.axhline(p.steps, color="gray", ls=":", lw=1, label="budget (never escaped)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(shown, ["0 (at saddle)" if d == 0 else f"{d:g}" for d in p.deltas],
                      fontsize=7)
        ax.set(xlabel="initial distance delta from the saddle", ylabel="steps to escape",
               title=f"d={shape.d}, k={shape.k}: each optimizer at its tuned lr")
        ax.legend(fontsize=6)
    return save(fig, out_dir / "escape_vs_delta.png")


def plot_paths(paths, p, chosen, smallest, out_dir):
    fig, ax = plt.subplots(figsize=(6, 4))
    problem = f"d{p.problems[0].d}_k{p.problems[0].k}"
    for (prob, arm), path in paths.items():
        if prob == problem:
            ax.plot(path, label=f"{arm} (lr {chosen[(prob, arm)]['lr']:.3g})")
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="norm of the negative-curvature coordinates",
           title=f"{problem}, delta={smallest:g}, no noise, first report seed")
    ax.legend()
    return save(fig, out_dir / "escape_paths.png")
