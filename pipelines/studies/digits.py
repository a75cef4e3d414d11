"""sklearn's 8x8 digits (shipped offline) with a small CNN or MLP and a plain training loop.

Shared by the overfit, adamw and cyclic studies. Each seed draws its own train/val/test
split, initialisation and batch order, so the spread over seeds covers all three.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

from .common import generator


def splits(n_train: int, n_val: int, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Random train/val split of the given sizes; every other image is the test set."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    y = torch.tensor(y, dtype=torch.long)
    order = torch.randperm(len(y), generator=generator(seed))
    parts = {"train": order[:n_train], "val": order[n_train:n_train + n_val],
             "test": order[n_train + n_val:]}
    return {k: (x[i], y[i]) for k, i in parts.items()}


def model(kind: str, width: int) -> nn.Module:
    if kind == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * width * 16, 4 * width), nn.ReLU(),
            nn.Linear(4 * width, 10))
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(),
                             nn.Linear(width, 10))
    raise ValueError(f"model={kind!r} is invalid: expected cnn or mlp")


@dataclass
class History:
    """Per epoch (index 0 = before training): losses and accuracies; ``stop_*`` at the
    epoch of lowest val loss (early stopping), test measured on that epoch's weights."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    test_acc: float = float("nan")
    stop_epoch: int = 0
    stop_test_acc: float = float("nan")


@torch.no_grad()
def evaluate(net: nn.Module, data) -> tuple[float, float]:
    x, y = data
    logits = net(x)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def train(net: nn.Module, opt, data: dict, epochs: int, batch_size: int, seed: int,
          scheduler=None) -> History:
    """Minibatch training; ``scheduler`` (if any) steps once per optimizer step. Training
    stops early only if the loss becomes non-finite (the history is then padded with NaN)."""
    g = generator(seed)
    x, y = data["train"]
    hist, best = History(), None

    def record(epoch: int) -> None:
        nonlocal best
        net.eval()
        hist.train_loss.append(evaluate(net, data["train"])[0])
        val_loss, val_acc = evaluate(net, data["val"])
        hist.val_loss.append(val_loss)
        hist.val_acc.append(val_acc)
        if best is None or val_loss < best[0]:
            best = (val_loss, epoch, copy.deepcopy(net.state_dict()))
        net.train()

    record(0)
    for epoch in range(1, epochs + 1):
        for idx in torch.randperm(len(y), generator=g).split(batch_size):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
            if scheduler is not None:
                scheduler.step()
        record(epoch)
        if not np.isfinite(hist.train_loss[-1]):
            pad = epochs - epoch
            for series in (hist.train_loss, hist.val_loss, hist.val_acc):
                series.extend([float("nan")] * pad)
            break
    net.eval()
    hist.test_acc = evaluate(net, data["test"])[1]
    _, hist.stop_epoch, state = best
    net.load_state_dict(state)
    hist.stop_test_acc = evaluate(net, data["test"])[1]
    return hist
