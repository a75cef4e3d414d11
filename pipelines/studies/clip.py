"""clip: clip the gradient before Adam's moments (``grad``) or the update after them
(``update``), under heavy-tailed gradient noise, each arm tuned over lr x threshold and the
unclipped arm over lr.

A noisy quadratic f(w) = sum_i h_i (w_i - w*_i)^2 / 2, curvatures log-spaced in [1, h_max];
the stochastic gradient is the true one plus sigma * Student-t(df) per coordinate (infinite
variance for df <= 2). Every (setting, seed) is its own param group, so a global-norm clip
acts per run. What clipping does to the moments is measured at a fixed point with lr=0
(the moments' stationary behaviour there): the direction of Adam's step m_hat/(sqrt(v_hat)
+ eps) (after the update clip where there is one) against the true gradient, and how far
outliers inflate sqrt(v_hat) above the typical gradient size.
"""

from __future__ import annotations

import math

import numpy as np
import torch

import optim

from .engine import Result, Table
from .engine.arms import generator
from .engine.figures import plt, save
from .engine.stats import column, summarize

CLIP_KEY = {"grad": "max_norm", "update": "max_update_norm"}


class Problem:
    def __init__(self, p, seeds: list[int]):
        self.h = torch.logspace(0, math.log10(p.h_max), p.d, dtype=torch.float64)
        self.w_star = torch.stack([torch.randn(p.d, generator=generator(123 + s),
                                               dtype=torch.float64) for s in seeds])
        self.sigma, self.d, self.seeds = p.sigma, p.d, seeds

    def loss(self, w: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.h * (w - self.w_star) ** 2).sum(-1)

    def gradient(self, w: torch.Tensor) -> torch.Tensor:
        return self.h * (w - self.w_star)


def student_t(df: float, shape, rng: np.random.Generator) -> torch.Tensor:
    return torch.from_numpy(rng.standard_t(df, size=shape))


def build(placement: str, settings: list[dict], params: list[torch.Tensor]):
    """One Adam with a param group per run: its own lr and, when clipping, its own threshold
    on its own global norm (clip_scope='group')."""
    key = CLIP_KEY.get(placement)
    groups = [{"params": [w], "lr": s["lr"], **({key: s["clip"]} if key else {})}
              for w, s in zip(params, settings)]
    clip = {} if key is None else {"clip": 1.0, "clip_at": placement, "clip_scope": "group"}
    return optim.create("adam", groups, **clip)


def train(p, placement: str, settings: list[dict], df: float, seeds: list[int]):
    """Per setting, per seed: final loss (mean of the last tenth of steps; inf if it is
    non-finite or above the start) and the fraction of steps clipped."""
    prob = Problem(p, seeds)
    runs = [(si, j) for si in range(len(settings)) for j in range(len(seeds))]
    ws = [torch.zeros(p.d, dtype=torch.float64, requires_grad=True) for _ in runs]
    opt = build(placement, [settings[si] for si, _ in runs], ws)
    g = np.random.default_rng([7, int(10 * df), *seeds])
    start = prob.loss(torch.zeros_like(prob.w_star))
    tail = []
    index = torch.tensor([j for _, j in runs])
    for t in range(p.steps):
        w = torch.stack([x.detach() for x in ws])
        if t >= p.steps - p.steps // 10:
            tail.append(0.5 * (prob.h * (w - prob.w_star[index]) ** 2).sum(-1))
        noise = prob.sigma * student_t(df, (len(seeds), p.d), g)[index]
        for x, grad in zip(ws, prob.h * (w - prob.w_star[index]) + noise):
            x.grad = grad.clone()
        opt.step()
    final = torch.stack(tail).mean(0)
    ok = torch.isfinite(final) & (final < start[index])
    final = torch.where(ok, final, torch.full_like(final, math.inf))
    clipped = [st["clip_fraction"] for st in optim.telemetry(opt)]
    out = [[] for _ in settings]
    for r, (si, j) in enumerate(runs):
        out[si].append({"seed": seeds[j], "final_loss": float(final[r]),
                        "diverged": int(not bool(ok[r])),
                        "clip_fraction": clipped[r] if clipped[r] is not None else 0.0})
    return out


