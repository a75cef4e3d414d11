"""robust: outlier contamination, {MSE, Huber} x {SGD, Adam}: redundant or synergistic?

Linear regression y = X w* + noise; a fraction rho of the rows is replaced by outliers
y = slope * (X w*) + N(0, outlier_noise^2), which pull the least-squares fit away from w*.
Minibatch training from w=0; each seed is a row of one batched parameter (both optimizers
act elementwise). lr is tuned per (loss, optimizer) on clean data (rho=0), as a user
defending against unknown contamination would.

Interaction on log errors, paired by seed: I = log E(huber, adam) - log E(huber, sgd)
- log E(mse, adam) + log E(mse, sgd). I < 0: together better than the product of the
separate gains (synergy); I > 0: sub-multiplicative (redundant).
"""

from __future__ import annotations

import numpy as np
import torch

from .common import describe, generator, make_optimizer
from .figures import plt, save
from .report import Check, Outcome, Table
from .stats import column, less, summarize

CLAIM = ("Huber loss and Adam are synergistic defences against outliers: each lowers the "
         "parameter error under contamination, and together they lower it by more than the "
         "product of their separate gains.")
LOSSES = ("mse", "huber")


def data(p, rho: float, seeds: int):
    """X (S, n, d), y (S, n), w* (S, d); the same clean design for every rho."""
    xs, ys, ws = [], [], []
    for s in range(seeds):
        g = generator(s)
        x = torch.randn(p.n, p.d, generator=g, dtype=torch.float64)
        w = torch.randn(p.d, generator=g, dtype=torch.float64)
        y = x @ w + p.noise * torch.randn(p.n, generator=g, dtype=torch.float64)
        bad = torch.randperm(p.n, generator=g)[: int(rho * p.n)]
        y[bad] = p.outlier.slope * (x[bad] @ w) + p.outlier.noise * torch.randn(
            len(bad), generator=g, dtype=torch.float64)
        xs.append(x), ys.append(y), ws.append(w)
    return torch.stack(xs), torch.stack(ys), torch.stack(ws)


def fit(p, loss: str, spec, lr: float, x, y, w_star):
    """Relative parameter error |w - w*| / |w*| per seed, every ``eval_every`` steps."""
    seeds = len(w_star)
    w = torch.zeros(seeds, p.d, dtype=torch.float64, requires_grad=True)
    opt = make_optimizer(spec, [w], lr=lr)
    g = generator(99)
    errors = []
    for t in range(p.steps + 1):
        if t % p.eval_every == 0:
            errors.append(((w.detach() - w_star).norm(dim=1) / w_star.norm(dim=1)).numpy())
        if t == p.steps:
            break
        idx = torch.randint(0, p.n, (seeds, p.batch_size), generator=g)
        xb = torch.gather(x, 1, idx[..., None].expand(-1, -1, p.d))
        r = torch.einsum("sbd,sd->sb", xb, w.detach()) - torch.gather(y, 1, idx)
        psi = r if loss == "mse" else r.clamp(-p.huber_delta, p.huber_delta)
        w.grad = torch.einsum("sb,sbd->sd", psi, xb) / p.batch_size
        opt.step()
    return np.stack(errors, 1)


