"""mlip: close-approach forces, Adam-family damping and explicit force handling.

Every cell is a real `adamlab train pipeline=mlip data=emt` run (``pipelines.train.run``) on EMT
structures that include close-approach pairs; the study reads each run's summary (test force
MAE overall and per reference-force bin) and its csv/metrics.csv (the training loss per step).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .engine import Result, Table
from .engine.figures import plt, save
from .engine.stats import column, summarize
from .problems.training import train_all

METRICS = ["diverged", "test_force_mae_mev_per_ang", "largest_bin_force_mae_mev_per_ang",
           "loss_spike_epochs", "loss_spike_steps", "max_force_dropped_fraction"]


def epoch_losses(csv_rows: list[dict]) -> tuple[list[float], list[float]]:
    """Per-step training losses and their per-epoch means."""
    steps, by_epoch = [], {}
    for r in csv_rows:
        if r.get("train_loss", "") == "":
            continue
        v = float(r["train_loss"])
        steps.append(v)
        by_epoch.setdefault(int(float(r.get("epoch") or 0)), []).append(v)
    return steps, [float(np.mean(v)) for _, v in sorted(by_epoch.items())]


def spikes(values: list[float], factor: float) -> int:
    """How many values exceed ``factor`` times the running minimum of those before them."""
    count, low = 0, math.inf
    for v in values:
        if not math.isfinite(v) or v > factor * low:
            count += 1
        if math.isfinite(v):
            low = min(low, v)
    return count


def overrides_for(p, opt: str, handling: str, seed: int) -> list[str]:
    o = p.arms[opt].optim
    out = ["pipeline=mlip", "data=emt", f"seed={seed}", "logger=csv",
           "trainer.enable_progress_bar=false", f"trainer.max_epochs={p.epochs}",
           "schedule=none", f"data.n_configs={p.n_configs}", f"data.seed={p.data_seed}",
           *p.model, *p.handlings[handling], f"optim={o.optim}"]
    return out + [f"optim.{k}={v}" for k, v in o.items() if k != "optim"]


def run(s) -> Result:
    p, out_dir = s.p, Path(s.out_dir)
    for opt in p.optimizers_used:
        s.tune(opt, None)  # fixed: lr 3e-3, the pipeline's tuned default
    rows, losses = [], {}
    keys = [(opt, handling, seed) for opt in p.optimizers_used
            for handling in p.handlings_used for seed in s.report_seeds]
    cells = [(overrides_for(p, *key), out_dir / "runs" / "{}-{}-s{}".format(*key))
             for key in keys]
    for (opt, handling, seed), (m, csv_rows) in zip(keys, train_all(cells, s.workers)):
        steps, epochs = epoch_losses(csv_rows)
        losses[(opt, handling, seed)] = steps
        bins = m.get("test_force_mae_mev_per_ang_by_force") or {}
        filled = [b for b, v in bins.items() if v.get("n_atoms")]
        top = filled[-1] if filled else None
        mae = m.get("test_force_mae_mev_per_ang")
        finite = all(math.isfinite(v) for v in steps) and mae is not None
        exploded = bool(epochs) and epochs[-1] > p.explode_factor * min(epochs)
        top_mae = bins[top]["mae_mev_per_ang"] if top else None
        spiked = spikes(epochs, p.spike_factor)
        rows.append({"optimizer": opt, "handling": handling, "seed": seed,
                     "diverged": int(not finite or exploded),
                     "diverged_or_spiked": int(not finite or exploded or spiked > 0),
                     # a run without a test MAE (diverged) counts as the worst, never dropped
                     "test_force_mae_mev_per_ang": mae if mae is not None else math.inf,
                     "largest_bin": top,
                     "largest_bin_force_mae_mev_per_ang": (
                         top_mae if top_mae is not None else math.inf),
                     "loss_spike_epochs": spiked,
                     "loss_spike_steps": spikes(steps, p.spike_factor),
                     "max_force_dropped_fraction": m.get("max_force_dropped_fraction")})
    table = Table("Per optimizer and force handling", rows, ["optimizer", "handling"], METRICS)
    figures = [plot_losses(losses, p, s.report_seeds, out_dir), plot_mae(rows, p, out_dir)]
    tops = sorted({r["largest_bin"] for r in rows if r["largest_bin"]})
    setup = [f"EMT Cu, {p.n_configs} structures (data seed {p.data_seed}, with the default mix "
             f"of close-approach pairs); model overrides {list(p.model)}; {p.epochs} epochs, "
             f"constant lr, seeds {s.report_seeds}.",
             "Optimizers (not tuned): " + "; ".join(f"{n} = {dict(p.arms[n].optim)}"
                                                    for n in p.optimizers_used) + ".",
             "Force handling (overrides): " + "; ".join(
                 f"{h} = {list(p.handlings[h])}" for h in p.handlings_used) + ".",
             f"diverged: a non-finite training loss or test MAE, or a last-epoch mean training "
             f"loss > {p.explode_factor}x its best epoch. loss_spike_epochs/steps: epochs "
             f"(epoch-mean loss) / steps whose training loss exceeds {p.spike_factor}x the "
             f"running minimum before it. Largest non-empty reference-force bin of the test "
             f"set: {tops}."]
    return Result(rows, [table], figures, setup)


def plot_losses(losses, p, seeds, out_dir):
    opts = list(p.optimizers_used)
    fig, axes = plt.subplots(1, len(opts), figsize=(5 * len(opts), 3.8), squeeze=False)
    for ax, opt in zip(axes[0], opts):
        for h in p.handlings_used:
            for k, seed in enumerate(seeds):
                y = losses[(opt, h, seed)]
                ax.plot(np.arange(len(y)), y, lw=0.8, label=h if k == 0 else None,
                        color=f"C{list(p.handlings_used).index(h)}")
        ax.set_yscale("log")
        ax.set(title=f"{opt}: training loss per step (every seed)", xlabel="step",
               ylabel="train loss")
        ax.legend(fontsize=8)
    return save(fig, out_dir / "train_loss.png")


def plot_mae(rows, p, out_dir):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    hs, opts = list(p.handlings_used), list(p.optimizers_used)
    width = 0.8 / len(opts)
    for ax, key in zip(axes, ("test_force_mae_mev_per_ang", "largest_bin_force_mae_mev_per_ang")):
        for i, opt in enumerate(opts):
            s = [summarize(column(rows, key, optimizer=opt, handling=h)) for h in hs]
            ax.bar(np.arange(len(hs)) + i * width, [x.mean for x in s], width,
                   yerr=[x.std if x.n > 1 else 0 for x in s], label=opt)
        ax.set_xticks(np.arange(len(hs)) + 0.4 - width / 2, hs, fontsize=8, rotation=30,
                      ha="right")
        ax.set(ylabel=key, title="mean ± std over seeds")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    return save(fig, out_dir / "force_mae.png")
