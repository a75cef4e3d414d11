"""mlip: are Adam's damping and explicit clipping both needed against close-approach forces?

Every cell is a real `adamlab train pipeline=mlip` run (``pipelines.train.run``), on the
leak-free EMT Cu data (MD frames 50 steps apart, split by trajectory) and on Zuo et al.'s
DFT Ni; the study reads each run's summary (test force MAE, and the test structures a
max-force filter keeps and drops: ``test_by_max_force``) and its csv/metrics.csv (the
training loss per step). Each optimizer (Adam; SGD+momentum, the non-adaptive arm) has its
own lr grid, tuned per dataset and force handling on the tuning seeds by the validation
force MAE.

A loss spike is a step whose training loss exceeds ``spike.factor`` times the median of the
``spike.window`` steps before it (``spikes``): relative to where training is, not to its
best, so a loss that simply falls is never a spike (tests inject one to check it is found).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .engine import Result, Table
from .engine.figures import plt, save
from .engine.stats import column, summarize
from .problems.training import train

METRICS = ["diverged", "loss_spikes", "test_force_mae_mev_per_ang",
           "kept_force_mae_mev_per_ang", "dropped_force_mae_mev_per_ang",
           "test_energy_mae_mev_per_atom", "max_force_dropped_fraction"]


def step_losses(csv_rows: list[dict]) -> tuple[list[float], list[float]]:
    """Per-step training losses and their per-epoch means."""
    steps, by_epoch = [], {}
    for r in csv_rows:
        if r.get("train_loss", "") == "":
            continue
        v = float(r["train_loss"])
        steps.append(v)
        by_epoch.setdefault(int(float(r.get("epoch") or 0)), []).append(v)
    return steps, [float(np.mean(v)) for _, v in sorted(by_epoch.items())]


def spikes(values: list[float], factor: float, window: int) -> list[int]:
    """Indices of the steps whose loss is non-finite or above ``factor`` times the median
    of the (up to) ``window`` finite losses before it; the first ``window`` steps only
    count as spikes once at least ``window // 5`` losses precede them."""
    out, history = [], []
    for i, v in enumerate(values):
        if not math.isfinite(v):
            out.append(i)
            continue
        recent = history[-window:]
        if len(recent) >= max(1, window // 5) and v > factor * float(np.median(recent)):
            out.append(i)
        history.append(v)
    return out


def overrides_for(p, dataset: str, handling: str, setting: dict, seed: int) -> list[str]:
    hp = dict(setting)
    out = ["pipeline=mlip", *p.datasets[dataset], f"seed={seed}", "logger=csv",
           "trainer.enable_progress_bar=false", f"trainer.max_epochs={p.epochs}",
           f"pipeline.score_max_force={p.score_max_force}", *p.model, *p.handlings[handling],
           f"optim={hp.pop('optim')}"]
    return out + [f"optim.{k}={v}" for k, v in hp.items()]


def measure(p, metrics: dict, csv_rows: list[dict]) -> dict:
    """One run's row: errors (inf where the run left none: a diverged run is the worst,
    never dropped), divergence and spikes."""
    steps, epochs = step_losses(csv_rows)
    split = metrics.get("test_by_max_force") or {}
    kept, dropped = split.get("kept") or {}, split.get("dropped") or {}

    def error(value, part: dict | None = None):
        if part is not None and not part.get("n_structures"):
            return None  # no such test structures: missing, not a failure
        return value if value is not None and math.isfinite(value) else math.inf

    mae = metrics.get("test_force_mae_mev_per_ang")
    finite = bool(steps) and all(math.isfinite(v) for v in steps) and mae is not None
    exploded = bool(epochs) and epochs[-1] > p.explode_factor * min(epochs)
    spiked = spikes(steps, p.spike.factor, p.spike.window)
    return {"diverged": int(not finite or exploded),
            "loss_spikes": len(spiked),
            "diverged_or_spiked": int(not finite or exploded or bool(spiked)),
            "val_force_mae_mev_per_ang": error(metrics.get("val_force_mae_mev_per_ang")),
            "test_force_mae_mev_per_ang": error(mae),
            "test_energy_mae_mev_per_atom": error(metrics.get("test_energy_mae_mev_per_atom")),
            "kept_force_mae_mev_per_ang": error(
                kept.get("force_mae_mev_per_ang"), kept),
            "dropped_force_mae_mev_per_ang": error(
                dropped.get("force_mae_mev_per_ang"), dropped),
            "n_test_kept": kept.get("n_structures"),
            "n_test_dropped": dropped.get("n_structures"),
            "max_force_dropped_fraction": metrics.get("max_force_dropped_fraction") or 0.0,
            "_steps": steps}


def evaluator(s, dataset: str, handling: str, opt: str):
    def evaluate(settings, seeds):
        keys = [(k, seed) for k in range(len(settings)) for seed in seeds]
        jobs = [(overrides_for(s.p, dataset, handling, settings[k], seed),
                 Path(s.out_dir) / "tuning" / f"{dataset}-{handling}-{opt}-{_tag(settings[k])}"
                 f"-s{seed}") for k, seed in keys]
        done = iter(s.map(train, jobs))
        out = [[] for _ in settings]
        for (k, seed), (metrics, csv_rows) in zip(keys, done):
            row = measure(s.p, metrics, csv_rows)
            row.pop("_steps")
            out[k].append({"seed": seed, **row})
        return out
    return evaluate


def _tag(setting: dict) -> str:
    return f"lr{setting['lr']:g}"


def run(s) -> Result:
    p, out_dir = s.p, Path(s.out_dir)
    cells = [(d, h, o) for d in p.datasets_used for h in p.handlings_used for o in s.arms]
    chosen = {cell: s.tune(cell[2], evaluator(s, *cell), {"dataset": cell[0],
                                                         "handling": cell[1]})
              for cell in cells}
    keys = [(d, h, o, seed) for d, h, o in cells for seed in s.report_seeds]
    jobs = [(overrides_for(p, d, h, chosen[(d, h, o)], seed),
             out_dir / "runs" / f"{d}-{h}-{o}-s{seed}") for d, h, o, seed in keys]
    rows = []
    for (d, h, o, seed), (metrics, csv_rows) in zip(keys, s.map(train, jobs)):
        rows.append({"dataset": d, "optimizer": o, "handling": h, "seed": seed,
                     "lr": chosen[(d, h, o)]["lr"], **measure(p, metrics, csv_rows)})
    table = Table("Per dataset, optimizer and force handling at the tuned lr", rows,
                  ["dataset", "optimizer", "handling"], METRICS)
    figures = [plot_losses(rows, p, s, out_dir), plot_mae(rows, p, s, out_dir)]
    kept = sorted({(r["dataset"], r["n_test_kept"], r["n_test_dropped"]) for r in rows})
    setup = ["Datasets: " + "; ".join(f"{d} = {list(p.datasets[d])}" for d in p.datasets_used)
             + f"; model overrides {list(p.model)}; {p.epochs} epochs with the pipeline's "
             "defaults otherwise (plateau-halved lr, EMA weights evaluated, late energy "
             f"stage); seeds {s.report_seeds}.",
             "Optimizers: " + "; ".join(f"{n} = {dict(s.arms[n]['fixed'])}" for n in s.arms)
             + ", each with its own lr grid, tuned per dataset and handling on the tuning seeds "
             "by the validation force MAE.",
             "Force handling (overrides): " + "; ".join(
                 f"{h} = {list(p.handlings[h])}" for h in p.handlings_used) + ".",
             f"diverged: a non-finite training loss or test MAE, or a last-epoch mean training "
             f"loss > {p.explode_factor}x its best epoch's (its errors count as inf). "
             f"loss_spikes: steps whose training loss exceeds {p.spike.factor}x the median of "
             f"the previous {p.spike.window} steps.",
             f"kept/dropped: the test structures whose largest reference force is <= / > "
             f"{p.score_max_force} eV/A (what the filter keeps / drops from training), "
             "(dataset, n kept, n dropped): " + ", ".join(map(str, kept)) + "."]
    return Result(rows, [table], figures, setup)


def plot_losses(rows, p, s, out_dir):
    """Training loss per step, every seed, per dataset and optimizer, one colour a handling."""
    panels = [(d, o) for d in p.datasets_used for o in s.arms]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.8), squeeze=False)
    for ax, (d, o) in zip(axes[0], panels):
        for i, h in enumerate(p.handlings_used):
            for k, r in enumerate(x for x in rows if (x["dataset"], x["optimizer"],
                                                      x["handling"]) == (d, o, h)):
                y = r["_steps"]
                ax.plot(np.arange(len(y)), y, lw=0.6, color=f"C{i}",
                        label=h if k == 0 else None)
        ax.set_yscale("log")
        ax.set(title=f"{d} / {o}: training loss per step", xlabel="step", ylabel="train loss")
        ax.legend(fontsize=7)
    return save(fig, out_dir / "train_loss.png")


