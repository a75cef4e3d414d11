"""Image classifiers for the studies that train on images (overfit, adamw, cyclic): the
data splits, the models, a plain minibatch loop with a per-step lr schedule, evaluation.

``fit(job)`` is one training run described by a plain dict, so a study can hand a list of
jobs to worker processes. Each seed draws its own subsets, initialisation and batch order;
the test set (Fashion-MNIST's official 10,000) is only ever evaluated, never drawn from.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.optim import lr_scheduler

import optim
from data.images import load_digits, load_fashion_mnist, subset

from ..engine.arms import generator, make_optimizer

DATASETS = ("fashion_mnist", "digits")


@lru_cache(maxsize=2)
def _images(name: str, root: str | None):
    if name == "fashion_mnist":
        return load_fashion_mnist(root)
    if name == "digits":
        return load_digits()
    raise ValueError(f"data={name!r} is invalid: expected one of {', '.join(DATASETS)}")


def splits(name: str, sizes: dict, seed: int, root: str | None = None) -> dict:
    """{split: (float images, labels)}. Fashion-MNIST: ``val`` then ``train`` drawn from
    the official training set (so a larger train set holds the smaller one and val is the
    same for every size), ``test`` the official test set (its first ``sizes['test']``
    images if given). Digits: every part drawn, the rest is ``test``."""
    images = _images(name, root)
    if name == "fashion_mnist":
        parts = subset(images["train"], {"val": sizes["val"], "train": sizes["train"]}, seed)
        n_test = sizes.get("test") or len(images["test"])
        parts["test"] = images["test"].take(torch.arange(n_test))
    else:
        pool = images["all"]
        rest = len(pool) - sizes["val"] - sizes["train"]
        parts = subset(pool, {"val": sizes["val"], "train": sizes["train"], "test": rest}, seed)
    return {k: _layout(*v.floats()) for k, v in parts.items()}


def _layout(x: torch.Tensor, y: torch.Tensor):
    """channels_last: on CPU, convolutions and pooling run 1.3x (training) to 4x
    (evaluation) faster than in the default layout."""
    return x.contiguous(memory_format=torch.channels_last), y


def model(kind: str, width: int, shape: tuple[int, int, int]) -> nn.Module:
    c, h, w = shape
    if kind == "cnn":
        return nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * width * (h // 4) * (w // 4), 4 * width), nn.ReLU(),
            nn.Linear(4 * width, 10)).to(memory_format=torch.channels_last)
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, width), nn.ReLU(),
                             nn.Linear(width, 10))
    raise ValueError(f"model={kind!r} is invalid: expected cnn or mlp")


def schedule(opt, spec: dict, total: int):
    """A per-step schedule: constant, step (x gamma at each milestone fraction of the run),
    cosine (to 0), triangular / triangular2 (Smith's cycles between base_lr and max_lr,
    ``cycles`` of them ending with the run), range (lr from lr_min to lr_max, geometric:
    the LR range test)."""
    kind = spec.get("kind", "constant")
    if kind == "constant":
        return optim.schedules.constant(opt)
    if kind == "step":
        milestones = [max(1, int(f * total)) for f in spec["milestones"]]
        return lr_scheduler.MultiStepLR(opt, milestones, gamma=spec["gamma"])
    if kind == "cosine":
        return optim.schedules.warmup_cosine(opt, 0, total)
    if kind in ("triangular", "triangular2"):
        return optim.schedules.cyclical(opt, base_lr=spec["base_lr"], max_lr=spec["max_lr"],
                                        step_size_up=max(1, total // (2 * spec["cycles"])),
                                        mode=kind)
    if kind == "range":
        ratio = spec["lr_max"] / spec["lr_min"]
        for group in opt.param_groups:
            group["lr"] = spec["lr_min"]
            group["initial_lr"] = spec["lr_min"]
        return lr_scheduler.LambdaLR(opt, lambda s: ratio ** (min(s, total - 1)
                                                              / max(1, total - 1)))
    raise ValueError(f"schedule kind={kind!r} is invalid: expected constant, step, cosine, "
                     "triangular, triangular2 or range")


@torch.no_grad()
def evaluate(net: nn.Module, data, batch: int = 250) -> tuple[float, float]:
    """Mean cross-entropy and accuracy; a non-finite loss is returned as inf."""
    x, y = data
    loss, correct = 0.0, 0
    for i in range(0, len(y), batch):
        logits = net(x[i:i + batch])
        loss += F.cross_entropy(logits, y[i:i + batch], reduction="sum").item()
        correct += (logits.argmax(1) == y[i:i + batch]).sum().item()
    loss /= len(y)
    return (loss if math.isfinite(loss) else math.inf), correct / len(y)


def fit(job: dict) -> dict:
    """One run. ``job``: data, root, sizes, seed, model {kind, width}, optim (hyperparameters
    with name), schedule, epochs, batch_size, splits (evaluated ``evals`` times during the
    run, at the start if evals > 0, and at the end), final_splits (evaluated at the end
    only), target (optional {split, acc}: steps until that split's accuracy first reaches
    acc, seen at the evaluation points).

    Returns final_<split>_loss/acc, diverged (a non-finite loss stops the run; its losses
    are inf), steps, with a target steps_to_target and reached_target (0: censored at the
    budget); ``_curve`` holds every evaluation."""
    torch.manual_seed(job["seed"])
    data = splits(job["data"], job["sizes"], job["seed"], job.get("root"))
    x, y = data["train"]
    net = model(job["model"]["kind"], job["model"]["width"], tuple(x.shape[1:]))
    opt = make_optimizer(job["optim"], net.parameters())
    total = job["epochs"] * -(-len(y) // job["batch_size"])
    sched = schedule(opt, job.get("schedule", {}), total)
    evals = job.get("evals", 0)
    points = set(np.linspace(0, total, evals + 2)[1:-1].round().astype(int).tolist())
    target, curve = job.get("target"), {"step": []}
    state = {"step": 0, "reached": None, "diverged": False}

    def record(names):
        net.eval()
        curve["step"].append(state["step"])
        for split in names:
            loss, acc = evaluate(net, data[split])
            loss = math.inf if state["diverged"] else loss
            curve.setdefault(f"{split}_loss", []).append(loss)
            curve.setdefault(f"{split}_acc", []).append(acc)
            if (target and split == target["split"] and state["reached"] is None
                    and acc >= target["acc"] and not state["diverged"]):
                state["reached"] = state["step"]
        net.train()

    if evals:
        record(job["splits"])
    g = generator(job["seed"])
    for _ in range(job["epochs"]):
        for idx in torch.randperm(len(y), generator=g).split(job["batch_size"]):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(x[idx]), y[idx])
            if not torch.isfinite(loss):
                state["diverged"] = True
                break
            loss.backward()
            opt.step()
            sched.step()
            state["step"] += 1
            if state["step"] in points:
                record(job["splits"])
        if state["diverged"]:
            break
    every = list(dict.fromkeys([*job["splits"], *job.get("final_splits", [])]))
    record(every)
    out = {"diverged": int(state["diverged"]), "steps": total, "_curve": curve}
    for split in every:
        out[f"final_{split}_loss"] = curve[f"{split}_loss"][-1]
        out[f"final_{split}_acc"] = curve[f"{split}_acc"][-1]
    if target:
        out["reached_target"] = int(state["reached"] is not None)
        out["steps_to_target"] = state["reached"] if state["reached"] is not None else total
    return out


def range_test(job: dict) -> dict:
    """Smith's LR range test: one run with lr rising geometrically from lr_min to lr_max
    over ``epochs``; the minibatch loss at every step (``_lrs``, ``_losses``), stopped once
    the loss exceeds 4x its best (the usual cut-off)."""
    torch.manual_seed(job["seed"])
    data = splits(job["data"], job["sizes"], job["seed"], job.get("root"))
    x, y = data["train"]
    net = model(job["model"]["kind"], job["model"]["width"], tuple(x.shape[1:]))
    opt = make_optimizer(job["optim"], net.parameters())
    total = job["epochs"] * -(-len(y) // job["batch_size"])
    sched = schedule(opt, job["schedule"], total)
    g = generator(job["seed"])
    lrs, losses, best = [], [], math.inf
    for _ in range(job["epochs"]):
        for idx in torch.randperm(len(y), generator=g).split(job["batch_size"]):
            lrs.append(opt.param_groups[0]["lr"])
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(x[idx]), y[idx])
            value = loss.item()
            losses.append(value if math.isfinite(value) else math.inf)
            if not math.isfinite(value) or value > 4 * best:
                return {"_lrs": lrs, "_losses": losses}
            best = min(best, value)
            loss.backward()
            opt.step()
            sched.step()
    return {"_lrs": lrs, "_losses": losses}
