"""adamw: coupled L2 (adam_l2: decay before the moments) vs decoupled decay (adamw).

(a) Weight norms per subspace. One parameter vector in three blocks: ``zero`` gets no
    loss gradient, ``small`` and ``large`` get zero-mean gradient noise of scale g and G (a
    loss linear in w with random coefficients: a gradient history without a pull). The same
    noise drives plain Adam (no decay), so ``decay_vs_plain`` isolates what decay does.
(b) Generalisation at equal weight_decay: a digits MLP, lr fixed, weight_decay on a grid.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import digits
from .common import generator, make_optimizer
from .figures import band, plt, save
from .report import Check, Outcome, Table
from .stats import column, difference, less, summarize

CLAIM = ("Adam with L2 decays weights with a large gradient history less than AdamW does, "
         "while AdamW decays every weight at the same rate lr*wd, including weights the loss "
         "never touches; at equal weight_decay AdamW generalises better.")
SUBSPACES = ("zero", "small", "large")
DECAYS = ("adam_l2", "adamw")


def subspace_norms(name: str, p, seed: int) -> np.ndarray:
    """Norm of each block (steps+1, 3) under optimizer ``name`` (``adam``: no decay)."""
    g = generator(seed)
    w0 = torch.randn(3 * p.block, generator=g)
    scales = torch.tensor([0.0, p.g, p.G]).repeat_interleave(p.block)
    w = w0.clone().requires_grad_(True)
    wd = 0.0 if name == "adam" else p.weight_decay
    opt = make_optimizer({"name": name}, [w], lr=p.lr, weight_decay=wd)
    noise = generator(seed + 10_000)  # the same gradient noise for every optimizer
    norms = [w0.view(3, -1).norm(dim=1)]
    for _ in range(p.steps):
        w.grad = scales * torch.randn(len(scales), generator=noise)
        opt.step()
        norms.append(w.detach().view(3, -1).norm(dim=1))
    return torch.stack(norms).numpy()


def run(p, out_dir) -> Outcome:
    rows, norms = [], {}
    for seed in range(p.seeds):
        plain = subspace_norms("adam", p, seed)
        for name in DECAYS:
            n = norms[(name, seed)] = subspace_norms(name, p, seed)
            for i, sub in enumerate(SUBSPACES):
                below = np.nonzero(n[:, i] <= 0.5 * n[0, i])[0]
                rows.append({"part": "a_subspaces", "optimizer": name, "subspace": sub,
                             "seed": seed, "norm_ratio": float(n[-1, i] / n[0, i]),
                             "decay_vs_plain": float(n[-1, i] / plain[-1, i]),
                             "steps_to_half": int(below[0]) if len(below) else p.steps})
    for seed in range(p.mlp_seeds):
        data = digits.splits(p.n_train, p.n_val, seed)
        for wd in p.weight_decays:
            for name in DECAYS:
                torch.manual_seed(seed)
                net = digits.model("mlp", p.width)
                opt = make_optimizer({"name": name}, net.parameters(), lr=p.mlp_lr,
                                     weight_decay=wd)
                h = digits.train(net, opt, data, p.epochs, p.batch_size, seed)
                rows.append({"part": "b_digits", "optimizer": name, "weight_decay": wd,
                             "seed": seed, "final_val_loss": h.val_loss[-1],
                             "best_val_loss": min(h.val_loss), "final_test_acc": h.test_acc,
                             "stop_test_acc": h.stop_test_acc})
    part_a = [r for r in rows if r["part"] == "a_subspaces"]
    part_b = [r for r in rows if r["part"] == "b_digits"]
    tables = [Table(f"(a) Subspace norms after {p.steps} steps", part_a,
                    ["part", "subspace", "optimizer"],
                    ["norm_ratio", "decay_vs_plain", "steps_to_half"]),
              Table("(b) Digits MLP at equal weight_decay", part_b,
                    ["part", "weight_decay", "optimizer"],
                    ["final_val_loss", "best_val_loss", "final_test_acc", "stop_test_acc"])]
    figures = [plot_norms(norms, p, out_dir), plot_digits(part_b, p, out_dir)]
    setup = [f"(a) {p.block} weights per block, w0 ~ N(0, 1); gradient noise std 0 / {p.g} / "
             f"{p.G} for zero / small / large; lr={p.lr}, weight_decay={p.weight_decay}, "
             f"{p.steps} steps; AdamW's prediction: every block halves in ln 2 / (lr*wd) = "
             f"{math.log(2) / (p.lr * p.weight_decay):.4g} steps, until the gradient noise "
             "sets a floor. decay_vs_plain = norm / the "
             "norm under Adam without decay on the same noise; steps_to_half = steps until a "
             "block's norm is half its start (the budget if never).",
             f"(b) MLP (64-{p.width}-10) on {p.n_train} digits, {p.n_val} for validation, the "
             f"rest for test; lr={p.mlp_lr}, {p.epochs} epochs, batch {p.batch_size}, "
             f"weight_decay in {list(p.weight_decays)}; stop_test_acc is at the best-val epoch.",
             f"Seeds: {p.seeds} for (a), {p.mlp_seeds} for (b)."]
    return Outcome(rows, tables, figures, checks(part_a, part_b, p), setup, notes(part_a, p))


def checks(part_a, part_b, p) -> list[Check]:
    def col(metric, name, sub):
        return column(part_a, metric, optimizer=name, subspace=sub)

    half_life = math.log(2) / (p.lr * p.weight_decay)
    halved = {s: summarize(col("steps_to_half", "adamw", s)).mean for s in SUBSPACES}
    best = {name: min(p.weight_decays, key=lambda wd, n=name: summarize(
        column(part_b, "best_val_loss", optimizer=n, weight_decay=wd)).mean) for name in DECAYS}
    acc = {n: column(part_b, "stop_test_acc", optimizer=n, weight_decay=best[n])
           for n in DECAYS}
    d = difference(acc["adamw"], acc["adam_l2"])
    return [
        Check("Adam+L2 decays the large-gradient block less than AdamW",
              less(col("decay_vs_plain", "adamw", "large"),
                   col("decay_vs_plain", "adam_l2", "large")),
              f"large block, norm / no-decay norm: Adam+L2 "
              f"{summarize(col('decay_vs_plain', 'adam_l2', 'large')).mean:.3g}, AdamW "
              f"{summarize(col('decay_vs_plain', 'adamw', 'large')).mean:.3g}"),
        Check("AdamW decays every block at the rate lr*wd",
              all(abs(h / half_life - 1) < 0.1 for h in halved.values()),
              "steps to half the initial norm per block: " + ", ".join(
                  f"{s} {h:.4g}" for s, h in halved.items())
              + f"; ln 2 / (lr*wd) = {half_life:.4g}"),
        Check("AdamW generalises better, each at its best weight_decay (by val loss)",
              less(acc["adam_l2"], acc["adamw"]),
              f"test accuracy at early stopping: AdamW {summarize(acc['adamw']).mean:.4f} "
              f"(wd={best['adamw']:g}) vs Adam+L2 {summarize(acc['adam_l2']).mean:.4f} "
              f"(wd={best['adam_l2']:g}); difference 95% CI [{d.ci_lo:.3g}, {d.ci_hi:.3g}]"),
    ]


def notes(part_a, p) -> list[str]:
    """What Adam+L2 does to weights the loss never touches: the decay gradient wd*w is all
    of their gradient, and Adam normalises it to a step of about lr."""
    def mean(metric, name):
        return summarize(column(part_a, metric, optimizer=name, subspace="zero")).mean

    faster = mean("steps_to_half", "adam_l2") < mean("steps_to_half", "adamw")
    return [f"Zero-gradient block: halved after {mean('steps_to_half', 'adam_l2'):.4g} steps "
            f"under Adam+L2 and {mean('steps_to_half', 'adamw'):.4g} under AdamW; final norm "
            f"ratio {mean('norm_ratio', 'adam_l2'):.3g} vs {mean('norm_ratio', 'adamw'):.3g}. "
            f"Adam+L2 normalises the decay gradient wd*w, the only gradient such a weight has, "
            f"to a step of about lr={p.lr:g}, so here it decays these weights "
            + ("faster than AdamW, not slower." if faster else "no faster than AdamW.")]


def plot_norms(norms, p, out_dir):
    fig, ax = plt.subplots(figsize=(7, 4.3))
    t = np.arange(p.steps + 1)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, sub in enumerate(SUBSPACES):
        for name, style in (("adam_l2", "-"), ("adamw", "--")):
            curves = [norms[(name, s)][:, i] / norms[(name, s)][0, i] for s in range(p.seeds)]
            band(ax, t, curves, f"{name}, {sub}-gradient block", color=colors[i], ls=style)
    ax.plot(t, np.exp(-p.lr * p.weight_decay * t), color="gray", ls=":",
            label="exp(-lr*wd*t)")
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="block norm / initial norm",
           title=f"lr={p.lr:g}, weight_decay={p.weight_decay:g}, noise std 0 / {p.g} / {p.G}")
    ax.legend(fontsize=7)
    return save(fig, out_dir / "subspace_norms.png")


def plot_digits(part_b, p, out_dir):
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name in DECAYS:
        s = [summarize(column(part_b, "stop_test_acc", optimizer=name, weight_decay=wd))
             for wd in p.weight_decays]
        ax.errorbar(list(p.weight_decays), [x.mean for x in s], yerr=[x.std for x in s],
                    marker="o", capsize=3, label=name)
    ax.set_xscale("log")
    ax.set(xlabel="weight_decay", ylabel="test accuracy at early stopping",
           title=f"digits MLP, lr={p.mlp_lr:g}, mean ± std over seeds")
    ax.legend()
    return save(fig, out_dir / "digits_vs_weight_decay.png")
