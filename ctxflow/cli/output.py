"""What the ``ctxflow`` command shows of the library's events and warnings.

The library is silent; the command configures logging for itself, for the
duration of one command, and undoes it after (so ``main()`` called from a
program or a test leaves that program's logging as it was).
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from ctxflow.errors import CtxflowWarning

__all__ = ["command_output"]


@contextmanager
def command_output(*, quiet: bool = False) -> Iterator[None]:
    """Only warnings and errors while a command prints its own output, one line each.

    ctxflow's log events at WARNING and above go to stderr as
    ``[warning] <message>``; a :class:`CtxflowWarning` is one ``[warning]``
    line too, never a traceback. ``quiet`` hides both warnings, leaving
    errors. Both are undone on exit.
    """
    out = sys.stderr
    handler = logging.StreamHandler(out)
    handler.setLevel(logging.ERROR if quiet else logging.WARNING)
    handler.setFormatter(_LineFormatter())
    logger = logging.getLogger("ctxflow")
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)
    original = warnings.showwarning

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if issubclass(category, CtxflowWarning):
            if not quiet:
                print(f"[warning] {message}", file=out, flush=True)
        else:
            original(message, category, filename, lineno, file, line)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", CtxflowWarning)
            warnings.showwarning = show
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class _LineFormatter(logging.Formatter):
    """``[warning] <message>``: the level in lower case, no traceback."""

    def format(self, record: logging.LogRecord) -> str:
        return f"[{record.levelname.lower()}] {record.getMessage()}"
