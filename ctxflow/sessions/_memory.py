"""What a manager does as its sessions fill memory: thresholds, the check's result, RSS.

The manager acts on its own count of the bytes its sessions hold (see
:mod:`ctxflow.sessions._cache`), never on the process's RSS: CPython keeps
freed memory for reuse and rarely hands it back, so RSS does not fall after
an eviction and a decision made on it would evict everything. RSS is read
for an alert only.

Past the soft threshold the manager evicts its largest idle sessions (each
saved first; one whose save fails stays) until the count is back under the
target. Compression would not help here: it tags messages and never deletes
them, so it frees nothing. At the hard threshold a load that would add a
session is refused with :class:`~ctxflow.errors.MemoryLimitExceeded` once
eviction could not make room.
"""

from __future__ import annotations

import os
from typing import Literal

import attrs

from ctxflow.errors import SessionError

__all__ = ["Level", "MemoryCheck", "MemoryThresholds", "rss_bytes"]

#: Where a manager's bytes are: under the soft threshold, past it, or at the hard one.
Level = Literal["ok", "soft", "hard"]


def _positive(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SessionError(
            f"'{attribute.name}' must be a positive integer (got {value!r})", rule="memory"
        )


@attrs.frozen(kw_only=True)
class MemoryThresholds:
    """How many bytes a manager's sessions may hold, and when it evicts and refuses.

    Past ``soft × max_bytes`` the manager evicts its largest idle sessions
    (unused for ``idle`` seconds of its clock; saved first) down to
    ``target × max_bytes``; at ``hard × max_bytes`` it refuses to load more.
    ``rss_alert_bytes`` logs an event when the process's RSS crosses it.
    """

    max_bytes: int = attrs.field(validator=_positive)
    soft: float = 0.8
    target: float = 0.7
    hard: float = 1.0
    idle: float = 0.0
    rss_alert_bytes: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(_positive)
    )

    def __attrs_post_init__(self) -> None:
        if not 0 < self.target <= self.soft <= self.hard:
            raise SessionError(
                "memory thresholds must satisfy 0 < target <= soft <= hard "
                f"(got target={self.target}, soft={self.soft}, hard={self.hard})",
                rule="memory",
            )
        if self.idle < 0:
            raise SessionError(f"'idle' must be >= 0 seconds (got {self.idle})", rule="memory")

    @property
    def soft_bytes(self) -> int:
        """The bytes past which idle sessions are evicted."""
        return int(self.max_bytes * self.soft)

    @property
    def target_bytes(self) -> int:
        """The bytes an eviction round aims under."""
        return int(self.max_bytes * self.target)

    @property
    def hard_bytes(self) -> int:
        """The bytes at which loads are refused."""
        return int(self.max_bytes * self.hard)

    def level(self, held: int) -> Level:
        """Where ``held`` bytes stand against the thresholds."""
        if held >= self.hard_bytes:
            return "hard"
        if held > self.soft_bytes:
            return "soft"
        return "ok"


@attrs.frozen(kw_only=True)
class MemoryCheck:
    """What one memory check found and did.

    ``level`` is where the held bytes stand after the evictions (``"ok"``
    without thresholds); ``evicted`` names the sessions it saved and unloaded,
    largest first; ``rss_bytes`` is None where the system does not report it.
    """

    held_bytes: int
    level: Level
    evicted: tuple[str, ...] = ()
    freed_bytes: int = 0
    rss_bytes: int | None = None


def rss_bytes() -> int | None:
    """The process's resident set size now, or None where ``/proc`` does not give it."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")
