"""The verdict of a study, decided from its primary check by a rule stated in every report."""

from __future__ import annotations

from .checks import CONTRADICTED, INCONCLUSIVE, SUPPORTED, CheckResult

VERDICTS = ("supported", "contradicted", "inconclusive", "mixed")
RULE = ("The verdict follows the primary check: contradicted if it is contradicted, "
        "inconclusive if it is inconclusive; if it is supported, the verdict is supported "
        "unless a secondary check is contradicted, then mixed. A secondary check that is "
        "inconclusive does not change the verdict.")


def decide(primary: str, secondary: list[str]) -> str:
    """The rule above, on outcomes (supported / contradicted / inconclusive)."""
    if primary == CONTRADICTED:
        return "contradicted"
    if primary == INCONCLUSIVE:
        return "inconclusive"
    if primary != SUPPORTED:
        raise ValueError(f"primary outcome {primary!r} is not one of supported, "
                         "contradicted, inconclusive")
    return "mixed" if CONTRADICTED in secondary else "supported"


def verdict(results: list[CheckResult]) -> tuple[str, str]:
    """(label, reason) from the evaluated checks; the primary check comes first."""
    primary, secondary = results[0], results[1:]
    label = decide(primary.outcome, [r.outcome for r in secondary])
    counts = {o: sum(r.outcome == o for r in secondary)
              for o in (SUPPORTED, CONTRADICTED, INCONCLUSIVE)}
    reason = (f"primary check {primary.criterion.id} {primary.outcome}; secondary: "
              + ", ".join(f"{n} {o}" for o, n in counts.items()) + ".")
    against = [r.criterion.id for r in secondary if r.outcome == CONTRADICTED]
    if against:
        reason = reason[:-1] + f" (contradicted: {', '.join(against)})."
    return label, reason
