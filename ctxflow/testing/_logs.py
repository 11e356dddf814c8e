"""Capture ctxflow's structured log events in tests.

::

    with capture_events() as events:
        engine.send("start", task="x")
    assert events[0] == {"event": "transition", "level": "info", "trigger": "start", ...}

Every event logged under the ``ctxflow`` logger tree while the block runs is
appended as ``{"event": name, "level": "info", **fields}`` (the level in lower
case). The ``ctxflow`` logger's level is set to ``level`` for the block, so
events below the application's logging configuration are captured too;
the handler and the level are restored on exit. Records that are not
ctxflow events (a third party logging under ``ctxflow``) are captured with
their message as the event.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["capture_events"]


class _Collector(logging.Handler):
    def __init__(self, into: list[dict[str, Any]], level: int) -> None:
        super().__init__(level)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "ctxflow", None)
        if not isinstance(fields, dict):
            fields = {"event": record.getMessage()}
        self.into.append(
            {"event": fields.get("event"), "level": record.levelname.lower(), **fields}
        )


@contextmanager
def capture_events(level: int = logging.DEBUG) -> Iterator[list[dict[str, Any]]]:
    """A list receiving every ctxflow event at ``level`` or above while the block runs."""
    events: list[dict[str, Any]] = []
    handler = _Collector(events, level)
    logger = logging.getLogger("ctxflow")
    before = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield events
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)
