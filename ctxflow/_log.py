"""Library logging: structured events through the standard library, silent until enabled.

Every module logs through :func:`get_logger`::

    log = get_logger("ctxflow.engine")
    log.info("transition", source="planning", target="execution")

The logger is a structlog ``BoundLogger`` wrapping the standard library logger
of that name; structlog's global configuration is never touched. An event
goes on only when the stdlib logger is enabled for its level (below it, the
event is dropped by the first processor, before any formatting), and then as
one stdlib record:

- ``record.getMessage()`` is the event name followed by ``key=value`` pairs,
  so ``logging.basicConfig(level=logging.INFO)`` prints readable lines;
- ``record.ctxflow`` is ``{"event": name, **fields}`` for handlers that want
  the structured fields (:func:`ctxflow.testing.capture_events` uses it).

The ``ctxflow`` logger gets a :class:`logging.NullHandler` on import, so
nothing reaches Python's last-resort handler (which would print warnings to
stderr) until the application configures logging.

What a user must see is not logged but warned (:func:`warn`, category
:class:`~ctxflow.errors.CtxflowWarning`), pointing at the first caller
outside ctxflow.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import MutableMapping
from typing import Any, cast

import structlog

from ctxflow.errors import CtxflowWarning

__all__ = ["ROOT", "get_logger", "warn"]

#: The name of the logger every ctxflow logger sits under.
ROOT = "ctxflow"

logging.getLogger(ROOT).addHandler(logging.NullHandler())

# Keys of the event dict that are stdlib logging arguments, not fields.
_PASSED = ("exc_info", "stack_info")


def _text(value: Any) -> str:
    """``value`` as it appears after ``key=``: plain when unambiguous, else its repr."""
    if isinstance(value, str):
        if value and not any(c.isspace() or c in "='\"" for c in value):
            return value
        return repr(value)
    return repr(value)


def _stacklevel() -> int:
    """The stdlib ``stacklevel`` naming the frame that called the structlog method.

    Called from the final processor: every structlog frame above it but
    ``_process_event`` (which has returned when the stdlib logger looks)
    stands between the stdlib call and the caller.
    """
    frame = sys._getframe(2)
    level = 0
    while frame is not None and frame.f_globals.get("__name__", "").startswith("structlog"):
        level += 1
        frame = frame.f_back  # type: ignore[assignment]
    return max(level, 1)


def _to_stdlib(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The final processor: the stdlib message and ``extra={"ctxflow": fields}``."""
    event = str(event_dict.pop("event", ""))
    kwargs: dict[str, Any] = {k: event_dict.pop(k) for k in _PASSED if k in event_dict}
    parts = [event, *(f"{k}={_text(v)}" for k, v in event_dict.items())]
    kwargs["extra"] = {"ctxflow": {"event": event, **event_dict}}
    kwargs["stacklevel"] = _stacklevel()
    return (" ".join(parts),), kwargs


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structured logger writing to the stdlib logger ``name`` (under ``ctxflow``).

    Call it as ``log.info("event_name", key=value, ...)`` (also ``debug``,
    ``warning``, ``error``, ``exception``); ``exc_info`` and ``stack_info``
    go to the stdlib record, every other keyword is a field.
    """
    if name != ROOT and not name.startswith(ROOT + "."):
        raise ValueError(f"a ctxflow logger's name must be under {ROOT!r} (got {name!r})")
    return cast(
        structlog.stdlib.BoundLogger,
        structlog.wrap_logger(
            logging.getLogger(name),
            wrapper_class=structlog.stdlib.BoundLogger,
            processors=[structlog.stdlib.filter_by_level, _to_stdlib],
            context_class=dict,
            cache_logger_on_first_use=True,
        ),
    )


def warn(message: str, category: type[Warning] = CtxflowWarning) -> None:
    """``warnings.warn`` attributed to the first caller outside the ctxflow package."""
    frame = sys._getframe(1)
    level = 2
    while frame.f_back is not None and _in_package(frame):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)


def _in_package(frame: Any) -> bool:
    name = str(frame.f_globals.get("__name__", ""))
    return name == ROOT or name.startswith(ROOT + ".")
