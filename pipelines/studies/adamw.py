"""adamw: coupled L2 (adam_l2: decay before the moments) vs decoupled decay (adamw).

(a) Weight norms per subspace. One parameter vector in three blocks: ``zero`` gets no
    loss gradient, ``small`` and ``large`` get zero-mean gradient noise of scale g and G (a
    gradient history without a pull). The same noise drives plain Adam (no decay), so
    ``decay_vs_plain`` isolates what decay does. Fixed lr and wd: a mechanism, not tuned.
(b) Loshchilov & Hutter's lr x weight-decay grid, on an MLP on Fashion-MNIST with a cosine
    schedule. Decay is normalised, lambda = lambda_norm sqrt(b / (B T)) (batch b, B
    training images, T epochs), and given to both arms in the same units: lambda is the
    fraction of a weight removed per step when the preconditioner is 1, so AdamW gets
    torch weight_decay = lambda / lr (its decay per step lr * wd = lambda, L&H's eta_t
    lambda) and Adam+L2 the L2 coefficient lambda / lr (plain SGD at lr would then decay
    by lambda per step too). The grid on the tuning seeds is the heatmap; each arm's best
    cell is reported on the report seeds with the official test set.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .engine import Result, Table
from .engine.arms import generator, make_optimizer
from .engine.figures import band, plt, save
from .problems import images

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


def decay(p, lr: float, lambda_norm: float) -> float:
    """torch weight_decay for either arm: lambda / lr, lambda = lambda_norm sqrt(b/(B T))."""
    return lambda_norm * math.sqrt(p.batch_size / (p.n_train * p.epochs)) / lr


def job(p, setting: dict, seed: int, report: bool) -> dict:
    hp = {k: v for k, v in setting.items() if k != "lambda_norm"}
    hp["weight_decay"] = decay(p, hp["lr"], setting["lambda_norm"])
    return {"data": "fashion_mnist", "root": p.data_root, "seed": seed,
            "sizes": {"train": p.n_train, "val": p.n_val, "test": p.n_test},
            "model": dict(p.model), "optim": hp, "schedule": {"kind": "cosine"},
            "epochs": p.epochs, "batch_size": p.batch_size, "evals": 0,
            "splits": ["val"], "final_splits": ["train", "test"] if report else []}


def grid_evaluate(s):
    def evaluate(settings, seeds):
        jobs = [(job(s.p, st, seed, False),) for st in settings for seed in seeds]
        done = iter(s.map(images.fit, jobs))
        out = []
        for _ in settings:
            rows = []
            for seed in seeds:
                r = next(done)
                rows.append({"seed": seed, "final_val_acc": r["final_val_acc"],
                             "final_val_loss": r["final_val_loss"],
                             "tuning_score": 1 - r["final_val_acc"]})
            out.append(rows)
        return out
    return evaluate


def run(s) -> Result:
    p = s.p
    rows, norms = [], {}
    half_life = math.log(2) / (p.lr * p.weight_decay)
    for seed in s.report_seeds:
        plain = subspace_norms("adam", p, seed)
        for name in DECAYS:
            n = norms[(name, seed)] = subspace_norms(name, p, seed)
            for i, sub in enumerate(SUBSPACES):
                below = np.nonzero(n[:, i] <= 0.5 * n[0, i])[0]
                halved = int(below[0]) if len(below) else p.steps
                rows.append({"part": "a_subspaces", "optimizer": name, "subspace": sub,
                             "seed": seed, "norm_ratio": float(n[-1, i] / n[0, i]),
                             "decay_vs_plain": float(n[-1, i] / plain[-1, i]),
                             "steps_to_half": halved,
                             "half_life_error": abs(halved / half_life - 1)})
    chosen = {}
    for arm in s.arms:
        chosen[arm] = s.tune(arm, grid_evaluate(s), {"part": "b_fashion_mnist"})
    cells = [(arm, seed) for arm in s.arms for seed in s.report_seeds]
    jobs = [(job(p, chosen[arm], seed, True),) for arm, seed in cells]
    for (arm, seed), out in zip(cells, s.map(images.fit, jobs)):
        rows.append({"part": "b_fashion_mnist", "optimizer": arm, "seed": seed,
                     "lr": chosen[arm]["lr"], "lambda_norm": chosen[arm]["lambda_norm"],
                     "final_train_loss": out["final_train_loss"],
                     "final_test_loss": out["final_test_loss"],
                     "final_test_acc": out["final_test_acc"], "diverged": out["diverged"]})
    part_a = [r for r in rows if r["part"] == "a_subspaces"]
    part_b = [r for r in rows if r["part"] == "b_fashion_mnist"]
    tables = [Table(f"(a) Subspace norms after {p.steps} steps", part_a,
                    ["part", "subspace", "optimizer"],
                    ["norm_ratio", "decay_vs_plain", "steps_to_half", "half_life_error"]),
              Table("(b) Fashion-MNIST MLP, each arm at its best (lr, lambda_norm) from the "
                    "tuning grid", part_b, ["part", "optimizer", "lr", "lambda_norm"],
                    ["final_train_loss", "final_test_loss", "final_test_acc", "diverged"])]
    figures = [plot_norms(norms, p, s.report_seeds, s.out_dir),
               plot_heatmaps(s.tuning_rows, s.out_dir)]
    setup = [f"(a) {p.block} weights per block, w0 ~ N(0, 1); gradient noise std 0 / {p.g} / "
             f"{p.G} for zero / small / large; lr={p.lr}, weight_decay={p.weight_decay}, "
             f"{p.steps} steps; AdamW's prediction: every block halves in ln 2 / (lr*wd) = "
             f"{half_life:.4g} steps, until the gradient noise sets a floor. decay_vs_plain = "
             "norm / the norm under Adam without decay on the same noise; steps_to_half = "
             "steps until a block's norm is half its start (the budget if never); "
             "half_life_error = |steps_to_half / (ln 2 / (lr*wd)) - 1|.",
             f"(b) MLP {dict(p.model)} on {p.n_train} Fashion-MNIST training images ({p.n_val} "
             f"held out for the grid, the first {p.n_test or 10000} official test images for "
             f"the report); {p.epochs} epochs, batch {p.batch_size}, cosine schedule to 0; "
             "lambda = lambda_norm sqrt(b/(B T)); torch weight_decay = lambda / lr for both "
             "arms (see the module docstring for the units); grid lr x lambda_norm per arm "
             "on the tuning seeds, scored by validation error."]
    return Result(rows, tables, figures, setup, notes(s.tuning_rows))


def notes(tuning_rows) -> list[str]:
    """How much each arm's best lambda_norm moves with lr on the grid (L&H's decoupling)."""
    out = []
    for arm in DECAYS:
        rs = [r for r in tuning_rows if r["arm"] == arm]
        lrs = sorted({r["tune_lr"] for r in rs})
        best = []
        for lr in lrs:
            cells = {}
            for r in rs:
                if r["tune_lr"] == lr:
                    cells.setdefault(r["tune_lambda_norm"], []).append(r["tuning_score"])
            best.append(min(cells, key=lambda k: np.mean(cells[k])))
        spread = float(np.ptp(np.log10(best))) if len(best) > 1 else 0.0
        out.append(f"{arm}: the best lambda_norm per lr on the tuning grid is "
                   + ", ".join(f"{b:.3g} at lr {lr:.3g}" for lr, b in zip(lrs, best))
                   + f"; it spans {spread:.2g} decades across lr (0 when lr and decay are "
                   "decoupled).")
    return out


def plot_norms(norms, p, seeds, out_dir):
    fig, ax = plt.subplots(figsize=(7, 4.3))
    t = np.arange(p.steps + 1)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, sub in enumerate(SUBSPACES):
        for name, style in (("adam_l2", "-"), ("adamw", "--")):
            curves = [norms[(name, s)][:, i] / norms[(name, s)][0, i] for s in seeds]
            band(ax, t, curves, f"{name}, {sub}-gradient block", color=colors[i], ls=style)
    ax.plot(t, np.exp(-p.lr * p.weight_decay * t), color="gray", ls=":",
            label="exp(-lr*wd*t)")
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="block norm / initial norm",
           title=f"lr={p.lr:g}, weight_decay={p.weight_decay:g}, noise std 0 / {p.g} / {p.G}")
    ax.legend(fontsize=7)
    return save(fig, out_dir / "subspace_norms.png")


def plot_heatmaps(tuning_rows, out_dir):
    """L&H's Fig. 2: validation error over lr x lambda_norm, per arm (tuning seeds)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, arm in zip(axes, DECAYS):
        rs = [r for r in tuning_rows if r["arm"] == arm]
        lrs = sorted({r["tune_lr"] for r in rs})
        lams = sorted({r["tune_lambda_norm"] for r in rs})
        grid = np.full((len(lams), len(lrs)), np.nan)
        for i, lam in enumerate(lams):
            for j, lr in enumerate(lrs):
                v = [r["tuning_score"] for r in rs if r["tune_lr"] == lr
                     and r["tune_lambda_norm"] == lam]
                if v:
                    grid[i, j] = 100 * np.mean(v)
        im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis_r")
        for i in range(len(lams)):
            for j in range(len(lrs)):
                if np.isfinite(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize=7,
                            color="white")
        ax.set_xticks(range(len(lrs)), [f"{x:.2g}" for x in lrs], fontsize=7)
        ax.set_yticks(range(len(lams)), [f"{x:.2g}" for x in lams], fontsize=7)
        ax.set(xlabel="lr", ylabel="normalised weight decay lambda_norm",
               title=f"{arm}: validation error % (tuning seeds)")
        fig.colorbar(im, ax=ax)
    return save(fig, out_dir / "lr_weight_decay_heatmap.png")
