"""A study's protocol, read from its config before anything runs: the claim, the primary
and secondary checks (each a criterion with its test and threshold), the tuning rule and
the seeds, tuning and reporting disjoint.

A check names a metric and the rows it compares: ``a`` (and ``b``) select rows by their
fields, ``where`` narrows both, ``pair`` says which fields match a row of ``a`` with its
partner in ``b``. The tests:

    less / greater          a < factor*b + shift, or >, paired (or Welch/Mann-Whitney
                            with ``paired: false``); ``stat``: t (default) or wilcoxon
    censored_less/_greater  times with an ``event`` column (0 = never reached: censored
                            at the budget); exact sign test on the pairs' known order
    noninferior             a no worse than b by more than ``margin`` (``better``: lower
                            or higher), paired t
    equivalent              |mean(a - b)| < ``margin``: TOST
    below / above           mean(a) < ``threshold`` or >: one-sample t (or wilcoxon)
    all_below / all_above   every selected value <= / >= ``threshold`` (an exact fact:
                            holds or contradicted, no p-value)
    any_below / any_above   at least one selected value <= / >= ``threshold`` (exact: for
                            "some runs diverge" claims)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig, ListConfig, OmegaConf

from pipelines.harness.errors import ConfigError

TWO_SAMPLE = ("less", "greater", "censored_less", "censored_greater", "noninferior",
              "equivalent")
EXACT = ("all_below", "all_above", "any_below", "any_above")
ONE_SAMPLE = ("below", "above", *EXACT)
TESTS = TWO_SAMPLE + ONE_SAMPLE


def plain(node):
    return OmegaConf.to_container(node, resolve=True) if isinstance(
        node, (DictConfig, ListConfig)) else node


@dataclass(frozen=True)
class Criterion:
    id: str
    role: str                     # primary | secondary
    statement: str                # the part of the claim this check tests, in words
    test: str
    metric: str
    a: dict
    b: dict = field(default_factory=dict)
    where: dict = field(default_factory=dict)
    pair: tuple = ("seed",)
    paired: bool = True
    factor: float = 1.0
    shift: float = 0.0
    margin: float | None = None
    better: str = "lower"
    threshold: float | None = None
    event: str | None = None
    stat: str = "t"

    @property
    def exact(self) -> bool:
        return self.test in EXACT

    def describe(self) -> str:
        """The criterion in words, as the report prints it next to the result."""
        a, b = _selection(self.a), _selection(self.b)
        scope = f" where {_selection(self.where)}" if self.where else ""
        stat = {"t": "t", "wilcoxon": "Wilcoxon signed-rank"}[self.stat]
        scaled = f"{self.factor:g} x " if self.factor != 1 else ""
        shifted = f" {self.shift:+g}" if self.shift else ""
        pairs = f"paired by {', '.join(self.pair)}" if self.paired else "unpaired (Welch/U)"
        t = self.test
        if t in ("less", "greater"):
            sign = "<" if t == "less" else ">"
            return (f"{self.metric}: [{a}] {sign} {scaled}[{b}]{shifted}{scope}; {pairs}; "
                    f"{stat} test")
        if t.startswith("censored"):
            sign = "<" if t == "censored_less" else ">"
            return (f"{self.metric} (censored where {self.event}=0): [{a}] {sign} [{b}]"
                    f"{scope}; {pairs}; exact sign test on the pairs' known order")
        if t == "noninferior":
            return (f"{self.metric} ({self.better} is better): [{a}] no worse than [{b}] by "
                    f"more than {self.margin:g}{scope}; {pairs}; one-sided paired t")
        if t == "equivalent":
            return (f"{self.metric}: |[{a}] - [{b}]| < {self.margin:g}{scope}; {pairs}; "
                    "TOST")
        if t in ("below", "above"):
            sign = "<" if t == "below" else ">"
            return f"{self.metric}: mean of [{a}]{scope} {sign} {self.threshold:g}; {stat} test"
        sign = "<=" if t.endswith("below") else ">="
        which = "every run" if t.startswith("all") else "at least one run"
        return f"{self.metric}: {which} of [{a}]{scope} {sign} {self.threshold:g} (exact)"


def _selection(sel: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sel.items()) or "all rows"


@dataclass(frozen=True)
class Protocol:
    claim: str
    primary: Criterion
    secondary: tuple[Criterion, ...]
    tuning: dict                 # metric, goal, extend
    seeds: dict                  # tuning: [...], report: [...]
    alpha: float
    level: float
    resamples: int

    @property
    def checks(self) -> tuple[Criterion, ...]:
        return (self.primary, *self.secondary)


def criterion(node, key: str, role: str) -> Criterion:
    spec = plain(node)
    if not isinstance(spec, dict):
        raise ConfigError(key, spec, "a mapping with id, statement, test, metric and a")
    for name in ("id", "statement", "test", "metric", "a"):
        if name not in spec:
            raise ConfigError(f"{key}.{name}", None, f"a value ({name} is required)")
    test = spec["test"]
    if test not in TESTS:
        raise ConfigError(f"{key}.test", test, "one of " + ", ".join(TESTS))
    known = set(Criterion.__dataclass_fields__) - {"role"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", spec[unknown[0]],
                          "one of the criterion fields " + ", ".join(sorted(known)))
    for name in ("a", "b", "where"):
        if not isinstance(spec.get(name, {}), dict):
            raise ConfigError(f"{key}.{name}", spec[name], "a mapping of row fields to values")
    if test in TWO_SAMPLE and not spec.get("b"):
        raise ConfigError(f"{key}.b", spec.get("b"), f"the rows to compare with ({test})")
    if test in ("noninferior", "equivalent") and not _positive(spec.get("margin")):
        raise ConfigError(f"{key}.margin", spec.get("margin"), "a number > 0")
    if test in ONE_SAMPLE and not isinstance(spec.get("threshold"), (int, float)):
        raise ConfigError(f"{key}.threshold", spec.get("threshold"), "a number")
    if test.startswith("censored") and not spec.get("event"):
        raise ConfigError(f"{key}.event", spec.get("event"),
                          "the column that is 1 where the event was reached")
    if spec.get("stat", "t") not in ("t", "wilcoxon"):
        raise ConfigError(f"{key}.stat", spec["stat"], "t or wilcoxon")
    if spec.get("better", "lower") not in ("lower", "higher"):
        raise ConfigError(f"{key}.better", spec["better"], "lower or higher")
    spec["pair"] = tuple(spec.get("pair", ("seed",)))
    return Criterion(role=role, **spec)


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and x > 0


def seeds(block, start: dict, key: str) -> dict:
    """``{report: n, tuning: m}`` as seed lists from the configured starts; disjoint."""
    spec = plain(block)
    if not isinstance(spec, dict):
        raise ConfigError(key, spec, "a mapping {report: N, tuning: M}")
    out = {}
    for kind in ("report", "tuning"):
        n = spec.get(kind)
        if not isinstance(n, int) or n < (1 if kind == "report" else 0):
            raise ConfigError(f"{key}.{kind}", n, "an integer >= 1" if kind == "report"
                              else "an integer >= 0")
        out[kind] = list(range(int(start[kind]), int(start[kind]) + n))
    clash = sorted(set(out["report"]) & set(out["tuning"]))
    if clash:
        raise ConfigError(f"{key}", spec, f"tuning seeds disjoint from report seeds (both "
                          f"hold {clash[0]}; see protocol.seed_start)")
    return out


def load(p, globals_) -> Protocol:
    """The protocol of a study from its merged parameters ``p`` and the global settings
    (configs/study.yaml ``protocol``). Every error names its key."""
    if not isinstance(p.get("claim"), str) or not p.claim.strip():
        raise ConfigError("study.claim", p.get("claim"), "the claim as a sentence")
    checks = p.get("checks")
    if checks is None or "primary" not in checks:
        raise ConfigError("study.checks.primary", None, "the primary check (one criterion)")
    primary = criterion(checks.primary, "study.checks.primary", "primary")
    secondary = tuple(criterion(c, f"study.checks.secondary[{i}]", "secondary")
                      for i, c in enumerate(checks.get("secondary") or []))
    ids = [c.id for c in (primary, *secondary)]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ConfigError("study.checks", dup[0], "a distinct id for every check")
    tuning = plain(p.get("tuning")) or {}
    if not isinstance(tuning, dict):
        raise ConfigError("study.tuning", tuning, "a mapping {metric, goal, extend}")
    if any("tune" in (plain(a) or {}) for a in (p.get("arms") or {}).values()):
        if not isinstance(tuning.get("metric"), str):
            raise ConfigError("study.tuning.metric", tuning.get("metric"),
                              "the metric that picks the tuned values")
        if tuning.get("goal") not in ("min", "max"):
            raise ConfigError("study.tuning.goal", tuning.get("goal"), "min or max")
        if not isinstance(tuning.get("extend", 0), int) or tuning.get("extend", 0) < 0:
            raise ConfigError("study.tuning.extend", tuning.get("extend"),
                              "the number of grid points added past an edge (>= 0)")
    g = globals_
    if not 0 < g.alpha < 1:
        raise ConfigError("protocol.alpha", g.alpha, "a number in (0, 1)")
    return Protocol(p.claim.strip(), primary, secondary, tuning,
                    seeds(p.get("seeds"), plain(g.seed_start), "study.seeds"), float(g.alpha),
                    float(g.level), int(g.resamples))
