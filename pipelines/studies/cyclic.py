"""cyclic: Smith's cyclical learning rate on top of Adam vs a constant rate and a cosine
decay, on an MLP on Fashion-MNIST.

As Smith (2017) prescribes, the cyclical bounds come from an LR range test: lr rising
geometrically over a short run, on the tuning seeds; max_lr is the lr of the lowest
smoothed loss divided by ``range.max_divisor``, base_lr = max_lr / ``range.base_ratio``.
The cycle mode (triangular or triangular2) is then chosen on the tuning seeds, as is the lr
of the constant and cosine arms; nothing is selected on the seeds reported. Reported:
steps until the validation accuracy first reaches ``target`` (censored at the budget) and
the final accuracy on the official test set.
"""

from __future__ import annotations

import math

import numpy as np

from .engine import Result, Table
from .engine.figures import band, plt, save
from .problems import images


def job(p, setting: dict, seed: int, report: bool) -> dict:
    hp = {k: v for k, v in setting.items()
          if k not in ("schedule", "mode", "base_lr", "max_lr")}
    sched = {"kind": setting["schedule"]}
    if setting["schedule"] == "cyclical":
        sched = {"kind": setting["mode"], "base_lr": setting["base_lr"],
                 "max_lr": setting["max_lr"], "cycles": p.cycles}
        hp["lr"] = setting["max_lr"]
    return {"data": "fashion_mnist", "root": p.data_root, "seed": seed,
            "sizes": {"train": p.n_train, "val": p.n_val, "test": p.n_test},
            "model": dict(p.model), "optim": hp, "schedule": sched, "epochs": p.epochs,
            "batch_size": p.batch_size, "evals": p.evals if report else 0, "splits": ["val"],
            "final_splits": ["test"] if report else [], "target": {"split": "val",
                                                                   "acc": p.target}}


def range_bounds(s) -> tuple[float, float, list]:
    """The LR range test on each tuning seed: (base_lr, max_lr) from the geometric mean of
    the per-seed picks, and the (lrs, smoothed losses) curves."""
    p, r = s.p, s.p.range
    jobs = [({"data": "fashion_mnist", "root": p.data_root, "seed": seed,
              "sizes": {"train": p.n_train, "val": p.n_val}, "model": dict(p.model),
              "optim": {"name": s.arms["cyclical"]["fixed"]["name"]},
              "schedule": {"kind": "range", "lr_min": r.lr_min, "lr_max": r.lr_max},
              "epochs": r.epochs, "batch_size": p.batch_size},) for seed in s.tuning_seeds]
    picks, curves = [], []
    for out in s.map(images.range_test, jobs):
        lrs, losses = np.asarray(out["_lrs"]), np.asarray(out["_losses"])
        smooth = ema(losses, r.smoothing)
        picks.append(lrs[int(np.nanargmin(smooth))] / r.max_divisor)
        curves.append((lrs, smooth))
    max_lr = float(f"{math.exp(np.mean(np.log(picks))):.3g}")
    return float(f"{max_lr / r.base_ratio:.3g}"), max_lr, curves


def ema(x: np.ndarray, beta: float) -> np.ndarray:
    """Bias-corrected exponential moving average (fastai's smoothing of the range test)."""
    out, avg = np.empty(len(x)), 0.0
    for i, v in enumerate(x):
        avg = beta * avg + (1 - beta) * (v if math.isfinite(v) else 1e30)
        out[i] = avg / (1 - beta ** (i + 1))
    return out


def evaluate_with(s):
    def evaluate(settings, seeds):
        jobs = [(job(s.p, st, seed, False),) for st in settings for seed in seeds]
        done = iter(s.map(images.fit, jobs))
        return [[{"seed": seed, **{k: v for k, v in next(done).items() if k[0] != "_"}}
                 for seed in seeds] for _ in settings]
    return evaluate


