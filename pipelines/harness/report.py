"""What a finished run prints: its headline metrics with units, then where everything is.

The table lists the summary's top-level numbers (nested tables such as
``test_acc_by_degree`` stay in summary.json); units follow from the metric names, which carry
them (design: fractions, SI-ish units in the name). With rich installed and a terminal, a
rich table; otherwise plain aligned text, so a log file reads the same.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

# (pattern, unit), first match wins: "_x" a suffix, "x_" a prefix, else a whole word of the name
UNITS = (
    ("_mev_per_atom", "meV/atom"),
    ("_mev_per_ang3", "meV/Å³"),
    ("_mev_per_ang", "meV/Å"),
    ("_gpa", "GPa"),
    ("_acc", "fraction"),
    ("_fraction", "fraction"),
    ("_per_s", "1/s"),
    ("_s", "s"),
    ("steps_to_threshold", "env steps"),
    ("env_steps", "env steps"),
    ("epoch", "epoch"),
    ("return", "episode return"),
    ("threshold", "episode return"),
    ("episodes", "episodes"),
    ("updates", "updates"),
    ("_loss", "loss"),
    ("_dropped", "structures"),
    ("n_", "count"),
)


def unit(name: str) -> str:
    words = name.split("_")
    for pattern, label in UNITS:
        if pattern.startswith("_"):
            found = name.endswith(pattern)
        elif pattern.endswith("_"):
            found = name.startswith(pattern)
        else:
            found = name == pattern or pattern in words
        if found:
            return label
    return ""


def headline(metrics: dict, wall_time_s: float | None = None) -> list[tuple[str, str, str]]:
    """(name, value, unit) for each top-level number (and null) of the metrics."""
    rows = []
    for name, value in metrics.items():
        if isinstance(value, bool) or not (value is None or isinstance(value, int | float)):
            continue
        rows.append((name, _value(value), unit(name)))
    if wall_time_s is not None:
        rows.append(("wall_time_s", f"{wall_time_s:.1f}", "s"))
    return rows


def _value(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.6g}"


def table(rows: list[tuple[str, str, str]], title: str, terminal: bool | None = None) -> str:
    terminal = sys.stdout.isatty() if terminal is None else terminal
    if terminal:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            pass
        else:
            t = Table(title=title, title_justify="left")
            for column, justify in (("metric", "left"), ("value", "right"), ("unit", "left")):
                t.add_column(column, justify=justify)
            for row in rows:
                t.add_row(*row)
            out = io.StringIO()
            Console(file=out, force_terminal=True).print(t)
            return out.getvalue().rstrip("\n")
    widths = [max(len(r[i]) for r in [("metric", "value", "unit"), *rows]) for i in range(3)]
    lines = [title, f"  {'metric':<{widths[0]}}  {'value':>{widths[1]}}  unit"]
    lines += [f"  {n:<{widths[0]}}  {v:>{widths[1]}}  {u}".rstrip() for n, v, u in rows]
    return "\n".join(lines)


def end_of_run(pipeline: str, metrics: dict, wall_time_s: float, run_dir: Path,
               summary: Path, figures: list, wandb: str | None,
               tensorboard: str | None = None, terminal: bool | None = None) -> str:
    """The metrics table, then the paths; the W&B hint names the offline run's folder,
    which is what ``wandb sync`` takes."""
    nested = [k for k, v in metrics.items() if isinstance(v, dict | list)]
    lines = ["", table(headline(metrics, wall_time_s), f"{pipeline} results", terminal)]
    if nested:
        lines.append(f"  (in summary.json too: {', '.join(nested)})")
    lines += [f"run dir:  {run_dir}", f"summary:  {summary}"]
    lines += [f"figure:   {f}" for f in figures]
    if tensorboard:
        lines.append(f"TensorBoard: tensorboard --logdir {tensorboard}")
    if wandb:
        lines.append(f"W&B run:  {wandb} (offline; upload with `wandb sync {wandb}`)")
    return "\n".join(lines)
