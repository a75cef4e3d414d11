"""The statistics a verdict rests on, over seeds: summaries with confidence intervals,
paired and one-sample tests, equivalence (TOST), censored paired comparisons, bootstrap CIs
and Holm's correction.

scipy does the tests it has (t, Wilcoxon signed-rank, Mann-Whitney, binomial, bootstrap);
this module decides what goes in: pairs, directions, margins, censoring. A diverged run is
a value of +inf (or -inf), never dropped: summaries count it, rank tests rank it, and a
paired comparison that holds one is decided by the order of the pairs alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

LESS, GREATER = "less", "greater"


def values(xs: Iterable) -> np.ndarray:
    """Floats; None and '' (a blank CSV cell) become NaN."""
    return np.asarray([math.nan if x is None or x == "" else float(x) for x in xs], float)


@dataclass(frozen=True)
class Summary:
    """Over the values present: n, how many are non-finite (diverged), and over the finite
    ones the mean, sample std, t-based CI of the mean and the median."""

    n: int
    failed: int
    mean: float
    std: float
    ci_lo: float
    ci_hi: float
    median: float


def summarize(xs: Iterable, level: float = 0.95) -> Summary:
    """Over the values present (None and '' are missing, not failures)."""
    x = values(v for v in xs if v is not None and v != "")
    ok = x[np.isfinite(x)]
    n, failed = len(x), int(len(x) - len(ok))
    if not len(ok):
        return Summary(n, failed, math.nan, math.nan, math.nan, math.nan, math.nan)
    mean, median = float(ok.mean()), float(np.median(ok))
    if len(ok) == 1:
        return Summary(n, failed, mean, 0.0, math.nan, math.nan, median)
    std = float(ok.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, len(ok) - 1)) * std / math.sqrt(len(ok))
    return Summary(n, failed, mean, std, mean - half, mean + half, median)


@dataclass(frozen=True)
class Test:
    """A one-sided question asked both ways: ``p_support`` for the claimed direction,
    ``p_contra`` for the opposite one. ``estimate`` is the effect in the metric's units
    with its bootstrap CI; ``detail`` holds the other statistics shown in the report."""

    method: str
    n: int
    estimate: float
    ci: tuple[float, float]
    p_support: float
    p_contra: float
    detail: dict = field(default_factory=dict)

    @property
    def p(self) -> float:
        """Two-sided: twice the smaller one-sided p (at most 1)."""
        return min(1.0, 2 * min(self.p_support, self.p_contra))


def _flip(alternative: str) -> str:
    return GREATER if alternative == LESS else LESS


def t_test(d: Sequence[float], alternative: str, popmean: float = 0.0) -> float:
    """One-sample t (a paired t when ``d`` are differences): p of mean(d) < popmean
    (``less``) or > popmean (``greater``). Constant d: 0 or 1 by its side, 0.5 on it."""
    d = np.asarray(d, float)
    if len(d) < 2:
        return 1.0
    if np.ptp(d) <= 1e-13 * max(1.0, float(np.max(np.abs(d)))):
        side = float(d[0] - popmean)
        if side == 0:
            return 0.5
        return 0.0 if (side < 0) == (alternative == LESS) else 1.0
    return float(stats.ttest_1samp(d, popmean, alternative=alternative).pvalue)


def signed_rank(d: Sequence[float], alternative: str, popmean: float = 0.0) -> float:
    """Wilcoxon signed-rank p of d - popmean (zeros dropped, exact for small n without ties,
    as scipy decides); 1 when every difference is zero."""
    d = np.asarray(d, float) - popmean
    if not np.any(d != 0):
        return 1.0
    return float(stats.wilcoxon(d, alternative=alternative, zero_method="wilcox").pvalue)


def sign_test(wins: int, losses: int, alternative: str = GREATER) -> float:
    """Exact binomial p that wins outnumber losses (``greater``) or the reverse; ties are
    dropped before counting."""
    if wins + losses == 0:
        return 1.0
    return float(stats.binomtest(wins, wins + losses, 0.5, alternative=alternative).pvalue)


def tost(d: Sequence[float], low: float, high: float) -> tuple[float, float, float]:
    """Two one-sided t tests of low < mean(d) < high: (p, p_low, p_high) with
    p = max(p_low, p_high); equivalence is shown when p < alpha."""
    d = np.asarray(d, float)
    p_low, p_high = t_test(d, GREATER, low), t_test(d, LESS, high)
    return max(p_low, p_high), p_low, p_high


def bootstrap_ci(x: Sequence[float], level: float, resamples: int, seed: int,
                 statistic=np.mean) -> tuple[float, float]:
    """Percentile bootstrap CI of ``statistic`` over the rows of ``x`` (pairs resampled
    together when x holds differences). Degenerate samples give the point value."""
    x = np.asarray(x, float)
    if len(x) == 0 or not np.all(np.isfinite(x)):
        return math.nan, math.nan
    if len(x) == 1 or np.ptp(x) == 0:
        v = float(statistic(x))
        return v, v
    res = stats.bootstrap((x,), statistic, n_resamples=resamples, confidence_level=level,
                          method="percentile", random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: the i-th smallest p times (m - i), made monotone and
    capped at 1. Controls the family-wise error over the m hypotheses."""
    p = np.asarray(pvalues, float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def order_scores(a: np.ndarray, b: np.ndarray, a_event: np.ndarray | None = None,
                 b_event: np.ndarray | None = None) -> np.ndarray:
    """Per pair: -1 if a is surely smaller, +1 if surely larger, 0 if tied or unknown.

    Without events: the order of the values (inf included, NaN unknown). With events (1 =
    observed, 0 = censored: the true value is at least the one given), a censored value
    is known larger only than observed values below it (Gehan's scoring)."""
    if a_event is None:
        a_event = np.ones(len(a), bool)
        b_event = np.ones(len(b), bool)
    out = np.zeros(len(a), int)
    for i, (x, y, ex, ey) in enumerate(zip(a, b, a_event, b_event)):
        if math.isnan(x) or math.isnan(y):
            continue
        if ex and ey:  # by comparison, not x - y: two runs diverged to inf are tied
            out[i] = int(x > y) - int(x < y)
        elif ex and not ey:
            out[i] = -1 if x < y else 0
        elif ey and not ex:
            out[i] = 1 if y < x else 0
    return out


def compare_paired(a: Sequence[float], b: Sequence[float], alternative: str, *,
                   factor: float = 1.0, shift: float = 0.0, stat: str = "t",
                   level: float = 0.95, resamples: int = 9999, seed: int = 0) -> Test:
    """Is a < factor * b + shift (``less``) or > (``greater``), pair by pair?

    On d = a - factor*b - shift: paired t and Wilcoxon signed-rank, the bootstrap CI of
    mean(d). ``stat`` picks the test that decides (t or wilcoxon). A pair holding a
    non-finite value (a diverged run) makes d unusable; then the exact sign test on the
    pairs' order decides, and the report says so."""
    a, b = values(a), values(b)
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return _order_test(a, factor * b + shift, alternative, "sign test on pair order "
                           "(a run diverged)")
    d = a - factor * b - shift
    p_t = (t_test(d, alternative), t_test(d, _flip(alternative)))
    p_w = (signed_rank(d, alternative), signed_rank(d, _flip(alternative)))
    chosen = {"t": p_t, "wilcoxon": p_w}[stat]
    return Test({"t": "paired t", "wilcoxon": "Wilcoxon signed-rank"}[stat], len(d),
                float(d.mean()), bootstrap_ci(d, level, resamples, seed), *chosen,
                {"mean_a": float(a.mean()), "mean_b": float(b.mean()),
                 "p_t": p_t[0], "p_wilcoxon": p_w[0]})


def _order_test(a, b, alternative, method, a_event=None, b_event=None) -> Test:
    scores = order_scores(a, b, a_event, b_event)
    claimed = -1 if alternative == LESS else 1
    wins, losses = int(np.sum(scores == claimed)), int(np.sum(scores == -claimed))
    return Test(method, len(scores), float(np.mean(scores == claimed) - np.mean(
        scores == -claimed)), (math.nan, math.nan), sign_test(wins, losses, GREATER),
        sign_test(wins, losses, LESS), {"wins": wins, "losses": losses,
                                        "undecided": int(len(scores) - wins - losses)})


def compare_censored(a: Sequence[float], a_event: Sequence, b: Sequence[float],
                     b_event: Sequence, alternative: str, *, level: float = 0.95,
                     resamples: int = 9999, seed: int = 0) -> Test:
    """Times to an event (steps to a threshold) where 0-event values are censored at the
    budget: the exact sign test on the pairs whose order is known (Gehan scoring). The
    estimate is the difference of restricted means (censored values at their budget) with
    a paired bootstrap CI; the event counts go in the detail."""
    a, b = values(a), values(b)
    ea, eb = values(a_event) > 0, values(b_event) > 0
    test = _order_test(a, b, alternative, "sign test on pair order (censored, Gehan)",
                       ea, eb)
    d = a - b
    return Test(test.method, test.n, float(np.mean(d)), bootstrap_ci(d, level, resamples,
                                                                       seed),
                test.p_support, test.p_contra,
                {**test.detail, "mean_a": float(a.mean()), "mean_b": float(b.mean()),
                 "events_a": int(ea.sum()), "events_b": int(eb.sum())})


def compare_unpaired(a: Sequence[float], b: Sequence[float], alternative: str, *,
                     factor: float = 1.0, stat: str = "t", level: float = 0.95,
                     resamples: int = 9999, seed: int = 0) -> Test:
    """Is mean(a) < factor * mean(b) (``less``)? Welch's t and Mann-Whitney U for designs
    that are not paired; the estimate's CI is a two-sample bootstrap."""
    a, b = values(a), factor * values(b)
    p_w = (_welch(a, b, alternative), _welch(a, b, _flip(alternative)))
    p_u = (_mann_whitney(a, b, alternative), _mann_whitney(a, b, _flip(alternative)))
    chosen = {"t": p_w, "wilcoxon": p_u}[stat]
    ci = (math.nan, math.nan)
    finite = np.all(np.isfinite(a)) and np.all(np.isfinite(b))
    if finite and len(a) > 1 and len(b) > 1:
        res = stats.bootstrap((a, b), lambda x, y: np.mean(x) - np.mean(y),
                              n_resamples=resamples, confidence_level=level,
                              method="percentile", random_state=np.random.default_rng(seed))
        ci = (float(res.confidence_interval.low), float(res.confidence_interval.high))
    estimate = float(np.mean(a) - np.mean(b)) if finite else math.nan
    return Test({"t": "Welch t", "wilcoxon": "Mann-Whitney U"}[stat], min(len(a), len(b)),
                estimate, ci, *chosen, {"p_welch": p_w[0], "p_mann_whitney": p_u[0]})


def _welch(a, b, alternative) -> float:
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))) or min(len(a), len(b)) < 2:
        return 1.0
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return t_test([a[0] - b[0]] * 2, alternative)
    return float(stats.ttest_ind(a, b, equal_var=False, alternative=alternative).pvalue)