def run(s) -> Result:
    p = s.p
    base_lr, max_lr, curves = range_bounds(s)
    s.fix("cyclical", base_lr=base_lr, max_lr=max_lr)
    chosen = {arm: s.tune(arm, _scored(evaluate_with(s))) for arm in s.arms}
    cells = [(arm, seed) for arm in s.arms for seed in s.report_seeds]
    jobs = [(job(p, chosen[arm], seed, True),) for arm, seed in cells]
    rows, runs = [], {}
    for (arm, seed), out in zip(cells, s.map(images.fit, jobs)):
        runs[(arm, seed)] = out["_curve"]
        rows.append({"schedule": arm, "seed": seed, "steps_to_target": out["steps_to_target"],
                     "reached_target": out["reached_target"],
                     "final_val_acc": out["final_val_acc"],
                     "final_test_acc": out["final_test_acc"],
                     "final_test_loss": out["final_test_loss"], "diverged": out["diverged"]})
    tables = [Table(f"Steps to validation accuracy {p.target} and final test accuracy, each "
                    "schedule as tuned", rows, ["schedule"],
                    ["steps_to_target", "reached_target", "final_val_acc", "final_test_acc",
                     "final_test_loss", "diverged"])]
    figures = [plot_range(curves, base_lr, max_lr, s.out_dir),
               plot_curves(runs, chosen, p, s.report_seeds, s.out_dir)]
    setup = [f"MLP {dict(p.model)} on {p.n_train} Fashion-MNIST training images ({p.n_val} "
             f"held out for validation, the first {p.n_test or 10000} official test images for "
             f"the final accuracy); Adam, {p.epochs} epochs, batch {p.batch_size}.",
             f"LR range test on the tuning seeds: lr from {p.range.lr_min:g} to "
             f"{p.range.lr_max:g} over {p.range.epochs} epoch(s), loss smoothed by an EMA "
             f"({p.range.smoothing}); max_lr = the lr of its minimum / {p.range.max_divisor} "
             f"(geometric mean over seeds) = {max_lr:g}, base_lr = max_lr / "
             f"{p.range.base_ratio} = {base_lr:g}; {p.cycles} cycles ending with the run.",
             "constant and cosine (to 0) tuned over lr, cyclical over its mode, each by the "
             "final validation error on the tuning seeds. steps_to_target: the first of "
             f"{p.evals} evaluations with validation accuracy >= {p.target} (censored at the "
             "budget when never)."]
    return Result(rows, tables, figures, setup)


def _scored(evaluate):
    def scored(settings, seeds):
        return [[{**r, "tuning_score": 1 - r["final_val_acc"]} for r in rows]
                for rows in evaluate(settings, seeds)]
    return scored


def plot_range(curves, base_lr, max_lr, out_dir):
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, (lrs, smooth) in enumerate(curves):
        ax.plot(lrs, smooth, label=f"tuning seed {i}")
    for v, name in ((base_lr, "base_lr"), (max_lr, "max_lr")):
        ax.axvline(v, color="gray", ls=":", lw=1)
        ax.text(v, ax.get_ylim()[1], name, fontsize=8, va="top")
    ax.set_xscale("log")
    ax.set(xlabel="lr", ylabel="smoothed training loss", title="LR range test (Smith 2017)")
    ax.legend(fontsize=8)
    return save(fig, out_dir / "lr_range_test.png")


def plot_curves(runs, chosen, p, seeds, out_dir):
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for arm in chosen:
        cs = [runs[(arm, s)] for s in seeds]
        step = cs[0]["step"]
        if all(c["step"] == step for c in cs):
            band(ax, step, [c["val_acc"] for c in cs], arm)
    ax.axhline(p.target, color="gray", ls=":", label=f"target {p.target}")
    ax.set(xlabel="step", ylabel="validation accuracy", title="mean ± std over report seeds")
    ax.legend(fontsize=8)
    return save(fig, out_dir / "val_accuracy.png")
