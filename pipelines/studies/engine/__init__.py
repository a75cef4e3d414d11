"""The study engine, shared by every study: the protocol declared in config (protocol),
fair tuning (tuning, session), statistics (stats), checks and the verdict rule (checks,
verdict), the per-run report (report, runner) and the site of every study's latest result
(site). A study module only states its problem, its arms and its rows."""

from .report import Result, Table
from .session import Session

__all__ = ["Result", "Session", "Table"]
