"""Each declared criterion evaluated on the report rows, Holm across the secondary checks.

A check's p is two-sided: twice the smaller of its two one-sided p-values. It is
**supported** when p (Holm-adjusted for secondary checks) is below alpha and the data lean
the claimed way, **contradicted** when they lean the other way, **inconclusive**
otherwise. Exact checks (all_below/all_above) hold or are contradicted by every run.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from . import stats
from .protocol import TWO_SAMPLE, Criterion, Protocol

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckResult:
    criterion: Criterion
    outcome: str
    test: stats.Test | None
    p_adjusted: float | None
    evidence: str

    def as_dict(self) -> dict:
        c, t = self.criterion, self.test
        out = {"id": c.id, "role": c.role, "statement": c.statement,
               "criterion": c.describe(), "outcome": self.outcome, "evidence": self.evidence}
        if t is not None:
            out.update(method=t.method, n=t.n, estimate=t.estimate, ci=list(t.ci),
                       p_support=t.p_support, p_contra=t.p_contra, p=t.p,
                       p_adjusted=self.p_adjusted, detail=t.detail)
        return out


def _matches(row: dict, sel: dict) -> bool:
    return all(_same(row.get(k), v) for k, v in sel.items())


def _same(x, y) -> bool:
    if isinstance(x, float) and isinstance(y, (int, float)) and not isinstance(y, bool):
        return math.isclose(x, y, rel_tol=1e-9, abs_tol=0.0) or x == y
    return x == y


def samples(c: Criterion, rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """The rows of ``a`` and, matched pair by pair (or just selected when unpaired), of b."""
    sel = [r for r in rows if _matches(r, c.where) and c.metric in r]
    a = [r for r in sel if _matches(r, c.a)]
    if c.test not in TWO_SAMPLE:
        return a, []
    b = [r for r in sel if _matches(r, c.b)]
    if not c.paired:
        return a, b
    partners = {tuple(r.get(k) for k in c.pair): r for r in b}
    if len(partners) != len(b):
        raise ValueError(f"check {c.id}: rows of b are not unique by {c.pair}")
    pairs = [(r, partners.get(tuple(r.get(k) for k in c.pair))) for r in a]
    missing = [r for r, q in pairs if q is None]
    if missing:
        raise ValueError(f"check {c.id}: {len(missing)} rows of a have no partner in b by "
                         f"{c.pair}")
    return [r for r, _ in pairs], [q for _, q in pairs]


def run_test(c: Criterion, a: list[dict], b: list[dict], proto: Protocol) -> stats.Test:
    kw = {"level": proto.level, "resamples": proto.resamples}
    x = stats.values(r[c.metric] for r in a)
    y = stats.values(r[c.metric] for r in b)
    t = c.test
    if t in ("less", "greater"):
        if not c.paired:
            return stats.compare_unpaired(x, y, t, factor=c.factor, stat=c.stat, **kw)
        return stats.compare_paired(x, y, t, factor=c.factor, shift=c.shift, stat=c.stat, **kw)
    if t.startswith("censored"):
        return stats.compare_censored(x, [r[c.event] for r in a], y, [r[c.event] for r in b],
                                      t.split("_")[1], **kw)
    if t in ("noninferior", "equivalent"):
        return stats.equivalence(x, y, c.margin, kind=t, better=c.better, **kw)
    return stats.compare_to(x, c.threshold, "less" if t == "below" else "greater",
                            stat=c.stat, **kw)


def evaluate(proto: Protocol, rows: list[dict]) -> list[CheckResult]:
    """Every check of the protocol, in order (primary first)."""
    tested = []
    for c in proto.checks:
        a, b = samples(c, rows)
        if not a or (c.test in TWO_SAMPLE and not b):
            log.warning("check %s selects no rows: inconclusive", c.id)
            tested.append((c, None, "no data: the selection matched no rows"))
            continue
        if c.exact:
            tested.append((c, _exact(c, a), None))
        else:
            tested.append((c, run_test(c, a, b, proto), None))
    family = [i for i, (c, t, _) in enumerate(tested)
              if c.role == "secondary" and isinstance(t, stats.Test)]
    adjusted = dict(zip(family, stats.holm([tested[i][1].p for i in family])))
    out = []
    for i, (c, t, note) in enumerate(tested):
        if note is not None:
            out.append(CheckResult(c, INCONCLUSIVE, None, None, note))
        elif isinstance(t, tuple):
            holds, text = t
            out.append(CheckResult(c, SUPPORTED if holds else CONTRADICTED, None, None, text))
        else:
            p = adjusted.get(i, t.p)
            outcome = INCONCLUSIVE
            if p < proto.alpha:
                outcome = SUPPORTED if t.p_support < t.p_contra else CONTRADICTED
            out.append(CheckResult(c, outcome, t, p, evidence(c, t, p)))
    return out


def _exact(c: Criterion, a: list[dict]) -> tuple[bool, str]:
    """all_*: every value on its side of the threshold (NaN never is); any_*: at least one."""
    x = stats.values(r[c.metric] for r in a)
    below = c.test.endswith("below")
    good = int(np.sum(x <= c.threshold if below else x >= c.threshold))
    finite = x[~np.isnan(x)]
    edge = (float(finite.max() if below else finite.min())
            if c.test.startswith("all") else float(finite.min() if below else finite.max())) \
        if len(finite) else math.nan
    word = ("largest" if below else "smallest") if c.test.startswith("all") else \
        ("smallest" if below else "largest")
    holds = good == len(x) if c.test.startswith("all") else good > 0
    sign = "<=" if below else ">="
    return holds, f"{good} of {len(x)} runs {sign} {c.threshold:g}; {word} {fmt(edge)}"


def fmt(x) -> str:
    """4 significant digits; what the reports show."""
    x = float(x)
    return "nan" if math.isnan(x) else f"{x:.4g}"


ESTIMATES = {"less": "mean of a - factor*b", "greater": "mean of a - factor*b",
             "censored_less": "difference of restricted means",
             "censored_greater": "difference of restricted means",
             "noninferior": "mean of a - b", "equivalent": "mean of a - b",
             "below": "mean", "above": "mean"}


def evidence(c: Criterion, t: stats.Test, p: float) -> str:
    d = t.detail
    parts = []
    if "mean_a" in d:
        parts.append(f"mean a {fmt(d['mean_a'])} vs b {fmt(d['mean_b'])}")
    if "wins" in d:
        parts.append(f"pairs: {d['wins']} for, {d['losses']} against, {d['undecided']} "
                     "undecided")
    if "events_a" in d:
        parts.append(f"reached: a {d['events_a']}/{t.n}, b {d['events_b']}/{t.n}")
    lo, hi = t.ci
    if not math.isnan(t.estimate):
        ci = "" if math.isnan(lo) else f" [{fmt(lo)}, {fmt(hi)}]"
        parts.append(f"{ESTIMATES.get(c.test, 'estimate')} {fmt(t.estimate)}{ci}")
    extra = [f"{k[2:].replace('_', '-')} {fmt(v)}" for k, v in d.items() if k.startswith("p_")]
    adj = " (Holm)" if c.role == "secondary" else ""
    parts.append(f"{t.method}, n={t.n}, p={fmt(t.p)}, adjusted{adj} {fmt(p)}"
                 if c.role == "secondary" else f"{t.method}, n={t.n}, p={fmt(p)}")
    if extra:
        parts.append("one-sided p for the claim: " + ", ".join(extra))
    return "; ".join(parts)
