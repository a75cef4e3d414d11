"""rl: does Adam's adaptive denominator temper noisy policy gradients?

Two parts. **The diagnostic** (``rl_diagnostic``): at the same policy snapshots (one
reference run per seed, Adam at its tuned lr, snapshots at ``diagnostic.fractions`` of the
budget) every optimizer's update direction is measured on the same data: Adam's v_hat
rebuilt from the same warm-up rollouts, then the noise-to-signal ratio tr Cov(u) / ||E u||^2
of u = g / (sqrt(v_hat) + eps) (Adam) and u = g (SGD) over independent rollouts, reported
batch-free as a noise scale (batch x ratio, env streams per rollout); with the gradient noise
scale tr Sigma / ||G||^2 and the per-parameter Spearman correlation of noise variance with
Adam's effective step. **Training**: real `adamlab train pipeline=rl` runs, each optimizer
tuned (its own lr grid) per env and algorithm, with the comparison's confounds removed:
actor and critic in two parameter groups, each clipped by its own norm (``clip.scope=group``;
the clip rate of each group is reported), REINFORCE without baseline has no advantage
normalisation either (``algo.norm_adv=false``), REINFORCE keeps episodes by when they start
(``Collector.episodes_per_env``), and returns are summarised by the interquartile mean with
percentile-bootstrap CIs (Agarwal et al. 2021's protocol) next to the engine's paired checks.

The training log's ``diagnostics/pg_minibatch_grad_variance`` (the trace of the covariance of
minibatch gradients within one rollout, on each optimizer's own trajectory, before any
optimizer) is reported under that name as ``pg_minibatch_grad_variance_mean``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy.stats import trim_mean

from .engine import Result, Table
from .engine.figures import band, plt, save
from .problems.training import train
from .rl_diagnostic import diagnose

RUN_METRICS = ["steps_to_threshold", "reached", "mean_return", "final_return", "eval_return",
               "clip_rate_actor", "clip_rate_critic", "pg_minibatch_grad_variance_mean"]
DIAG_METRICS = ["signal_fraction", "nsr", "noise_scale"]
PAIR_METRICS = ["nsr_ratio", "grad_noise_scale", "noise_step_corr"]


def series(rows: list[dict], key: str, x: str = "step") -> tuple[np.ndarray, np.ndarray]:
    pts = [(float(r[x]), float(r[key])) for r in rows
           if r.get(key, "") != "" and r.get(x, "") != ""]
    pts = [p for p in pts if math.isfinite(p[1])]
    if not pts:
        return np.zeros(0), np.zeros(0)
    xs, ys = map(np.asarray, zip(*sorted(pts)))
    return xs, ys


def on_grid(grid, xs, ys):
    return np.interp(grid, xs, ys) if len(xs) else np.full(len(grid), np.nan)


def has_critic(p, algo: str) -> bool:
    return "algo.baseline=false" not in list(p.algorithms[algo])


def overrides_for(p, env: str, algo: str, setting: dict, seed: int) -> list[str]:
    """`adamlab train` overrides: actor and critic in two groups at the same lr, each clipped
    by its own norm (where the algorithm clips)."""
    hp = dict(setting)
    lr = hp["lr"]
    out = ["pipeline=rl", f"env.id={env}", f"seed={seed}", "logger=csv",
           "trainer.enable_progress_bar=false",
           f"pipeline.total_timesteps={p.total_timesteps}",
           f"pipeline.steps_per_epoch={p.total_timesteps}",
           f"pipeline.eval_episodes={p.eval_episodes}",
           f"pipeline.threshold={p.envs[env].threshold}", *p.algorithms[algo],
           "+clip.scope=group", f"optim={hp.pop('optim')}"]
    if has_critic(p, algo):
        out.append(f"++optim.module_lr={{agent: {{actor: {lr}, critic: {lr}}}}}")
    return out + [f"optim.{k}={v}" for k, v in hp.items()]


def measure(p, metrics: dict, csv_rows: list[dict], critic: bool) -> dict:
    reached = metrics.get("steps_to_threshold")
    returns = series(csv_rows, "charts/episodic_return")[1]
    variance = series(csv_rows, "diagnostics/pg_minibatch_grad_variance")[1]

    def last(key):
        v = series(csv_rows, key)[1]
        return float(v[-1]) if len(v) else None

    return {"steps_to_threshold": reached if reached is not None else p.total_timesteps,
            "reached": int(reached is not None),
            "mean_return": float(np.mean(returns)) if len(returns) else -math.inf,
            "final_return": metrics.get("mean_return_last20"),
            "eval_return": metrics.get("eval_return"),
            "clip_rate_actor": last("optim/g0/clip_fraction"),
            "clip_rate_critic": last("optim/g1/clip_fraction") if critic else None,
            "pg_minibatch_grad_variance_mean": (float(np.mean(variance)) if len(variance)
                                                else None),
            "_returns": series(csv_rows, "charts/episodic_return")}


def evaluator(s, env: str, algo: str, opt: str):
    def evaluate(settings, seeds):
        keys = [(k, seed) for k in range(len(settings)) for seed in seeds]
        jobs = [(overrides_for(s.p, env, algo, settings[k], seed),
                 Path(s.out_dir) / "tuning" / f"{env}-{algo}-{opt}-lr{settings[k]['lr']:g}"
                 f"-s{seed}") for k, seed in keys]
        out = [[] for _ in settings]
        for (k, seed), (metrics, csv_rows) in zip(keys, s.map(train, jobs)):
            row = measure(s.p, metrics, csv_rows, has_critic(s.p, algo))
            out[k].append({"seed": seed, **row})
        return out
    return evaluate


def run(s) -> Result:
    p, out_dir = s.p, Path(s.out_dir)
    cells = [(e, a, o) for e in p.envs_used for a in p.algorithms_used for o in s.arms]
    chosen = {c: s.tune(c[2], evaluator(s, *c), {"env": c[0], "algorithm": c[1]})
              for c in cells}
    keys = [(e, a, o, seed) for e, a, o in cells for seed in s.report_seeds]
    jobs = [(overrides_for(p, e, a, chosen[(e, a, o)], seed),
             out_dir / "runs" / f"{e}-{a}-{o}-s{seed}") for e, a, o, seed in keys]
    rows = []
    for (e, a, o, seed), (metrics, csv_rows) in zip(keys, s.map(train, jobs)):
        rows.append({"kind": "run", "env": e, "algorithm": a, "optimizer": o, "seed": seed,
                     "lr": chosen[(e, a, o)]["lr"],
                     **measure(p, metrics, csv_rows, has_critic(p, a))})
    diag_rows, reference = diagnostic(s, chosen)
    rows += diag_rows
    runs = [r for r in rows if r["kind"] == "run"]
    tables = [
        Table("Training, per env, algorithm and optimizer at its tuned lr (steps_to_threshold: "
              "the budget when never reached; clip rates: fraction of updates on which the "
              "group's own norm clip fired)", runs, ["kind", "env", "algorithm", "optimizer"],
              RUN_METRICS),
        Table("Diagnostic, per snapshot of the reference run: the update direction's "
              "noise-to-signal ratio (nsr, per rollout) and noise scale (batch x nsr)",
              [r for r in rows if r["kind"] == "diagnostic"],
              ["kind", "env", "algorithm", "snapshot", "direction"], DIAG_METRICS),
        Table("Diagnostic, Adam vs SGD at each snapshot: nsr_ratio = nsr(Adam) / nsr(SGD), "
              "the gradient noise scale tr Sigma / ||G||^2, and the Spearman correlation "
              "over parameters of gradient noise variance with Adam's effective step",
              [r for r in rows if r["kind"] == "diagnostic_pair"],
              ["kind", "env", "algorithm", "snapshot"], PAIR_METRICS)]
    d = p.diagnostic
    setup = [
        f"Envs {list(p.envs_used)} (thresholds "
        + ", ".join(f"{e}: {p.envs[e].threshold}" for e in p.envs_used)
        + "); algorithms " + "; ".join(f"{a} = {list(p.algorithms[a])}"
                                        for a in p.algorithms_used)
        + f"; {p.total_timesteps} env steps per run; report seeds {s.report_seeds}; every "
        "training run is `adamlab train pipeline=rl` with logger=csv.",
        "Optimizers: " + "; ".join(f"{n} = {dict(s.arms[n]['fixed'])}" for n in s.arms)
        + ", each with its own lr grid, tuned per env and algorithm on the tuning seeds by "
        "mean_return (the mean training return over the run). Actor and critic are two "
        "parameter groups at the same lr, each clipped by its own norm at the algorithm's "
        "max_grad_norm (clip.scope=group; REINFORCE: no clip).",
        "mean_return: mean over updates of the training episodes' return; final_return: the "
        "last 20 training episodes; eval_return: greedy evaluation at the end.",
        f"Diagnostic: per report seed one reference run (the algorithm with Adam at its tuned "
        f"lr, eps 1e-5, {p.total_timesteps} env steps), snapshots at {list(d.fractions)} of "
        f"it; at each, Adam's v_hat (beta2 {d.beta2}) is rebuilt from {d.warm} rollouts at "
        f"the training batch size (the same rollouts for every optimizer), then the policy "
        f"gradient of {d.rollouts} independent rollouts of {d.num_envs} env streams each "
        "(fresh env seeds) gives u = g (SGD) and u = g / (sqrt(v_hat) + eps) (Adam). nsr = tr "
        "Cov(u) / ||E u||^2 (signal unbiased; inf where no signal is measurable); "
        "signal_fraction = ||E u||^2 / E ||u||^2 = 1 / (1 + nsr) (finite: <= 0 where no "
        "signal is measurable; the primary check's metric); "
        f"noise_scale = {d.num_envs} x nsr (batch-free). Reference runs' last-20 return: "
        + ", ".join(f"{k}: {v}" for k, v in reference.items()) + "."]
    figures = [plot_returns(runs, p, s, out_dir), plot_diagnostic(rows, p, out_dir)]
    return Result(rows, tables, figures, setup, iqm_notes(runs, p, s))


def diagnostic(s, chosen) -> tuple[list[dict], dict]:
    p, d = s.p, s.p.diagnostic
    keys = [(e, a, seed) for e in p.envs_used for a in p.algorithms_used
            for seed in s.report_seeds]
    jobs = []
    for e, a, seed in keys:
        lr = float(chosen[(e, a, "adam")]["lr"])
        jobs.append((["pipeline=rl", f"env.id={e}", *p.algorithms[a]], seed,
                     {"name": "adam", "lr": lr, "eps": float(d.eps)}, int(p.total_timesteps),
                     list(d.fractions), int(d.warm), int(d.rollouts), int(d.num_envs),
                     float(d.beta2)))
    rows, reference = [], {}
    for (e, a, seed), (measured, returns) in zip(keys, s.map(diagnose, jobs)):
        tail = returns[-20:]
        reference.setdefault(f"{e}/{a}", []).append(round(float(np.mean(tail)), 1)
                                                     if tail else None)
        for fraction, m in zip(sorted(d.fractions), measured):
            base = {"env": e, "algorithm": a, "snapshot": fraction, "seed": seed}
            for direction in ("adam", "sgd"):
                rows.append({"kind": "diagnostic", **base, "direction": direction,
                             "nsr": m[f"nsr_{direction}"],
                             "signal_fraction": m[f"signal_{direction}"],
                             "noise_scale": m["noise_scale_adam" if direction == "adam"
                                              else "noise_scale"]})
            rows.append({"kind": "diagnostic_pair", **base, "nsr_ratio": m["nsr_ratio"],
                         "grad_noise_scale": m["noise_scale"],
                         "noise_step_corr": m["noise_step_corr"]})
    return rows, reference


def iqm(values, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Interquartile mean and its 95 % percentile-bootstrap CI over runs (rliable's
    aggregate: Agarwal et al. 2021)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], float)
    if not len(x):
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    boot = [trim_mean(rng.choice(x, len(x)), 0.25) for _ in range(resamples)]
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return float(trim_mean(x, 0.25)), float(lo), float(hi)


def iqm_notes(runs, p, s) -> list[str]:
    out = []
    for e in p.envs_used:
        for a in p.algorithms_used:
            parts = []
            for o in s.arms:
                sel = [r for r in runs if (r["env"], r["algorithm"], r["optimizer"]) == (e, a, o)]
                for key in ("final_return", "eval_return"):
                    m, lo, hi = iqm([r[key] for r in sel])
                    parts.append(f"{o} {key} {m:.1f} [{lo:.1f}, {hi:.1f}]")
            out.append(f"{e}/{a}: IQM over seeds [95% bootstrap CI]: " + "; ".join(parts) + ".")
    return out


def plot_returns(runs, p, s, out_dir):
    envs, algos = list(p.envs_used), list(p.algorithms_used)
    fig, axes = plt.subplots(len(envs), len(algos), figsize=(4.5 * len(algos), 3.6 * len(envs)),
                             squeeze=False)
    grid = np.linspace(0, p.total_timesteps, 50)
    for i, e in enumerate(envs):
        for j, a in enumerate(algos):
            ax = axes[i][j]
            for o in s.arms:
                ys = [on_grid(grid, *r["_returns"]) for r in runs
                      if (r["env"], r["algorithm"], r["optimizer"]) == (e, a, o)]
                band(ax, grid, ys, o)
            ax.set(title=f"{e} / {a}", xlabel="env steps", ylabel="training episode return")
            ax.legend(fontsize=8)
    fig.suptitle("mean ± std over seeds, each optimizer at its tuned lr")
    return save(fig, out_dir / "return_curves.png")


def plot_diagnostic(rows, p, out_dir):
    """Noise scale of each direction per snapshot (median and IQR over seeds)."""
    cells = [(e, a) for e in p.envs_used for a in p.algorithms_used]
    fig, axes = plt.subplots(1, len(cells), figsize=(4.5 * len(cells), 3.6), squeeze=False)
    fractions = sorted(p.diagnostic.fractions)
    for ax, (e, a) in zip(axes[0], cells):
        for k, direction in enumerate(("sgd", "adam")):
            stats = []
            for f in fractions:
                v = np.array([r["noise_scale"] for r in rows if r["kind"] == "diagnostic"
                              and (r["env"], r["algorithm"], r["snapshot"], r["direction"])
                              == (e, a, f, direction)], float)
                v = np.where(np.isfinite(v), v, np.nan)
                stats.append(np.nanpercentile(v, [25, 50, 75]) if np.isfinite(v).any()
                             else [np.nan] * 3)
            q = np.array(stats)
            x = np.array(fractions) + (k - 0.5) * 0.02
            ax.errorbar(x, q[:, 1], yerr=[q[:, 1] - q[:, 0], q[:, 2] - q[:, 1]], fmt="o-",
                        capsize=3, label=f"{direction}: u = " + ("g" if direction == "sgd"
                                                                  else "g/(sqrt(v)+eps)"))
        if np.isfinite([r["noise_scale"] for r in rows if r["kind"] == "diagnostic"]).any():
            ax.set_yscale("log")
        ax.set(title=f"{e} / {a}", xlabel="snapshot (fraction of the reference run)",
               ylabel="noise scale of u (batch x tr Cov / ||E u||^2)")
        ax.legend(fontsize=7)
    fig.suptitle("update-direction noise at the same policies: median and IQR over seeds")
    return save(fig, out_dir / "direction_noise.png")
