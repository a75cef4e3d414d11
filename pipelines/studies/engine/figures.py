"""Figures for reports: the Agg backend (no display needed) and one way to save."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["band", "plt", "save"]


def save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def band(ax, x, curves, label: str, **style) -> None:
    """Mean over seeds (rows of ``curves``) with a shaded ±1 std band."""
    curves = np.asarray(curves, dtype=float)
    mean, std = np.nanmean(curves, axis=0), np.nanstd(curves, axis=0)
    line, = ax.plot(x, mean, label=label, **style)
    ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)
