"""cyclic: Smith's cyclical base rate on top of Adam vs a constant rate and a cosine decay.

Digits MLP. Every schedule peaks at the same lr (tuned per schedule over a grid by mean
final val loss); the cyclical ones run between lr * ``low`` and lr, with cycles that end
exactly at the end of training (lr back at its low value).
"""

from __future__ import annotations

import numpy as np
import torch

import optim

from . import digits
from .common import describe, make_optimizer
from .figures import band, plt, save
from .report import Check, Outcome, Table
from .stats import column, less, summarize

CLAIM = ("A cyclical base rate (triangular, triangular2) on top of Adam gives a lower final "
         "validation loss than a constant rate, and is no worse than a cosine decay.")
CYCLICAL = ("triangular", "triangular2")


def scheduler(name: str, opt, lr: float, total: int, p):
    if name == "constant":
        return optim.schedules.constant(opt)
    if name == "cosine":
        return optim.schedules.warmup_cosine(opt, 0, total)
    return optim.schedules.cyclical(opt, base_lr=lr * p.low, max_lr=lr,
                                    step_size_up=max(1, total // (2 * p.cycles)), mode=name)


def run(p, out_dir) -> Outcome:
    rows, curves = [], {}
    for seed in range(p.seeds):
        data = digits.splits(p.n_train, p.n_val, seed)
        steps_per_epoch = -(-p.n_train // p.batch_size)
        for name in p.schedules:
            for lr in p.lrs:
                torch.manual_seed(seed)
                net = digits.model(p.model, p.width)
                opt = make_optimizer(p.optim, net.parameters(), lr=lr)
                sched = scheduler(name, opt, lr, p.epochs * steps_per_epoch, p)
                h = digits.train(net, opt, data, p.epochs, p.batch_size, seed, sched)
                curves[(name, lr, seed)] = h
                rows.append({"schedule": name, "lr": lr, "seed": seed,
                             "final_train_loss": h.train_loss[-1],
                             "final_val_loss": h.val_loss[-1], "final_val_acc": h.val_acc[-1],
                             "final_test_acc": h.test_acc})
    best = {n: min(p.lrs, key=lambda lr, n=n: summarize(
        column(rows, "final_val_loss", schedule=n, lr=lr)).mean) for n in p.schedules}
    tuned = [r for r in rows if best[r["schedule"]] == r["lr"]]
    table = Table("Each schedule at its best peak lr (by mean final val loss)", tuned,
                  ["schedule", "lr"],
                  ["final_train_loss", "final_val_loss", "final_val_acc", "final_test_acc"])
    figures = [plot_curves(curves, best, p, out_dir)]
    setup = [f"{p.model.upper()} (width {p.width}) on {p.n_train} digits, {p.n_val} for "
             f"validation, the rest for test; {describe(p.optim)}; {p.epochs} epochs, batch "
             f"{p.batch_size}.",
             f"Schedules {list(p.schedules)}, peak lr tuned per schedule over {list(p.lrs)} "
             f"(chosen: {best}); cosine decays to 0 (optim.schedules.warmup_cosine, no "
             f"warmup); triangular/triangular2 (optim.schedules.cyclical) run from "
             f"{p.low} x lr to lr in {p.cycles} cycles ending with the run.",
             f"{p.seeds} seeds (split, init, batch order); every lr of the grid is in "
             "results.csv."]
    return Outcome(rows, [table], figures, checks(tuned, p), setup)


def checks(tuned, p) -> list[Check]:
    def col(name, metric="final_val_loss"):
        return column(tuned, metric, schedule=name)

    def mean(name, metric="final_val_loss"):
        return summarize(col(name, metric)).mean

    cyclical = [n for n in CYCLICAL if n in p.schedules]
    best = min(cyclical, key=mean)
    vs_cosine = less(col("cosine"), col(best))
    return [
        Check(f"{best} ends with a lower val loss than constant",
              less(col(best), col("constant")),
              f"final val loss {best} {mean(best):.4g} vs constant {mean('constant'):.4g}; "
              f"test acc {mean(best, 'final_test_acc'):.4f} vs "
              f"{mean('constant', 'final_test_acc'):.4f}"),
        Check(f"{best} is no worse than cosine", vs_cosine is not True,
              f"final val loss {best} {mean(best):.4g} vs cosine {mean('cosine'):.4g}; test "
              f"acc {mean(best, 'final_test_acc'):.4f} vs {mean('cosine', 'final_test_acc'):.4f}"),
    ]


def plot_curves(curves, best, p, out_dir):
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    epochs = np.arange(p.epochs + 1)
    for name, lr in best.items():
        hs = [curves[(name, lr, s)] for s in range(p.seeds)]
        band(ax, epochs, [h.val_loss for h in hs], f"{name} (lr={lr:g})")
        band(bx, epochs, [h.train_loss for h in hs], f"{name} (lr={lr:g})")
    for axis, what in ((ax, "validation"), (bx, "training")):
        axis.set_yscale("log")
        axis.set(xlabel="epoch", ylabel=f"{what} loss", title=f"{what} loss, mean ± std")
        axis.legend(fontsize=8)
    return save(fig, out_dir / "loss_curves.png")