def plot_mae(rows, p, s, out_dir):
    """Test force MAE overall, on the kept structures and on the dropped tail."""
    keys = ("test_force_mae_mev_per_ang", "kept_force_mae_mev_per_ang",
            "dropped_force_mae_mev_per_ang")
    fig, axes = plt.subplots(len(p.datasets_used), 3, figsize=(15, 4 * len(p.datasets_used)),
                             squeeze=False)
    hs, opts = list(p.handlings_used), list(s.arms)
    width = 0.8 / len(opts)
    for row_axes, d in zip(axes, p.datasets_used):
        for ax, key in zip(row_axes, keys):
            shown = False
            for i, o in enumerate(opts):
                medians = [summarize(column(rows, key, dataset=d, optimizer=o, handling=h))
                           .median for h in hs]
                medians = [m if m is not None and math.isfinite(m) and m > 0 else np.nan
                           for m in medians]  # no finite run (or no such structures)
                shown |= not all(np.isnan(medians))
                ax.bar(np.arange(len(hs)) + i * width, medians, width, label=o)
            ax.set_xticks(np.arange(len(hs)) + 0.4 - width / 2, hs, fontsize=8, rotation=20)
            ax.set(ylabel=key, title=f"{d}: median over seeds (finite runs)")
            if shown:
                ax.set_yscale("log")
                ax.legend(fontsize=7)
            else:
                ax.text(0.5, 0.5, "no finite value (no such test structures?)",
                        transform=ax.transAxes, ha="center")
    return save(fig, out_dir / "force_mae.png")