def moments(p, placement: str, setting: dict, df: float, seeds: list[int]) -> list[dict]:
    """At w = w* + N(0, 1/h) with lr=0, over ``moment_steps`` steps (the first tenth
    discarded): the cosine between the mean step direction and the true gradient, and the
    median over coordinates of median_t sqrt(v_hat) / median_t |g|, g the gradient the
    moments see (clipped for ``grad``): about 1.5 for Gaussian noise, larger when outliers
    inflate v."""
    prob = Problem(p, seeds)
    w0 = prob.w_star + torch.stack([torch.randn(p.d, generator=generator(s + 1),
                                                dtype=torch.float64) for s in seeds]) \
        / prob.h.sqrt()
    ws = [x.clone().requires_grad_(True) for x in w0]
    opt = build(placement, [{**setting, "lr": 0.0}] * len(seeds), ws)
    g = np.random.default_rng([11, int(10 * df), *seeds])
    true = prob.gradient(w0)
    b1, b2 = opt.param_groups[0]["betas"]
    eps = opt.param_groups[0]["eps"]
    skip = p.moment_steps // 10
    direction = torch.zeros_like(w0)
    root_v, size = [], []
    for t in range(1, p.moment_steps + 1):
        grads = true + prob.sigma * student_t(df, w0.shape, g)
        seen = grads  # what enters the moments
        if placement == "grad":
            seen = grads * torch.clamp(setting["clip"] / grads.norm(dim=-1, keepdim=True),
                                       max=1.0)
        for x, grad in zip(ws, grads):
            x.grad = grad.clone()
        opt.step()
        if t <= skip:
            continue
        m = torch.stack([opt.state[x]["exp_avg"] for x in ws]) / (1 - b1**t)
        v = torch.stack([opt.state[x]["exp_avg_sq"] for x in ws]) / (1 - b2**t)
        u = m / (v.sqrt() + eps)
        if placement == "update":
            norm = u.norm(dim=-1, keepdim=True)
            u = u * torch.clamp(setting["clip"] / norm, max=1.0)
        direction += u
        root_v.append(v.sqrt())
        size.append(seen.abs())
    cos = (direction * true).sum(-1) / (direction.norm(dim=-1) * true.norm(dim=-1))
    inflation = (torch.stack(root_v).median(0).values / torch.stack(size).median(0).values)
    inflation = inflation.median(-1).values
    return [{"seed": s, "direction_cosine": float(cos[j]), "v_inflation": float(inflation[j])}
            for j, s in enumerate(seeds)]


def run(s) -> Result:
    p = s.p
    rows, chosen = [], {}
    for df in p.dfs:
        for arm in s.arms:
            placement = s.arms[arm]["fixed"]["placement"]

            def evaluate(settings, seeds, placement=placement, df=df):
                return train(p, placement, settings, df, seeds)
            hp = s.tune(arm, evaluate, {"df": df})
            chosen[(df, arm)] = hp
            trained = train(p, placement, [hp], df, s.report_seeds)[0]
            measured = moments(p, placement, hp, df, s.report_seeds)
            for tr, mo in zip(trained, measured):
                rows.append({"df": df, "placement": placement, **tr, **mo,
                             "lr": hp["lr"], "threshold": hp.get("clip", math.inf)})
    tables = [Table("Final loss, moments and clipping at each arm's tuned lr and threshold",
                    rows, ["df", "placement", "lr", "threshold"],
                    ["final_loss", "diverged", "direction_cosine", "v_inflation",
                     "clip_fraction"])]
    figures = [plot(rows, p, s.arms, s.out_dir),
               plot_grid(s.tuning_rows, p, s.out_dir)]
    setup = [f"d={p.d}, curvatures log-spaced in [1, {p.h_max}], w* ~ N(0, 1) per seed, start "
             f"w=0; gradient noise {p.sigma} x Student-t(df), df in {list(p.dfs)}.",
             f"Adam, {p.steps} steps; arms none / grad (global-norm clip before the moments) "
             "/ update (global-norm clip of m_hat/(sqrt(v_hat)+eps) before lr), each tuned per "
             "df over lr (and the threshold where it clips) by the final loss on the tuning "
             "seeds. final_loss = mean loss over the last tenth of steps; inf (diverged) if "
             "non-finite or above the starting loss.",
             f"Moments at w* + N(0, 1/h), lr=0, {p.moment_steps} steps: direction_cosine = "
             "cos(mean step direction, true gradient); v_inflation = median_i median_t "
             "sqrt(v_hat) / median_t |g|, g the gradient the moments see (after the clip for "
             "grad).",
             "Each (setting, seed) is its own param group: the global norm is per run."]
    return Result(rows, tables, figures, setup, notes(rows))


