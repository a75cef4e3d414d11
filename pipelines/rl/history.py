"""Per-update metrics kept by the module for the figures and the summary.

Stored as columns (NaN where an update logged no value for a key), so a checkpoint holds a
few float tensors rather than one dict per update, however long the run.
"""

from __future__ import annotations

import math

import numpy as np
import torch


class History:
    def __init__(self) -> None:
        self.columns: dict[str, list[float]] = {}
        self.length = 0

    def append(self, row: dict[str, float]) -> None:
        for key in row.keys() | self.columns.keys():
            self.columns.setdefault(key, [math.nan] * self.length).append(
                float(row.get(key, math.nan)))
        self.length += 1

    def series(self, key: str, x: str = "global_step") -> tuple[np.ndarray, np.ndarray]:
        """(x, key) at the updates that logged ``key``."""
        if key not in self.columns:
            return np.array([]), np.array([])
        ys = np.asarray(self.columns[key])
        logged = ~np.isnan(ys)
        return np.asarray(self.columns[x])[logged], ys[logged]

    def last(self, key: str) -> float | None:
        ys = self.series(key)[1]
        return float(ys[-1]) if len(ys) else None

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {key: torch.tensor(values, dtype=torch.float64)
                for key, values in self.columns.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.columns = {key: values.tolist() for key, values in state.items()}
        self.length = len(next(iter(self.columns.values()), []))
