"""sparse: rare large gradients and the effective step lr / (sqrt(v_hat) + eps).

Two gradient streams are fed straight into ``p.grad`` (the loss would only add coupling):

- stream: frequent coordinates see N(0, g^2) every step; rare ones see +-G with
  probability ``rare_prob`` and 0 otherwise (a rare feature with a large gradient);
- impulse: every coordinate sees N(0, g^2); at step ``spike_at`` the coordinates get one
  gradient of +-G. The effective step falls, and recovers to half its pre-spike value
  after ``recovery_steps``; Adam predicts ln((1-b2) G^2 / (3 g^2)) / -ln(b2) steps.
- learning: linear regression whose ``rare`` features are small (std ``x_small``) on most
  samples and +-G on a fraction ``rare_prob`` of them; how well each optimizer, at its own
  tuned lr, has learned the rare features' weights after ``learn_steps`` steps.
"""

from __future__ import annotations

import math

import numpy as np
import torch

import optim

from .engine import Result, Table
from .engine.arms import describe, generator, grouped_optimizer, make_optimizer
from .engine.figures import plt, save


def _effective(opt, param) -> torch.Tensor:
    return optim.effective_step(opt, param).detach()


def stream(spec, p, seed: int):
    """Median effective step of frequent and rare coordinates, recorded every few steps."""
    g = generator(seed)
    n = p.frequent + p.rare
    w = torch.zeros(n, requires_grad=True)
    opt = make_optimizer(spec, [w], lr=p.lr)
    every = max(1, p.stream_steps // p.evaluations)
    times, freq, rare = [], [], []
    for t in range(1, p.stream_steps + 1):
        grad = torch.empty(n)
        grad[: p.frequent] = p.g * torch.randn(p.frequent, generator=g)
        hits = torch.rand(p.rare, generator=g) < p.rare_prob
        signs = torch.randint(0, 2, (p.rare,), generator=g) * 2 - 1
        grad[p.frequent:] = torch.where(hits, p.G * signs, 0.0)
        w.grad = grad
        opt.step()
        if t % every == 0:
            eff = _effective(opt, w)
            times.append(t)
            freq.append(eff[: p.frequent].median().item())
            rare.append(eff[p.frequent:].median().item())
    return np.array(times), np.array(freq), np.array(rare)


def impulse(spec, p, seed: int):
    """Median effective step at every step, relative to its value just before the spike."""
    g = generator(seed)
    w = torch.zeros(p.frequent, requires_grad=True)
    opt = make_optimizer(spec, [w], lr=p.lr)
    trace = []
    for t in range(1, p.spike_at + p.horizon + 1):
        grad = p.g * torch.randn(p.frequent, generator=g)
        if t == p.spike_at:
            grad = p.G * (torch.randint(0, 2, (p.frequent,), generator=g) * 2 - 1.0)
        w.grad = grad
        opt.step()
        trace.append(_effective(opt, w).median().item())
    trace = np.array(trace)
    return trace[p.spike_at - 1:] / trace[p.spike_at - 2]  # index 0: the spike's own step


def predicted_recovery(p, beta2: float) -> float:
    """Adam: v = g^2 + (1-b2) G^2 b2^t falls to 4 g^2 (effective step at half) when
    t = ln((1-b2) G^2 / (3 g^2)) / -ln(b2)."""
    return math.log((1 - beta2) * p.G**2 / (3 * p.g**2)) / -math.log(beta2)


def learn(p, settings: list[dict], seeds: list[int]) -> list[list[dict]]:
    """Per setting and seed: relative error of the rare and the frequent weights after
    ``learn_steps`` minibatch steps of y = x.w* + noise (the final squared loss on fresh
    samples as the tuning score; inf if it diverged)."""
    d = p.frequent + p.rare
    runs = [(si, j) for si in range(len(settings)) for j in range(len(seeds))]
    w_star = torch.stack([torch.randn(d, generator=generator(50_000 + s)) for s in seeds])
    ws = [torch.zeros(d, requires_grad=True) for _ in runs]
    opt = grouped_optimizer([settings[si] for si, _ in runs], ws)
    index = torch.tensor([j for _, j in runs])
    g = generator(60_000 + seeds[0])

    def batch(n):
        x = torch.randn(len(seeds), n, d, generator=g)
        x[..., p.frequent:] *= p.x_small
        hit = torch.rand(len(seeds), n, p.rare, generator=g) < p.rare_prob
        sign = torch.randint(0, 2, hit.shape, generator=g) * 2 - 1.0
        x[..., p.frequent:] = torch.where(hit, p.G * sign, x[..., p.frequent:])
        y = torch.einsum("snd,sd->sn", x, w_star) + p.noise * torch.randn(len(seeds), n,
                                                                         generator=g)
        return x, y

    for _ in range(p.learn_steps):
        x, y = batch(p.batch_size)
        w = torch.stack([q.detach() for q in ws])
        r = torch.einsum("rnd,rd->rn", x[index], w) - y[index]
        for q, grad in zip(ws, torch.einsum("rn,rnd->rd", r, x[index]) / p.batch_size):
            q.grad = grad
        opt.step()
    w = torch.stack([q.detach() for q in ws])
    x, y = batch(p.eval_samples)
    loss = ((torch.einsum("rnd,rd->rn", x[index], w) - y[index]) ** 2).mean(-1)
    err = (w - w_star[index]).abs()
    out = [[] for _ in settings]
    for r, (si, j) in enumerate(runs):
        ok = bool(torch.isfinite(loss[r]))
        rel = {k: float(err[r, sl].norm() / w_star[j, sl].norm()) if ok else math.inf
               for k, sl in (("rare", slice(p.frequent, d)), ("frequent", slice(0, p.frequent)))}
        out[si].append({"seed": seeds[j], "rare_weight_error": rel["rare"],
                        "frequent_weight_error": rel["frequent"],
                        "test_loss": float(loss[r]) if ok else math.inf})
    return out


def run(s) -> Result:
    p = s.p
    rows, streams, impulses = [], {}, {}
    for name in s.arms:
        spec = {**s.arms[name]["fixed"], "lr": p.lr}
        beta2 = spec["betas"][1]
        family = "adam" if spec["name"] == "adam" else spec["name"]
        for seed in s.report_seeds:
            times, freq, rare = stream(spec, p, seed)
            after = impulse(spec, p, seed)
            streams[(name, seed)], impulses[(name, seed)] = (times, freq, rare), after
            late = times > p.stream_steps // 2
            back = np.nonzero(after[1:] >= 0.5)[0]
            recovery = int(back[0] + 1) if len(back) else p.horizon
            rows.append({"part": "effective_step", "optimizer": name, "family": family,
                         "beta2": beta2, "seed": seed,
                         "rare_to_frequent": float(np.median(rare[late] / freq[late])),
                         "suppression": float(after.min()), "recovered": int(len(back) > 0),
                         "recovery_steps": recovery, "recovery_x_1mb2": recovery * (1 - beta2),
                         "recovery_over_formula": recovery / predicted_recovery(p, beta2),
                         "formula_error": abs(recovery / predicted_recovery(p, beta2) - 1)})
        hp = s.tune(name, lambda st, seeds: learn(p, st, seeds), {"part": "learning"})
        for r in learn(p, [hp], s.report_seeds)[0]:
            rows.append({"part": "learning", "optimizer": name, "beta2": beta2,
                         "lr": hp["lr"], **r})
    eff = [r for r in rows if r["part"] == "effective_step"]
    learning = [r for r in rows if r["part"] == "learning"]
    tables = [Table("Effective step: rare vs frequent, and recovery after one large gradient",
                    eff, ["part", "optimizer", "beta2"],
                    ["rare_to_frequent", "suppression", "recovered", "recovery_steps",
                     "recovery_x_1mb2", "recovery_over_formula", "formula_error"]),
              Table("Learning the rare features' weights, each optimizer at its tuned lr",
                    learning, ["part", "optimizer", "lr"],
                    ["rare_weight_error", "frequent_weight_error", "test_loss"])]
    figures = [plot_stream(streams, p, s, s.out_dir), plot_impulse(impulses, p, s, s.out_dir)]
    setup = ["Arms " + ", ".join(f"{n} = {describe(s.arms[n]['fixed'])}" for n in s.arms)
             + f"; the effective-step measurements at lr={p.lr} (the ratios do not depend on "
             "it), the learning problem at each arm's tuned lr.",
             f"Stream: {p.frequent} frequent coordinates with N(0, {p.g}^2) gradients every step "
             f"and {p.rare} rare ones with +-{p.G} at probability {p.rare_prob}, else 0; "
             f"{p.stream_steps} steps. rare_to_frequent = median over the second half of the "
             "ratio of the coordinates' median effective steps (optim.effective_step).",
             f"Impulse: {p.frequent} coordinates with N(0, {p.g}^2) gradients, one +-{p.G} "
             f"gradient at step {p.spike_at}, {p.horizon} steps after it. suppression = lowest "
             "effective step / the one before the spike; recovery_steps = steps until it is back "
             "to half (the horizon if never: censored); recovery_over_formula = recovery_steps "
             "/ (ln((1-b2) G^2 / (3 g^2)) / -ln(b2)), formula_error = |that - 1|.",
             f"Learning: y = x.w* + N(0, {p.noise}^2), w* ~ N(0, 1); {p.frequent} frequent "
             f"features N(0, 1), {p.rare} rare ones N(0, {p.x_small}^2) except +-{p.G} with "
             f"probability {p.rare_prob}; batch {p.batch_size}, {p.learn_steps} steps from "
             "w=0; errors are |w - w*| / |w*| over each group; lr tuned by the loss on "
             f"{p.eval_samples} fresh samples."]
    return Result(rows, tables, figures, setup)


def plot_stream(streams, p, s, out_dir):
    fig, ax = plt.subplots(figsize=(7, 4.3))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for color, name in zip(colors, s.arms):
        times, freq, rare = streams[(name, s.report_seeds[0])]
        ax.plot(times, freq, color=color, label=f"{name} frequent")
        ax.plot(times, rare, color=color, ls="--", label=f"{name} rare")
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="median effective step lr / (sqrt(v_hat) + eps)",
           title=f"rare (p={p.rare_prob}, |g|={p.G}) vs frequent (std {p.g}); seed 0")
    ax.legend(fontsize=7, ncol=2)
    return save(fig, out_dir / "effective_step_stream.png")


def plot_impulse(impulses, p, s, out_dir):
    fig, ax = plt.subplots(figsize=(7, 4.3))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for color, name in zip(colors, s.arms):
        spec = s.arms[name]["fixed"]
        curves = np.stack([impulses[(name, seed)] for seed in s.report_seeds])
        ax.plot(np.arange(curves.shape[1]), np.median(curves, 0), color=color, label=name)
        if name.startswith("adam_b2"):
            ax.axvline(1 / (1 - spec["betas"][1]), color=color, ls=":", lw=1)
    ax.axhline(0.5, color="gray", ls="--", lw=1, label="recovered (half)")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlim(left=0)
    ax.set_yscale("log")
    ax.set(xlabel="steps after the large gradient",
           ylabel="effective step / value before it",
           title=f"one gradient of {p.G} among N(0, {p.g}^2); dotted: 1/(1-beta2)")
    ax.legend(fontsize=8)
    return save(fig, out_dir / "effective_step_impulse.png")
