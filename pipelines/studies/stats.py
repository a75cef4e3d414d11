"""Mean, spread and 95% confidence intervals over seeds, and the comparisons verdicts use.

Non-finite values (a diverged run) are left out of every mean; ``n`` counts the values
that entered it, so a table shows when a cell rests on fewer seeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Summary:
    mean: float
    std: float
    n: int
    ci_lo: float
    ci_hi: float


def finite(values: Iterable) -> np.ndarray:
    """The finite floats among ``values`` (None, '' and NaN/inf dropped)."""
    out = []
    for v in values:
        if v is None or v == "":
            continue
        v = float(v)
        if math.isfinite(v):
            out.append(v)
    return np.asarray(out, dtype=float)


def summarize(values: Iterable) -> Summary:
    """Mean, sample std (ddof=1) and the t-based 95% CI of the mean."""
    x = finite(values)
    n = len(x)
    if n == 0:
        return Summary(math.nan, math.nan, 0, math.nan, math.nan)
    mean = float(x.mean())
    if n == 1:
        return Summary(mean, 0.0, 1, math.nan, math.nan)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return Summary(mean, std, n, mean - half, mean + half)


def difference(a: Iterable, b: Iterable) -> Summary:
    """mean(a) - mean(b) with Welch's 95% CI (unpaired, unequal variances)."""
    x, y = finite(a), finite(b)
    if len(x) < 2 or len(y) < 2:
        diff = float(x.mean() - y.mean()) if len(x) and len(y) else math.nan
        return Summary(diff, math.nan, min(len(x), len(y)), math.nan, math.nan)
    va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    diff, se = float(x.mean() - y.mean()), math.sqrt(va + vb)
    if se == 0:
        return Summary(diff, 0.0, min(len(x), len(y)), diff, diff)
    dof = (va + vb) ** 2 / (va**2 / (len(x) - 1) + vb**2 / (len(y) - 1))
    half = float(stats.t.ppf(0.975, dof)) * se
    return Summary(diff, se, min(len(x), len(y)), diff - half, diff + half)


def less(a: Iterable, b: Iterable) -> bool | None:
    """True if mean(a) < mean(b) beyond the 95% CI, False if clearly greater, None if the
    CI of the difference straddles 0 (the seeds cannot tell)."""
    d = difference(a, b)
    if d.ci_hi < 0:
        return True
    if d.ci_lo > 0:
        return False
    return None


def group(rows: list[dict], keys: list[str]) -> dict[tuple, list[dict]]:
    """Rows grouped by their values of ``keys``, in order of first appearance."""
    out: dict[tuple, list[dict]] = {}
    for row in rows:
        out.setdefault(tuple(row[k] for k in keys), []).append(row)
    return out


def column(rows: list[dict], key: str, **where) -> list:
    """``row[key]`` for the rows that have it and whose fields equal ``where``."""
    return [r[key] for r in rows if key in r and all(r.get(k) == v for k, v in where.items())]
