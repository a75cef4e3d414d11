"""overfit: a small CNN on a small digits subset, Adam vs SGD+momentum at the same budget.

Each optimizer gets its best lr from a grid (lowest mean best-val loss); the checks use
those. Seeds share split, initialisation and batch order across optimizers (paired).
"""

from __future__ import annotations

import numpy as np
import torch

from . import digits
from .common import describe, make_optimizer
from .figures import band, plt, save
from .report import Check, Outcome, Table
from .stats import column, less, summarize

CLAIM = ("On a small training set a CNN trained with Adam reaches a lower training loss than "
         "with SGD+momentum, while SGD+momentum generalises better: a smaller train/val gap "
         "and a higher test accuracy at its early-stopping epoch.")
METRICS = ["final_train_loss", "final_val_loss", "gap", "best_val_loss", "stop_epoch",
           "stop_test_acc"]


def run(p, out_dir) -> Outcome:
    rows, curves = [], {}
    for seed in range(p.seeds):
        data = digits.splits(p.n_train, p.n_val, seed)
        for name, spec in p.optimizers.items():
            for lr in spec.lrs:
                torch.manual_seed(seed)
                net = digits.model(p.model, p.width)
                opt = make_optimizer(spec.optim, net.parameters(), lr=lr)
                h = digits.train(net, opt, data, p.epochs, p.batch_size, seed)
                curves[(name, lr, seed)] = h
                rows.append({"optimizer": name, "lr": lr, "seed": seed,
                             "final_train_loss": h.train_loss[-1],
                             "final_val_loss": h.val_loss[-1],
                             "gap": h.val_loss[-1] - h.train_loss[-1],
                             "best_val_loss": min(h.val_loss), "stop_epoch": h.stop_epoch,
                             "stop_test_acc": h.stop_test_acc})
    best = {name: min(spec.lrs, key=lambda lr, n=name: summarize(
        column(rows, "best_val_loss", optimizer=n, lr=lr)).mean)
        for name, spec in p.optimizers.items()}
    table = Table("Every optimizer and lr (the best lr per optimizer is used in the checks)",
                  rows, ["optimizer", "lr"], METRICS)
    figures = [plot_curves(curves, best, p, out_dir)]
    setup = [f"{p.model.upper()} (width {p.width}) on {p.n_train} training digits; {p.n_val} "
             "validation digits pick the lr and the early-stopping epoch; the remaining "
             "images are the test set.",
             f"{p.epochs} epochs, batch {p.batch_size}, for every optimizer: "
             + "; ".join(f"{n} = {describe(s.optim)}, lr in {list(s.lrs)}"
                         for n, s in p.optimizers.items()) + ".",
             f"Best lr per optimizer = lowest mean best-val loss: {best}. gap = final val "
             f"loss - final train loss. {p.seeds} seeds (split, init, batch order)."]
    return Outcome(rows, [table], figures, checks(rows, best), setup)


def checks(rows, best) -> list[Check]:
    def col(metric, name):
        return column(rows, metric, optimizer=name, lr=best[name])

    def mean(metric, name):
        return summarize(col(metric, name)).mean

    a, s = "adam", "sgd_momentum"
    return [
        Check("Adam reaches a lower training loss", less(col("final_train_loss", a),
                                                         col("final_train_loss", s)),
              f"final train loss Adam {mean('final_train_loss', a):.3g} vs SGD+momentum "
              f"{mean('final_train_loss', s):.3g}"),
        Check("SGD+momentum has the smaller generalisation gap", less(col("gap", s),
                                                                      col("gap", a)),
              f"final val - train loss: SGD+momentum {mean('gap', s):.3g} vs Adam "
              f"{mean('gap', a):.3g}"),
        Check("SGD+momentum has the higher test accuracy at early stopping",
              less(col("stop_test_acc", a), col("stop_test_acc", s)),
              f"SGD+momentum {mean('stop_test_acc', s):.4f} (epoch "
              f"{mean('stop_epoch', s):.3g}) vs Adam {mean('stop_test_acc', a):.4f} (epoch "
              f"{mean('stop_epoch', a):.3g})"),
    ]


def plot_curves(curves, best, p, out_dir):
    """Train and val loss per epoch at each optimizer's best lr, and the gap between them."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    epochs = np.arange(p.epochs + 1)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for color, (name, lr) in zip(colors, best.items()):
        hs = [curves[(name, lr, s)] for s in range(p.seeds)]
        band(ax, epochs, [h.train_loss for h in hs], f"{name} train (lr={lr:g})", color=color,
             ls="--")
        band(ax, epochs, [h.val_loss for h in hs], f"{name} val", color=color)
        ax.axvline(np.mean([h.stop_epoch for h in hs]), color=color, ls=":", lw=1)
        band(bx, epochs, [np.subtract(h.val_loss, h.train_loss) for h in hs], name,
             color=color)
    ax.set_yscale("log")
    ax.set(xlabel="epoch", ylabel="cross-entropy loss",
           title="mean ± std over seeds; dotted: mean early-stopping epoch")
    bx.set(xlabel="epoch", ylabel="val loss - train loss", title="generalisation gap")
    ax.legend(fontsize=8)
    bx.legend(fontsize=8)
    return save(fig, out_dir / "loss_curves.png")