def notes(rows) -> list[str]:
    out = []
    for (df, placement), rs in _groups(rows).items():
        frac = summarize([r["clip_fraction"] for r in rs]).mean
        if placement != "none" and frac > 0.99:
            out.append(f"df={df:g}: the tuned {placement} clip fires on {frac:.1%} of steps: "
                       "it acts on every step, no longer only on outliers.")
    return out


def _groups(rows):
    out = {}
    for r in rows:
        out.setdefault((r["df"], r["placement"]), []).append(r)
    return out


def plot(rows, p, arms, out_dir):
    metrics = [("final_loss", "final loss", True), ("direction_cosine",
               "cos(mean step direction, true gradient)", False),
               ("v_inflation", "sqrt(v_hat) / typical |g|", True)]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    placements = [arms[a]["fixed"]["placement"] for a in arms]
    width = 0.8 / len(placements)
    for ax, (metric, label, log) in zip(axes, metrics):
        for i, placement in enumerate(placements):
            st = [summarize(column(rows, metric, df=df, placement=placement)) for df in p.dfs]
            ax.bar(np.arange(len(p.dfs)) + i * width, [x.mean for x in st], width,
                   yerr=[0 if math.isnan(x.std) else x.std for x in st], capsize=3,
                   label=placement)
        ax.set_xticks(np.arange(len(p.dfs)) + 0.4 - width / 2, [f"df={d:g}" for d in p.dfs])
        if log:
            ax.set_yscale("log")
        ax.set(ylabel=label, title=f"{label} (tuned arms)")
        ax.legend(fontsize=8)
    return save(fig, out_dir / "clip_arms.png")


def plot_grid(tuning_rows, p, out_dir):
    """Mean tuning loss over lr x threshold for each clipping arm at the heaviest tail."""
    df = min(p.dfs)
    arms = [a for a in dict.fromkeys(r["arm"] for r in tuning_rows)
            if any("tune_clip" in r for r in tuning_rows if r["arm"] == a)]
    fig, axes = plt.subplots(1, max(1, len(arms)), figsize=(5.5 * max(1, len(arms)), 4.2),
                             squeeze=False)
    for ax, arm in zip(axes[0], arms):
        rs = [r for r in tuning_rows if r["arm"] == arm and r["df"] == df]
        lrs = sorted({r["tune_lr"] for r in rs})
        clips = sorted({r["tune_clip"] for r in rs})
        grid = np.full((len(clips), len(lrs)), np.nan)
        for i, c in enumerate(clips):
            for j, lr in enumerate(lrs):
                v = [r["final_loss"] for r in rs if r["tune_lr"] == lr and r["tune_clip"] == c]
                if v:
                    grid[i, j] = np.log10(np.mean(v)) if np.all(np.isfinite(v)) else np.nan
        im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis_r")
        ax.set_xticks(range(len(lrs)), [f"{x:.2g}" for x in lrs], fontsize=7)
        ax.set_yticks(range(len(clips)), [f"{x:.2g}" for x in clips], fontsize=7)
        ax.set(xlabel="lr", ylabel="clip threshold", title=f"{arm}: log10 final loss, df={df:g}"
               " (tuning seeds)")
        fig.colorbar(im, ax=ax)
    return save(fig, out_dir / "lr_threshold_grid.png")