def _mann_whitney(a, b, alternative) -> float:
    if np.any(np.isnan(a)) or np.any(np.isnan(b)):
        return 1.0
    return float(stats.mannwhitneyu(a, b, alternative=alternative).pvalue)


def compare_to(a: Sequence[float], threshold: float, alternative: str, *, stat: str = "t",
               level: float = 0.95, resamples: int = 9999, seed: int = 0) -> Test:
    """Is mean(a) < threshold (``less``) or > it? One-sample t or signed-rank; a diverged
    run (non-finite) counts on its side of the threshold in a sign test."""
    a = values(a)
    if not np.all(np.isfinite(a)):
        return _order_test(a, np.full(len(a), threshold), alternative,
                           "sign test against the threshold (a run diverged)")
    p_t = (t_test(a, alternative, threshold), t_test(a, _flip(alternative), threshold))
    p_w = (signed_rank(a, alternative, threshold),
           signed_rank(a, _flip(alternative), threshold))
    chosen = {"t": p_t, "wilcoxon": p_w}[stat]
    return Test({"t": "one-sample t", "wilcoxon": "Wilcoxon signed-rank"}[stat], len(a),
                float(a.mean()), bootstrap_ci(a, level, resamples, seed), *chosen,
                {"p_t": p_t[0], "p_wilcoxon": p_w[0]})


