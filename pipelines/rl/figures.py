"""The two RL figures: returns vs env steps, and the policy-gradient variance over training
(``Figure`` objects, no pyplot: nothing global changes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

from pipelines.rl.history import History


def return_curve(episodes: list, history: History, threshold: float | None, window: int,
                 title: str, path: Path) -> Path:
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    if episodes:
        steps, returns, _ = map(np.asarray, zip(*episodes, strict=True))
        ax.plot(steps, returns, ".", ms=2, alpha=0.3, color="C0", label="episode return")
        if len(returns) >= window:
            running = np.convolve(returns, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1:], running, color="C0", label=f"mean of last {window}")
    steps, evals = history.series("eval/episodic_return")
    if len(evals):
        ax.plot(steps, evals, "o-", color="C1", ms=3, label="greedy evaluation")
    if threshold is not None:
        ax.axhline(threshold, ls="--", color="gray", lw=1, label=f"threshold {threshold:g}")
    ax.set(xlabel="env steps", ylabel="return", title=title)
    ax.xaxis.set_major_formatter(EngFormatter())
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def gradient_variance(history: History, title: str, path: Path) -> Path:
    fig = Figure(figsize=(6, 5))
    top, bottom = fig.subplots(2, 1, sharex=True)
    steps, variance = history.series("diagnostics/pg_minibatch_grad_variance")
    if len(steps):
        top.semilogy(steps, variance, label="variance across minibatches")
        top.semilogy(steps, history.series("diagnostics/pg_grad_norm")[1] ** 2,
                     label="squared norm (full batch)")
        bottom.plot(steps, history.series("diagnostics/pg_minibatch_grad_cosine")[1], color="C2")
        top.legend(fontsize=8)
    top.set(ylabel="policy gradient", title=title)
    bottom.set(xlabel="env steps", ylabel="cosine to full batch", ylim=(-1, 1))
    bottom.xaxis.set_major_formatter(EngFormatter())
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
