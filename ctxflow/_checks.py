"""Number checks shared by the value classes: one rule per kind, one message form.

Every numeric option in ctxflow (budget ratios, ladder thresholds, profile
sizes, usage counts, loop limits, checkpoint intervals) is checked here, so a
bool never passes for a number, NaN and infinity never pass for a finite
one, and every refusal reads ``'name' must be <kind> (got <value>)``. The
caller picks the error class and the rule, since those belong to its area.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import attrs

from ctxflow.errors import CtxflowError, PolicyError

__all__ = ["Kind", "check_number", "number_field"]

Kind = Literal["finite", "non-negative", "positive", "non-negative integer", "positive integer"]

_PHRASES: dict[Kind, str] = {
    "finite": "a finite number",
    "non-negative": "a number >= 0",
    "positive": "a number above zero",
    "non-negative integer": "a non-negative integer",
    "positive integer": "a positive integer",
}


def _holds(value: object, kind: Kind) -> bool:
    if isinstance(value, bool):
        return False
    if kind.endswith("integer"):
        if not isinstance(value, int):
            return False
    elif not isinstance(value, int | float) or not math.isfinite(value):
        return False
    if kind.startswith("positive"):
        return value > 0
    if kind.startswith("non-negative"):
        return value >= 0
    return True


def check_number(
    value: object,
    what: str,
    *,
    kind: Kind,
    rule: str,
    error: type[CtxflowError] = PolicyError,
    optional: bool = False,
    low: float | None = None,
    high: float | None = None,
    field: str | None = None,
) -> float:
    """``value`` as a float when it is a number of ``kind`` (within ``low``..``high``), else raise.

    ``what`` names the value in the message as the user wrote it (quote a
    field name: ``"'ratio'"``). ``optional`` lets None through (returned as 0.0).
    """
    if optional and value is None:
        return 0.0
    ok = _holds(value, kind)
    bounds = ""
    if low is not None or high is not None:
        bounds = f" between {low} and {high}" if high is not None else f" at least {low}"
        ok = ok and (low is None or value >= low) and (high is None or value <= high)  # type: ignore[operator]
    if not ok:
        phrase = _PHRASES[kind] + bounds + (" or None" if optional else "")
        raise error(f"{what} must be {phrase} (got {value!r})", rule=rule, field=field or what)
    return float(value)  # type: ignore[arg-type]


def number_field(
    kind: Kind,
    *,
    rule: str | None = None,
    error: type[CtxflowError] = PolicyError,
    optional: bool = False,
    label: str = "",
) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    """An attrs validator running :func:`check_number` (rule: the field's name when not given)."""

    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        check_number(
            value,
            f"{label}'{attribute.name}'",
            kind=kind,
            rule=rule or attribute.name,
            error=error,
            optional=optional,
            field=attribute.name,
        )

    return check
