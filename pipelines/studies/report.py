"""What a study hands back, and the files made from it: results.csv, summary.csv, report.md.

A study returns raw per-seed rows, the tables to show (which keys, which metrics), its
figures and its checks. Every number in report.md is computed here from those rows, and
the verdict from the checks, so no result text is ever written by hand.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from .stats import group, summarize


@dataclass
class Table:
    """Rows grouped by ``keys``; each metric shown as mean ± std over the group (the seeds).
    The key values must pick out exactly these rows from results.csv."""

    title: str
    rows: list[dict]
    keys: list[str]
    metrics: list[str]


@dataclass
class Check:
    """One testable part of the claim: True (the data agree), False (they disagree) or None
    (the seeds cannot tell), with the numbers behind it."""

    claim: str
    outcome: bool | None
    evidence: str


@dataclass
class Outcome:
    rows: list[dict]
    tables: list[Table]
    figures: list[Path]
    checks: list[Check]
    setup: list[str]
    notes: list[str] = field(default_factory=list)  # measured findings outside the claim


def verdict(checks: list[Check]) -> tuple[str, str]:
    """supported if every check holds, not supported if none does, mixed otherwise."""
    held = sum(c.outcome is True for c in checks)
    if checks and held == len(checks):
        label = "supported"
    elif held == 0:
        label = "not supported"
    else:
        label = "mixed"
    failed = [c for c in checks if c.outcome is not True]
    if not failed:
        reason = "every check holds."
    else:
        parts = [f"{c.claim}: {'contradicted' if c.outcome is False else 'inconclusive'}"
                 for c in failed]
        reason = f"{held} of {len(checks)} checks hold; " + "; ".join(parts) + "."
    return label, reason


def fmt(x) -> str:
    """4 significant digits; what report.md shows and what tests parse back."""
    x = float(x)
    return "nan" if math.isnan(x) else f"{x:.4g}"


def cell(values: list) -> str:
    s = summarize(values)
    text = f"{fmt(s.mean)} ± {fmt(s.std)}"
    return text if s.n == len(values) else f"{text} ({s.n}/{len(values)} finite)"


def write_csv(path: Path, rows: list[dict]) -> Path:
    """All rows with the union of their columns (a blank where a row lacks one)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def summary_rows(tables: list[Table]) -> list[dict]:
    """One row per table group and metric: mean, std, n and the 95% CI."""
    out = []
    for table in tables:
        for key, rows in group(table.rows, table.keys).items():
            for metric in table.metrics:
                s = summarize([r.get(metric) for r in rows])
                out.append({"table": table.title, **dict(zip(table.keys, key)),
                            "metric": metric, "mean": s.mean, "std": s.std, "n": s.n,
                            "ci95_lo": s.ci_lo, "ci95_hi": s.ci_hi})
    return out


def markdown_table(table: Table) -> str:
    head = [*table.keys, "n", *table.metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, rows in group(table.rows, table.keys).items():
        cells = [str(k) for k in key] + [str(len(rows))]
        cells += [cell([r.get(m) for r in rows]) for m in table.metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(name: str, claim: str, outcome: Outcome, params_yaml: str, command: str) -> str:
    label, reason = verdict(outcome.checks)
    marks = {True: "holds", False: "contradicted", None: "inconclusive"}
    out = [f"# Study `{name}`", "", f"**Claim.** {claim}", "", "## Setup", ""]
    out += [f"- {line}" for line in outcome.setup]
    out += ["", f"Reproduce: `{command}`", "", "```yaml", params_yaml.rstrip(), "```", ""]
    out += ["## Results", "",
            "Cells are mean ± sample std over seeds (n rows per cell); 95% CIs are in "
            "summary.csv, every seed in results.csv.", ""]
    for table in outcome.tables:
        out += [f"### {table.title}", "", markdown_table(table), ""]
    out += ["## Figures", ""]
    out += [f"![{p.stem}]({p.name})" for p in outcome.figures]
    out += ["", "## Verdict", "", f"**{label}**: {reason}", ""]
    out += [f"- {c.claim}: **{marks[c.outcome]}**. {c.evidence}" for c in outcome.checks]
    if outcome.notes:
        out += ["", "## Other findings", ""] + [f"- {n}" for n in outcome.notes]
    return "\n".join(out) + "\n"
