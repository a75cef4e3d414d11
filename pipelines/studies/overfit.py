"""overfit: does Adam fit the training set better and generalise worse than SGD+momentum?

(a) Wilson et al. (2017, sec. 3): least squares on a constructed binary problem where n
    samples have label y = +1 or -1 (a fixed fraction p of them +1) and features
    x_1 = y, x_2 = x_3 = 1, plus one (y=+1) or five (y=-1) features unique to the sample.
    From w=0, gradient descent converges to the minimum-norm solution, which classifies a
    new point (its unique features unseen) by its first feature; adaptive methods converge
    to w proportional to sign(X'y), which weighs x_2, x_3 as much as x_1 and labels every
    new point +1 (test error 1-p). Full-batch; test error and loss in closed form over the
    distribution of new points.
(b) A small CNN on Fashion-MNIST subsets: SGD+momentum and Adam, both with the same step
    decay, each tuned over lr x weight decay on the tuning seeds by validation accuracy
    (2,000 held-out training images); reported on the official test set.
"""

from __future__ import annotations

import math

import torch

from .engine import Result, Table
from .engine.arms import describe, generator, grouped_optimizer
from .engine.figures import band, plt, save
from .problems import images

# ------------------------------------------------------------------ (a) Wilson et al.


def wilson_data(n: int, p_pos: float, seed: int):
    """X (n, 3 + 5n), y (n,): round(p n) samples labelled +1, at random positions."""
    g = generator(seed)
    y = -torch.ones(n, dtype=torch.float64)
    y[torch.randperm(n, generator=g)[: round(p_pos * n)]] = 1.0
    x = torch.zeros(n, 3 + 5 * n, dtype=torch.float64)
    x[:, 0], x[:, 1], x[:, 2] = y, 1.0, 1.0
    for i in range(n):
        first = 3 + 5 * i
        x[i, first: first + (1 if y[i] > 0 else 5)] = 1.0
    return x, y


