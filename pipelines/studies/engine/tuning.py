"""Fair tuning: every arm gets its own grid, scored on the tuning seeds by one stated metric.

A grid axis is a list of values or a log-spaced range ``{low, high, num}`` (``scale:
one_minus_log`` spaces 1 - x logarithmically, for momentum-like betas). When the pick sits
at the edge of a range, that axis is extended once by ``extend`` points past the edge at
the same spacing and the grid re-scored; a pick still at an edge, or at the end of a fixed
list of numbers, is flagged in the report.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pipelines.harness.errors import ConfigError

from .protocol import plain

SCALES = ("log", "one_minus_log")


@dataclass
class Axis:
    name: str
    values: list
    scale: str | None = None      # None: a fixed list, never extended

    def _to(self, x: float) -> float:
        return math.log(1 - x) if self.scale == "one_minus_log" else math.log(x)

    def _from(self, u: float) -> float:
        """Back from the log scale, 3 significant digits (of 1 - x for one_minus_log)."""
        v = float(f"{math.exp(u):.3g}")
        return round(1 - v, 12) if self.scale == "one_minus_log" else v

    def edge(self, value) -> str | None:
        """'low' or 'high' if ``value`` is the smallest or largest of the axis's numbers (a
        fixed list too: flagged, not extended); 0 at the low end of a list is a bound (no
        decay, no momentum), not an edge; strings and booleans have none."""
        numbers = [v for v in self.values if isinstance(v, (int, float))
                   and not isinstance(v, bool)]
        if len(numbers) < 2 or len(numbers) != len(self.values):
            return None
        if value == min(numbers) and (self.scale is not None or value != 0):
            return "low"
        if value == max(numbers):
            return "high"
        return None

    def extended(self, side: str, points: int) -> list:
        """``points`` new values past ``side`` at the range's spacing (valid ones only)."""
        u = sorted(self._to(v) for v in self.values)
        step = (u[-1] - u[0]) / (len(u) - 1)
        # on 1 - x the log falls as x grows: 'high' in x is 'low' in u
        towards_low_u = (side == "low") != (self.scale == "one_minus_log")
        start, sign = (u[0], -1) if towards_low_u else (u[-1], 1)
        new = [self._from(start + sign * step * k) for k in range(1, points + 1)]
        if self.scale == "one_minus_log":
            new = [v for v in new if 0 <= v < 1]
        return [v for v in new if v > 0 and v not in self.values] if self.scale == "log" \
            else [v for v in new if v not in self.values]


def axis(name: str, spec, key: str) -> Axis:
    spec = plain(spec)
    if isinstance(spec, list) and spec:
        return Axis(name, spec)
    if isinstance(spec, dict) and "values" in spec and isinstance(spec["values"], list):
        return Axis(name, spec["values"])
    if isinstance(spec, dict) and {"low", "high", "num"} <= set(spec):
        scale = spec.get("scale", "log")
        if scale not in SCALES:
            raise ConfigError(f"{key}.scale", scale, " or ".join(SCALES))
        low, high, num = spec["low"], spec["high"], spec["num"]
        valid = (0 < low < high) if scale == "log" else (0 <= low < high < 1)
        if not (isinstance(num, int) and num >= 2 and valid):
            raise ConfigError(key, spec, "low < high (both > 0; in [0, 1) for one_minus_log)"
                              " and num >= 2")
        ax = Axis(name, [], scale)
        u = np.linspace(ax._to(low), ax._to(high), num)
        ax.values = sorted({ax._from(x) for x in u})
        return ax
    raise ConfigError(key, spec, "a list of values, {values: [...]} or {low, high, num}")


@dataclass
class Pick:
    """What tuning chose for one arm (in one cell of the study), and how."""

    arm: str
    cell: dict
    chosen: dict                       # the tuned values only
    score: float | None
    axes: dict = field(default_factory=dict)       # name -> every value tried
    extended: list = field(default_factory=list)   # axes extended once
    at_edge: list = field(default_factory=list)    # axes still picked at an edge
    trials: list = field(default_factory=list)     # (setting, score) for every setting
    fixed: dict = field(default_factory=dict)      # the arm's values that were not tuned

    def as_dict(self) -> dict:
        return {"arm": self.arm, "cell": self.cell, "chosen": self.chosen,
                "score": self.score, "axes": self.axes, "extended": self.extended,
                "at_edge": self.at_edge, "tuned": bool(self.axes), "fixed": self.fixed}


def aggregate(scores: list[float], goal: str) -> float:
    """Mean over the tuning seeds; a non-finite run makes the setting the worst."""
    x = np.asarray(scores, float)
    if not len(x) or not np.all(np.isfinite(x)):
        return math.inf if goal == "min" else -math.inf
    return float(x.mean())


def tune(arm: str, axes: list[Axis], score: Callable[[list[dict]], list[float]], goal: str,
         extend: int, cell: dict | None = None) -> Pick:
    """Score the grid (``score`` takes settings, returns one number per setting), extend
    each axis picked at an edge once, pick again, flag what is still at an edge."""
    tried: dict[tuple, float] = {}

    def run(grid_axes):
        settings = [dict(zip([a.name for a in grid_axes], combo))
                    for combo in itertools.product(*[a.values for a in grid_axes])]
        todo = [s for s in settings if _key(s) not in tried]
        for s, v in zip(todo, score(todo) if todo else []):
            tried[_key(s)] = float(v)
        return settings

    def best(settings):
        better = min if goal == "min" else max
        return better(settings, key=lambda s: tried[_key(s)])  # ties: the first in order

    settings = run(axes)
    pick = best(settings)
    extended = []
    for ax in axes:
        side = ax.edge(pick[ax.name])
        if side and extend and ax.scale is not None:  # a range: its spacing extends it
            new = ax.extended(side, extend)
            if new:
                ax.values = sorted(ax.values + new)
                extended.append(ax.name)
    if extended:
        settings = run(axes)
        pick = best(settings)
    at_edge = [ax.name for ax in axes if ax.edge(pick[ax.name])]
    return Pick(arm, dict(cell or {}), pick, tried[_key(pick)],
                {a.name: list(a.values) for a in axes}, extended, at_edge,
                [(s, tried[_key(s)]) for s in settings])


def at_edge(pick: dict) -> list:
    """The axes of a stored pick (``Pick.as_dict``) picked at an edge: those it flagged when
    it ran, and any picked at an end of its list of values (so a result stored before fixed
    lists were flagged reads the same as a new one)."""
    chosen = pick.get("chosen", {})
    again = [name for name, values in pick.get("axes", {}).items()
             if name in chosen and Axis(name, values).edge(chosen[name])]
    return [name for name in pick.get("axes", {})
            if name in pick.get("at_edge", []) or name in again]


def _key(setting: dict) -> tuple:
    return tuple(sorted(setting.items()))
