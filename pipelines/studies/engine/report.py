"""What a study hands back and the files made from it: results.csv, tuning.csv,
summary.csv and report.md. Every number in report.md is computed here from the rows, so no
result text is written by hand."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import tuning
from .checks import CheckResult, fmt
from .stats import group, summarize
from .verdict import RULE


@dataclass
class Table:
    """Rows grouped by ``keys``; each metric as mean [95% CI] over the group (the seeds).
    The key values must pick out exactly these rows from results.csv."""

    title: str
    rows: list[dict]
    keys: list[str]
    metrics: list[str]


@dataclass
class Result:
    """What a study's run returns. Row fields starting with ``_`` (curves for figures) stay
    in memory; every other field goes to results.csv."""

    rows: list[dict]
    tables: list[Table]
    figures: list[Path]
    setup: list[str]
    notes: list[str] = field(default_factory=list)


def scalars(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("_")}


def write_csv(path: Path, rows: list[dict]) -> Path:
    """All rows with the union of their columns (a blank where a row lacks one)."""
    rows = [scalars(r) for r in rows]
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def cell(values: list) -> str:
    """mean [95% CI]; with diverged (non-finite) runs the median of all (a diverged run as
    inf) and their count; missing values (None) are left out, '-' if all are."""
    present = [v for v in values if v is not None and v != ""]
    if not present:
        return "-"
    s = summarize(present)
    if s.failed:
        x = np.asarray([float(v) for v in present])
        x = np.where(np.isnan(x), math.inf, x)
        return f"median {fmt(np.median(x))} ({s.failed}/{s.n} diverged)"
    if s.n == 1:
        return fmt(s.mean)
    return f"{fmt(s.mean)} [{fmt(s.ci_lo)}, {fmt(s.ci_hi)}]"


def summary_rows(tables: list[Table]) -> list[dict]:
    """One row per table group and metric: n, failed, mean, std, 95% CI, median."""
    out = []
    for table in tables:
        for key, rows in group(table.rows, table.keys).items():
            for metric in table.metrics:
                s = summarize([r.get(metric) for r in rows])
                out.append({"table": table.title, **dict(zip(table.keys, key)),
                            "metric": metric, "n": s.n, "failed": s.failed, "mean": s.mean,
                            "std": s.std, "ci95_lo": s.ci_lo, "ci95_hi": s.ci_hi,
                            "median": s.median})
    return out


def markdown_table(table: Table) -> str:
    head = [*table.keys, "n", *table.metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, rows in group(table.rows, table.keys).items():
        cells = [str(k) for k in key] + [str(len(rows))]
        cells += [cell([r.get(m) for r in rows]) for m in table.metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seeds_text(seeds: list[int]) -> str:
    if not seeds:
        return "none"
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))) and len(seeds) > 2:
        return f"{seeds[0]}..{seeds[-1]} ({len(seeds)})"
    return f"{', '.join(map(str, seeds))} ({len(seeds)})"


def value_text(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def protocol_lines(info: dict) -> list[str]:
    """The protocol section: seeds, tuning rule, statistics, verdict rule."""
    t, s = info["tuning"], info["seeds"]
    out = [f"- Seeds: tuning {seeds_text(s['tuning'])}, report {seeds_text(s['report'])}; "
           "disjoint, so nothing is chosen on the seeds it is tested on."]
    if t.get("metric"):
        out.append(f"- Tuning: every tuned arm gets its own grid, scored by the mean of "
                   f"`{t['metric']}` over the tuning seeds ({t['goal']}imised; a diverged run "
                   f"makes a setting the worst); a pick at the edge of a range extends that "
                   f"axis once by {t.get('extend', 0)} points; a pick still at an edge, or at "
                   "an end of a fixed list of numbers, is flagged below.")
    st = info["statistics"]
    out.append(f"- Statistics: two-sided alpha = {st['alpha']:g} (twice the smaller one-sided "
               f"p); Holm's correction across the secondary checks; {st['level']:.0%} "
               f"bootstrap CIs ({st['resamples']} resamples, percentile); a diverged run "
               "counts as a failure, never dropped.")
    out.append(f"- Verdict rule: {RULE}")
    return out


def checks_table(results: list[CheckResult]) -> list[str]:
    lines = ["| role | check | criterion | result | outcome |", "|---|---|---|---|---|"]
    for r in results:
        c = r.criterion
        lines.append(f"| {c.role} | **{c.id}**: {c.statement} | {c.describe()} | "
                     f"{r.evidence} | **{r.outcome}** |")
    return lines


def tuning_table(picks: list[dict]) -> list[str]:
    if not picks:
        return []
    lines = ["| arm | cell | fixed | chosen | grid | extended | still at edge |",
             "|---|---|---|---|---|---|---|"]
    for pk in picks:
        cell_text = ", ".join(f"{k}={v}" for k, v in pk["cell"].items()) or "-"
        fixed = ", ".join(f"{k}={value_text(v)}" for k, v in pk.get("fixed", {}).items()) or "-"
        if not pk["tuned"]:
            lines.append(f"| {pk['arm']} | {cell_text} | {fixed} | not tuned | - | - | - |")
            continue
        chosen = ", ".join(f"{k}={value_text(v)}" for k, v in pk["chosen"].items())
        grid = "; ".join(f"{k}: {', '.join(value_text(v) for v in vs)}"
                         for k, vs in pk["axes"].items())
        edge = tuning.at_edge(pk)
        lines.append(f"| {pk['arm']} | {cell_text} | {fixed} | {chosen} | {grid} | "
                     f"{', '.join(pk['extended']) or '-'} | "
                     f"{'**' + ', '.join(edge) + '**' if edge else '-'} |")
    return lines


def provenance(info: dict) -> str:
    """Commit, uncommitted code (the study's own paths named), wall and CPU time, load."""
    own = [d for d in info["dirty"] if any(k in d for k in ("studies", "study", "images"))
           or d.startswith("optim")]
    dirty = ""
    if info["dirty"]:
        named = f": {', '.join(own[:6])}{' ...' if len(own) > 6 else ''}" if own else ""
        dirty = f" with uncommitted changes in {len(info['dirty'])} code paths{named}"
    cpu = info.get("cpu_time_s")
    cpu = f" and {cpu / 60:.1f} min CPU time" if cpu is not None else ""
    return (f"Commit {info['commit'] or 'unknown'}{dirty}; {info['wall_time_s'] / 60:.1f} min "
            f"wall{cpu} with study.workers="
            f"{info['workers']} on {info['cores']} cores (load average "
            f"{info['load_avg'][0]:.1f} at the start, {info['load_avg'][1]:.1f} at the end: "
            "the machine is shared)")


def render(info: dict, result: Result, results: list[CheckResult], params_yaml: str) -> str:
    """report.md from the run's info (summary.json's content), rows and checks."""
    out = [f"# Study `{info['study']}` ({info['size']})", "",
           f"**Claim.** {info['claim']}", "",
           f"**Verdict: {info['verdict']}.** {info['reason']}", "",
           "## Protocol (declared in the config before the run)", ""]
    out += protocol_lines(info)
    out += ["", "### Checks", ""] + checks_table(results)
    if info["tuning"]["picks"]:
        out += ["", "## Tuning", ""] + tuning_table(info["tuning"]["picks"])
        out += ["", "Every setting's score on every tuning seed is in tuning.csv."]
    out += ["", "## Setup", ""] + [f"- {line}" for line in result.setup]
    out += ["", "## Results", "",
            "Cells are mean [95% t-CI] over seeds (n rows per cell); a cell with diverged runs "
            "shows the median of all runs and their count. summary.csv has the same numbers, "
            "results.csv every run.", ""]
    for table in result.tables:
        out += [f"### {table.title}", "", markdown_table(table), ""]
    out += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in result.figures]
    if result.notes:
        out += ["", "## Other findings", ""] + [f"- {n}" for n in result.notes]
    out += ["", "## Reproduce", "", f"`{info['command']}`", "", provenance(info) + ".",
            "", "```yaml", params_yaml.rstrip(), "```"]
    return "\n".join(out) + "\n"