def summary(errors: np.ndarray, every: int) -> tuple[np.ndarray, np.ndarray]:
    """Per seed: error averaged over the last tenth of the run, and the first evaluation
    step that has covered 90% of the way from the starting error to it."""
    final = errors[:, -max(1, errors.shape[1] // 10):].mean(1)
    within = np.abs(errors - final[:, None]) <= 0.1 * np.abs(errors[:, :1] - final[:, None])
    return final, within.argmax(1) * every


def run(p, out_dir) -> Outcome:
    rows = []
    for rho in p.contamination:
        x, y, w_star = data(p, rho, p.seeds)
        for loss in LOSSES:
            for name, spec in p.optimizers.items():
                for lr in spec.lrs:
                    final, steps = summary(fit(p, loss, spec.optim, lr, x, y, w_star),
                                           p.eval_every)
                    rows += [{"part": "a_runs", "contamination": rho, "loss": loss,
                              "optimizer": name, "lr": lr, "seed": s,
                              "param_error": float(final[s]),
                              "steps_to_converge": int(steps[s])} for s in range(p.seeds)]
    best = {(loss, name): min(spec.lrs, key=lambda lr, loss=loss, name=name: summarize(
        column(rows, "param_error", contamination=0.0, loss=loss, optimizer=name, lr=lr)).mean)
        for loss in LOSSES for name, spec in p.optimizers.items()}
    tuned = [r for r in rows if best[(r["loss"], r["optimizer"])] == r["lr"]]
    inter = interactions(tuned, p)
    rows += inter
    tables = [Table("(a) Parameter error and steps to converge, lr tuned on clean data", tuned,
                    ["part", "contamination", "loss", "optimizer", "lr"],
                    ["param_error", "steps_to_converge"]),
              Table("(b) Gains (log error ratios, > 0 helps) and interaction (< 0: synergy)",
                    inter, ["part", "contamination"],
                    ["huber_gain_sgd", "huber_gain_adam", "adam_gain_mse", "adam_gain_huber",
                     "interaction"])]
    figures = [plot(tuned, p, out_dir)]
    setup = [f"n={p.n}, d={p.d}, X ~ N(0, 1), w* ~ N(0, 1), noise std {p.noise}; a fraction "
             f"rho in {list(p.contamination)} of the rows replaced by y = "
             f"{p.outlier.slope} * x.w* + N(0, {p.outlier.noise}^2).",
             f"Losses: MSE and Huber (delta={p.huber_delta}); optimizers "
             + "; ".join(f"{n} = {describe(s.optim)}, lr in {list(s.lrs)}"
                         for n, s in p.optimizers.items())
             + "; lr tuned on rho=0 per (loss, optimizer): "
             + ", ".join(f"{loss} + {name} {lr:g}" for (loss, name), lr in best.items()) + ".",
             f"Batch {p.batch_size}, {p.steps} steps from w=0. param_error = |w - w*| / |w*| "
             "averaged over the last tenth of the run; steps_to_converge = first evaluation "
             f"(every {p.eval_every} steps) 90% of the way from the starting error to it. "
             f"{p.seeds} seeds."]
    return Outcome(rows, tables, figures, checks(tuned, inter, p), setup, notes(tuned, p))


def interactions(tuned, p) -> list[dict]:
    out = []
    for rho in p.contamination:
        if rho == 0:
            continue
        for s in range(p.seeds):
            e = {(r["loss"], r["optimizer"]): np.log(r["param_error"]) for r in tuned
                 if r["contamination"] == rho and r["seed"] == s}
            out.append({"part": "b_interaction", "contamination": rho, "seed": s,
                        "huber_gain_sgd": e[("mse", "sgd")] - e[("huber", "sgd")],
                        "huber_gain_adam": e[("mse", "adam")] - e[("huber", "adam")],
                        "adam_gain_mse": e[("mse", "sgd")] - e[("mse", "adam")],
                        "adam_gain_huber": e[("huber", "sgd")] - e[("huber", "adam")],
                        "interaction": e[("huber", "adam")] - e[("huber", "sgd")]
                        - e[("mse", "adam")] + e[("mse", "sgd")]})
    return out


def checks(tuned, inter, p) -> list[Check]:
    rho = max(p.contamination)

    def err(loss, name):
        return column(tuned, "param_error", contamination=rho, loss=loss, optimizer=name)

    def mean(loss, name):
        return summarize(err(loss, name)).mean

    i = summarize(column(inter, "interaction", contamination=rho))
    synergy = True if i.ci_hi < 0 else (False if i.ci_lo > 0 else None)
    return [
        Check(f"Huber lowers the parameter error under SGD (rho={rho:g})",
              less(err("huber", "sgd"), err("mse", "sgd")),
              f"SGD: Huber {mean('huber', 'sgd'):.3g} vs MSE {mean('mse', 'sgd'):.3g}"),
        Check(f"Adam lowers the parameter error under MSE (rho={rho:g})",
              less(err("mse", "adam"), err("mse", "sgd")),
              f"MSE: Adam {mean('mse', 'adam'):.3g} vs SGD {mean('mse', 'sgd'):.3g}"),
        Check(f"Huber and Adam are synergistic (rho={rho:g})", synergy,
              f"interaction {i.mean:.3g}, 95% CI [{i.ci_lo:.3g}, {i.ci_hi:.3g}] "
              f"(Huber + Adam {mean('huber', 'adam'):.3g})"),
    ]


def notes(tuned, p) -> list[str]:
    rho = max(p.contamination)
    out = []
    for loss in LOSSES:
        steps = {n: summarize(column(tuned, "steps_to_converge", contamination=rho, loss=loss,
                                     optimizer=n)).mean for n in p.optimizers}
        out.append(f"rho={rho:g}, {loss}: steps to converge " + ", ".join(
            f"{n} {v:.4g}" for n, v in steps.items()) + ".")
    return out


def plot(tuned, p, out_dir):
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    rhos = list(p.contamination)
    for loss, style in (("mse", "-"), ("huber", "--")):
        for name in p.optimizers:
            for axis, metric in ((ax, "param_error"), (bx, "steps_to_converge")):
                s = [summarize(column(tuned, metric, contamination=r, loss=loss,
                                      optimizer=name)) for r in rhos]
                axis.errorbar(rhos, [x.mean for x in s], yerr=[x.std for x in s], ls=style,
                              marker="o", capsize=3, label=f"{loss} + {name}")
    ax.set_yscale("log")
    ax.set(xlabel="outlier fraction rho", ylabel="|w - w*| / |w*|", title="parameter error")
    bx.set(xlabel="outlier fraction rho", ylabel="steps", title="steps to converge")
    ax.legend(fontsize=8)
    return save(fig, out_dir / "robust.png")
