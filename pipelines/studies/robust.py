"""robust: outlier contamination, {MSE, Huber} x {SGD, Adam}: redundant or synergistic?

(a) Linear regression y = X w* + noise; a fraction rho of the rows is replaced by outliers
    y = slope * (X w*) + N(0, outlier_noise^2), which pull the least-squares fit away from
    w*. Error: |w - w*| / |w*|.
(b) A non-convex model where the optimization path matters: a one-hidden-layer tanh
    network fit to a teacher of the same form (y = a' tanh(W x) + noise), the same
    outliers, from a seeded random initialisation. Error: the student's mean squared
    distance to the teacher's clean function on fresh inputs, over that function's
    variance.
Minibatch training; every (setting, seed) its own param group. lr is tuned per (loss,
optimizer) on clean data (rho=0) on the tuning seeds, as a user defending against unknown
contamination would.

Interaction on log errors, paired by seed: I = log E(huber, adam) - log E(huber, sgd)
- log E(mse, adam) + log E(mse, sgd). I < 0: together better than the product of the
separate gains (synergy); I > 0: sub-multiplicative (redundant).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .engine import Result, Table
from .engine.arms import describe, generator, grouped_optimizer
from .engine.figures import plt, save
from .engine.stats import column, summarize

LOSSES = ("mse", "huber")


def outliers(p, y_clean: torch.Tensor, rho: float, g: torch.Generator) -> torch.Tensor:
    y = y_clean.clone()
    bad = torch.randperm(len(y), generator=g)[: int(rho * len(y))]
    y[bad] = p.outlier.slope * y_clean[bad] + p.outlier.noise * torch.randn(
        len(bad), generator=g, dtype=torch.float64)
    return y


def linear_data(p, rho: float, seed: int):
    """X (n, d), y (n,), w*: the same clean design for every rho."""
    g = generator(seed)
    x = torch.randn(p.n, p.d, generator=g, dtype=torch.float64)
    w = torch.randn(p.d, generator=g, dtype=torch.float64)
    y = x @ w + p.noise * torch.randn(p.n, generator=g, dtype=torch.float64)
    return x, outliers(p, y, rho, g), w


def teacher(p, seed: int):
    g = generator(90_000 + seed)
    h, d = p.net.teacher_hidden, p.d
    return (torch.randn(h, d, generator=g, dtype=torch.float64) / math.sqrt(d),
            torch.randn(h, generator=g, dtype=torch.float64))


def net_data(p, rho: float, seed: int):
    g = generator(seed)
    x = torch.randn(p.n, p.d, generator=g, dtype=torch.float64)
    w, a = teacher(p, seed)
    y = torch.tanh(x @ w.T) @ a + p.noise * torch.randn(p.n, generator=g, dtype=torch.float64)
    return x, outliers(p, y, rho, g), (w, a)


def psi(loss: str, r: torch.Tensor, delta: float) -> torch.Tensor:
    """d loss / d residual: r (MSE/2) or r clipped at delta (Huber)."""
    return r if loss == "mse" else r.clamp(-delta, delta)


def fit(p, model: str, loss: str, settings: list[dict], rho: float, seeds: list[int]):
    """Per setting, per seed: the error averaged over the last tenth of the run and the first
    evaluation within 10% of the way from the start to it (steps_to_converge)."""
    make = linear_data if model == "linear" else net_data
    data = [make(p, rho, s) for s in seeds]
    runs = [(si, j) for si in range(len(settings)) for j in range(len(seeds))]
    x = torch.stack([data[j][0] for _, j in runs])
    y = torch.stack([data[j][1] for _, j in runs])
    if model == "linear":
        params = [[torch.zeros(p.d, dtype=torch.float64, requires_grad=True)] for _ in runs]
    else:
        params = []
        for _, j in runs:  # the same initialisation for every setting of one seed
            g = generator(80_000 + seeds[j])
            h = p.net.student_hidden
            params.append([(torch.randn(h, p.d, generator=g, dtype=torch.float64)
                            / math.sqrt(p.d)).requires_grad_(True),
                           (torch.randn(h, generator=g, dtype=torch.float64)
                            / math.sqrt(h)).requires_grad_(True)])
    opt = grouped_optimizer([settings[si] for si, _ in runs], params)
    fresh = torch.randn(p.net.eval_points, p.d, generator=generator(7), dtype=torch.float64)
    targets = None
    if model == "net":
        targets = torch.stack([torch.tanh(fresh @ data[j][2][0].T) @ data[j][2][1]
                               for _, j in runs])
    g = generator(99)
    errors = []

    def error():
        if model == "linear":
            w = torch.stack([q[0].detach() for q in params])
            w_star = torch.stack([data[j][2] for _, j in runs])
            return ((w - w_star).norm(dim=1) / w_star.norm(dim=1)).numpy()
        with torch.no_grad():
            pred = torch.stack([torch.tanh(fresh @ q[0].T) @ q[1] for q in params])
        return (((pred - targets) ** 2).mean(1) / targets.var(1)).numpy()

    for t in range(p.steps + 1):
        if t % p.eval_every == 0:
            errors.append(error())
        if t == p.steps:
            break
        idx = torch.randint(0, p.n, (len(runs), p.batch_size), generator=g)
        xb = torch.gather(x, 1, idx[..., None].expand(-1, -1, p.d))
        yb = torch.gather(y, 1, idx)
        if model == "linear":
            w = torch.stack([q[0].detach() for q in params])
            r = torch.einsum("sbd,sd->sb", xb, w) - yb
            for q, grad in zip(params, torch.einsum("sb,sbd->sd", psi(loss, r, p.huber_delta),
                                                    xb) / p.batch_size):
                q[0].grad = grad
        else:
            for q, xr, yr in zip(params, xb, yb):
                hidden = torch.tanh(xr @ q[0].detach().T)
                r = hidden @ q[1].detach() - yr
                gr = psi(loss, r, p.huber_delta) / p.batch_size
                q[1].grad = hidden.T @ gr
                q[0].grad = ((gr[:, None] * q[1].detach()) * (1 - hidden**2)).T @ xr
        opt.step()
    errors = np.stack(errors, 1)
    final, steps = summary(errors, p.eval_every)
    out = [[] for _ in settings]
    for r, (si, j) in enumerate(runs):
        ok = np.isfinite(final[r])
        out[si].append({"seed": seeds[j], "error": float(final[r]) if ok else math.inf,
                        "steps_to_converge": int(steps[r])})
    return out


def summary(errors: np.ndarray, every: int) -> tuple[np.ndarray, np.ndarray]:
    """Per run: error averaged over the last tenth of the run, and the first evaluation
    step that has covered 90% of the way from the starting error to it."""
    final = errors[:, -max(1, errors.shape[1] // 10):].mean(1)
    within = np.abs(errors - final[:, None]) <= 0.1 * np.abs(errors[:, :1] - final[:, None])
    return final, within.argmax(1) * every


def run(s) -> Result:
    p = s.p
    rows = []
    for model in p.models:
        for loss in LOSSES:
            for arm in s.arms:
                def evaluate(settings, seeds, model=model, loss=loss):
                    return fit(p, model, loss, settings, 0.0, seeds)
                hp = s.tune(arm, evaluate, {"model": model, "loss": loss})
                for rho in p.contamination:
                    rows += [{"part": "runs", "model": model, "contamination": rho,
                              "loss": loss, "optimizer": arm, "lr": hp["lr"], **r}
                             for r in fit(p, model, loss, [hp], rho, s.report_seeds)[0]]
    inter = interactions(rows, p, s.report_seeds)
    tables = [Table("(a, b) Error and steps to converge, lr tuned on clean data",
                    rows, ["part", "model", "contamination", "loss", "optimizer", "lr"],
                    ["error", "steps_to_converge"]),
              Table("Gains (log error ratios, > 0 helps) and interaction (< 0: synergy)",
                    inter, ["part", "model", "contamination"],
                    ["huber_gain_sgd", "huber_gain_adam", "adam_gain_mse", "adam_gain_huber",
                     "interaction"])]
    figures = [plot(rows, p, s.arms, s.out_dir)]
    setup = [f"n={p.n}, d={p.d}, x ~ N(0, 1), noise std {p.noise}; a fraction rho in "
             f"{list(p.contamination)} of the labels replaced by {p.outlier.slope} * clean "
             f"label + N(0, {p.outlier.noise}^2).",
             f"(a) linear, w* ~ N(0, 1), from w=0. (b) teacher a' tanh(W x) with "
             f"{p.net.teacher_hidden} hidden units (W ~ N(0, 1/d), a ~ N(0, 1)), student with "
             f"{p.net.student_hidden}, seeded initialisation shared by every arm; error on "
             f"{p.net.eval_points} fresh inputs relative to the teacher's variance.",
             f"Losses: MSE and Huber (delta={p.huber_delta}); arms "
             + "; ".join(f"{n} = {describe(s.arms[n]['fixed'])}" for n in s.arms)
             + "; lr tuned on rho=0 per (model, loss, optimizer) on the tuning seeds by the "
             "final error.",
             f"Batch {p.batch_size}, {p.steps} steps. error is averaged over the last tenth of "
             "the run; steps_to_converge = first evaluation (every "
             f"{p.eval_every} steps) 90% of the way from the starting error to it."]
    return Result(rows + inter, tables, figures, setup, notes(rows, p))


def interactions(rows, p, seeds) -> list[dict]:
    out = []
    for model in p.models:
        for rho in p.contamination:
            if rho == 0:
                continue
            for seed in seeds:
                e = {(r["loss"], r["optimizer"]): math.log(r["error"]) for r in rows
                     if r["model"] == model and r["contamination"] == rho and r["seed"] == seed}
                out.append({"part": "interaction", "model": model, "contamination": rho,
                            "seed": seed,
                            "huber_gain_sgd": e[("mse", "sgd")] - e[("huber", "sgd")],
                            "huber_gain_adam": e[("mse", "adam")] - e[("huber", "adam")],
                            "adam_gain_mse": e[("mse", "sgd")] - e[("mse", "adam")],
                            "adam_gain_huber": e[("huber", "sgd")] - e[("huber", "adam")],
                            "interaction": e[("huber", "adam")] - e[("huber", "sgd")]
                            - e[("mse", "adam")] + e[("mse", "sgd")]})
    return out


def notes(rows, p) -> list[str]:
    rho = max(p.contamination)
    out = []
    for model in p.models:
        for loss in LOSSES:
            steps = {n: summarize(column(rows, "steps_to_converge", model=model,
                                         contamination=rho, loss=loss, optimizer=n)).mean
                     for n in ("sgd", "adam")}
            out.append(f"{model}, rho={rho:g}, {loss}: steps to converge " + ", ".join(
                f"{n} {v:.4g}" for n, v in steps.items()) + ".")
    return out


def plot(rows, p, arms, out_dir):
    fig, axes = plt.subplots(1, len(p.models), figsize=(5.5 * len(p.models), 4.2),
                             squeeze=False)
    rhos = list(p.contamination)
    for ax, model in zip(axes[0], p.models):
        for loss, style in (("mse", "-"), ("huber", "--")):
            for name in arms:
                st = [summarize(column(rows, "error", model=model, contamination=r, loss=loss,
                                       optimizer=name)) for r in rhos]
                ax.errorbar(rhos, [x.mean for x in st], yerr=[x.std for x in st], ls=style,
                            marker="o", capsize=3, label=f"{loss} + {name}")
        ax.set_yscale("log")
        ax.set(xlabel="outlier fraction rho", ylabel="error (see setup)",
               title=f"{model}: error vs contamination (lr tuned on clean data)")
        ax.legend(fontsize=8)
    return save(fig, out_dir / "robust.png")
