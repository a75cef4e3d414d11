"""clip: clip the gradient before Adam's moments (clip_at="grad") or clip the update after
them (clip_at="update"), under heavy-tailed gradient noise.

Regression as a noisy quadratic: f(w) = sum_i h_i (w_i - w*_i)^2 / 2 with curvatures h
log-spaced in [1, h_max], stochastic gradient = true gradient + sigma * Student-t(df) per
coordinate (infinite variance for df <= 2). Each seed is its own param group, so global-norm
clipping is per run. The first-moment bias is measured with lr=0 at a fixed point: m is
averaged over many steps and compared with the true gradient there.
"""

from __future__ import annotations

import math

import torch
from scipy import stats

import optim

from .common import generator
from .figures import plt, save
from .report import Check, Outcome, Table
from .stats import column, group, less, summarize

CLAIM = ("Under heavy-tailed gradient noise, clipping the gradient before Adam's moments "
         "gives a lower final loss than clipping the update (each at its best threshold) and "
         "than no clipping, at the price of a biased first moment m; clipping the update "
         "leaves m unbiased.")
PLACEMENTS = ("none", "grad", "update")


class Problem:
    def __init__(self, p, seeds: int):
        self.h = torch.logspace(0, math.log10(p.h_max), p.d, dtype=torch.float64)
        g = generator(123)
        self.w_star = torch.randn(seeds, p.d, generator=g, dtype=torch.float64)
        self.sigma, self.d = p.sigma, p.d

    def loss(self, w: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.h * (w - self.w_star) ** 2).sum(-1)

    def gradient(self, w: torch.Tensor) -> torch.Tensor:
        return self.h * (w - self.w_star)

    def noisy(self, w: torch.Tensor, noise: StudentT, g: torch.Generator) -> torch.Tensor:
        u = torch.rand(w.shape, generator=g, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
        return self.gradient(w) + self.sigma * noise.icdf(u)


class StudentT:
    """Student-t samples by inverse CDF, so one seeded torch generator drives them."""

    def __init__(self, df: float):
        self.dist = stats.t(df)

    def icdf(self, u: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.dist.ppf(u.numpy()))


def optimizer(placement: str, params: list, threshold: float, lr: float):
    clip = {} if placement == "none" else {"clip": threshold, "clip_at": placement}
    return optim.create("adam", [{"params": [w]} for w in params], lr=lr, **clip)


def train(prob: Problem, placement: str, threshold: float, df: float, p, seed: int):
    """Final loss (mean over the last tenth of steps) per seed, and the clip fraction."""
    ws = [torch.zeros(prob.d, dtype=torch.float64, requires_grad=True)
          for _ in range(len(prob.w_star))]
    opt = optimizer(placement, ws, threshold, p.lr)
    g, noise = generator(seed), StudentT(df)
    start = prob.loss(torch.zeros_like(prob.w_star))
    tail = []
    for t in range(p.steps):
        w = torch.stack([x.detach() for x in ws])
        if t >= p.steps - p.steps // 10:
            tail.append(prob.loss(w))
        for x, grad in zip(ws, prob.noisy(w, noise, g)):
            x.grad = grad.clone()
        opt.step()
    final = torch.stack(tail).mean(0)
    clipped = [s["clip_fraction"] for s in optim.telemetry(opt)]
    return final, ~(torch.isfinite(final) & (final < start)), clipped


def moment_bias(prob: Problem, placement: str, threshold: float, df: float, p, seed: int):
    """Signed relative bias of m along the true gradient at a fixed w (lr=0):
    <mean_t m_t, grad f> / |grad f|^2 - 1, per seed."""
    w0 = prob.w_star + torch.randn(prob.w_star.shape, generator=generator(seed + 1),
                                   dtype=torch.float64) / prob.h.sqrt()
    ws = [x.clone().requires_grad_(True) for x in w0]
    opt = optimizer(placement, ws, threshold, 0.0)
    g, noise = generator(seed), StudentT(df)
    true = prob.gradient(w0)
    total = torch.zeros_like(w0)
    for t in range(p.bias_steps):
        for x, grad in zip(ws, prob.noisy(w0, noise, g)):
            x.grad = grad.clone()
        opt.step()
        if t >= p.bias_steps // 10:
            total += torch.stack([opt.state[x]["exp_avg"] for x in ws])
    mean_m = total / (p.bias_steps - p.bias_steps // 10)
    return (mean_m * true).sum(-1) / (true * true).sum(-1) - 1


def run(p, out_dir) -> Outcome:
    prob = Problem(p, p.seeds)
    rows = []
    for df in p.dfs:
        for placement in PLACEMENTS:
            for threshold in ([math.inf] if placement == "none" else p.thresholds):
                final, diverged, clipped = train(prob, placement, threshold, df, p, seed=7)
                bias = moment_bias(prob, placement, threshold, df, p, seed=11)
                for s in range(p.seeds):
                    rows.append({"df": df, "placement": placement, "threshold": threshold,
                                 "seed": s, "final_loss": float(final[s]),
                                 "diverged": int(diverged[s]), "m_bias": float(bias[s]),
                                 "clip_fraction": clipped[s]})
    table = Table("Final loss, divergence and first-moment bias", rows,
                  ["df", "placement", "threshold"],
                  ["final_loss", "diverged", "m_bias", "clip_fraction"])
    figures = [plot(rows, p, "final_loss", "final loss (mean of the last 10% of steps)",
                    True, out_dir / "final_loss.png"),
               plot(rows, p, "m_bias", "relative bias of m along the true gradient", False,
                    out_dir / "moment_bias.png")]
    setup = [f"d={p.d}, curvatures log-spaced in [1, {p.h_max}], w* ~ N(0, 1) per seed, start "
             f"w=0; noise {p.sigma} x Student-t(df), df in {list(p.dfs)}.",
             f"Adam lr={p.lr}, {p.steps} steps; global-norm clipping at thresholds "
             f"{list(p.thresholds)} before the moments (grad) or on the update direction "
             "before lr (update); threshold inf = no clipping. diverged: final loss "
             "non-finite or above the starting loss.",
             f"m_bias: Adam at lr=0 at a fixed point w* + N(0, 1/h) for {p.bias_steps} steps, "
             "<mean m, grad f> / |grad f|^2 - 1 (0 = unbiased, -0.5 = half the true gradient).",
             f"{p.seeds} seeds (w* and noise), one param group each."]
    return Outcome(rows, [table], figures, checks(rows, p), setup, notes(rows, p))


def notes(rows, p) -> list[str]:
    """Where clipping fires on (nearly) every step it is no longer an outlier guard."""
    meaning = {"grad": "the moments then see gradients of one fixed norm, and Adam's scale "
                       "invariance makes these thresholds equivalent",
               "update": "every step is then bounded at threshold * lr: in effect a smaller lr"}
    out = []
    for placement, why in meaning.items():
        groups = group([r for r in rows if r["placement"] == placement], ["df", "threshold"])
        always = [f"{df:g}/{c:g}" for (df, c), rs in groups.items()
                  if summarize([r["clip_fraction"] for r in rs]).mean > 0.99]
        if always:
            out.append(f"clip at {placement} fires on > 99% of steps at df/threshold "
                       f"{', '.join(always)}: {why}.")
    return out


def checks(rows, p) -> list[Check]:
    def col(metric, **where):
        return column(rows, metric, **where)

    def best(df, placement):
        return min(p.thresholds, key=lambda c: summarize(
            col("final_loss", df=df, placement=placement, threshold=c)).mean)

    out = []
    for df in p.dfs:
        bg, bu = best(df, "grad"), best(df, "update")
        grad = col("final_loss", df=df, placement="grad", threshold=bg)
        update = col("final_loss", df=df, placement="update", threshold=bu)
        none = col("final_loss", df=df, placement="none")
        outcome = less(grad, update)
        if outcome is True:
            outcome = less(grad, none)
        out.append(Check(f"df={df:g}: clipping before the moments gives the lowest final loss",
                         outcome,
                         f"best grad-clip {summarize(grad).mean:.4g} (threshold {bg:g}), best "
                         f"update-clip {summarize(update).mean:.4g} (threshold {bu:g}), none "
                         f"{summarize(none).mean:.4g}"))
    tight, df = min(p.thresholds), min(p.dfs)
    grad_bias = col("m_bias", df=df, placement="grad", threshold=tight)
    update_bias = summarize(col("m_bias", df=df, placement="update", threshold=tight))
    unbiased = update_bias.ci_lo <= 0 <= update_bias.ci_hi or abs(update_bias.mean) < 0.1
    out.append(Check("Clipping before the moments biases m; clipping the update does not",
                     less(grad_bias, col("m_bias", df=df, placement="update", threshold=tight))
                     is True and unbiased,
                     f"df={df:g}, threshold {tight:g}: relative bias of m "
                     f"{summarize(grad_bias).mean:.3g} (grad) vs {update_bias.mean:.3g} "
                     f"(update; 95% CI [{update_bias.ci_lo:.3g}, {update_bias.ci_hi:.3g}])"))
    return out


def plot(rows, p, metric: str, label: str, log: bool, path):
    fig, axes = plt.subplots(1, len(p.dfs), figsize=(5 * len(p.dfs), 4), squeeze=False,
                             sharey=True)
    for ax, df in zip(axes[0], p.dfs):
        for placement in ("grad", "update"):
            s = [summarize(column(rows, metric, df=df, placement=placement, threshold=c))
                 for c in p.thresholds]
            ax.errorbar(list(p.thresholds), [x.mean for x in s], yerr=[x.std for x in s],
                        marker="o", capsize=3, label=f"clip {placement}")
        none = summarize(column(rows, metric, df=df, placement="none"))
        ax.axhline(none.mean, color="gray", ls="--", label="no clipping")
        ax.axhspan(none.mean - none.std, none.mean + none.std, color="gray", alpha=0.15)
        ax.set_xscale("log")
        if log:
            ax.set_yscale("log")
        ax.set(xlabel="clip threshold (global norm)", title=f"Student-t noise, df={df:g}")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel(label)
    return save(fig, path)

