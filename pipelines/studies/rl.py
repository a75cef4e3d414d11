"""rl: does Adam's adaptive denominator temper noisy policy gradients?

Every cell is a real `adamlab train pipeline=rl` run (``pipelines.train.run``) on a composed
config; the study reads each run's summary and its csv/metrics.csv (episodic return and the
policy-gradient variance across minibatches over env steps). Each optimizer keeps its own
conventional lr (set in configs/study/rl.yaml): the comparison is of optimizers as used.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .engine import Result, Table
from .engine.figures import band, plt, save
from .engine.stats import column, summarize
from .problems.training import train_all

METRICS = ["steps_to_threshold", "reached", "final_return", "eval_return",
           "pg_grad_variance_mean"]


def series(rows: list[dict], key: str, x: str = "global_step") -> tuple[np.ndarray, np.ndarray]:
    pts = [(float(r[x]), float(r[key])) for r in rows
           if r.get(key, "") != "" and r.get(x, "") != ""]
    pts = [p for p in pts if math.isfinite(p[1])]
    if not pts:
        return np.zeros(0), np.zeros(0)
    xs, ys = map(np.asarray, zip(*sorted(pts)))
    return xs, ys


def on_grid(grid, xs, ys):
    return np.interp(grid, xs, ys) if len(xs) else np.full(len(grid), np.nan)


def overrides_for(p, env: str, algo: str, opt: str, seed: int) -> list[str]:
    e, a, o = p.envs[env], p.algorithms[algo], p.arms[opt].optim
    out = ["pipeline=rl", f"env.id={env}", f"seed={seed}", "logger=csv",
           "trainer.enable_progress_bar=false",
           f"pipeline.total_timesteps={p.total_timesteps}",
           f"pipeline.steps_per_epoch={p.total_timesteps}",
           f"pipeline.eval_episodes={p.eval_episodes}",
           f"pipeline.threshold={e.threshold}", *a, f"optim={o.optim}"]
    out += [f"optim.{k}={v}" for k, v in o.items() if k != "optim"]
    return out


def run(s) -> Result:
    p, out_dir = s.p, Path(s.out_dir)
    for opt in s.arms:
        s.tune(opt, None)  # fixed: each optimizer at its conventional RL rate
    rows, curves = [], {}
    keys = [(env, algo, opt, seed) for env in p.envs_used for algo in p.algorithms_used
            for opt in s.arms for seed in s.report_seeds]
    cells = [(overrides_for(p, *key), out_dir / "runs" / "{}-{}-{}-s{}".format(*key))
             for key in keys]
    for (env, algo, opt, seed), (m, csv_rows) in zip(keys, train_all(cells, s.workers)):
        reached = m.get("steps_to_threshold")
        variance = series(csv_rows, "diagnostics/pg_grad_variance")
        var = variance[1]
        curves[(env, algo, opt, seed)] = (series(csv_rows, "charts/episodic_return"), variance)
        rows.append({"env": env, "algorithm": algo, "optimizer": opt, "seed": seed,
                     "steps_to_threshold": (reached if reached is not None
                                            else p.total_timesteps),
                     "reached": int(reached is not None),
                     "final_return": m.get("mean_return_last20"),
                     "eval_return": m.get("eval_return"),
                     "pg_grad_variance_mean": (float(np.mean(var)) if len(var)
                                               else math.nan)})
    add_spread(rows)
    table = Table("Per env, algorithm and optimizer (steps_to_threshold: the budget when never "
                  "reached)", rows, ["env", "algorithm", "optimizer"], METRICS)
    setup = [f"Envs {list(p.envs_used)} (thresholds "
             + ", ".join(f"{e}: {p.envs[e].threshold}" for e in p.envs_used)
             + f"); algorithms {list(p.algorithms_used)}; {p.total_timesteps} env steps per "
             f"run; seeds {s.report_seeds}; every run is `adamlab train pipeline=rl` with "
             "logger=csv.",
             "Optimizers at their usual RL rates: " + "; ".join(
                 f"{n} = {dict(p.arms[n].optim)}" for n in s.arms) + " (not tuned).",
             "final_return = mean return of the last 20 training episodes; eval_return = "
             "greedy evaluation at the end; pg_grad_variance_mean = mean over training of the "
             "pipeline's policy-gradient variance across minibatches. The spread check "
             "compares |final_return - group median| (a Levene-style test), unpaired."]
    figures = [plot(curves, p, s, out_dir, 0, "episodic return", "return_curves.png"),
               plot(curves, p, s, out_dir, 1, "pg_grad_variance", "pg_grad_variance.png",
                    log=True)]
    return Result(rows, [table], figures, setup, notes(rows, p, s))


def add_spread(rows):
    groups = {}
    for r in rows:
        groups.setdefault((r["env"], r["algorithm"], r["optimizer"]), []).append(r)
    for rs in groups.values():
        vals = [r["final_return"] for r in rs if r["final_return"] is not None]
        med = float(np.median(vals)) if vals else math.nan
        for r in rs:
            r["final_return_absdev"] = (abs(r["final_return"] - med)
                                        if r["final_return"] is not None else math.nan)


def notes(rows, p, s) -> list[str]:
    out = []
    for env in p.envs_used:
        for algo in p.algorithms_used:
            v = {o: summarize(column(rows, "pg_grad_variance_mean", env=env, algorithm=algo,
                                     optimizer=o)).mean for o in s.arms}
            out.append(f"{env}/{algo}: mean pg_grad_variance "
                       + ", ".join(f"{o} {x:.3g}" for o, x in v.items())
                       + " (measured on each optimizer's own trajectory, so it mixes the "
                       "optimizer's effect on the policy with the gradient noise itself).")
    return out


def plot(curves, p, s, out_dir, which, ylabel, name, log=False):
    envs, algos = list(p.envs_used), list(p.algorithms_used)
    fig, axes = plt.subplots(len(envs), len(algos), figsize=(4.5 * len(algos), 3.6 * len(envs)),
                             squeeze=False)
    grid = np.linspace(0, p.total_timesteps, 50)
    for i, env in enumerate(envs):
        for j, algo in enumerate(algos):
            ax = axes[i][j]
            for opt in s.arms:
                ys = [on_grid(grid, *curves[(env, algo, opt, seed)][which])
                      for seed in s.report_seeds]
                band(ax, grid, ys, opt)
            if log:
                ax.set_yscale("log")
            ax.set(title=f"{env} / {algo}", xlabel="env steps", ylabel=ylabel)
            ax.legend(fontsize=8)
    fig.suptitle("mean ± std over seeds")
    return save(fig, out_dir / name)
