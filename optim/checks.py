"""Argument checks shared by transforms and presets.

Every bad hyperparameter fails with one ValueError that names the argument,
the value and what is allowed, so a config typo is fixed in one read.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def _fail(name: str, value, allowed: str) -> None:
    raise ValueError(f"{name}={value!r} is invalid: expected {allowed}")


def non_negative(name: str, value) -> float:
    if not _is_real(value) or not value >= 0:
        _fail(name, value, "a number >= 0")
    return value


def positive(name: str, value) -> float:
    if not _is_real(value) or not value > 0:
        _fail(name, value, "a number > 0")
    return value


def positive_int(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        _fail(name, value, "an integer >= 1")
    return value


def unit_interval(name: str, value) -> float:
    """A decay rate: 0 <= value < 1."""
    if not _is_real(value) or not 0.0 <= value < 1.0:
        _fail(name, value, "a number in [0, 1)")
    return value


def betas(name: str, value) -> tuple[float, float]:
    try:
        b1, b2 = value
    except (TypeError, ValueError):
        _fail(name, value, "a pair (beta1, beta2), each in [0, 1)")
    for b in (b1, b2):
        if not _is_real(b) or not 0.0 <= b < 1.0:
            _fail(name, value, "a pair (beta1, beta2), each in [0, 1)")
    return float(b1), float(b2)


def choice(name: str, value, allowed: Iterable) -> object:
    allowed = list(allowed)
    if value not in allowed:
        _fail(name, value, "one of " + ", ".join(repr(a) for a in allowed))
    return value


def _is_real(value) -> bool:
    if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1:
        value = value.item()
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(
        value
    )
