"""The two RL figures: returns vs env steps, and the policy-gradient variance over training
(``Figure`` objects, no pyplot: nothing global changes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def return_curve(episodes: list, history: list[dict], threshold: float | None, window: int,
                 title: str, path: Path) -> Path:
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    if episodes:
        steps, returns, _ = map(np.asarray, zip(*episodes, strict=True))
        ax.plot(steps, returns, ".", ms=2, alpha=0.3, color="C0", label="episode return")
        if len(returns) >= window:
            running = np.convolve(returns, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1:], running, color="C0", label=f"mean of last {window}")
    evals = [(row["env_steps"], row["eval_return"]) for row in history if "eval_return" in row]
    if evals:
        ax.plot(*zip(*evals, strict=True), "o-", color="C1", ms=3, label="greedy evaluation")
    if threshold is not None:
        ax.axhline(threshold, ls="--", color="gray", lw=1, label=f"threshold {threshold:g}")
    ax.set(xlabel="env steps", ylabel="return", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def gradient_variance(history: list[dict], title: str, path: Path) -> Path:
    rows = [row for row in history if "pg_grad_variance" in row]
    fig = Figure(figsize=(6, 5))
    top, bottom = fig.subplots(2, 1, sharex=True)
    if rows:
        steps = [row["env_steps"] for row in rows]
        top.semilogy(steps, [row["pg_grad_variance"] for row in rows], label="variance")
        top.semilogy(steps, [row["pg_grad_norm"] ** 2 for row in rows],
                     label="squared norm (full batch)")
        bottom.plot(steps, [row["pg_grad_cosine"] for row in rows], color="C2")
    top.set(ylabel="policy gradient", title=title)
    top.legend(fontsize=8)
    bottom.set(xlabel="env steps", ylabel="cosine to full batch", ylim=(-1, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
