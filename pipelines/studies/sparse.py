"""sparse: rare large gradients and the effective step lr / (sqrt(v_hat) + eps).

Two gradient streams are fed straight into ``p.grad`` (the loss would only add coupling):

- stream: frequent coordinates see N(0, g^2) every step; rare ones see +-G with
  probability ``rare_prob`` and 0 otherwise (a rare feature with a large gradient);
- impulse: every coordinate sees N(0, g^2); at step ``spike_at`` the coordinates get one
  gradient of +-G. The effective step falls, and recovers to half its pre-spike value
  after ``recovery_steps``; Adam predicts ln((1-b2) G^2 / (3 g^2)) / -ln(b2) steps.
"""

from __future__ import annotations

import math

import numpy as np
import torch

import optim

from .common import describe, generator, make_optimizer
from .figures import plt, save
from .report import Check, Outcome, Table
from .stats import column, summarize

CLAIM = ("A rare large gradient inflates Adam's v and suppresses that coordinate's effective "
         "step for on the order of 1/(1-beta2) steps, several times longer with beta2=0.999 "
         "than with beta2=0.99; AMSGrad and Yogi keep it suppressed longer still.")


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


def run(p, out_dir) -> Outcome:
    rows, streams, impulses = [], {}, {}
    for name, spec in p.optimizers.items():
        beta2 = spec.betas[1]
        for seed in range(p.seeds):
            times, freq, rare = stream(spec, p, seed)
            after = impulse(spec, p, seed)
            streams[(name, seed)], impulses[(name, seed)] = (times, freq, rare), after
            late = times > p.stream_steps // 2
            back = np.nonzero(after[1:] >= 0.5)[0]
            rows.append({"optimizer": name, "beta2": beta2, "seed": seed,
                         "rare_to_frequent": float(np.median(rare[late] / freq[late])),
                         "suppression": float(after.min()),
                         "recovered": int(len(back) > 0),
                         "recovery_steps": int(back[0] + 1) if len(back) else p.horizon,
                         "recovery_x_1mb2": (int(back[0] + 1) if len(back) else p.horizon)
                         * (1 - beta2)})
    table = Table("Effective step: rare vs frequent, and recovery after one large gradient",
                  rows, ["optimizer", "beta2"],
                  ["rare_to_frequent", "suppression", "recovered", "recovery_steps",
                   "recovery_x_1mb2"])
    figures = [plot_stream(streams, p, out_dir), plot_impulse(impulses, p, out_dir)]
    setup = ["Optimizers " + ", ".join(f"{n} = {describe(s)}" for n, s in p.optimizers.items())
             + f", lr={p.lr}.",
             f"Stream: {p.frequent} frequent coordinates with N(0, {p.g}^2) gradients every step "
             f"and {p.rare} rare ones with +-{p.G} at probability {p.rare_prob}, else 0; "
             f"{p.stream_steps} steps. rare_to_frequent = median over the second half of the "
             "ratio of the coordinates' median effective steps (optim.effective_step).",
             f"Impulse: {p.frequent} coordinates with N(0, {p.g}^2) gradients, one +-{p.G} "
             f"gradient at step {p.spike_at}, {p.horizon} steps after it. suppression = lowest "
             "effective step / the one before the spike; recovery_steps = steps until it is back "
             "to half (the horizon if never); recovery_x_1mb2 = recovery_steps * (1 - beta2).",
             f"{p.seeds} seeds."]
    return Outcome(rows, [table], figures, checks(rows, p), setup)


def checks(rows, p) -> list[Check]:
    def mean(metric, name):
        return summarize(column(rows, metric, optimizer=name)).mean

    slow, fast = "adam_b2_0.999", "adam_b2_0.99"
    units = {n: mean("recovery_x_1mb2", n) for n in (slow, fast)}
    b2 = {n: p.optimizers[n].betas[1] for n in (slow, fast)}
    predicted = {n: predicted_recovery(p, b2[n]) * (1 - b2[n]) for n in b2}
    ratio = mean("recovery_steps", slow) / mean("recovery_steps", fast)
    longer = [n for n in p.optimizers if n not in (slow, fast)]
    return [
        Check("One large gradient suppresses Adam's effective step (beta2=0.999)",
              mean("suppression", slow) < 0.1,
              f"lowest effective step {mean('suppression', slow):.3g} x its pre-spike value"),
        Check("The suppression lasts on the order of 1/(1-beta2) steps, as Adam's formula "
              "predicts", all(units[n] >= 1 and abs(units[n] / predicted[n] - 1) < 0.2
                              for n in units),
              "recovery in units of 1/(1-beta2): " + ", ".join(
                  f"{n} {units[n]:.3g} (formula {predicted[n]:.3g})" for n in units)),
        Check("beta2=0.999 suppresses much longer than beta2=0.99", ratio > 3,
              f"recovery {mean('recovery_steps', slow):.4g} vs "
              f"{mean('recovery_steps', fast):.4g} steps (x{ratio:.3g})"),
        Check("AMSGrad and Yogi stay suppressed longer than Adam(beta2=0.999)",
              all(mean("recovery_steps", n) > mean("recovery_steps", slow) for n in longer),
              ", ".join(f"{n}: {mean('recovery_steps', n):.4g} steps, recovered in "
                        f"{mean('recovered', n):.0%} of seeds" for n in longer)),
    ]


def plot_stream(streams, p, out_dir):
    fig, ax = plt.subplots(figsize=(7, 4.3))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for color, name in zip(colors, p.optimizers):
        times, freq, rare = streams[(name, 0)]
        ax.plot(times, freq, color=color, label=f"{name} frequent")
        ax.plot(times, rare, color=color, ls="--", label=f"{name} rare")
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="median effective step lr / (sqrt(v_hat) + eps)",
           title=f"rare (p={p.rare_prob}, |g|={p.G}) vs frequent (std {p.g}); seed 0")
    ax.legend(fontsize=7, ncol=2)
    return save(fig, out_dir / "effective_step_stream.png")


def plot_impulse(impulses, p, out_dir):
    fig, ax = plt.subplots(figsize=(7, 4.3))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for color, (name, spec) in zip(colors, p.optimizers.items()):
        curves = np.stack([impulses[(name, s)] for s in range(p.seeds)])
        ax.plot(np.arange(curves.shape[1]), np.median(curves, 0), color=color, label=name)
        if name.startswith("adam_b2"):
            ax.axvline(1 / (1 - spec.betas[1]), color=color, ls=":", lw=1)
    ax.axhline(0.5, color="gray", ls="--", lw=1, label="recovered (half)")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlim(left=0)
    ax.set_yscale("log")
    ax.set(xlabel="steps after the large gradient",
           ylabel="effective step / value before it",
           title=f"one gradient of {p.G} among N(0, {p.g}^2); dotted: 1/(1-beta2)")
    ax.legend(fontsize=8)
    return save(fig, out_dir / "effective_step_impulse.png")