def wilson_new_points(w: torch.Tensor, p_pos: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Expected test error and squared loss of w over new points: only w_1..w_3 reach a
    point whose unique features were never seen (their weights stay 0 from w=0)."""
    pos = w[..., 0] + w[..., 1] + w[..., 2]          # prediction for y = +1
    neg = -w[..., 0] + w[..., 1] + w[..., 2]         # prediction for y = -1
    error = p_pos * (pos <= 0).double() + (1 - p_pos) * (neg >= 0).double()
    loss = p_pos * (pos - 1) ** 2 + (1 - p_pos) * (neg + 1) ** 2
    return error, loss


def wilson_fit(p, settings: list[dict], seeds: list[int]) -> list[list[dict]]:
    """Full-batch training of every (setting, seed) as one param group; rows per setting."""
    w_cfg = p.wilson
    data = [wilson_data(w_cfg.n, w_cfg.p_pos, s) for s in seeds]
    runs = [(si, j) for si in range(len(settings)) for j in range(len(seeds))]
    ws = [torch.zeros(3 + 5 * w_cfg.n, dtype=torch.float64, requires_grad=True) for _ in runs]
    opt = grouped_optimizer([settings[si] for si, _ in runs], ws)
    xs = torch.stack([data[j][0] for _, j in runs])
    ys = torch.stack([data[j][1] for _, j in runs])
    for _ in range(p.wilson_steps):
        w = torch.stack([q.detach() for q in ws])
        residual = torch.einsum("rnd,rd->rn", xs, w) - ys
        for q, grad in zip(ws, torch.einsum("rnd,rn->rd", xs, residual) / w_cfg.n):
            q.grad = grad
        opt.step()
    out = [[] for _ in settings]
    for w, (si, j) in zip(ws, runs):
        x, y = data[j]
        w = w.detach()
        train = float(0.5 * ((x @ w - y) ** 2).mean())
        err, loss = wilson_new_points(w, w_cfg.p_pos)
        train = train if math.isfinite(train) else math.inf
        loss = float(loss) if math.isfinite(train) else math.inf
        out[si].append({"seed": seeds[j], "train_loss": train,
                        "test_error": float(err) if math.isfinite(train) else 1.0,
                        "test_loss": loss, "tuning_score": loss,
                        "w_123": [float(v) for v in w[:3]]})
    return out


# ------------------------------------------------------------------ (b) Fashion-MNIST CNN


def cnn_job(p, setting: dict, n_train: int, seed: int, report: bool) -> dict:
    hp = dict(setting)
    return {"data": "fashion_mnist", "root": p.data_root, "seed": seed,
            "sizes": {"train": n_train, "val": p.n_val, "test": p.n_test},
            "model": dict(p.model),
            "optim": hp, "schedule": dict(p.schedule), "epochs": p.epochs,
            "batch_size": p.batch_size, "evals": p.evals if report else 0,
            "splits": ["train", "val"] if report else ["val"],
            "final_splits": ["train", "test"] if report else []}


def cnn_evaluate(s, n_train: int):
    def evaluate(settings, seeds):
        jobs = [(cnn_job(s.p, st, n_train, seed, False),) for st in settings for seed in seeds]
        done = iter(s.map(images.fit, jobs))
        return [[{"seed": seed, **_plain(next(done))} for seed in seeds] for _ in settings]
    return evaluate


def _plain(out: dict) -> dict:
    """A run's scalars, with the tuning score: the final validation error."""
    return {**{k: v for k, v in out.items() if not k.startswith("_")},
            "tuning_score": 1 - out["final_val_acc"]}


def run(s) -> Result:
    p = s.p
    rows, curves, chosen = [], {}, {}
    for arm in p.wilson.arms:
        hp = s.tune(arm, lambda st, seeds: wilson_fit(p, st, seeds), {"part": "a_wilson"})
        chosen[("a_wilson", arm)] = hp
        for r in wilson_fit(p, [hp], s.report_seeds)[0]:
            w1, w2, w3 = r.pop("w_123")
            rows.append({"part": "a_wilson", "optimizer": arm, **r, "w1": w1, "w2_plus_w3":
                         w2 + w3})
    cnn_arms = [a for a in s.arms if a not in p.wilson.arms]
    for n_train in p.n_trains:
        for arm in cnn_arms:
            hp = s.tune(arm, cnn_evaluate(s, n_train), {"part": "b_cnn", "n_train": n_train})
            chosen[(n_train, arm)] = hp
        cells = [(arm, seed) for arm in cnn_arms for seed in s.report_seeds]
        jobs = [(cnn_job(p, chosen[(n_train, arm)], n_train, seed, True),)
                for arm, seed in cells]
        for (arm, seed), out in zip(cells, s.map(images.fit, jobs)):
            curves[(n_train, arm, seed)] = out["_curve"]
            rows.append({"part": "b_cnn", "n_train": n_train, "optimizer": arm, "seed": seed,
                         "diverged": out["diverged"],
                         "final_train_loss": out["final_train_loss"],
                         "final_test_loss": out["final_test_loss"],
                         "final_test_acc": out["final_test_acc"],
                         "final_train_acc": out["final_train_acc"],
                         "loss_gap": out["final_test_loss"] - out["final_train_loss"],
                         "acc_gap": out["final_train_acc"] - out["final_test_acc"]})
    part_a = [r for r in rows if r["part"] == "a_wilson"]
    part_b = [r for r in rows if r["part"] == "b_cnn"]
    tables = [Table("(a) Wilson et al.'s construction: train loss and error on new points",
                    part_a, ["part", "optimizer"], ["train_loss", "test_error", "test_loss",
                                                    "w1", "w2_plus_w3"]),
              Table("(b) Fashion-MNIST CNN at each arm's tuned lr and weight decay", part_b,
                    ["part", "n_train", "optimizer"],
                    ["final_train_loss", "final_test_loss", "loss_gap", "final_train_acc",
                     "final_test_acc", "acc_gap", "diverged"])]
    figures = [plot_curves(curves, chosen, p, cnn_arms, s.report_seeds, s.out_dir)]
    w = p.wilson
    setup = [f"(a) n={w.n} samples, {round(w.p_pos * w.n)} labelled +1, d={3 + 5 * w.n} "
             f"features; loss |Xw - y|^2 / (2n), full batch from w=0 for {p.wilson_steps} steps; "
             f"arms " + ", ".join(f"{a} = {describe(s.arms[a]['fixed'])}" for a in w.arms)
             + "; each tuned by the expected squared loss on new points (tuning_score; the "
             "expectation over the distribution, computed exactly) on the tuning seeds; "
             "test_error and test_loss are that expectation for the reported seeds' solutions; "
             "w1 and "
             "w2_plus_w3: the weights that decide a new point.",
             f"(b) Fashion-MNIST, training subsets of {list(p.n_trains)} images and {p.n_val} "
             "validation images drawn per seed from the official training set; the first "
             f"{p.n_test or 10000} of the official 10,000 test images only for the reported "
             f"numbers. CNN {dict(p.model)}; "
             f"{p.epochs} epochs, batch {p.batch_size}, schedule {dict(p.schedule)} (both "
             "arms); arms " + ", ".join(f"{a} = {describe(s.arms[a]['fixed'])}"
                                        for a in cnn_arms)
             + "; tuned per training size over lr x weight_decay by the final validation error"
             " (tuning_score = 1 - validation accuracy)."
             " loss_gap = test loss - train loss; acc_gap = train accuracy - test accuracy."]
    return Result(rows, tables, figures, setup)


def plot_curves(curves, chosen, p, arms, seeds, out_dir):
    """Train and validation loss over training at each arm's tuned setting, per size."""
    fig, axes = plt.subplots(1, len(p.n_trains), figsize=(5.5 * len(p.n_trains), 4.2),
                             squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, n_train in zip(axes[0], p.n_trains):
        for color, arm in zip(colors, arms):
            cs = [curves[(n_train, arm, s)] for s in seeds]
            step = cs[0]["step"]
            if not all(c["step"] == step for c in cs):
                continue  # a diverged run stopped early: its curve is in results.csv
            lr = chosen[(n_train, arm)]["lr"]
            band(ax, step, [c["train_loss"] for c in cs], f"{arm} train (lr {lr:.3g})",
                 color=color, ls="--")
            band(ax, step, [c["val_loss"] for c in cs], f"{arm} val", color=color)
        ax.set_yscale("log")
        ax.set(xlabel="step", ylabel="cross-entropy",
               title=f"Fashion-MNIST, n_train={n_train} (mean ± std)")
        ax.legend(fontsize=7)
    return save(fig, out_dir / "loss_curves.png")