def equivalence(a: Sequence[float], b: Sequence[float], margin: float, *,
                kind: str = "equivalent", better: str = "lower", level: float = 0.95,
                resamples: int = 9999, seed: int = 0) -> Test:
    """TOST on paired d = a - b. ``equivalent``: |mean d| < margin (p_support from TOST;
    p_contra the one-sided p that d lies beyond the margin on its side). ``noninferior``:
    a is no worse than b by more than margin (``better`` says which way is good)."""
    a, b = values(a), values(b)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        worse = a if better == "lower" else -a
        ref = (b if better == "lower" else -b) + margin
        return _order_test(worse, ref, LESS, "sign test on pair order (a run diverged)")
    d = a - b
    ci = bootstrap_ci(d, level, resamples, seed)
    if kind == "equivalent":
        p, p_low, p_high = tost(d, -margin, margin)
        beyond = min(t_test(d, LESS, -margin), t_test(d, GREATER, margin))
        return Test("TOST (paired t)", len(d), float(d.mean()), ci, p, beyond,
                    {"p_low": p_low, "p_high": p_high, "margin": margin})
    sign = 1.0 if better == "lower" else -1.0  # worse = sign * d > 0
    p_support = t_test(sign * d, LESS, margin)
    p_contra = t_test(sign * d, GREATER, margin)
    return Test("non-inferiority (paired t)", len(d), float(d.mean()), ci, p_support,
                p_contra, {"margin": margin, "mean_a": float(a.mean()),
                           "mean_b": float(b.mean())})


def group(rows: list[dict], keys: Sequence[str]) -> dict[tuple, list[dict]]:
    """Rows grouped by their values of ``keys``, in order of first appearance."""
    out: dict[tuple, list[dict]] = {}
    for row in rows:
        out.setdefault(tuple(row.get(k) for k in keys), []).append(row)
    return out


def column(rows: list[dict], key: str, **where) -> list:
    """``row[key]`` for the rows that have it and whose fields equal ``where``."""
    return [r[key] for r in rows if key in r and all(r.get(k) == v for k, v in where.items())]
